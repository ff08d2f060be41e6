#!/usr/bin/env bash
# DNS throughput and latency: muster (answers computed live from the
# catalog) against Knot DNS serving an equivalent static zone (same names,
# same records), same load tool (dnsperf), same machine, one run.
# Only 127.0.0.1 is used.
#
#   bench/dns/run.sh                 # 10 s per server per workload
#   DURATION=30 bench/dns/run.sh
#
# Workloads:
#   mix   100 services x 3 instances on 30 nodes; A and SRV queries for
#         every service in random order.
#   big   one service with 5,000 instances (each with a passing check) on
#         100 nodes; SRV queries. muster answers 3 random instances
#         (Consul's udp_answer_limit); Knot answers what fits in 512 bytes
#         with TC.
#
# Env: MUSTER_BIN (default /var/cache/muster-target/release/muster),
# DURATION (seconds, 10), CLIENTS (dnsperf -c, 8), OUTSTANDING (dnsperf -q,
# 100), KEEP=1 keeps the temp dir (zone, logs, raw dnsperf output).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MUSTER_BIN="${MUSTER_BIN:-/var/cache/muster-target/release/muster}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-8}"
OUTSTANDING="${OUTSTANDING:-100}"
MUSTER_HTTP=127.0.0.1:18520
MUSTER_DNS_PORT=18620
MUSTER_SERVER=127.0.0.1:18320
KNOT_PORT=18653

BENCH=dns
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

# --- dependencies (fresh Debian bookworm) --------------------------------
need dnsperf dnsperf
need knotd knot
need dig dnsutils
install_needed
[ -x "$MUSTER_BIN" ] || die "muster binary not found at $MUSTER_BIN (set MUSTER_BIN or build with cargo build --release)"
say "$(knotd --version | head -n1); $(dnsperf -h 2>&1 | grep -m1 Version || true)"

ports_free 18520 18620 18320 18653

WORK="$(mktemp -d "${TMPDIR:-/tmp}/muster-dnsbench.XXXXXX")"
mkdir -p "$WORK/knot/run" "$WORK/knot/db" "$WORK/knot/zones" "$WORK/results"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_dns() {  # port name
  for _ in $(seq 100); do
    dig @127.0.0.1 -p "$1" +time=1 +tries=1 consul SOA >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$2 does not answer DNS on port $1"
}

# --- muster, and the data set (written to muster and to a zone file) -------
"$MUSTER_BIN" agent --dev --node bench --http-addr "$MUSTER_HTTP" \
  --server-addr "$MUSTER_SERVER" --dns-addr "127.0.0.1:$MUSTER_DNS_PORT" >"$WORK/muster.log" 2>&1 &
PIDS+=($!)
wait_dns "$MUSTER_DNS_PORT" muster

say "registering the data set in muster and writing the Knot zone"
python3 "$HERE/dataset.py" "http://$MUSTER_HTTP" "$WORK/knot/zones/consul.zone" "$WORK"

# --- Knot ------------------------------------------------------------------
cat >"$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot/run"
    listen: 127.0.0.1@$KNOT_PORT
database:
    storage: "$WORK/knot/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK/knot/zones"
zone:
  - domain: consul
    file: consul.zone
CONF
knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
PIDS+=($!)
wait_dns "$KNOT_PORT" knot

# Both must give the same answers before they are timed.
for q in "svc-7.service.consul A" "svc-7.service.consul SRV"; do
  # shellcheck disable=SC2086
  m=$(dig @127.0.0.1 -p "$MUSTER_DNS_PORT" +short $q | sort)
  # shellcheck disable=SC2086
  k=$(dig @127.0.0.1 -p "$KNOT_PORT" +short $q | sort)
  [ "$m" = "$k" ] || die "muster and Knot answer '$q' differently:
muster: $m
knot:   $k"
done

# --- load ------------------------------------------------------------------
run() {  # label port queries-file [max-qps]
  local out="$WORK/results/${1// /-}.txt" limit=()
  [ -n "${4:-}" ] && limit=(-Q "$4")
  dnsperf -s 127.0.0.1 -p "$2" -d "$3" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" "${limit[@]}" -v >"$out" 2>&1 || true
  python3 "$HERE/summarize.py" "$1" "$out"
}

{
  echo "| workload | server | QPS | avg ms | p50 ms | p99 ms | lost | rcodes |"
  echo "|---|---|---|---|---|---|---|---|"
  for w in mix big; do
    say "workload $w: muster, then Knot, ${DURATION}s each"
    run "$w muster" "$MUSTER_DNS_PORT" "$WORK/queries-$w.txt"
    run "$w knot" "$KNOT_PORT" "$WORK/queries-$w.txt"
  done
  # Latency without queueing: the big service at a fixed 10,000 QPS.
  say "workload big at 10,000 QPS: muster, then Knot"
  run "big@10k muster" "$MUSTER_DNS_PORT" "$WORK/queries-big.txt" 10000
  run "big@10k knot" "$KNOT_PORT" "$WORK/queries-big.txt" 10000
} | tee "$WORK/results/table.md"
python3 "$HERE/summarize.py" --ratios "$WORK/results/table.md"
