//! The `source` world: bindings, linking, the host side of the `docker`
//! interface, and one `reconcile` call with every limit applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::call::{describe_failure, timed_out};
use super::host_state::HostState;
use super::registry::{Linked, Plugin, PluginRegistry};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "source",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        // One set of shared types for every world, so a registration or a
        // log line means the same Rust type wherever it comes from.
        "muster:plugin/types": super::health_check::muster::plugin::types,
        "muster:plugin/log": super::health_check::muster::plugin::log,
    },
});

pub use self::muster::plugin::docker::{Container, Port};
pub use super::health_check::muster::plugin::types::{
    CheckDefinition, CheckStatus as WitCheckStatus, Pair, Problem, Registration,
};

/// What the node knows of Docker when a source runs: the engine's host
/// name and its containers, or why the engine cannot be reached.
#[derive(Debug, Clone)]
pub struct DockerView {
    pub host_name: String,
    pub containers: Result<Vec<Container>, String>,
}

/// Links everything a source may import: WASI (its sandbox has only the
/// granted directories), muster's log and the `docker` interface. wasi:http
/// is linked too, for toolchains that import it unasked; with no grant it
/// reaches nothing.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    super::health_check::add_to_linker(linker)?;
    self::muster::plugin::docker::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

impl self::muster::plugin::docker::Host for HostState {
    async fn list_containers(&mut self) -> Result<Vec<Container>, String> {
        match &self.docker {
            Some(view) => view.containers.clone(),
            None => Err("this source has no `grant = { docker = true }`".into()),
        }
    }

    async fn host_name(&mut self) -> String {
        self.docker
            .as_ref()
            .map(|v| v.host_name.clone())
            .unwrap_or_default()
    }
}

impl PluginRegistry {
    /// Runs one `reconcile` of a source in a fresh instance, with its
    /// memory cap, fuel and `limit`. Any failure of the plugin (trap,
    /// timeout, an error it returns) is the `Err`.
    pub async fn run_reconcile(
        &self,
        plugin: &Plugin,
        read: &[PathBuf],
        docker: Option<Arc<DockerView>>,
        limit: Duration,
    ) -> Result<Desired, String> {
        let Linked::Source(pre) = &plugin.linked else {
            return Err(format!("{} is not a source plugin", plugin.name));
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return Err("the plugin runtime is shutting down".into());
        };
        let state = HostState::for_source(
            plugin.name.as_str().into(),
            plugin.memory_bytes,
            read,
            docker,
        )
        .map_err(|e| format!("{e:#}"))?;
        let stderr = state.stderr.clone();
        let mut store = self.limited_store(plugin, state, limit)?;
        let config = serde_json::Value::Object(plugin.config.clone()).to_string();
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_reconcile(&mut store, &config).await
        };
        let outcome = match tokio::time::timeout(limit, call).await {
            Ok(Ok(Ok(desired))) => Ok(desired),
            Ok(Ok(Err(refused))) => Err(format!("plugin {}: {refused}", plugin.name)),
            Ok(Err(e)) => Err(describe_failure(&e, plugin, limit, &stderr.contents())),
            Err(_) => Err(timed_out(plugin, limit)),
        };
        plugin.record_call(outcome.as_ref().err().map(String::as_str));
        outcome
    }
}
