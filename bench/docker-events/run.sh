#!/usr/bin/env bash
# Docker event to DNS answer: how long after dockerd reports a container
# started (or died) muster answers its name over DNS (or stops answering).
# muster runs the built-in docker-source against a real dockerd; 200
# containers from the local busybox image are started and stopped in
# bursts. Only 127.0.0.1 is used (ports published there, DNS there).
#
#   bench/docker-events/run.sh                # 200 containers, bursts of 20
#   CONTAINERS=100 BURST=10 bench/docker-events/run.sh
#
# Env: MUSTER_BIN (default /var/cache/muster-target/release/muster),
# CONTAINERS (200), BURST (20), KEEP=1 keeps the temp dir (muster log).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MUSTER_BIN="${MUSTER_BIN:-/var/cache/muster-target/release/muster}"
CONTAINERS="${CONTAINERS:-200}"
BURST="${BURST:-20}"
HTTP=127.0.0.1:18530
DNS_PORT=18630
SERVER=127.0.0.1:18330

BENCH=docker-events
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

need dockerd docker.io
need busybox busybox-static
need python3 python3
install_needed
[ -x "$MUSTER_BIN" ] || die "muster binary not found at $MUSTER_BIN (set MUSTER_BIN or build with cargo build --release)"
ports_free 18530 18630 18330
bash "$ROOT/scripts/dockerd.sh" image
say "$(docker version --format 'dockerd {{.Server.Version}}')"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/muster-dockerbench.XXXXXX")"
PID=""
cleanup() {
  ids=$(docker ps -aq --filter label=muster-bench) || true
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  [ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  if [ "${KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cleanup_containers() { ids=$(docker ps -aq --filter label=muster-bench); [ -z "$ids" ] || docker rm -f $ids >/dev/null; }
cleanup_containers

cat > "$WORK/muster.toml" <<TOML
[[source]]
name = "docker"
plugin = "builtin:docker-source"
grant = { docker = true }
config = { explicit = true }
TOML
"$MUSTER_BIN" agent --dev --node bench --http-addr "$HTTP" --dns-addr "127.0.0.1:$DNS_PORT" \
  --server-addr "$SERVER" --config "$WORK/muster.toml" 2> "$WORK/muster.log" &
PID=$!
for _ in $(seq 100); do
  curl -sf "http://$HTTP/v1/status/leader" | grep -q : && break
  sleep 0.1
done

say "$CONTAINERS containers in bursts of $BURST: start a burst, wait for DNS, stop it, wait for NXDOMAIN"
python3 "$HERE/measure.py" --http "$HTTP" --dns-port "$DNS_PORT" \
  --containers "$CONTAINERS" --burst "$BURST" --image muster-test/busybox:1
