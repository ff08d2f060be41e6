//! From what a source plugin wants to what the agent registers: every
//! registration is validated exactly like one sent to
//! `/v1/agent/service/register`, and marked with the source and origin
//! that own it, so that a restarted node knows what it registered before.

use std::time::Duration;

use crate::api::agent::{validate_meta, CheckDef, SourceTimings};
use crate::catalog::command::{CheckSpec, ServiceSpec};
use crate::catalog::types::{CheckStatus, Service, Weights};
use crate::plugins::source::{Registration, WitCheckStatus};
use crate::plugins::PluginRegistry;

/// Service meta key naming the source that registered a service.
pub const SOURCE_META: &str = "muster-source";
/// Service meta key naming the origin (file, container) it came from.
pub const ORIGIN_META: &str = "muster-origin";

/// One service a source wants, ready for the agent.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub service: ServiceSpec,
    pub checks: Vec<CheckSpec>,
}

/// Validates one registration of source `source`. `node_address` fills
/// `{address}` in check endpoints when the service has no address of its
/// own. The error names the service and the field.
pub fn wanted(
    source: &str,
    reg: Registration,
    node_address: &str,
    plugins: &PluginRegistry,
) -> Result<Wanted, String> {
    if reg.id.is_empty() {
        return Err(format!(
            "a registration of \"{}\" has an empty id",
            reg.name
        ));
    }
    let id = reg.id;
    let field = |f: &str| format!("service \"{id}\": {f}");
    if reg.name.is_empty() {
        return Err(field("name is empty"));
    }
    let mut meta: crate::catalog::types::Meta = reg
        .meta
        .into_iter()
        .map(|p| (p.key, p.value))
        .filter(|(k, _)| k != SOURCE_META && k != ORIGIN_META)
        .collect();
    meta.insert(SOURCE_META.into(), source.to_string());
    meta.insert(ORIGIN_META.into(), truncate_origin(&reg.origin));
    validate_meta(&field("meta"), &meta).map_err(|e| e.message)?;
    let address = if reg.address.is_empty() {
        node_address
    } else {
        reg.address.as_str()
    };
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let many = reg.checks.len() > 1;
    let mut checks = Vec::with_capacity(reg.checks.len());
    for (n, c) in reg.checks.into_iter().enumerate() {
        let endpoint = c
            .endpoint
            .replace("{address}", &host)
            .replace("{port}", &reg.port.to_string());
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let timings = SourceTimings {
            interval: ms(c.interval_ms),
            timeout: ms(c.timeout_ms),
            ttl: ms(c.ttl_ms),
            deregister_after: ms(c.deregister_critical_after_ms),
        };
        let status = c.initial_status.map(|s| match s {
            WitCheckStatus::Passing => CheckStatus::Passing,
            WitCheckStatus::Warning => CheckStatus::Warning,
            WitCheckStatus::Critical => CheckStatus::Critical,
        });
        let default_id = if many {
            format!("service:{id}:{}", n + 1)
        } else {
            format!("service:{id}")
        };
        let spec = CheckDef::from_source(&c.kind, endpoint, timings, status)
            .into_spec(
                &field(&format!("checks[{n}]")),
                default_id,
                format!("Service '{}' check", reg.name),
                &id,
                plugins,
            )
            .map_err(|e| e.message)?;
        checks.push(spec);
    }
    Ok(Wanted {
        service: ServiceSpec {
            id,
            name: reg.name,
            tags: reg.tags,
            address: reg.address,
            port: reg.port,
            meta,
            enable_tag_override: false,
            weights: Weights::default(),
        },
        checks,
    })
}

/// Meta values are capped at 512 characters; an origin is a path or a
/// container ID, so this only bites on absurd paths, which still compare
/// equal to themselves after the cut.
pub fn truncate_origin(origin: &str) -> String {
    let mut cut = origin.len().min(512);
    while !origin.is_char_boundary(cut) {
        cut -= 1;
    }
    origin[..cut].to_string()
}

/// Whether the catalog's service already is what `want` describes.
pub fn same_service(have: &Service, want: &ServiceSpec) -> bool {
    have.name == want.name
        && have.tags == want.tags
        && have.address == want.address
        && have.port == want.port
        && have.meta == want.meta
        && have.weights == want.weights
        && have.enable_tag_override == want.enable_tag_override
}
