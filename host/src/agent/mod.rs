//! This node's agent: its identity in the catalog, the services and checks
//! registered through `/v1/agent/...`, TTL checks, the critical-service
//! reaper, and (while this server leads) session TTL expiry.
//!
//! On a server the agent writes straight through Raft; the services of this
//! node in the catalog *are* the agent's local services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::ApiError;
use crate::catalog::command::{CheckSpec, NodeSpec, Registration, ServiceSpec};
use crate::catalog::types::Check;
use crate::catalog::types::{CheckDefinition, CheckStatus};
use crate::catalog::{Command, Response};
use crate::health::scheduler::{Probe, Report, Scheduler};
use crate::health::{CriticalSince, TtlTracker};
use crate::plugins::Plugins;
use crate::raft::Consensus;

/// The node-level check every agent keeps passing, as Consul's `serfHealth`.
pub const NODE_CHECK_ID: &str = "serfHealth";

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub address: String,
    /// Node meta: the role and addresses other members find it by.
    pub meta: crate::catalog::types::Meta,
}

/// The node-level check in `status`, as an agent registers it.
pub fn node_check(status: CheckStatus) -> CheckSpec {
    CheckSpec {
        id: NODE_CHECK_ID.into(),
        name: "Serf Health Status".into(),
        status,
        notes: String::new(),
        output: crate::cluster::ALIVE_OUTPUT.into(),
        service_id: String::new(),
        definition: CheckDefinition::default(),
    }
}

