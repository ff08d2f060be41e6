//! The request path on a fixed catalog: hickory's decoder, the handler and
//! the encoder, without sockets. End-to-end tests with `dig` live in
//! `tests/tests/dns.rs`.

use std::collections::BTreeSet;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};

use super::{fixture, handler_for, respond, Protocol};
use crate::config::DnsSettings;

fn ask(
    settings: DnsSettings,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
    protocol: Protocol,
) -> Message {
    let handler = handler_for(fixture::catalog(), settings).unwrap();
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    let bytes = m.to_vec().unwrap();
    let out = futures::executor::block_on(respond(&handler, &bytes, protocol)).expect("a response");
    Message::from_vec(&out).expect("the response decodes")
}

fn udp(name: &str, qtype: RecordType) -> Message {
    ask(DnsSettings::default(), name, qtype, None, Protocol::Udp)
}

fn ips(m: &Message) -> BTreeSet<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn unlimited() -> DnsSettings {
    DnsSettings {
        max_udp_answers: 0,
        ..Default::default()
    }
}

#[test]
fn healthy_instances_only_and_warning_unless_only_passing() {
    let m = ask(
        unlimited(),
        "web.service.consul.",
        RecordType::A,
        None,
        Protocol::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    // web-4 sits on a node whose node-level check is critical.
    let want: BTreeSet<String> = ["10.0.0.1", "10.0.1.1", "10.0.0.2"]
        .map(String::from)
        .into();
    assert_eq!(ips(&m), want);

    let only = DnsSettings {
        only_passing: true,
        ..unlimited()
    };
    let m = ask(
        only,
        "web.service.consul.",
        RecordType::A,
        None,
        Protocol::Udp,
    );
    let want: BTreeSet<String> = ["10.0.0.1", "10.0.1.1"].map(String::from).into();
    assert_eq!(ips(&m), want, "n2's warning check drops web-2");
}

#[test]
fn no_healthy_instance_is_nxdomain_with_soa() {
    for name in [
        "db.service.consul.",
        "nope.service.consul.",
        "x.nonsense.consul.",
        "web.service.dc9.consul.",
    ] {
        let m = udp(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty());
        assert!(
            matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
            "{name}: {:?}",
            m.authorities
        );
    }
}

#[test]
fn wrong_type_is_noerror_empty_with_soa() {
    let m = udp("web-1b.service.consul.", RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "service web-1b does not exist"
    );
    let m = udp("n1.node.consul.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
}

#[test]
fn outside_the_domain_is_refused() {
    let m = udp("example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.authorities.is_empty());
}

#[test]
fn srv_targets_and_glue() {
    let m = ask(
        unlimited(),
        "_web._v2.service.consul.",
        RecordType::SRV,
        Some(4096),
        Protocol::Udp,
    );
    let mut targets: Vec<(u16, u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.weight, s.port, s.target.to_string())),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            (1, 80, "n2.node.dc1.consul.".to_string()),
            (10, 81, "0a000101.addr.dc1.consul.".to_string()),
        ],
        "warning instances get the warning weight; a service address gets an .addr. target"
    );
    let glue: BTreeSet<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert!(glue.contains("n2.node.dc1.consul. 10.0.0.2"), "{glue:?}");
    assert!(
        glue.contains("0a000101.addr.dc1.consul. 10.0.1.1"),
        "{glue:?}"
    );
}

#[test]
fn node_lookups_with_meta_txt() {
    let m = udp("N1.Node.DC1.Consul.", RecordType::ANY);
    let texts: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    assert!(texts.contains(&"10.0.0.1".to_string()), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("rack=r1")), "{texts:?}");
    let m = udp("n3.node.consul.", RecordType::AAAA);
    assert_eq!(ips(&m), ["2001:db8::3".to_string()].into());
    let off = DnsSettings {
        node_meta_txt: false,
        ..Default::default()
    };
    let m = ask(off, "n1.node.consul.", RecordType::TXT, None, Protocol::Udp);
    assert!(m.answers.is_empty());
}

#[test]
fn host_name_addresses_are_cnames() {
    let m = udp("api.service.consul.", RecordType::A);
    assert!(
        matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_string() == "api.example.com."),
        "{:?}",
        m.answers
    );
}

