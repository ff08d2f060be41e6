//! The DNS interface end to end: real muster agents answering the real
//! `dig` over UDP and TCP, as the catalog and checks change under them.

use std::collections::BTreeSet;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use muster_tests::{Agent, AgentOptions, TempDir};
use serde_json::{json, Value};

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rr {
    name: String,
    ttl: u32,
    rtype: String,
    data: String,
}

/// What dig printed for one query.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
    raw: String,
}

impl Dig {
    fn data(&self) -> BTreeSet<String> {
        self.answer.iter().map(|r| r.data.clone()).collect()
    }

    fn of_type(&self, rtype: &str) -> Vec<&Rr> {
        self.answer.iter().filter(|r| r.rtype == rtype).collect()
    }

    fn has_soa(&self) -> bool {
        self.authority.iter().any(|r| r.rtype == "SOA")
    }
}

/// Runs `dig @agent NAME TYPE extra...` and parses its sections.
fn dig(a: &Agent, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", a.dns.ip()))
        .args(["-p", &a.dns.port().to_string()])
        .args([
            "+time=2",
            "+tries=1",
            "+nocmd",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
        ])
        .args(extra)
        .args([name, rtype])
        .output()
        .expect("running dig (install dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.trim().is_empty() || line.starts_with(';') {
            continue;
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let rr = Rr {
                name: f[0].to_lowercase(),
                ttl: f[1].parse().unwrap_or(u32::MAX),
                rtype: f[3].to_string(),
                data: f[4..].join(" "),
            };
            match section {
                "answer" => d.answer.push(rr),
                "authority" => d.authority.push(rr),
                "additional" => d.additional.push(rr),
                _ => {}
            }
        }
    }
    assert!(
        !d.status.is_empty(),
        "dig got no answer for {name} {rtype}:\n{raw}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn agent_with(dns_toml: &str, dir: &TempDir) -> Agent {
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, format!("[dns]\n{dns_toml}\n")).expect("writing config");
    Agent::start(AgentOptions {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    })
}

fn put_ok(a: &Agent, path: &str, body: Value) {
    let r = a.put(path, &body.to_string());
    assert_eq!(r.status, 200, "PUT {path} {body}: {}", r.text());
}

/// An external node with one service, through the catalog API.
fn catalog_register(a: &Agent, node: &str, address: &str, meta: Value, service: Option<Value>) {
    let mut body = json!({"Node": node, "Address": address, "NodeMeta": meta});
    if let Some(s) = service {
        body["Service"] = s;
    }
    put_ok(a, "/v1/catalog/register", body);
}

