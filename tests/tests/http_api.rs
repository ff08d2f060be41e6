//! The Consul-compatible HTTP API, driven over raw HTTP against a real
//! `muster agent --dev`.

use std::time::{Duration, Instant};

use muster_tests::{kv_value, Agent};
use serde_json::{json, Value};

#[test]
fn kv_put_get_recurse_keys_raw_flags_delete() {
    let a = Agent::dev();
    assert_eq!(
        a.put("/v1/kv/app/config/db", "postgres").expect(200).json(),
        json!(true)
    );
    a.put("/v1/kv/app/config/cache?flags=42", "redis")
        .expect(200);
    a.put("/v1/kv/app/name", "shop").expect(200);

    let r = a.get("/v1/kv/app/config/cache").expect(200);
    let e = &r.json()[0];
    assert_eq!(kv_value(e), b"redis");
    assert_eq!(e["Flags"], 42);
    assert_eq!(e["Key"], "app/config/cache");
    assert_eq!(r.index, e["ModifyIndex"].as_u64());
    assert_eq!(r.known_leader.as_deref(), Some("true"));

    let all = a.get("/v1/kv/app/?recurse").expect(200).json();
    assert_eq!(all.as_array().unwrap().len(), 3);

    let keys = a.get("/v1/kv/app/?keys&separator=/").expect(200).json();
    assert_eq!(keys, json!(["app/config/", "app/name"]));

    let raw = a.get("/v1/kv/app/name?raw").expect(200);
    assert_eq!(raw.body, b"shop");

    let missing = a.get("/v1/kv/app/nope").expect(404);
    assert!(missing.body.is_empty());
    assert!(
        missing.index.unwrap_or(0) > 0,
        "404 still carries X-Consul-Index"
    );

    assert_eq!(
        a.delete("/v1/kv/app/config?recurse").expect(200).json(),
        json!(true)
    );
    a.get("/v1/kv/app/config/db").expect(404);
    a.get("/v1/kv/app/name").expect(200);
}

#[test]
fn kv_cas_only_applies_at_the_expected_index() {
    let a = Agent::dev();
    // cas=0 means "only if the key does not exist".
    assert_eq!(
        a.put("/v1/kv/cfg?cas=0", "v1").expect(200).json(),
        json!(true)
    );
    assert_eq!(
        a.put("/v1/kv/cfg?cas=0", "v2").expect(200).json(),
        json!(false)
    );
    let idx = a.get("/v1/kv/cfg").json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        a.put(&format!("/v1/kv/cfg?cas={}", idx + 100), "v3").json(),
        json!(false)
    );
    assert_eq!(
        a.put(&format!("/v1/kv/cfg?cas={idx}"), "v4").json(),
        json!(true)
    );
    assert_eq!(kv_value(&a.get("/v1/kv/cfg").json()[0]), b"v4");
    // Delete with a stale index fails, with the current one succeeds.
    assert_eq!(
        a.delete(&format!("/v1/kv/cfg?cas={idx}")).json(),
        json!(false)
    );
    let idx = a.get("/v1/kv/cfg").json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        a.delete(&format!("/v1/kv/cfg?cas={idx}")).json(),
        json!(true)
    );
    a.get("/v1/kv/cfg").expect(404);
}

fn session(a: &Agent, body: Value) -> String {
    let r = a
        .put("/v1/session/create", &body.to_string())
        .expect(200)
        .json();
    r["ID"].as_str().expect("session ID").to_string()
}

