#!/usr/bin/env bash
# KV put throughput and latency: muster (single persistent server) against
# etcd 3.4 (single member), same load tool (wrk), same machine, one run.
# Only 127.0.0.1 is used.
#
#   bench/kv-put/run.sh                    # 10s per run, 1 and 64 connections
#   DURATION=30s CONNS="1 16 64" bench/kv-put/run.sh
#
# Env: MUSTER_BIN (default /var/cache/muster-target/release/muster), DURATION
# (10s), CONNS ("1 64"), WARMUP (2s, at 8 connections, not recorded; 0 skips),
# TARGETS ("etcd muster"; "etcd" alone checks the etcd side without muster),
# KEEP=1 keeps the temp dir (data dirs, logs, raw wrk output).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MUSTER_BIN="${MUSTER_BIN:-/var/cache/muster-target/release/muster}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-1 64}"
WARMUP="${WARMUP:-2s}"
TARGETS="${TARGETS:-etcd muster}"
has_target() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
ETCD_CLIENT=127.0.0.1:23790
ETCD_PEER=127.0.0.1:23800
MUSTER_HTTP=127.0.0.1:18500
MUSTER_SERVER=127.0.0.1:18300

BENCH=kv-put
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

# --- dependencies (fresh Debian bookworm) --------------------------------
need etcd etcd-server
need wrk wrk
need curl curl
install_needed
! has_target muster || [ -x "$MUSTER_BIN" ] || die "muster binary not found at $MUSTER_BIN (set MUSTER_BIN or build with cargo build --release)"
say "etcd: $(etcd --version 2>/dev/null | head -n1); wrk: $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"

ports_free 23790 23800 18500 18300

# --- processes and cleanup -----------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/muster-kvput.XXXXXX")"
mkdir -p "$WORK/etcd" "$WORK/muster" "$WORK/results"
PIDS=()
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK/etcd.log" "$WORK/muster.log"; do
      [ -s "$f" ] && { say "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() { # description timeout-seconds pid command...
  local what=$1 secs=$2 pid=$3; shift 3
  local i
  for i in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || die "$what: process $pid exited"
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what: not ready after ${secs}s"
}

# --- etcd 3.4, one member, default fsync ---------------------------------
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
  --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
  --initial-cluster "bench=http://$ETCD_PEER" --initial-cluster-state new \
  --logger zap --log-outputs stderr >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
etcd_ready() {
  curl -sf -m 2 -X POST "http://$ETCD_CLIENT/v3/kv/put" \
    -d '{"key":"YmVuY2gvcmVhZHk=","value":"MQ=="}' | grep -q '"header"'
}
wait_until "etcd" 60 "$ETCD_PID" etcd_ready
# the value must read back through the same gateway
curl -sf -m 2 -X POST "http://$ETCD_CLIENT/v3/kv/range" -d '{"key":"YmVuY2gvcmVhZHk="}' | grep -q '"value":"MQ=="' \
  || die "etcd: put via /v3/kv/put did not read back via /v3/kv/range"
say "etcd pid $ETCD_PID ready on http://$ETCD_CLIENT"

# --- muster, one persistent server ---------------------------------------
if has_target muster; then
cat >"$WORK/muster.toml" <<TOML
server = true
bootstrap_expect = 1
data_dir = "$WORK/muster"
TOML
"$MUSTER_BIN" agent --config "$WORK/muster.toml" --data-dir "$WORK/muster" --node bench-kvput \
  --http-addr "$MUSTER_HTTP" --server-addr "$MUSTER_SERVER" >"$WORK/muster.log" 2>&1 &
MUSTER_PID=$!
PIDS+=("$MUSTER_PID")
muster_ready() {
  local leader
  leader="$(curl -sf -m 2 "http://$MUSTER_HTTP/v1/status/leader")" || return 1
  [ -n "$leader" ] && [ "$leader" != '""' ]
}
wait_until "muster" 60 "$MUSTER_PID" muster_ready
ans="$(curl -sf -m 5 -X PUT --data-binary 'ready' "http://$MUSTER_HTTP/v1/kv/bench/ready")" \
  || die "muster: PUT /v1/kv/bench/ready failed"
