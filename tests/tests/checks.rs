//! Health checks run through WebAssembly plugins, end to end: real muster
//! agents, real HTTP and TCP servers started and stopped by the tests, and
//! fault plugins that loop, trap, hoard memory, reach outside their grant
//! or flood their output.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use muster_tests::{fault_plugin, wait_for, Agent, AgentOptions, ChildServer, HttpTarget, TempDir};
use serde_json::{json, Value};

/// A check of this agent, as `/v1/agent/checks` shows it.
fn check(a: &Agent, id: &str) -> Option<Value> {
    let all = a.get("/v1/agent/checks").expect(200).json();
    all.get(id).cloned()
}

/// Waits until check `id` has `status`; panics with what it has instead.
fn wait_status(a: &Agent, id: &str, status: &str, timeout: Duration) -> Value {
    wait_for(timeout, || check(a, id).filter(|c| c["Status"] == status)).unwrap_or_else(|| {
        panic!(
            "check {id} did not become {status} within {timeout:?}; it is {:?}\nlog:\n{}",
            check(a, id),
            a.log_text()
        )
    })
}

fn register(a: &Agent, body: Value) {
    let r = a.put("/v1/agent/service/register", &body.to_string());
    assert_eq!(r.status, 200, "register {body}: {}", r.text());
}

fn with_config(toml: &str, dir: &Path) -> AgentOptions {
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).expect("writing config");
    AgentOptions {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    }
}

#[test]
fn http_check_follows_the_server_through_passing_warning_and_critical() {
    let a = Agent::dev();
    let mut web = HttpTarget::start(200);
    register(
        &a,
        json!({
            "Name": "web", "ID": "web-1", "Port": web.addr.port(),
            "Check": {"HTTP": format!("http://{}/health", web.addr), "Interval": "1s", "Timeout": "1s"}
        }),
    );
    let c = wait_status(&a, "service:web-1", "passing", Duration::from_secs(4));
    let out = c["Output"].as_str().unwrap_or("");
    assert!(out.contains("200") && out.contains("status 200"), "{out}");
    assert_eq!(c["Type"], "http");

    // One interval (1 s) plus the spread of the first run and slack.
    web.set_status(429);
    wait_status(&a, "service:web-1", "warning", Duration::from_secs(3));
    web.set_status(503);
    wait_status(&a, "service:web-1", "critical", Duration::from_secs(3));
    let healthy = a.get("/v1/health/service/web?passing").expect(200).json();
    assert_eq!(healthy, json!([]), "a critical instance is not healthy");
    web.set_status(200);
    wait_status(&a, "service:web-1", "passing", Duration::from_secs(3));
    let healthy = a.get("/v1/health/service/web?passing").expect(200).json();
    assert_eq!(healthy.as_array().map(Vec::len), Some(1));

    web.stop();
    let c = wait_status(&a, "service:web-1", "critical", Duration::from_secs(3));
    let out = c["Output"].as_str().unwrap_or("");
    assert!(out.contains("connection refused"), "{out}");
}

#[test]
fn tcp_check_follows_the_listener() {
    let a = Agent::dev();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    register(
        &a,
        json!({
            "Name": "db", "Port": addr.port(),
            "Check": {"TCP": addr.to_string(), "Interval": "1s", "Timeout": "500ms"}
        }),
    );
    let c = wait_status(&a, "service:db", "passing", Duration::from_secs(4));
    assert_eq!(c["Output"], format!("TCP connect {addr}: Success"));
    drop(listener);
    let c = wait_status(&a, "service:db", "critical", Duration::from_secs(3));
    let out = c["Output"].as_str().unwrap_or("");
    assert!(out.contains("connection refused"), "{out}");
    let _back = TcpListener::bind(addr).expect("rebinding the same port");
    wait_status(&a, "service:db", "passing", Duration::from_secs(3));
}

