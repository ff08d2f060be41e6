"""Registers N services with an HTTP check each, waits for them to settle,
then measures one window of steady state: CPU of the muster process,
check-start lateness (from the scheduler's histogram, window only) and
catalog writes per second (scheduler writes and the Raft index)."""

import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

addr, pid, n, window, url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
base = f"http://{addr}"
tick = os.sysconf("SC_CLK_TCK")


def get(path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r), int(r.headers.get("X-Consul-Index") or 0)


def put(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def quantile(buckets, q):
    total = sum(c for _, c in buckets)
    if total == 0:
        return None
    want, seen = q * total, 0
    for bound, c in buckets:
        seen += c
        if seen >= want:
            return bound
    return None


for _ in range(300):
    try:
        if get("/v1/status/leader")[0]:
            break
    except Exception:
        pass
    time.sleep(0.1)

t0 = time.monotonic()
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda i: put("/v1/agent/service/register", {
        "Name": f"svc{i % 100}", "ID": f"svc-{i}", "Port": 18581,
        "Check": {"HTTP": url, "Interval": "10s", "Timeout": "2s"},
    }), range(n)))
print(f"registered {n} services with HTTP checks in {time.monotonic() - t0:.1f} s")

# Settle: every check has run at least once and the writes have stopped.
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    passing = len(get("/v1/health/state/passing")[0])
    if passing >= n + 1:
        break
    time.sleep(1)
print(f"passing: {passing} of {n} (+1 node check); settling one more interval")
time.sleep(12)

s0, i0 = get("/v1/muster/checks")[0], get("/v1/health/state/any")[1]
c0, w0 = cpu_seconds(), time.monotonic()
time.sleep(window)
s1, i1 = get("/v1/muster/checks")[0], get("/v1/health/state/any")[1]
c1, w1 = cpu_seconds(), time.monotonic()

elapsed = w1 - w0
b0 = s0["LatenessMs"]["Buckets"]
b1 = s1["LatenessMs"]["Buckets"]
window_buckets = [(float("inf") if b is None else b, c - c0_) for (b, c), (_, c0_) in zip(b1, b0)]
runs = s1["Runs"] - s0["Runs"]
result = {
    "checks": s1["Scheduled"],
    "window_s": round(elapsed, 1),
    "runs_per_s": round(runs / elapsed, 1),
    "cpu_percent_of_one_core": round(100 * (c1 - c0) / elapsed, 1),
    "lateness_p50_ms": quantile(window_buckets, 0.5),
    "lateness_p99_ms": quantile(window_buckets, 0.99),
    "scheduler_writes_per_s": round((s1["Writes"] - s0["Writes"]) / elapsed, 2),
    "raft_index_delta": i1 - i0,
    "faults": s1["Faults"] - s0["Faults"],
}
print(json.dumps(result, indent=1))
