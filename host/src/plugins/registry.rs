//! The loaded plugins, by name: compile (or load from the cache), check the
//! imports against the grant, link once into an `InstancePre`, and keep the
//! counters that `muster plugin list` and `/v1/muster/plugins` show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use wasmtime::component::Linker;
use wasmtime::Engine;

use super::cache::CompileCache;
use super::exporter::ExporterPre;
use super::grant::check_imports;
use super::health_check::HealthCheckPre;
use super::host_state::HostState;
use super::source::SourcePre;
use super::{PluginError, BUILTINS, DEFAULT_MEMORY_MB, MAX_CONCURRENT_CALLS};
use crate::config::PluginBlock;

/// Which contract a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    HealthCheck,
    Source,
    Exporter,
}

impl World {
    /// The world's name in wit/plugin.wit.
    pub fn as_str(self) -> &'static str {
        match self {
            World::HealthCheck => "health-check",
            World::Source => "source",
            World::Exporter => "exporter",
        }
    }
}

/// A linked component, ready to instantiate, per world.
pub(crate) enum Linked {
    HealthCheck(HealthCheckPre<HostState>),
    Source(SourcePre<HostState>),
    Exporter(ExporterPre<HostState>),
}

/// One loaded plugin.
pub struct Plugin {
    pub name: String,
    pub world: World,
    /// `builtin:NAME` or the file's path.
    pub source: String,
    pub hash: String,
    pub loaded_at: SystemTime,
    pub load_time: Duration,
    pub cache_hit: bool,
    pub block: PluginBlock,
    /// The block's `config` table as a JSON object.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub memory_bytes: usize,
    pub(crate) linked: Linked,
    calls: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Plugin {
    /// Counts a call; `fault` is set when the plugin misbehaved (trap,
    /// timeout, limit), not when it merely reported a critical status.
    pub fn record_call(&self, fault: Option<&str>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = fault {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(f.to_string());
            }
        }
    }

    /// The fuel budget of one call (`u64::MAX` when unmetered).
    pub fn fuel(&self) -> u64 {
        self.block.fuel.unwrap_or(u64::MAX)
    }

    /// What the API shows about this plugin.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            world: self.world,
            source: self.source.clone(),
            hash: self.hash.clone(),
            loaded_at: self
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            load_ms: self.load_time.as_secs_f64() * 1000.0,
            compile_cache_hit: self.cache_hit,
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
            memory_mb: (self.memory_bytes >> 20) as u64,
            fuel: self.block.fuel,
            grant: GrantInfo {
                connect: self.block.grant.connect.clone(),
                read: self.block.grant.read.clone(),
                docker: self.block.grant.docker,
            },
        }
    }
}

/// A plugin as `/v1/muster/plugins` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginInfo {
    pub name: String,
    pub world: World,
    pub source: String,
    pub hash: String,
    /// Unix milliseconds.
    pub loaded_at: u64,
    pub load_ms: f64,
    pub compile_cache_hit: bool,
    pub calls: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    #[serde(rename = "MemoryMB")]
    pub memory_mb: u64,
    pub fuel: Option<u64>,
    pub grant: GrantInfo,
}

/// A plugin's grant as listed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantInfo {
    pub connect: Vec<String>,
    pub read: Vec<String>,
    pub docker: bool,
}

/// The node's plugins and the machinery to run them.
pub struct PluginRegistry {
    pub(crate) engine: Engine,
    cache: CompileCache,
    health_linker: Linker<HostState>,
    source_linker: Linker<HostState>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// One permit per pooled instance slot.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Whether the engine meters fuel.
    fuel: bool,
}

