//! One `[[source]]`: waits for a reason to look (an event, a file change,
//! the resync timer), asks the plugin for its desired set, and applies the
//! difference to the agent's services. What this source registered is
//! found in the catalog by its `muster-source` meta, so a restarted node
//! picks up where it left off and converges to what the plugin wants now.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;

use super::convert::{self, Wanted, ORIGIN_META, SOURCE_META};
use super::docker::{DockerStatus, DockerWatch};
use crate::agent::Agent;
use crate::catalog::command::CheckSpec;
use crate::catalog::types::{Check, Service};
use crate::plugins::{Plugin, Plugins};

/// Longest a reconcile call may run.
pub const RECONCILE_LIMIT: Duration = Duration::from_secs(10);
/// Registrations and deregistrations proposed at once; the Raft proposer
/// batches concurrent writes, so a burst of containers costs a few commits.
const APPLY_CONCURRENCY: usize = 64;

/// The runner's own settings, read from the block's `config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub resync: Duration,
    pub cleanup: bool,
}

impl Settings {
    pub fn from_config(
        name: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<Settings> {
        let resync = match config.get("resync") {
            None => Duration::from_secs(60),
            Some(serde_json::Value::String(s)) => crate::api::decode::parse_duration(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("[[source]] '{name}': config.resync \"{s}\" is not a duration above zero (write \"30s\", \"5m\")")
                })?,
            Some(other) => anyhow::bail!(
                "[[source]] '{name}': config.resync must be a duration string such as \"30s\", got {other}"
            ),
        };
        let cleanup = match config.get("cleanup") {
            None => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                anyhow::bail!(
                    "[[source]] '{name}': config.cleanup must be true or false, got {other}"
                )
            }
        };
        Ok(Settings { resync, cleanup })
    }
}

/// A problem as listed in `/v1/muster/sources`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProblemInfo {
    pub origin: String,
    pub message: String,
}

/// The counters `/v1/muster/sources` shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stats {
    pub reconciles: u64,
    pub failures: u64,
    /// Services the last successful reconcile wanted.
    pub services: usize,
    pub registered: u64,
    pub deregistered: u64,
    /// The plugin call of the last reconcile, milliseconds.
    pub last_reconcile_ms: f64,
    /// Applying its difference to the catalog, milliseconds.
    pub last_apply_ms: f64,
    pub last_error: Option<String>,
    pub problems: Vec<ProblemInfo>,
}

/// One source block at run time.
pub struct Runner {
    pub name: String,
    plugin: Arc<Plugin>,
    plugins: Plugins,
    agent: Arc<Agent>,
    read: Vec<PathBuf>,
    docker: Option<Arc<DockerWatch>>,
    changed: Arc<Notify>,
    settings: Settings,
    stats: Mutex<Stats>,
    /// Services an earlier run registered whose origin was gone at start,
    /// left alone because `cleanup = false` (Registrator's default).
    ignored: Mutex<BTreeSet<String>>,
}

/// A service this source has in the catalog now, with its checks.
struct Current {
    service: Service,
    checks: Vec<Check>,
}

/// What a reconcile changes, and the wanted services it may not touch
/// (owned by someone else, or by an origin that cannot be read now).
type Plan = (Vec<Op>, Vec<ProblemInfo>);

