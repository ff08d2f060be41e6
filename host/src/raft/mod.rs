//! Consensus: openraft over a redb log, with the catalog as state machine.
//!
//! A single server is already a one-voter Raft cluster, so every write goes
//! through the same path (propose, fsync, commit, apply) that a multi-server
//! cluster uses.

// openraft's StorageError is large by design and is the type its traits
// require us to return; boxing it would only add conversions.
#![allow(clippy::result_large_err)]

#[cfg(test)]
mod cluster_tests;
mod log_store;
mod network;
mod proposer;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::watch;

use crate::catalog::{Command, Index, Request, Response};
use crate::watch::Watches;
pub use state_machine::Applied;

/// Raft node IDs: derived from the node's persistent UUID.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// muster's Raft types: catalog commands in, catalog responses out.
    pub TypeConfig:
        D = Request,
        R = Vec<Response>,
);

/// Where the Raft state lives.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Nothing on disk (`--dev`).
    Memory,
    /// `raft.redb` under this data directory.
    Disk(PathBuf),
}

/// How long a write forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    #[error("No cluster leader")]
    NoLeader,
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a consistent read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("No cluster leader")]
    NoLeader,
}

/// This server's consensus handle: propose writes, read the catalog.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft<TypeConfig>,
    id: NodeId,
    state: Arc<RwLock<Applied>>,
    applied: watch::Receiver<Index>,
    proposer: proposer::Proposer,
    /// Connections to the leader, for writes made on a follower.
    forwarder: Arc<network::Forwarder>,
    /// Kept rather than asked for per call: every HTTP answer reads it.
    metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    watches: Arc<Watches>,
}

impl Consensus {
    /// Opens the stores, starts Raft and, when this node is the only
    /// expected server, bootstraps a one-voter cluster on first start.
    /// `rpc`, when given, serves Raft RPCs from peers (a server in a
    /// cluster); a single server needs none.
    pub async fn start(
        id: NodeId,
        raft_addr: &str,
        storage: &Storage,
        bootstrap: bool,
        snapshot_threshold: u64,
        rpc: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<Consensus> {
        let watches = Arc::new(Watches::default());
        let (log, sm) = match storage {
            Storage::Memory => (
                log_store::LogStore::in_memory(),
                state_machine::StateMachine::open(None, None, watches.clone())?,
            ),
            Storage::Disk(dir) => {
                let path = dir.join("raft.redb");
                let db = Arc::new(open_db(&path)?);
                (
                    log_store::LogStore::open(db.clone(), &path)?,
                    state_machine::StateMachine::open(Some(db), Some(&path), watches.clone())?,
                )
            }
        };
        let config = Config {
            cluster_name: "muster".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_threshold),
            // Keep a tail behind each snapshot so a briefly lagging
            // follower catches up from the log rather than a snapshot.
            max_in_snapshot_log_to_keep: (snapshot_threshold / 2).min(1_000),
            ..Default::default()
        }
        .validate()
        .context("raft config")?;
        let state = sm.state();
        let applied = sm.subscribe();
        let raft = Raft::new(id, Arc::new(config), network::Network, log, sm)
            .await
            .context("starting raft")?;
        let proposer = proposer::Proposer::start(raft.clone());
        if let Some(listener) = rpc {
            network::serve(listener, raft.clone(), proposer.clone());
        }
        if bootstrap && !raft.is_initialized().await.context("raft state")? {
            let members = BTreeMap::from([(id, BasicNode::new(raft_addr))]);
            raft.initialize(members)
                .await
                .context("bootstrapping the cluster")?;
            tracing::info!(id, "bootstrapped a new single-server cluster");
        }
        Ok(Consensus {
            proposer,
            forwarder: Arc::new(network::Forwarder::default()),
            metrics: raft.metrics(),
            watches,
            raft,
            id,
            state,
            applied,
        })
    }

    /// Bootstraps a cluster of these voters (ID → Raft address), once, on
    /// one of them; a cluster that already has a membership keeps it.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> anyhow::Result<()> {
        if self.raft.is_initialized().await.context("raft state")? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.raft
            .initialize(members)
            .await
            .context("bootstrapping the cluster")
    }

    /// Waits until a leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if metrics.borrow_and_update().current_leader.is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Proposes `command` and waits until it is committed and applied. On
    /// a follower the write is forwarded to the leader, never rejected.
    pub async fn write(&self, command: Command) -> Result<(Index, Response), WriteError> {
        if self.is_leader() || !self.has_leader() {
            match self.proposer.propose(command.clone()).await {
                // Leadership moved while the write was queued.
                Err(WriteError::NoLeader) if self.has_leader() && !self.is_leader() => {}
                other => return other,
            }
        }
        let leader = self.leader_addr().ok_or(WriteError::NoLeader)?;
        self.forwarder
            .write(&leader, command, FORWARD_TIMEOUT)
            .await
    }

    /// Confirms leadership with a quorum and waits for the state machine
    /// to catch up, so that the next read is linearizable (`?consistent`).
    pub async fn linearize(&self) -> Result<(), ReadError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|_| ReadError::NoLeader)
    }

    /// The applied state; hold the lock only while reading.
    pub fn state(&self) -> &Arc<RwLock<Applied>> {
        &self.state
    }

    /// Changes whenever entries are applied: what blocking queries wait on.
    pub fn applied(&self) -> watch::Receiver<Index> {
        self.applied.clone()
    }

    /// Subscriptions for blocking queries.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// This node's Raft ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The leader's Raft address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.metrics.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.metrics.borrow().current_leader == Some(self.id)
    }

    /// Whether any leader is known (`X-Consul-KnownLeader`).
    pub fn has_leader(&self) -> bool {
        self.metrics.borrow().current_leader.is_some()
    }

    /// Raft addresses of the voters.
    pub fn peers(&self) -> Vec<String> {
        let m = self.metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect()
    }

    /// Stops Raft, letting the log writer flush.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Opens (or creates) the redb file, turning redb's errors into one that
/// names the file, so that a corrupt store stops the node loudly.
fn open_db(path: &Path) -> anyhow::Result<redb::Database> {
    redb::Database::create(path).with_context(|| {
        format!(
            "cannot open the data file {} (corrupt, truncated or locked by another muster?)",
            path.display()
        )
    })
}