/// The agent; one per process.
pub struct Agent {
    pub identity: Identity,
    consensus: Consensus,
    ttl: TtlTracker,
    critical: CriticalSince,
    /// Runs this node's HTTP, TCP and WebAssembly checks.
    pub probes: Scheduler,
    reports: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Report>>>,
    /// Session TTL deadlines, kept by the leader only (as Consul does).
    session_deadlines: Mutex<HashMap<String, Instant>>,
    /// Fired by `PUT /v1/agent/leave`.
    pub leave: Notify,
    /// (when, applied index) samples, oldest first, for tombstone GC.
    index_history: Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

/// How long a KV tombstone is kept (Consul's default): long enough for
/// blocking queries on a deleted prefix to see the delete's index.
const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

impl Agent {
    /// Creates the agent; `start` registers it and spawns its tasks.
    pub fn new(identity: Identity, consensus: Consensus, plugins: Plugins) -> Arc<Agent> {
        let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Agent {
            identity,
            consensus,
            ttl: TtlTracker::default(),
            critical: CriticalSince::default(),
            probes: Scheduler::new(plugins, report_tx),
            reports: Mutex::new(Some(report_rx)),
            session_deadlines: Mutex::new(HashMap::new()),
            leave: Notify::new(),
            index_history: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    fn node_spec(&self) -> NodeSpec {
        NodeSpec {
            id: self.identity.node_id.clone(),
            name: self.identity.node_name.clone(),
            address: self.identity.address.clone(),
            datacenter: self.identity.datacenter.clone(),
            tagged_addresses: [
                ("lan".to_string(), self.identity.address.clone()),
                ("wan".to_string(), self.identity.address.clone()),
            ]
            .into(),
            meta: self.identity.meta.clone(),
        }
    }

    /// Registers this node and its node check, re-arms TTL checks found in
    /// the catalog (after a restart), and starts the background tasks.
    pub async fn start(self: &Arc<Agent>) -> anyhow::Result<()> {
        let reg = Registration {
            node: self.node_spec(),
            skip_node_update: false,
            service: None,
            checks: vec![node_check(CheckStatus::Passing)],
        };
        self.write(Command::Register(reg))
            .await
            .map_err(|e| anyhow::anyhow!("registering this node: {}", e.message))?;
        let ttls: Vec<(String, u64)> = {
            let st = self
                .consensus
                .state()
                .read()
                .map_err(|_| anyhow::anyhow!("catalog lock poisoned"))?;
            st.catalog
                .node_checks(&self.identity.node_name)
                .filter(|c| c.definition.kind == "ttl")
                .map(|c| (c.id.clone(), c.definition.ttl_ms))
                .collect()
        };
        for (id, ms) in ttls {
            self.ttl.arm(&id, Duration::from_millis(ms));
        }
        self.arm_probes(None)?;
        let reports = self
            .reports
            .lock()
            .map_err(|_| anyhow::anyhow!("agent lock poisoned"))?
            .take();
        if let Some(rx) = reports {
            let me = self.clone();
            tokio::spawn(async move { me.run_reports(rx).await });
        }
        let me = self.clone();
        tokio::spawn(async move { me.run_ttl().await });
        let me = self.clone();
        tokio::spawn(async move { me.run_housekeeping().await });
        Ok(())
    }

    /// The applied catalog, for reading.
    pub fn catalog(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, crate::raft::Applied>, ApiError> {
        crate::api::catalog_read(&self.consensus)
    }

    /// Proposes a command; a rejection becomes an error with Consul's text.
    pub async fn write(&self, cmd: Command) -> Result<Response, ApiError> {
        let (_, r) = self.consensus.write(cmd).await?;
        match r {
            Response::Rejected(m) => Err(ApiError::internal(m)),
            other => Ok(other),
        }
    }

    /// Registers a service (and/or checks) on this node.
    pub async fn register(
        &self,
        service: Option<ServiceSpec>,
        mut checks: Vec<CheckSpec>,
    ) -> Result<(), ApiError> {
        // Re-registering keeps a known check's current status and output,
        // as Consul does: a restarting app must not flap its instance (or
        // lose the sessions bound to the check) by registering again.
        {
            let st = crate::api::catalog_read(&self.consensus)?;
            for spec in &mut checks {
                if let Some(existing) = st.catalog.check(&self.identity.node_name, &spec.id) {
                    spec.status = existing.status;
                    spec.output = existing.output.clone();
                }
            }
        }
        let ttls: Vec<(String, u64)> = checks
            .iter()
            .filter(|c| c.definition.kind == "ttl")
            .map(|c| (c.id.clone(), c.definition.ttl_ms))
            .collect();
        let ids: Vec<String> = checks.iter().map(|c| c.id.clone()).collect();
        let service_id = service.as_ref().map(|s| s.id.clone());
        let reg = Registration {
            node: self.node_spec(),
            skip_node_update: true,
            service,
            checks,
        };
        self.write(Command::Register(reg)).await?;
        for (id, ms) in ttls {
            self.ttl.arm(&id, Duration::from_millis(ms));
        }
        self.arm_probes(Some((&ids, service_id.as_deref())))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(())
    }

    /// What a probe check examines: its service's address and port, else
    /// this node's address.
    fn probe_for(&self, st: &crate::catalog::Catalog, check: &Check) -> Probe {
        let service = (!check.service_id.is_empty())
            .then(|| st.service(&self.identity.node_name, &check.service_id))
            .flatten();
        let address = service
            .map(|s| s.address.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.identity.address.clone());
        Probe {
            check_id: check.id.clone(),
            definition: check.definition.clone(),
            service_id: check.service_id.clone(),
            service_name: check.service_name.clone(),
            address,
            port: service.map(|s| s.port).unwrap_or(0),
        }
    }

    /// (Re)starts the probes of this node's checks as the catalog has them
    /// (all of them, or only those in `only`: these check IDs and the checks
    /// of this service, whose address may have moved); checks that are no
    /// longer probes stop.
    fn arm_probes(&self, only: Option<(&[String], Option<&str>)>) -> anyhow::Result<()> {
        let st = self
            .consensus
            .state()
            .read()
            .map_err(|_| anyhow::anyhow!("catalog lock poisoned"))?;
        let node = self.identity.node_name.as_str();
        let arm = |check: &Check| {
            if check.definition.is_probe() {
                self.probes.schedule(self.probe_for(&st.catalog, check));
            } else {
                self.probes.cancel(&check.id);
            }
        };
        match only {
            // Just what a registration touched, looked up by key: a node
            // with 100,000 services must not rescan them all per request.
            Some((ids, service)) => {
                let mut seen = std::collections::HashSet::new();
                let named = ids.iter().filter_map(|id| st.catalog.check(node, id));
                let of_service = service
                    .into_iter()
                    .flat_map(|s| st.catalog.instance_checks(node, s))
                    .filter(|c| Some(c.service_id.as_str()) == service);
                for check in named.chain(of_service) {
                    if seen.insert(check.id.as_str()) {
                        arm(check);
                    }
                }
            }
            None => st.catalog.node_checks(node).for_each(arm),
        }
        Ok(())
    }

    /// Records probe results: drains what has queued up, keeps the latest
    /// per check, and writes (concurrently, so the proposer batches them)
    /// only those that differ from the catalog.
    async fn run_reports(self: Arc<Agent>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Report>) {
        while let Some(first) = rx.recv().await {
            let mut latest: HashMap<String, Report> = HashMap::new();
            latest.insert(first.check_id.clone(), first);
            while let Ok(more) = rx.try_recv() {
                latest.insert(more.check_id.clone(), more);
            }
            let due: Vec<Report> = {
                let Ok(st) = self.consensus.state().read() else {
                    continue;
                };
                latest
                    .into_values()
                    .filter(|r| {
                        st.catalog
                            .check(&self.identity.node_name, &r.check_id)
                            .is_some_and(|c| c.status != r.status || c.output != r.output)
                    })
                    .collect()
            };
            let writes = due.into_iter().map(|r| {
                let me = self.clone();
                async move {
                    let cmd = Command::UpdateCheck {
                        node: me.identity.node_name.clone(),
                        check_id: r.check_id.clone(),
                        status: r.status,
                        output: r.output,
                    };
                    match me.write(cmd).await {
                        Ok(_) => me.probes.stats.record_write(),
                        Err(e) => {
                            tracing::warn!(check = %r.check_id, error = %e.message, "recording check result")
                        }
                    }
                }
            });
            futures::future::join_all(writes).await;
        }
    }

    /// Removes a service of this node and its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), ApiError> {
        let check_ids: Vec<String> = {
            let st = crate::api::catalog_read(&self.consensus)?;
            if st.catalog.service(&self.identity.node_name, id).is_none() {
                return Err(ApiError::not_found(format!("Unknown service ID \"{id}\"")));
            }
            st.catalog
                .node_checks(&self.identity.node_name)
                .filter(|c| c.service_id == id)
                .map(|c| c.id.clone())
                .collect()
        };
        self.write(Command::Deregister {
            node: self.identity.node_name.clone(),
            service_id: Some(id.to_string()),
            check_id: None,
        })
        .await?;
        for c in check_ids {
            self.ttl.disarm(&c);
            self.probes.cancel(&c);
        }
        Ok(())
    }

    /// Removes a check of this node.
    pub async fn deregister_check(&self, id: &str) -> Result<(), ApiError> {
        self.ensure_check(id)?;
        self.write(Command::Deregister {
            node: self.identity.node_name.clone(),
            service_id: None,
            check_id: Some(id.to_string()),
        })
        .await?;
        self.ttl.disarm(id);
        self.probes.cancel(id);
        Ok(())
    }

    fn ensure_check(&self, id: &str) -> Result<(), ApiError> {
        let st = crate::api::catalog_read(&self.consensus)?;
        if st.catalog.check(&self.identity.node_name, id).is_none() {
            return Err(ApiError::not_found(format!(
                "Unknown check ID \"{id}\". Ensure that the check ID is passed, not the check name."
            )));
        }
        Ok(())
    }

    /// A TTL report (`/v1/agent/check/pass|warn|fail|update`): restarts the
    /// TTL clock and records the status, writing only if something changed.
    pub async fn update_ttl(
        &self,
        id: &str,
        status: CheckStatus,
        output: String,
    ) -> Result<(), ApiError> {
        self.ensure_check(id)?;
        if self.ttl.reset(id).is_none() {
            return Err(ApiError::internal(format!(
                "CheckID \"{id}\" does not have associated TTL"
            )));
        }
        let unchanged = {
            let st = crate::api::catalog_read(&self.consensus)?;
            st.catalog
                .check(&self.identity.node_name, id)
                .is_some_and(|c| c.status == status && c.output == output)
        };
        if unchanged {
            // Steady heartbeats cost no Raft traffic.
            return Ok(());
        }
        self.write(Command::UpdateCheck {
            node: self.identity.node_name.clone(),
            check_id: id.to_string(),
            status,
            output,
        })
        .await
        .map(|_| ())
    }

    /// Marks expired TTL checks critical.
    async fn run_ttl(self: Arc<Agent>) {
        loop {
            for id in self.ttl.take_expired() {
                let cmd = Command::UpdateCheck {
                    node: self.identity.node_name.clone(),
                    check_id: id.clone(),
                    status: CheckStatus::Critical,
                    output: "TTL expired".into(),
                };
                if let Err(e) = self.write(cmd).await {
                    tracing::warn!(check = %id, error = %e.message, "marking TTL check critical");
                }
            }
            let next = self
                .ttl
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.ttl.changed.notified() => {}
            }
        }
    }

    /// Twice a second: reap services critical for longer than their
    /// `DeregisterCriticalServiceAfter`, and, on the leader, invalidate
    /// sessions whose TTL ran out.
    async fn run_housekeeping(self: Arc<Agent>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.ensure_registered().await;
            self.reap_critical().await;
            self.expire_sessions().await;
            self.reap_tombstones().await;
        }
    }

