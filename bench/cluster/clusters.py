"""Three-node clusters of muster and of etcd 3.4 on 127.0.0.2-.4, for the
cluster benchmarks (cluster-put, failover, registrations). Only loopback
addresses are used; every process is killed on exit."""

import atexit
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

MUSTER_BIN = os.environ.get("MUSTER_BIN", "/var/cache/muster-target/release/muster")
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
_procs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *_: exit(130))


def say(msg):
    print(f"[{os.environ.get('BENCH', 'bench')}] {msg}", flush=True)


def http(method, url, body=None, timeout=2.0):
    """(status, body bytes); status 0 when the request failed outright."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:
        return 0, b""


def wait(what, probe, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if probe():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what}: not ready after {secs}s")


class Node:
    def __init__(self, name, ip, proc, http_url, kill_target=None):
        self.name, self.ip, self.proc, self.http = name, ip, proc, http_url

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self):
        return self.proc.poll() is None


class Cluster:
    def __init__(self, kind, nodes, work):
        self.kind, self.nodes, self.work = kind, nodes, work

    def stop(self):
        for n in self.nodes:
            n.kill9()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(self.work, ignore_errors=True)

    def leader(self):
        """The node that leads, as the nodes themselves report it."""
        for n in self.nodes:
            if not n.alive():
                continue
            if self.kind == "muster":
                st, body = http("GET", n.http + "/v1/status/leader")
                if st == 200:
                    addr = json.loads(body or b'""')
                    for m in self.nodes:
                        if addr.startswith(m.ip + ":"):
                            return m
            else:
                st, body = http("POST", n.http + "/v3/maintenance/status", b"{}")
                if st == 200:
                    s = json.loads(body)
                    if s.get("leader") and s["leader"] == s["header"].get("member_id"):
                        return n
        return None


def start_muster(work=None, config="", extra_clients=0):
    """Three muster servers (bootstrap_expect = 3) on IPS, default Raft
    timings, data on disk; `extra_clients` client agents on .5, .6, …"""
    work = work or tempfile.mkdtemp(prefix="muster-cluster-")
    join = [f"{ip}:8300" for ip in IPS]
    nodes = []
    members = [(f"server-{i + 1}", ip, True) for i, ip in enumerate(IPS)]
    members += [(f"client-{i + 1}", f"127.0.0.{5 + i}", False) for i in range(extra_clients)]
    for name, ip, server in members:
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "muster.toml")
        with open(cfg, "w") as f:
            f.write(config)
        args = [MUSTER_BIN, "agent", "--config", cfg, "--node", name, "--data-dir", d,
                "--http-addr", f"{ip}:8500", "--server-addr", f"{ip}:8300",
                "--dns-addr", f"{ip}:8600"]
        if server:
            args += ["--server", "--bootstrap-expect", "3"]
        for j in join:
            args += ["--retry-join", j]
        log = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        _procs.append(p)
        nodes.append(Node(name, ip, p, f"http://{ip}:8500"))
    c = Cluster("muster", nodes, work)
    for n in nodes:
        wait(f"muster {n.name}", lambda n=n: http("GET", n.http + "/v1/status/leader")[1] not in (b"", b'""'))
    wait("muster write", lambda: http("PUT", nodes[0].http + "/v1/kv/bench/ready", b"ready")[1].strip() == b"true")
    return c


def start_etcd(work=None):
    """Three etcd 3.4 members on IPS, default timings and fsync."""
    work = work or tempfile.mkdtemp(prefix="etcd-cluster-")
    initial = ",".join(f"e{i + 1}=http://{ip}:2380" for i, ip in enumerate(IPS))
    nodes = []
    for i, ip in enumerate(IPS):
        name = f"e{i + 1}"
        args = ["etcd", "--name", name, "--data-dir", os.path.join(work, name),
                "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
                "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--logger", "zap", "--log-outputs", "stderr"]
        log = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        _procs.append(p)
        nodes.append(Node(name, ip, p, f"http://{ip}:2379"))
    c = Cluster("etcd", nodes, work)
    key = base64.b64encode(b"bench/ready").decode()
    body = json.dumps({"key": key, "value": base64.b64encode(b"ready").decode()}).encode()
    wait("etcd write", lambda: http("POST", nodes[0].http + "/v3/kv/put", body)[0] == 200)
    wait("etcd leader", lambda: c.leader() is not None)
    return c
