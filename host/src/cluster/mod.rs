//! Membership: how servers find each other and bootstrap Raft once
//! `bootstrap_expect` of them are present, how later servers join (as
//! learners, then voters), how client agents attach to the servers, and how
//! the leader notices a node that went silent (its `serfHealth` check goes
//! critical, so its services leave healthy answers).
//!
//! Everything travels on the Raft transport (`addresses.server`); the
//! catalog itself is the member list: each node registers with meta naming
//! its role and addresses.

pub mod anti_entropy;
pub mod dns_relay;
mod failure;
pub mod rpc;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::catalog::types::CheckStatus;
use crate::catalog::{Catalog, Command, Index, Response};
use crate::raft::{Consensus, Forwarder, WriteError};
use anti_entropy::NodeState;
use rpc::{ClusterRequest, ClusterResponse, MemberInfo, Role};

/// Node meta keys every agent registers with.
pub const META_ROLE: &str = "muster-role";
pub const META_RPC: &str = "muster-rpc";
pub const META_HTTP: &str = "muster-http";
pub const META_DNS: &str = "muster-dns";

/// `serfHealth` outputs, which also tell members' status apart.
pub const ALIVE_OUTPUT: &str = "Agent alive and reachable";
pub const FAILED_OUTPUT: &str = "Agent not live or unreachable";
pub const LEFT_OUTPUT: &str = "Node left the cluster";

/// How long one cluster RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a join attempt waits between rounds.
const JOIN_ROUND: Duration = Duration::from_millis(500);

/// A member's state as `muster members` shows it (Serf's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Alive = 1,
    Left = 3,
    Failed = 4,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// A node as the member list shows it.
pub struct Member {
    pub name: String,
    pub address: String,
    pub role: Role,
    pub status: MemberStatus,
    pub id: String,
    pub rpc_port: u16,
}

/// Every node of the catalog that registered as an agent (with a role).
pub fn members(catalog: &Catalog) -> Vec<Member> {
    catalog
        .nodes()
        .filter_map(|n| {
            let role = match n.meta.get(META_ROLE).map(String::as_str) {
                Some("server") => Role::Server,
                Some("client") => Role::Client,
                _ => return None,
            };
            let status = match catalog.check(&n.name, crate::agent::NODE_CHECK_ID) {
                Some(c) if c.status == CheckStatus::Passing => MemberStatus::Alive,
                Some(c) if c.output == LEFT_OUTPUT => MemberStatus::Left,
                _ => MemberStatus::Failed,
            };
            let rpc_port = n
                .meta
                .get(META_RPC)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            Some(Member {
                name: n.name.clone(),
                address: n.address.clone(),
                role,
                status,
                id: n.id.clone(),
                rpc_port,
            })
        })
        .collect()
}