    /// Puts this node back in the catalog if it went missing (a snapshot
    /// restore from elsewhere, a catalog deregistration), as Consul's
    /// anti-entropy does.
    async fn ensure_registered(&self) {
        let missing = match self.consensus.state().read() {
            Ok(st) => st.catalog.node(&self.identity.node_name).is_none(),
            Err(_) => return,
        };
        if !missing {
            return;
        }
        let reg = Registration {
            node: self.node_spec(),
            skip_node_update: false,
            service: None,
            checks: vec![node_check(CheckStatus::Passing)],
        };
        match self.write(Command::Register(reg)).await {
            Ok(_) => tracing::info!("this node was missing from the catalog; registered it again"),
            Err(e) => tracing::debug!(error = %e.message, "re-registering this node"),
        }
    }

    async fn reap_critical(&self) {
        let doomed: Vec<String> = {
            let Ok(st) = self.consensus.state().read() else {
                return;
            };
            let checks: Vec<_> = st.catalog.node_checks(&self.identity.node_name).collect();
            self.critical
                .retain(&|id| checks.iter().any(|c| c.id == id));
            checks
                .iter()
                .filter(|c| {
                    let for_ = self
                        .critical
                        .observe(&c.id, c.status == CheckStatus::Critical);
                    let after = c.definition.deregister_critical_after_ms;
                    after > 0 && !c.service_id.is_empty() && for_ >= Duration::from_millis(after)
                })
                .map(|c| c.service_id.clone())
                .collect()
        };
        for sid in doomed {
            tracing::info!(service = %sid, "deregistering service critical past DeregisterCriticalServiceAfter");
            if let Err(e) = self.deregister_service(&sid).await {
                tracing::warn!(service = %sid, error = %e.message, "reaping critical service");
            }
        }
    }

