"""redis-ping: a muster health check written in Python.

Connects to the Redis server under check (the service's address and port),
sends PING (after AUTH when a password is configured) and reads one reply:

  +PONG            -> passing
  -LOADING ...     -> warning (the server is up but still loading its data)
  anything else    -> critical, with the reply or the error as the output

The node grants the connection: a health check may reach its own target,
nothing else unless its [[check_plugin]] block's `grant.connect` says so.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import (
    instance_network,
    log,
    monotonic_clock,
    network,
    poll,
    tcp_create_socket,
)
from wit_world.imports.muster_plugin_types import CheckResult, CheckStatus, Target


class Timeout(Exception):
    pass


def wait(pollable, deadline):
    """Waits until `pollable` is ready, or raises Timeout at `deadline`."""
    with monotonic_clock.subscribe_instant(deadline) as timer:
        if 0 not in poll.poll([pollable, timer]):
            raise Timeout()


def ipv4(host, port):
    parts = tuple(int(p) for p in host.split("."))
    if len(parts) != 4:
        raise ValueError(f"{host} is not an IPv4 address")
    return network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port=port, address=parts))


def read_line(stream, deadline):
    buf = b""
    while b"\r\n" not in buf:
        with stream.subscribe() as ready:
            wait(ready, deadline)
        try:
            buf += stream.read(512)
        except Err:
            raise ConnectionError("connection closed by the server")
    return buf.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def command(*words):
    """One Redis command in RESP."""
    out = f"*{len(words)}\r\n"
    for w in words:
        out += f"${len(w.encode())}\r\n{w}\r\n"
    return out.encode()


def ping(host, port, password, deadline):
    net = instance_network.instance_network()
    sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
    sock.start_connect(net, ipv4(host, port))
    while True:
        with sock.subscribe() as ready:
            wait(ready, deadline)
        try:
            inp, out = sock.finish_connect()
            break
        except Err as e:
            if e.value != network.ErrorCode.WOULD_BLOCK:
                raise
    with inp, out:
        if password:
            out.blocking_write_and_flush(command("AUTH", password))
            answer = read_line(inp, deadline)
            if not answer.startswith("+OK"):
                return f"AUTH failed: {answer}"
        out.blocking_write_and_flush(command("PING"))
        return read_line(inp, deadline)


def describe(e):
    if isinstance(e, Timeout):
        return "i/o timeout"
    if isinstance(e, Err) and isinstance(e.value, network.ErrorCode):
        return e.value.name.lower().replace("_", " ")
    return str(e) or type(e).__name__


class WitWorld(wit_world.WitWorld):
    def check(self, target: Target, config: str) -> CheckResult:
        settings = json.loads(config or "{}")
        host, port = target.address, target.port
        if target.endpoint:
            host, _, p = target.endpoint.rpartition(":")
            port = int(p)
        deadline = monotonic_clock.now() + max(target.timeout_ms, 1) * 1_000_000
        try:
            reply = ping(host, port, settings.get("password"), deadline)
        except Exception as e:
            log.log(log.Level.DEBUG, f"redis {host}:{port}: {describe(e)}")
            return CheckResult(CheckStatus.CRITICAL, f"redis {host}:{port}: {describe(e)}")
        if reply == "+PONG":
            return CheckResult(CheckStatus.PASSING, f"redis {host}:{port}: PONG")
        if reply.startswith("-LOADING"):
            return CheckResult(CheckStatus.WARNING, f"redis {host}:{port}: {reply[1:]}")
        return CheckResult(CheckStatus.CRITICAL, f"redis {host}:{port}: {reply}")