/// The servers the catalog knows, with their addresses.
fn catalog_servers(catalog: &Catalog) -> Vec<MemberInfo> {
    catalog
        .nodes()
        .filter(|n| n.meta.get(META_ROLE).map(String::as_str) == Some("server"))
        .filter_map(|n| {
            Some(MemberInfo {
                id: 0,
                name: n.name.clone(),
                role: Role::Server,
                rpc: n.meta.get(META_RPC)?.clone(),
                http: n.meta.get(META_HTTP).cloned().unwrap_or_default(),
                dns: n.meta.get(META_DNS).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// The settings membership runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bootstrap_expect: u32,
    pub retry_join: Vec<String>,
    pub node_timeout: Duration,
    /// Client agents: how often anti-entropy compares everything.
    pub sync_interval: Duration,
}

/// This node's part in membership.
pub struct Cluster {
    pub me: MemberInfo,
    settings: Settings,
    /// The cluster's Raft (servers only; a client's private catalog is not
    /// here).
    consensus: Option<Consensus>,
    rpc: Forwarder,
    /// Servers heard of (by `addresses.server`), from join answers.
    known: Mutex<BTreeMap<String, MemberInfo>>,
    /// Where the leader is, as last heard (client agents).
    leader_hint: Mutex<Option<String>>,
    /// Rotates client calls over the servers when the leader is unknown.
    next_server: AtomicUsize,
    /// Set once this node is part of the cluster.
    joined: AtomicBool,
    /// Fired on every (re)join, so anti-entropy compares everything.
    rejoined: Arc<Notify>,
    /// Set by a graceful leave: heartbeats stop.
    leaving: AtomicBool,
    /// Leader side: when each node's last heartbeat arrived.
    last_seen: Mutex<HashMap<String, tokio::time::Instant>>,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("No cluster leader")]
    NoLeader,
    #[error("no server known yet (set retry_join, or run `muster join ADDR`)")]
    NoServer,
    #[error("{0}")]
    Rpc(String),
    #[error("raft: {0}")]
    Raft(String),
}

impl Cluster {
    pub fn new(me: MemberInfo, settings: Settings, consensus: Option<Consensus>) -> Arc<Cluster> {
        Arc::new(Cluster {
            me,
            settings,
            consensus,
            rpc: Forwarder::default(),
            known: Mutex::new(BTreeMap::new()),
            leader_hint: Mutex::new(None),
            next_server: AtomicUsize::new(0),
            joined: AtomicBool::new(false),
            rejoined: Arc::new(Notify::new()),
            leaving: AtomicBool::new(false),
            last_seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn role(&self) -> Role {
        self.me.role
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Fired whenever this node (re)joins.
    pub fn rejoined(&self) -> Arc<Notify> {
        self.rejoined.clone()
    }

    /// The node meta an agent registers with.
    pub fn node_meta(&self) -> crate::catalog::types::Meta {
        let mut meta = crate::catalog::types::Meta::new();
        meta.insert(META_ROLE.into(), self.me.role.as_str().into());
        if self.me.role == Role::Server {
            meta.insert(META_RPC.into(), self.me.rpc.clone());
        }
        meta.insert(META_HTTP.into(), self.me.http.clone());
        meta.insert(META_DNS.into(), self.me.dns.clone());
        meta
    }

    /// Every server this node has heard of.
    pub fn servers(&self) -> Vec<MemberInfo> {
        let mut all: BTreeMap<String, MemberInfo> =
            self.known.lock().map(|k| k.clone()).unwrap_or_default();
        if let Some(c) = &self.consensus {
            if let Ok(st) = c.state().read() {
                for s in catalog_servers(&st.catalog) {
                    all.entry(s.rpc.clone()).or_insert(s);
                }
            }
        }
        if self.me.role == Role::Server {
            all.insert(self.me.rpc.clone(), self.me.clone());
        }
        all.into_values().collect()
    }

    fn learn(&self, servers: &[MemberInfo], leader: Option<&String>) {
        if let Ok(mut known) = self.known.lock() {
            for s in servers {
                if s.rpc != self.me.rpc && !s.rpc.is_empty() {
                    let slot = known.entry(s.rpc.clone()).or_insert_with(|| s.clone());
                    // Keep the Raft ID when one side of the answer had it.
                    if s.id != 0 {
                        *slot = s.clone();
                    }
                }
            }
        }
        if self.me.role == Role::Client {
            if let Ok(mut hint) = self.leader_hint.lock() {
                *hint = leader.cloned();
            }
        }
    }

    /// The leader's `addresses.server`, as this node knows it.
    pub fn leader_addr(&self) -> Option<String> {
        match &self.consensus {
            Some(c) => c.leader_addr(),
            None => self.leader_hint.lock().ok().and_then(|h| h.clone()),
        }
    }

    /// Where a client agent sends a request: the leader if known, else the
    /// servers in turn.
    pub fn server_target(&self) -> Result<String, ClusterError> {
        if let Some(l) = self.leader_addr() {
            return Ok(l);
        }
        let servers: Vec<String> = self
            .servers()
            .into_iter()
            .map(|s| s.rpc)
            .chain(self.settings.retry_join.iter().cloned())
            .collect();
        if servers.is_empty() {
            return Err(ClusterError::NoServer);
        }
        let i = self.next_server.fetch_add(1, Ordering::Relaxed);
        Ok(servers[i % servers.len()].clone())
    }

    pub fn forget_leader(&self) {
        if let Ok(mut hint) = self.leader_hint.lock() {
            *hint = None;
        }
    }

    /// The RPC client, for forwarding HTTP requests.
    pub fn rpc(&self) -> &Forwarder {
        &self.rpc
    }

    /// A write from a client agent: to the leader (or any server, which
    /// forwards it), trying another server when one cannot be reached.
    pub async fn write(&self, command: Command) -> Result<(Index, Response), ClusterError> {
        if let Some(c) = &self.consensus {
            return c.write(command).await.map_err(write_error);
        }
        let mut last = ClusterError::NoServer;
        for _ in 0..3 {
            let target = self.server_target()?;
            match self
                .rpc
                .cluster(
                    &target,
                    ClusterRequest::Write(command.clone()),
                    RPC_TIMEOUT * 2,
                )
                .await
            {
                Ok(ClusterResponse::Written(r)) => return r.map_err(write_error),
                Ok(_) => last = ClusterError::Rpc(format!("{target} answered a different RPC")),
                Err(e) => last = ClusterError::Rpc(e),
            }
            self.forget_leader();
        }
        Err(last)
    }

    /// Independent writes in one request (client anti-entropy); how many
    /// of them failed.
    pub async fn write_batch(&self, commands: Vec<Command>) -> Result<usize, ClusterError> {
        let target = self.server_target()?;
        match self
            .rpc
            .cluster(
                &target,
                ClusterRequest::WriteBatch(commands),
                RPC_TIMEOUT * 6,
            )
            .await
        {
            Ok(ClusterResponse::WrittenBatch(results)) => {
                Ok(results.iter().filter(|r| r.is_err()).count())
            }
            Ok(_) => Err(ClusterError::Rpc(format!(
                "{target} answered a different RPC"
            ))),
            Err(e) => {
                self.forget_leader();
                Err(ClusterError::Rpc(e))
            }
        }
    }

    /// What the servers' catalog holds for `node` (client anti-entropy).
    pub async fn node_view(&self, node: &str) -> Result<NodeState, ClusterError> {
        let target = self.server_target()?;
        match self
            .rpc
            .cluster(
                &target,
                ClusterRequest::NodeView { node: node.into() },
                RPC_TIMEOUT,
            )
            .await
        {
            Ok(ClusterResponse::NodeView(v)) => Ok(v.unwrap_or_default()),
            Ok(_) => Err(ClusterError::Rpc(format!(
                "{target} answered a different RPC"
            ))),
            Err(e) => {
                self.forget_leader();
                Err(ClusterError::Rpc(e))
            }
        }
    }

    /// Answers a peer's cluster request (servers).
    pub async fn handle(&self, request: ClusterRequest) -> Result<ClusterResponse, String> {
        let Some(consensus) = &self.consensus else {
            return Err("a client agent serves no cluster requests".into());
        };
        match request {
            ClusterRequest::Hello { me, .. } => {
                if me.role == Role::Server {
                    self.learn(std::slice::from_ref(&me), None);
                }
                Ok(ClusterResponse::Welcome {
                    initialized: consensus.is_initialized(),
                    leader: consensus.leader_addr(),
                    servers: self.servers(),
                })
            }
            ClusterRequest::AddServer(info) => {
                if !consensus.is_leader() {
                    return Err("not the leader".into());
                }
                consensus
                    .add_voter(info.id, &info.rpc)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(server = %info.name, addr = %info.rpc, "server joined the Raft voters");
                Ok(ClusterResponse::Done)
            }
            ClusterRequest::RemoveServer { id } => {
                if !consensus.is_leader() {
                    return Err("not the leader".into());
                }
                consensus
                    .remove_voter(id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(ClusterResponse::Done)
            }
            ClusterRequest::Heartbeat { node } => {
                if consensus.is_leader() {
                    self.saw(&node);
                } else if let Some(leader) = consensus.leader_addr() {
                    // Relayed once; the leader does not relay again.
                    let _ = self
                        .rpc
                        .cluster(&leader, ClusterRequest::Heartbeat { node }, RPC_TIMEOUT)
                        .await;
                }
                Ok(ClusterResponse::Alive {
                    leader: consensus.leader_addr(),
                    servers: self.servers(),
                })
            }
            ClusterRequest::NodeView { node } => {
                let st = consensus
                    .state()
                    .read()
                    .map_err(|_| "catalog lock poisoned".to_string())?;
                Ok(ClusterResponse::NodeView(
                    st.catalog
                        .node(&node)
                        .is_some()
                        .then(|| NodeState::read(&st.catalog, &node)),
                ))
            }
            ClusterRequest::Write(command) => {
                Ok(ClusterResponse::Written(consensus.write(command).await))
            }
            ClusterRequest::WriteBatch(commands) => {
                let writes = commands.into_iter().map(|c| consensus.write(c));
                Ok(ClusterResponse::WrittenBatch(
                    futures::future::join_all(writes).await,
                ))
            }
        }
    }

    /// Records a heartbeat (leader side).
    fn saw(&self, node: &str) {
        if let Ok(mut seen) = self.last_seen.lock() {
            seen.insert(node.to_string(), tokio::time::Instant::now());
        }
    }

    /// One join attempt against `addr`: learns the servers it knows.
    pub async fn hello(&self, addr: &str) -> Result<(bool, Option<String>), ClusterError> {
        let answer = self
            .rpc
            .cluster(
                addr,
                ClusterRequest::Hello {
                    me: self.me.clone(),
                    bootstrap_expect: self.settings.bootstrap_expect,
                },
                RPC_TIMEOUT,
            )
            .await
            .map_err(ClusterError::Rpc)?;
        match answer {
            ClusterResponse::Welcome {
                initialized,
                leader,
                servers,
            } => {
                self.learn(&servers, leader.as_ref());
                Ok((initialized, leader))
            }
            _ => Err(ClusterError::Rpc(format!(
                "{addr} answered a different RPC"
            ))),
        }
    }

    /// `muster join ADDR`: one attempt, which also wakes the join loop.
    pub async fn join(&self, addr: &str) -> Result<(), ClusterError> {
        self.hello(addr).await?;
        if let Ok(mut known) = self.known.lock() {
            known.entry(addr.to_string()).or_insert_with(|| MemberInfo {
                id: 0,
                name: String::new(),
                role: Role::Server,
                rpc: addr.to_string(),
                http: String::new(),
                dns: String::new(),
            });
        }
        Ok(())
    }

    /// Whether this node has joined (a server: is in the Raft
    /// configuration; a client: has heard from a server).
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Starts the join loop and heartbeats (and, on servers, the failure
    /// detector).
    pub fn start(self: &Arc<Cluster>, agent_name: String) {
        let me = self.clone();
        tokio::spawn(async move { me.run_join().await });
        let me = self.clone();
        let name = agent_name.clone();
        tokio::spawn(async move { me.run_heartbeats(name).await });
        if let Some(consensus) = &self.consensus {
            let me = self.clone();
            let consensus = consensus.clone();
            tokio::spawn(async move { failure::run(me, consensus, agent_name).await });
        }
    }

    fn join_targets(&self) -> Vec<String> {
        let mut targets: Vec<String> = self.settings.retry_join.clone();
        for s in self.servers() {
            if !targets.contains(&s.rpc) {
                targets.push(s.rpc);
            }
        }
        targets.retain(|t| *t != self.me.rpc);
        targets
    }

    async fn run_join(self: Arc<Cluster>) {
        let mut waited = tokio::time::Instant::now();
        loop {
            if self.joined_now().await {
                if !self.joined.swap(true, Ordering::Relaxed) {
                    tracing::info!(role = self.me.role.as_str(), "joined the cluster");
                    self.rejoined.notify_one();
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            if self.me.role == Role::Server {
                self.server_round().await;
            } else {
                for t in self.join_targets() {
                    if self.hello(&t).await.is_ok() {
                        break;
                    }
                }
            }
            if waited.elapsed() > Duration::from_secs(10) {
                waited = tokio::time::Instant::now();
                tracing::warn!(
                    known = self.servers().len(),
                    expect = self.settings.bootstrap_expect,
                    targets = ?self.join_targets(),
                    "still waiting to join a cluster"
                );
            }
            tokio::time::sleep(JOIN_ROUND).await;
        }
    }

    async fn joined_now(&self) -> bool {
        match &self.consensus {
            Some(c) => c.is_voter(),
            None => {
                self.leader_addr().is_some()
                    || !self.known.lock().map(|k| k.is_empty()).unwrap_or(true)
            }
        }
    }

    /// A server's join round: ask every known server; join an existing
    /// cluster through its leader, or, when none exists yet and enough
    /// servers are present, bootstrap (only the lowest ID does, with every
    /// server it knows as a voter, so that two clusters never form).
    async fn server_round(&self) {
        let Some(consensus) = &self.consensus else {
            return;
        };
        let mut cluster_leader = None;
        let mut someone_initialized = consensus.is_initialized();
        let mut answered = 0;
        for t in self.join_targets() {
            if let Ok((initialized, leader)) = self.hello(&t).await {
                answered += 1;
                someone_initialized |= initialized;
                if initialized && leader.is_some() {
                    cluster_leader = leader;
                }
            }
        }
        if let Some(leader) = cluster_leader {
            match self
                .rpc
                .cluster(
                    &leader,
                    ClusterRequest::AddServer(self.me.clone()),
                    RPC_TIMEOUT * 6,
                )
                .await
            {
                Ok(_) => tracing::info!(%leader, "asked the leader to add this server"),
                Err(e) => {
                    tracing::debug!(%leader, error = %e, "join through the leader failed; retrying")
                }
            }
            return;
        }
        let expect = self.settings.bootstrap_expect as usize;
        if someone_initialized || expect < 2 {
            return;
        }
        let servers: Vec<MemberInfo> = self.servers().into_iter().filter(|s| s.id != 0).collect();
        let lowest = servers.iter().map(|s| s.id).min();
        if servers.len() >= expect && answered + 1 >= expect && lowest == Some(self.me.id) {
            let voters: BTreeMap<u64, String> =
                servers.iter().map(|s| (s.id, s.rpc.clone())).collect();
            tracing::info!(voters = ?voters.values().collect::<Vec<_>>(), "bootstrapping the cluster: {expect} servers present");
            if let Err(e) = consensus.initialize(voters).await {
                tracing::warn!(error = %e, "bootstrap failed");
            }
        }
    }

    async fn run_heartbeats(self: Arc<Cluster>, node: String) {
        let every = (self.settings.node_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            if self.leaving.load(Ordering::Relaxed) {
                return;
            }
            if let Some(c) = &self.consensus {
                if c.is_leader() {
                    self.saw(&node);
                    continue;
                }
            }
            let Ok(target) = self.server_target() else {
                continue;
            };
            match self
                .rpc
                .cluster(
                    &target,
                    ClusterRequest::Heartbeat { node: node.clone() },
                    every * 2,
                )
                .await
            {
                Ok(ClusterResponse::Alive { leader, servers }) => {
                    let was_unknown = self.me.role == Role::Client && self.leader_addr().is_none();
                    self.learn(&servers, leader.as_ref());
                    if was_unknown && leader.is_some() {
                        self.rejoined.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%target, error = %e, "heartbeat failed");
                    self.forget_leader();
                }
            }
        }
    }

    /// A graceful leave: stop heartbeating, mark this node left, and (a
    /// server) leave the Raft voters.
    pub async fn leave(&self, node: &str) -> Result<(), ClusterError> {
        self.leaving.store(true, Ordering::Relaxed);
        self.write(Command::UpdateCheck {
            node: node.into(),
            check_id: crate::agent::NODE_CHECK_ID.into(),
            status: CheckStatus::Critical,
            output: LEFT_OUTPUT.into(),
        })
        .await?;
        if let Some(c) = &self.consensus {
            if c.voter_count() > 1 {
                self.remove_server(self.me.id).await?;
            }
        }
        Ok(())
    }

    /// Removes a server from the Raft voters, through the leader.
    pub async fn remove_server(&self, id: u64) -> Result<(), ClusterError> {
        let Some(c) = &self.consensus else {
            return Err(ClusterError::Rpc(
                "only servers change the Raft configuration".into(),
            ));
        };
        if c.is_leader() {
            return c
                .remove_voter(id)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()));
        }
        let leader = c.leader_addr().ok_or(ClusterError::NoLeader)?;
        self.rpc
            .cluster(
                &leader,
                ClusterRequest::RemoveServer { id },
                RPC_TIMEOUT * 6,
            )
            .await
            .map(|_| ())
            .map_err(ClusterError::Rpc)
    }
}

fn write_error(e: WriteError) -> ClusterError {
    match e {
        WriteError::NoLeader => ClusterError::NoLeader,
        WriteError::Raft(m) => ClusterError::Raft(m),
    }
}
