//! The `muster` command line against a running agent, and agent start-up
//! errors a user would hit first.

use muster_tests::{muster_bin, Agent, TempDir};

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "CLI failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kv_catalog_and_members_commands() {
    let a = Agent::dev();
    assert!(stdout(&a.cli(&["kv", "put", "cfg/db/host", "10.0.0.5"]))
        .contains("Success! Data written to: cfg/db/host"));
    a.cli(&["kv", "put", "cfg/db/port", "5432"]);
    assert_eq!(
        stdout(&a.cli(&["kv", "get", "cfg/db/host"])).trim(),
        "10.0.0.5"
    );
    let listing = stdout(&a.cli(&["kv", "get", "-recurse", "cfg/"]));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["cfg/db/host:10.0.0.5", "cfg/db/port:5432"]
    );

    let missing = a.cli(&["kv", "get", "cfg/nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No key exists at: cfg/nope"));

    stdout(&a.cli(&["kv", "delete", "-recurse", "cfg/"]));
    assert_eq!(stdout(&a.cli(&["kv", "get", "-recurse", "cfg/"])), "");

    a.put(
        "/v1/agent/service/register",
        r#"{"Name":"web","Tags":["v1"]}"#,
    )
    .expect(200);
    assert_eq!(stdout(&a.cli(&["catalog", "services"])).trim(), "web");
    assert!(stdout(&a.cli(&["catalog", "services", "-tags"])).contains("v1"));
    assert!(stdout(&a.cli(&["catalog", "nodes"])).contains(&a.node));
    let members = stdout(&a.cli(&["members"]));
    assert!(
        members.contains(&a.node) && members.contains("alive") && members.contains("server"),
        "{members}"
    );

    // --http-addr beats the environment.
    let o = std::process::Command::new(muster_bin())
        .args(["kv", "get", "x", "--http-addr", "127.0.0.1:1"])
        .env("MUSTER_HTTP_ADDR", &a.http)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the agent"));
}

#[test]
fn unknown_config_key_stops_the_agent_with_file_and_line() {
    let dir = TempDir::new("cfg");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        "server = true\nbootstrap_expect = 1\ndata_dri = \"/tmp/x\"\n",
    )
    .unwrap();
    let o = std::process::Command::new(muster_bin())
        .args(["agent", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("agent.toml") && err.contains("line 3") && err.contains("data_dri"),
        "{err}"
    );
}

#[test]
fn dev_defaults_then_files_then_flags() {
    let dir = TempDir::new("cfg2");
    let cfg = dir.0.join("a.toml");
    std::fs::write(&cfg, "node_name = \"from-file\"\ndatacenter = \"east\"\n").unwrap();
    let port = muster_tests::free_port();
    let a = Agent::start(muster_tests::AgentOptions {
        node: Some("from-flag".into()),
        http_port: Some(port),
        extra_args: vec!["--config".into(), cfg.display().to_string()],
        ..Default::default()
    });
    let me = a.get("/v1/agent/self").json();
    assert_eq!(me["Config"]["NodeName"], "from-flag");
    assert_eq!(me["Config"]["Datacenter"], "east");
}
