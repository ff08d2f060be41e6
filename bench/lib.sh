# Shared by the bench scripts. Source it after setting BENCH (the prefix of
# every log line):   BENCH=dns; . "$HERE/../lib.sh"

say() { printf '[%s] %s\n' "$BENCH" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# need CMD PACKAGE: install the Debian PACKAGE (in install_needed) when CMD
# is missing; nothing is installed that is already there.
NEED_PKGS=()
need() { command -v "$1" >/dev/null 2>&1 || NEED_PKGS+=("$2"); }
install_needed() {
  [ "${#NEED_PKGS[@]}" -gt 0 ] || return 0
  say "installing ${NEED_PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${NEED_PKGS[@]}" >/dev/null
}

# ports_free PORT...: stop unless every 127.0.0.1 TCP port is unused.
ports_free() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "127.0.0.1:$port is already in use"
    fi
  done
}
