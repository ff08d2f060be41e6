#!/usr/bin/env python3
"""Exporter throughput, lag and swap pause, into a real etcd 3.4 and a real
ZooKeeper 3.8 at once, from a persistent single muster server on loopback.

Phases:
  1. paced:   RATE catalog changes/s (default 1,000) for DURATION seconds;
              the lag from commit to backend write acknowledged, p50/p99/max,
              as each exporter measures it (feed record -> apply returned).
  2. swap:    the same rate while each exporter is hot-swapped SWAPS times
              (`muster plugin reload`); the pause at each switch and the lag
              over the phase.
  3. flood:   unpaced writers for DURATION seconds; the changes/s each
              exporter sustained (changes applied / time until caught up).

Every change is one catalog write that changes one instance (a new
instance, or a health flip), so catalog writes/s = feed changes/s.

    cargo build --release && python3 bench/export/run.py
    RATE=2000 DURATION=20 SWAPS=10 python3 bench/export/run.py
    ZK_FORCE_SYNC=no python3 bench/export/run.py   # ZooKeeper without fsync
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
os.environ.setdefault("BENCH", "export")
import clusters  # noqa: E402  (process cleanup, http(), wait())

RATE = int(os.environ.get("RATE", "1000"))
DURATION = float(os.environ.get("DURATION", "20"))
SWAPS = int(os.environ.get("SWAPS", "10"))
THREADS = 32
HTTP_PORT, SERVER_PORT, DNS_PORT = 18600, 18601, 18602
ETCD_PORT, ETCD_PEER, ZK_PORT = 23790, 23800, 21810
say = clusters.say


def start(cmd, log, **kw):
    p = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, **kw)
    clusters._procs.append(p)
    return p


def build_plugins():
    target = os.environ.get("CARGO_TARGET_DIR", "/var/cache/muster-target") + "/bench-plugins"
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip2",
                    "-p", "etcd-exporter", "-p", "zookeeper-exporter", "--target-dir", target],
                   cwd=ROOT, check=True)
    return {n: f"{target}/wasm32-wasip2/release/{n.replace('-', '_')}.wasm"
            for n in ("etcd-exporter", "zookeeper-exporter")}


def variant(data, n):
    """The same component with a custom section appended: a new hash."""
    def leb(v):
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v == 0:
                out.append(b)
                return bytes(out)
            out.append(b | 0x80)
    name = b"muster-bench-version"
    body = leb(len(name)) + name + n.to_bytes(4, "little")
    return data + b"\x00" + leb(len(body)) + body


class Writer:
    """THREADS threads sharing one schedule: change k is due at k/RATE
    (or as fast as possible when rate is None)."""

    def __init__(self, rate, seconds, start_id):
        self.rate, self.seconds, self.next = rate, seconds, start_id
        self.lock = threading.Lock()
        self.sent = 0
        self.errors = 0

    def take(self):
        with self.lock:
            k = self.next
            self.next += 1
            return k

    def run(self):
        t0 = time.monotonic()
        first = self.next

        def worker():
            conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
            while True:
                k = self.take()
                if self.rate:
                    due = t0 + (k - first) / self.rate
                    if due > t0 + self.seconds:
                        return
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                elif time.monotonic() - t0 > self.seconds:
                    return
                # 2 of 3 writes add an instance, 1 of 3 flips the health of
                # an earlier one: one feed change each.
                i = k if k % 3 else k - 2
                status = "passing" if (k % 3) or (k // 3) % 2 else "warning"
                body = json.dumps({
                    "Node": f"bench-{i % 50}", "Address": f"10.3.{i % 50}.1",
                    "Service": {"ID": f"i{i}", "Service": f"svc-{i % 100}", "Port": 1024 + i % 60000},
                    "Check": {"CheckID": f"c{i}", "ServiceID": f"i{i}", "Status": status},
                })
                try:
                    conn.request("PUT", "/v1/catalog/register", body)
                    r = conn.getresponse()
                    r.read()
                    ok = r.status == 200
                except Exception:
                    ok = False
                    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
                with self.lock:
                    if ok:
                        self.sent += 1
                    else:
                        self.errors += 1

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0


def exporters():
    st, body = clusters.http("GET", f"http://127.0.0.1:{HTTP_PORT}/v1/muster/exporters", timeout=10)
    return {e["Name"]: e for e in json.loads(body)} if st == 200 else {}


def caught_up(secs=120):
    clusters.wait("exporters caught up", lambda: all(
        e["AppliedSeq"] == e["FeedSeq"] and e["Phase"] == "exporting" for e in exporters().values()), secs)


def reset_lag():
    clusters.http("PUT", f"http://127.0.0.1:{HTTP_PORT}/v1/muster/exporters/reset-lag")


def install_missing():
    """etcd 3.4 and ZooKeeper 3.8 from Debian, only when missing."""
    need = []
    if not shutil.which("etcd"):
        need.append("etcd-server")
    if not os.path.exists("/usr/share/java/zookeeper.jar"):
        need.append("zookeeper")
    if need:
        say(f"installing {' '.join(need)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True, env=env, stdout=subprocess.DEVNULL)


def main():
    install_missing()
    bin_ = clusters.MUSTER_BIN
    if not os.path.exists(bin_):
        sys.exit(f"{bin_} not found: cargo build --release first")
    work = tempfile.mkdtemp(prefix="muster-bench-export-")
    wasm = build_plugins()
    files = {}
    for name, path in wasm.items():
        files[name] = os.path.join(work, f"{name}.wasm")
        shutil.copy(path, files[name])
    start(["etcd", "--name", "b", "--data-dir", f"{work}/etcd",
           "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
           "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
           "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER}",
           "--initial-cluster", f"b=http://127.0.0.1:{ETCD_PEER}"], f"{work}/etcd.log")
    with open(f"{work}/zoo.cfg", "w") as f:
        f.write(f"tickTime=2000\ndataDir={work}/zk\nclientPort={ZK_PORT}\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n4lw.commands.whitelist=*\n"
                # ZK_FORCE_SYNC=no: ZooKeeper without fsync, to separate
                # muster's share of the lag from ZooKeeper's disk writes.
                f"forceSync={os.environ.get('ZK_FORCE_SYNC', 'yes')}\n")
    start(["java", "-Xmx512m", "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
           "org.apache.zookeeper.server.quorum.QuorumPeerMain", f"{work}/zoo.cfg"], f"{work}/zk.log")
    with open(f"{work}/muster.toml", "w") as f:
        f.write(f"""