[ "$(echo "$ans" | tr -d '[:space:]')" = true ] || die "muster: PUT /v1/kv/bench/ready answered '$ans', want true"
curl -sf -m 5 "http://$MUSTER_HTTP/v1/kv/bench/ready" | grep -q '"Value":"cmVhZHk="' \
  || die "muster: PUT /v1/kv/bench/ready did not read back via GET /v1/kv/bench/ready"
say "muster pid $MUSTER_PID ready on http://$MUSTER_HTTP"
fi

# --- load ----------------------------------------------------------------
url_of() { if [ "$1" = etcd ]; then echo "http://$ETCD_CLIENT"; else echo "http://$MUSTER_HTTP"; fi; }

# latency as printed by wrk (e.g. 812.00us, 4.21ms, 1.02s, 2.00m) -> ms
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    else if (u != "ms") { print "?"; exit }
    printf "%.3f", n }'
}

declare -A RPS P50 P99
ERRORS=()
run_wrk() { # target conns duration outfile run-name
  local target=$1 conns=$2 dur=$3 out=$4 run=$5
  local threads=2
  [ "$conns" -lt 2 ] && threads=1 # wrk needs connections >= threads
  wrk -t"$threads" -c"$conns" -d"$dur" --timeout 5s --latency -s "$HERE/put.lua" \
    "$(url_of "$target")" -- "$target" "$run" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk against $target failed"; }
}

for conns in $CONNS; do
  for target in $TARGETS; do
    if [ "$WARMUP" != 0 ]; then
      run_wrk "$target" 8 "$WARMUP" "$WORK/results/warmup-$target-c$conns.txt" "warm$conns"
    fi
    out="$WORK/results/$target-c$conns.txt"
    say "$target: $conns connection(s), $DURATION"
    run_wrk "$target" "$conns" "$DURATION" "$out" "c$conns"
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p50="$(awk '$1 == "50%" {print $2}' "$out")"
    p99="$(awk '$1 == "99%" {print $2}' "$out")"
    reqs="$(awk '/requests in/ {print $1}' "$out")"
    non2xx="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")"
    sockerr="$(sed -n 's/.*Socket errors: //p' "$out")"
    badbodies="$(awk '/^Bad bodies:/ {print $3}' "$out")"
    [ -n "$rps" ] && [ -n "$p50" ] && [ -n "$p99" ] || { cat "$out" >&2; die "could not parse wrk output ($out)"; }
    RPS[$target,$conns]="$rps"
    P50[$target,$conns]="$(to_ms "$p50")"
    P99[$target,$conns]="$(to_ms "$p99")"
    [ "${reqs:-0}" != 0 ] || ERRORS+=("$target c$conns: no request completed")
    [ -z "$non2xx" ] || ERRORS+=("$target c$conns: $non2xx non-2xx/3xx responses")
    [ -z "$sockerr" ] || ERRORS+=("$target c$conns: socket errors: $sockerr")
    [ "${badbodies:-0}" = 0 ] || ERRORS+=("$target c$conns: $badbodies answers without the success body ($(sed -n 's/^First bad answer: //p' "$out"))")
  done
done

# --- report --------------------------------------------------------------
echo
echo "## KV put: muster vs etcd 3.4 (single server each, wrk, $DURATION per run)"
echo
echo "unique key per request, 64-byte value; muster \`PUT /v1/kv/bench/<key>\`, etcd \`POST /v3/kv/put\`"
echo
echo "| target | conns | req/s | p50 (ms) | p99 (ms) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for conns in $CONNS; do
  for target in muster etcd; do
    has_target "$target" || continue
    printf '| %s | %s | %s | %s | %s |\n' "$target" "$conns" "${RPS[$target,$conns]}" \
      "${P50[$target,$conns]}" "${P99[$target,$conns]}"
  done
done
echo
echo "| conns | muster/etcd req/s |"
echo "| ---: | ---: |"
for conns in $CONNS; do
  printf '| %s | %s |\n' "$conns" \
    "$(awk -v m="${RPS[muster,$conns]:-0}" -v e="${RPS[etcd,$conns]:-0}" 'BEGIN { if (e > 0 && m > 0) printf "%.2f", m / e; else print "n/a" }')"
done
echo
echo "reproduce: DURATION=$DURATION CONNS=\"$CONNS\" bench/kv-put/run.sh"

if [ "${#ERRORS[@]}" -gt 0 ]; then
  say "FAILED:"
  for e in "${ERRORS[@]}"; do say "  $e"; done
  exit 1
fi
