//! Starting and stopping a node: data directory, identity, consensus, the
//! agent and the HTTP API, wired together in that order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::agent::{Agent, Identity};
use crate::api::{self, AppState};
use crate::config::Config;
use crate::raft::{Consensus, NodeId, Storage};

/// The node's persistent UUID: read from `data_dir/node-id`, created on
/// first start. A data dir with a Raft store but no ID (or the reverse) is
/// refused, so a half-deleted data dir never starts as an empty catalog.
fn node_id(config: &Config) -> anyhow::Result<uuid::Uuid> {
    let Some(dir) = &config.data_dir else {
        return Ok(uuid::Uuid::new_v4());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
    let id_path = dir.join("node-id");
    let store = dir.join("raft.redb");
    match (id_path.exists(), store.exists()) {
        (true, true) => {
            let text = std::fs::read_to_string(&id_path).with_context(|| format!("reading {}", id_path.display()))?;
            uuid::Uuid::parse_str(text.trim())
                .with_context(|| format!("{} does not hold a UUID (corrupt data dir?)", id_path.display()))
        }
        (false, false) => {
            let id = uuid::Uuid::new_v4();
            write_durably(&id_path, id.to_string().as_bytes())?;
            Ok(id)
        }
        (true, false) => bail!(
            "{} exists but {} is missing: refusing to start with an empty catalog (restore the file or empty the data dir)",
            id_path.display(),
            store.display()
        ),
        (false, true) => bail!(
            "{} exists but {} is missing: the data dir is incomplete (restore node-id or empty the data dir)",
            store.display(),
            id_path.display()
        ),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Raft wants a u64; derive it from the UUID (never zero).
fn raft_id(uuid: &uuid::Uuid) -> NodeId {
    let (hi, lo) = uuid.as_u64_pair();
    (hi ^ lo).max(1)
}

/// Where compiled plugins are cached: configured, else in the data dir,
/// else (in `--dev`) in the user's cache directory, so that `--dev`
/// restarts are fast too.
fn plugin_cache_dir(config: &Config) -> Option<std::path::PathBuf> {
    if let Some(d) = &config.plugin_cache_dir {
        return Some(d.clone());
    }
    if let Some(d) = &config.data_dir {
        return Some(d.join("plugin-cache"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("muster").join("plugins"))
}

/// Creates the plugin runtime and loads the built-ins and every
/// `[[check_plugin]]`; a block that fails to load stops the node with the
/// reason, rather than leaving its checks silently critical.
async fn start_plugins(config: &Config) -> anyhow::Result<crate::plugins::Plugins> {
    let fuel = config
        .check_plugins
        .iter()
        .chain(&config.sources)
        .chain(&config.exporters)
        .any(|b| b.fuel.is_some());
    let registry = crate::plugins::PluginRegistry::new(plugin_cache_dir(config), fuel)?;
    let loader = registry.clone();
    let blocks = config.check_plugins.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        loader.load_builtins()?;
        for block in &blocks {
            loader.load(block, crate::plugins::World::HealthCheck)?;
        }
        Ok(())
    })
    .await
    .context("loading plugins")??;
    Ok(registry)
}

/// Runs a node until SIGINT/SIGTERM or `PUT /v1/agent/leave`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let uuid = node_id(&config)?;
    let storage = match &config.data_dir {
        Some(dir) => Storage::Disk(dir.clone()),
        None => Storage::Memory,
    };
    let advertise = match config.server_addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        ip => ip.to_string(),
    };
    let raft_addr = format!("{advertise}:{}", config.server_addr.port());
    let consensus = Consensus::start(
        raft_id(&uuid),
        &raft_addr,
        &storage,
        config.bootstrap_expect == 1,
        config.raft_snapshot_threshold,
        // A single server has no peers; the RPC listener comes with joining.
        None,
    )
    .await?;
    if !consensus.wait_for_leader(Duration::from_secs(10)).await {
        bail!("no Raft leader after 10s (is bootstrap_expect = 1 set for a single server?)");
    }
    let plugins = start_plugins(&config).await?;
    let agent = Agent::new(
        Identity {
            node_name: config.node_name.clone(),
            node_id: uuid.to_string(),
            datacenter: config.datacenter.clone(),
            address: advertise,
        },
        consensus.clone(),
        plugins.clone(),
    );
    agent.start().await?;
    let sources = crate::sources::Sources::start(&config, agent.clone(), plugins.clone()).await?;
    for block in &config.exporters {
        tracing::warn!(name = %block.name, plugin = %block.plugin, "exporter plugins are not run by this build yet; ignoring the block");
    }
    let dns = crate::dns::start(&config, &consensus).await?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP API on {}", config.http_addr))?;
    tracing::info!(
        node = %config.node_name,
        http = %config.http_addr,
        dns = %config.dns_addr,
        datacenter = %config.datacenter,
        mode = if config.dev { "dev (in memory)" } else { "server" },
        "muster agent running"
    );
    let state = Arc::new(AppState {
        config: Arc::new(config),
        consensus: consensus.clone(),
        agent: agent.clone(),
        plugins,
        sources,
        renders: Default::default(),
    });
    let leave = agent.clone();
    let shutdown = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = leave.leave.notified() => {}
        }
        tracing::info!("shutting down");
    };
    api::serve(listener, state, shutdown).await?;
    dns.shutdown().await;
    consensus.shutdown().await;
    Ok(())
}
