#!/usr/bin/env bash
# bench/checks: the cost of running health checks through WebAssembly plugins.
#
#  1. steady state: N HTTP checks (default 10,000) at a 10 s interval against
#     a local HTTP server; measures the muster process's CPU, how late checks
#     start against their slot (p50/p99 of the window), and catalog writes/s.
#     Targets: < 25% of one core, lateness p99 < 100 ms, zero writes.
#  2. per-call overhead of a trivial check component (instantiate + call +
#     drop), with `muster plugin bench`. Target: p50 < 50 us.
#  3. cold start of a node with all built-ins and a warm compile cache, to
#     the first answer of /v1/status/leader. Target: < 300 ms.
#
# Usage: bench/checks/run.sh [N] [WINDOW_SECONDS]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/muster-target}"
N="${1:-10000}"
WINDOW="${2:-30}"
HTTP_PORT=18580
WEB_ADDR=127.0.0.1:18581

cd "$ROOT"
export CARGO_TARGET_DIR="$TARGET_DIR"
cargo build --release -q -p muster -p muster-tests --bins
cargo build --release -q --target wasm32-wasip2 -p fault-check --target-dir "$TARGET_DIR/test-plugins"
MUSTER="$TARGET_DIR/release/muster"
FAULT="$TARGET_DIR/test-plugins/wasm32-wasip2/release/fault_check.wasm"

WORK="$(mktemp -d /tmp/muster-bench-checks.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== per-call overhead of a trivial check (fault-check, mode=pass)"
"$MUSTER" plugin bench "$FAULT" --config '{"mode":"pass"}' --calls 2000 --cache-dir "$WORK/cache" >/dev/null
"$MUSTER" plugin bench "$FAULT" --config '{"mode":"pass"}' --calls 20000 --cache-dir "$WORK/cache" | tee "$WORK/call.json"
echo "== per-call cost of builtin:http-check against a local server (incl. the HTTP round trip)"
"$TARGET_DIR/release/http-target" "$WEB_ADDR" 2 2>/dev/null & PIDS+=($!)
sleep 0.3
"$MUSTER" plugin bench builtin:http-check --endpoint "http://$WEB_ADDR/health" --calls 5000 --cache-dir "$WORK/cache"
"$MUSTER" plugin bench builtin:tcp-check --endpoint "$WEB_ADDR" --calls 5000 --cache-dir "$WORK/cache"

echo "== cold start with all built-ins, warm compile cache"
for i in 1 2 3 4 5 6; do
  python3 - "$MUSTER" "$WORK" "$HTTP_PORT" <<'PY'
import subprocess, sys, time, urllib.request, os
muster, work, port = sys.argv[1], sys.argv[2], sys.argv[3]
env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "xdg"))
t0 = time.monotonic()
p = subprocess.Popen([muster, "agent", "--dev", "--http-addr", f"127.0.0.1:{port}", "--server-addr", "127.0.0.1:18582"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader", timeout=0.2) as r:
            if r.read().strip(b'"'):
                break
    except Exception:
        pass
    time.sleep(0.002)
ms = (time.monotonic() - t0) * 1000
with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/muster/plugins") as r:
    import json
    plugins = json.load(r)
p.terminate(); p.wait()
print(f"start to first answer: {ms:.0f} ms; cache hits: {[pl['CompileCacheHit'] for pl in plugins]}")
PY
done

echo "== $N HTTP checks at a 10 s interval, window ${WINDOW}s"
"$MUSTER" agent --dev --http-addr "127.0.0.1:$HTTP_PORT" --server-addr 127.0.0.1:18582 >"$WORK/muster.log" 2>&1 & MPID=$!
PIDS+=($MPID)
python3 "$ROOT/bench/checks/steady.py" "127.0.0.1:$HTTP_PORT" "$MPID" "$N" "$WINDOW" "http://$WEB_ADDR/health"
