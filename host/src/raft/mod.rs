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
mod read_barrier;
mod state_machine;

pub use network::{Forwarder, RpcServices};

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::watch;

use crate::catalog::{Command, Index, Request, Response};
use crate::exporters::feed::ExportFeed;
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
    feed: Arc<ExportFeed>,
    /// Coalesces `?consistent` reads: one leadership confirmation serves
    /// every read that arrived before it started.
    reads: Arc<read_barrier::ReadBarrier>,
    /// When the leader last sent entries or a heartbeat (ms on `clock`).
    last_contact: Arc<std::sync::atomic::AtomicU64>,
    clock: tokio::time::Instant,
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
    ) -> anyhow::Result<Consensus> {
        let watches = Arc::new(Watches::default());
        let feed = Arc::new(ExportFeed::default());
        let (log, sm) = match storage {
            Storage::Memory => (
                log_store::LogStore::in_memory(),
                state_machine::StateMachine::open(None, None, watches.clone(), feed.clone())?,
            ),
            Storage::Disk(dir) => {
                let path = dir.join("raft.redb");
                let db = Arc::new(open_db(&path)?);
                (
                    log_store::LogStore::open(db.clone(), &path)?,
                    state_machine::StateMachine::open(
                        Some(db),
                        Some(&path),
                        watches.clone(),
                        feed.clone(),
                    )?,
                )
            }
        };
        let config = Config {
            cluster_name: "muster".into(),
            // openraft lets a follower stand for election only after the
            // leader lease (election_timeout_max) plus its own randomized
            // timeout: 400 + 200..400 ms of silence, so a dead leader is
            // replaced in about 0.6-0.8 s (bench/failover). openraft also
            // gives every AppendEntries (follower fsync included) only one
            // heartbeat interval to answer: at 50 ms, followers busy with
            // fsyncs under load timed out, reconnected and lost the leader;
            // 150 ms leaves room and still beats four times per election
            // timeout.
            heartbeat_interval: 150,
            election_timeout_min: 200,
            election_timeout_max: 400,
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
            feed,
            reads: Arc::new(read_barrier::ReadBarrier::new(raft.clone())),
            last_contact: Default::default(),
            clock: tokio::time::Instant::now(),
            raft,
            id,
            state,
            applied,
        })
    }

    /// Serves peers on `listener`: Raft, forwarded writes, and `services`
    /// (the cluster protocol and forwarded HTTP requests).
    pub fn serve_rpc(&self, listener: tokio::net::TcpListener, services: Arc<dyn RpcServices>) {
        network::serve(
            listener,
            network::Served {
                raft: self.raft.clone(),
                proposer: self.proposer.clone(),
                services,
                last_contact: self.last_contact.clone(),
                clock: self.clock,
            },
        );
    }

    /// Milliseconds since the leader was last heard from (0 on the leader),
    /// for `X-Consul-LastContact`.
    pub fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            return 0;
        }
        let at = self.last_contact.load(std::sync::atomic::Ordering::Relaxed);
        (self.clock.elapsed().as_millis() as u64).saturating_sub(at)
    }

    /// Whether this server belongs to a Raft configuration yet.
    pub fn is_initialized(&self) -> bool {
        let m = self.metrics.borrow();
        let initialized = m.membership_config.membership().nodes().next().is_some();
        initialized
    }

    /// Whether this server is a voter of the configuration it knows.
    pub fn is_voter(&self) -> bool {
        let m = self.metrics.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        voter
    }

    /// How many voters the configuration has.
    pub fn voter_count(&self) -> usize {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    /// The configuration: (ID, Raft address, voter?) of every member.
    pub fn membership(&self) -> Vec<(NodeId, String, bool)> {
        let m = self.metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect()
    }

    /// The ID of the member at this Raft address, if any.
    pub fn member_id(&self, addr: &str) -> Option<NodeId> {
        self.membership()
            .into_iter()
            .find(|(_, a, _)| a == addr)
            .map(|(id, _, _)| id)
    }

    /// The Raft index of the configuration in force.
    pub fn membership_index(&self) -> u64 {
        self.metrics
            .borrow()
            .membership_config
            .log_id()
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Adds a server (leader only): first as a learner that catches up,
    /// then as a voter. Already a voter: nothing to do.
    pub async fn add_voter(&self, id: NodeId, addr: &str) -> anyhow::Result<()> {
        if self
            .membership()
            .iter()
            .any(|(m, _, voter)| *m == id && *voter)
        {
            return Ok(());
        }
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .context("adding the server as a learner")?;
        let mut voters: std::collections::BTreeSet<NodeId> = self
            .membership()
            .into_iter()
            .filter(|(_, _, v)| *v)
            .map(|(m, _, _)| m)
            .collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .context("promoting the server to voter")?;
        Ok(())
    }

    /// Removes a server from the configuration (leader only).
    pub async fn remove_voter(&self, id: NodeId) -> anyhow::Result<()> {
        let members = self.membership();
        if !members.iter().any(|(m, _, _)| *m == id) {
            anyhow::bail!("no server with ID {id} in the Raft configuration");
        }
        let voters: std::collections::BTreeSet<NodeId> = members
            .into_iter()
            .filter(|(m, _, v)| *v && *m != id)
            .map(|(m, _, _)| m)
            .collect();
        if voters.is_empty() {
            anyhow::bail!("cannot remove the last voter");
        }
        self.raft
            .change_membership(voters, false)
            .await
            .context("removing the server")?;
        Ok(())
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
        self.reads.confirm().await
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

    /// The catalog's service-instance changes, for exporters.
    pub fn export_feed(&self) -> Arc<ExportFeed> {
        self.feed.clone()
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

    /// Whether this node is the leader, as a watch that changes with it.
    pub fn leader_watch(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.is_leader());
        let mut metrics = self.metrics.clone();
        let id = self.id;
        tokio::spawn(async move {
            loop {
                let leader = metrics.borrow_and_update().current_leader == Some(id);
                tx.send_if_modified(|was| std::mem::replace(was, leader) != leader);
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
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
