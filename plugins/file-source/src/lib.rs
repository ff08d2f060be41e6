//! `builtin:file-source`: services (with their checks) from TOML or JSON
//! definition files in a directory, in Consul's service definition shape.
//!
//! Config (JSON): `{"dir": "/etc/muster/services.d"}` (the default); the
//! node's own `resync` and `cleanup` keys are accepted and ignored. The
//! node preopens the directory read-only and calls `reconcile` when a file
//! in it changes; every call reads every `.toml` and `.json` file and
//! returns the complete set. A broken file is a `problem` naming its line
//! and field, and the node keeps what that file registered before.
//!
//! This file is only the glue to the WIT; the work is in plain Rust in the
//! other modules, tested on the host.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "source",
    generate_all,
});

pub mod config;
pub mod definitions;
pub mod duration;
pub mod scan;

use muster::plugin::log::{log, Level};
use muster::plugin::types::{CheckDefinition, CheckStatus, Pair, Problem, Registration};

struct FileSource;

impl Guest for FileSource {
    fn reconcile(config: String) -> Result<Desired, String> {
        let config = config::Config::parse(&config)?;
        let outcome = scan::scan(&config.dir)?;
        log(
            Level::Debug,
            &format!(
                "{}: {} files read, {} services, {} problems",
                config.dir,
                outcome.files,
                outcome.registrations.len(),
                outcome.problems.len()
            ),
        );
        Ok(Desired {
            registrations: outcome
                .registrations
                .into_iter()
                .map(registration)
                .collect(),
            problems: outcome
                .problems
                .into_iter()
                .map(|p| Problem {
                    origin: p.origin,
                    message: p.message,
                })
                .collect(),
        })
    }
}

fn registration(r: scan::Registered) -> Registration {
    let s = r.service;
    Registration {
        id: s.id,
        origin: r.origin,
        name: s.name,
        tags: s.tags,
        address: s.address,
        port: s.port,
        meta: s
            .meta
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect(),
        checks: s.checks.into_iter().map(check).collect(),
    }
}

fn check(c: definitions::Check) -> CheckDefinition {
    CheckDefinition {
        kind: c.kind,
        endpoint: c.endpoint,
        interval_ms: c.interval_ms,
        timeout_ms: c.timeout_ms,
        ttl_ms: c.ttl_ms,
        deregister_critical_after_ms: c.deregister_critical_after_ms,
        initial_status: c.initial_status.map(|s| match s {
            definitions::Status::Passing => CheckStatus::Passing,
            definitions::Status::Warning => CheckStatus::Warning,
            definitions::Status::Critical => CheckStatus::Critical,
        }),
    }
}

export!(FileSource);
