//! Starting and stopping a node: data directory, identity, consensus, the
//! agent and the HTTP API, wired together in that order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::agent::{Agent, Identity};
use crate::api::forward::PeerServices;
use crate::api::{self, AppState};
use crate::cluster::rpc::{MemberInfo, Role};
use crate::cluster::Cluster;
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
    // A client agent keeps no Raft store: its ID is all it persists.
    let store_exists = if config.server {
        store.exists()
    } else {
        id_path.exists()
    };
    match (id_path.exists(), store_exists) {
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

/// The address others reach `addr` at: an unspecified IP is advertised
/// as 127.0.0.1.
fn advertised(addr: std::net::SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        _ => addr.to_string(),
    }
}

/// Waits for a Raft leader, saying every 10 s that it is still waiting.
async fn wait_for_leader(consensus: &Consensus) {
    while !consensus.wait_for_leader(Duration::from_secs(10)).await {
        tracing::warn!(
            "no cluster leader yet: waiting for servers to join (bootstrap_expect, retry_join)"
        );
    }
}

/// Runs a node until SIGINT/SIGTERM or `PUT /v1/agent/leave`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let uuid = node_id(&config)?;
    let advertise = match config.server_addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        ip => ip.to_string(),
    };
    let raft_addr = advertised(config.server_addr);
    let role = if config.server {
        Role::Server
    } else {
        Role::Client
    };
    let me = MemberInfo {
        id: raft_id(&uuid),
        name: config.node_name.clone(),
        role,
        rpc: if config.server {
            raft_addr.clone()
        } else {
            String::new()
        },
        http: advertised(config.http_addr),
        dns: advertised(config.dns_addr),
    };
    let settings = crate::cluster::Settings {
        bootstrap_expect: config.bootstrap_expect,
        retry_join: config.retry_join.clone(),
        node_timeout: config.node_timeout,
        sync_interval: config.sync_interval,
    };
    let (consensus, cluster, peers) = if config.server {
        let storage = match &config.data_dir {
            Some(dir) => Storage::Disk(dir.clone()),
            None => Storage::Memory,
        };
        // Bound before Raft starts, so a port in use stops the node at once.
        let listener = tokio::net::TcpListener::bind(config.server_addr)
            .await
            .with_context(|| format!("binding addresses.server on {}", config.server_addr))?;
        let consensus = Consensus::start(
            raft_id(&uuid),
            &raft_addr,
            &storage,
            config.bootstrap_expect == 1,
            config.raft_snapshot_threshold,
        )
        .await?;
        let cluster = Cluster::new(me, settings, Some(consensus.clone()));
        let peers = PeerServices::new(cluster.clone());
        consensus.serve_rpc(listener, peers.clone());
        (consensus, cluster, Some(peers))
    } else {
        // A client agent's own services and checks live in a private
        // catalog (the same code, one voter of its own, never part of the
        // cluster's Raft), kept in data_dir/local so that they survive a
        // restart as Consul's data_dir/services do; anti-entropy copies
        // them to the servers.
        let storage = match &config.data_dir {
            Some(dir) => {
                let local = dir.join("local");
                std::fs::create_dir_all(&local)
                    .with_context(|| format!("creating {}", local.display()))?;
                Storage::Disk(local)
            }
            None => Storage::Memory,
        };
        let local = Consensus::start(
            raft_id(&uuid),
            "local",
            &storage,
            true,
            config.raft_snapshot_threshold,
        )
        .await?;
        (local, Cluster::new(me, settings, None), None)
    };
    cluster.start(config.node_name.clone());
    wait_for_leader(&consensus).await;
    let plugins = start_plugins(&config).await?;
    let agent = Agent::new(
        Identity {
            node_name: config.node_name.clone(),
            node_id: uuid.to_string(),
            datacenter: config.datacenter.clone(),
            address: advertise,
            meta: cluster.node_meta(),
        },
        consensus.clone(),
        plugins.clone(),
    );
    agent.start().await?;
    if role == Role::Client {
        let (c, local, name, every) = (
            cluster.clone(),
            consensus.clone(),
            config.node_name.clone(),
            config.sync_interval,
        );
        tokio::spawn(crate::cluster::anti_entropy::run(c, local, name, every));
    }
    let sources = crate::sources::Sources::start(&config, agent.clone(), plugins.clone()).await?;
    // Exporters mirror the cluster's catalog from its leader: a client's
    // private catalog is not what consumers of etcd or ZooKeeper want.
    let exporter_blocks: &[crate::config::PluginBlock] = match role {
        Role::Server => &config.exporters,
        Role::Client => {
            for block in &config.exporters {
                tracing::warn!(name = %block.name, "exporters run on servers (the leader exports the cluster's catalog); ignoring this block on a client");
            }
            &[]
        }
    };
    let exporters = crate::exporters::Exporters::start(
        exporter_blocks,
        plugins.clone(),
        consensus.export_feed(),
        consensus.leader_watch(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let dns = match role {
        Role::Server => Some(crate::dns::start(&config, &consensus).await?),
        Role::Client => {
            crate::cluster::dns_relay::start(config.dns_addr, cluster.clone()).await?;
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP API on {}", config.http_addr))?;
    tracing::info!(
        node = %config.node_name,
        http = %config.http_addr,
        dns = %config.dns_addr,
        datacenter = %config.datacenter,
        mode = if config.dev { "dev (in memory)" } else { role.as_str() },
        "muster agent running"
    );
    let state = Arc::new(AppState {
        config: Arc::new(config),
        consensus: consensus.clone(),
        agent: agent.clone(),
        plugins,
        sources,
        renders: Default::default(),
        cluster,
        exporters,
    });
    let router = api::router(state);
    if let Some(peers) = &peers {
        peers.set_router(router.clone());
    }
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
    api::serve(listener, router, shutdown).await?;
    if let Some(dns) = dns {
        dns.shutdown().await;
    }
    consensus.shutdown().await;
    Ok(())
}
