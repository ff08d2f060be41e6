"""Measures docker event -> DNS answer latency for bench/docker-events.

Event times are dockerd's own (timeNano from `docker events`); answer times
are when a UDP query to muster first gets the expected answer (A records
after a start, NXDOMAIN after a die). Pending names are polled every 2 ms,
so the resolution is about 2 ms plus one query's round trip.
"""
import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def query(name, qid):
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + q + struct.pack(">HH", 1, 1)


class Events(threading.Thread):
    """Follows `docker events` and records each container's start/die time."""

    def __init__(self):
        super().__init__(daemon=True)
        self.times = {}
        self.lags = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}",
             "--filter", "type=container", "--filter", "event=start", "--filter", "event=die",
             "--filter", "label=muster-bench"],
            stdout=subprocess.PIPE, text=True)

    def run(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            name = ev.get("Actor", {}).get("Attributes", {}).get("name", "")
            with self.lock:
                self.times[(name, ev.get("Action") or ev.get("status"))] = ev["timeNano"] / 1e9
                self.lags.append(time.time() - ev["timeNano"] / 1e9)

    def when(self, name, action, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                t = self.times.get((name, action))
            if t is not None:
                return t
            time.sleep(0.005)
        raise SystemExit(f"no {action} event for {name}")


def wait_answers(sock, port, names, want_records, deadline=30):
    """Polls every name until it answers as wanted; returns name -> time."""
    done = {}
    pending = set(names)
    qid = 0
    end = time.time() + deadline
    while pending and time.time() < end:
        for name in list(pending):
            qid = (qid + 1) & 0xFFFF
            sock.sendto(query(f"{name}.service.consul", qid), ("127.0.0.1", port))
            try:
                data, _ = sock.recvfrom(4096)
            except socket.timeout:
                continue
            now = time.time()
            rcode = data[3] & 0xF
            answers = struct.unpack(">H", data[6:8])[0]
            ok = (rcode == 0 and answers > 0) if want_records else rcode == 3
            if ok:
                done[name] = now
                pending.discard(name)
        time.sleep(0.002)
    if pending:
        raise SystemExit(f"never answered as expected: {sorted(pending)[:5]}")
    return done


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def docker_many(args_list):
    with ThreadPoolExecutor(max_workers=len(args_list)) as pool:
        for r in pool.map(lambda a: subprocess.run(["docker"] + a, capture_output=True, text=True), args_list):
            if r.returncode != 0:
                raise SystemExit(f"docker failed: {r.stderr}")


def while_polling(sock, port, names, want_records, commands):
    """Runs the docker commands while polling DNS for the names, so that a
    container that changed early in a burst is timed from its own event,
    not from the end of the burst."""
    result = {}
    poller = threading.Thread(
        target=lambda: result.update(wait_answers(sock, port, names, want_records, deadline=60)))
    poller.start()
    docker_many(commands)
    poller.join()
    if len(result) != len(names):
        raise SystemExit("the DNS poller gave up")
    return result


def sources(http):
    with urllib.request.urlopen(f"http://{http}/v1/muster/sources") as r:
        return json.load(r)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http")
    ap.add_argument("--dns-port", type=int)
    ap.add_argument("--containers", type=int)
    ap.add_argument("--burst", type=int)
    ap.add_argument("--image")
    a = ap.parse_args()
    events = Events()
    events.start()
    time.sleep(0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    up, down = [], []
    for first in range(0, a.containers, a.burst):
        names = [f"ev-{i}" for i in range(first, min(first + a.burst, a.containers))]
        answered = while_polling(sock, a.dns_port, names, True, [
            ["run", "-d", "--label", "muster-bench=1", "--name", n, "-e", f"SERVICE_NAME={n}",
             "-p", "127.0.0.1::80", a.image] for n in names])
        up += [answered[n] - events.when(n, "start") for n in names]
        gone = while_polling(sock, a.dns_port, names, False, [["kill", n] for n in names])
        down += [gone[n] - events.when(n, "die") for n in names]
        docker_many([["rm", n] for n in names])
    print(f"start -> answered over DNS: n={len(up)} p50={pct(up, 50)*1000:.0f} ms "
          f"p99={pct(up, 99)*1000:.0f} ms max={max(up)*1000:.0f} ms")
    print(f"die   -> NXDOMAIN:          n={len(down)} p50={pct(down, 50)*1000:.0f} ms "
          f"p99={pct(down, 99)*1000:.0f} ms max={max(down)*1000:.0f} ms")

    with events.lock:
        lags = list(events.lags)
    print(f"(for scale: dockerd's event delivery to a `docker events` client: "
          f"p50={pct(lags, 50)*1000:.0f} ms p99={pct(lags, 99)*1000:.0f} ms)")

    # The reconcile's cost with every container up: one call maps them all.
    names = [f"all-{i}" for i in range(a.containers)]
    for first in range(0, len(names), a.burst):
        batch = names[first:first + a.burst]
        docker_many([["run", "-d", "--label", "muster-bench=1", "--name", n, "-e", f"SERVICE_NAME={n}",
                      "-p", "127.0.0.1::80", a.image] for n in batch])
    wait_answers(sock, a.dns_port, names, True, deadline=60)
    samples = []
    for _ in range(10):
        before = sources(a.http)["Reconciles"]
        subprocess.run(["docker", "pause", names[0]], capture_output=True)
        subprocess.run(["docker", "unpause", names[0]], capture_output=True)
        time.sleep(0.3)
        s = sources(a.http)
        if s["Reconciles"] > before:
            samples.append(s["LastReconcileMs"])
    ms = pct(samples, 50)
    print(f"reconcile with {a.containers} containers: p50 {ms:.2f} ms per call, "
          f"{ms * 1000 / a.containers:.1f} us per container")
    events.proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
