#!/usr/bin/env python3
"""Write unavailability after kill -9 of the leader: three muster servers and
a three-member etcd 3.4 cluster, default timings, in the same run. Eight
writers put unique keys with a 0.5 s request timeout and retry at once
(moving to the next member after a failure); the window is the longest
time between two acknowledged writes around the kill. RUNS runs each
(default 10): median and max.

    python3 bench/failover/run.py
    RUNS=3 python3 bench/failover/run.py
"""

import base64
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
os.environ.setdefault("BENCH", "failover")
import clusters  # noqa: E402

RUNS = int(os.environ.get("RUNS", "10"))
WRITERS = 8
TIMEOUT = 0.5


def put_request(kind, node, key):
    if kind == "muster":
        return "PUT", f"{node.http}/v1/kv/failover/{key}", b"x"
    body = json.dumps({"key": base64.b64encode(f"failover/{key}".encode()).decode(),
                       "value": "eA=="}).encode()
    return "POST", f"{node.http}/v3/kv/put", body


def writer(kind, c, w, acks, stop):
    i, n = w % 3, 0
    while not stop.is_set():
        node = c.nodes[i]
        n += 1
        method, url, body = put_request(kind, node, f"{w}-{n}")
        status, answer = clusters.http(method, url, body, timeout=TIMEOUT)
        ok = status == 200 and (answer.strip() == b"true" if kind == "muster" else b"header" in answer)
        if ok:
            acks.append(time.monotonic())
        else:
            i = (i + 1) % 3  # retry at once, on the next member


def one_run(kind):
    c = clusters.start_muster() if kind == "muster" else clusters.start_etcd()
    try:
        acks, stop = [], threading.Event()
        threads = [threading.Thread(target=writer, args=(kind, c, w, acks, stop)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        leader = c.leader()
        killed = time.monotonic()
        leader.kill9()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        around = sorted(a for a in acks if killed - 1 <= a <= killed + 4)
        before = [a for a in around if a < killed]
        after = [a for a in around if a >= killed]
        if not before or not after:
            sys.exit(f"{kind}: no writes acknowledged {'before' if not before else 'after'} the kill")
        gaps = [b - a for a, b in zip(around, around[1:])]
        return max(gaps), after[0] - killed
    finally:
        c.stop()


def main():
    out = {}
    for kind in ("etcd", "muster"):
        windows = []
        for r in range(RUNS):
            window, first = one_run(kind)
            # Writes that never paused mean the node killed was no longer
            # the leader (leadership moved between asking and killing).
            tries = 1
            while window < 0.1 and tries < 3:
                clusters.say(f"{kind} run {r + 1}: writes never paused; the kill missed the leader, again")
                window, first = one_run(kind)
                tries += 1
            clusters.say(f"{kind} run {r + 1}: write gap {window * 1000:.0f} ms (first write {first * 1000:.0f} ms after the kill)")
            windows.append(window)
        out[kind] = windows
    print(f"\n## Failover: write gap after kill -9 of the leader ({RUNS} runs each, default timings)\n")
    print("| cluster | median (ms) | min (ms) | max (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for kind in ("muster", "etcd"):
        w = out[kind]
        print(f"| {kind} | {statistics.median(w) * 1000:.0f} | {min(w) * 1000:.0f} | {max(w) * 1000:.0f} |")
    ratio = statistics.median(out["etcd"]) / statistics.median(out["muster"])
    print(f"\netcd median / muster median: {ratio:.2f}")
    print(f"\nreproduce: RUNS={RUNS} python3 bench/failover/run.py")


if __name__ == "__main__":
    main()