[[exporter]]
name = "etcd"
plugin = "{files['etcd-exporter']}"
grant = {{ connect = ["127.0.0.1:{ETCD_PORT}"] }}
config = {{ endpoints = ["http://127.0.0.1:{ETCD_PORT}"], prefix = "/services" }}

[[exporter]]
name = "zk"
plugin = "{files['zookeeper-exporter']}"
grant = {{ connect = ["127.0.0.1:{ZK_PORT}"] }}
config = {{ servers = ["127.0.0.1:{ZK_PORT}"], path = "/services" }}
""")
    clusters.wait("etcd", lambda: clusters.http("POST", f"http://127.0.0.1:{ETCD_PORT}/v3/maintenance/status", b"{}")[0] == 200)

    def zk_ok():
        import socket
        try:
            with socket.create_connection(("127.0.0.1", ZK_PORT), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False
    clusters.wait("zookeeper", zk_ok)
    start([bin_, "agent", "--server", "--bootstrap-expect", "1", "--node", "bench", "--data-dir", f"{work}/muster",
           "--http-addr", f"127.0.0.1:{HTTP_PORT}", "--server-addr", f"127.0.0.1:{SERVER_PORT}",
           "--dns-addr", f"127.0.0.1:{DNS_PORT}", "--config", f"{work}/muster.toml"], f"{work}/muster.log")
    clusters.wait("muster exporting", lambda: len(exporters()) == 2 and all(
        e["Phase"] == "exporting" for e in exporters().values()))
    results = {}

    # A fresh ZooKeeper (a JVM) answers its first seconds of writes slowly
    # while it warms up; measure after that.
    say("warm-up: 5s at the paced rate")
    w = Writer(RATE, 5, 0)
    w.run()
    caught_up()
    say(f"phase 1: {RATE} changes/s for {DURATION:.0f}s")
    reset_lag()
    w = Writer(RATE, DURATION, w.next)
    took = w.run()
    caught_up()
    ex = exporters()
    results["paced"] = {"rate": w.sent / took, "errors": w.errors,
                        "lag": {n: (e["LagP50Ms"], e["LagP99Ms"], e["LagMaxMs"]) for n, e in ex.items()},
                        "apply": {n: (e["ApplyP99Ms"], e["ApplyMaxMs"]) for n, e in ex.items()}}

    say(f"phase 2: {RATE} changes/s with {SWAPS} swaps of each exporter")
    reset_lag()
    w = Writer(RATE, max(DURATION, SWAPS * 1.2 + 2), w.next)
    t = threading.Thread(target=w.run)
    t.start()
    time.sleep(1)
    for n in range(1, SWAPS + 1):
        for name, plugin in (("etcd", "etcd-exporter"), ("zk", "zookeeper-exporter")):
            with open(wasm[plugin], "rb") as f:
                data = variant(f.read(), n)
            tmp = files[plugin] + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, files[plugin])
            out = subprocess.run([bin_, "plugin", "reload", name, "--http-addr", f"127.0.0.1:{HTTP_PORT}"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"swap {n} of {name} failed: {out.stderr}")
        time.sleep(0.5)
    t.join()
    caught_up()
    ex = exporters()
    swaps = {}
    for name, e in ex.items():
        live = [s for s in e["Swaps"] if s["Outcome"] == "live"]
        gaps = [s for s in live if s["FirstStreamedSeq"] is not None and s["FirstStreamedSeq"] != s["CaughtUpSeq"] + 1]
        swaps[name] = {"count": len(live), "pause_max": max((s["PauseMs"] for s in live), default=0),
                       "pause_p50": sorted(s["PauseMs"] for s in live)[len(live) // 2] if live else 0,
                       "gaps": len(gaps), "lag": (e["LagP50Ms"], e["LagP99Ms"], e["LagMaxMs"])}
    results["swap"] = swaps

    say(f"phase 3: wrk, 32 connections, new instances as fast as they commit, for {DURATION:.0f}s")
    before = {n: e["ChangesApplied"] for n, e in exporters().items()}
    reset_lag()
    t0 = time.monotonic()
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{int(DURATION)}s", "--timeout", "5s",
                          "-s", os.path.join(HERE, "..", "registrations", "register.lua"),
                          f"http://127.0.0.1:{HTTP_PORT}", "--", "flood"],
                         capture_output=True, text=True, check=True).stdout
    wrote = time.monotonic() - t0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    caught = {}
    while len(caught) < 2 and time.monotonic() - t0 < 300:
        for n, e in exporters().items():
            if n not in caught and e["AppliedSeq"] == e["FeedSeq"]:
                caught[n] = time.monotonic() - t0
        time.sleep(0.05)
    after = exporters()
    results["flood"] = {"catalog_rate": total / wrote,
                        "export_rate": {n: (after[n]["ChangesApplied"] - before[n]) / caught.get(n, 1e9) for n in after},
                        "lag": {n: (e["LagP50Ms"], e["LagP99Ms"], e["LagMaxMs"]) for n, e in after.items()}}

    print(json.dumps(results, indent=2))
    p = results["paced"]
    print(f"\npaced {p['rate']:.0f} changes/s (target {RATE}), errors {p['errors']}")
    for n, (p50, p99, mx) in p["lag"].items():
        print(f"  {n:5s} lag p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {mx:.1f} ms   (target p99 < 100 ms); "
              f"apply call p99 {p['apply'][n][0]:.1f} ms, max {p['apply'][n][1]:.1f} ms")
    for n, s in results["swap"].items():
        print(f"  {n:5s} {s['count']} swaps: pause p50 {s['pause_p50']:.1f} ms, max {s['pause_max']:.1f} ms; "
              f"gaps {s['gaps']}; lag during swaps p50 {s['lag'][0]:.1f} / p99 {s['lag'][1]:.1f} / max {s['lag'][2]:.1f} ms")
    f = results["flood"]
    print(f"flood: catalog {f['catalog_rate']:.0f} changes/s; exported " +
          ", ".join(f"{n} {r:.0f}/s (lag p50 {f['lag'][n][0]:.0f} / p99 {f['lag'][n][1]:.0f} ms)"
                    for n, r in f["export_rate"].items()))
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    main()
