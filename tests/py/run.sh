#!/usr/bin/env bash
# Runs the py-consul end-to-end suite (tests/py) against muster.
#
#   tests/py/run.sh                         # starts `muster agent --dev` itself
#   MUSTER_HTTP_ADDR=127.0.0.1:8500 tests/py/run.sh   # uses a running agent
#   tests/py/run.sh -k kv -x                # extra arguments go to pytest
#
# Env: MUSTER_BIN (default /var/cache/muster-target/release/muster),
# MUSTER_HTTP_ADDR (if unset, a dev agent is started on 127.0.0.1:18510),
# VENV (default <repo>/.venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MUSTER_BIN="${MUSTER_BIN:-/var/cache/muster-target/release/muster}"
VENV="${VENV:-$ROOT/.venv}"

say() { printf '[tests/py] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- python + venv (fresh Debian bookworm) -------------------------------
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  say "installing python3 and python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import consul, pytest' >/dev/null 2>&1 \
   || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("py-consul"))')" != 1.8.0 ]; then
  "$VENV/bin/python" -m pip install -q -r "$HERE/requirements.txt"
fi

# --- agent ---------------------------------------------------------------
WORK=""
MUSTER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$MUSTER_PID" ] && kill -0 "$MUSTER_PID" 2>/dev/null; then
    kill "$MUSTER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MUSTER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MUSTER_PID" 2>/dev/null || true
    wait "$MUSTER_PID" 2>/dev/null || true
  fi
  if [ -n "$WORK" ]; then
    if [ "$rc" -ne 0 ]; then say "server log: $WORK/muster.log (last lines below)"; tail -n 30 "$WORK/muster.log" >&2 || true
    else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${MUSTER_HTTP_ADDR:-}" ]; then
  [ -x "$MUSTER_BIN" ] || die "muster binary not found at $MUSTER_BIN (set MUSTER_BIN, or MUSTER_HTTP_ADDR for a running agent)"
  export MUSTER_HTTP_ADDR=127.0.0.1:18510
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/muster-pytest.XXXXXX")"
  "$MUSTER_BIN" agent --dev --http-addr "$MUSTER_HTTP_ADDR" --dns-addr 127.0.0.1:18610 >"$WORK/muster.log" 2>&1 &
  MUSTER_PID=$!
  say "started muster --dev (pid $MUSTER_PID) on $MUSTER_HTTP_ADDR"
  ok=0
  for _ in $(seq 300); do
    kill -0 "$MUSTER_PID" 2>/dev/null || die "muster exited during startup"
    if "$VENV/bin/python" - "$MUSTER_HTTP_ADDR" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/v1/status/leader", timeout=1) as r:
    sys.exit(0 if json.loads(r.read() or b'""') else 1)
PY
    then ok=1; break; fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || die "no leader at $MUSTER_HTTP_ADDR after 30s"
fi

cd "$ROOT"
"$VENV/bin/python" -m pytest -p no:cacheprovider "$HERE" -v "$@"