#[test]
fn failures_before_critical_holds_the_status_and_steady_checks_do_not_write() {
    let a = Agent::dev();
    let web = HttpTarget::start(200);
    register(
        &a,
        json!({
            "Name": "api", "Port": web.addr.port(),
            "Check": {"HTTP": format!("http://{}/", web.addr), "Interval": "1s",
                      "FailuresBeforeCritical": 3}
        }),
    );
    let c = wait_status(&a, "service:api", "passing", Duration::from_secs(4));
    let modify = c["ModifyIndex"].as_u64();
    // Steady: runs go on, the catalog is not written.
    std::thread::sleep(Duration::from_millis(2500));
    let c = check(&a, "service:api").expect("check");
    assert_eq!(
        c["ModifyIndex"].as_u64(),
        modify,
        "a steady check wrote to the catalog"
    );

    web.set_status(500);
    let failing_since = Instant::now();
    let c = wait_status(&a, "service:api", "critical", Duration::from_secs(6));
    assert!(
        failing_since.elapsed() >= Duration::from_millis(1900),
        "went critical after {:?}, before three failures: {c}",
        failing_since.elapsed()
    );
}

#[test]
fn bad_check_definitions_are_refused_naming_the_field() {
    let a = Agent::dev();
    let cases = [
        (
            json!({"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}),
            "Check.Interval",
        ),
        (
            json!({"Name": "x", "Check": {"HTTP": "ftp://h/", "Interval": "1s"}}),
            "Check.HTTP",
        ),
        (
            json!({"Name": "x", "Check": {"TCP": "nohost", "Interval": "1s"}}),
            "Check.TCP",
        ),
        (
            json!({"Name": "x", "Check": {"Wasm": "nope", "Interval": "1s"}}),
            "Check.Wasm",
        ),
        (
            json!({"Name": "x", "Checks": [{"TTL": "5s"}, {"TTL": "5s", "HTTP": "http://a/", "Interval": "1s"}]}),
            "Checks[1]",
        ),
        (
            json!({"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "1s"}}),
            "Check.Args",
        ),
        (
            json!({"Name": "x", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s", "Config": {"a": 1}}}),
            "Check.Config",
        ),
    ];
    for (body, field) in cases {
        let r = a.put("/v1/agent/service/register", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.text().contains(field),
            "{body}: {} should name {field}",
            r.text()
        );
    }
    let services = a.get("/v1/agent/services").expect(200).json();
    assert_eq!(services, json!({}), "nothing half-registered");
}

#[test]
fn misbehaving_plugins_end_critical_and_the_node_carries_on() {
    let dir = TempDir::new("faults");
    let wasm = fault_plugin();
    let mut toml = String::new();
    for mode in ["pass", "loop", "trap", "memory", "huge-output", "connect"] {
        toml.push_str(&format!(
            "[[check_plugin]]\nname = \"fault-{mode}\"\nplugin = \"{}\"\nmemory_mb = 32\nconfig = {{ mode = \"{mode}\", addr = \"127.0.0.9:9\" }}\n\n",
            wasm.display()
        ));
    }
    toml.push_str(&format!(
        "[[check_plugin]]\nname = \"fault-fuel\"\nplugin = \"{}\"\nfuel = 5000000\nconfig = {{ mode = \"loop\" }}\n\n",
        wasm.display()
    ));
    let a = Agent::start(with_config(&toml, &dir.0));
    let plugins = a.get("/v1/muster/plugins").expect(200).json();
    let names: Vec<&str> = plugins
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["Name"].as_str())
        .collect();
    for want in ["http-check", "tcp-check", "fault-loop", "fault-pass"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for mode in [
        "pass",
        "loop",
        "trap",
        "memory",
        "huge-output",
        "connect",
        "fuel",
    ] {
        register(
            &a,
            json!({
                "Name": format!("svc-{mode}"), "Port": 9,
                "Check": {"Wasm": format!("fault-{mode}"), "Interval": "1s", "Timeout": "1s"}
            }),
        );
    }
    let expect = [
        ("loop", "critical", "timed out after 1.5s and was stopped"),
        ("trap", "critical", "trapped"),
        ("memory", "critical", "exceeded its memory limit of 32 MiB"),
        (
            "connect",
            "critical",
            "node refused connections to 127.0.0.9:9",
        ),
    ];
    for (mode, status, phrase) in expect {
        let id = format!("service:svc-{mode}");
        // Checks start critical with no output: wait for the verdict.
        let seen = wait_for(Duration::from_secs(6), || {
            check(&a, &id).filter(|c| {
                c["Status"] == status && c["Output"].as_str().is_some_and(|o| o.contains(phrase))
            })
        });
        assert!(
            seen.is_some(),
            "{mode}: expected {status} with {phrase:?}, have {:?}",
            check(&a, &id)
        );
    }
    let huge = wait_status(
        &a,
        "service:svc-huge-output",
        "passing",
        Duration::from_secs(4),
    );
    let out = huge["Output"].as_str().unwrap_or("");
    assert!(
        out.len() <= 4096 && out.contains("truncated"),
        "len {}",
        out.len()
    );

    // The well-behaved check kept its schedule next to the bad ones.
    let calls = |a: &Agent| -> u64 {
        let all = a.get("/v1/muster/plugins").expect(200).json();
        all.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["Name"] == "fault-pass")
            .and_then(|p| p["Calls"].as_u64())
            .unwrap_or(0)
    };
    wait_status(&a, "service:svc-pass", "passing", Duration::from_secs(3));
    let before = calls(&a);
    std::thread::sleep(Duration::from_secs(4));
    let ran = calls(&a) - before;
    assert!(
        (3..=5).contains(&ran),
        "the passing check ran {ran} times in 4 s at a 1 s interval"
    );
    assert_eq!(
        check(&a, "service:svc-pass").expect("check")["Status"],
        "passing"
    );

    let all = a.get("/v1/muster/plugins").expect(200).json();
    let looped = all
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["Name"] == "fault-loop")
        .cloned()
        .unwrap_or_default();
    assert!(looped["Failures"].as_u64().unwrap_or(0) >= 1, "{looped}");
    assert!(
        looped["LastError"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{looped}"
    );
    // And the node still serves.
    a.put("/v1/kv/still-here", "yes").expect(200);
    let list = a.cli(&["plugin", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("fault-loop") && text.contains("health-check"),
        "{text}"
    );
}

#[test]
fn a_plugin_block_that_cannot_load_stops_the_node_with_the_reason() {
    let dir = TempDir::new("badplugin");
    let not_wasm = dir.0.join("x.wasm");
    std::fs::write(&not_wasm, b"not a component").expect("write");
    let opts = with_config(
        &format!(
            "[[check_plugin]]\nname = \"broken\"\nplugin = \"{}\"\n",
            not_wasm.display()
        ),
        &dir.0,
    );
    let mut a = Agent::spawn(&opts);
    let status = wait_for(Duration::from_secs(10), || {
        a.child.try_wait().ok().flatten()
    })
    .expect("the agent should exit");
    assert!(!status.success());
    let log = a.log_text();
    assert!(
        log.contains("broken") && log.contains("not a WebAssembly component"),
        "{log}"
    );
}

#[test]
fn restart_with_a_warm_compile_cache_loads_from_it_and_checks_still_run() {
    let dir = TempDir::new("warm");
    let web = HttpTarget::start(200);
    let opts = AgentOptions::persistent(&dir.0);
    let first = Agent::start(opts.clone());
    let plugins = first.get("/v1/muster/plugins").expect(200).json();
    for p in plugins.as_array().into_iter().flatten() {
        assert_eq!(p["CompileCacheHit"], false, "cold start compiles: {p}");
    }
    register(
        &first,
        json!({"Name": "web", "Port": web.addr.port(),
               "Check": {"HTTP": format!("http://{}/", web.addr), "Interval": "1s"}}),
    );
    wait_status(&first, "service:web", "passing", Duration::from_secs(4));
    drop(first);

    web.set_status(500);
    let second = Agent::start(opts);
    let plugins = second.get("/v1/muster/plugins").expect(200).json();
    for p in plugins.as_array().into_iter().flatten() {
        assert_eq!(
            p["CompileCacheHit"], true,
            "warm start loads from the cache: {p}"
        );
    }
    // The check was re-armed from the catalog and sees the new answer.
    wait_status(&second, "service:web", "critical", Duration::from_secs(4));
}

/// componentize-py from `$COMPONENTIZE_PY` (the test command installs it)
/// or the PATH.
fn componentize_py() -> String {
    std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into())
}

/// A redis-server on a free loopback port (the test command installs it).
fn start_redis(port: u16) -> ChildServer {
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .stdout(std::process::Stdio::null());
    ChildServer::spawn(cmd, port, "redis-server")
}

#[test]
fn python_check_example_builds_with_componentize_py_and_follows_redis() {
    let dir = TempDir::new("pycheck");
    let example = muster_tests::workspace_root().join("examples/checks/python-redis-ping");
    let wasm = dir.0.join("redis_ping.wasm");
    // The example's README commands, run from its directory.
    let built = std::process::Command::new(componentize_py())
        .current_dir(&example)
        .args([
            "-d",
            "../../../wit",
            "-w",
            "health-check",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&wasm)
        .output()
        .expect("componentize-py (the test command installs it)");
    assert!(
        built.status.success(),
        "componentize-py: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let toml = std::fs::read_to_string(example.join("muster.toml"))
        .expect("example config")
        .replace("\"redis_ping.wasm\"", &format!("\"{}\"", wasm.display()));
    let a = Agent::start(with_config(&toml, &dir.0));
    let port = muster_tests::free_port();
    let mut redis = Some(start_redis(port));
    register(
        &a,
        json!({"Name": "redis", "Address": "127.0.0.1", "Port": port,
               "Check": {"Wasm": "redis-ping", "Interval": "1s", "Timeout": "2s"}}),
    );
    let c = wait_status(&a, "service:redis", "passing", Duration::from_secs(20));
    assert_eq!(c["Output"], format!("redis 127.0.0.1:{port}: PONG"));

    drop(redis.take());
    let c = wait_status(&a, "service:redis", "critical", Duration::from_secs(4));
    assert!(
        c["Output"]
            .as_str()
            .unwrap_or("")
            .contains("connection refused"),
        "{c}"
    );
    redis = Some(start_redis(port));
    wait_status(&a, "service:redis", "passing", Duration::from_secs(4));
    assert_eq!(redis.as_ref().map(|r| r.port), Some(port));
}

/// An HTTPS server with a fresh self-signed certificate (openssl +
/// Python's ssl module).
fn self_signed_https(dir: &Path) -> ChildServer {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = muster_tests::free_port();
    let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", server, &port.to_string()])
        .arg(&cert)
        .arg(&key);
    ChildServer::spawn(cmd, port, "the https server")
}

#[test]
fn https_checks_verify_certificates_unless_tls_skip_verify() {
    let dir = TempDir::new("tls");
    let https = self_signed_https(&dir.0);
    let a = Agent::dev();
    let url = format!("https://127.0.0.1:{}/health", https.port);
    register(
        &a,
        json!({"Name": "strict", "Port": https.port,
               "Check": {"HTTP": url, "Interval": "1s", "Timeout": "2s"}}),
    );
    register(
        &a,
        json!({"Name": "lenient", "Port": https.port,
               "Check": {"HTTP": url, "Interval": "1s", "Timeout": "2s", "TLSSkipVerify": true}}),
    );
    let ok = wait_status(&a, "service:lenient", "passing", Duration::from_secs(5));
    assert!(
        ok["Output"].as_str().unwrap_or("").contains("200 OK"),
        "{ok}"
    );
    let strict = wait_for(Duration::from_secs(5), || {
        check(&a, "service:strict").filter(|c| c["Output"].as_str().is_some_and(|o| !o.is_empty()))
    })
    .expect("the strict check ran");
    assert_eq!(strict["Status"], "critical", "{strict}");
    assert!(
        strict["Output"].as_str().unwrap_or("").contains("TLS"),
        "{strict}"
    );
}
