//! `builtin:docker-source`: registers Docker containers as services the way
//! Registrator does. On every container event the node calls `reconcile` in
//! a fresh instance; the plugin lists the containers through the `docker`
//! import and answers with the complete desired set.
//!
//! This file is only the glue between the WIT types and the plain structs
//! of [`mapping`], which holds the logic and its tests.
//!
//! Config (JSON, the node's TOML `config` table): `ip`, `internal`,
//! `explicit`, `tags`, `deregister` ("always" | "on-success"), `hostname`;
//! `resync` and `cleanup` are the node's. See [`mapping::Settings`].

wit_bindgen::generate!({
    path: "../../wit",
    world: "source",
    generate_all,
});

mod mapping;

use muster::plugin::docker;
use muster::plugin::log::{log, Level};
// `Desired` comes into scope from the world itself (`use types.{desired}`).
use muster::plugin::types::{CheckDefinition, CheckStatus, Pair, Problem, Registration};

struct DockerSource;

impl Guest for DockerSource {
    fn reconcile(config: String) -> Result<Desired, String> {
        // Config first: a typo in the TOML should be reported as such even
        // while the Docker engine is unreachable.
        let settings = mapping::Settings::parse(&config)?;
        // An unreachable engine is an error, not an empty set: the node then
        // keeps everything it registered.
        let containers: Vec<mapping::Container> = docker::list_containers()?
            .into_iter()
            .map(from_wit_container)
            .collect();
        let hostname = match &settings.hostname {
            Some(h) => h.clone(),
            None => docker::host_name(),
        };
        let wanted = mapping::desired(&settings, &hostname, &containers);
        log(
            Level::Debug,
            &format!(
                "docker-source: {} containers seen, {} services wanted, {} problems",
                containers.len(),
                wanted.services.len(),
                wanted.problems.len()
            ),
        );
        Ok(to_wit_desired(wanted))
    }
}

fn pairs_from_wit(pairs: Vec<Pair>) -> Vec<(String, String)> {
    pairs.into_iter().map(|p| (p.key, p.value)).collect()
}

fn from_wit_container(c: docker::Container) -> mapping::Container {
    mapping::Container {
        id: c.id,
        name: c.name,
        image: c.image,
        ip: c.ip,
        running: c.running,
        paused: c.paused,
        exit_code: c.exit_code,
        env: pairs_from_wit(c.env),
        labels: pairs_from_wit(c.labels),
        ports: c
            .ports
            .into_iter()
            .map(|p| mapping::Port {
                private_port: p.private_port,
                public_port: p.public_port,
                protocol: p.protocol,
                host_ip: p.host_ip,
            })
            .collect(),
    }
}

fn to_wit_status(s: mapping::Status) -> CheckStatus {
    match s {
        mapping::Status::Passing => CheckStatus::Passing,
        mapping::Status::Warning => CheckStatus::Warning,
        mapping::Status::Critical => CheckStatus::Critical,
    }
}

fn to_wit_check(c: mapping::Check) -> CheckDefinition {
    CheckDefinition {
        kind: c.kind,
        endpoint: c.endpoint,
        interval_ms: c.interval_ms,
        timeout_ms: c.timeout_ms,
        ttl_ms: c.ttl_ms,
        deregister_critical_after_ms: c.deregister_critical_after_ms,
        initial_status: c.initial_status.map(to_wit_status),
    }
}

fn to_wit_desired(d: mapping::Desired) -> Desired {
    Desired {
        registrations: d
            .services
            .into_iter()
            .map(|s| Registration {
                id: s.id,
                origin: s.origin,
                name: s.name,
                tags: s.tags,
                address: s.address,
                port: s.port,
                meta: s
                    .meta
                    .into_iter()
                    .map(|(key, value)| Pair { key, value })
                    .collect(),
                checks: s.checks.into_iter().map(to_wit_check).collect(),
            })
            .collect(),
        problems: d
            .problems
            .into_iter()
            .map(|p| Problem {
                origin: p.origin,
                message: p.message,
            })
            .collect(),
    }
}

export!(DockerSource);
