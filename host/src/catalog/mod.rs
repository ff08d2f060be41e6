//! The replicated catalog: nodes, services, checks, KV and sessions.
//!
//! Pure state, no I/O: the Raft state machine feeds it commands in log
//! order and readers borrow it. Every mutation happens at a log index, which
//! becomes the `ModifyIndex` of what it touched and the index of the tables
//! it changed, so a blocking query wakes only when its table moved.

pub mod command;
mod instance_checks;
pub mod kv;
#[cfg(test)]
mod model_test;
mod query;
mod touched;
pub mod types;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use command::{CheckSpec, NewSession, Registration, TxnError};
pub use command::{Command, KvOp, Request, Response};
use kv::{Journal, KvStore};
pub use query::HealthEntry;
pub use touched::Touched;
pub use types::Index;
use types::*;

/// The last index at which each table changed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TableIndexes {
    pub nodes: Index,
    pub services: Index,
    pub checks: Index,
    pub sessions: Index,
}

/// Why a KV op did not apply: a failed precondition (Consul answers `false`
/// to the plain endpoint) or an invalid request (an error).
enum KvFailure {
    Conflict(String),
    Invalid(String),
}

impl KvFailure {
    fn message(self) -> String {
        match self {
            KvFailure::Conflict(m) | KvFailure::Invalid(m) => m,
        }
    }
}

pub type Key = (String, String);

/// Stamps `new`, about to replace `old` at `index`: it keeps the create
/// index, and takes `index` as modify index only if something else changed.
/// Returns whether anything changed (an identical re-registration is not a
/// change, so it does not wake watchers).
fn restamp<T: Versioned>(new: &mut T, old: Option<&T>, index: Index) -> bool {
    let Some(old) = old else {
        new.set_stamp(index, index);
        return true;
    };
    let (create, modify) = old.stamp();
    new.set_stamp(create, modify);
    if new == old {
        return false;
    }
    new.set_stamp(create, index);
    true
}

/// A sorted set of instance keys in a Vec: ordered iteration like a
/// BTreeSet, plus indexing, so DNS can sample a few instances at random
/// out of thousands without collecting them.
#[derive(Debug, Clone, Default)]
pub struct SortedKeys(Vec<Key>);