impl PluginRegistry {
    /// Creates the engine and linkers; `cache_dir` keeps compiled
    /// components; `fuel` turns on metering (see `engine`).
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> anyhow::Result<Arc<PluginRegistry>> {
        let engine = super::engine(fuel)?;
        let mut health_linker = Linker::<HostState>::new(&engine);
        super::health_check::add_to_linker(&mut health_linker)?;
        let mut source_linker = Linker::<HostState>::new(&engine);
        super::source::add_to_linker(&mut source_linker)?;
        Ok(Arc::new(PluginRegistry {
            cache: CompileCache::new(&engine, cache_dir),
            engine,
            health_linker,
            source_linker,
            plugins: RwLock::new(BTreeMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS)),
            fuel,
        }))
    }

    /// Loads every built-in health check under its own name (HTTP and TCP
    /// checks run through them). Built-in sources and exporters need a
    /// grant, so they load only from a TOML block that names them.
    pub fn load_builtins(&self) -> Result<(), PluginError> {
        for (name, world, _) in BUILTINS {
            if *world != World::HealthCheck {
                continue;
            }
            let block = PluginBlock {
                name: name.to_string(),
                plugin: format!("builtin:{name}"),
                grant: Default::default(),
                config: Default::default(),
                memory_mb: None,
                fuel: None,
            };
            self.load(&block, *world)?;
        }
        Ok(())
    }

    /// Compiles, checks and links a plugin block, and registers it under
    /// its name (replacing an earlier one only once the new one is ready).
    pub fn load(&self, block: &PluginBlock, world: World) -> Result<Arc<Plugin>, PluginError> {
        let plugin = self.prepare(block, world)?;
        self.install(plugin.clone());
        Ok(plugin)
    }

    /// Registers a prepared plugin under its name, replacing the earlier
    /// version in listings.
    pub fn install(&self, plugin: Arc<Plugin>) {
        if let Ok(mut all) = self.plugins.write() {
            all.insert(plugin.name.clone(), plugin);
        }
    }

    /// Forgets a plugin (its block was removed from the config).
    pub fn remove(&self, name: &str) {
        if let Ok(mut all) = self.plugins.write() {
            all.remove(name);
        }
    }

    /// Compiles, checks and links a plugin block without registering it:
    /// a hot swap prepares the new version while the old one runs.
    pub fn prepare(&self, block: &PluginBlock, world: World) -> Result<Arc<Plugin>, PluginError> {
        let started = Instant::now();
        let name = block.name.clone();
        if block.fuel.is_some() && !self.fuel {
            return Err(PluginError::Link {
                name,
                detail: "sets fuel, but the node started without fuel metering (it turns on when a block in the startup config sets fuel); restart the node".into(),
            });
        }
        let bytes: std::borrow::Cow<'static, [u8]> = match block.plugin.strip_prefix("builtin:") {
            Some(builtin) => {
                let found = BUILTINS.iter().find(|(n, _, _)| *n == builtin);
                match found {
                    Some((_, _, bytes)) => (*bytes).into(),
                    None => {
                        return Err(PluginError::UnknownBuiltin {
                            name,
                            builtin: builtin.to_string(),
                            known: BUILTINS
                                .iter()
                                .map(|(n, _, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
            None => std::fs::read(&block.plugin)
                .map_err(|source| PluginError::Read {
                    name: name.clone(),
                    path: block.plugin.clone(),
                    source,
                })?
                .into(),
        };
        if !wasmparser_is_component(&bytes) {
            return Err(PluginError::NotAComponent {
                name,
                origin: block.plugin.clone(),
                detail: "it does not start with the component-model header (a core module or another file?); build it for wasm32-wasip2 or with a component toolchain".into(),
            });
        }
        let compiled =
            self.cache
                .compile(&self.engine, &bytes)
                .map_err(|e| PluginError::NotAComponent {
                    name: name.clone(),
                    origin: block.plugin.clone(),
                    detail: format!("{e:#}"),
                })?;
        let ty = compiled.component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        check_imports(world, &block.grant, imports.iter().map(String::as_str))
            .map_err(|e| PluginError::Grant(e, name.clone()))?;
        let link_err = |e: wasmtime::Error| PluginError::Link {
            name: name.clone(),
            detail: format!(
                "does not fit the {} world of muster:plugin@0.1.0: {e:#}",
                world.as_str()
            ),
        };
        let linked = match world {
            World::HealthCheck => {
                let pre = self
                    .health_linker
                    .instantiate_pre(&compiled.component)
                    .map_err(link_err)?;
                Linked::HealthCheck(HealthCheckPre::new(pre).map_err(link_err)?)
            }
            World::Source => {
                let pre = self
                    .source_linker
                    .instantiate_pre(&compiled.component)
                    .map_err(link_err)?;
                Linked::Source(SourcePre::new(pre).map_err(link_err)?)
            }
            // The exporter world imports what a health check does, so it
            // links against the same linker.
            World::Exporter => {
                let pre = self
                    .health_linker
                    .instantiate_pre(&compiled.component)
                    .map_err(link_err)?;
                Linked::Exporter(ExporterPre::new(pre).map_err(link_err)?)
            }
        };
        let config = toml_to_json(&block.config);
        let plugin = Arc::new(Plugin {
            name: name.clone(),
            world,
            source: block.plugin.clone(),
            hash: compiled.hash,
            loaded_at: SystemTime::now(),
            load_time: started.elapsed(),
            cache_hit: compiled.cache_hit,
            block: block.clone(),
            config,
            memory_bytes: (block.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) << 20) as usize,
            linked,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        tracing::info!(
            plugin = %name,
            world = world.as_str(),
            source = %block.plugin,
            hash = &plugin.hash[..12],
            cached = plugin.cache_hit,
            ms = plugin.load_time.as_millis() as u64,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// Whether the engine meters fuel.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// A loaded plugin by name.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().ok()?.get(name).cloned()
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.plugins
            .read()
            .map(|all| all.values().map(|p| p.info()).collect())
            .unwrap_or_default()
    }
}

/// A component starts with `\0asm`, then version 0x0d and layer 1; a core
/// module has layer 0. Checked first so that the error is about the file,
/// not about a parser's internals.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// TOML tables become the JSON plugins parse.
pub fn toml_to_json(table: &toml::Table) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}
