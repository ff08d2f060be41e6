#!/usr/bin/env python3
"""Blocking-query fan-out benchmark for muster (Python standard library only).

Parks N watchers (default 10,000), each on its own HTTP/1.1 connection doing

    GET /v1/kv/<prefix>?recurse&index=<idx>&wait=60s

then writes one key under the prefix and measures when each watcher's
response arrives. Arrival times are the kernel's receive timestamps
(SO_TIMESTAMPNS) of the first response segment on each socket, so how fast
this Python process gets around to reading 10,000 sockets does not count
against the server; the time at which this process saw each response is
reported too, for comparison. Latencies are relative to the moment just
before the PUT is written, so they include the commit of the write itself.

The server's resident memory (VmRSS from /proc/<pid>/status) is read while
all watchers are parked.

Exits 0 only if every watcher was woken by the write (a 200 with a higher
X-Consul-Index and the new value) and none returned before it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import socket
import struct
import sys
import time
import uuid

# Not exported by Python's socket module; 35 on Linux (asm-generic, x86_64, arm64).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
ANC_SPACE = socket.CMSG_SPACE(16)


def wallclock() -> float:
    # CLOCK_REALTIME: the clock the kernel's SO_TIMESTAMPNS stamps use.
    return time.clock_gettime(time.CLOCK_REALTIME)


def log(msg: str) -> None:
    print(f"[blocking] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# minimal HTTP/1.1


def parse_response(buf: bytes):
    """Returns (status, headers, body) once buf holds a complete response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    rest = buf[end + 4 :]
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None
        return status, headers, rest[:n]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        pos = 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(rest[pos:eol].split(b";")[0], 16)
            if len(rest) < eol + 2 + size + 2:
                return None
            if size == 0:
                return status, headers, bytes(body)
            body += rest[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    return None  # body delimited by close: complete only at EOF


async def request(host: str, port: int, method: str, path: str, body: bytes = b"", timeout: float = 30.0):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        req = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        writer.write(req)
        await writer.drain()
        buf = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if chunk:
                buf += chunk
            r = parse_response(buf)
            if r is not None:
                return r
            if not chunk:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    raise ConnectionError(f"{method} {path}: connection closed after {len(buf)} bytes")
                status = int(buf.split(b" ", 2)[1])
                return status, {}, buf[end + 4 :]
    finally:
        writer.close()


# --------------------------------------------------------------------------
# watchers


class Watcher:
    __slots__ = ("sock", "buf", "rx_ts", "user_ts", "done", "result", "eof")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.rx_ts: float | None = None
        self.user_ts: float | None = None
        self.done = False
        self.result = None
        self.eof = False


class Fleet:
    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self.loop = loop
        self.watchers: list[Watcher] = []
        self.completed = 0
        self.expected = expected
        self.all_done = asyncio.Event()

    def on_readable(self, w: Watcher) -> None:
        try:
            data, anc, _flags, _addr = w.sock.recvmsg(65536, ANC_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        if w.rx_ts is None:
            w.user_ts = wallclock()
            w.rx_ts = w.user_ts
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    w.rx_ts = sec + nsec / 1e9
        if data:
            w.buf += data
            r = parse_response(w.buf)
            if r is None:
                return
            w.result = r
        else:
            w.eof = True
        self.finish(w)

    def finish(self, w: Watcher) -> None:
        # Keep the socket open until the end: closing it now would make the
        # server handle 10,000 FINs inside the window being measured.
        self.loop.remove_reader(w.sock.fileno())
        w.done = True
        self.completed += 1
        if self.completed >= self.expected:
            self.all_done.set()


def source_addresses(n: int) -> list[str]:
    return [f"127.0.0.{i}" for i in range(1, n + 1)]


def sources_needed(watchers: int) -> int:
    try:
        lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        usable = int((hi - lo + 1) * 0.8)
    except OSError:
        usable = 20000
    return max(1, math.ceil(watchers / max(1, usable)))


async def open_watchers(fleet: Fleet, host: str, port: int, path: str, n: int, sources: list[str], concurrency: int):
    loop = fleet.loop
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: muster-blocking-bench\r\n\r\n".encode()
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if len(sources) > 1:
                    try:
                        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass
                    sock.bind((sources[i % len(sources)], 0))
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 30)
                await loop.sock_sendall(sock, req)
            except (OSError, asyncio.TimeoutError) as e:
                sock.close()
                failures.append(f"watcher {i}: {type(e).__name__}: {e}")
                return
            w = Watcher(sock)
            fleet.watchers.append(w)
            loop.add_reader(sock.fileno(), fleet.on_readable, w)

    await asyncio.gather(*(one(i) for i in range(n)))
    return failures


# --------------------------------------------------------------------------
# server process facts


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def rss_mb(pid: int | None, field: str = "VmRSS") -> float | None:
    if not pid:
        return None
    v = proc_status(pid).get(field)
    if not v:
        return None
    return int(v.split()[0]) / 1024.0  # kB -> MiB


def fd_count(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[min(k, len(sorted_vals) - 1)]


# --------------------------------------------------------------------------


async def main_async(args) -> int:
    host, _, port_s = args.addr.rpartition(":")
    port = int(port_s)
    loop = asyncio.get_running_loop()
    prefix = args.prefix.strip("/") + "/"
    key = prefix + "k"

    # readiness
    deadline = time.monotonic() + args.ready_timeout
    while True:
        try:
            st, _, body = await request(host, port, "GET", "/v1/status/leader", timeout=2)
            if st == 200 and json.loads(body or b'""'):
                break
        except (OSError, asyncio.TimeoutError, ValueError):
            pass
        if time.monotonic() > deadline:
            log(f"no leader at {args.addr} after {args.ready_timeout}s")
            return 2
        await asyncio.sleep(0.2)

    v0 = f"v0-{uuid.uuid4().hex}".encode()
    st, _, body = await request(host, port, "PUT", f"/v1/kv/{key}", v0)
    if st != 200 or body.strip() != b"true":
        log(f"PUT /v1/kv/{key} -> {st} {body[:200]!r}")
        return 2
    st, hdrs, body = await request(host, port, "GET", f"/v1/kv/{prefix}?recurse")
    if st != 200 or "x-consul-index" not in hdrs:
        log(f"GET /v1/kv/{prefix}?recurse -> {st} headers={hdrs} body={body[:200]!r}")
        return 2
    idx = int(hdrs["x-consul-index"])
    log(f"{key} written, X-Consul-Index={idx}")

    rss_before = rss_mb(args.pid)
    fds_before = fd_count(args.pid)

    nsrc = args.sources or sources_needed(args.watchers)
    sources = source_addresses(nsrc)
    path = f"/v1/kv/{prefix}?recurse&index={idx}&wait={args.wait}"
    log(f"opening {args.watchers} watchers: GET {path} from {', '.join(sources)}")
    fleet = Fleet(loop, args.watchers)
    t_open = time.monotonic()
    failures = await open_watchers(fleet, host, port, path, args.watchers, sources, args.connect_concurrency)
    open_s = time.monotonic() - t_open
    if failures:
        log(f"{len(failures)} watchers failed to open; first: {failures[0]}")
    opened = len(fleet.watchers)
    log(f"{opened} watchers sent in {open_s:.2f}s; settling {args.settle}s")
    await asyncio.sleep(args.settle)

    early = [w for w in fleet.watchers if w.done]
    rss_parked = rss_mb(args.pid)
    hwm_parked = rss_mb(args.pid, "VmHWM")
    fds_parked = fd_count(args.pid)
    if early:
        codes: dict[str, int] = {}
        for w in early:
            c = "closed" if w.result is None else str(w.result[0])
            codes[c] = codes.get(c, 0) + 1
        sample = early[0].result
        log(f"{len(early)} watchers returned BEFORE the write: {codes}; first: "
            f"{(sample[0], sample[1], sample[2][:200]) if sample else 'connection closed'}")

    # the write
    parked = [w for w in fleet.watchers if not w.done]
    fleet.expected = fleet.completed + len(parked)
    if fleet.completed >= fleet.expected:
        fleet.all_done.set()
    v1 = f"v1-{uuid.uuid4().hex}".encode()
    v1_b64 = base64.b64encode(v1)
    if args.quiet > 0:
        # Quiet client: stop watching the sockets while the server wakes its
        # watchers, so that this process takes no CPU from the server (the
        # two share the machine's cores). Arrival times are the kernel's
        # receive timestamps, kept with each message until it is read.
        for w in parked:
            loop.remove_reader(w.sock.fileno())
    t0 = wallclock()
    st, _, body = await request(host, port, "PUT", f"/v1/kv/{key}", v1)
    put_ms = (wallclock() - t0) * 1000
    if st != 200 or body.strip() != b"true":
        log(f"PUT /v1/kv/{key} (the wake-up write) -> {st} {body[:200]!r}")
    if args.quiet > 0:
        await asyncio.sleep(args.quiet)
        for w in parked:
            while not w.done:
                before = len(w.buf)
                fleet.on_readable(w)
                if not w.done and len(w.buf) == before:
                    break  # nothing more to read yet
            if not w.done:
                loop.add_reader(w.sock.fileno(), fleet.on_readable, w)
    try:
        await asyncio.wait_for(fleet.all_done.wait(), args.timeout)
    except asyncio.TimeoutError:
        pass
    # give stragglers that are mid-read one more loop turn
    await asyncio.sleep(0)

    woken, bad = [], {}
    for w in parked:
        if not w.done or w.result is None:
            reason = "no response" if not w.done else "connection closed"
            bad[reason] = bad.get(reason, 0) + 1
            continue
        status, hdrs, body = w.result
        new_idx = int(hdrs.get("x-consul-index", "0") or 0)
        if status != 200:
            bad[f"HTTP {status}"] = bad.get(f"HTTP {status}", 0) + 1
        elif new_idx <= idx:
            bad["index not advanced"] = bad.get("index not advanced", 0) + 1
        elif v1_b64 not in body:
            bad["new value missing"] = bad.get("new value missing", 0) + 1
        else:
            woken.append(w)

    rx = sorted((w.rx_ts - t0) * 1000 for w in woken)
    user = sorted((w.user_ts - t0) * 1000 for w in woken)
    for w in fleet.watchers:
        try:
            w.sock.close()
        except OSError:
            pass

    all_woken = len(woken) == args.watchers
    last = rx[-1] if rx else float("nan")

    def fmt(v):
        return "n/a" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))

    print()
    print("## muster blocking-query fan-out")
    print()
    print(f"- query: `GET {path}`")
    print(f"- sources: {', '.join(sources)}; watchers opened in {open_s:.2f}s")
    print(f"- wake-up PUT answered in {put_ms:.1f} ms")
    print()
    print("| metric | value |")
    print("| --- | --- |")
    print(f"| watchers | {args.watchers} |")
    print(f"| opened | {opened} |")
    print(f"| returned before the write | {len(early)} |")
    print(f"| woken by the write | {len(woken)} |")
    print(f"| time to last wake (ms) | {fmt(last)} |")
    print(f"| wake latency p50 (ms) | {fmt(percentile(rx, 50))} |")
    print(f"| wake latency p99 (ms) | {fmt(percentile(rx, 99))} |")
    print(f"| last response read by this client (ms) | {fmt(user[-1] if user else None)} |")
    print(f"| server RSS before watchers (MB) | {fmt(rss_before)} |")
    print(f"| server RSS, watchers parked (MB) | {fmt(rss_parked)} |")
    print(f"| server peak RSS so far (MB) | {fmt(hwm_parked)} |")
    print(f"| server open fds before / parked | {fmt(fds_before)} / {fmt(fds_parked)} |")
    print()
    if bad:
        print(f"not woken: {bad}")
    print(f"target: all woken within 100 ms: {'yes' if all_woken and last <= 100 else 'NO'}"
          f" (woken {len(woken)}/{args.watchers}, last {fmt(last)} ms)")
    if rss_parked is not None:
        print(f"target: RSS < 200 MB while parked: {'yes' if rss_parked < 200 else 'NO'} ({rss_parked:.1f} MB)")
    else:
        print("target: RSS < 200 MB while parked: unknown (no --pid)")
    if args.json:
        print(json.dumps({
            "watchers": args.watchers, "opened": opened, "early": len(early), "woken": len(woken),
            "last_wake_ms": last, "p50_ms": percentile(rx, 50), "p99_ms": percentile(rx, 99),
            "rss_before_mb": rss_before, "rss_parked_mb": rss_parked, "put_ms": put_ms, "not_woken": bad,
        }))
    return 0 if all_woken else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", default="127.0.0.1:18500", help="muster HTTP address host:port")
    ap.add_argument("--pid", type=int, help="muster process id, for VmRSS")
    ap.add_argument("--watchers", type=int, default=10000)
    ap.add_argument("--prefix", default="watch/")
    ap.add_argument("--wait", default="60s", help="the blocking query's wait=")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the last watcher is sent")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for all wakes after the write")
    ap.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.1..N (0: as many as needed)")
    ap.add_argument("--connect-concurrency", type=int, default=200)
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--json", action="store_true", help="also print a JSON summary line")
    ap.add_argument("--quiet", type=float, default=2.0,
                    help="seconds the client stays off the sockets after the write, so it takes no CPU from the server while it wakes watchers (0: read as responses arrive)")
    args = ap.parse_args()
    host = args.addr.rpartition(":")[0]
    if not host.startswith("127."):
        ap.error("only loopback (127.0.0.0/8) targets are allowed")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
