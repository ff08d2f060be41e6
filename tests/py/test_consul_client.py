"""End-to-end tests of muster's Consul-compatible /v1 API through the
unmodified py-consul client (py-consul==1.8.0).

Run against a live agent: MUSTER_HTTP_ADDR=127.0.0.1:8500 pytest tests/py
(tests/py/run.sh starts a dev agent and does this for you).

Every test uses names made unique with a uuid, so tests are independent of
each other and of whatever else the agent holds. Assertions state what
Consul itself does; where Consul is asynchronous (the agent syncs its local
services and check states to the catalog by anti-entropy), the test polls
for a few seconds instead of expecting the change at once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest

import consul
from consul.exceptions import ClientError, NotFound

# How long to wait for something Consul does asynchronously (agent -> catalog
# sync of services and check status). Real Consul takes milliseconds.
SYNC_TIMEOUT = 5.0


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def b64(s: str | bytes) -> str:
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def eventually(fn, timeout: float = SYNC_TIMEOUT, interval: float = 0.05):
    """Call fn until it returns without AssertionError, or re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)


def _assert_eq(got, want):
    assert got == want, (got, want)


@pytest.fixture(scope="module")
def node_name(c) -> str:
    name = c.agent.self()["Config"]["NodeName"]
    assert isinstance(name, str) and name
    return name


@pytest.fixture
def service(c):
    """Registers agent services and deregisters them after the test."""
    registered: list[str] = []

    def register(name: str, service_id: str, **kw) -> str:
        assert c.agent.service.register(name, service_id=service_id, **kw) is True
        registered.append(service_id)
        return service_id

    yield register
    for sid in registered:
        try:
            c.agent.service.deregister(sid)
        except consul.ConsulException:
            pass


@pytest.fixture
def sessions(c):
    """Creates sessions and destroys any still alive after the test, so no
    session outlives its test (an expiring session would write to the KV
    store and disturb the blocking-query timing tests)."""
    created: list[str] = []

    def create(**kw) -> str:
        sid = c.session.create(**kw)
        assert isinstance(sid, str) and sid
        created.append(sid)
        return sid

    yield create
    for sid in created:
        try:
            c.session.destroy(sid)
        except consul.ConsulException:
            pass


def as_index(idx) -> int:
    """X-Consul-Index as returned by py-consul: a decimal string, > 0."""
    assert isinstance(idx, str), idx
    n = int(idx)
    assert n > 0, f"X-Consul-Index must be > 0, got {idx!r}"
    return n


# --------------------------------------------------------------------------
# status / agent


def test_status_leader_and_peers(c):
    leader = c.status.leader()
    assert isinstance(leader, str) and leader
    peers = c.status.peers()
    assert isinstance(peers, list)
    assert leader in peers, (leader, peers)


def test_agent_self(c):
    me = c.agent.self()
    cfg = me["Config"]
    assert isinstance(cfg["Datacenter"], str) and cfg["Datacenter"]
    assert isinstance(cfg["NodeName"], str) and cfg["NodeName"]
    assert cfg["Datacenter"] in c.catalog.datacenters()
    _, nodes = c.catalog.nodes()
    assert cfg["NodeName"] in [n["Node"] for n in nodes]


def test_agent_node_has_passing_serf_health(c, node_name):
    # Consul gives every agent node a node-level "serfHealth" check; sessions
    # created without explicit checks are tied to it.
    _, checks = c.health.node(node_name)
    by_id = {ch["CheckID"]: ch for ch in checks}
    assert "serfHealth" in by_id, checks
    assert by_id["serfHealth"]["Status"] == "passing"
    assert by_id["serfHealth"]["Node"] == node_name