#[test]
fn every_name_form_and_record_type() {
    let dir = TempDir::new("dns-forms");
    let a = agent_with(
        "service_ttl = { \"web\" = \"30s\", \"*\" = \"5s\" }\nnode_ttl = \"10s\"",
        &dir,
    );
    let node = a.node.to_lowercase();
    put_ok(
        &a,
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"]}),
    );
    put_ok(
        &a,
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "web-2", "Port": 8081, "Address": "127.0.0.9", "Tags": ["v2"]}),
    );
    catalog_register(
        &a,
        "ext-1",
        "127.0.0.50",
        json!({"rack": "r1"}),
        Some(json!({"Service": "v6svc", "Address": "2001:db8::1", "Port": 9})),
    );

    // A, with the service's own address where it has one, and its TTL.
    let d = dig(&a, "web.service.consul", "A", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flags.contains(&"aa".to_string()), "{:?}", d.flags);
    assert_eq!(d.data(), set(&["127.0.0.1", "127.0.0.9"]));
    assert!(d.answer.iter().all(|r| r.ttl == 30), "{:?}", d.answer);
    assert_eq!(
        dig(&a, "web.service.dc1.consul", "A", &[]).data(),
        set(&["127.0.0.1", "127.0.0.9"])
    );

    // SRV: ports, node or .addr. targets, glue in the additional section.
    let d = dig(&a, "web.service.consul", "SRV", &[]);
    let node_target = format!("{node}.node.dc1.consul.");
    assert_eq!(
        d.data(),
        set(&[
            &format!("1 1 8080 {node_target}"),
            "1 1 8081 7f000009.addr.dc1.consul."
        ])
    );
    let glue: BTreeSet<(String, String)> = d
        .additional
        .iter()
        .map(|r| (r.name.clone(), r.data.clone()))
        .collect();
    assert!(
        glue.contains(&(node_target.clone(), "127.0.0.1".into())),
        "{glue:?}"
    );
    assert!(
        glue.contains(&("7f000009.addr.dc1.consul.".into(), "127.0.0.9".into())),
        "{glue:?}"
    );
    assert_eq!(
        dig(&a, "7f000009.addr.dc1.consul", "A", &[]).data(),
        set(&["127.0.0.9"])
    );

    // Tags, plain and RFC 2782; `_tcp` means any tag.
    assert_eq!(
        dig(&a, "v2.web.service.consul", "A", &[]).data(),
        set(&["127.0.0.9"])
    );
    assert_eq!(
        dig(&a, "_web._v1.service.consul", "SRV", &[]).data(),
        set(&[&format!("1 1 8080 {node_target}")])
    );
    assert_eq!(
        dig(&a, "_web._tcp.service.consul", "SRV", &[]).answer.len(),
        2
    );
    assert_eq!(
        dig(&a, "v3.web.service.consul", "A", &[]).status,
        "NXDOMAIN"
    );

    // Nodes: A with the node TTL, TXT with the node's metadata.
    let d = dig(&a, "ext-1.node.consul", "A", &[]);
    assert_eq!(d.data(), set(&["127.0.0.50"]));
    assert_eq!(d.answer[0].ttl, 10);
    assert_eq!(
        dig(&a, "ext-1.node.dc1.consul", "TXT", &[]).data(),
        set(&["\"rack=r1\""])
    );
    assert_eq!(
        dig(&a, &format!("{node}.node.consul"), "A", &[]).data(),
        set(&["127.0.0.1"])
    );

    // AAAA, and NOERROR-empty with the SOA for a type the name lacks.
    let d = dig(&a, "v6svc.service.consul", "AAAA", &[]);
    assert_eq!(d.data(), set(&["2001:db8::1"]));
    assert_eq!(d.answer[0].ttl, 5, "the \"*\" service TTL");
    let d = dig(&a, "v6svc.service.consul", "A", &[]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty() && d.has_soa(), "{}", d.raw);

    // Names that do not exist: NXDOMAIN with the SOA.
    for name in [
        "nope.service.consul",
        "web.service.dc2.consul",
        "nobody.node.consul",
        "what.consul",
    ] {
        let d = dig(&a, name, "A", &[]);
        assert_eq!(d.status, "NXDOMAIN", "{name}: {}", d.raw);
        assert!(d.has_soa(), "{name}: {}", d.raw);
    }
    // Outside the domain: refused, no recursion.
    let d = dig(&a, "example.com", "A", &[]);
    assert_eq!(d.status, "REFUSED");
    assert!(!d.flags.contains(&"ra".to_string()));

    // Case does not matter, and the answer keeps the asker's case.
    let d = dig(&a, "WeB.SeRvIcE.CoNsUl", "A", &[]);
    assert_eq!(d.data(), set(&["127.0.0.1", "127.0.0.9"]));
    assert!(d.raw.contains("WeB.SeRvIcE.CoNsUl."), "{}", d.raw);
    assert_eq!(
        dig(&a, "EXT-1.NODE.CONSUL", "A", &[]).data(),
        set(&["127.0.0.50"])
    );

    // The zone apex.
    let d = dig(&a, "consul", "SOA", &[]);
    assert_eq!(d.of_type("SOA").len(), 1, "{}", d.raw);
    assert_eq!(dig(&a, "consul", "NS", &[]).data(), set(&[&node_target]));

    // A catalog change is visible to the very next query.
    for i in 0..5 {
        let name = format!("fresh{i}");
        put_ok(
            &a,
            "/v1/agent/service/register",
            json!({"Name": name, "Port": 1000 + i}),
        );
        let d = dig(&a, &format!("{name}.service.consul"), "SRV", &[]);
        assert_eq!(d.answer.len(), 1, "right after registering: {}", d.raw);
        a.put(&format!("/v1/agent/service/deregister/{name}"), "")
            .expect(200);
        assert_eq!(
            dig(&a, &format!("{name}.service.consul"), "SRV", &[]).status,
            "NXDOMAIN"
        );
    }
}

