//! Clusters of real processes on 127.0.0.2-.7: three servers that
//! bootstrap together, client agents, failure detection, and the fault
//! tests (kill -9 of the leader under load, a paused follower, restarts
//! with snapshot install, rolling restarts, servers added and removed),
//! with every KV history checked by a linearizability checker.

use std::time::{Duration, Instant};

use muster_tests::cluster::TestCluster;
use muster_tests::history::{longest_gap, Workload};
use muster_tests::wait_for;
use serde_json::Value;

/// Short failure detection and frequent snapshots, so that the tests see
/// both happen; Raft timings are the defaults.
const CONFIG: &str = r#"
node_timeout = "1s"
raft_snapshot_threshold = 64
log_level = "info"
"#;

fn json(a: &muster_tests::Agent, path: &str) -> Value {
    a.get(path).expect(200).json()
}

fn members(a: &muster_tests::Agent) -> Vec<(String, String, u64)> {
    json(a, "/v1/agent/members")
        .as_array()
        .expect("members array")
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap_or("").to_string(),
                m["Tags"]["role"].as_str().unwrap_or("").to_string(),
                m["Status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn status_of(a: &muster_tests::Agent, node: &str) -> Option<u64> {
    members(a).into_iter().find(|m| m.0 == node).map(|m| m.2)
}

fn passing(a: &muster_tests::Agent, service: &str) -> usize {
    json(a, &format!("/v1/health/service/{service}?passing"))
        .as_array()
        .map(|v| v.len())
        .unwrap_or(0)
}

fn servers_http(c: &TestCluster) -> Vec<String> {
    c.running_servers()
        .iter()
        .map(|&i| format!("http://{}", c.agent(i).http))
        .collect()
}

/// Checks a recorded history, with its counts in the failure message.
#[track_caller]
fn assert_linearizable(history: std::sync::Arc<muster_tests::history::History>, what: &str) {
    // The checker searches depth-first, one frame per operation.
    let v = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || history.check())
        .expect("checker thread")
        .join()
        .expect("checker");
    eprintln!(
        "{what}: {} operations ({} answered, {} indeterminate) on {} keys, checked in {:?}: {}",
        v.operations,
        v.answered,
        v.indeterminate,
        v.per_key.len(),
        v.took,
        if v.linearizable {
            "linearizable"
        } else {
            "NOT linearizable"
        }
    );
    assert!(
        v.answered > 100,
        "{what}: too few answered operations ({})",
        v.answered
    );
    assert!(v.linearizable, "{what}: {}", v.failure);
}

