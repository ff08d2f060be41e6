//! Exporters against real backends: a real etcd 3.4 and a real ZooKeeper
//! 3.8 mirror the catalog of a real muster node, through hot swaps under
//! writes, broken replacements, backend outages and a leader's death.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use muster_tests::backends::{Etcd, ZooKeeper};
use muster_tests::cluster::TestCluster;
use muster_tests::{wait_for, wasm_plugin, Agent, AgentOptions, TempDir};
use serde_json::{json, Value};

/// What consumers should find: (service name, ID) -> (address, port),
/// for every instance with no critical check (`only_passing`).
type Expected = BTreeMap<(String, String), (String, u16)>;

/// The catalog's exportable instances, read through the health API.
fn expected(agent: &Agent) -> Expected {
    let services = agent.get("/v1/catalog/services").expect(200).json();
    let mut out = Expected::new();
    for name in services.as_object().into_iter().flatten().map(|(k, _)| k) {
        let entries = agent
            .get(&format!("/v1/health/service/{name}"))
            .expect(200)
            .json();
        for e in entries.as_array().into_iter().flatten() {
            let critical = e["Checks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["Status"] == "critical");
            if critical {
                continue;
            }
            let svc = &e["Service"];
            let address = match svc["Address"].as_str() {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => e["Node"]["Address"].as_str().unwrap_or("").to_string(),
            };
            out.insert(
                (name.clone(), svc["ID"].as_str().unwrap_or("").to_string()),
                (address, svc["Port"].as_u64().unwrap_or(0) as u16),
            );
        }
    }
    out
}

/// Registrator's etcd layout: `<prefix>/<name>/<id>` = `ip:port`.
fn etcd_view(etcd: &Etcd, prefix: &str) -> Option<Expected> {
    let kvs = etcd.get_prefix(&format!("{prefix}/")).ok()?;
    let mut out = Expected::new();
    for (key, value) in kvs {
        let rest = key.strip_prefix(&format!("{prefix}/"))?;
        let (name, id) = rest.split_once('/')?;
        let (ip, port) = value.rsplit_once(':')?;
        out.insert((name.into(), id.into()), (ip.into(), port.parse().ok()?));
    }
    Some(out)
}

/// Registrator's ZooKeeper layout: `<path>/<name>/<ip>:<port>` holding
/// JSON; compared by (name, ip:port), since the layout has no ID.
fn zk_view(zk: &ZooKeeper, path: &str) -> Option<BTreeMap<(String, String), Value>> {
    let tree = zk.tree(path).ok()?;
    let mut out = BTreeMap::new();
    for (node, data) in &tree {
        let Some(rest) = node.strip_prefix(&format!("{path}/")) else {
            continue;
        };
        if let Some((name, child)) = rest.split_once('/') {
            out.insert(
                (name.to_string(), child.to_string()),
                serde_json::from_str(data).ok()?,
            );
        } else if !tree.keys().any(|k| k.starts_with(&format!("{node}/"))) {
            // An empty service znode: the exporter should have removed it.
            out.insert((rest.to_string(), String::new()), Value::Null);
        }
    }
    Some(out)
}

fn zk_expected(e: &Expected) -> BTreeMap<(String, String), (String, u16)> {
    e.iter()
        .map(|((name, _), (ip, port))| {
            ((name.clone(), format!("{ip}:{port}")), (ip.clone(), *port))
        })
        .collect()
}

/// Waits until etcd under `prefix` equals the catalog's view.
#[track_caller]
fn etcd_converges(agent: &Agent, etcd: &Etcd, prefix: &str, within: Duration) {
    let mut last = (Expected::new(), None);
    let ok = wait_for(within, || {
        let want = expected(agent);
        let got = etcd_view(etcd, prefix);
        let same = got.as_ref() == Some(&want);
        last = (want, got);
        same.then_some(())
    });
    assert!(
        ok.is_some(),
        "etcd under {prefix} never matched the catalog.\n catalog: {:?}\n etcd: {:?}\n exporters: {}",
        last.0,
        last.1,
        agent.get("/v1/muster/exporters").text()
    );
}

/// Waits until ZooKeeper under `path` equals the catalog's view.
#[track_caller]
fn zk_converges(agent: &Agent, zk: &ZooKeeper, path: &str, within: Duration) {
    let mut last = (BTreeMap::new(), None);
    let ok = wait_for(within, || {
        let want = zk_expected(&expected(agent));
        let got = zk_view(zk, path).map(|v| {
            v.into_iter()
                .map(|(k, j)| {
                    let ip = j["IP"].as_str().unwrap_or("").to_string();
                    let port = j["PublicPort"].as_u64().unwrap_or(0) as u16;
                    (k, (ip, port))
                })
                .collect::<BTreeMap<_, _>>()
        });
        let same = got.as_ref() == Some(&want);
        last = (want, got);
        same.then_some(())
    });
    assert!(
        ok.is_some(),
        "ZooKeeper under {path} never matched the catalog.\n catalog: {:?}\n zookeeper: {:?}\n exporters: {}",
        last.0,
        last.1,
        agent.get("/v1/muster/exporters").text()
    );
}

/// Registers `id` of `name` on an external node, with one check.
fn register(agent: &Agent, node: &str, name: &str, id: &str, port: u16, status: &str) {
    let body = json!({
        "Node": node,
        "Address": format!("10.1.0.{}", port % 200 + 1),
        "Service": {"ID": id, "Service": name, "Port": port, "Tags": ["t1"], "Meta": {"v": "1"}},
        "Check": {"CheckID": format!("{id}-check"), "Name": "probe", "ServiceID": id, "Status": status},
    });
    agent
        .put("/v1/catalog/register", &body.to_string())
        .expect(200);
}

fn deregister(agent: &Agent, node: &str, id: &str) {
    let body = json!({"Node": node, "ServiceID": id});
    agent
        .put("/v1/catalog/deregister", &body.to_string())
        .expect(200);
}

fn exporter_status(agent: &Agent, name: &str) -> Value {
    agent
        .get("/v1/muster/exporters")
        .expect(200)
        .json()
        .as_array()
        .and_then(|a| a.iter().find(|e| e["Name"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("muster.toml");
    std::fs::write(&path, text).expect("writing the config");
    path
}

fn agent_with(dir: &TempDir, config: &str) -> Agent {
    let path = config_file(&dir.0, config);
    let opts = AgentOptions {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..AgentOptions::persistent(&dir.0.join("data"))
    };
    Agent::start(opts)
}

fn etcd_block(name: &str, etcd: &Etcd, plugin: &str, extra: &str) -> String {
    format!(
        "[[exporter]]\nname = \"{name}\"\nplugin = \"{plugin}\"\ngrant = {{ connect = [\"127.0.0.1:{port}\"] }}\nconfig = {{ endpoints = [\"{ep}\"]{extra} }}\n",
        port = etcd.client_port,
        ep = etcd.endpoint(),
    )
}

fn zk_block(name: &str, zk: &ZooKeeper, plugin: &str, extra: &str) -> String {
    format!(
        "[[exporter]]\nname = \"{name}\"\nplugin = \"{plugin}\"\ngrant = {{ connect = [\"127.0.0.1:{port}\"] }}\nconfig = {{ servers = [\"{addr}\"]{extra} }}\n",
        port = zk.port,
        addr = zk.address(),
    )
}

/// `bytes` with a custom section appended: the same component, another
/// content hash, so a swap to it is a real new version.
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"muster-test-version";
    let payload = n.to_le_bytes();
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Writes a file the way deployments should: to a temporary name, then
/// renamed over the old one.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("writing the new component");
    std::fs::rename(&tmp, path).expect("renaming it into place");
}

#[test]
fn etcd_and_zookeeper_mirror_the_catalog_exactly() {
    let etcd = Etcd::start("mirror");
    let zk = ZooKeeper::start("mirror");
    // A key the catalog does not have: the first resync deletes it.
    etcd.put("/services/ghost/ghost-1", "10.9.9.9:1");
    let dir = TempDir::new("exp-mirror");
    let config = format!(
        "{}{}{}",
        etcd_block("etcd", &etcd, "builtin:etcd-exporter", ""),
        etcd_block(
            "etcd-json",
            &etcd,
            "builtin:etcd-exporter",
            ", prefix = \"/json\", value = \"json\", only_passing = false"
        ),
        zk_block("zk", &zk, "builtin:zookeeper-exporter", ""),
    );
    let agent = agent_with(&dir, &config);
    for i in 0..40u16 {
        let status = if i % 5 == 0 { "critical" } else { "passing" };
        register(
            &agent,
            &format!("ext-{}", i % 4),
            &format!("svc-{}", i % 7),
            &format!("s{i}"),
            8000 + i,
            status,
        );
    }
    etcd_converges(&agent, &etcd, "/services", Duration::from_secs(20));
    zk_converges(&agent, &zk, "/services", Duration::from_secs(20));
    // Deregister some, flip others both ways, move one to a new port.
    for i in 0..40u16 {
        let node = format!("ext-{}", i % 4);
        let name = format!("svc-{}", i % 7);
        match i % 4 {
            0 => deregister(&agent, &node, &format!("s{i}")),
            1 => register(&agent, &node, &name, &format!("s{i}"), 8000 + i, "critical"),
            2 => register(&agent, &node, &name, &format!("s{i}"), 9000 + i, "passing"),
            _ => {}
        }
    }
    // A whole node goes away with its instances.
    agent
        .put(
            "/v1/catalog/deregister",
            &json!({"Node": "ext-3"}).to_string(),
        )
        .expect(200);
    etcd_converges(&agent, &etcd, "/services", Duration::from_secs(20));
    zk_converges(&agent, &zk, "/services", Duration::from_secs(20));
    // The JSON layout exports critical instances too (only_passing off),
    // with tags, meta and status.
    let all = etcd.get_prefix("/json/").expect("etcd json keys");
    let catalog_total: usize = agent
        .get("/v1/catalog/services")
        .expect(200)
        .json()
        .as_object()
        .map(|m| {
            m.keys()
                .map(|n| {
                    agent
                        .get(&format!("/v1/catalog/service/{n}"))
                        .expect(200)
                        .json()
                        .as_array()
                        .map_or(0, Vec::len)
                })
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(all.len(), catalog_total, "json layout: {all:?}");
    let v: Value =
        serde_json::from_str(all.get("/json/svc-1/s1").expect("s1 exported")).expect("json value");
    assert_eq!(v["Status"], "critical", "{v}");
    assert_eq!(v["Tags"], json!(["t1"]), "{v}");
    assert_eq!(v["Meta"]["v"], "1", "{v}");
    // Every key is under a lease, so a dead node's entries expire.
    let leased = etcd.get_prefix_with_lease("/services/").expect("etcd keys");
    assert!(leased.values().all(|(_, lease)| lease != "0"), "{leased:?}");
    // The plugin list shows each exporter's live version.
    let plugins = agent.get("/v1/muster/plugins").expect(200).json();
    let etcd_plugin = plugins
        .as_array()
        .and_then(|a| a.iter().find(|p| p["Name"] == "etcd"))
        .expect("etcd in the plugin list");
    assert_eq!(
        etcd_plugin["Exporter"]["LiveHash"], etcd_plugin["Hash"],
        "{etcd_plugin}"
    );
    assert_eq!(
        etcd_plugin["Exporter"]["Phase"], "exporting",
        "{etcd_plugin}"
    );
}

/// Keeps changing the catalog until stopped: registrations, health
/// flips and deregistrations over 60 IDs. Returns the count of writes.
fn writer(
    agent_http: String,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let i = n % 60;
            let id = format!("w{i}");
            let body = if n % 7 == 3 {
                client
                    .put(&format!("http://{agent_http}/v1/catalog/deregister"))
                    .send_string(&json!({"Node": "writer", "ServiceID": id}).to_string())
            } else {
                let status = if n.is_multiple_of(5) {
                    "critical"
                } else {
                    "passing"
                };
                client
                    .put(&format!("http://{agent_http}/v1/catalog/register"))
                    .send_string(
                        &json!({
                            "Node": "writer", "Address": "10.2.0.1",
                            "Service": {"ID": id, "Service": format!("churn-{}", i % 6), "Port": 7000 + (n % 900)},
                            "Check": {"CheckID": format!("{id}-c"), "ServiceID": id, "Status": status},
                        })
                        .to_string(),
                    )
            };
            if body.is_ok() {
                writes.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Every live swap in the history hands the new version the change right
/// after its resync: the stream has no gap.
#[track_caller]
fn swaps_have_no_gap(status: &Value, expected_live: usize) {
    let swaps = status["Swaps"].as_array().expect("swap history");
    let live: Vec<&Value> = swaps.iter().filter(|s| s["Outcome"] == "live").collect();
    assert_eq!(live.len(), expected_live, "{status}");
    for s in live {
        let resync = s["ResyncSeq"].as_u64().unwrap_or(0);
        let caught_up = s["CaughtUpSeq"].as_u64().unwrap_or(0);
        assert!(caught_up >= resync, "{s}");
        if let Some(first) = s["FirstStreamedSeq"].as_u64() {
            assert_eq!(first, caught_up + 1, "a change was skipped at a swap: {s}");
        }
        assert_ne!(s["FromHash"], s["ToHash"], "{s}");
    }
    assert_eq!(status["AppliedSeq"], status["FeedSeq"], "{status}");
}

#[test]
fn twenty_swaps_of_each_exporter_under_writes_lose_nothing() {
    let etcd = Etcd::start("swap");
    let zk = ZooKeeper::start("swap");
    let dir = TempDir::new("exp-swap");
    let etcd_wasm = std::fs::read(wasm_plugin("etcd-exporter")).expect("etcd-exporter component");
    let zk_wasm =
        std::fs::read(wasm_plugin("zookeeper-exporter")).expect("zookeeper-exporter component");
    let etcd_path = dir.0.join("etcd-exporter.wasm");
    let zk_path = dir.0.join("zookeeper-exporter.wasm");
    std::fs::write(&etcd_path, variant(&etcd_wasm, 0)).unwrap();
    std::fs::write(&zk_path, variant(&zk_wasm, 0)).unwrap();
    let config = format!(
        "{}{}",
        etcd_block("etcd", &etcd, &etcd_path.display().to_string(), ""),
        zk_block("zk", &zk, &zk_path.display().to_string(), ""),
    );
    let agent = agent_with(&dir, &config);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let w = writer(agent.http.to_string(), stop.clone(), writes.clone());
    for round in 1..=20u32 {
        std::thread::sleep(Duration::from_millis(150));
        // Three ways in turn: the file changes (the watcher swaps), `muster
        // plugin reload`, and `PUT /v1/agent/reload`.
        std::fs::write(etcd_path.with_extension("next"), variant(&etcd_wasm, round)).unwrap();
        std::fs::write(zk_path.with_extension("next"), variant(&zk_wasm, round)).unwrap();
        for (name, path) in [("etcd", &etcd_path), ("zk", &zk_path)] {
            let before = exporter_status(&agent, name)["Swaps"]
                .as_array()
                .map_or(0, Vec::len);
            match round % 3 {
                0 => {
                    std::fs::rename(path.with_extension("next"), path).unwrap();
                    let swapped = wait_for(Duration::from_secs(20), || {
                        let s = exporter_status(&agent, name);
                        (s["Swaps"].as_array().map_or(0, Vec::len) > before).then_some(s)
                    });
                    assert!(
                        swapped.is_some(),
                        "{name}: the file watcher never swapped (round {round})"
                    );
                }
                1 => {
                    std::fs::rename(path.with_extension("next"), path).unwrap();
                    let out = agent.cli(&["plugin", "reload", name]);
                    assert!(
                        out.status.success(),
                        "muster plugin reload {name}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                _ => {
                    std::fs::rename(path.with_extension("next"), path).unwrap();
                    let r = agent.put("/v1/agent/reload", "").expect(200).json();
                    let outcome = r["Exporters"]
                        .as_array()
                        .and_then(|a| a.iter().find(|e| e["Name"] == name).cloned())
                        .unwrap_or(Value::Null);
                    // The file watcher may have swapped first; either way
                    // the new version is live and nothing was rejected.
                    assert!(
                        outcome["Action"] == "swapped" || outcome["Action"] == "unchanged",
                        "{name}: {outcome}"
                    );
                }
            }
            let live = wait_for(Duration::from_secs(20), || {
                let s = exporter_status(&agent, name);
                (s["Swaps"].as_array().map_or(0, Vec::len) > before).then_some(s)
            })
            .unwrap_or_else(|| panic!("{name}: round {round} left no swap record"));
            let last = live["Swaps"]
                .as_array()
                .and_then(|a| a.last())
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(last["Outcome"], "live", "{name} round {round}: {last}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    assert!(
        writes.load(Ordering::Relaxed) > 300,
        "the writer barely wrote"
    );
    etcd_converges(&agent, &etcd, "/services", Duration::from_secs(20));
    zk_converges(&agent, &zk, "/services", Duration::from_secs(20));
    let settled = wait_for(Duration::from_secs(10), || {
        let (e, z) = (
            exporter_status(&agent, "etcd"),
            exporter_status(&agent, "zk"),
        );
        (e["AppliedSeq"] == e["FeedSeq"] && z["AppliedSeq"] == z["FeedSeq"]).then_some((e, z))
    })
    .expect("exporters caught up with the feed");
    swaps_have_no_gap(&settled.0, 20);
    swaps_have_no_gap(&settled.1, 20);
    for s in [&settled.0, &settled.1] {
        for swap in s["Swaps"].as_array().into_iter().flatten() {
            let pause = swap["PauseMs"].as_f64().unwrap_or(0.0);
            assert!(
                pause < 2_000.0,
                "a swap paused the stream for {pause} ms: {swap}"
            );
        }
    }
}

#[test]
fn broken_replacements_are_rejected_and_the_old_version_keeps_exporting() {
    let etcd = Etcd::start("broken");
    let dir = TempDir::new("exp-broken");
    let etcd_wasm = std::fs::read(wasm_plugin("etcd-exporter")).expect("etcd-exporter component");
    let fault = std::fs::read(wasm_plugin("fault-exporter")).expect("fault-exporter component");
    let path = dir.0.join("etcd-exporter.wasm");
    std::fs::write(&path, &etcd_wasm).unwrap();
    let good = etcd_block("etcd", &etcd, &path.display().to_string(), "");
    let agent = agent_with(&dir, &good);
    let hash = || exporter_status(&agent, "etcd")["LiveHash"].clone();
    let live = wait_for(Duration::from_secs(20), || {
        Some(hash()).filter(|h| h.is_string())
    })
    .expect("the exporter went live");
    let mut n = 0u16;
    let mut still_exports = |agent: &Agent| {
        n += 1;
        register(
            agent,
            "ext-a",
            "after-broken",
            &format!("b{n}"),
            6000 + n,
            "passing",
        );
        etcd_converges(agent, &etcd, "/services", Duration::from_secs(15));
    };

    // Not a component at all.
    replace_file(&path, b"this is not wasm");
    let out = agent.cli(&["plugin", "reload", "etcd"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a WebAssembly component"), "{err}");
    assert_eq!(hash(), live);
    still_exports(&agent);

    // The good version again: the same content as the running one, so
    // nothing swaps.
    replace_file(&path, &etcd_wasm);
    let out = agent.cli(&["plugin", "reload", "etcd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hash(), live);

    // A component that traps in `open`, and one that refuses to open
    // (another file, so that only the config reload asks for it).
    let fault_path = dir.0.join("fault-exporter.wasm");
    std::fs::write(&fault_path, &fault).unwrap();
    let config_fault = |mode: &str| {
        format!(
            "[[exporter]]\nname = \"etcd\"\nplugin = \"{}\"\ngrant = {{ connect = [\"127.0.0.1:{}\"] }}\nconfig = {{ mode = \"{mode}\" }}\n",
            fault_path.display(),
            etcd.client_port
        )
    };
    std::fs::write(dir.0.join("muster.toml"), config_fault("trap-open")).unwrap();
    let r = agent.put("/v1/agent/reload", "").expect(200).json();
    let outcome = &r["Exporters"][0];
    assert_eq!(outcome["Action"], "rejected", "{r}");
    assert!(
        outcome["Error"].as_str().unwrap_or("").contains("trapped"),
        "{r}"
    );
    assert_eq!(hash(), live);
    still_exports(&agent);
    std::fs::write(dir.0.join("muster.toml"), config_fault("refuse-open")).unwrap();
    let r = agent.put("/v1/agent/reload", "").expect(200).json();
    assert!(
        r["Exporters"][0]["Error"]
            .as_str()
            .unwrap_or("")
            .contains("refusing to start"),
        "{r}"
    );
    assert_eq!(hash(), live);

    // The real exporter again, but without the grant it needs.
    let no_grant = format!(
        "[[exporter]]\nname = \"etcd\"\nplugin = \"{}\"\nconfig = {{ endpoints = [\"{}\"] }}\n",
        path.display(),
        etcd.endpoint()
    );
    std::fs::write(dir.0.join("muster.toml"), no_grant).unwrap();
    let r = agent.put("/v1/agent/reload", "").expect(200).json();
    let err = r["Exporters"][0]["Error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("grant.connect"), "{r}");
    assert_eq!(hash(), live);
    still_exports(&agent);

    // Every rejection is in the swap history, and the good config loads.
    let swaps = exporter_status(&agent, "etcd")["Swaps"].clone();
    let rejected = swaps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Outcome"].as_str().unwrap_or("").starts_with("rejected"))
        .count();
    assert!(rejected >= 4, "{swaps}");
    std::fs::write(dir.0.join("muster.toml"), good).unwrap();
    let r = agent.put("/v1/agent/reload", "").expect(200).json();
    assert!(r["Exporters"][0]["Error"].is_null(), "{r}");
    still_exports(&agent);
}

#[test]
fn backends_stopped_under_writes_converge_when_they_return() {
    let mut etcd = Etcd::start("outage");
    let mut zk = ZooKeeper::start("outage");
    let dir = TempDir::new("exp-outage");
    let config = format!(
        "{}{}",
        etcd_block(
            "etcd",
            &etcd,
            "builtin:etcd-exporter",
            ", lease_ttl = \"5s\""
        ),
        zk_block(
            "zk",
            &zk,
            "builtin:zookeeper-exporter",
            ", session_timeout = \"4s\""
        ),
    );
    let agent = agent_with(&dir, &config);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let w = writer(agent.http.to_string(), stop.clone(), writes.clone());
    std::thread::sleep(Duration::from_secs(2));
    etcd.stop();
    zk.stop();
    // The catalog does not wait for the exporters.
    let before = writes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        writes.load(Ordering::Relaxed) > before + 200,
        "catalog writes stalled while the backends were down"
    );
    // Between attempts it is retrying; during one, opening.
    let failing = exporter_status(&agent, "etcd");
    assert!(
        failing["Phase"] == "retrying" || failing["Phase"] == "opening",
        "{failing}"
    );
    assert!(failing["LastError"].is_string(), "{failing}");
    etcd.restart();
    zk.restart();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    etcd_converges(&agent, &etcd, "/services", Duration::from_secs(30));
    zk_converges(&agent, &zk, "/services", Duration::from_secs(30));
    // Past the lease TTL and the session timeout nothing disappears: the
    // exporter re-created what the outage expired.
    std::thread::sleep(Duration::from_secs(6));
    etcd_converges(&agent, &etcd, "/services", Duration::from_secs(5));
    zk_converges(&agent, &zk, "/services", Duration::from_secs(5));
}

#[test]
fn a_new_leader_takes_over_the_export() {
    let etcd = Etcd::start("leader");
    let zk = ZooKeeper::start("leader");
    let config = format!(
        "node_timeout = \"2s\"\n{}{}",
        etcd_block(
            "etcd",
            &etcd,
            "builtin:etcd-exporter",
            ", lease_ttl = \"3s\""
        ),
        zk_block(
            "zk",
            &zk,
            "builtin:zookeeper-exporter",
            ", session_timeout = \"3s\""
        ),
    );
    let mut c = TestCluster::start(3, &config);
    let leader = c.leader(Duration::from_secs(20));
    let follower = c.follower_of(leader);
    for i in 0..30u16 {
        register(
            c.agent(follower),
            "ext-x",
            &format!("lead-{}", i % 3),
            &format!("l{i}"),
            5000 + i,
            "passing",
        );
    }
    etcd_converges(
        c.agent(follower),
        &etcd,
        "/services",
        Duration::from_secs(20),
    );
    zk_converges(c.agent(follower), &zk, "/services", Duration::from_secs(20));
    // Only the leader exports.
    for i in c.running_servers() {
        let phase = exporter_status(c.agent(i), "etcd")["Phase"].clone();
        let want = if i == leader { "exporting" } else { "standby" };
        assert_eq!(phase, want, "server {i}");
    }
    c.kill9(leader);
    let new_leader = c.leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    let survivor = c.follower_of(new_leader);
    for i in 30..40u16 {
        register(
            c.agent(survivor),
            "ext-x",
            "lead-new",
            &format!("l{i}"),
            5000 + i,
            "passing",
        );
    }
    // The dead leader's node is failed: its own instances leave, as its
    // health says; the external ones stay.
    etcd_converges(
        c.agent(survivor),
        &etcd,
        "/services",
        Duration::from_secs(30),
    );
    zk_converges(c.agent(survivor), &zk, "/services", Duration::from_secs(30));
    assert_eq!(
        exporter_status(c.agent(new_leader), "etcd")["Phase"],
        "exporting"
    );
    // The old leader's lease and session run out: nothing that still
    // exists goes with them.
    std::thread::sleep(Duration::from_secs(8));
    etcd_converges(
        c.agent(survivor),
        &etcd,
        "/services",
        Duration::from_secs(5),
    );
    zk_converges(c.agent(survivor), &zk, "/services", Duration::from_secs(5));
}