def test_agent_service_register_with_ttl_check(c, service):
    name = uniq("web")
    sid = service(
        name,
        f"{name}-1",
        address="127.0.0.1",
        port=8080,
        tags=["primary", "v1"],
        meta={"version": "1.2.3", "team": "core"},
        check=consul.Check.ttl("60s"),
    )

    s = c.agent.services()[sid]
    assert s["ID"] == sid
    assert s["Service"] == name
    assert s["Port"] == 8080
    assert s["Address"] == "127.0.0.1"
    assert sorted(s["Tags"]) == ["primary", "v1"]
    assert s["Meta"] == {"version": "1.2.3", "team": "core"}

    assert c.agent.service_definition(sid)["Service"] == name

    # A service with one check gets the check id "service:<service id>";
    # a TTL check starts out critical.
    check_id = f"service:{sid}"
    chk = c.agent.checks()[check_id]
    assert chk["ServiceID"] == sid
    assert chk["ServiceName"] == name
    assert chk["Status"] == "critical"

    assert c.agent.check.ttl_pass(check_id, notes="all good") is True
    chk = c.agent.checks()[check_id]
    assert chk["Status"] == "passing"
    assert chk["Output"] == "all good"

    assert c.agent.check.ttl_warn(check_id, notes="hmm") is True
    assert c.agent.checks()[check_id]["Status"] == "warning"

    assert c.agent.check.ttl_fail(check_id, notes="broken") is True
    chk = c.agent.checks()[check_id]
    assert chk["Status"] == "critical"
    assert chk["Output"] == "broken"

    assert c.agent.service.deregister(sid) is True
    assert sid not in c.agent.services()
    assert check_id not in c.agent.checks()


def test_agent_check_register_standalone_ttl(c):
    check_id = uniq("chk")
    assert c.agent.check.register(check_id, check=consul.Check.ttl("60s"), notes="standalone") is True
    try:
        chk = c.agent.checks()[check_id]
        assert chk["Name"] == check_id
        assert chk["Status"] == "critical"
        assert chk["ServiceID"] == ""
        assert c.agent.check.ttl_pass(check_id) is True
        assert c.agent.checks()[check_id]["Status"] == "passing"
    finally:
        assert c.agent.check.deregister(check_id) is True
    assert check_id not in c.agent.checks()


def test_ttl_pass_unknown_check_is_not_success(c):
    # Consul answers 404 "Unknown check ID" (older versions 500); py-consul
    # turns the 404 into False and a 5xx into an exception. Either way: not True.
    try:
        ok = c.agent.check.ttl_pass(uniq("no-such-check"))
    except consul.ConsulException:
        ok = False
    assert ok is False


# --------------------------------------------------------------------------
# health


def test_health_service_passing_filter(c, service, node_name):
    name = uniq("api")
    a = service(name, f"{name}-a", port=9001, tags=["blue"], check=consul.Check.ttl("60s"))
    b = service(name, f"{name}-b", port=9002, tags=["green"], check=consul.Check.ttl("60s"))

    def ids(passing: bool, **kw) -> list[str]:
        _, entries = c.health.service(name, passing=passing, **kw)
        return sorted(e["Service"]["ID"] for e in entries)

    def both_listed_none_passing():
        assert ids(False) == [a, b]
        assert ids(True) == []  # TTL checks start critical

    eventually(both_listed_none_passing)

    idx, entries = c.health.service(name)
    as_index(idx)
    for e in entries:
        assert e["Node"]["Node"] == node_name
        assert e["Service"]["Service"] == name
        check_ids = {ch["CheckID"] for ch in e["Checks"]}
        assert f"service:{e['Service']['ID']}" in check_ids
        assert "serfHealth" in check_ids  # node checks are included

    assert c.agent.check.ttl_pass(f"service:{a}") is True
    assert c.agent.check.ttl_pass(f"service:{b}") is True
    eventually(lambda: _assert_eq(ids(True), [a, b]))

    # a failing instance disappears from ?passing ...
    assert c.agent.check.ttl_fail(f"service:{b}", notes="down") is True

    def only_a():
        assert ids(True) == [a]
        assert ids(False) == [a, b]

    eventually(only_a)

    # ... and comes back once it passes again
    assert c.agent.check.ttl_pass(f"service:{b}") is True
    eventually(lambda: _assert_eq(ids(True), [a, b]))

    # tag filter
    eventually(lambda: _assert_eq(ids(True, tag="green"), [b]))

    # health.checks for the service lists both service checks
    _, checks = c.health.checks(name)
    assert sorted(ch["CheckID"] for ch in checks) == [f"service:{a}", f"service:{b}"]


def test_health_state_critical_lists_failing_check(c, service):
    name = uniq("state")
    sid = service(name, f"{name}-1", check=consul.Check.ttl("60s"))
    check_id = f"service:{sid}"

    def critical_ids():
        _, checks = c.health.state("critical")
        return {ch["CheckID"] for ch in checks}

    eventually(lambda: _assert_eq(check_id in critical_ids(), True))
    c.agent.check.ttl_pass(check_id)
    eventually(lambda: _assert_eq(check_id in critical_ids(), False))


# --------------------------------------------------------------------------
# catalog


