//! A small catalog with every shape DNS answers differ on, for the fuzz
//! target, the corpus test and the unit tests.

use crate::catalog::command::{CheckSpec, NodeSpec, Registration, ServiceSpec};
use crate::catalog::types::{CheckStatus, Meta, Weights};
use crate::catalog::{Catalog, Command};

fn node(name: &str, address: &str, meta: &[(&str, &str)]) -> NodeSpec {
    NodeSpec {
        id: String::new(),
        name: name.into(),
        address: address.into(),
        datacenter: "dc1".into(),
        tagged_addresses: Meta::new(),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn service(id: &str, name: &str, address: &str, port: u16, tags: &[&str]) -> ServiceSpec {
    ServiceSpec {
        id: id.into(),
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        address: address.into(),
        port,
        meta: Meta::new(),
        enable_tag_override: false,
        weights: Weights {
            passing: 10,
            warning: 1,
        },
    }
}

/// A check registration with no definition (fed from outside).
pub fn check(id: &str, service_id: &str, status: CheckStatus) -> CheckSpec {
    CheckSpec {
        id: id.into(),
        name: id.into(),
        status,
        notes: String::new(),
        output: String::new(),
        service_id: service_id.into(),
        definition: Default::default(),
    }
}

/// Nodes `n1` (meta `rack=r1`), `n2` (node check warning), `n3` (IPv6)
/// and `sick` (node check critical); services `web` (5 instances, one
/// critical, tags v1/v2), `db` (only critical), `api` (a host name
/// address) and `big` (200 instances).
pub fn catalog() -> Catalog {
    let mut cat = Catalog::default();
    let mut index = 0;
    let mut reg = |node: NodeSpec, svc: Option<ServiceSpec>, checks: Vec<CheckSpec>| {
        index += 1;
        cat.apply(
            index,
            0,
            Command::Register(Registration {
                node,
                skip_node_update: false,
                service: svc,
                checks,
            }),
        );
    };
    let n1 = || node("n1", "10.0.0.1", &[("rack", "r1")]);
    let n2 = || node("n2", "10.0.0.2", &[]);
    let n3 = || node("n3", "2001:db8::3", &[]);
    let sick = || node("sick", "10.0.0.4", &[]);
    reg(
        n1(),
        Some(service("web-1", "web", "", 80, &["v1", "Primary"])),
        vec![],
    );
    reg(
        n1(),
        Some(service("web-1b", "web", "10.0.1.1", 81, &["v2"])),
        vec![],
    );
    reg(n2(), Some(service("web-2", "web", "", 80, &["v2"])), vec![]);
    reg(
        n2(),
        None,
        vec![check("serfHealth", "", CheckStatus::Warning)],
    );
    reg(n3(), Some(service("web-3", "web", "", 80, &["v1"])), vec![]);
    reg(
        sick(),
        Some(service("web-4", "web", "", 80, &["v1"])),
        vec![check("serfHealth", "", CheckStatus::Critical)],
    );
    reg(
        n1(),
        Some(service("db-1", "db", "", 5432, &[])),
        vec![check("db-alive", "db-1", CheckStatus::Critical)],
    );
    reg(
        n1(),
        Some(service("api-1", "api", "api.example.com", 443, &[])),
        vec![],
    );
    for i in 0..200u16 {
        let addr = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        let svc = service(&format!("big-{i}"), "big", &addr, 9000 + i, &[]);
        let on = if i % 2 == 0 { n1() } else { n2() };
        reg(
            on,
            Some(svc),
            vec![check(
                &format!("big-{i}"),
                &format!("big-{i}"),
                CheckStatus::Passing,
            )],
        );
    }
    cat
}
