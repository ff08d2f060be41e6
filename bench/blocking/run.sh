#!/usr/bin/env bash
# Blocking-query fan-out: park 10,000 watchers on one KV prefix, write once,
# measure how fast all of them are woken and how much memory the server holds
# while they are parked. Only 127.0.0.1 is used.
#
#   bench/blocking/run.sh                      # --dev server, 10,000 watchers
#   MODE=persistent bench/blocking/run.sh      # single server with a data dir
#   WATCHERS=2000 bench/blocking/run.sh
#
# Env: MUSTER_BIN (default /var/cache/muster-target/release/muster), MODE
# (dev|persistent, default dev), WATCHERS (10000), HTTP_ADDR (127.0.0.1:18600),
# SERVER_ADDR (127.0.0.1:18601, persistent mode), SETTLE (2), QUIET (2: seconds
# the client stays off its sockets after the write; 0 reads as responses
# arrive, competing with the server for CPU), KEEP=1 keeps the
# temp dir with the server log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MUSTER_BIN="${MUSTER_BIN:-/var/cache/muster-target/release/muster}"
MODE="${MODE:-dev}"
WATCHERS="${WATCHERS:-10000}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:18600}"
SERVER_ADDR="${SERVER_ADDR:-127.0.0.1:18601}"
SETTLE="${SETTLE:-2}"

say() { printf '[blocking] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

case "$HTTP_ADDR" in 127.*) ;; *) die "HTTP_ADDR must be on 127.0.0.0/8" ;; esac

# --- dependencies (fresh Debian bookworm) --------------------------------
if ! command -v python3 >/dev/null 2>&1; then
  say "installing python3"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3 >/dev/null
fi
[ -x "$MUSTER_BIN" ] || die "muster binary not found at $MUSTER_BIN (set MUSTER_BIN or build with cargo build --release)"

# --- file descriptors: 10k watchers need 10k+ fds here and in the server ---
hard="$(ulimit -Hn)"
want=$(( WATCHERS + 2048 ))
if [ "$hard" != "unlimited" ] && [ "$hard" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || die "hard fd limit $hard < $want and cannot be raised; lower WATCHERS"
fi
target=65536
[ "$(ulimit -Hn)" != "unlimited" ] && [ "$(ulimit -Hn)" -lt "$target" ] && target="$(ulimit -Hn)"
ulimit -n "$target"
say "fd limit: $(ulimit -n)"

# --- server --------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/muster-blocking.XXXXXX")"
MUSTER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$MUSTER_PID" ] && kill -0 "$MUSTER_PID" 2>/dev/null; then
    kill "$MUSTER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MUSTER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MUSTER_PID" 2>/dev/null || true
    wait "$MUSTER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/muster.log" ]; then
    say "last lines of the server log ($WORK/muster.log):"
    tail -n 30 "$WORK/muster.log" >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$MODE" = dev ]; then
  "$MUSTER_BIN" agent --dev --http-addr "$HTTP_ADDR" >"$WORK/muster.log" 2>&1 &
else
  mkdir -p "$WORK/data"
  cat >"$WORK/muster.toml" <<TOML
server = true
bootstrap_expect = 1
data_dir = "$WORK/data"
TOML
  "$MUSTER_BIN" agent --config "$WORK/muster.toml" --data-dir "$WORK/data" --node bench-blocking \
    --http-addr "$HTTP_ADDR" --server-addr "$SERVER_ADDR" >"$WORK/muster.log" 2>&1 &
fi
MUSTER_PID=$!
say "muster ($MODE) pid $MUSTER_PID on http://$HTTP_ADDR, log $WORK/muster.log"

# ready once /v1/status/leader names a leader
ready=0
for _ in $(seq 600); do
  kill -0 "$MUSTER_PID" 2>/dev/null || die "muster exited during startup"
  if python3 - "$HTTP_ADDR" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/v1/status/leader", timeout=1) as r:
    sys.exit(0 if json.loads(r.read() or b'""') else 1)
PY
  then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] || die "no leader at http://$HTTP_ADDR/v1/status/leader after 60s"
say "leader elected"

python3 "$HERE/blocking.py" --addr "$HTTP_ADDR" --pid "$MUSTER_PID" --watchers "$WATCHERS" \
  --settle "$SETTLE" --quiet "${QUIET:-2}" --ready-timeout 60