def test_catalog_reflects_agent_services(c, service, node_name):
    name = uniq("cat")
    sid = service(name, f"{name}-1", address="127.0.0.1", port=7070, tags=["x", "y"], meta={"m": "1"})

    def listed():
        idx, services = c.catalog.services()
        as_index(idx)
        assert name in services, services
        assert sorted(services[name]) == ["x", "y"]

    eventually(listed)

    idx, instances = c.catalog.service(name)
    as_index(idx)
    assert len(instances) == 1
    inst = instances[0]
    assert inst["Node"] == node_name
    assert inst["ServiceID"] == sid
    assert inst["ServiceName"] == name
    assert inst["ServicePort"] == 7070
    assert inst["ServiceAddress"] == "127.0.0.1"
    assert sorted(inst["ServiceTags"]) == ["x", "y"]
    assert inst["ServiceMeta"] == {"m": "1"}

    _, tagged = c.catalog.service(name, tag="y")
    assert [i["ServiceID"] for i in tagged] == [sid]
    _, none = c.catalog.service(name, tag="no-such-tag")
    assert none == []

    idx, nodes = c.catalog.nodes()
    as_index(idx)
    me = [n for n in nodes if n["Node"] == node_name]
    assert len(me) == 1 and me[0]["Address"]

    _, node = c.catalog.node(node_name)
    assert sid in node["Services"]
    assert node["Services"][sid]["Port"] == 7070

    assert c.agent.service.deregister(sid) is True
    eventually(lambda: _assert_eq(name in c.catalog.services()[1], False))
    assert c.catalog.service(name)[1] == []


def test_catalog_register_deregister_external_node(c):
    node = uniq("ext-node")
    svc = uniq("ext-svc")
    svc_id = f"{svc}-1"
    assert (
        c.catalog.register(
            node,
            "127.0.0.9",
            service={"Service": svc, "ID": svc_id, "Port": 9000, "Tags": ["ext"]},
            check={
                "Node": node,
                "CheckID": "ext-check",
                "Name": "external check",
                "Status": "passing",
                "ServiceID": svc_id,
            },
        )
        is True
    )

    _, nodes = c.catalog.nodes()
    ours = [n for n in nodes if n["Node"] == node]
    assert len(ours) == 1 and ours[0]["Address"] == "127.0.0.9"

    _, info = c.catalog.node(node)
    assert info["Node"]["Node"] == node
    assert info["Node"]["Address"] == "127.0.0.9"
    assert info["Services"][svc_id]["Service"] == svc
    assert info["Services"][svc_id]["Port"] == 9000
    assert info["Services"][svc_id]["Tags"] == ["ext"]

    _, instances = c.catalog.service(svc)
    assert len(instances) == 1
    assert instances[0]["Node"] == node
    assert instances[0]["Address"] == "127.0.0.9"
    assert instances[0]["ServiceID"] == svc_id

    _, healthy = c.health.service(svc, passing=True)
    assert [e["Service"]["ID"] for e in healthy] == [svc_id]
    _, checks = c.health.checks(svc)
    assert [(ch["CheckID"], ch["Status"]) for ch in checks] == [("ext-check", "passing")]

    # deregistering only the service keeps the node (and drops the service's check)
    assert c.catalog.deregister(node, service_id=svc_id) is True
    assert c.catalog.service(svc)[1] == []
    assert c.health.checks(svc)[1] == []
    assert c.catalog.node(node)[1]["Node"]["Node"] == node

    # deregistering the node removes it altogether
    assert c.catalog.deregister(node) is True
    assert c.catalog.node(node)[1] is None
    assert node not in [n["Node"] for n in c.catalog.nodes()[1]]


# --------------------------------------------------------------------------
# kv


def test_kv_put_get_bytes_flags(c):
    k = uniq("kv/basic")
    raw = b"\x00\x01binary\xff\xfe"
    assert c.kv.put(k, raw, flags=42) is True
    idx, e = c.kv.get(k)
    n = as_index(idx)
    assert e["Key"] == k
    assert e["Value"] == raw
    assert e["Flags"] == 42
    assert e["LockIndex"] == 0
    assert e["CreateIndex"] > 0
    assert e["ModifyIndex"] == e["CreateIndex"]
    assert n >= e["ModifyIndex"]
    assert not e.get("Session")

    assert c.kv.put(k, "text value") is True
    _, e2 = c.kv.get(k)
    assert e2["Value"] == b"text value"
    assert e2["Flags"] == 0
    assert e2["CreateIndex"] == e["CreateIndex"]
    assert e2["ModifyIndex"] > e["ModifyIndex"]

    # a key with no body has a null Value
    assert c.kv.put(k, None) is True
    assert c.kv.get(k)[1]["Value"] is None

    # a missing key: (index, None), still with an index
    idx, missing = c.kv.get(uniq("kv/missing"))
    as_index(idx)
    assert missing is None