fn ttl_service(a: &Agent, id: &str, port: u16) {
    put_ok(
        a,
        "/v1/agent/service/register",
        json!({"Name": "api", "ID": id, "Port": port, "Check": {"TTL": "60s", "Status": "passing"}}),
    );
}

fn set_check(a: &Agent, check: &str, verb: &str) {
    a.put(&format!("/v1/agent/check/{verb}/{check}"), "")
        .expect(200);
}

fn srv_ports(a: &Agent, name: &str) -> BTreeSet<String> {
    dig(a, name, "SRV", &[])
        .answer
        .iter()
        .filter_map(|r| r.data.split_whitespace().nth(2).map(String::from))
        .collect()
}

#[test]
fn health_decides_who_is_answered() {
    let dir = TempDir::new("dns-health");
    let a = agent_with("", &dir);
    let strict = agent_with("only_passing = true", &TempDir::new("dns-health-strict"));
    for agent in [&a, &strict] {
        ttl_service(agent, "api-1", 1);
        ttl_service(agent, "api-2", 2);
        ttl_service(agent, "api-3", 3);
        assert_eq!(
            srv_ports(agent, "api.service.consul"),
            set(&["1", "2", "3"])
        );
        set_check(agent, "service:api-2", "warn");
        set_check(agent, "service:api-3", "fail");
    }
    assert_eq!(
        srv_ports(&a, "api.service.consul"),
        set(&["1", "2"]),
        "warning stays, critical goes"
    );
    assert_eq!(
        srv_ports(&strict, "api.service.consul"),
        set(&["1"]),
        "only_passing drops warning too"
    );

    // A critical node-level check takes every instance on the node out.
    put_ok(
        &a,
        "/v1/agent/check/register",
        json!({"Name": "node-alive", "TTL": "60s", "Status": "passing"}),
    );
    assert_eq!(srv_ports(&a, "api.service.consul"), set(&["1", "2"]));
    set_check(&a, "node-alive", "fail");
    let d = dig(&a, "api.service.consul", "SRV", &[]);
    assert_eq!(d.status, "NXDOMAIN", "no healthy instance left: {}", d.raw);
    assert!(d.has_soa());
    set_check(&a, "node-alive", "pass");
    set_check(&a, "service:api-3", "pass");
    assert_eq!(
        srv_ports(&a, "api.service.consul"),
        set(&["1", "2", "3"]),
        "back as checks pass"
    );
}