#[test]
fn locks_with_sessions_acquire_release_and_invalidate() {
    let a = Agent::dev();
    let s1 = session(&a, json!({"Name": "one", "LockDelay": "0s"}));
    let s2 = session(&a, json!({"name": "two", "lock_delay": "0s"}));

    assert_eq!(
        a.put(&format!("/v1/kv/lock/leader?acquire={s1}"), "me")
            .json(),
        json!(true)
    );
    assert_eq!(
        a.put(&format!("/v1/kv/lock/leader?acquire={s2}"), "you")
            .json(),
        json!(false)
    );
    let e = a.get("/v1/kv/lock/leader").json()[0].clone();
    assert_eq!(e["Session"], s1.as_str());
    assert_eq!(e["LockIndex"], 1);
    assert_eq!(kv_value(&e), b"me");

    // Only the holder can release.
    assert_eq!(
        a.put(&format!("/v1/kv/lock/leader?release={s2}"), "")
            .json(),
        json!(false)
    );
    assert_eq!(
        a.put(&format!("/v1/kv/lock/leader?release={s1}"), "")
            .json(),
        json!(true)
    );
    assert!(a.get("/v1/kv/lock/leader").json()[0]
        .get("Session")
        .is_none());
    assert_eq!(
        a.put(&format!("/v1/kv/lock/leader?acquire={s2}"), "you")
            .json(),
        json!(true)
    );
    assert_eq!(a.get("/v1/kv/lock/leader").json()[0]["LockIndex"], 2);

    // Destroying the holder releases the lock (behavior "release").
    a.put(&format!("/v1/session/destroy/{s2}"), "").expect(200);
    assert!(a.get("/v1/kv/lock/leader").json()[0]
        .get("Session")
        .is_none());

    // Behavior "delete" removes the held key.
    let s3 = session(&a, json!({"Behavior": "delete", "LockDelay": "0s"}));
    assert_eq!(
        a.put(&format!("/v1/kv/lock/eph?acquire={s3}"), "x").json(),
        json!(true)
    );
    a.put(&format!("/v1/session/destroy/{s3}"), "").expect(200);
    a.get("/v1/kv/lock/eph").expect(404);

    // Lock delay: after invalidation, the key cannot be re-acquired at once.
    let s4 = session(&a, json!({"LockDelay": "5s"}));
    let s5 = session(&a, json!({}));
    assert_eq!(
        a.put(&format!("/v1/kv/lock/delayed?acquire={s4}"), "")
            .json(),
        json!(true)
    );
    a.put(&format!("/v1/session/destroy/{s4}"), "").expect(200);
    assert_eq!(
        a.put(&format!("/v1/kv/lock/delayed?acquire={s5}"), "")
            .json(),
        json!(false)
    );

    // Acquiring with a session that does not exist is an error, not a false.
    let bad = a.put(
        "/v1/kv/lock/x?acquire=00000000-0000-0000-0000-000000000000",
        "",
    );
    assert_eq!(bad.status, 500, "{}", bad.text());
    assert!(bad.text().contains("invalid session"), "{}", bad.text());
}