def test_kv_recurse_and_keys_with_separator(c):
    p = uniq("kv/tree") + "/"
    values = {f"{p}a": b"1", f"{p}b/c": b"2", f"{p}b/d": b"3", f"{p}e": b"4"}
    for k, v in values.items():
        assert c.kv.put(k, v) is True

    idx, entries = c.kv.get(p, recurse=True)
    as_index(idx)
    assert [e["Key"] for e in entries] == sorted(values)
    assert {e["Key"]: e["Value"] for e in entries} == values

    _, keys = c.kv.get(p, keys=True)
    assert keys == sorted(values)

    _, keys = c.kv.get(p, keys=True, separator="/")
    assert keys == [f"{p}a", f"{p}b/", f"{p}e"]

    idx, none = c.kv.get(uniq("kv/empty") + "/", recurse=True)
    as_index(idx)
    assert none is None
    assert c.kv.get(uniq("kv/empty") + "/", keys=True)[1] is None


def test_kv_cas(c):
    k = uniq("kv/cas")
    # cas=0: create only if absent
    assert c.kv.put(k, "v1", cas=0) is True
    assert c.kv.put(k, "v2", cas=0) is False
    _, e = c.kv.get(k)
    assert e["Value"] == b"v1"
    m = e["ModifyIndex"]

    assert c.kv.put(k, "v3", cas=m + 1000) is False
    assert c.kv.get(k)[1]["Value"] == b"v1"
    assert c.kv.put(k, "v3", cas=m) is True
    _, e = c.kv.get(k)
    assert e["Value"] == b"v3"
    assert e["ModifyIndex"] > m
    # the old index is now stale
    assert c.kv.put(k, "v4", cas=m) is False

    # delete with cas
    assert c.kv.delete(k, cas=m) is False
    assert c.kv.get(k)[1] is not None
    assert c.kv.delete(k, cas=e["ModifyIndex"]) is True
    assert c.kv.get(k)[1] is None


def test_kv_delete_recurse(c):
    base = uniq("kv/del")
    p = base + "/"
    for k in (f"{p}a", f"{p}b/c", f"{p}b/d"):
        assert c.kv.put(k, "x") is True
    sibling = base + "-sibling"  # shares the string prefix without the slash
    assert c.kv.put(sibling, "keep") is True

    assert c.kv.delete(f"{p}a") is True
    assert c.kv.get(f"{p}a")[1] is None
    assert len(c.kv.get(p, recurse=True)[1]) == 2

    assert c.kv.delete(p, recurse=True) is True
    assert c.kv.get(p, recurse=True)[1] is None
    assert c.kv.get(sibling)[1]["Value"] == b"keep"

    # deleting what is not there still succeeds
    assert c.kv.delete(f"{p}a") is True


# --------------------------------------------------------------------------
# sessions and locks


def test_session_lifecycle(c, sessions, node_name):
    name = uniq("sess")
    sid = sessions(name=name, ttl=15, behavior="release")

    idx, info = c.session.info(sid)
    as_index(idx)
    assert info["ID"] == sid
    assert info["Name"] == name
    assert info["Node"] == node_name
    assert info["Behavior"] == "release"
    assert info["TTL"] == "15s"
    assert info["CreateIndex"] > 0

    _, all_sessions = c.session.list()
    assert sid in [s["ID"] for s in all_sessions]
    _, on_node = c.session.node(node_name)
    assert sid in [s["ID"] for s in on_node]

    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid
    assert renewed["TTL"] == "15s"

    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    assert sid not in [s["ID"] for s in c.session.list()[1]]
    with pytest.raises(NotFound):
        c.session.renew(sid)


def test_session_create_delete_behavior_reported(c, sessions):
    sid = sessions(behavior="delete", ttl=20)
    _, info = c.session.info(sid)
    assert info["Behavior"] == "delete"
    assert info["TTL"] == "20s"