enum Op {
    Register(Box<Wanted>, Vec<String>),
    Deregister(String),
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        plugin: Arc<Plugin>,
        plugins: Plugins,
        agent: Arc<Agent>,
        read: Vec<PathBuf>,
        docker: Option<Arc<DockerWatch>>,
        changed: Arc<Notify>,
        settings: Settings,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            name,
            plugin,
            plugins,
            agent,
            read,
            docker,
            changed,
            settings,
            stats: Mutex::new(Stats::default()),
            ignored: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn docker_status(&self) -> Option<DockerStatus> {
        self.docker.as_ref().map(|d| d.status())
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Reconciles at start, then on every change and every `resync`.
    pub async fn run(self: Arc<Self>) {
        let mut first = true;
        loop {
            // A Docker source waits for the first listing: until then it
            // has nothing true to say.
            let ready = self
                .docker
                .as_ref()
                .is_none_or(|d| d.view().containers.is_ok());
            if ready && self.reconcile(first).await {
                first = false;
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(self.settings.resync) => {}
            }
        }
    }

    /// One pass; false when the plugin failed and nothing was applied.
    async fn reconcile(&self, first: bool) -> bool {
        let started = Instant::now();
        let view = self.docker.as_ref().map(|d| d.view());
        let outcome = self
            .plugins
            .run_reconcile(&self.plugin, &self.read, view, RECONCILE_LIMIT)
            .await;
        let call_ms = started.elapsed().as_secs_f64() * 1000.0;
        let desired = match outcome {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "reconcile failed; the services registered before stay");
                if let Ok(mut s) = self.stats.lock() {
                    s.reconciles += 1;
                    s.failures += 1;
                    s.last_reconcile_ms = call_ms;
                    s.last_error = Some(e);
                }
                return false;
            }
        };
        let mut problems: BTreeSet<ProblemInfo> = desired
            .problems
            .into_iter()
            .map(|p| ProblemInfo {
                // Cut as the meta value is, so the two still compare equal.
                origin: convert::truncate_origin(&p.origin),
                message: p.message,
            })
            .collect();
        let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
        let node_address = self.agent.identity.address.clone();
        for reg in desired.registrations {
            let origin = reg.origin.clone();
            match convert::wanted(&self.name, reg, &node_address, &self.plugins) {
                Ok(w) if wanted.contains_key(&w.service.id) => {
                    problems.insert(ProblemInfo {
                        origin,
                        message: format!(
                            "service id \"{}\" is wanted twice; the first one is kept",
                            w.service.id
                        ),
                    });
                }
                Ok(w) => {
                    wanted.insert(w.service.id.clone(), w);
                }
                Err(message) => {
                    problems.insert(ProblemInfo {
                        origin: convert::truncate_origin(&origin),
                        message,
                    });
                }
            }
        }
        let broken: BTreeSet<&str> = problems.iter().map(|p| p.origin.as_str()).collect();
        let (ops, untouchable) = match self.plan(&wanted, &broken, first) {
            Ok(planned) => planned,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot read the catalog");
                return false;
            }
        };
        problems.extend(untouchable);
        let applying = Instant::now();
        let (registered, deregistered, errors) = self.apply(ops).await;
        let apply_ms = applying.elapsed().as_secs_f64() * 1000.0;
        let problems: Vec<ProblemInfo> = problems.into_iter().collect();
        if let Ok(mut s) = self.stats.lock() {
            for p in problems.iter().filter(|p| !s.problems.contains(p)) {
                tracing::warn!(source = %self.name, origin = %p.origin, "{}", p.message);
            }
            s.reconciles += 1;
            s.services = wanted.len();
            s.registered += registered;
            s.deregistered += deregistered;
            s.last_reconcile_ms = call_ms;
            s.last_apply_ms = apply_ms;
            s.last_error = errors.first().cloned();
            s.problems = problems;
        }
        if registered + deregistered > 0 {
            tracing::debug!(source = %self.name, registered, deregistered, call_ms, apply_ms, "source reconciled");
        }
        true
    }

    /// What to change: services wanted but missing or different, and
    /// services of this source that are no longer wanted (unless their
    /// origin could not be read this time).
    fn plan(
        &self,
        wanted: &BTreeMap<String, Wanted>,
        broken: &BTreeSet<&str>,
        first: bool,
    ) -> Result<Plan, String> {
        let node = &self.agent.identity.node_name;
        // Services of this node that another source, or the HTTP API,
        // registered: never taken over.
        let mut foreign: BTreeMap<String, String> = BTreeMap::new();
        let current: BTreeMap<String, Current> = {
            let st = self.agent.catalog().map_err(|e| e.message)?;
            for s in st.catalog.node_services(node) {
                match s.meta.get(SOURCE_META) {
                    Some(owner) if *owner == self.name => {}
                    Some(owner) => {
                        foreign.insert(s.id.clone(), format!("source \"{owner}\""));
                    }
                    None => {
                        foreign.insert(s.id.clone(), "the HTTP API".into());
                    }
                }
            }
            let mut current: BTreeMap<String, Current> = st
                .catalog
                .node_services(node)
                .filter(|s| s.meta.get(SOURCE_META) == Some(&self.name))
                .map(|s| {
                    (
                        s.id.clone(),
                        Current {
                            service: s.clone(),
                            checks: Vec::new(),
                        },
                    )
                })
                .collect();
            for c in st.catalog.node_checks(node) {
                if let Some(cur) = current.get_mut(&c.service_id) {
                    cur.checks.push(c.clone());
                }
            }
            current
        };
        let mut ignored = self
            .ignored
            .lock()
            .map_err(|_| "lock poisoned".to_string())?;
        let mut ops = Vec::new();
        let mut untouchable = Vec::new();
        for (id, w) in wanted {
            let origin = w.service.meta.get(ORIGIN_META).cloned().unwrap_or_default();
            if let Some(owner) = foreign.get(id) {
                untouchable.push(ProblemInfo {
                    origin,
                    message: format!("service id \"{id}\" was registered by {owner} on this node; not taken over"),
                });
                continue;
            }
            // Another origin that cannot be read now registered this ID:
            // it keeps it until it can be read again, so a broken file
            // does not hand its services to another file and back.
            let holder = current
                .get(id)
                .and_then(|c| c.service.meta.get(ORIGIN_META))
                .filter(|o| **o != origin && broken.contains(o.as_str()));
            if let Some(holder) = holder {
                untouchable.push(ProblemInfo {
                    message: format!("service id \"{id}\" is registered from {holder}, which cannot be read now; kept as it is"),
                    origin,
                });
                continue;
            }
            ignored.remove(id);
            match current.get(id) {
                Some(cur)
                    if convert::same_service(&cur.service, &w.service)
                        && same_checks(&cur.checks, &w.checks) =>
                {
                    continue
                }
                cur => {
                    let stale = cur
                        .map(|c| {
                            c.checks
                                .iter()
                                .filter(|have| !w.checks.iter().any(|c| c.id == have.id))
                                .map(|have| have.id.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    ops.push(Op::Register(Box::new(w.clone()), stale));
                }
            }
        }
        for (id, cur) in &current {
            if wanted.contains_key(id) || ignored.contains(id) {
                continue;
            }
            let origin = cur.service.meta.get(ORIGIN_META).map(String::as_str);
            if origin.is_some_and(|o| broken.contains(o)) {
                continue;
            }
            if first && !self.settings.cleanup {
                tracing::info!(source = %self.name, service = %id, "leaving a service of an earlier run in place (cleanup = false)");
                ignored.insert(id.clone());
                continue;
            }
            ops.push(Op::Deregister(id.clone()));
        }
        Ok((ops, untouchable))
    }

    /// Proposes the changes concurrently; returns (registered,
    /// deregistered, errors).
    async fn apply(&self, ops: Vec<Op>) -> (u64, u64, Vec<String>) {
        let results: Vec<Result<bool, String>> = futures::stream::iter(ops)
            .map(|op| async move {
                match op {
                    Op::Register(w, stale) => {
                        let id = w.service.id.clone();
                        let Wanted {
                            service, checks, ..
                        } = *w;
                        self.agent
                            .register(Some(service), checks)
                            .await
                            .map_err(|e| format!("registering {id}: {}", e.message))?;
                        for check in stale {
                            // Already gone is what we wanted.
                            let _ = self.agent.deregister_check(&check).await;
                        }
                        Ok(true)
                    }
                    Op::Deregister(id) => match self.agent.deregister_service(&id).await {
                        Ok(()) => Ok(false),
                        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(false),
                        Err(e) => Err(format!("deregistering {id}: {}", e.message)),
                    },
                }
            })
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        let mut registered = 0;
        let mut deregistered = 0;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(true) => registered += 1,
                Ok(false) => deregistered += 1,
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "applying a source change failed; the next reconcile retries");
                    errors.push(e);
                }
            }
        }
        (registered, deregistered, errors)
    }
}

/// Whether the catalog's checks of a service are the wanted ones.
fn same_checks(have: &[Check], want: &[CheckSpec]) -> bool {
    have.len() == want.len()
        && want.iter().all(|w| {
            have.iter()
                .any(|h| h.id == w.id && h.name == w.name && h.definition == w.definition)
        })
}
