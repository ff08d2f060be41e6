//! Source adapters: `[[source]]` blocks whose plugins (the `source` world)
//! say which services this node should have, from Docker containers, files,
//! or anything a user writes a component for. The host owns the
//! capabilities (the Docker connection, watching directories) and applies
//! the result; the plugin owns the mapping.

mod convert;
mod docker;
mod files;
mod runner;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Notify;

use crate::agent::Agent;
use crate::config::Config;
use crate::plugins::{Plugins, World};

pub use convert::{ORIGIN_META, SOURCE_META};
use docker::DockerStatus;
use runner::{Runner, Settings, Stats};

/// The node's running sources.
#[derive(Default)]
pub struct Sources {
    runners: Vec<Arc<Runner>>,
}

/// One source as `/v1/muster/sources` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceInfo {
    pub name: String,
    pub plugin: String,
    pub hash: String,
    #[serde(flatten)]
    pub stats: Stats,
    pub docker: Option<DockerStatus>,
}

impl Sources {
    /// Loads every `[[source]]` and starts its runner. A block that cannot
    /// load (bad component, missing grant, a `grant.read` directory that
    /// does not exist, bad runner settings) stops the node with the reason.
    pub async fn start(
        config: &Config,
        agent: Arc<Agent>,
        plugins: Plugins,
    ) -> anyhow::Result<Sources> {
        remove_orphans(config, &agent).await;
        let mut runners = Vec::new();
        for block in &config.sources {
            let name = block.name.clone();
            let json = crate::plugins::toml_to_json(&block.config);
            let settings = Settings::from_config(&name, &json)?;
            let mut read = Vec::new();
            for dir in &block.grant.read {
                let path = PathBuf::from(dir);
                if !path.is_absolute() {
                    anyhow::bail!(
                        "[[source]] '{name}': grant.read \"{dir}\" must be an absolute path"
                    );
                }
                if !path.is_dir() {
                    anyhow::bail!("[[source]] '{name}': grant.read \"{dir}\" is not a directory (create it, or fix the path)");
                }
                read.push(path);
            }
            let loader = plugins.clone();
            let b = block.clone();
            let plugin = tokio::task::spawn_blocking(move || loader.load(&b, World::Source))
                .await
                .context("loading a source plugin")??;
            let changed = Arc::new(Notify::new());
            let docker = block.grant.docker.then(|| {
                docker::DockerWatch::spawn(
                    config.docker_host.clone(),
                    changed.clone(),
                    settings.resync,
                )
            });
            if !read.is_empty() {
                files::spawn(read.clone(), changed.clone());
            }
            let runner = Runner::new(
                name,
                plugin,
                plugins.clone(),
                agent.clone(),
                read,
                docker,
                changed,
                settings,
            );
            tokio::spawn(runner.clone().run());
            runners.push(runner);
        }
        Ok(Sources { runners })
    }

    /// Every source with its counters, problems and Docker connection.
    pub fn list(&self) -> Vec<SourceInfo> {
        self.runners
            .iter()
            .map(|r| SourceInfo {
                name: r.name.clone(),
                plugin: r.plugin().source.clone(),
                hash: r.plugin().hash.clone(),
                stats: r.stats(),
                docker: r.docker_status(),
            })
            .collect()
    }
}

/// Removes the services of sources that are no longer configured (a block
/// renamed or deleted): nothing else would ever remove them, and no source
/// may take them over.
async fn remove_orphans(config: &Config, agent: &Agent) {
    let configured: Vec<&str> = config.sources.iter().map(|b| b.name.as_str()).collect();
    let orphans: Vec<(String, String)> = match agent.catalog() {
        Ok(st) => st
            .catalog
            .node_services(&agent.identity.node_name)
            .filter_map(|s| {
                let owner = s.meta.get(SOURCE_META)?;
                (!configured.contains(&owner.as_str())).then(|| (s.id.clone(), owner.clone()))
            })
            .collect(),
        Err(_) => return,
    };
    for (id, owner) in orphans {
        match agent.deregister_service(&id).await {
            Ok(()) => {
                tracing::info!(service = %id, source = %owner, "removed a service of a source that is no longer configured")
            }
            Err(e) => {
                tracing::warn!(service = %id, source = %owner, error = %e.message, "could not remove a service of a source that is no longer configured")
            }
        }
    }
}