#[test]
fn udp_is_limited_and_truncated_tcp_is_complete() {
    // Default: three answers, no TC (Consul's udp_answer_limit).
    let m = udp("big.service.consul.", RecordType::A);
    assert_eq!(m.answers.len(), 3);
    assert!(!m.metadata.truncation);
    let tc = DnsSettings {
        enable_truncate: true,
        ..Default::default()
    };
    let m = ask(
        tc,
        "big.service.consul.",
        RecordType::A,
        None,
        Protocol::Udp,
    );
    assert_eq!(m.answers.len(), 3);
    assert!(
        m.metadata.truncation,
        "enable_truncate flags the trimmed answer"
    );

    // No limit: what fits in 512 bytes, with TC; more with EDNS; all over TCP.
    let m = ask(
        unlimited(),
        "big.service.consul.",
        RecordType::A,
        None,
        Protocol::Udp,
    );
    assert!(m.metadata.truncation);
    assert!(
        m.answers.len() < 200 && m.answers.len() > 10,
        "{}",
        m.answers.len()
    );
    let small = m.answers.len();
    let m = ask(
        unlimited(),
        "big.service.consul.",
        RecordType::A,
        Some(1232),
        Protocol::Udp,
    );
    assert!(m.metadata.truncation);
    assert!(m.answers.len() > small);
    let m = ask(
        unlimited(),
        "big.service.consul.",
        RecordType::SRV,
        None,
        Protocol::Tcp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);
    assert_eq!(m.additionals.len(), 200);
}

#[test]
fn glue_that_does_not_fit_is_dropped_without_tc() {
    // 20 SRV answers fit in 1232 bytes, their 20 glue records do not all.
    let s = DnsSettings {
        max_udp_answers: 20,
        ..Default::default()
    };
    let m = ask(
        s,
        "big.service.consul.",
        RecordType::SRV,
        Some(1232),
        Protocol::Udp,
    );
    assert_eq!(m.answers.len(), 20);
    assert!(!m.metadata.truncation, "complete answers, trimmed glue");
    assert!(m.additionals.len() < 20);
}

#[test]
fn odd_requests_get_the_right_error() {
    let handler = handler_for(fixture::catalog(), DnsSettings::default()).unwrap();
    let run = |m: &Message| {
        let out =
            futures::executor::block_on(respond(&handler, &m.to_vec().unwrap(), Protocol::Udp))
                .unwrap();
        Message::from_vec(&out).unwrap().metadata.response_code
    };
    let mut two = Message::new(1, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("a.service.consul.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("b.service.consul.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(run(&two), ResponseCode::FormErr);
    let mut notify = Message::new(2, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(
        Name::from_ascii("consul.").unwrap(),
        RecordType::SOA,
    ));
    assert_eq!(run(&notify), ResponseCode::NotImp);
    let mut v1 = Message::new(3, MessageType::Query, OpCode::Query);
    v1.add_query(Query::query(
        Name::from_ascii("web.service.consul.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    v1.set_edns(e);
    // BADVERS and BADSIG share code 16; the decoder names it BADSIG.
    assert_eq!(u16::from(run(&v1)), 16);
}

#[test]
fn edns_answers_carry_opt_with_the_size_used() {
    let m = ask(
        DnsSettings::default(),
        "web.service.consul.",
        RecordType::A,
        Some(1232),
        Protocol::Udp,
    );
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let m = ask(
        DnsSettings::default(),
        "web.service.consul.",
        RecordType::A,
        Some(65000),
        Protocol::Udp,
    );
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(super::MAX_UDP_PAYLOAD)
    );
}

#[test]
fn apex_has_soa_and_ns() {
    let m = udp("consul.", RecordType::SOA);
    assert!(matches!(&m.answers[0].data, RData::SOA(s) if s.serial > 0));
    let m = udp("consul.", RecordType::NS);
    assert!(
        matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_string() == "muster-1.node.dc1.consul.")
    );
}

/// The fuzz target's checked-in corpus, replayed through the same path as
/// `fuzz/fuzz_targets/dns_request.rs`: no input may panic, and every
/// answer that comes back must decode.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dns_request");
    let settings = DnsSettings {
        max_udp_answers: 0,
        ..Default::default()
    };
    let handler = handler_for(fixture::catalog(), settings).unwrap();
    let mut inputs = 0;
    let mut answered = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        inputs += 1;
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            if let Some(out) = futures::executor::block_on(respond(&handler, &bytes, protocol)) {
                answered += 1;
                let m = Message::from_vec(&out)
                    .unwrap_or_else(|e| panic!("undecodable answer to {bytes:?}: {e}"));
                assert_eq!(
                    m.metadata.message_type,
                    MessageType::Response,
                    "answer {m:?} to {:?} = {bytes:?}",
                    Message::from_vec(&bytes)
                );
                if protocol == Protocol::Udp {
                    // What the request allowed (the response's OPT may be
                    // what was cut to make room).
                    let asked = Message::from_vec(&bytes)
                        .ok()
                        .and_then(|q| q.edns.map(|e| e.max_payload()));
                    let limit =
                        asked.map_or(512, |p| p.clamp(512, super::MAX_UDP_PAYLOAD) as usize);
                    assert!(
                        out.len() <= limit.max(512),
                        "{} bytes over UDP for {:?}: {:?}",
                        out.len(),
                        Message::from_vec(&bytes),
                        m
                    );
                }
            }
        }
    }
    assert!(inputs >= 100, "the corpus has only {inputs} inputs");
    // Many fuzz inputs do not decode (they explore the decoder); the
    // hand-written seeds all do, over UDP and TCP.
    assert!(
        answered >= 200,
        "only {answered} answers for {inputs} inputs"
    );
}
