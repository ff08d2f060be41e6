//! Crash safety of a persistent single server: kill -9 under load loses no
//! acknowledged write, restarts are quick, and a damaged data dir stops the
//! node with an error that names the file instead of starting empty.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_tests::{kv_value, muster_bin, Agent, AgentOptions, TempDir};

#[test]
fn kill_9_under_load_loses_no_acknowledged_write() {
    let dir = TempDir::new("crash");
    let opts = AgentOptions::persistent(&dir.0);
    let mut agent = Agent::start(opts.clone());

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (acked, stop, http) = (acked.clone(), stop.clone(), agent.http.clone());
            std::thread::spawn(move || {
                let client = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(2))
                    .build();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("crash/{t}/{n}");
                    let value = format!("value-{t}-{n}");
                    let ok = client
                        .put(&format!("http://{http}/v1/kv/{key}"))
                        .send_string(&value)
                        .ok()
                        .and_then(|r| r.into_string().ok())
                        .is_some_and(|b| b.trim() == "true");
                    if !ok {
                        break; // the server is gone
                    }
                    acked.lock().unwrap().insert(key, value);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    agent.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "too few writes before the crash: {}",
        acked.len()
    );

    let restarted = Agent::spawn(&opts);
    let took = restarted.wait_ready(Duration::from_secs(10));
    println!(
        "acknowledged writes: {}, restart to serving: {took:?}",
        acked.len()
    );
    assert!(took < Duration::from_secs(5), "restart took {took:?}");

    let entries = restarted.get("/v1/kv/crash/?recurse").expect(200).json();
    let stored: BTreeMap<String, Vec<u8>> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["Key"].as_str().unwrap().to_string(), kv_value(e)))
        .collect();
    for (key, value) in &acked {
        assert_eq!(
            stored
                .get(key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .as_deref(),
            Some(value.as_str()),
            "acknowledged write {key} lost after kill -9"
        );
    }
    // The node keeps working after the restart.
    restarted.put("/v1/kv/after-restart", "ok").expect(200);
    assert_eq!(
        kv_value(&restarted.get("/v1/kv/after-restart").json()[0]),
        b"ok"
    );
}

#[test]
fn catalog_and_sessions_survive_a_clean_restart() {
    let dir = TempDir::new("restart");
    let opts = AgentOptions::persistent(&dir.0);
    let first = Agent::start(opts.clone());
    first
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"web","Port":80,"Check":{"TTL":"60s","Status":"passing"}}"#,
        )
        .expect(200);
    first.put("/v1/kv/persist/me", "yes").expect(200);
    drop(first);

    let second = Agent::start(opts);
    assert_eq!(second.get("/v1/agent/services").json()["web"]["Port"], 80);
    assert_eq!(
        second.get("/v1/agent/checks").json()["service:web"]["Status"],
        "passing"
    );
    assert_eq!(kv_value(&second.get("/v1/kv/persist/me").json()[0]), b"yes");
    // The TTL check was re-armed: a report is accepted after the restart.
    second
        .put("/v1/agent/check/pass/service:web", "")
        .expect(200);
}

/// Starts an agent on `dir` expecting it to refuse; returns its stderr.
fn start_expecting_failure(dir: &std::path::Path) -> String {
    let mut child = Command::new(muster_bin())
        .args([
            "agent",
            "--server",
            "--bootstrap-expect",
            "1",
            "--node",
            "n1",
            "--data-dir",
        ])
        .arg(dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", muster_tests::free_port()),
        ])
        .args([
            "--server-addr",
            &format!("127.0.0.1:{}", muster_tests::free_port()),
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the agent started on a damaged data dir");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the agent kept running on a damaged data dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn seeded_data_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let agent = Agent::persistent(&dir.0);
    for i in 0..50 {
        agent
            .put(&format!("/v1/kv/seed/{i}"), &"v".repeat(2000))
            .expect(200);
    }
    drop(agent);
    dir
}

#[test]
fn corrupt_data_file_is_a_clear_error_naming_the_file() {
    let dir = seeded_data_dir("corrupt");
    let path = dir.0.join("raft.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    // Scribble over the header and the first pages.
    let end = bytes.len().min(16 * 1024);
    for b in &mut bytes[0..end] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = start_expecting_failure(&dir.0);
    assert!(
        err.contains("raft.redb"),
        "error does not name the file: {err}"
    );
}

#[test]
fn truncated_data_file_is_a_clear_error_naming_the_file() {
    let dir = seeded_data_dir("truncated");
    let path = dir.0.join("raft.redb");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let err = start_expecting_failure(&dir.0);
    assert!(
        err.contains("raft.redb"),
        "error does not name the file: {err}"
    );
}

#[test]
fn missing_store_next_to_a_node_id_is_refused() {
    let dir = seeded_data_dir("missing");
    std::fs::remove_file(dir.0.join("raft.redb")).unwrap();
    let err = start_expecting_failure(&dir.0);
    assert!(err.contains("raft.redb"), "{err}");
    assert!(err.contains("empty catalog"), "{err}");
}

#[test]
fn snapshots_purge_the_log_and_restore_on_restart() {
    let dir = TempDir::new("snap");
    let cfg = dir.0.join("snap.toml");
    std::fs::write(&cfg, "raft_snapshot_threshold = 50\n").unwrap();
    let data = dir.0.join("data");
    let mut opts = AgentOptions::persistent(&data);
    opts.extra_args = vec!["--config".into(), cfg.display().to_string()];
    let first = Agent::start(opts.clone());
    // Sequential writes: one log entry each.
    for i in 0..300 {
        first
            .put(&format!("/v1/kv/snap/{i:03}"), &format!("v{i}"))
            .expect(200);
    }
    first.put("/v1/kv/snap/000", "rewritten").expect(200);
    let log = first.log_text();
    assert!(
        log.contains("snapshot built"),
        "no snapshot after 300 entries:\n{log}"
    );
    drop(first);

    let second = Agent::start(opts);
    let log = second.log_text();
    assert!(
        log.contains("snapshot restored"),
        "restart did not load the snapshot:\n{log}"
    );
    // The log on disk holds only the tail behind the last snapshot.
    let loaded: usize = log
        .lines()
        .find(|l| l.contains("raft log loaded"))
        .and_then(|l| l.split("entries=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the restart logs how many log entries it loaded");
    assert!(loaded < 150, "log was not purged: {loaded} entries loaded");
    let entries = second.get("/v1/kv/snap/?recurse").expect(200).json();
    assert_eq!(entries.as_array().unwrap().len(), 300);
    assert_eq!(
        kv_value(&second.get("/v1/kv/snap/000").json()[0]),
        b"rewritten"
    );
    assert_eq!(kv_value(&second.get("/v1/kv/snap/299").json()[0]), b"v299");
}

#[test]
fn data_written_in_another_format_is_refused_by_name() {
    let dir = seeded_data_dir("format");
    let path = dir.0.join("raft.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
            let mut meta = tx.open_table(table).unwrap();
            meta.insert("format", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let err = start_expecting_failure(&dir.0);
    assert!(
        err.contains("raft.redb") && err.contains("data format"),
        "{err}"
    );
}
