//! The `health-check` world: bindings, linking, and one call with every
//! limit applied. Whatever the plugin does, the caller gets a verdict: a
//! plugin that traps, hangs, eats memory or floods its output becomes a
//! critical result whose output says which, and the node carries on.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::call::{describe_failure, timed_out};
use super::grant::AllowList;
use super::host_state::HostState;
use super::registry::{Linked, Plugin, PluginRegistry};
use crate::catalog::types::CheckStatus;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "health-check",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

use self::muster::plugin::types::{CheckStatus as WitStatus, Target as WitTarget};

/// Longest output a check keeps, as the WIT promises.
pub const OUTPUT_LIMIT: usize = 4096;
/// Extra time a plugin gets past its check's timeout to report a timeout
/// in its own words before the node stops it.
pub const GRACE: Duration = Duration::from_millis(500);

/// Links everything a health check may import: WASI (with the sandbox
/// `HostState` builds), wasi:http, and muster's log.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    self::muster::plugin::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    self::muster::plugin::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

impl self::muster::plugin::types::Host for HostState {}

impl self::muster::plugin::log::Host for HostState {
    async fn log(&mut self, level: self::muster::plugin::log::Level, message: String) {
        use self::muster::plugin::log::Level;
        let level = match level {
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        HostState::log(self, level, &message);
    }
}

/// What a check examines (the host side of the WIT `target`).
#[derive(Debug, Clone, Default)]
pub struct CheckTarget {
    pub service_id: String,
    pub service_name: String,
    pub address: String,
    pub port: u16,
    pub endpoint: String,
    pub timeout: Duration,
    /// HTTPS without certificate verification (Consul's `TLSSkipVerify`).
    pub tls_skip_verify: bool,
}

/// A check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: CheckStatus,
    pub output: String,
    /// Set when the plugin misbehaved (not when it reported critical).
    pub fault: Option<String>,
}

impl PluginRegistry {
    /// Runs one check call of `plugin` in a fresh instance, with its memory
    /// cap, fuel, and a deadline of `target.timeout` (+ grace), allowed to
    /// reach only `allow`.
    pub async fn run_check(
        &self,
        plugin: &Plugin,
        target: &CheckTarget,
        config: &str,
        allow: AllowList,
    ) -> Verdict {
        let Linked::HealthCheck(pre) = &plugin.linked else {
            return fault_verdict(
                plugin,
                format!("{} is not a health-check plugin", plugin.name),
            );
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return fault_verdict(plugin, "the plugin runtime is shutting down".into());
        };
        let limit = target.timeout + GRACE;
        let state = HostState::new(
            plugin.name.as_str().into(),
            Arc::new(allow),
            plugin.memory_bytes,
            target.tls_skip_verify,
        );
        let refused = state.refused.clone();
        let stderr = state.stderr.clone();
        let mut store = match self.limited_store(plugin, state, limit) {
            Ok(store) => store,
            Err(e) => return fault_verdict(plugin, e),
        };
        let wit_target = WitTarget {
            service_id: target.service_id.clone(),
            service_name: target.service_name.clone(),
            address: target.address.clone(),
            port: target.port,
            endpoint: target.endpoint.clone(),
            timeout_ms: target.timeout.as_millis().min(u32::MAX as u128) as u32,
        };
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .call_check(&mut store, &wit_target, &config.to_string())
                .await
        };
        let outcome = tokio::time::timeout(limit, call).await;
        let refused = refused.lock().map(|r| r.clone()).unwrap_or_default();
        let mut verdict = match outcome {
            Ok(Ok(result)) => Verdict {
                status: match result.status {
                    WitStatus::Passing => CheckStatus::Passing,
                    WitStatus::Warning => CheckStatus::Warning,
                    WitStatus::Critical => CheckStatus::Critical,
                },
                output: truncate(result.output),
                fault: None,
            },
            Ok(Err(e)) => Verdict::fault(describe_failure(&e, plugin, limit, &stderr.contents())),
            Err(_) => Verdict::fault(timed_out(plugin, limit)),
        };
        if !refused.is_empty() {
            verdict.output = truncate(format!(
                "{} [node refused connections to {}: not the check's target or in grant.connect]",
                verdict.output,
                refused.join(", ")
            ));
        }
        plugin.record_call(verdict.fault.as_deref());
        verdict
    }
}

impl Verdict {
    /// Critical because the plugin misbehaved; the output says how.
    fn fault(what: String) -> Verdict {
        Verdict {
            status: CheckStatus::Critical,
            output: what.clone(),
            fault: Some(what),
        }
    }
}

/// A verdict for a call that never reached the plugin; counted as its fault.
fn fault_verdict(plugin: &Plugin, what: String) -> Verdict {
    plugin.record_call(Some(&what));
    Verdict::fault(what)
}

/// Cuts an output to the 4 KiB the catalog keeps, on a character boundary.
pub fn truncate(mut s: String) -> String {
    if s.len() <= OUTPUT_LIMIT {
        return s;
    }
    let total = s.len();
    let mut cut = OUTPUT_LIMIT - 64;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!(" ... (truncated, {total} bytes in all)"));
    s
}
