"""Registers the DNS bench data set in muster and writes the same records
as a Knot zone file, plus the dnsperf query files.

    dataset.py MUSTER_HTTP_URL ZONE_FILE WORK_DIR

Addresses are data only (10.x): nothing is ever sent to them.
"""
import json
import random
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, zone_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
random.seed(7)


def put(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, (path, body, r.status)


regs = []
zone = [
    "$ORIGIN consul.",
    "$TTL 0",
    "@ SOA ns.consul. hostmaster.consul. 1 3600 600 86400 0",
    "@ NS ns.consul.",
    "ns A 127.0.0.1",
]

# mix: 100 services x 3 instances, spread over 30 nodes.
nodes = {f"node-{i}": f"10.0.0.{i + 1}" for i in range(30)}
for s in range(100):
    for k in range(3):
        node = f"node-{(s + k * 7) % 30}"
        regs.append({"Node": node, "Address": nodes[node],
                     "Service": {"Service": f"svc-{s}", "ID": f"svc-{s}-{k}", "Port": 8000 + k}})
        zone.append(f"svc-{s}.service A {nodes[node]}")
        zone.append(f"svc-{s}.service SRV 1 1 {8000 + k} {node}.node.dc1.consul.")

# big: one service, 5,000 instances on 100 nodes, each with a passing check.
big_nodes = {f"big-node-{i}": f"10.2.{i // 250}.{i % 250 + 1}" for i in range(100)}
for i in range(5000):
    node = f"big-node-{i % 100}"
    regs.append({"Node": node, "Address": big_nodes[node],
                 "Service": {"Service": "huge", "ID": f"huge-{i}", "Port": 20000 + i},
                 "Check": {"CheckID": f"huge-{i}", "Name": "alive", "Status": "passing",
                           "ServiceID": f"huge-{i}"}})
    zone.append(f"huge.service SRV 1 1 {20000 + i} {node}.node.dc1.consul.")
for name, addr in {**nodes, **big_nodes}.items():
    zone.append(f"{name}.node.dc1 A {addr}")

with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda r: put("/v1/catalog/register", r), regs))

with open(zone_path, "w") as f:
    f.write("\n".join(zone) + "\n")

mix = [f"svc-{s}.service.consul {t}" for s in range(100) for t in ("A", "SRV")]
random.shuffle(mix)
with open(f"{work}/queries-mix.txt", "w") as f:
    f.write("\n".join(mix * 10) + "\n")
with open(f"{work}/queries-big.txt", "w") as f:
    f.write("huge.service.consul SRV\n")
print(f"{len(regs)} registrations, {len(zone)} zone lines", file=sys.stderr)