#[test]
fn servers_bootstrap_and_client_agents_sync_fail_and_leave() {
    let mut c = TestCluster::start(3, CONFIG);
    let leader = c.leader(Duration::from_secs(10));
    let l = c.agent(leader);
    assert_eq!(
        json(l, "/v1/status/peers").as_array().map(|a| a.len()),
        Some(3)
    );
    let conf = json(l, "/v1/operator/raft/configuration");
    let servers = conf["Servers"].as_array().expect("Servers");
    assert_eq!(servers.len(), 3, "{conf}");
    assert_eq!(
        servers.iter().filter(|s| s["Leader"] == true).count(),
        1,
        "{conf}"
    );
    assert!(servers.iter().all(|s| s["Voter"] == true), "{conf}");
    assert!(
        servers
            .iter()
            .all(|s| s["Node"].as_str().unwrap_or("").starts_with("server-")),
        "{conf}"
    );

    // A client agent joins; its service reaches every server at once.
    let ci = c.add_client();
    let client = c.agent(ci);
    client
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"web","ID":"web-1","Port":8080,"Check":{"TTL":"60s","Status":"passing"}}"#,
        )
        .expect(200);
    for s in c.running_servers() {
        let a = c.agent(s);
        let seen = wait_for(Duration::from_secs(3), || {
            let n = json(a, "/v1/health/service/web?passing&stale")
                .as_array()?
                .len();
            (n == 1).then_some(())
        });
        assert!(
            seen.is_some(),
            "server {} never saw web-1 as passing",
            a.node
        );
    }
    // The client's own view is local; cluster reads are forwarded.
    assert!(json(client, "/v1/agent/services")["web-1"].is_object());
    assert_eq!(passing(client, "web"), 1);
    let all = members(client);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all.iter().filter(|m| m.1 == "consul").count(), 3, "{all:?}");
    assert!(all.iter().all(|m| m.2 == 1), "{all:?}");
    // DNS on the client is answered by the servers.
    assert_eq!(
        client.dig_short("web.service.consul", "A", 2),
        [client.dns.ip().to_string()]
    );
    // A check's state change on the client is synced.
    client
        .put("/v1/agent/check/fail/service:web-1", "")
        .expect(200);
    let l = c.agent(leader);
    assert!(
        wait_for(Duration::from_secs(3), || (passing(l, "web") == 0)
            .then_some(()))
        .is_some(),
        "the failed check never reached the servers"
    );
    client
        .put("/v1/agent/check/pass/service:web-1", "")
        .expect(200);
    assert!(wait_for(Duration::from_secs(3), || (passing(l, "web") == 1)
        .then_some(()))
    .is_some());

    // A stale read on a follower is answered there, with LastContact.
    let follower = c.follower_of(leader);
    let r = ureq::get(&c.agent(follower).url("/v1/catalog/nodes?stale"))
        .call()
        .expect("stale read");
    let contact: u64 = r
        .header("X-Consul-LastContact")
        .and_then(|v| v.parse().ok())
        .expect("X-Consul-LastContact");
    assert!(contact < 2_000, "last contact {contact} ms");
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));

    // kill -9 of the client: failed within node_timeout, out of healthy
    // answers; back (services intact) when it restarts.
    let name = c.agent(ci).node.clone();
    let killed = Instant::now();
    c.kill9(ci);
    let l = c.agent(leader);
    wait_for(Duration::from_secs(5), || {
        (status_of(l, &name) == Some(4)).then_some(())
    })
    .expect("the killed client was never marked failed");
    let detected = killed.elapsed();
    assert_eq!(passing(l, "web"), 0);
    assert!(
        detected < Duration::from_secs(3),
        "failure detected after {detected:?}"
    );
    eprintln!("client failure detected after {detected:?}");
    c.restart(ci);
    let l = c.agent(leader);
    wait_for(Duration::from_secs(5), || {
        (status_of(l, &name) == Some(1)).then_some(())
    })
    .expect("the restarted client never came back alive");
    assert!(wait_for(Duration::from_secs(3), || (passing(l, "web") == 1)
        .then_some(()))
    .is_some());

    // Graceful leave: left, not failed; then force-leave removes it.
    let out = c.agent(ci).cli(&["leave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = c.agent(leader);
    wait_for(Duration::from_secs(5), || {
        (status_of(l, &name) == Some(3)).then_some(())
    })
    .expect("the client never showed as left");
    assert_eq!(passing(l, "web"), 0);
    l.put(&format!("/v1/agent/force-leave/{name}"), "")
        .expect(200);
    assert_eq!(status_of(l, &name), None);
    // An alive node cannot be force-left.
    let alive = c.agent(follower).node.clone();
    assert_eq!(
        l.put(&format!("/v1/agent/force-leave/{alive}"), "").status,
        400
    );

    // Snapshots: saved through a follower (the leader answers), restored
    // over later writes on every server, and into another cluster.
    let dir = muster_tests::TempDir::new("snapshot");
    let file = dir.0.join("catalog.snap");
    let file_arg = file.display().to_string();
    let f = c.agent(follower);
    f.put("/v1/kv/snap/before", "1").expect(200);
    let out = f.cli(&["snapshot", "save", &file_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.put("/v1/kv/snap/after", "2").expect(200);
    let out = l.cli(&["snapshot", "restore", &file_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in c.running_servers() {
        let a = c.agent(s);
        let restored = wait_for(Duration::from_secs(3), || {
            (a.get("/v1/kv/snap/after?stale").status == 404
                && a.get("/v1/kv/snap/before?stale").status == 200)
                .then_some(())
        });
        assert!(restored.is_some(), "server {} did not restore", a.node);
    }
    // The servers re-register themselves if the snapshot lacks them.
    let all = members(l);
    assert_eq!(
        all.iter().filter(|m| m.1 == "consul" && m.2 == 1).count(),
        3,
        "{all:?}"
    );
    let mut damaged = std::fs::read(&file).expect("snapshot file");
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let r = l.call("PUT", "/v1/snapshot", Some(&damaged));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("checksum"), "{}", r.text());
    let other = muster_tests::Agent::dev();
    let out = other.cli(&["snapshot", "restore", &file_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(other.get("/v1/kv/snap/before").status, 200);
    assert_eq!(other.get("/v1/kv/snap/after").status, 404);
    // The restored catalog lists the cluster's servers; the dev agent puts
    // itself back.
    let back = wait_for(Duration::from_secs(3), || {
        let nodes = json(&other, "/v1/catalog/nodes");
        let names: Vec<String> = nodes
            .as_array()?
            .iter()
            .filter_map(|n| n["Node"].as_str().map(str::to_string))
            .collect();
        (names.iter().any(|n| n == "server-1") && names.contains(&other.node)).then_some(())
    });
    assert!(back.is_some(), "{}", json(&other, "/v1/catalog/nodes"));
}

#[test]
fn leader_killed_under_load_loses_no_acknowledged_write_and_stays_linearizable() {
    let mut c = TestCluster::start(3, CONFIG);
    let load = Workload::start(servers_http(&c), "lin-kill", 6, 8);
    std::thread::sleep(Duration::from_secs(2));
    let leader = c.leader(Duration::from_secs(10));
    let killed_at = Instant::now();
    c.kill9(leader);
    let new = c.leader(Duration::from_secs(10));
    assert_ne!(new, leader);
    eprintln!("new leader agreed {:?} after kill -9", killed_at.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    // The old leader rejoins from its data dir and catches up.
    c.restart(leader);
    std::thread::sleep(Duration::from_secs(2));

    // A follower paused past the election timeout rejoins without
    // disturbing the leader.
    let leader_now = c.leader(Duration::from_secs(10));
    let follower = c.follower_of(leader_now);
    c.agent(follower).signal("STOP");
    std::thread::sleep(Duration::from_secs(2));
    c.agent(follower).signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.leader(Duration::from_secs(10)),
        leader_now,
        "the resumed follower disturbed the leader"
    );
    let (history, acked) = load.stop();

    let gap_after_kill = {
        let mut after: Vec<Instant> = acked.iter().copied().filter(|t| *t >= killed_at).collect();
        after.sort();
        after.first().map(|t| t.duration_since(killed_at))
    };
    eprintln!(
        "acknowledged writes: {}; first after the kill: {gap_after_kill:?}; longest gap: {:?}",
        acked.len(),
        longest_gap(&acked)
    );
    assert!(gap_after_kill.is_some_and(|g| g < Duration::from_secs(5)));
    assert_linearizable(history, "kill -9 leader + SIGSTOP follower");

    // Every server ends with the same data (the restarted one included).
    let l = c.agent(c.leader(Duration::from_secs(5)));
    let want = json(l, "/v1/kv/lin-kill?recurse&consistent");
    for s in c.running_servers() {
        let a = c.agent(s);
        let same = wait_for(Duration::from_secs(5), || {
            (json(a, "/v1/kv/lin-kill?recurse&stale") == want).then_some(())
        });
        assert!(same.is_some(), "server {} did not converge", a.node);
    }
}

#[test]
fn restarts_snapshot_install_rolling_restart_and_membership_changes_under_load() {
    let mut c = TestCluster::start(3, CONFIG);
    let load = Workload::start(servers_http(&c), "lin-roll", 6, 8);
    std::thread::sleep(Duration::from_secs(1));

    // A follower down while many entries commit: the log is compacted past
    // it, so it catches up by snapshot install.
    let leader = c.leader(Duration::from_secs(10));
    let follower = c.follower_of(leader);
    c.kill9(follower);
    let l = c.agent(leader);
    for i in 0..300 {
        l.put(&format!("/v1/kv/bulk/{i}"), "x").expect(200);
    }
    c.restart(follower);
    let f = c.agent(follower);
    let caught_up = wait_for(Duration::from_secs(10), || {
        let r = f.get("/v1/kv/bulk?recurse&stale");
        let n = (r.status == 200).then(|| r.json())?.as_array()?.len();
        (n == 300).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "the restarted follower did not catch up"
    );
    assert!(
        f.log_text()
            .contains("installed a snapshot from the leader"),
        "expected a snapshot install; log:\n{}",
        f.log_text()
    );

    // Rolling restart of every server, one by one (SIGTERM, start again).
    for s in c.running_servers() {
        c.agent(s).signal("TERM");
        std::thread::sleep(Duration::from_millis(300));
        c.restart(s);
        c.leader(Duration::from_secs(10));
    }

    // A fourth and fifth server join and become voters.
    let fourth = c.add_server();
    let fifth = c.add_server();
    let l = c.agent(c.leader(Duration::from_secs(10)));
    let voters = wait_for(Duration::from_secs(10), || {
        let peers = json(l, "/v1/status/peers").as_array()?.len();
        (peers == 5).then_some(peers)
    });
    assert_eq!(
        voters,
        Some(5),
        "{}",
        json(l, "/v1/operator/raft/configuration")
    );
    assert!(c.agent(fourth).get("/v1/kv/bulk/1?stale").status == 200);
    let _ = fifth;

    // One dies for good and is removed with the operator command.
    c.kill9(fourth);
    let leader = c.leader(Duration::from_secs(10));
    let addr = c.members[fourth].opts.ip.clone().unwrap_or_default();
    let port = c.members[fourth].opts.server_port.unwrap_or(0);
    let out = c.agent(leader).cli(&[
        "operator",
        "raft",
        "remove-peer",
        "-address",
        &format!("{addr}:{port}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = c.agent(leader).cli(&["operator", "raft", "list-peers"]);
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!text.contains(&format!("{addr}:{port}")), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("voter")).count(),
        4,
        "{text}"
    );

    let (history, acked) = load.stop();
    let gap = longest_gap(&acked);
    eprintln!(
        "acknowledged writes: {}; longest write gap: {gap:?}",
        acked.len()
    );
    assert!(gap < Duration::from_secs(5), "writes stalled for {gap:?}");
    assert_linearizable(history, "restarts, rolling restart, membership changes");
}