def test_kv_lock_acquire_release(c, sessions):
    k = uniq("lock/key")
    s1 = sessions(name="holder-1", ttl=30)
    s2 = sessions(name="holder-2", ttl=30)

    assert c.kv.put(k, "owner1", acquire=s1) is True
    _, e = c.kv.get(k)
    assert e["Session"] == s1
    assert e["LockIndex"] == 1
    assert e["Value"] == b"owner1"

    # another session cannot take it
    assert c.kv.put(k, "owner2", acquire=s2) is False
    _, e = c.kv.get(k)
    assert e["Session"] == s1
    assert e["Value"] == b"owner1"

    # the holder may re-acquire (updates the value, LockIndex unchanged)
    assert c.kv.put(k, "owner1-again", acquire=s1) is True
    _, e = c.kv.get(k)
    assert e["Value"] == b"owner1-again"
    assert e["LockIndex"] == 1

    # only the holder can release
    assert c.kv.put(k, "nope", release=s2) is False
    assert c.kv.put(k, "released", release=s1) is True
    _, e = c.kv.get(k)
    assert not e.get("Session")
    assert e["Value"] == b"released"

    # now the second session gets it, and LockIndex counts acquisitions
    assert c.kv.put(k, "owner2", acquire=s2) is True
    _, e = c.kv.get(k)
    assert e["Session"] == s2
    assert e["LockIndex"] == 2


def test_acquire_with_unknown_session_fails(c):
    k = uniq("lock/nosession")
    bogus = str(uuid.uuid4())
    # Consul answers 500 "invalid session" for a session that does not exist.
    with pytest.raises(consul.ConsulException):
        c.kv.put(k, "x", acquire=bogus)
    assert c.kv.get(k)[1] is None


def test_session_destroy_behavior_delete_deletes_locked_key(c, sessions):
    k = uniq("lock/ephemeral")
    other = uniq("lock/unlocked")
    sid = sessions(behavior="delete", ttl=30)
    assert c.kv.put(k, "ephemeral", acquire=sid) is True
    assert c.kv.put(other, "plain") is True
    assert c.kv.get(k)[1]["Session"] == sid

    assert c.session.destroy(sid) is True
    assert c.kv.get(k)[1] is None
    assert c.kv.get(other)[1]["Value"] == b"plain"


def test_session_destroy_behavior_release_keeps_key_and_applies_lock_delay(c, sessions):
    k = uniq("lock/release")
    s1 = sessions(behavior="release", ttl=30)  # default lock-delay 15s
    s2 = sessions(ttl=30)
    assert c.kv.put(k, "held", acquire=s1) is True

    assert c.session.destroy(s1) is True
    _, e = c.kv.get(k)
    assert e is not None
    assert e["Value"] == b"held"
    assert not e.get("Session")

    # Consul enforces the session's lock-delay after a lock is released by
    # invalidating its session: re-acquiring within it fails.
    assert c.kv.put(k, "grab", acquire=s2) is False


def test_session_lock_delay_zero_allows_immediate_reacquire(c, sessions):
    k = uniq("lock/nodelay")
    s1 = sessions(ttl=30, lock_delay=0)
    s2 = sessions(ttl=30)
    assert c.kv.put(k, "held", acquire=s1) is True
    assert c.session.destroy(s1) is True
    assert c.kv.put(k, "grab", acquire=s2) is True
    assert c.kv.get(k)[1]["Session"] == s2


# --------------------------------------------------------------------------
# blocking queries


def test_blocking_kv_get_returns_on_write(c, new_client):
    k = uniq("block/key")
    assert c.kv.put(k, "v1") is True
    idx, e = c.kv.get(k)
    start_index = as_index(idx)

    errors: list[BaseException] = []

    def writer():
        try:
            time.sleep(0.5)
            assert new_client().kv.put(k, "v2") is True
        except BaseException as ex:  # reported by the main thread
            errors.append(ex)

    t = threading.Thread(target=writer, daemon=True)
    t0 = time.monotonic()
    t.start()
    idx2, e2 = c.kv.get(k, index=idx, wait="10s")
    elapsed = time.monotonic() - t0
    t.join(5)
    assert not errors, errors

    assert as_index(idx2) > start_index
    assert e2["Value"] == b"v2"
    assert e2["ModifyIndex"] > e["ModifyIndex"]
    assert 0.4 <= elapsed < 5.0, f"blocking get returned after {elapsed:.3f}s"