#[test]
fn sessions_info_list_node_renew_and_ttl_validation() {
    let a = Agent::dev();
    let id = session(
        &a,
        json!({"Name": "svc-lock", "TTL": "10s", "Behavior": "release"}),
    );
    let info = a.get(&format!("/v1/session/info/{id}")).expect(200).json();
    assert_eq!(info[0]["Name"], "svc-lock");
    assert_eq!(info[0]["TTL"], "10s");
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["Node"], a.node.as_str());
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);

    let list = a.get("/v1/session/list").expect(200).json();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["ID"] == id.as_str()));
    let by_node = a
        .get(&format!("/v1/session/node/{}", a.node))
        .expect(200)
        .json();
    assert_eq!(by_node.as_array().unwrap().len(), 1);

    let renewed = a
        .put(&format!("/v1/session/renew/{id}"), "")
        .expect(200)
        .json();
    assert_eq!(renewed[0]["ID"], id.as_str());
    let gone = a
        .put("/v1/session/renew/6b8a4e7e-0000-0000-0000-000000000000", "")
        .expect(404);
    assert!(gone.text().contains("not found"));

    let bad = a.put("/v1/session/create", r#"{"TTL": "5s"}"#).expect(400);
    assert!(bad.text().contains("Invalid Session TTL"), "{}", bad.text());
    let bad = a
        .put("/v1/session/create", r#"{"Behavior": "explode"}"#)
        .expect(400);
    assert!(bad.text().contains("Behavior"), "{}", bad.text());
    let bad = a
        .put("/v1/session/create", r#"{"Node": "no-such-node"}"#)
        .expect(500);
    assert!(bad.text().contains("no-such-node"), "{}", bad.text());

    a.put(&format!("/v1/session/destroy/{id}"), "").expect(200);
    assert_eq!(
        a.get(&format!("/v1/session/info/{id}")).expect(200).json(),
        json!([])
    );
}

#[test]
fn session_ttl_expiry_releases_its_locks() {
    let a = Agent::dev();
    let id = session(&a, json!({"TTL": "10s", "LockDelay": "0s"}));
    assert_eq!(
        a.put(&format!("/v1/kv/ttl-lock?acquire={id}"), "").json(),
        json!(true)
    );
    // Consul lets a session live up to twice its TTL.
    let start = Instant::now();
    loop {
        let held = a.get("/v1/kv/ttl-lock").json()[0].get("Session").is_some();
        if !held {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "session never expired"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "expired too early: {:?}",
        start.elapsed()
    );
    assert_eq!(a.get(&format!("/v1/session/info/{id}")).json(), json!([]));
}

#[test]
fn agent_registration_ttl_checks_and_health_filtering() {
    let a = Agent::dev();
    let reg = json!({
        "Name": "web", "ID": "web-1", "Tags": ["v1", "primary"], "Port": 8080,
        "Address": "127.0.0.10", "Meta": {"version": "1.2"},
        "Check": {"TTL": "30s", "Status": "passing"}
    });
    a.put("/v1/agent/service/register", &reg.to_string())
        .expect(200);
    // Lower-case field names, as some clients send them.
    let reg2 = json!({"name": "web", "id": "web-2", "tags": ["v2"], "port": 8081,
                      "check": {"ttl": "30s", "status": "passing"}});
    a.put("/v1/agent/service/register", &reg2.to_string())
        .expect(200);

    let services = a.get("/v1/agent/services").expect(200).json();
    assert_eq!(services["web-1"]["Service"], "web");
    assert_eq!(services["web-1"]["Meta"]["version"], "1.2");
    assert_eq!(services["web-2"]["Port"], 8081);
    assert_eq!(
        a.get("/v1/agent/service/web-1").expect(200).json()["Port"],
        8080
    );
    a.get("/v1/agent/service/nope").expect(404);

    let checks = a.get("/v1/agent/checks").expect(200).json();
    assert_eq!(checks["service:web-1"]["Status"], "passing");
    assert_eq!(checks["service:web-1"]["Type"], "ttl");

    let passing = |a: &Agent| -> Vec<String> {
        let mut ids: Vec<String> = a
            .get("/v1/health/service/web?passing")
            .expect(200)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(passing(&a), ["web-1", "web-2"]);

    a.put("/v1/agent/check/fail/service:web-2?note=disk%20full", "")
        .expect(200);
    assert_eq!(passing(&a), ["web-1"]);
    let all = a.get("/v1/health/service/web").json();
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "without ?passing every instance is listed"
    );
    let critical = a.get("/v1/health/state/critical").json();
    assert!(critical
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "service:web-2" && c["Output"] == "disk full"));

    a.put("/v1/agent/check/warn/service:web-2", "").expect(200);
    assert_eq!(passing(&a), ["web-1"], "warning is not passing");
    a.put(
        "/v1/agent/check/update/service:web-2",
        r#"{"Status":"passing","Output":"ok"}"#,
    )
    .expect(200);
    assert_eq!(passing(&a), ["web-1", "web-2"]);

    // Tag filters.
    let v1 = a.get("/v1/health/service/web?tag=v1").json();
    assert_eq!(v1.as_array().unwrap().len(), 1);
    let cat = a.get("/v1/catalog/service/web?tag=v2").json();
    assert_eq!(cat[0]["ServiceID"], "web-2");
    assert_eq!(cat[0]["ServicePort"], 8081);
    assert_eq!(cat[0]["Node"], a.node.as_str());

    // Maintenance mode takes an instance out, and back.
    a.put(
        "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy",
        "",
    )
    .expect(200);
    assert_eq!(passing(&a), ["web-2"]);
    a.put("/v1/agent/service/maintenance/web-1?enable=false", "")
        .expect(200);
    assert_eq!(passing(&a), ["web-1", "web-2"]);

    // Re-registering keeps earlier checks unless replace-existing-checks.
    let two_checks = json!({"Name": "web", "ID": "web-1", "Checks": [
        {"CheckID": "a", "TTL": "30s"}, {"CheckID": "b", "TTL": "30s"}]});
    a.put("/v1/agent/service/register", &two_checks.to_string())
        .expect(200);
    let one_check =
        json!({"Name": "web", "ID": "web-1", "Checks": [{"CheckID": "a", "TTL": "30s"}]});
    a.put("/v1/agent/service/register", &one_check.to_string())
        .expect(200);
    assert!(a.get("/v1/agent/checks").json().get("b").is_some());
    a.put(
        "/v1/agent/service/register?replace-existing-checks",
        &one_check.to_string(),
    )
    .expect(200);
    let checks = a.get("/v1/agent/checks").json();
    assert!(
        checks.get("b").is_none()
            && checks.get("service:web-1").is_none()
            && checks.get("a").is_some()
    );
    a.put("/v1/agent/check/pass/a", "").expect(200);

    // Deregistration removes the service and its checks.
    a.put("/v1/agent/service/deregister/web-2", "").expect(200);
    assert_eq!(passing(&a), ["web-1"]);
    assert!(a
        .get("/v1/agent/checks")
        .json()
        .get("service:web-2")
        .is_none());
    a.put("/v1/agent/service/deregister/web-2", "").expect(404);
}

#[test]
fn ttl_check_goes_critical_when_not_refreshed() {
    let a = Agent::dev();
    a.put(
        "/v1/agent/check/register",
        r#"{"Name": "heartbeat", "TTL": "1s", "Status": "passing"}"#,
    )
    .expect(200);
    assert_eq!(
        a.get("/v1/agent/checks").json()["heartbeat"]["Status"],
        "passing"
    );
    std::thread::sleep(Duration::from_millis(1800));
    let c = &a.get("/v1/agent/checks").json()["heartbeat"];
    assert_eq!(c["Status"], "critical");
    assert_eq!(c["Output"], "TTL expired");
    a.put("/v1/agent/check/pass/heartbeat", "").expect(200);
    assert_eq!(
        a.get("/v1/agent/checks").json()["heartbeat"]["Status"],
        "passing"
    );
    a.put("/v1/agent/check/deregister/heartbeat", "")
        .expect(200);
    a.put("/v1/agent/check/pass/heartbeat", "").expect(404);
}

#[test]
fn deregister_critical_service_after_reaps_the_service() {
    let a = Agent::dev();
    let reg =
        json!({"Name": "flaky", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}});
    a.put("/v1/agent/service/register", &reg.to_string())
        .expect(200);
    let start = Instant::now();
    while a.get("/v1/agent/services").json().get("flaky").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "critical service was not reaped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn catalog_register_deregister_external_nodes() {
    let a = Agent::dev();
    let reg = json!({
        "Node": "db-host", "Address": "10.1.2.3", "NodeMeta": {"rack": "r1"},
        "Service": {"Service": "postgres", "ID": "pg1", "Port": 5432, "Tags": ["primary"]},
        "Check": {"CheckID": "pg-alive", "Name": "pg alive", "Status": "passing", "ServiceID": "pg1"}
    });
    assert_eq!(
        a.put("/v1/catalog/register", &reg.to_string())
            .expect(200)
            .json(),
        json!(true)
    );
    let nodes = a.get("/v1/catalog/nodes").expect(200).json();
    let db = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "db-host")
        .unwrap()
        .clone();
    assert_eq!(db["Address"], "10.1.2.3");
    assert_eq!(db["Meta"]["rack"], "r1");
    assert_eq!(
        a.get("/v1/catalog/services").json()["postgres"],
        json!(["primary"])
    );
    assert_eq!(a.get("/v1/catalog/datacenters").json(), json!(["dc1"]));
    let node = a.get("/v1/catalog/node/db-host").expect(200).json();
    assert_eq!(node["Services"]["pg1"]["Port"], 5432);
    assert_eq!(
        a.get("/v1/catalog/node/nobody").expect(200).json(),
        Value::Null
    );
    let checks = a.get("/v1/health/checks/postgres").json();
    assert_eq!(checks[0]["CheckID"], "pg-alive");
    assert_eq!(
        a.get("/v1/health/node/db-host")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Removing the service removes its check; removing the node removes all.
    a.put(
        "/v1/catalog/deregister",
        r#"{"Node":"db-host","ServiceID":"pg1"}"#,
    )
    .expect(200);
    assert!(a
        .get("/v1/catalog/services")
        .json()
        .get("postgres")
        .is_none());
    assert_eq!(a.get("/v1/health/node/db-host").json(), json!([]));
    a.put("/v1/catalog/deregister", r#"{"Node":"db-host"}"#)
        .expect(200);
    assert!(a
        .get("/v1/catalog/nodes")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["Node"] != "db-host"));
}

#[test]
fn blocking_queries_wake_on_change_and_time_out_on_none() {
    let a = Agent::dev();
    a.put("/v1/kv/watch/a", "1").expect(200);
    let idx = a.get("/v1/kv/watch/?recurse").index.unwrap();

    // Times out (with jitter up to wait/16) and returns the same index.
    let start = Instant::now();
    let r = a
        .get(&format!("/v1/kv/watch/?recurse&index={idx}&wait=1s"))
        .expect(200);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "returned late: {took:?}"
    );
    assert_eq!(r.index, Some(idx));

    // A write to another prefix does not wake it; a write under it does.
    let http = a.http.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ureq::put(&format!("http://{http}/v1/kv/other/x"))
            .send_string("x")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        ureq::put(&format!("http://{http}/v1/kv/watch/b"))
            .send_string("2")
            .unwrap();
    });
    let start = Instant::now();
    let r = a
        .get(&format!("/v1/kv/watch/?recurse&index={idx}&wait=10s"))
        .expect(200);
    let took = start.elapsed();
    writer.join().unwrap();
    assert!(
        took >= Duration::from_millis(550),
        "woke on an unrelated write: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "did not wake on the change: {took:?}"
    );
    assert!(r.index.unwrap() > idx);
    assert_eq!(r.json().as_array().unwrap().len(), 2);

    // Health blocking queries wake when a check flips.
    a.put(
        "/v1/agent/service/register",
        r#"{"Name":"api","Check":{"TTL":"60s","Status":"passing"}}"#,
    )
    .expect(200);
    let h = a.get("/v1/health/service/api?passing");
    let hidx = h.index.unwrap();
    let http = a.http.clone();
    let flipper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ureq::put(&format!("http://{http}/v1/agent/check/fail/service:api"))
            .call()
            .unwrap();
    });
    let r = a.get(&format!(
        "/v1/health/service/api?passing&index={hidx}&wait=10s"
    ));
    flipper.join().unwrap();
    assert_eq!(r.json(), json!([]));
}

