#!/usr/bin/env python3
"""Service registrations per second on a three-server muster cluster, 64
concurrent registrants (wrk connections), each registration a new service
with a TTL check: through a client agent (which answers once the service is
in its local state, then syncs it to the servers by anti-entropy) and
directly at the leader (a Raft write per registration, batched). For the
client the rate that counts is "synced": registrations divided by the time
until the servers' catalog holds all of them.

    python3 bench/registrations/run.py
    DURATION=30s python3 bench/registrations/run.py
"""

import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
os.environ.setdefault("BENCH", "registrations")
import clusters  # noqa: E402

DURATION = os.environ.get("DURATION", "10s")
CONNS = 64
LUA = os.path.join(HERE, "register.lua")


def secs(d):
    return float(d[:-1]) * (60 if d.endswith("m") else 1)


def ms(v):
    num = re.match(r"[0-9.]+", v).group(0)
    n, unit = float(num), v[len(num):]
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url, run):
    started = time.monotonic()
    out = subprocess.run(["wrk", "-t2", f"-c{CONNS}", f"-d{DURATION}", "--timeout", "5s", "--latency",
                          "-s", LUA, url, "--", run], capture_output=True, text=True, check=True).stdout
    took = time.monotonic() - started
    if int(re.search(r"Bad bodies: (\d+)", out).group(1)) or "Socket errors" in out:
        sys.exit(f"wrk against {url} had failures:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return total, took, p50, p99


def count_on(node_http, node_name):
    st, body = clusters.http("GET", f"{node_http}/v1/catalog/node/{node_name}?stale", timeout=30)
    if st != 200:
        return -1
    return len(json.loads(body).get("Services", {}))


def main():
    c = clusters.start_muster(extra_clients=1)
    try:
        leader = c.leader()
        client = c.nodes[3]
        clusters.wait("client joined", lambda: count_on(leader.http, client.name) >= 0)

        # The leader first, so that the client's sync backlog cannot slow it.
        clusters.say(f"directly at the leader {leader.name}: {CONNS} registrants, {DURATION}")
        s_total, s_took, s_p50, s_p99 = wrk(leader.http, "server")
        s_count = count_on(leader.http, leader.name)
        if s_count < s_total:
            sys.exit(f"the leader lists {s_count} services, {s_total} were registered")
        direct = s_total / s_took

        clusters.say(f"through the client agent {client.name}: {CONNS} registrants, {DURATION}")
        before = count_on(leader.http, client.name)
        total, took, p50, p99 = wrk(client.http, "client")
        wrk_end = time.monotonic()
        want = before + total
        synced_count = count_on(leader.http, client.name)
        while synced_count < want and time.monotonic() - wrk_end < 60:
            time.sleep(0.2)
            synced_count = count_on(leader.http, client.name)
        drained = time.monotonic() - wrk_end
        accepted = total / took
        done = max(synced_count - before, 0)
        synced = done / (took + drained)
        sync_note = (f"caught up {drained:.2f} s after the load" if synced_count >= want
                     else f"only {done} of {total} on the servers 60 s after the load")

        print(f"\n## Service registrations, three servers, {CONNS} concurrent registrants, {DURATION}\n")
        print("| path | registrations | req/s | synced to the servers (/s) | p50 / p99 (ms) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(f"| client agent | {total} | {accepted:.0f} | {synced:.0f} ({sync_note}) | {p50:.2f} / {p99:.2f} |")
        print(f"| leader (server agent) | {s_total} | {direct:.0f} | {direct:.0f} (committed before answering) | {s_p50:.2f} / {s_p99:.2f} |")
        print("\nreference: Nacos reports 7,256 registrations/s on a 3 x 8-core cluster")
        print(f"\nreproduce: DURATION={DURATION} python3 bench/registrations/run.py")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
