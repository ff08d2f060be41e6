//! Source adapters end to end: the built-in docker-source against a real
//! dockerd (containers from the local busybox image, ports published on
//! 127.0.0.1), and the built-in file-source against real files. Every
//! change must show in the catalog and in `dig` within a second.
//!
//! All docker tests share one engine, and a docker-source registers every
//! container it sees, so they take turns (`DOCKER`) and each removes its
//! containers (labelled `muster-test`) before and after.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use muster_tests::{free_port, wait_for, workspace_root, Agent, AgentOptions, TempDir};
use serde_json::Value;

static DOCKER: Mutex<()> = Mutex::new(());
/// Container commands that exit (with 3, with 0) once the test touches /go,
/// so the test decides when, not a sleep.
const EXIT_ON_GO_3: &str = "while [ ! -e /go ]; do sleep 0.1; done; exit 3";
const EXIT_ON_GO_0: &str = "while [ ! -e /go ]; do sleep 0.1; done; exit 0";
const IMAGE: &str = "muster-test/busybox:1";
/// What "at once" means for a change: the issue's bound.
const PROMPTLY: Duration = Duration::from_secs(1);

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn remove_test_containers() {
    let ids = docker(&["ps", "-aq", "--filter", "label=muster-test"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
}

/// Takes the engine for one test: dockerd up, image present, no leftovers.
struct DockerTurn(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl DockerTurn {
    fn take() -> DockerTurn {
        let guard = DOCKER.lock().unwrap_or_else(|p| p.into_inner());
        let script = workspace_root().join("scripts/dockerd.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("image")
            .status()
            .expect("running scripts/dockerd.sh");
        assert!(
            status.success(),
            "no Docker engine (scripts/dockerd.sh image failed)"
        );
        remove_test_containers();
        DockerTurn(guard)
    }
}

impl Drop for DockerTurn {
    fn drop(&mut self) {
        remove_test_containers();
    }
}

/// `docker run -d --label muster-test ARGS... IMAGE CMD...`.
fn run(name: &str, args: &[&str], cmd: &[&str]) -> String {
    let mut all = vec!["run", "-d", "--label", "muster-test=1", "--name", name];
    all.extend(args);
    all.push(IMAGE);
    all.extend(cmd);
    docker(&all)
}

fn agent_with(source: &str, data_dir: Option<&std::path::Path>) -> (Agent, TempDir) {
    let dir = TempDir::new("sources");
    let cfg = dir.0.join("muster.toml");
    std::fs::write(&cfg, source).unwrap();
    let mut opts = match data_dir {
        Some(d) => AgentOptions::persistent(d),
        None => AgentOptions::default(),
    };
    opts.extra_args = vec!["--config".into(), cfg.display().to_string()];
    (Agent::start(opts), dir)
}

/// The instances of `name` in the catalog.
fn instances(a: &Agent, name: &str) -> Vec<Value> {
    a.get(&format!("/v1/catalog/service/{name}"))
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `dig +short NAME.service.consul A` against the agent.
fn dig_a(a: &Agent, name: &str) -> Vec<String> {
    a.dig_short(&format!("{name}.service.consul"), "A", 1)
}

/// Waits (up to PROMPTLY, measured from `since`) until `name` has `n`
/// instances in the catalog and `dig` answers for them (or NXDOMAIN for
/// 0); returns the instances.
fn expect_instances(a: &Agent, since: Instant, name: &str, n: usize) -> Vec<Value> {
    let found = wait_for(Duration::from_secs(10), || {
        let got = instances(a, name);
        let dns = dig_a(a, name);
        (got.len() == n && (dns.is_empty() == (n == 0))).then_some(got)
    });
    let took = since.elapsed();
    let got = found.unwrap_or_else(|| {
        panic!(
            "{name}: wanted {n} instances; catalog has {:?}; sources: {}; log:\n{}",
            instances(a, name),
            a.get("/v1/muster/sources").text(),
            a.log_text()
        )
    });
    assert!(
        took <= PROMPTLY,
        "{name}: {n} instances showed after {took:?}, more than {PROMPTLY:?}"
    );
    got
}

fn host_name() -> String {
    docker(&["info", "--format", "{{.Name}}"])
}

fn tags(v: &Value) -> Vec<String> {
    v["ServiceTags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

const DOCKER_SOURCE: &str = r#"
[[source]]
name = "docker"
plugin = "builtin:docker-source"
grant = { docker = true }
config = { tags = "from-docker", resync = "30s" }
"#;

#[test]
fn docker_source_follows_the_container_lifecycle() {
    let _turn = DockerTurn::take();
    let (a, _cfg) = agent_with(DOCKER_SOURCE, None);
    let host = host_name();

    // SERVICE_* env: name, tags, meta; one published port.
    let p1 = free_port().to_string();
    run(
        "web-1",
        &[
            "-e",
            "SERVICE_NAME=web",
            "-e",
            "SERVICE_TAGS=a,b\\,c",
            "-e",
            "SERVICE_VERSION=1.2",
            "-p",
            &format!("127.0.0.1:{p1}:80"),
        ],
        &[],
    );
    let t = Instant::now();
    let web = expect_instances(&a, t, "web", 1);
    assert_eq!(web[0]["ServiceID"], format!("{host}:web-1:80"));
    assert_eq!(web[0]["ServiceAddress"], "127.0.0.1");
    assert_eq!(web[0]["ServicePort"].as_u64(), Some(p1.parse().unwrap()));
    assert_eq!(tags(&web[0]), ["a", "b,c", "from-docker"]);
    assert_eq!(web[0]["ServiceMeta"]["version"], "1.2");
    assert_eq!(web[0]["ServiceMeta"]["muster-source"], "docker");
    assert_eq!(dig_a(&a, "web"), ["127.0.0.1"]);

    // A label beats the same key in env.
    run(
        "named-2",
        &[
            "-e",
            "SERVICE_NAME=envname",
            "-l",
            "SERVICE_NAME=labelname",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
        ],
        &[],
    );
    let t = Instant::now();
    expect_instances(&a, t, "labelname", 1);
    assert!(instances(&a, "envname").is_empty());

    // Several ports: the default name is the image's base name plus the
    // port; a per-port name wins for its port; UDP is tagged and suffixed.
    let (p80, p81) = (free_port(), free_port());
    run(
        "multi-3",
        &[
            "-e",
            "SERVICE_81_NAME=dnsish",
            "-p",
            &format!("127.0.0.1:{p80}:80"),
            "-p",
            &format!("127.0.0.1:{p81}:81/udp"),
        ],
        &[],
    );
    let t = Instant::now();
    let b80 = expect_instances(&a, t, "busybox-80", 1);
    assert_eq!(b80[0]["ServiceID"], format!("{host}:multi-3:80"));
    let udp = expect_instances(&a, t, "dnsish", 1);
    assert_eq!(udp[0]["ServiceID"], format!("{host}:multi-3:81:udp"));
    assert_eq!(tags(&udp[0]), ["from-docker", "udp"]);
    assert_eq!(udp[0]["ServicePort"].as_u64(), Some(u64::from(p81)));

    // SERVICE_IGNORE: never registered. Events are handled in order, so
    // once a container started after it shows, the ignored one was seen.
    run(
        "ignored-4",
        &[
            "-e",
            "SERVICE_NAME=ignoreme",
            "-e",
            "SERVICE_IGNORE=1",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
        ],
        &[],
    );
    run(
        "sentinel-5",
        &[
            "-e",
            "SERVICE_NAME=sentinel",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
        ],
        &[],
    );
    let t = Instant::now();
    expect_instances(&a, t, "sentinel", 1);
    assert!(instances(&a, "ignoreme").is_empty());

    // stop, start, kill, pause, unpause, rm: each shows at once.
    docker(&["stop", "-t", "1", "web-1"]);
    let t = Instant::now();
    expect_instances(&a, t, "web", 0);
    docker(&["start", "web-1"]);
    let t = Instant::now();
    expect_instances(&a, t, "web", 1);
    docker(&["kill", "web-1"]);
    let t = Instant::now();
    expect_instances(&a, t, "web", 0);
    docker(&["pause", "named-2"]);
    let t = Instant::now();
    expect_instances(&a, t, "labelname", 0);
    docker(&["unpause", "named-2"]);
    let t = Instant::now();
    expect_instances(&a, t, "labelname", 1);
    docker(&["rm", "-f", "multi-3"]);
    let t = Instant::now();
    expect_instances(&a, t, "busybox-80", 0);
    expect_instances(&a, t, "dnsish", 0);

    let sources = a.get("/v1/muster/sources").json();
    assert_eq!(sources[0]["Docker"]["Connected"], true, "{sources}");
    assert_eq!(sources[0]["Failures"], 0, "{sources}");
}

#[test]
fn docker_source_explicit_internal_and_ip_modes() {
    let _turn = DockerTurn::take();
    let (a, _cfg) = agent_with(
        r#"
[[source]]
name = "internal"
plugin = "builtin:docker-source"
grant = { docker = true }
config = { explicit = true, internal = true }

[[source]]
name = "forced"
plugin = "builtin:docker-source"
grant = { docker = true }
config = { explicit = true, ip = "127.0.0.9", tags = ["forced"], hostname = "forced" }
"#,
        None,
    );
    // Exposed, not published: only internal mode sees it, at the
    // container's own address (asserted, never contacted).
    run(
        "inner-1",
        &["--expose", "80", "-e", "SERVICE_NAME=inner"],
        &[],
    );
    let t = Instant::now();
    let inner = expect_instances(&a, t, "inner", 1);
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "inner-1"]);
    assert!(!ip.is_empty());
    assert_eq!(inner[0]["ServiceAddress"], ip.as_str());
    assert_eq!(inner[0]["ServicePort"], 80);
    assert_eq!(inner[0]["ServiceMeta"]["muster-source"], "internal");

    // Published with a name: "internal" registers the container address,
    // "forced" the configured ip with the published port.
    let port = free_port();
    run(
        "both-2",
        &[
            "-e",
            "SERVICE_NAME=both",
            "-p",
            &format!("127.0.0.1:{port}:80"),
        ],
        &[],
    );
    let t = Instant::now();
    let both = expect_instances(&a, t, "both", 2);
    let forced = both
        .iter()
        .find(|i| i["ServiceMeta"]["muster-source"] == "forced")
        .expect("the forced source's instance");
    assert_eq!(forced["ServiceAddress"], "127.0.0.9");
    assert_eq!(forced["ServicePort"].as_u64(), Some(u64::from(port)));
    assert_eq!(tags(forced), ["forced"]);

    // explicit: a container without a name is not registered.
    run(
        "anon-3",
        &["-p", &format!("127.0.0.1:{}:80", free_port())],
        &[],
    );
    run(
        "sentinel-4",
        &["--expose", "80", "-e", "SERVICE_NAME=sentinel"],
        &[],
    );
    let t = Instant::now();
    expect_instances(&a, t, "sentinel", 1);
    let names = a.get("/v1/catalog/services").json();
    assert!(names.get("busybox").is_none(), "{names}");
}

#[test]
fn docker_source_checks_and_on_success() {
    let _turn = DockerTurn::take();
    let (a, _cfg) = agent_with(
        r#"
[[source]]
name = "docker"
plugin = "builtin:docker-source"
grant = { docker = true }
config = { deregister = "on-success" }
"#,
        None,
    );
    // httpd runs in the background so it can be killed while the
    // container lives on.
    let port = free_port();
    run(
        "checked-1",
        &[
            "-e",
            "SERVICE_NAME=checked",
            "-e",
            "SERVICE_CHECK_HTTP=/index.html",
            "-e",
            "SERVICE_CHECK_INTERVAL=200ms",
            "-e",
            "SERVICE_CHECK_INITIAL_STATUS=passing",
            "-p",
            &format!("127.0.0.1:{port}:80"),
        ],
        &["sh", "-c", "httpd -p 80 -h /www; exec sleep 3600"],
    );
    let t = Instant::now();
    expect_instances(&a, t, "checked", 1);
    let status = |a: &Agent| {
        a.get("/v1/health/checks/checked").json()[0]["Status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_for(Duration::from_secs(5), || {
        (status(&a) == "passing").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "check never passed: {}",
            a.get("/v1/health/checks/checked").text()
        )
    });
    assert_eq!(dig_a(&a, "checked"), ["127.0.0.1"]);
    docker(&["exec", "checked-1", "killall", "httpd"]);
    wait_for(Duration::from_secs(5), || {
        (status(&a) == "critical").then_some(())
    })
    .expect("check goes critical once httpd is gone");
    assert!(
        dig_a(&a, "checked").is_empty(),
        "a critical instance is not answered"
    );

    // on-success: a failed exit keeps the service, a clean one removes it,
    // and a kill (a signal) counts as clean.
    run(
        "fails-2",
        &[
            "-e",
            "SERVICE_NAME=fails",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
        ],
        &["sh", "-c", EXIT_ON_GO_3],
    );
    run(
        "succeeds-3",
        &[
            "-e",
            "SERVICE_NAME=succeeds",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
        ],
        &["sh", "-c", EXIT_ON_GO_0],
    );
    let t = Instant::now();
    expect_instances(&a, t, "fails", 1);
    expect_instances(&a, t, "succeeds", 1);
    for c in ["fails-2", "succeeds-3"] {
        docker(&["exec", c, "sh", "-c", ": > /go"]);
        docker(&["wait", c]);
    }
    let t = Instant::now();
    expect_instances(&a, t, "succeeds", 0);
    assert_eq!(
        instances(&a, "fails").len(),
        1,
        "a failed container keeps its service"
    );
    docker(&["rm", "fails-2"]);
    let t = Instant::now();
    expect_instances(&a, t, "fails", 0);
    docker(&["kill", "checked-1"]);
    let t = Instant::now();
    expect_instances(&a, t, "checked", 0);
}

#[test]
fn docker_source_converges_after_muster_and_dockerd_restarts() {
    let _turn = DockerTurn::take();
    let data = TempDir::new("sources-data");
    let opts = AgentOptions::persistent(&data.0);
    let cfg_dir = TempDir::new("sources-cfg");
    let cfg = cfg_dir.0.join("muster.toml");
    std::fs::write(&cfg, DOCKER_SOURCE).unwrap();
    let mut opts = opts;
    opts.extra_args = vec!["--config".into(), cfg.display().to_string()];
    let mut a = Agent::start(opts.clone());
    let pub_port = || format!("127.0.0.1:{}:80", free_port());
    run(
        "keep-1",
        &["-e", "SERVICE_NAME=keep", "-p", &pub_port()],
        &[],
    );
    run(
        "gone-2",
        &["-e", "SERVICE_NAME=gone", "-p", &pub_port()],
        &[],
    );
    let t = Instant::now();
    expect_instances(&a, t, "keep", 1);
    expect_instances(&a, t, "gone", 1);

    // muster dies; containers change; muster comes back and converges.
    a.kill9();
    docker(&["rm", "-f", "gone-2"]);
    run("new-3", &["-e", "SERVICE_NAME=new", "-p", &pub_port()], &[]);
    let a = Agent::start(opts);
    let t = Instant::now();
    let converged = wait_for(Duration::from_secs(10), || {
        (instances(&a, "gone").is_empty()
            && instances(&a, "new").len() == 1
            && instances(&a, "keep").len() == 1)
            .then_some(())
    });
    assert!(
        converged.is_some(),
        "no convergence after restart: {}",
        a.get("/v1/catalog/services").text()
    );
    eprintln!("converged {:?} after the restart", t.elapsed());

    // dockerd restarts: its containers stop (so their services go), the
    // watcher reconnects, and a container started afterwards appears.
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/dockerd.sh"))
        .arg("restart")
        .status()
        .expect("restarting dockerd");
    assert!(status.success());
    wait_for(Duration::from_secs(15), || {
        (instances(&a, "keep").is_empty() && instances(&a, "new").is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "stopped containers still registered: {}",
            a.get("/v1/catalog/services").text()
        )
    });
    docker(&["start", "keep-1"]);
    let t = Instant::now();
    // The watcher may still be in its reconnect backoff (at most 5 s).
    wait_for(Duration::from_secs(10), || {
        (instances(&a, "keep").len() == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no reconnect: {}\n{}",
            a.get("/v1/muster/sources").text(),
            a.log_text()
        )
    });
    eprintln!("keep back {:?} after start", t.elapsed());
    let sources = a.get("/v1/muster/sources").json();
    assert!(
        sources[0]["Docker"]["Reconnects"].as_u64().unwrap_or(0) >= 1,
        "{sources}"
    );
}

#[test]
fn file_source_follows_files_and_keeps_good_services_when_one_breaks() {
    let dir = TempDir::new("services-d");
    let d = dir.0.display().to_string();
    let (a, _cfg) = agent_with(
        &format!(
            r#"
[[source]]
name = "files"
plugin = "builtin:file-source"
grant = {{ read = ["{d}"] }}
config = {{ dir = "{d}" }}
"#
        ),
        None,
    );
    let web = dir.0.join("web.toml");
    let api = dir.0.join("api.json");

    // Add a TOML file with a check and a JSON file with two services.
    let t = Instant::now();
    std::fs::write(
        &web,
        r#"
[[service]]
name = "fweb"
id = "fweb-1"
port = 8080
address = "127.0.0.1"
tags = ["v1"]
meta = { team = "core" }
[service.check]
ttl = "30s"
status = "passing"
"#,
    )
    .unwrap();
    std::fs::write(
        &api,
        r#"{"services": [
  {"name": "fapi", "id": "fapi-1", "port": 9000, "address": "127.0.0.2"},
  {"Name": "fapi", "ID": "fapi-2", "Port": 9001, "Address": "127.0.0.3"}
]}"#,
    )
    .unwrap();
    let fweb = expect_instances(&a, t, "fweb", 1);
    assert_eq!(fweb[0]["ServiceMeta"]["team"], "core");
    assert_eq!(tags(&fweb[0]), ["v1"]);
    expect_instances(&a, t, "fapi", 2);
    assert_eq!(dig_a(&a, "fapi"), ["127.0.0.2", "127.0.0.3"]);
    let checks = a.get("/v1/health/checks/fweb").json();
    assert_eq!(checks[0]["Status"], "passing", "{checks}");

    // Edit: a new port, a tag removed.
    let t = Instant::now();
    std::fs::write(
        &web,
        "[service]\nname = \"fweb\"\nid = \"fweb-1\"\nport = 8081\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    // The new registration and the removal of the dropped check are two
    // writes: wait for both.
    let ok = wait_for(Duration::from_secs(5), || {
        let i = instances(&a, "fweb");
        let checks = a.get("/v1/health/checks/fweb").json();
        let no_checks = checks.as_array().is_some_and(|c| c.is_empty());
        (i.len() == 1 && i[0]["ServicePort"] == 8081 && no_checks).then_some(())
    });
    assert!(
        ok.is_some() && t.elapsed() <= PROMPTLY,
        "edit not applied promptly: {:?}; checks: {}",
        t.elapsed(),
        a.get("/v1/health/checks/fweb").text()
    );

    // Break the JSON file: its services stay, the problem names file, line
    // and field, and the TOML file still applies.
    std::fs::write(
        &api,
        "{\"services\": [\n  {\"name\": \"fapi\", \"id\": \"fapi-1\",\n   \"port\": 70000}\n]}",
    )
    .unwrap();
    let t = Instant::now();
    std::fs::write(
        &web,
        "[service]\nname = \"fweb\"\nid = \"fweb-1\"\nport = 8082\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let problem = wait_for(Duration::from_secs(5), || {
        let s = a.get("/v1/muster/sources").json();
        let p = s[0]["Problems"].as_array().cloned().unwrap_or_default();
        let port_ok = instances(&a, "fweb")
            .first()
            .map(|i| i["ServicePort"] == 8082)
            .unwrap_or(false);
        (port_ok && !p.is_empty()).then(|| p[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no problem reported: {}",
            a.get("/v1/muster/sources").text()
        )
    });
    assert!(t.elapsed() <= PROMPTLY * 2);
    let message = problem["Message"].as_str().unwrap();
    assert!(
        problem["Origin"].as_str().unwrap().ends_with("api.json"),
        "{problem}"
    );
    assert!(
        message.contains("api.json") && message.contains("line 3") && message.contains("port"),
        "{message}"
    );
    assert_eq!(
        instances(&a, "fapi").len(),
        2,
        "a broken file keeps its services"
    );

    // Fix it with one service fewer; then delete the other file.
    let t = Instant::now();
    std::fs::write(
        &api,
        r#"{"service": {"name": "fapi", "id": "fapi-2", "port": 9001, "address": "127.0.0.3"}}"#,
    )
    .unwrap();
    let fapi = expect_instances(&a, t, "fapi", 1);
    assert_eq!(fapi[0]["ServiceID"], "fapi-2");
    let t = Instant::now();
    std::fs::remove_file(&web).unwrap();
    expect_instances(&a, t, "fweb", 0);
    let s = a.get("/v1/muster/sources").json();
    assert!(s[0]["Problems"].as_array().unwrap().is_empty(), "{s}");
}
