//! The plugin runtime: one wasmtime Engine for the process, components
//! compiled once (and cached on disk), capabilities granted per plugin, and
//! a memory cap, a deadline and optional fuel on every call.
//!
//! Each call gets a fresh Store and instance from an `InstancePre`, on the
//! pooling allocator: a trap or an exhausted limit poisons only that Store,
//! which is dropped, so the next call starts clean.

mod cache;
mod call;
pub mod exporter;
pub mod grant;
pub mod health_check;
mod host_state;
mod insecure_tls;
mod registry;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

pub use cache::content_hash;
pub use grant::{AllowList, GrantError};
pub use registry::{toml_to_json, Plugin, PluginInfo, PluginRegistry, World};

/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Largest memory cap a plugin block may ask for; also the pool's slot size.
pub const MAX_MEMORY_MB: u64 = 1024;
/// Plugin calls running at once (the pool's instance count): more wait for
/// a slot instead of failing, so a burst of slow checks delays, never breaks.
pub const MAX_CONCURRENT_CALLS: usize = 512;
/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The built-in plugins compiled into this binary by `host/build.rs`.
pub const BUILTINS: &[(&str, World, &[u8])] = &[
    (
        "http-check",
        World::HealthCheck,
        include_bytes!(concat!(env!("OUT_DIR"), "/http_check.wasm")),
    ),
    (
        "tcp-check",
        World::HealthCheck,
        include_bytes!(concat!(env!("OUT_DIR"), "/tcp_check.wasm")),
    ),
    (
        "docker-source",
        World::Source,
        include_bytes!(concat!(env!("OUT_DIR"), "/docker_source.wasm")),
    ),
    (
        "file-source",
        World::Source,
        include_bytes!(concat!(env!("OUT_DIR"), "/file_source.wasm")),
    ),
    (
        "etcd-exporter",
        World::Exporter,
        include_bytes!(concat!(env!("OUT_DIR"), "/etcd_exporter.wasm")),
    ),
    (
        "zookeeper-exporter",
        World::Exporter,
        include_bytes!(concat!(env!("OUT_DIR"), "/zookeeper_exporter.wasm")),
    ),
];

/// Why a plugin could not be loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin \"{name}\": reading {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("plugin \"{name}\": unknown built-in \"{builtin}\" (built-ins: {known})")]
    UnknownBuiltin {
        name: String,
        builtin: String,
        known: String,
    },
    #[error("plugin \"{name}\": {origin} is not a WebAssembly component: {detail}")]
    NotAComponent {
        name: String,
        origin: String,
        detail: String,
    },
    #[error("plugin \"{name}\": {0}", name = .1)]
    Grant(GrantError, String),
    #[error("plugin \"{name}\": {detail}")]
    Link { name: String, detail: String },
    #[error("plugin \"{name}\" is a {actual} plugin, but is used as a {wanted}")]
    WrongWorld {
        name: String,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error("no plugin named \"{0}\" is configured")]
    Unknown(String),
}

/// Builds the process's one Engine: async calls, epoch deadlines, pooled
/// instances, and fuel metering when `fuel` is set. Metering costs every
/// plugin about a third of its call time, so it is on only when some plugin
/// block asks for a fuel budget.
pub fn engine(fuel: bool) -> anyhow::Result<wasmtime::Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    let slots = MAX_CONCURRENT_CALLS as u32;
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 4)
        .total_tables(slots * 8)
        .max_memory_size((MAX_MEMORY_MB << 20) as usize)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(1 << 20)
        .table_elements(200_000)
        // Reset a slot's first pages with memset instead of madvise: a
        // typical check touches a few hundred KiB, and page faults plus
        // madvise were the largest cost of a call.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(256 << 10);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(fuel)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = wasmtime::Engine::new(&config)?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match ticker.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })?;
    Ok(engine)
}

/// The runtime handle the rest of the node uses.
pub type Plugins = Arc<PluginRegistry>;