def test_blocking_kv_get_times_out_with_same_index(c):
    k = uniq("block/idle")
    assert c.kv.put(k, "still") is True
    idx, e = c.kv.get(k)

    t0 = time.monotonic()
    idx2, e2 = c.kv.get(k, index=idx, wait="2s")
    elapsed = time.monotonic() - t0

    assert idx2 == idx
    assert e2["Value"] == b"still"
    assert e2["ModifyIndex"] == e["ModifyIndex"]
    # Consul waits `wait` plus up to wait/16 of jitter.
    assert 1.9 <= elapsed <= 3.5, f"blocking get timed out after {elapsed:.3f}s"


def test_blocking_recurse_prefix_wakes_on_new_key(c, new_client):
    p = uniq("block/tree") + "/"
    assert c.kv.put(f"{p}a", "1") is True
    idx, entries = c.kv.get(p, recurse=True)
    assert len(entries) == 1

    def writer():
        time.sleep(0.3)
        new_client().kv.put(f"{p}b", "2")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t0 = time.monotonic()
    idx2, entries2 = c.kv.get(p, recurse=True, index=idx, wait="10s")
    elapsed = time.monotonic() - t0
    t.join(5)
    assert int(idx2) > int(idx)
    assert [x["Key"] for x in entries2] == [f"{p}a", f"{p}b"]
    assert elapsed < 5.0


def test_blocking_health_service_wakes_on_check_change(c, service, new_client):
    name = uniq("block-svc")
    sid = service(name, f"{name}-1", check=consul.Check.ttl("60s"))
    eventually(lambda: _assert_eq(len(c.health.service(name)[1]), 1))
    idx, healthy = c.health.service(name, passing=True)
    assert healthy == []

    def passer():
        time.sleep(0.3)
        new_client().agent.check.ttl_pass(f"service:{sid}")

    t = threading.Thread(target=passer, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    # Blocking queries may return early; loop on the index like a real client.
    while True:
        idx, healthy = c.health.service(name, passing=True, index=idx, wait="5s")
        if healthy or time.monotonic() > deadline:
            break
    t.join(5)
    assert [e["Service"]["ID"] for e in healthy] == [sid]


# --------------------------------------------------------------------------
# txn


def test_txn_set_and_failed_check_index_applies_nothing(c):
    p = uniq("txn") + "/"
    k1, k2, k3 = f"{p}one", f"{p}two", f"{p}three"

    res = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": k1, "Value": b64("one")}},
            {"KV": {"Verb": "set", "Key": k2, "Value": b64("two"), "Flags": 7}},
        ]
    )
    assert res["Errors"] is None
    assert [r["KV"]["Key"] for r in res["Results"]] == [k1, k2]
    _, e1 = c.kv.get(k1)
    assert e1["Value"] == b"one"
    _, e2 = c.kv.get(k2)
    assert e2["Value"] == b"two"
    assert e2["Flags"] == 7
    m = e1["ModifyIndex"]
    assert e2["ModifyIndex"] == m  # one transaction, one raft index

    # a failing check-index rolls back the whole transaction: HTTP 409
    with pytest.raises(ClientError) as ei:
        c.txn.put(
            [
                {"KV": {"Verb": "set", "Key": k3, "Value": b64("three")}},
                {"KV": {"Verb": "set", "Key": k1, "Value": b64("changed")}},
                {"KV": {"Verb": "check-index", "Key": k1, "Index": m + 1000}},
            ]
        )
    msg = str(ei.value)
    assert msg.startswith("409 "), msg
    body = json.loads(msg[4:])
    assert body["Results"] is None
    assert [err["OpIndex"] for err in body["Errors"]] == [2]
    assert c.kv.get(k3)[1] is None
    _, e1b = c.kv.get(k1)
    assert e1b["Value"] == b"one"
    assert e1b["ModifyIndex"] == m

    # with the right index it goes through; "get" returns the value in base64
    res = c.txn.put(
        [
            {"KV": {"Verb": "check-index", "Key": k1, "Index": m}},
            {"KV": {"Verb": "set", "Key": k1, "Value": b64("changed")}},
            {"KV": {"Verb": "get", "Key": k2}},
            {"KV": {"Verb": "delete", "Key": k2}},
        ]
    )
    assert res["Errors"] is None
    assert len(res["Results"]) == 3  # delete yields no result entry
    assert base64.b64decode(res["Results"][2]["KV"]["Value"]) == b"two"
    assert c.kv.get(k1)[1]["Value"] == b"changed"
    assert c.kv.get(k2)[1] is None