#[test]
fn udp_truncation_and_tcp_retry_with_200_instances() {
    let dir = TempDir::new("dns-trunc");
    let all = agent_with("max_udp_answers = 0", &dir);
    let default = agent_with("", &TempDir::new("dns-trunc-default"));
    for a in [&all, &default] {
        for i in 0..200u32 {
            // Addresses are data here: nothing is sent to them.
            catalog_register(
                a,
                &format!("host-{i}"),
                &format!("127.1.{}.{}", i / 200, i % 200 + 1),
                json!({}),
                Some(json!({"Service": "big", "ID": format!("big-{i}"), "Port": 7000 + i})),
            );
        }
    }

    // As many as fit in 512 bytes without EDNS, with TC; more with EDNS.
    let plain = dig(&all, "big.service.consul", "A", &["+ignore", "+noedns"]);
    assert!(plain.flags.contains(&"tc".to_string()), "{}", plain.raw);
    assert!(
        plain.answer.len() > 5 && plain.answer.len() < 200,
        "{}",
        plain.answer.len()
    );
    let edns = dig(
        &all,
        "big.service.consul",
        "A",
        &["+ignore", "+bufsize=1232"],
    );
    assert!(edns.flags.contains(&"tc".to_string()));
    assert!(
        edns.answer.len() > plain.answer.len(),
        "{} vs {}",
        edns.answer.len(),
        plain.answer.len()
    );

    // dig retries over TCP on TC and gets every instance.
    let full = dig(&all, "big.service.consul", "A", &[]);
    assert!(
        full.raw.contains("Truncated, retrying in TCP mode"),
        "{}",
        full.raw
    );
    assert_eq!(full.answer.len(), 200);
    assert!(!full.flags.contains(&"tc".to_string()));
    let srv = dig(&all, "big.service.consul", "SRV", &["+tcp"]);
    assert_eq!(srv.answer.len(), 200);
    assert_eq!(
        srv.additional.iter().filter(|r| r.rtype == "A").count(),
        200
    );

    // The default (Consul's udp_answer_limit): three random instances.
    let d = dig(&default, "big.service.consul", "A", &[]);
    assert_eq!(d.answer.len(), 3, "{}", d.raw);
    assert!(!d.flags.contains(&"tc".to_string()));
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.extend(dig(&default, "big.service.consul", "A", &[]).data());
    }
    assert!(seen.len() > 6, "answers are shuffled per query: {seen:?}");
    assert_eq!(
        dig(&default, "big.service.consul", "A", &["+tcp"])
            .answer
            .len(),
        200,
        "TCP has no limit"
    );
}

#[test]
fn malformed_packets_are_dropped_or_formerr_and_the_server_lives_on() {
    let a = Agent::dev();
    put_ok(
        &a,
        "/v1/agent/service/register",
        json!({"Name": "web", "Port": 80}),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let header = |id: u16, flags: u16, qd: u16| {
        let mut h = Vec::new();
        for v in [id, flags, qd, 0, 0, 0] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h
    };
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 5],
        header(1, 0x0100, 1), // a question that is not there
        [header(2, 0x0100, 1), vec![0xc0, 0x0c, 0, 1, 0, 1]].concat(), // pointer to itself
        [header(3, 0x0100, 1), vec![63], vec![b'a'; 10]].concat(), // label runs off the end
        [
            header(4, 0x8100, 1),
            b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01".to_vec(),
        ]
        .concat(), // a response
        [header(5, 0x0100, 40000)].concat(),
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for n in 0..200 {
        let len = 12 + n % 60;
        packets.push(
            (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect(),
        );
    }
    for p in &packets {
        sock.send_to(p, a.dns).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            // Whatever comes back is a well-formed response header.
            assert!(n >= 12, "a {n}-byte reply to {p:?}");
            assert!(buf[2] & 0x80 != 0, "the QR bit is set");
        }
    }
    // TCP: a length that promises more than is sent, then garbage.
    let mut t = TcpStream::connect(a.dns).unwrap();
    use std::io::Write;
    let _ = t.write_all(&[0x01, 0x00, 1, 2, 3]);
    drop(t);
    let mut t = TcpStream::connect(a.dns).unwrap();
    let _ = t.write_all(&[0x00, 0x03, 0xde, 0xad, 0xbe]);
    drop(t);

    let d = dig(&a, "web.service.consul", "A", &[]);
    assert_eq!(
        d.data(),
        set(&["127.0.0.1"]),
        "still answering after the garbage"
    );
    let d = dig(&a, "web.service.consul", "A", &["+tcp"]);
    assert_eq!(d.data(), set(&["127.0.0.1"]));
}
