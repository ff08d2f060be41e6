//! Exporters: mirror the catalog's service instances into other registries
//! (etcd, ZooKeeper) through exporter plugins.
//!
//! `feed` turns applied Raft entries into an ordered stream of instance
//! changes; `pump` drives one exporter on the leader (open, resync, stream,
//! tick, recover, swap); this module starts them from the config, swaps
//! them (file change, `muster plugin reload`, `PUT /v1/agent/reload`) and
//! reports on them.

pub mod feed;
mod pump;
pub mod settings;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::PluginBlock;
use crate::plugins::{Plugin, Plugins, World};
use feed::ExportFeed;
use pump::{Control, Pump};
use settings::Settings;
use status::{ExporterStatus, Phase};

/// How often a plugin file is looked at for changes.
const FILE_POLL: Duration = Duration::from_millis(500);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no exporter named \"{0}\" is configured")]
    Unknown(String),
    /// The new version failed to load, link or open; the old one runs on.
    #[error("{0}")]
    Rejected(String),
}

/// What one exporter did on a config reload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReloadOutcome {
    pub name: String,
    /// "added", "removed", "swapped", "unchanged" or "rejected".
    pub action: &'static str,
    pub hash: Option<String>,
    pub error: Option<String>,
}

struct Running {
    block: PluginBlock,
    control: mpsc::Sender<Control>,
    status: Arc<Mutex<ExporterStatus>>,
    pump: JoinHandle<()>,
    watcher: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.pump.abort();
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// The node's exporters.
pub struct Exporters {
    registry: Plugins,
    feed: Arc<ExportFeed>,
    leader: watch::Receiver<bool>,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    me: Weak<Exporters>,
}

impl Exporters {
    /// Loads every `[[exporter]]` block and starts it; a block that fails
    /// to load stops the node with the reason.
    pub async fn start(
        blocks: &[PluginBlock],
        registry: Plugins,
        feed: Arc<ExportFeed>,
        leader: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Exporters>> {
        let exporters = Arc::new_cyclic(|me| Exporters {
            registry,
            feed,
            leader,
            running: Default::default(),
            me: me.clone(),
        });
        for block in blocks {
            let (plugin, settings) = exporters.prepare(block).await.map_err(anyhow::Error::msg)?;
            exporters.registry.install(plugin.clone());
            exporters.spawn(
                block.clone(),
                plugin,
                settings,
                &mut *exporters.running.lock().await,
            );
        }
        Ok(exporters)
    }

    /// Compiles and links a block off the async threads, and reads its
    /// settings.
    async fn prepare(&self, block: &PluginBlock) -> Result<(Arc<Plugin>, Settings), String> {
        let settings = Settings::from_block(block)?;
        let (registry, b) = (self.registry.clone(), block.clone());
        let plugin = tokio::task::spawn_blocking(move || registry.prepare(&b, World::Exporter))
            .await
            .map_err(|e| format!("exporter \"{}\": loading: {e}", block.name))?
            .map_err(|e| e.to_string())?;
        Ok((plugin, settings))
    }

    fn spawn(
        &self,
        block: PluginBlock,
        plugin: Arc<Plugin>,
        settings: Settings,
        running: &mut BTreeMap<String, Running>,
    ) {
        let name = block.name.clone();
        let status = Arc::new(Mutex::new(ExporterStatus::new(
            &name,
            settings.only_passing,
        )));
        let (control, rx) = mpsc::channel(8);
        let pump = Pump::new(
            name.clone(),
            plugin,
            settings,
            self.registry.clone(),
            self.feed.clone(),
            status.clone(),
        );
        let pump = tokio::spawn(pump.run(self.leader.clone(), rx));
        let watcher = self.watch(&block);
        running.insert(
            name,
            Running {
                block,
                control,
                status,
                pump,
                watcher,
            },
        );
    }

    /// Re-reads exporter `name`'s component (its file, or the built-in)
    /// and swaps to it. Returns the hash now live.
    pub async fn reload(&self, name: &str, trigger: &'static str) -> Result<String, ReloadError> {
        let block = {
            let running = self.running.lock().await;
            running
                .get(name)
                .map(|r| r.block.clone())
                .ok_or_else(|| ReloadError::Unknown(name.to_string()))?
        };
        self.swap(&block, trigger).await
    }

    async fn swap(
        &self,
        block: &PluginBlock,
        trigger: &'static str,
    ) -> Result<String, ReloadError> {
        let (plugin, settings) = self.prepare(block).await.map_err(|e| {
            self.record_rejection(&block.name, trigger, &e);
            ReloadError::Rejected(e)
        })?;
        let control = {
            let running = self.running.lock().await;
            running
                .get(&block.name)
                .map(|r| r.control.clone())
                .ok_or_else(|| ReloadError::Unknown(block.name.clone()))?
        };
        let (reply, answer) = oneshot::channel();
        control
            .send(Control::Swap {
                plugin,
                settings,
                trigger,
                reply,
            })
            .await
            .map_err(|_| ReloadError::Rejected("the exporter is stopping".into()))?;
        let hash = answer
            .await
            .map_err(|_| ReloadError::Rejected("the exporter stopped during the swap".into()))?
            .map_err(ReloadError::Rejected)?;
        if let Some(r) = self.running.lock().await.get_mut(&block.name) {
            // A block that now names another file is watched there instead.
            if r.block.plugin != block.plugin {
                if let Some(old) = r.watcher.take() {
                    old.abort();
                }
                r.watcher = self.watch(block);
            }
            r.block = block.clone();
        }
        Ok(hash)
    }

    /// Starts watching the block's component file (none for built-ins).
    fn watch(&self, block: &PluginBlock) -> Option<JoinHandle<()>> {
        (!block.plugin.starts_with("builtin:")).then(|| {
            tokio::spawn(watch_file(
                self.me.clone(),
                block.name.clone(),
                PathBuf::from(&block.plugin),
            ))
        })
    }

    /// A version that did not even load goes into the swap history too.
    fn record_rejection(&self, name: &str, trigger: &'static str, why: &str) {
        tracing::warn!(
            exporter = name,
            trigger,
            error = why,
            "exporter reload rejected; the running version stays"
        );
        let Ok(running) = self.running.try_lock() else {
            return;
        };
        if let Some(r) = running.get(name) {
            if let Ok(mut s) = r.status.lock() {
                let from = s.live_hash.clone().unwrap_or_default();
                let old_applied_seq = s.applied_seq;
                s.swapped(status::SwapRecord {
                    at: status::now_ms(),
                    trigger: trigger.to_string(),
                    from_hash: from,
                    to_hash: String::new(),
                    outcome: format!("rejected: {why}"),
                    resync_seq: 0,
                    caught_up_seq: 0,
                    old_applied_seq,
                    first_streamed_seq: None,
                    pause_ms: 0.0,
                });
            }
        }
    }

    /// Applies the `[[exporter]]` blocks of a re-read config: starts new
    /// ones, stops removed ones, swaps changed ones (a changed block, or a
    /// component whose content changed), and leaves the rest alone.
    pub async fn apply_config(&self, blocks: &[PluginBlock]) -> Vec<ReloadOutcome> {
        let mut outcomes = Vec::new();
        let wanted: BTreeMap<&str, &PluginBlock> =
            blocks.iter().map(|b| (b.name.as_str(), b)).collect();
        {
            let mut running = self.running.lock().await;
            let gone: Vec<String> = running
                .keys()
                .filter(|n| !wanted.contains_key(n.as_str()))
                .cloned()
                .collect();
            for name in gone {
                if let Some(r) = running.remove(&name) {
                    if let Ok(mut s) = r.status.lock() {
                        s.phase = Phase::Stopped;
                    }
                }
                self.registry.remove(&name);
                tracing::info!(exporter = %name, "exporter removed from the config; stopped");
                outcomes.push(ReloadOutcome {
                    name,
                    action: "removed",
                    hash: None,
                    error: None,
                });
            }
        }
        for block in blocks {
            let current = {
                let running = self.running.lock().await;
                running.get(&block.name).map(|r| r.block.clone())
            };
            let outcome = match current {
                None => match self.prepare(block).await {
                    Ok((plugin, settings)) => {
                        let hash = plugin.hash.clone();
                        self.registry.install(plugin.clone());
                        let mut running = self.running.lock().await;
                        self.spawn(block.clone(), plugin, settings, &mut running);
                        tracing::info!(exporter = %block.name, "exporter added by a config reload");
                        ReloadOutcome {
                            name: block.name.clone(),
                            action: "added",
                            hash: Some(hash),
                            error: None,
                        }
                    }
                    Err(e) => ReloadOutcome {
                        name: block.name.clone(),
                        action: "rejected",
                        hash: None,
                        error: Some(e),
                    },
                },
                Some(old) => {
                    let live = self.registry.get(&block.name).map(|p| p.hash.clone());
                    let unchanged = old == *block && self.content_hash(block).await == live;
                    if unchanged {
                        ReloadOutcome {
                            name: block.name.clone(),
                            action: "unchanged",
                            hash: live,
                            error: None,
                        }
                    } else {
                        match self.swap(block, "config").await {
                            Ok(hash) => ReloadOutcome {
                                name: block.name.clone(),
                                action: "swapped",
                                hash: Some(hash),
                                error: None,
                            },
                            Err(e) => ReloadOutcome {
                                name: block.name.clone(),
                                action: "rejected",
                                hash: live,
                                error: Some(e.to_string()),
                            },
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The SHA-256 of the component a block names now (None if unreadable).
    async fn content_hash(&self, block: &PluginBlock) -> Option<String> {
        if block.plugin.starts_with("builtin:") {
            return self.registry.get(&block.name).map(|p| p.hash.clone());
        }
        let bytes = tokio::fs::read(&block.plugin).await.ok()?;
        Some(crate::plugins::content_hash(&bytes))
    }

    /// Every exporter's state.
    pub async fn statuses(&self) -> Vec<ExporterStatus> {
        let feed_seq = self.feed.latest();
        self.running
            .lock()
            .await
            .values()
            .filter_map(|r| r.status.lock().ok().map(|s| s.snapshot(feed_seq)))
            .collect()
    }

    /// Forgets the lag samples (for benchmarks measuring one phase).
    pub async fn reset_lag(&self) {
        for r in self.running.lock().await.values() {
            if let Ok(mut s) = r.status.lock() {
                s.reset_lag();
            }
        }
    }
}

/// Watches a plugin file and reloads the exporter when it changes. A file
/// caught half-written fails to load and is rejected; the complete file
/// changes the modification time again and is picked up then (writing to
/// a temporary name and renaming avoids the rejected attempt).
async fn watch_file(exporters: Weak<Exporters>, name: String, path: PathBuf) {
    let stamp = |path: &PathBuf| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let now = stamp(&path);
        if now == seen || now.is_none() {
            continue;
        }
        // Let a writer finish: wait until the file stops changing.
        tokio::time::sleep(FILE_POLL / 2).await;
        let settled = stamp(&path);
        if settled != now {
            continue;
        }
        seen = settled;
        let Some(exporters) = exporters.upgrade() else {
            return;
        };
        tracing::info!(exporter = %name, path = %path.display(), "plugin file changed; swapping");
        if let Err(e) = exporters.reload(&name, "file").await {
            tracing::warn!(exporter = %name, error = %e, "swap after a file change was rejected");
        }
    }
}
