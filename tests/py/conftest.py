"""Fixtures for the py-consul end-to-end suite.

The suite talks to an already running muster agent whose HTTP address is in
MUSTER_HTTP_ADDR (host:port). Nothing here is skipped: without that variable
the run stops at once with an error, so a CI run can never pass vacuously.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest

import consul

ENV = "MUSTER_HTTP_ADDR"


def _addr() -> tuple[str, int]:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        raise pytest.UsageError(
            f"{ENV} is not set: start a muster agent (e.g. `muster agent --dev "
            f"--http-addr 127.0.0.1:8500`) and export {ENV}=127.0.0.1:8500, "
            f"or use tests/py/run.sh which does both"
        )
    if "//" in raw:
        raw = raw.split("//", 1)[1]
    host, sep, port = raw.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise pytest.UsageError(f"{ENV}={raw!r} is not host:port")
    return host, int(port)


def pytest_configure(config):
    # Fail loudly and early, before collection.
    _addr()


def _wait_for_leader(host: str, port: int, timeout: float = 30.0) -> str:
    url = f"http://{host}:{port}/v1/status/leader"
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                leader = json.loads(r.read().decode() or '""')
                if isinstance(leader, str) and leader:
                    return leader
                last = f"leader is {leader!r}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = repr(e)
        time.sleep(0.2)
    pytest.fail(f"no leader at {url} within {timeout}s (last: {last})", pytrace=False)


@pytest.fixture(scope="session")
def addr() -> tuple[str, int]:
    host, port = _addr()
    _wait_for_leader(host, port)
    return host, port


@pytest.fixture(scope="session")
def c(addr) -> consul.Consul:
    host, port = addr
    return consul.Consul(host=host, port=port)


@pytest.fixture
def new_client(addr):
    """Factory for extra clients (one per thread: requests sessions are not thread-safe)."""
    host, port = addr

    def make() -> consul.Consul:
        return consul.Consul(host=host, port=port)

    return make