    /// On the leader: forgets tombstones older than `TOMBSTONE_TTL`, found
    /// through a minute-by-minute history of the applied index.
    async fn reap_tombstones(&self) {
        let now = Instant::now();
        let upto = {
            let Ok(mut history) = self.index_history.lock() else {
                return;
            };
            if history
                .back()
                .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_secs(60))
            {
                history.push_back((now, *self.consensus.applied().borrow()));
            }
            let mut upto = None;
            while let Some((t, i)) = history.front().copied() {
                if now.duration_since(t) < TOMBSTONE_TTL {
                    break;
                }
                upto = Some(i);
                history.pop_front();
            }
            upto
        };
        let Some(upto) = upto else { return };
        if !self.consensus.is_leader() {
            return;
        }
        let due = crate::api::catalog_read(&self.consensus)
            .ok()
            .and_then(|st| st.catalog.tombstones_upto(upto));
        if due.is_some() {
            if let Err(e) = self.write(Command::ReapTombstones { upto }).await {
                tracing::warn!(error = %e.message, "reaping KV tombstones");
            }
        }
    }

    /// Resets a session's TTL clock; false if the session is unknown.
    pub fn renew_session(&self, id: &str, ttl: Duration) {
        if let Ok(mut d) = self.session_deadlines.lock() {
            d.insert(id.to_string(), Instant::now() + ttl * 2);
        }
    }

    async fn expire_sessions(&self) {
        if !self.consensus.is_leader() {
            if let Ok(mut d) = self.session_deadlines.lock() {
                d.clear();
            }
            return;
        }
        let expired: Vec<String> = {
            let Ok(st) = self.consensus.state().read() else {
                return;
            };
            let Ok(mut deadlines) = self.session_deadlines.lock() else {
                return;
            };
            let now = Instant::now();
            let mut live = std::collections::HashSet::new();
            let mut expired = Vec::new();
            for s in st.catalog.sessions() {
                let Ok(ttl) = crate::api::parse_duration(&s.ttl) else {
                    continue;
                };
                if ttl.is_zero() {
                    continue;
                }
                live.insert(s.id.clone());
                // Consul lets a session live up to twice its TTL.
                let deadline = *deadlines.entry(s.id.clone()).or_insert(now + ttl * 2);
                if deadline <= now {
                    expired.push(s.id.clone());
                }
            }
            deadlines.retain(|id, _| live.contains(id));
            expired
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired");
            if let Err(e) = self.write(Command::SessionDestroy { id: id.clone() }).await {
                tracing::warn!(session = %id, error = %e.message, "invalidating expired session");
            }
        }
    }
}
