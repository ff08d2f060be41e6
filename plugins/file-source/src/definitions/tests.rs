use super::*;

fn toml(text: &str) -> Result<Vec<Service>, String> {
    parse("/d/web.toml", Format::Toml, text)
}

fn json(text: &str) -> Result<Vec<Service>, String> {
    parse("/d/web.json", Format::Json, text)
}

fn ok(result: Result<Vec<Service>, String>) -> Vec<Service> {
    match result {
        Ok(services) => services,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(result: Result<Vec<Service>, String>) -> String {
    match result {
        Ok(services) => panic!("expected an error, got {services:?}"),
        Err(e) => e,
    }
}

fn service(name: &str) -> Service {
    Service {
        id: name.to_string(),
        name: name.to_string(),
        tags: Vec::new(),
        address: String::new(),
        port: 0,
        meta: Vec::new(),
        checks: Vec::new(),
    }
}

fn check(kind: &str, endpoint: &str, interval_ms: u32) -> Check {
    Check {
        kind: kind.to_string(),
        endpoint: endpoint.to_string(),
        interval_ms,
        timeout_ms: 0,
        ttl_ms: 0,
        deregister_critical_after_ms: 0,
        initial_status: None,
    }
}

#[test]
fn file_names() {
    assert_eq!(Format::of_file_name("web.toml"), Some(Format::Toml));
    assert_eq!(Format::of_file_name("web.json"), Some(Format::Json));
    assert_eq!(Format::of_file_name(".web.toml"), None);
    assert_eq!(Format::of_file_name(".#web.json"), None);
    assert_eq!(Format::of_file_name("web.toml.swp"), None);
    assert_eq!(Format::of_file_name("web.toml~"), None);
    assert_eq!(Format::of_file_name("web.yaml"), None);
    assert_eq!(Format::of_file_name("README"), None);
}

#[test]
fn toml_single_service() {
    let services = ok(toml(
        r#"
[service]
name = "web"
id = "web-1"
tags = ["primary", "v2"]
address = "10.0.0.5"
port = 8080

[service.meta]
version = "2.1"
owner_team = "payments"
"#,
    ));
    assert_eq!(
        services,
        vec![Service {
            id: "web-1".into(),
            name: "web".into(),
            tags: vec!["primary".into(), "v2".into()],
            address: "10.0.0.5".into(),
            port: 8080,
            meta: vec![
                ("owner_team".into(), "payments".into()),
                ("version".into(), "2.1".into())
            ],
            checks: Vec::new(),
        }]
    );
}

#[test]
fn toml_array_of_services() {
    let services = ok(toml(
        "[[service]]\nname = \"web\"\nport = 80\n\n[[service]]\nname = \"db\"\n",
    ));
    let mut web = service("web");
    web.port = 80;
    assert_eq!(services, vec![web, service("db")]);
}

#[test]
fn toml_services_key() {
    let services = ok(toml(
        "[[services]]\nname = \"a\"\n[[services]]\nname = \"b\"\n",
    ));
    assert_eq!(services, vec![service("a"), service("b")]);
}

#[test]
fn toml_service_and_services_together() {
    let services = ok(toml(
        "service = { name = \"a\" }\n[[services]]\nname = \"b\"\n",
    ));
    assert_eq!(services, vec![service("a"), service("b")]);
}

#[test]
fn json_service_object() {
    let services = ok(json(
        r#"{"service": {"name": "web", "port": 80, "tags": ["x"], "meta": {"k": "v"}}}"#,
    ));
    let mut web = service("web");
    web.port = 80;
    web.tags = vec!["x".into()];
    web.meta = vec![("k".into(), "v".into())];
    assert_eq!(services, vec![web]);
}

#[test]
fn json_service_list_and_services() {
    let services = ok(json(
        r#"{"service": [{"name": "a"}, {"name": "b", "id": "b2"}]}"#,
    ));
    let mut b = service("b");
    b.id = "b2".into();
    assert_eq!(services, vec![service("a"), b]);
    let services = ok(json(r#"{"services": [{"name": "a"}, {"name": "b"}]}"#));
    assert_eq!(services, vec![service("a"), service("b")]);
}

#[test]
fn camel_case_aliases() {
    let expected = Service {
        id: "web-1".into(),
        name: "web".into(),
        tags: vec!["t".into()],
        address: "10.0.0.1".into(),
        port: 81,
        meta: vec![("k".into(), "v".into())],
        checks: vec![
            Check {
                timeout_ms: 1_000,
                deregister_critical_after_ms: 60_000,
                initial_status: Some(Status::Passing),
                ..check("http", "http://localhost:81/health", 10_000)
            },
            check("tcp", "localhost:81", 5_000),
            Check {
                ttl_ms: 30_000,
                ..check("ttl", "", 0)
            },
        ],
    };
    let services = ok(json(
        r#"{"service": {
            "Name": "web", "ID": "web-1", "Tags": ["t"], "Address": "10.0.0.1",
            "Port": 81, "Meta": {"k": "v"},
            "Check": {"CheckID": "c1", "Name": "health", "HTTP": "http://localhost:81/health",
                      "Interval": "10s", "Timeout": "1s",
                      "DeregisterCriticalServiceAfter": "1m", "Status": "passing"},
            "Checks": [{"ID": "c2", "TCP": "localhost:81", "Interval": "5s"},
                       {"TTL": "30s"}]
        }}"#,
    ));
    assert_eq!(services, vec![expected.clone()]);
    let services = ok(toml(
        r#"
[service]
Name = "web"
ID = "web-1"
Tags = ["t"]
Address = "10.0.0.1"
Port = 81
Meta = { k = "v" }
Check = { HTTP = "http://localhost:81/health", Interval = "10s", Timeout = "1s", DeregisterCriticalServiceAfter = "1m", Status = "passing" }
Checks = [{ TCP = "localhost:81", Interval = "5s" }, { TTL = "30s" }]
"#,
    ));
    assert_eq!(services, vec![expected]);
}

#[test]
fn key_and_its_alias_together() {
    let e = err(json(r#"{"service": {"name": "a", "Name": "b"}}"#));
    assert_eq!(e, "/d/web.json: line 1: service: duplicate field `name`");
}

#[test]
fn every_check_kind() {
    let services = ok(toml(
        r#"
[service]
name = "web"
port = 8080

[service.check]
id = "web-http"
name = "HTTP on 8080"
http = "https://{address}:{port}/health"
interval = "10s"
timeout = "2s"
deregister_critical_service_after = "90m"
status = "warning"

[[service.checks]]
tcp = "{address}:{port}"
interval = "1m30s"
status = "critical"

[[service.checks]]
ttl = "1.5s"
status = "passing"

[[service.checks]]
wasm = "redis-ping"
interval = "500ms"
timeout = "250ms"
"#,
    ));
    assert_eq!(services.len(), 1);
    assert_eq!(
        services[0].checks,
        vec![
            Check {
                timeout_ms: 2_000,
                deregister_critical_after_ms: 5_400_000,
                initial_status: Some(Status::Warning),
                ..check("http", "https://{address}:{port}/health", 10_000)
            },
            Check {
                initial_status: Some(Status::Critical),
                ..check("tcp", "{address}:{port}", 90_000)
            },
            Check {
                ttl_ms: 1_500,
                initial_status: Some(Status::Passing),
                ..check("ttl", "", 0)
            },
            Check {
                timeout_ms: 250,
                ..check("redis-ping", "", 500)
            },
        ]
    );
}

#[test]
fn check_kind_count() {
    let e = err(toml(
        "[service]\nname = \"a\"\n[service.check]\ninterval = \"10s\"\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service.check: a check needs one of `http`, `tcp`, `ttl` or `wasm`"
    );
    let e = err(json(
        r#"{"service": {"name": "a", "check": {"http": "http://x/", "tcp": "x:1", "interval": "1s"}}}"#,
    ));
    assert_eq!(
        e,
        "/d/web.json: line 1: service.check: a check has exactly one of `http`, `tcp`, `ttl` or `wasm`, not `http` and `tcp`"
    );
}

#[test]
fn interval_required_except_for_ttl() {
    for (kind, value) in [("http", "http://x/"), ("tcp", "x:1"), ("wasm", "p")] {
        let text = format!("[service]\nname = \"a\"\n\n[[service.checks]]\n{kind} = \"{value}\"\n");
        let e = err(toml(&text));
        assert_eq!(
            e,
            format!("/d/web.toml: line 4: service.checks[0]: `{kind}` checks need `interval`")
        );
    }
    let e = err(toml(
        "[service]\nname = \"a\"\ncheck = { http = \"http://x/\", interval = \"0s\" }\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service.check.interval: \"0s\" is zero; it must be longer"
    );
}

#[test]
fn missing_name_names_the_table_line() {
    let e = err(toml(
        "[[service]]\nname = \"a\"\n\n[[service]]\nport = 80\n",
    ));
    assert_eq!(e, "/d/web.toml: line 4: service[1]: missing field `name`");
    let e = err(toml(
        "# web\n[service]\nport = 80\n\n[service.meta]\nx = \"y\"\n",
    ));
    assert_eq!(e, "/d/web.toml: line 2: service: missing field `name`");
    // serde_json finds it at the closing brace; the line is the opening one.
    let e = err(json(
        "{\n  \"services\": [\n    {\"name\": \"a\"},\n    {\n      \"port\": 80,\n      \"tags\": [\"}\"]\n    }\n  ]\n}\n",
    ));
    assert_eq!(e, "/d/web.json: line 4: services[1]: missing field `name`");
}

#[test]
fn empty_name_or_id() {
    let e = err(toml("[[service]]\nname = \"\"\n"));
    assert_eq!(e, "/d/web.toml: line 2: service[0].name: must not be empty");
    let e = err(json("{\"service\": {\n\"name\": \"a\",\n\"id\": \"\"\n}}"));
    assert_eq!(e, "/d/web.json: line 3: service.id: must not be empty");
}

#[test]
fn bad_port_names_line_and_field() {
    let e = err(toml(
        "[[service]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 70000\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 4: service[0].port: invalid value: integer `70000`, expected u16"
    );
    let e = err(json(
        "{\n  \"service\": {\n    \"name\": \"web\",\n    \"port\": -1\n  }\n}",
    ));
    assert_eq!(
        e,
        "/d/web.json: line 4: service.port: invalid value: integer `-1`, expected u16"
    );
    let e = err(json(
        "{\"service\": {\"name\": \"web\",\n \"port\": \"80\"}}",
    ));
    assert_eq!(
        e,
        "/d/web.json: line 2: service.port: invalid type: string \"80\", expected u16"
    );
}

#[test]
fn bad_duration_names_line_and_field() {
    let e = err(json(
        "{\"service\": {\"name\": \"web\", \"checks\": [\n  {\"ttl\": \"10s\"},\n  {\"http\": \"http://x/\",\n   \"interval\": \"ten\"}\n]}}",
    ));
    assert_eq!(
        e,
        "/d/web.json: line 4: service.checks[1].interval: \"ten\" is not a duration (use e.g. \"10s\", \"1m30s\", \"500ms\")"
    );
    let e = err(toml(
        "[service]\nname = \"a\"\n\n[service.check]\nttl = \"10s\"\nderegister_critical_service_after = 60\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 6: service.check.deregister_critical_service_after: invalid type: integer `60`, expected a duration such as \"10s\""
    );
    let e = err(toml(
        "[service]\nname = \"a\"\ncheck = { ttl = \"2000h\" }\n",
    ));
    assert!(
        e.starts_with("/d/web.toml: line 3: service.check.ttl: \"2000h\" is too long"),
        "{e}"
    );
}

#[test]
fn unknown_fields() {
    let e = err(toml(
        "[[service]]\nname = \"a\"\nenable_tag_override = true\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service[0].enable_tag_override: unknown field `enable_tag_override`, expected one of `name`, `id`, `tags`, `address`, `port`, `meta`, `check`, `checks`"
    );
    let e = err(json(
        "{\"service\": {\"name\": \"a\", \"check\": {\n\"http\": \"http://x/\", \"interval\": \"1s\",\n\"method\": \"POST\"}}}",
    ));
    assert!(
        e.starts_with(
            "/d/web.json: line 3: service.check.method: unknown field `method`, expected one of `id`"
        ),
        "{e}"
    );
    let e = err(toml("[service]\nname = \"a\"\n\n[server]\nport = 1\n"));
    assert_eq!(
        e,
        "/d/web.toml: line 4: server: unknown field `server`, expected `service` or `services`"
    );
    let e = err(json("{\"name\": \"a\"}"));
    assert_eq!(
        e,
        "/d/web.json: line 1: name: unknown field `name`, expected `service` or `services`"
    );
}

#[test]
fn http_url_validation() {
    let http = |url: &str| {
        toml(&format!(
            "[service]\nname = \"a\"\ncheck = {{ http = \"{url}\", interval = \"1s\" }}\n"
        ))
    };
    for good in [
        "http://localhost/",
        "https://10.0.0.1:8443/health?x=1",
        "http://{address}:{port}/health",
    ] {
        assert_eq!(ok(http(good))[0].checks[0].endpoint, good);
    }
    for (bad, why) in [
        ("localhost:80/health", "is not an http:// or https:// URL"),
        ("ftp://x/", "is not an http:// or https:// URL"),
        ("HTTP//x", "is not an http:// or https:// URL"),
        ("http://", "has no host"),
        ("https:///health", "has no host"),
        ("http://x/a b", "contains white space"),
    ] {
        let e = err(http(bad));
        assert_eq!(
            e,
            format!("/d/web.toml: line 3: service.check.http: {bad:?} {why}")
        );
    }
}

#[test]
fn tcp_address_validation() {
    let tcp = |address: &str| {
        json(&format!(
            r#"{{"service": {{"name": "a", "check": {{"tcp": "{address}", "interval": "1s"}}}}}}"#
        ))
    };
    for good in [
        "localhost:6379",
        "[::1]:80",
        "{address}:{port}",
        "db:{port}",
    ] {
        assert_eq!(ok(tcp(good))[0].checks[0].endpoint, good);
    }
    for bad in ["localhost", ":80", "x:0", "x:65536", "x:http", "a b:1"] {
        let e = err(tcp(bad));
        assert_eq!(
            e,
            format!("/d/web.json: line 1: service.check.tcp: {bad:?} is not \"host:port\"")
        );
    }
}

#[test]
fn wasm_plugin_name() {
    let e = err(toml(
        "[service]\nname = \"a\"\ncheck = { wasm = \"http\", interval = \"1s\" }\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service.check.wasm: \"http\" is a built-in kind: write `http = ...` instead"
    );
    let e = err(toml(
        "[service]\nname = \"a\"\ncheck = { wasm = \"\", interval = \"1s\" }\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service.check.wasm: \"\" is not a check plugin name"
    );
}

#[test]
fn bad_status() {
    let e = err(json(
        r#"{"service": {"name": "a", "check": {"ttl": "5s", "status": "ok"}}}"#,
    ));
    assert_eq!(
        e,
        "/d/web.json: line 1: service.check.status: unknown variant `ok`, expected one of `passing`, `warning`, `critical`"
    );
}

#[test]
fn duplicate_id_in_one_file() {
    let e = err(toml(
        "[[service]]\nname = \"a\"\n\n[[service]]\nname = \"b\"\nid = \"a\"\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 4: service[1]: service id \"a\" is defined twice in this file"
    );
    // The same name twice is fine with distinct IDs.
    let services = ok(toml(
        "[[service]]\nname = \"a\"\nid = \"a1\"\n[[service]]\nname = \"a\"\nid = \"a2\"\n",
    ));
    assert_eq!(services.len(), 2);
}

#[test]
fn empty_files() {
    // Zero bytes is a file being rewritten: an error, so its services stay.
    assert!(toml("").unwrap_err().contains("the file is empty"));
    assert!(json("").unwrap_err().contains("the file is empty"));
    assert!(json("\u{feff}").unwrap_err().contains("the file is empty"));
    assert_eq!(toml("# nothing here yet\n"), Ok(Vec::new()));
    assert_eq!(json(" \n"), Ok(Vec::new()));
    assert_eq!(json("{}"), Ok(Vec::new()));
    assert_eq!(json(r#"{"services": []}"#), Ok(Vec::new()));
    assert_eq!(toml("services = []\n"), Ok(Vec::new()));
}

#[test]
fn byte_order_mark_is_skipped() {
    assert_eq!(
        json("\u{feff}{\"service\": {\"name\": \"a\"}}"),
        Ok(vec![service("a")])
    );
    assert_eq!(
        toml("\u{feff}[service]\nname = \"a\"\n"),
        Ok(vec![service("a")])
    );
}

#[test]
fn meta_validation() {
    let meta = |key: &str, value: &str| {
        json(&format!(
            "{{\"service\": {{\"name\": \"a\",\n\"meta\": {{\n\"ok\": \"1\",\n{key:?}: {value:?}}}}}}}"
        ))
    };
    // Sorted by key, whatever the order in the file.
    assert_eq!(
        ok(meta("Build-ID_2", "x"))[0].meta,
        vec![
            ("Build-ID_2".to_string(), "x".to_string()),
            ("ok".to_string(), "1".to_string())
        ]
    );
    let long_key = "k".repeat(128);
    assert_eq!(ok(meta(&long_key, "x"))[0].meta[0].0, long_key);
    let long_value = "v".repeat(512);
    assert_eq!(ok(meta("k", &long_value))[0].meta[0].1, long_value);

    let e = err(meta("a.b", "x"));
    assert_eq!(
        e,
        "/d/web.json: line 4: service.meta.\"a.b\": meta key \"a.b\" may only have letters, digits, '-' and '_'"
    );
    let e = err(meta("", "x"));
    assert_eq!(
        e,
        "/d/web.json: line 4: service.meta.\"\": meta key must not be empty"
    );
    let e = err(meta(&"k".repeat(129), "x"));
    assert!(
        e.starts_with("/d/web.json: line 4: service.meta.kkk")
            && e.ends_with("\" is longer than 128 characters"),
        "{e}"
    );
    let e = err(meta("big", &"v".repeat(513)));
    assert_eq!(
        e,
        "/d/web.json: line 4: service.meta.big: meta value is longer than 512 characters"
    );
    let e = err(meta("ok", "2"));
    assert_eq!(
        e,
        "/d/web.json: line 2: service.meta: meta key \"ok\" appears twice"
    );

    let e = err(toml(
        "[service]\nname = \"a\"\n\n[service.meta]\nport = 80\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 5: service.meta.port: invalid type: integer `80`, expected a string"
    );
    let e = err(toml(
        "[service]\nname = \"a\"\nmeta = { \"a b\" = \"c\" }\n",
    ));
    assert_eq!(
        e,
        "/d/web.toml: line 3: service.meta.\"a b\": meta key \"a b\" may only have letters, digits, '-' and '_'"
    );
}

#[test]
fn syntax_errors_have_lines() {
    let e = err(toml("[service]\nname = \"a\"\nport = \n"));
    assert!(e.starts_with("/d/web.toml: line 3: "), "{e}");
    let e = err(toml("[service]\nname = \"a\"\n[service]\nname = \"b\"\n"));
    assert!(e.starts_with("/d/web.toml: line 3: "), "{e}");
    let e = err(json("{\"service\": {\n\"name\": \"a\",\n}}"));
    assert_eq!(e, "/d/web.json: line 3: service: trailing comma");
    let e = err(json("{\"service\": {\"name\": \"a\"}}\n{}"));
    assert_eq!(e, "/d/web.json: line 2: trailing characters");
    let e = err(json("[{\"name\": \"a\"}]"));
    assert_eq!(
        e,
        "/d/web.json: line 1: invalid type: sequence, expected a table with `service` or `services`"
    );
}
