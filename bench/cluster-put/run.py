#!/usr/bin/env python3
"""Three muster servers vs a three-member etcd 3.4 cluster, same machine,
same load tool (wrk), default durability (fsync per batch on both): writes
(a unique key per request) at 1 and 64 connections, and linearizable reads
(muster ?consistent, etcd's default range) at 64 connections. wrk targets
each cluster's leader. Also reports whether the leader changed during the
write load (spurious elections).

    python3 bench/cluster-put/run.py            # 10s per run
    DURATION=30s CONNS="1 16 64" python3 bench/cluster-put/run.py
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
os.environ.setdefault("BENCH", "cluster-put")
import clusters  # noqa: E402

DURATION = os.environ.get("DURATION", "10s")
CONNS = [int(c) for c in os.environ.get("CONNS", "1 64").split()]
PUT_LUA = os.path.join(HERE, "..", "kv-put", "put.lua")
GET_LUA = os.path.join(HERE, "get.lua")


def ms(v):
    n = float(re.match(r"[0-9.]+", v).group(0))
    unit = v[len(re.match(r"[0-9.]+", v).group(0)):]
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url, script, conns, args):
    threads = 1 if conns < 2 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{DURATION}", "--timeout", "5s", "--latency",
         "-s", script, url, "--"] + args,
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = int(re.search(r"Bad bodies: (\d+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or errors or "Socket errors" in out:
        sys.exit(f"wrk against {url} had failures:\n{out}")
    return rps, p50, p99


def measure(kind):
    c = clusters.start_muster() if kind == "muster" else clusters.start_etcd()
    try:
        leader = c.leader()
        clusters.say(f"{kind}: leader is {leader.name}")
        results = {}
        for conns in CONNS:
            clusters.say(f"{kind}: puts, {conns} connection(s), {DURATION}")
            results[("put", conns)] = wrk(leader.http, PUT_LUA, conns, [kind, f"c{conns}"])
        after = c.leader()
        stable = after is not None and after.name == leader.name
        clusters.say(f"{kind}: linearizable reads, 64 connections, {DURATION}")
        results[("read", 64)] = wrk(leader.http, GET_LUA, 64, [kind])
        return results, stable
    finally:
        c.stop()


def main():
    res, stable = {}, {}
    for kind in ("etcd", "muster"):
        res[kind], stable[kind] = measure(kind)
    print(f"\n## Three servers: muster vs etcd 3.4 (wrk, {DURATION} per run, against the leader)\n")
    print("| load | conns | muster req/s | etcd req/s | ratio | muster p50 / p99 (ms) | etcd p50 / p99 (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in [("put", c) for c in CONNS] + [("read", 64)]:
        m, e = res["muster"][key], res["etcd"][key]
        label = "put (unique keys)" if key[0] == "put" else "linearizable read"
        print(f"| {label} | {key[1]} | {m[0]:.0f} | {e[0]:.0f} | {m[0] / e[0]:.2f} | "
              f"{m[1]:.2f} / {m[2]:.2f} | {e[1]:.2f} / {e[2]:.2f} |")
    print(f"\nleader unchanged through the write load: muster {stable['muster']}, etcd {stable['etcd']}")
    print(f"\nreproduce: DURATION={DURATION} CONNS=\"{' '.join(map(str, CONNS))}\" python3 bench/cluster-put/run.py")


if __name__ == "__main__":
    main()