#[test]
fn txn_is_all_or_nothing() {
    let a = Agent::dev();
    a.put("/v1/kv/t/existing", "old").expect(200);
    let idx = a.get("/v1/kv/t/existing").json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let ok = json!([
        {"KV": {"Verb": "set", "Key": "t/a", "Value": b64("A")}},
        {"KV": {"Verb": "cas", "Key": "t/existing", "Value": b64("new"), "Index": idx}},
        {"KV": {"Verb": "get", "Key": "t/existing"}}
    ]);
    let r = a.put("/v1/txn", &ok.to_string()).expect(200).json();
    assert_eq!(r["Errors"], Value::Null);
    assert_eq!(r["Results"].as_array().unwrap().len(), 3);
    assert_eq!(kv_value(&r["Results"][2]["KV"]), b"new");

    // The second op fails, so the first must not apply either.
    let bad = json!([
        {"KV": {"Verb": "set", "Key": "t/b", "Value": b64("B")}},
        {"KV": {"Verb": "check-index", "Key": "t/existing", "Index": 1}},
        {"KV": {"Verb": "delete", "Key": "t/a"}}
    ]);
    let r = a.put("/v1/txn", &bad.to_string()).expect(409).json();
    assert_eq!(r["Errors"][0]["OpIndex"], 1);
    assert_eq!(r["Results"], Value::Null);
    a.get("/v1/kv/t/b").expect(404);
    a.get("/v1/kv/t/a").expect(200);

    // An unknown verb is rejected before anything runs.
    let r = a.put(
        "/v1/txn",
        r#"[{"KV":{"Verb":"set","Key":"t/c"}},{"KV":{"Verb":"frobnicate","Key":"t/d"}}]"#,
    );
    assert_eq!(r.status, 409);
    assert!(r.text().contains("frobnicate"));
    a.get("/v1/kv/t/c").expect(404);

    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("t/{i}")}}))
        .collect();
    a.put("/v1/txn", &Value::Array(too_many).to_string())
        .expect(413);
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let a = Agent::dev();
    let before = a.get("/v1/catalog/services").json();

    let r = a.put("/v1/agent/service/register", "{not json").expect(400);
    assert!(r.text().contains("Request decode failed"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Port":"eighty"}"#,
        )
        .expect(400);
    assert!(r.text().to_lowercase().contains("port"), "{}", r.text());
    let r = a
        .put("/v1/agent/service/register", r#"{"Name":"x","Port":70000}"#)
        .expect(400);
    assert!(r.text().to_lowercase().contains("port"), "{}", r.text());
    let r = a
        .put("/v1/agent/service/register", r#"{"Port":80}"#)
        .expect(400);
    assert!(r.text().contains("Missing service name"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Args":["/bin/true"],"Interval":"10s"}}"#,
        )
        .expect(400);
    assert!(r.text().contains("Check.Args"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Checks":[{"TTL":"5s"},{"GRPC":"127.0.0.1:1","Interval":"1s"}]}"#,
        )
        .expect(400);
    assert!(r.text().contains("Checks[1].GRPC"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10q"}}"#,
        )
        .expect(400);
    assert!(r.text().contains("ttl"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Meta":{"consul-x":"1"}}"#,
        )
        .expect(400);
    assert!(r.text().contains("Meta"), "{}", r.text());
    let r = a
        .put("/v1/catalog/register", r#"{"Address":"1.2.3.4"}"#)
        .expect(400);
    assert!(r.text().contains("Missing node name"), "{}", r.text());
    let r = a
        .put(
            "/v1/catalog/register",
            r#"{"Node":"bad node!","Address":"1.2.3.4"}"#,
        )
        .expect(400);
    assert!(r.text().contains("Node"), "{}", r.text());
    let r = a
        .put(
            "/v1/agent/check/update/serfHealth",
            r#"{"Status":"purple"}"#,
        )
        .expect(400);
    assert!(r.text().contains("Status"), "{}", r.text());
    let r = a.get("/v1/kv/x?index=abc").expect(400);
    assert!(r.text().contains("index"), "{}", r.text());
    let r = a.get("/v1/health/state/sideways").expect(400);
    assert!(r.text().contains("sideways"), "{}", r.text());
    let r = a.get("/v1/catalog/services?dc=dc9").expect(500);
    assert!(r.text().contains("No path to datacenter"), "{}", r.text());
    let r = a
        .get("/v1/catalog/services?filter=ServiceName%20%3D%3D%3D")
        .expect(400);
    assert!(r.text().contains("boolean expression"), "{}", r.text());

    // KV: oversized value, missing key.
    let big = "x".repeat(512 * 1024 + 1);
    let r = a.put("/v1/kv/big", &big).expect(413);
    assert!(r.text().contains("too large"), "{}", r.text());
    a.get("/v1/kv/big").expect(404);
    let huge = "x".repeat(5 << 20);
    let r = a.put("/v1/agent/service/register", &huge).expect(413);
    assert!(r.text().contains("limit is"), "{}", r.text());
    a.put("/v1/kv/", "v").expect(400);
    a.put("/v1/kv/k?cas=notanumber", "v").expect(400);
    a.get("/v1/kv/k").expect(404);

    assert_eq!(
        a.get("/v1/catalog/services").json(),
        before,
        "nothing was applied"
    );
    assert!(a
        .get("/v1/agent/services")
        .json()
        .as_object()
        .unwrap()
        .is_empty());
}

#[test]
fn filter_pretty_consistent_and_headers() {
    let a = Agent::dev();
    for (id, env) in [("a", "prod"), ("b", "dev"), ("c", "prod")] {
        let reg = json!({"Name": "svc", "ID": id, "Meta": {"env": env}, "Tags": [id]});
        a.put("/v1/agent/service/register", &reg.to_string())
            .expect(200);
    }
    let prod = a
        .get("/v1/catalog/service/svc?filter=ServiceMeta.env%20%3D%3D%20prod")
        .expect(200)
        .json();
    assert_eq!(prod.as_array().unwrap().len(), 2);
    let tagged = a
        .get("/v1/agent/services?filter=%22b%22%20in%20Tags")
        .expect(200)
        .json();
    assert_eq!(
        tagged.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["b"]
    );

    let pretty = a.get("/v1/catalog/services?pretty").expect(200);
    assert!(pretty.text().contains("\n  "), "pretty output is indented");
    assert_eq!(pretty.content_type.as_deref(), Some("application/json"));

    a.get("/v1/kv/?recurse&consistent").expect(404);
    a.get("/v1/catalog/nodes?stale").expect(200);
    a.get("/v1/catalog/nodes?stale&consistent").expect(400);
    assert_eq!(a.get("/v1/status/peers").json(), json!([a.server_addr]));
    assert_eq!(a.get("/v1/status/leader").json(), json!(a.server_addr));
}

#[test]
fn agent_self_members_and_join() {
    let a = Agent::dev();
    let me = a.get("/v1/agent/self").expect(200).json();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], a.node.as_str());
    assert!(me["Config"]["Version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(me["Member"]["Name"], a.node.as_str());
    let members = a.get("/v1/agent/members").expect(200).json();
    assert_eq!(members[0]["Status"], 1);
    assert_eq!(members[0]["Tags"]["role"], "consul");
    a.put(&format!("/v1/agent/join/{}", a.server_addr), "")
        .expect(200);
    let r = a.put("/v1/agent/join/127.0.0.9:8301", "").expect(500);
    assert!(r.text().contains("127.0.0.9"), "{}", r.text());
    a.get("/v1/no/such/endpoint").expect(404);
}

/// Bodies and parameters as real clients send them (Go `api`, py-consul,
/// Spring Cloud Consul, Traefik, Prometheus).
#[test]
fn client_quirks_nulls_bools_node_meta_tag_case_and_empty_roots() {
    let a = Agent::dev();
    // Fresh store: listing the root's keys is [] (py-consul iterates it).
    assert_eq!(a.get("/v1/kv/?keys").expect(200).json(), json!([]));

    // Go's api package sends unset fields as null.
    let go_shaped = r#"{"ID":"go-1","Name":"go","Tags":null,"Port":9000,"Address":"","Meta":null,
        "EnableTagOverride":null,"Weights":null,"Check":null,"Checks":null}"#;
    a.put("/v1/agent/service/register", go_shaped).expect(200);
    let go_catalog = r#"{"ID":"","Node":"ext-1","Address":"10.0.0.1","TaggedAddresses":null,
        "NodeMeta":{"rack":"r1"},"Service":{"ID":"db-1","Service":"db","Tags":["Primary"],"Meta":null,"Port":5432},
        "Check":null,"Checks":null,"SkipNodeUpdate":false}"#;
    a.put("/v1/catalog/register", go_catalog).expect(200);
    a.put(
        "/v1/catalog/register",
        r#"{"Node":"ext-2","Address":"10.0.0.2","NodeMeta":{"rack":"r2"},
        "Service":{"ID":"db-2","Service":"db","Tags":["replica"],"Port":5432}}"#,
    )
    .expect(200);

    // ?node-meta filters nodes (Prometheus node_meta).
    let r1 = a.get("/v1/catalog/service/db?node-meta=rack:r1").json();
    assert_eq!(r1.as_array().unwrap().len(), 1);
    assert_eq!(r1[0]["ServiceID"], "db-1");
    let nodes = a.get("/v1/catalog/nodes?node-meta=rack:r2").json();
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(
        a.get("/v1/health/service/db?node-meta=rack:r9").json(),
        json!([])
    );
    let services = a.get("/v1/catalog/services?node-meta=rack:r1").json();
    assert!(
        services.get("db").is_some() && services.get("go").is_none(),
        "{services}"
    );
    a.get("/v1/catalog/nodes?node-meta=norack").expect(400);

    // ?tag= matches case-insensitively (Traefik, Prometheus).
    let tagged = a.get("/v1/catalog/service/db?tag=primary").json();
    assert_eq!(tagged[0]["ServiceID"], "db-1");
    assert_eq!(
        a.get("/v1/health/service/db?tag=PRIMARY")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // ?passing follows Go's ParseBool: 0/false mean no filter.
    a.put(
        "/v1/agent/service/register",
        r#"{"Name":"api","Check":{"TTL":"30s"}}"#,
    )
    .expect(200);
    assert_eq!(
        a.get("/v1/health/service/api?passing=0")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(a.get("/v1/health/service/api?passing=1").json(), json!([]));
    assert_eq!(a.get("/v1/health/service/api?passing").json(), json!([]));
    a.get("/v1/health/service/api?passing=maybe").expect(400);

    // Re-registering keeps a check's status (no flapping on app restart).
    a.put("/v1/agent/check/pass/service:api", "").expect(200);
    a.put(
        "/v1/agent/service/register",
        r#"{"Name":"api","Check":{"TTL":"30s"}}"#,
    )
    .expect(200);
    assert_eq!(
        a.get("/v1/agent/checks").json()["service:api"]["Status"],
        "passing"
    );

    // py-consul sends enable=True.
    a.put("/v1/agent/service/maintenance/api?enable=True&reason=x", "")
        .expect(200);
    assert_eq!(a.get("/v1/health/service/api?passing").json(), json!([]));
    a.put("/v1/agent/service/maintenance/api?enable=False", "")
        .expect(200);
    assert_eq!(
        a.get("/v1/health/service/api?passing")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    a.put("/v1/agent/service/maintenance/api?enable=perhaps", "")
        .expect(400);
}
