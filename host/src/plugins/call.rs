//! What every plugin call shares, whatever its world: a Store with the
//! plugin's memory cap, fuel and deadline, and one wording for whatever
//! stopped it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::health_check::truncate;
use super::host_state::HostState;
use super::registry::{Plugin, PluginRegistry};

/// Raised by the epoch callback when a call overruns its deadline.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// When the current call of a Store must stop. Shared with the Store's
/// epoch callback, so a long-lived instance (an exporter) gets a fresh
/// deadline per call.
#[derive(Clone)]
pub(crate) struct CallDeadline(Arc<Mutex<Instant>>);

impl CallDeadline {
    pub(crate) fn new(limit: Duration) -> CallDeadline {
        CallDeadline(Arc::new(Mutex::new(Instant::now() + limit)))
    }

    /// Starts a call that may run for `limit`.
    pub(crate) fn reset(&self, limit: Duration) {
        if let Ok(mut at) = self.0.lock() {
            *at = Instant::now() + limit;
        }
    }

    fn passed(&self) -> bool {
        self.0.lock().map_or(true, |at| Instant::now() >= *at)
    }
}

impl PluginRegistry {
    /// A Store for one call of `plugin`, stopped `limit` from now.
    pub(crate) fn limited_store(
        &self,
        plugin: &Plugin,
        state: HostState,
        limit: Duration,
    ) -> Result<Store<HostState>, String> {
        self.store_with_deadline(plugin, state, CallDeadline::new(limit))
    }

    /// A Store whose calls stop at `deadline` (reset it before each call).
    pub(crate) fn store_with_deadline(
        &self,
        plugin: &Plugin,
        state: HostState,
        deadline: CallDeadline,
    ) -> Result<Store<HostState>, String> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // With metering on, every Store needs fuel: a plugin without a
        // budget gets an unlimited one.
        if self.meters_fuel() {
            store
                .set_fuel(plugin.fuel())
                .map_err(|e| format!("setting fuel: {e}"))?;
        }
        // Every epoch tick, a running plugin yields to the scheduler (so a
        // spinning plugin never holds a worker thread), and past its
        // deadline it is stopped.
        store.epoch_deadline_callback(move |_| {
            if deadline.passed() {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }
}

/// The one wording of a deadline, whichever mechanism noticed it (the
/// epoch callback, an epoch interrupt, or the host-side timeout).
pub(crate) fn timed_out(plugin: &Plugin, limit: Duration) -> String {
    format!(
        "plugin {} timed out after {} and was stopped",
        plugin.name,
        crate::api::format_duration(limit)
    )
}

/// Says in one line what stopped a plugin.
pub(crate) fn describe_failure(
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