impl SortedKeys {
    fn insert(&mut self, key: Key) {
        if let Err(at) = self.0.binary_search(&key) {
            self.0.insert(at, key);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Ok(at) = self.0.binary_search(key) {
            self.0.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    nodes: BTreeMap<String, Node>,
    /// Keyed by (node, service ID).
    services: BTreeMap<Key, Service>,
    /// Keyed by (node, check ID).
    checks: BTreeMap<Key, Check>,
    kv: KvStore,
    sessions: BTreeMap<String, Session>,
    /// Keys that may not be locked again before this time (ms since epoch):
    /// Consul's lock-delay after a session is invalidated.
    lock_delays: BTreeMap<String, u64>,
    indexes: TableIndexes,
    /// The last log index applied, for `X-Consul-Index` of whole-catalog reads.
    last_index: Index,
    /// Lower-cased service name -> instances; derived, rebuilt after a
    /// snapshot restore. Lower-cased because Consul looks services up
    /// case-insensitively (HTTP and DNS alike).
    #[serde(skip)]
    by_name: BTreeMap<String, SortedKeys>,
    /// Each instance's checks and their statuses (node-level checks under
    /// service ID ""); derived like `by_name`. Lets health and DNS reads
    /// touch only an instance's own checks.
    #[serde(skip)]
    checks_by_instance: instance_checks::InstanceChecks,
    /// Set by a `Restore`, taken by the state machine to wake every
    /// blocking query.
    #[serde(skip)]
    replaced: bool,
    /// Instances changed since the export feed last looked.
    #[serde(skip)]
    touched: Touched,
}

impl Catalog {
    /// Rebuilds derived lookups after deserializing a snapshot.
    pub fn restored(mut self) -> Catalog {
        self.by_name.clear();
        for (key, svc) in &self.services {
            self.by_name
                .entry(svc.name.to_lowercase())
                .or_default()
                .insert(key.clone());
        }
        self.checks_by_instance.clear();
        for c in self.checks.values() {
            self.checks_by_instance
                .insert(&c.node, &c.service_id, &c.id, c.status);
        }
        self
    }

    /// The last applied log index.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The newest tombstone index at or below `upto`, if any: what a
    /// leader may reap.
    pub fn tombstones_upto(&self, upto: Index) -> Option<Index> {
        self.kv.newest_tombstone_upto(upto)
    }

    /// Whether a restore replaced the catalog since the last call.
    pub fn take_replaced(&mut self) -> bool {
        std::mem::take(&mut self.replaced)
    }

    /// The catalog as a snapshot file body (postcard), for `GET /v1/snapshot`.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Decodes a snapshot body, to check it before proposing a restore.
    pub fn check_snapshot(bytes: &[u8]) -> Result<(), postcard::Error> {
        postcard::from_bytes::<Catalog>(bytes).map(|_| ())
    }

    /// The service instances changed since the last call, for the export
    /// feed.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// The KV keys written since the last call, for waking watchers.
    pub fn take_kv_changes(&mut self) -> Vec<String> {
        self.kv.take_changes()
    }

    /// Per-table indexes for blocking queries.
    pub fn indexes(&self) -> TableIndexes {
        self.indexes
    }

    /// Applies a log entry's commands in order, all at `index`.
    pub fn apply_entry(&mut self, index: Index, request: Request) -> Vec<Response> {
        let now = request.now_ms;
        request
            .commands
            .into_iter()
            .map(|c| self.apply(index, now, c))
            .collect()
    }

    /// Applies one command at `index`. Never panics on any input: a command
    /// that cannot apply is answered with `Response::Rejected` and changes
    /// nothing.
    pub fn apply(&mut self, index: Index, now: u64, command: Command) -> Response {
        self.last_index = self.last_index.max(index);
        match command {
            Command::Register(reg) => self.register(index, now, reg),
            Command::Deregister {
                node,
                service_id,
                check_id,
            } => self.deregister(index, now, &node, service_id, check_id),
            Command::UpdateCheck {
                node,
                check_id,
                status,
                output,
            } => self.update_check(index, now, &node, &check_id, status, output),
            Command::Kv(op) => {
                let mut journal = Journal::default();
                match self.kv_op(index, now, op, &mut journal) {
                    Ok(Some(entries)) => Response::Kv(vec![entries]),
                    Ok(None) => Response::Applied(true),
                    Err(KvFailure::Conflict(_)) => {
                        self.kv.rollback(journal);
                        Response::Applied(false)
                    }
                    Err(KvFailure::Invalid(m)) => {
                        self.kv.rollback(journal);
                        Response::Rejected(m)
                    }
                }
            }
            Command::Txn(ops) => self.txn(index, now, ops),
            Command::SessionCreate(s) => self.create_session(index, s),
            Command::ReapTombstones { upto } => {
                self.kv.reap_tombstones(upto);
                Response::Done
            }
            Command::Restore { catalog } => match postcard::from_bytes::<Catalog>(&catalog) {
                Ok(saved) => {
                    let mut restored = saved.restored();
                    restored.indexes = TableIndexes {
                        nodes: index,
                        services: index,
                        checks: index,
                        sessions: index,
                    };
                    restored.last_index = index;
                    restored.replaced = true;
                    restored.touched.all = true;
                    *self = restored;
                    Response::Done
                }
                Err(e) => Response::Rejected(format!("not a muster catalog snapshot: {e}")),
            },
            Command::SessionDestroy { id } => {
                self.invalidate_session(index, now, &id);
                Response::Applied(true)
            }
        }
    }

    // ---- nodes, services, checks ----

    fn register(&mut self, index: Index, now: u64, reg: Registration) -> Response {
        let node_name = reg.node.name.clone();
        // Validate everything before touching anything: nothing half-applied.
        if node_name.is_empty() {
            return Response::Rejected("Missing node name".into());
        }
        for check in &reg.checks {
            if check.id.is_empty() {
                return Response::Rejected("Missing check ID".into());
            }
            if !check.service_id.is_empty() {
                let known = reg
                    .service
                    .as_ref()
                    .is_some_and(|s| s.id == check.service_id)
                    || self
                        .services
                        .contains_key(&(node_name.clone(), check.service_id.clone()));
                if !known {
                    return Response::Rejected(format!(
                        "Unknown service ID '{}' for check ID '{}'",
                        check.service_id, check.id
                    ));
                }
            }
        }

        self.upsert_node(index, reg.node, reg.skip_node_update);
        if let Some(spec) = reg.service {
            self.upsert_service(index, &node_name, spec);
        }
        for spec in reg.checks {
            self.upsert_check(index, now, &node_name, spec);
        }
        Response::Applied(true)
    }

    fn upsert_node(&mut self, index: Index, spec: command::NodeSpec, skip_update: bool) {
        let existing = self.nodes.get(&spec.name);
        if skip_update && existing.is_some() {
            return;
        }
        let id = match existing {
            Some(n) if spec.id.is_empty() => n.id.clone(),
            _ => spec.id,
        };
        let mut node = Node {
            id,
            name: spec.name,
            address: spec.address,
            datacenter: spec.datacenter,
            tagged_addresses: spec.tagged_addresses,
            meta: spec.meta,
            create_index: index,
            modify_index: index,
        };
        if !restamp(&mut node, existing, index) {
            return;
        }
        self.indexes.nodes = index;
        self.touched.node(&node.name);
        self.nodes.insert(node.name.clone(), node);
    }

    fn upsert_service(&mut self, index: Index, node: &str, spec: command::ServiceSpec) {
        let key = (node.to_string(), spec.id.clone());
        let mut svc = Service {
            node: node.to_string(),
            id: spec.id,
            name: spec.name,
            tags: spec.tags,
            address: spec.address,
            port: spec.port,
            meta: spec.meta,
            enable_tag_override: spec.enable_tag_override,
            weights: spec.weights,
            create_index: index,
            modify_index: index,
        };
        let old = self.services.get(&key);
        let renamed_from = old.filter(|o| o.name != svc.name).map(|o| o.name.clone());
        if !restamp(&mut svc, old, index) {
            return;
        }
        if let Some(old_name) = renamed_from {
            self.unindex_service(&old_name, &key);
        }
        // Checks carry their service's name and tags; keep them in step.
        let (name, tags) = (svc.name.clone(), svc.tags.clone());
        let mut checks_changed = false;
        let ids: Vec<String> = self
            .checks_by_instance
            .ids(node, &svc.id)
            .map(str::to_string)
            .collect();
        for id in ids {
            let Some(check) = self.checks.get_mut(&(node.to_string(), id)) else {
                continue;
            };
            if check.service_name != name || check.service_tags != tags {
                check.service_name = name.clone();
                check.service_tags = tags.clone();
                check.modify_index = index;
                checks_changed = true;
            }
        }
        if checks_changed {
            self.indexes.checks = index;
        }
        self.by_name
            .entry(svc.name.to_lowercase())
            .or_default()
            .insert(key.clone());
        self.touched.instance(node, &svc.id);
        self.services.insert(key, svc);
        self.indexes.services = index;
    }

    /// Drops an instance from the by-name lookup.
    fn unindex_service(&mut self, name: &str, key: &Key) {
        let name = name.to_lowercase();
        if let Some(set) = self.by_name.get_mut(&name) {
            set.remove(key);
            if set.is_empty() {
                self.by_name.remove(&name);
            }
        }
    }

    fn upsert_check(&mut self, index: Index, now: u64, node: &str, spec: CheckSpec) {
        let key = (node.to_string(), spec.id.clone());
        let (service_name, service_tags) = if spec.service_id.is_empty() {
            (String::new(), Vec::new())
        } else {
            self.services
                .get(&(node.to_string(), spec.service_id.clone()))
                .map(|s| (s.name.clone(), s.tags.clone()))
                .unwrap_or_default()
        };
        let mut check = Check {
            node: node.to_string(),
            id: spec.id,
            name: spec.name,
            status: spec.status,
            notes: spec.notes,
            output: spec.output,
            service_id: spec.service_id,
            service_name,
            service_tags,
            definition: spec.definition,
            create_index: index,
            modify_index: index,
        };
        let old = self.checks.get(&key);
        let old_service_id = old.map(|c| c.service_id.clone());
        if !restamp(&mut check, old, index) {
            return;
        }
        let critical = check.status == CheckStatus::Critical;
        let id = check.id.clone();
        // A re-registered check may have moved to another instance.
        if let Some(old) = old_service_id {
            self.checks_by_instance.remove(node, &old, &id);
            self.touched.check(node, &old);
        }
        self.touched.check(node, &check.service_id);
        self.checks_by_instance
            .insert(node, &check.service_id, &id, check.status);
        self.checks.insert(key, check);
        self.indexes.checks = index;
        if critical {
            self.invalidate_sessions_on_check(index, now, node, &id);
        }
    }

    fn deregister(
        &mut self,
        index: Index,
        now: u64,
        node: &str,
        service_id: Option<String>,
        check_id: Option<String>,
    ) -> Response {
        if node.is_empty() {
            return Response::Rejected("Missing node name".into());
        }
        match (service_id, check_id) {
            (Some(sid), _) => {
                let key = (node.to_string(), sid.clone());
                if let Some(svc) = self.services.remove(&key) {
                    self.unindex_service(&svc.name, &key);
                    self.indexes.services = index;
                    self.touched.instance(node, &sid);
                    let doomed: Vec<String> = self
                        .checks_by_instance
                        .ids(node, &sid)
                        .map(str::to_string)
                        .collect();
                    for id in doomed {
                        self.remove_check(index, now, node, &id);
                    }
                }
            }
            (None, Some(cid)) => self.remove_check(index, now, node, &cid),
            (None, None) => self.remove_node(index, now, node),
        }
        Response::Applied(true)
    }

    fn remove_check(&mut self, index: Index, now: u64, node: &str, id: &str) {
        if let Some(check) = self.checks.remove(&(node.to_string(), id.to_string())) {
            self.checks_by_instance.remove(node, &check.service_id, id);
            self.touched.check(node, &check.service_id);
            self.indexes.checks = index;
            self.invalidate_sessions_on_check(index, now, node, id);
        }
    }

    fn remove_node(&mut self, index: Index, now: u64, node: &str) {
        if self.nodes.remove(node).is_none() {
            return;
        }
        self.indexes.nodes = index;
        self.touched.node(node);
        let services: Vec<Key> = self
            .node_services(node)
            .map(|s| (s.node.clone(), s.id.clone()))
            .collect();
        for key in services {
            if let Some(svc) = self.services.remove(&key) {
                self.unindex_service(&svc.name, &key);
                self.indexes.services = index;
            }
        }
        let checks: Vec<Key> = self
            .node_checks(node)
            .map(|c| (c.node.clone(), c.id.clone()))
            .collect();
        for key in checks {
            if let Some(check) = self.checks.remove(&key) {
                self.checks_by_instance
                    .remove(node, &check.service_id, &check.id);
            }
            self.indexes.checks = index;
        }
        let sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.id.clone())
            .collect();
        for id in sessions {
            self.invalidate_session(index, now, &id);
        }
    }

    fn update_check(
        &mut self,
        index: Index,
        now: u64,
        node: &str,
        id: &str,
        status: CheckStatus,
        output: String,
    ) -> Response {
        let Some(check) = self.checks.get_mut(&(node.to_string(), id.to_string())) else {
            return Response::Rejected(format!("Unknown check ID \"{id}\""));
        };
        if check.status == status && check.output == output {
            return Response::Applied(true);
        }
        check.status = status;
        check.output = output;
        check.modify_index = index;
        self.touched.check(node, &check.service_id);
        self.checks_by_instance
            .insert(node, &check.service_id, id, status);
        self.indexes.checks = index;
        if status == CheckStatus::Critical {
            self.invalidate_sessions_on_check(index, now, node, id);
        }
        Response::Applied(true)
    }

    // ---- sessions ----

    fn create_session(&mut self, index: Index, s: NewSession) -> Response {
        if !self.nodes.contains_key(&s.node) {
            return Response::Rejected(format!("Missing node registration for node '{}'", s.node));
        }
        for check_id in s.node_checks.iter().chain(&s.service_checks) {
            match self.checks.get(&(s.node.clone(), check_id.clone())) {
                None => {
                    return Response::Rejected(format!("Missing check '{check_id}' registration"))
                }
                Some(c) if c.status == CheckStatus::Critical => {
                    return Response::Rejected(format!("Check '{check_id}' is in critical state"))
                }
                Some(_) => {}
            }
        }
        if self.sessions.contains_key(&s.id) {
            return Response::Rejected(format!("Session ID '{}' already exists", s.id));
        }
        self.sessions.insert(
            s.id.clone(),
            Session {
                id: s.id,
                name: s.name,
                node: s.node,
                lock_delay_ms: s.lock_delay_ms,
                behavior: s.behavior,
                ttl: s.ttl,
                node_checks: s.node_checks,
                service_checks: s.service_checks,
                create_index: index,
                modify_index: index,
            },
        );
        self.indexes.sessions = index;
        Response::Applied(true)
    }

    fn invalidate_sessions_on_check(&mut self, index: Index, now: u64, node: &str, check: &str) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && (s.node_checks.iter().any(|c| c == check)
                        || s.service_checks.iter().any(|c| c == check))
            })
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.invalidate_session(index, now, &id);
        }
    }

    /// Destroys a session and applies its behavior to the locks it holds.
    fn invalidate_session(&mut self, index: Index, now: u64, id: &str) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.indexes.sessions = index;
        let held: Vec<KvEntry> = self
            .kv
            .all()
            .filter(|e| e.session.as_deref() == Some(id))
            .cloned()
            .collect();
        let mut journal = Journal::default();
        for mut entry in held {
            match session.behavior {
                SessionBehavior::Release => {
                    entry.session = None;
                    entry.modify_index = index;
                    if session.lock_delay_ms > 0 {
                        self.lock_delays
                            .insert(entry.key.clone(), now.saturating_add(session.lock_delay_ms));
                    }
                    self.kv.put(entry, &mut journal);
                }
                SessionBehavior::Delete => {
                    self.kv.remove(&entry.key, index, &mut journal);
                }
            }
        }
        // Expired lock delays are dead weight; drop them while we are here.
        self.lock_delays.retain(|_, until| *until > now);
    }

    // ---- KV ----

    fn txn(&mut self, index: Index, now: u64, ops: Vec<KvOp>) -> Response {
        let mut journal = Journal::default();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            match self.kv_op(index, now, op, &mut journal) {
                Ok(entries) => results.push(entries.unwrap_or_default()),
                Err(f) => {
                    self.kv.rollback(journal);
                    return Response::TxnFailed(vec![TxnError {
                        op_index: i,
                        what: f.message(),
                    }]);
                }
            }
        }
        Response::Kv(results)
    }

    /// Applies one KV op. `Ok(Some(entries))` for reads and writes that
    /// return the entry, `Ok(None)` for deletes.
    fn kv_op(
        &mut self,
        index: Index,
        now: u64,
        op: KvOp,
        journal: &mut Journal,
    ) -> Result<Option<Vec<KvEntry>>, KvFailure> {
        match op {
            KvOp::Set { key, value, flags } => Ok(Some(vec![
                self.kv_write(index, key, value, flags, None, journal)
            ])),
            KvOp::Cas {
                key,
                value,
                flags,
                index: expected,
            } => {
                let current = self.kv.get(&key).map(|e| e.modify_index).unwrap_or(0);
                if current != expected {
                    return Err(KvFailure::Conflict(format!(
                        "failed to set key \"{key}\", index is stale"
                    )));
                }
                Ok(Some(vec![
                    self.kv_write(index, key, value, flags, None, journal)
                ]))
            }
            KvOp::Lock {
                key,
                value,
                flags,
                session,
            } => {
                if !self.sessions.contains_key(&session) {
                    return Err(KvFailure::Invalid(format!("invalid session \"{session}\"")));
                }
                let existing = self.kv.get(&key);
                let held_by = existing.and_then(|e| e.session.clone());
                match held_by {
                    Some(holder) if holder != session => Err(KvFailure::Conflict(format!(
                        "failed to lock key \"{key}\", lock is already held"
                    ))),
                    Some(_) => Ok(Some(vec![
                        self.kv_write(index, key, value, flags, None, journal)
                    ])),
                    None => {
                        if self.lock_delays.get(&key).is_some_and(|until| *until > now) {
                            return Err(KvFailure::Conflict(format!(
                                "failed to lock key \"{key}\", lock delay is in effect"
                            )));
                        }
                        Ok(Some(vec![self.kv_write(
                            index,
                            key,
                            value,
                            flags,
                            Some(Some(session)),
                            journal,
                        )]))
                    }
                }
            }
            KvOp::Unlock {
                key,
                value,
                flags,
                session,
            } => {
                let holds = self
                    .kv
                    .get(&key)
                    .is_some_and(|e| e.session.as_deref() == Some(session.as_str()));
                if !holds {
                    return Err(KvFailure::Conflict(format!(
                        "failed to unlock key \"{key}\", lock isn't held, or is held by another session"
                    )));
                }
                Ok(Some(vec![self.kv_write(
                    index,
                    key,
                    value,
                    flags,
                    Some(None),
                    journal,
                )]))
            }
            KvOp::Get { key } => match self.kv.get(&key) {
                Some(e) => Ok(Some(vec![e.clone()])),
                None => Err(KvFailure::Conflict(format!("key \"{key}\" doesn't exist"))),
            },
            KvOp::GetTree { prefix } => Ok(Some(self.kv.prefix(&prefix).cloned().collect())),
            KvOp::CheckIndex {
                key,
                index: expected,
            } => {
                let current = self.kv.get(&key).map(|e| e.modify_index);
                match current {
                    Some(i) if i == expected => {
                        Ok(Some(self.kv.get(&key).cloned().into_iter().collect()))
                    }
                    Some(i) => Err(KvFailure::Conflict(format!(
                        "current modify index {i} != {expected}"
                    ))),
                    None => Err(KvFailure::Conflict(format!("key \"{key}\" doesn't exist"))),
                }
            }
            KvOp::CheckSession { key, session } => {
                let holds = self
                    .kv
                    .get(&key)
                    .is_some_and(|e| e.session.as_deref() == Some(session.as_str()));
                if holds {
                    Ok(Some(self.kv.get(&key).cloned().into_iter().collect()))
                } else {
                    Err(KvFailure::Conflict(format!(
                        "failed to check session, key \"{key}\" is not locked by session \"{session}\""
                    )))
                }
            }
            KvOp::CheckNotExists { key } => {
                if self.kv.get(&key).is_some() {
                    Err(KvFailure::Conflict(format!("key \"{key}\" exists")))
                } else {
                    Ok(None)
                }
            }
            KvOp::Delete { key } => {
                self.kv.remove(&key, index, journal);
                Ok(None)
            }
            KvOp::DeleteTree { prefix } => {
                let keys: Vec<String> = self.kv.prefix(&prefix).map(|e| e.key.clone()).collect();
                for key in keys {
                    self.kv.remove(&key, index, journal);
                }
                Ok(None)
            }
            KvOp::DeleteCas {
                key,
                index: expected,
            } => {
                let current = self.kv.get(&key).map(|e| e.modify_index).unwrap_or(0);
                if current != expected {
                    return Err(KvFailure::Conflict(format!(
                        "failed to delete key \"{key}\", index is stale"
                    )));
                }
                self.kv.remove(&key, index, journal);
                Ok(None)
            }
        }
    }

    /// Writes a value, keeping create index, lock index and holder unless
    /// `session` says to change the holder (`Some(Some(id))` locks,
    /// `Some(None)` releases).
    fn kv_write(
        &mut self,
        index: Index,
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: Option<Option<String>>,
        journal: &mut Journal,
    ) -> KvEntry {
        let existing = self.kv.get(&key);
        let mut entry = KvEntry {
            key,
            value,
            flags,
            lock_index: existing.map(|e| e.lock_index).unwrap_or(0),
            session: existing.and_then(|e| e.session.clone()),
            create_index: existing.map(|e| e.create_index).unwrap_or(index),
            modify_index: index,
        };
        match session {
            Some(Some(id)) => {
                entry.lock_index += 1;
                entry.session = Some(id);
            }
            Some(None) => entry.session = None,
            None => {}
        }
        self.kv.put(entry.clone(), journal);
        entry
    }
}
