//! The `health-check` world: bindings, linking, and one call with every
//! limit applied. Whatever the plugin does, the caller gets a verdict: a
//! plugin that traps, hangs, eats memory or floods its output becomes a
//! critical result whose output says which, and the node carries on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, UpdateDeadline};

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

/// Raised by the epoch callback when a call overruns its deadline.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

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
        #[allow(irrefutable_let_patterns)]
        let Linked::HealthCheck(pre) = &plugin.linked
        else {
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
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // With metering on, every Store needs fuel: a plugin without a
        // budget gets an unlimited one.
        if self.meters_fuel() {
            if let Err(e) = store.set_fuel(plugin.fuel()) {
                return fault_verdict(plugin, format!("setting fuel: {e}"));
            }
        }
        let deadline = Instant::now() + limit;
        // Every epoch tick, a running plugin yields to the scheduler (so a
        // spinning plugin never holds a worker thread), and past its
        // deadline it is stopped.
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
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

/// The one wording of a deadline, whichever mechanism noticed it (the
/// epoch callback, an epoch interrupt, or the host-side timeout).
fn timed_out(plugin: &Plugin, limit: Duration) -> String {
    format!(
        "plugin {} timed out after {} and was stopped",
        plugin.name,
        crate::api::format_duration(limit)
    )
}

/// Says in one line what stopped a plugin.
fn describe_failure(
    e: &wasmtime::Error,
    plugin: &Plugin,
    limit: Duration,
    stderr: &[u8],
) -> String {
    let name = &plugin.name;
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return timed_out(plugin, limit);
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::OutOfFuel => {
                return format!(
                    "plugin {name} ran out of fuel ({} units) and was stopped",
                    plugin.fuel()
                )
            }
            wasmtime::Trap::Interrupt => return timed_out(plugin, limit),
            _ => {}
        }
    }
    let text = format!("{e:#}");
    if text.contains("growing memory") || text.contains("memory limit") {
        return format!(
            "plugin {name} exceeded its memory limit of {} MiB and was stopped",
            plugin.memory_bytes >> 20
        );
    }
    // A Rust guest prints its panic to stderr before trapping: the
    // message says more than the trap code.
    let stderr = String::from_utf8_lossy(stderr);
    let mut lines = stderr.lines();
    let panic = lines
        .by_ref()
        .find(|l| l.contains("panicked"))
        .map(|at| {
            let message = lines.next().unwrap_or("").trim();
            format!(" ({} {message})", at.trim().trim_end_matches(':'))
        })
        .unwrap_or_default();
    let what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.contains("wasm backtrace"))
            .unwrap_or("unknown error")
            .trim()
            .to_string(),
    };
    truncate(format!("plugin {name} trapped: {what}{panic}"))
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
