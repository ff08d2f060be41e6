#!/usr/bin/env bash
# Starts three servers (127.0.0.1-.3) and one client agent (127.0.0.4),
# waits for the cluster, lists its members, and stops everything on Ctrl-C.
#
#   examples/cluster/start.sh            # uses `muster` from PATH
#   MUSTER=target/release/muster examples/cluster/start.sh
#   FRESH=1 examples/cluster/start.sh    # wipe /tmp/muster-example first
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MUSTER="${MUSTER:-muster}"
command -v "$MUSTER" >/dev/null || { echo "muster not found (set MUSTER=path/to/muster)" >&2; exit 1; }
[ "${FRESH:-0}" = 1 ] && rm -rf /tmp/muster-example
mkdir -p /tmp/muster-example

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait' EXIT
trap 'exit 130' INT TERM
for n in server-1 server-2 server-3 client-1; do
  "$MUSTER" agent --config "$HERE/$n.toml" >"/tmp/muster-example/$n.log" 2>&1 &
  PIDS+=("$!")
  echo "started $n (pid $!, log /tmp/muster-example/$n.log)"
done

for _ in $(seq 100); do
  leader="$(curl -sf http://127.0.0.4:8500/v1/status/leader || true)"
  [ -n "$leader" ] && [ "$leader" != '""' ] && break
  sleep 0.2
done
echo "leader: $leader"
sleep 1
"$MUSTER" members --http-addr 127.0.0.4:8500
echo
echo "try:  curl -X PUT -d '{\"Name\":\"web\",\"Port\":8080}' http://127.0.0.4:8500/v1/agent/service/register"
echo "      dig @127.0.0.4 -p 8600 web.service.consul +short"
echo "      muster operator raft list-peers --http-addr 127.0.0.1:8500"
echo "Ctrl-C stops the cluster."
wait
