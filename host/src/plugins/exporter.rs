//! The `exporter` world: bindings, and one live instance that keeps its
//! state (connections, sessions, leases) across calls, unlike checks and
//! sources. Every call still runs under the plugin's memory cap, fuel and a
//! deadline; a call that traps or overruns poisons the instance, and the
//! runner (`crate::exporters`) replaces it with a fresh one.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use super::call::{describe_failure, timed_out, CallDeadline};
use super::grant::AllowList;
use super::host_state::HostState;
use super::registry::{Linked, Plugin, PluginRegistry};
use crate::catalog::types::CheckStatus;
use crate::exporters::feed;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "exporter",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "muster:plugin/types": super::health_check::muster::plugin::types,
        "muster:plugin/log": super::health_check::muster::plugin::log,
    },
});

// `Change` and `ServiceInstance` come from the world itself (its `use types`).
use super::health_check::muster::plugin::types::{CheckStatus as WitStatus, InstanceKey, Pair};

/// An exporter instance, opened and ready for changes.
pub struct LiveExporter {
    pub plugin: Arc<Plugin>,
    store: Store<HostState>,
    bindings: Exporter,
    deadline: CallDeadline,
    /// The instance holds a pool slot for as long as it lives.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Set once a call trapped or overran: the instance must not be used.
    poisoned: bool,
}

/// Why an exporter call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// The plugin answered with an error (backend down, bad config): the
    /// instance is fine and can be retried.
    #[error("{0}")]
    Refused(String),
    /// The plugin trapped, overran or ran out of memory: the instance is
    /// gone and a fresh one must be opened.
    #[error("{0}")]
    Fault(String),
}

impl PluginRegistry {
    /// Instantiates `plugin` (an exporter) and calls its `start` with
    /// `config` (JSON), allowed to reach only its `grant.connect`.
    pub async fn open_exporter(
        &self,
        plugin: Arc<Plugin>,
        config: &str,
        limit: Duration,
    ) -> Result<LiveExporter, ExportError> {
        let Linked::Exporter(pre) = &plugin.linked else {
            return Err(ExportError::Fault(format!(
                "{} is not an exporter plugin",
                plugin.name
            )));
        };
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExportError::Fault("the plugin runtime is shutting down".into()))?;
        let mut allow = AllowList::default();
        allow.allow_grant(&plugin.block.grant).await;
        let state = HostState::new(
            plugin.name.as_str().into(),
            Arc::new(allow),
            plugin.memory_bytes,
            false,
        );
        let stderr = state.stderr.clone();
        let deadline = CallDeadline::new(limit);
        let mut store = self
            .store_with_deadline(&plugin, state, deadline.clone())
            .map_err(ExportError::Fault)?;
        let bindings = match tokio::time::timeout(limit, pre.instantiate_async(&mut store)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(ExportError::Fault(describe_failure(
                    &e,
                    &plugin,
                    limit,
                    &stderr.contents(),
                )))
            }
            Err(_) => return Err(ExportError::Fault(timed_out(&plugin, limit))),
        };
        let mut live = LiveExporter {
            plugin,
            store,
            bindings,
            deadline,
            _slot: slot,
            poisoned: false,
        };
        let config = config.to_string();
        live.call("start", limit, |b, s| {
            Box::pin(async move { b.call_start(s, &config).await })
        })
        .await?;
        Ok(live)
    }
}

type CallFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = wasmtime::Result<Result<(), String>>> + Send + 'a>,
>;

impl LiveExporter {
    /// Whether an earlier call trapped or overran.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The content hash of the running version.
    pub fn hash(&self) -> &str {
        &self.plugin.hash
    }

    /// Makes the backend equal to `all`.
    pub async fn resync(
        &mut self,
        all: &[Arc<feed::Instance>],
        limit: Duration,
    ) -> Result<(), ExportError> {
        let all: Vec<ServiceInstance> = all.iter().map(|i| to_wit(i)).collect();
        self.call("resync", limit, |b, s| {
            Box::pin(async move { b.call_resync(s, &all).await })
        })
        .await
    }

    /// Applies ordered changes.
    pub async fn apply(
        &mut self,
        changes: &[feed::Change],
        limit: Duration,
    ) -> Result<(), ExportError> {
        let changes: Vec<Change> = changes
            .iter()
            .map(|c| match c {
                feed::Change::Upsert(i) => Change::Upsert(to_wit(i)),
                feed::Change::Remove((node, id)) => Change::Remove(InstanceKey {
                    node: node.clone(),
                    id: id.clone(),
                }),
            })
            .collect();
        self.call("apply", limit, |b, s| {
            Box::pin(async move { b.call_apply(s, &changes).await })
        })
        .await
    }

    /// Keep-alives, lease renewals.
    pub async fn tick(&mut self, limit: Duration) -> Result<(), ExportError> {
        self.call("tick", limit, |b, s| Box::pin(b.call_tick(s)))
            .await
    }

    async fn call<F>(&mut self, what: &str, limit: Duration, f: F) -> Result<(), ExportError>
    where
        F: for<'a> FnOnce(&'a Exporter, &'a mut Store<HostState>) -> CallFuture<'a>,
    {
        if self.poisoned {
            return Err(ExportError::Fault(format!(
                "plugin {}: the instance failed earlier and must be reopened",
                self.plugin.name
            )));
        }
        self.deadline.reset(limit);
        self.store.data_mut().begin_call();
        if self.store.get_fuel().is_ok() {
            let _ = self.store.set_fuel(self.plugin.fuel());
        }
        let stderr = self.store.data().stderr.clone();
        let plugin = self.plugin.clone();
        let outcome = tokio::time::timeout(limit, f(&self.bindings, &mut self.store)).await;
        let result = match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(refused))) => Err(ExportError::Refused(format!(
                "plugin {} {what}: {refused}",
                plugin.name
            ))),
            Ok(Err(e)) => Err(ExportError::Fault(describe_failure(
                &e,
                &plugin,
                limit,
                &stderr.contents(),
            ))),
            Err(_) => Err(ExportError::Fault(timed_out(&plugin, limit))),
        };
        if matches!(result, Err(ExportError::Fault(_))) {
            self.poisoned = true;
        }
        plugin.record_call(result.as_ref().err().map(|e| e.to_string()).as_deref());
        result
    }
}

fn to_wit(i: &feed::Instance) -> ServiceInstance {
    ServiceInstance {
        node: i.node.clone(),
        node_address: i.node_address.clone(),
        id: i.id.clone(),
        name: i.name.clone(),
        tags: i.tags.clone(),
        address: i.address.clone(),
        port: i.port,
        meta: i
            .meta
            .iter()
            .map(|(key, value)| Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        status: match i.status {
            CheckStatus::Passing => WitStatus::Passing,
            CheckStatus::Warning => WitStatus::Warning,
            CheckStatus::Critical => WitStatus::Critical,
        },
    }
}
