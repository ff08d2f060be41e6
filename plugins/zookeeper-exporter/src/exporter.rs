//! The exporter proper: what the catalog wants (`Model`), what we believe
//! ZooKeeper holds (`Belief`), and the requests that close the gap.
//!
//! Every call first folds its input into the model and marks the children
//! it touched dirty, then `flush` sends one pipelined round for all dirty
//! children: the cheap guess (create, setData, delete) for each, with
//! service znodes created before and deleted after their children. The few
//! guesses that fail (a child someone else created, a missing parent) are
//! then fixed one by one. Only the final state of a child matters, so
//! several changes to one child in a batch cost one request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::client::{Client, Connected, Error};
use crate::config::Config;
use crate::jute::{code, multi_error, CreateMode, Request, Response};
use crate::layout::{child_path, prefixes, service_path, ChildKey, Instance, InstanceKey};
use crate::net::{Env, Level};

/// What the catalog wants exported.
#[derive(Debug, Default)]
pub struct Model {
    /// Each instance's child and data.
    wants: HashMap<InstanceKey, Want>,
    /// Every instance claiming a child, oldest upsert first: two instances
    /// with one address:port under one name share a child, and the last
    /// upsert wins. When the winner goes, the previous claimant's data is
    /// written back.
    claims: BTreeMap<ChildKey, Vec<InstanceKey>>,
}

#[derive(Debug)]
struct Want {
    child: ChildKey,
    data: Vec<u8>,
}

impl Model {
    /// Records an upsert; adds the children whose wanted state may have
    /// changed to `dirty`. An instance that cannot be exported is dropped
    /// (it may have been exportable before) and the reason returned.
    pub fn upsert(
        &mut self,
        inst: &Instance,
        dirty: &mut BTreeSet<ChildKey>,
    ) -> Result<(), String> {
        let key = inst.key();
        self.remove(&key, dirty);
        let child = inst.child_key()?;
        self.claims
            .entry(child.clone())
            .or_default()
            .push(key.clone());
        dirty.insert(child.clone());
        self.wants.insert(
            key,
            Want {
                child,
                data: inst.body(),
            },
        );
        Ok(())
    }

    /// Records a removal. Removing an unknown instance changes nothing.
    pub fn remove(&mut self, key: &InstanceKey, dirty: &mut BTreeSet<ChildKey>) {
        let Some(old) = self.wants.remove(key) else {
            return;
        };
        if let Some(claimants) = self.claims.get_mut(&old.child) {
            claimants.retain(|k| k != key);
            if claimants.is_empty() {
                self.claims.remove(&old.child);
            }
        }
        dirty.insert(old.child);
    }

    /// The data the child should hold, or None if it should not exist.
    pub fn desired(&self, child: &ChildKey) -> Option<&[u8]> {
        let winner = self.claims.get(child)?.last()?;
        self.wants.get(winner).map(|w| w.data.as_slice())
    }

    /// Whether any child of the service is wanted.
    pub fn service_wanted(&self, service: &str) -> bool {
        let from = ChildKey {
            service: service.to_string(),
            child: String::new(),
        };
        self.claims
            .range(from..)
            .next()
            .is_some_and(|(k, _)| k.service == service)
    }

    pub fn children(&self) -> impl Iterator<Item = &ChildKey> {
        self.claims.keys()
    }
}

/// What we believe ZooKeeper holds for a child. No entry means "absent, as
/// far as we know".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Belief {
    /// An ephemeral node of our current session with this data.
    Mine(Vec<u8>),
    /// A node some other session (or nobody: persistent) owns, at this
    /// version.
    Foreign { version: i32 },
    /// May exist, owned by anyone (after a lost reply or a new session).
    Unknown,
}

/// The request that makes a child what is wanted, from what we believe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create(Vec<u8>),
    Set(Vec<u8>),
    /// Replace another session's node in one multi (delete at its version,
    /// create ours), so readers never see it missing.
    Takeover {
        version: i32,
        data: Vec<u8>,
    },
    Delete,
}

pub fn plan(want: Option<&[u8]>, belief: Option<&Belief>) -> Option<Plan> {
    match (want, belief) {
        (Some(w), Some(Belief::Mine(have))) if w == have.as_slice() => None,
        (Some(w), Some(Belief::Mine(_))) => Some(Plan::Set(w.to_vec())),
        (Some(w), Some(Belief::Foreign { version })) => Some(Plan::Takeover {
            version: *version,
            data: w.to_vec(),
        }),
        (Some(w), None | Some(Belief::Unknown)) => Some(Plan::Create(w.to_vec())),
        (None, None) => None,
        (None, Some(_)) => Some(Plan::Delete),
    }
}

/// What each request of a flush round is for.
enum Tag {
    ParentCreate(String),
    Child(ChildKey, Plan),
    ParentDelete(String),
}

/// How many times a child is retried when other clients keep changing it
/// under us between our requests.
const RACE_RETRIES: usize = 5;

pub struct Exporter<E: Env> {
    base: String,
    client: Client<E>,
    model: Model,
    belief: BTreeMap<ChildKey, Belief>,
    /// Children whose ZooKeeper state may differ from the model.
    dirty: BTreeSet<ChildKey>,
    /// Service znodes believed to exist.
    parents: BTreeSet<String>,
    /// Service znodes to delete if no child of theirs is wanted.
    parent_check: BTreeSet<String>,
    /// Set while an `apply` flushes: every upserted child is written even
    /// if we believe it holds our data already, and a child another session
    /// owns is taken over. During a hot swap the previous version keeps
    /// applying changes after this one's resync, re-creating children under
    /// its session, which ends once it is dropped.
    claim: bool,
}

impl<E: Env> Exporter<E> {
    pub fn new(config: &Config, env: E) -> Self {
        Exporter {
            base: config.path.clone(),
            client: Client::new(
                env,
                config.servers.clone(),
                config.session_timeout_ms,
                config.timeout_ms,
            ),
            model: Model::default(),
            belief: BTreeMap::new(),
            dirty: BTreeSet::new(),
            parents: BTreeSet::new(),
            parent_check: BTreeSet::new(),
            claim: false,
        }
    }

    /// Connects and makes sure the base path exists.
    pub fn open(config: &Config, env: E) -> Result<Self, Error> {
        let mut ex = Exporter::new(config, env);
        ex.connect()?;
        let base = ex.base.clone();
        ex.ensure_path(&base)?;
        Ok(ex)
    }

    pub fn client(&self) -> &Client<E> {
        &self.client
    }

    pub fn client_mut(&mut self) -> &mut Client<E> {
        &mut self.client
    }

    fn log(&self, level: Level, msg: &str) {
        self.client.env().log(level, msg);
    }

    /// Applies catalog changes in order, then writes the result.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<(), Error> {
        for change in changes {
            match change {
                Change::Upsert(inst) => {
                    if let Err(why) = self.model.upsert(&inst, &mut self.dirty) {
                        self.log(
                            Level::Warn,
                            &format!("skipping instance {}/{}: {why}", inst.node, inst.id),
                        );
                    }
                }
                Change::Remove(key) => self.model.remove(&key, &mut self.dirty),
            }
        }
        self.claim = true;
        let result = self.with_retry(Self::try_flush);
        self.claim = false;
        result
    }

    /// Makes ZooKeeper hold exactly `all`: reads every child under the base
    /// path and fixes whatever differs.
    pub fn resync(&mut self, all: Vec<Instance>) -> Result<(), Error> {
        self.model = Model::default();
        self.dirty.clear();
        for inst in &all {
            if let Err(why) = self.model.upsert(inst, &mut self.dirty) {
                self.log(
                    Level::Warn,
                    &format!("skipping instance {}/{}: {why}", inst.node, inst.id),
                );
            }
        }
        self.with_retry(Self::try_resync)
    }

    /// Keeps the session alive, and reconnects (re-creating everything if
    /// the session was lost) when the connection is down or work is left.
    pub fn tick(&mut self) -> Result<(), Error> {
        if !self.client.is_connected() || !self.dirty.is_empty() || !self.parent_check.is_empty() {
            return self.with_retry(Self::try_flush);
        }
        if self.client.ping_due() {
            if let Err(e) = self.client.ping() {
                self.log(Level::Warn, &format!("ping: {e}; reconnecting"));
                return self.with_retry(Self::try_flush);
            }
        }
        Ok(())
    }

    /// Runs `f`, and once more if the connection broke under it: a server
    /// restart or a session expiry is repaired within the same call.
    fn with_retry(&mut self, f: fn(&mut Self) -> Result<(), Error>) -> Result<(), Error> {
        match f(self) {
            Err(e) if e.is_retryable() => {
                self.log(Level::Warn, &format!("{e}; reconnecting"));
                f(self)
            }
            r => r,
        }
    }

    /// Connects if needed; after a new session, nothing we created is ours
    /// any more, so every child we track is redone.
    fn connect(&mut self) -> Result<(), Error> {
        if self.client.ensure_connected()? == Connected::NewSession {
            for belief in self.belief.values_mut() {
                if matches!(belief, Belief::Mine(_)) {
                    *belief = Belief::Unknown;
                }
            }
            self.dirty.extend(self.belief.keys().cloned());
            self.dirty.extend(self.model.children().cloned());
        }
        Ok(())
    }

    fn session_id(&self) -> i64 {
        self.client.session_id().unwrap_or(0)
    }

    /// Creates `path` and its ancestors as persistent nodes, in one round.
    fn ensure_path(&mut self, path: &str) -> Result<(), Error> {
        let reqs: Vec<Request> = prefixes(path)
            .into_iter()
            .map(|p| Request::Create {
                path: p,
                data: Vec::new(),
                mode: CreateMode::Persistent,
            })
            .collect();
        let results = self.client.pipeline(&reqs)?;
        for (req, res) in reqs.iter().zip(results) {
            match res {
                Ok(_) | Err(code::NODE_EXISTS) => {}
                Err(c) => return Err(self.client.zk_error(req.path(), c)),
            }
        }
        Ok(())
    }

    fn try_resync(&mut self) -> Result<(), Error> {
        self.connect()?;
        let base = self.base.clone();
        self.ensure_path(&base)?;
        let sid = self.session_id();

        let services = match self
            .client
            .call(Request::GetChildren { path: base.clone() })?
        {
            Ok(Response::Children(names)) => names,
            Ok(_) => return Err(Error::Conn(format!("{base}: unexpected reply"))),
            Err(c) => return Err(self.client.zk_error(&base, c)),
        };
        let listings = self.client.pipeline(
            &services
                .iter()
                .map(|s| Request::GetChildren {
                    path: service_path(&base, s),
                })
                .collect::<Vec<_>>(),
        )?;
        let mut existing = Vec::new();
        let mut parents = BTreeSet::new();
        for (service, listing) in services.into_iter().zip(listings) {
            match listing {
                Ok(Response::Children(children)) => {
                    existing.extend(children.into_iter().map(|child| ChildKey {
                        service: service.clone(),
                        child,
                    }));
                    parents.insert(service);
                }
                // Deleted since the listing of the base: nothing to do.
                Err(code::NO_NODE) => {}
                Ok(_) => return Err(Error::Conn(format!("{base}/{service}: unexpected reply"))),
                Err(c) => return Err(self.client.zk_error(&service_path(&base, &service), c)),
            }
        }

        // Who owns the wanted children that exist, and with what data.
        let wanted: Vec<&ChildKey> = existing
            .iter()
            .filter(|k| self.model.desired(k).is_some())
            .collect();
        let stats = self.client.pipeline(
            &wanted
                .iter()
                .map(|k| Request::GetData {
                    path: child_path(&base, k),
                })
                .collect::<Vec<_>>(),
        )?;
        let mut belief = BTreeMap::new();
        for (key, res) in wanted.into_iter().zip(stats) {
            match res {
                Ok(Response::Data(data, stat)) if stat.ephemeral_owner == sid => {
                    belief.insert(key.clone(), Belief::Mine(data));
                }
                Ok(Response::Data(_, stat)) => {
                    belief.insert(
                        key.clone(),
                        Belief::Foreign {
                            version: stat.version,
                        },
                    );
                }
                Err(code::NO_NODE) => {}
                _ => {
                    belief.insert(key.clone(), Belief::Unknown);
                }
            }
        }
        // The rest exists and is not wanted: delete it.
        for key in &existing {
            belief.entry(key.clone()).or_insert(Belief::Unknown);
        }

        self.dirty.extend(existing);
        self.belief = belief;
        self.parent_check = parents.clone();
        self.parents = parents;
        self.try_flush()
    }

    /// One pipelined round for every dirty child, then the slow path for
    /// the few it could not settle.
    fn try_flush(&mut self) -> Result<(), Error> {
        self.connect()?;
        if self.dirty.is_empty() && self.parent_check.is_empty() {
            return Ok(());
        }
        let base = self.base.clone();

        let mut child_ops = Vec::new();
        let mut settled = Vec::new();
        for key in &self.dirty {
            let want = self.model.desired(key);
            if want.is_none() {
                self.parent_check.insert(key.service.clone());
            }
            let planned = match (plan(want, self.belief.get(key)), want) {
                (None, Some(w)) if self.claim => Some(Plan::Set(w.to_vec())),
                (p, _) => p,
            };
            match planned {
                Some(p) => child_ops.push((key.clone(), p)),
                None => settled.push(key.clone()),
            }
        }
        for key in settled {
            self.dirty.remove(&key);
        }

        let mut tags = Vec::new();
        let new_parents: BTreeSet<String> = child_ops
            .iter()
            .filter(|(k, p)| {
                matches!(p, Plan::Create(_) | Plan::Takeover { .. })
                    && !self.parents.contains(&k.service)
            })
            .map(|(k, _)| k.service.clone())
            .collect();
        tags.extend(new_parents.into_iter().map(Tag::ParentCreate));
        tags.extend(child_ops.into_iter().map(|(k, p)| Tag::Child(k, p)));
        let checks = std::mem::take(&mut self.parent_check);
        tags.extend(
            checks
                .into_iter()
                .filter(|s| !self.model.service_wanted(s))
                .map(Tag::ParentDelete),
        );

        let reqs: Vec<Request> = tags.iter().map(|t| request(&base, t)).collect();
        let results = match self.client.pipeline(&reqs) {
            Ok(r) => r,
            Err(e) => {
                // Which of these landed is unknown: redo them all.
                for tag in &tags {
                    match tag {
                        Tag::Child(key, _) => {
                            self.belief.insert(key.clone(), Belief::Unknown);
                        }
                        Tag::ParentDelete(s) => {
                            self.parent_check.insert(s.clone());
                        }
                        Tag::ParentCreate(_) => {}
                    }
                }
                return Err(e);
            }
        };

        let mut first_error = None;
        let mut slow = Vec::new();
        let mut taken_over = 0usize;
        let sid = self.session_id();
        for (tag, res) in tags.into_iter().zip(results) {
            match tag {
                Tag::ParentCreate(service) => {
                    if matches!(res, Ok(_) | Err(code::NODE_EXISTS)) {
                        self.parents.insert(service);
                    }
                    // Otherwise the child's create fails with "no node" and
                    // the slow path creates the whole path.
                }
                Tag::Child(key, plan) => {
                    let outcome = match (&plan, res) {
                        (Plan::Takeover { .. }, Ok(Response::Multi(results))) => {
                            match multi_error(&results) {
                                None => Ok(()),
                                Some(c) => Err(c),
                            }
                        }
                        // Written, but the node is another session's: the slow
                        // path takes it over.
                        (Plan::Set(_), Ok(Response::Stat(stat))) if stat.ephemeral_owner != sid => {
                            Err(code::NODE_EXISTS)
                        }
                        (_, Ok(_)) => Ok(()),
                        (_, Err(c)) => Err(c),
                    };
                    if matches!((&plan, &outcome), (Plan::Takeover { .. }, Ok(()))) {
                        taken_over += 1;
                    }
                    match (plan, outcome) {
                        (Plan::Create(data) | Plan::Set(data), Ok(()))
                        | (Plan::Takeover { data, .. }, Ok(())) => {
                            self.belief.insert(key.clone(), Belief::Mine(data));
                            self.dirty.remove(&key);
                        }
                        (Plan::Delete, Ok(()) | Err(code::NO_NODE)) => {
                            self.belief.remove(&key);
                            self.dirty.remove(&key);
                        }
                        (Plan::Delete, Err(code::NOT_EMPTY)) => {
                            self.log(
                                Level::Warn,
                                &format!(
                                    "{}: has children, not deleting it",
                                    child_path(&base, &key)
                                ),
                            );
                            self.belief.remove(&key);
                            self.dirty.remove(&key);
                        }
                        (
                            _,
                            Err(
                                code::NO_NODE
                                | code::NODE_EXISTS
                                | code::BAD_VERSION
                                | code::RUNTIME_INCONSISTENCY,
                            ),
                        ) => slow.push(key),
                        (_, Err(c)) => {
                            let e = self.client.zk_error(&child_path(&base, &key), c);
                            self.log(Level::Error, &e.to_string());
                            first_error.get_or_insert(e);
                            self.belief.insert(key.clone(), Belief::Unknown);
                            self.dirty.remove(&key);
                        }
                    }
                }
                Tag::ParentDelete(service) => match res {
                    Ok(_) | Err(code::NO_NODE) => {
                        self.parents.remove(&service);
                    }
                    // Children we do not track (another session's) remain;
                    // resync deletes them, and the service node next time.
                    Err(code::NOT_EMPTY) => {}
                    Err(c) => {
                        let e = self.client.zk_error(&service_path(&base, &service), c);
                        self.log(Level::Warn, &e.to_string());
                    }
                },
            }
        }

        if taken_over > 0 {
            self.log(
                Level::Info,
                &format!("replaced {taken_over} node(s) other sessions owned"),
            );
        }

        for key in slow {
            if let Err(e) = self.write_child(&key) {
                if e.is_retryable() {
                    self.belief.insert(key, Belief::Unknown);
                    return Err(e);
                }
                self.log(Level::Error, &e.to_string());
                first_error.get_or_insert(e);
                self.belief.insert(key.clone(), Belief::Unknown);
                self.dirty.remove(&key);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes one child ours with the wanted data, one request at a time:
    /// creates its parents if missing, and replaces a node another session
    /// owns (a previous leader's exporter, our own expired session) so that
    /// it does not vanish when that session ends.
    fn write_child(&mut self, key: &ChildKey) -> Result<(), Error> {
        let Some(data) = self.model.desired(key).map(<[u8]>::to_vec) else {
            self.dirty.remove(key);
            return Ok(());
        };
        let path = child_path(&self.base, key);
        let create = Request::Create {
            path: path.clone(),
            data: data.clone(),
            mode: CreateMode::Ephemeral,
        };
        for _ in 0..RACE_RETRIES {
            match self.client.call(create.clone())? {
                Ok(_) => return self.settle(key, data),
                Err(code::NO_NODE) => {
                    self.ensure_path(&service_path(&self.base, &key.service))?;
                    self.parents.insert(key.service.clone());
                    continue;
                }
                Err(code::NODE_EXISTS) => {}
                Err(c) => return Err(self.client.zk_error(&path, c)),
            }
            let (have, stat) = match self.client.call(Request::GetData { path: path.clone() })? {
                Ok(Response::Data(have, stat)) => (have, stat),
                Err(code::NO_NODE) => continue,
                Ok(_) => return Err(Error::Conn(format!("{path}: unexpected reply"))),
                Err(c) => return Err(self.client.zk_error(&path, c)),
            };
            if stat.ephemeral_owner == self.session_id() {
                if have != data {
                    match self.client.call(Request::SetData {
                        path: path.clone(),
                        data: data.clone(),
                        version: -1,
                    })? {
                        Ok(_) => {}
                        Err(code::NO_NODE) => continue,
                        Err(c) => return Err(self.client.zk_error(&path, c)),
                    }
                }
                return self.settle(key, data);
            }
            let takeover = Request::Multi(vec![
                Request::Delete {
                    path: path.clone(),
                    version: stat.version,
                },
                create.clone(),
            ]);
            let outcome = match self.client.call(takeover)? {
                Ok(Response::Multi(results)) => multi_error(&results),
                Ok(_) => None,
                Err(c) => Some(c),
            };
            match outcome {
                None => {
                    self.log(
                        Level::Info,
                        &format!(
                            "{path}: replaced a node of session 0x{:x}",
                            stat.ephemeral_owner
                        ),
                    );
                    return self.settle(key, data);
                }
                // Changed between our read and the multi: look again.
                Some(
                    code::NO_NODE
                    | code::BAD_VERSION
                    | code::NODE_EXISTS
                    | code::RUNTIME_INCONSISTENCY,
                ) => continue,
                Some(code::NOT_EMPTY) => {
                    // A node with children is not an instance; leave it.
                    self.log(
                        Level::Warn,
                        &format!("{path}: exists with children, not replacing it"),
                    );
                    self.dirty.remove(key);
                    return Ok(());
                }
                Some(c) => return Err(self.client.zk_error(&path, c)),
            }
        }
        Err(Error::Conn(format!(
            "{path}: changed by another client on every attempt"
        )))
    }

    fn settle(&mut self, key: &ChildKey, data: Vec<u8>) -> Result<(), Error> {
        self.belief.insert(key.clone(), Belief::Mine(data));
        self.dirty.remove(key);
        Ok(())
    }
}

fn request(base: &str, tag: &Tag) -> Request {
    match tag {
        Tag::ParentCreate(service) => Request::Create {
            path: service_path(base, service),
            data: Vec::new(),
            mode: CreateMode::Persistent,
        },
        Tag::ParentDelete(service) => Request::Delete {
            path: service_path(base, service),
            version: -1,
        },
        Tag::Child(key, plan) => {
            let path = child_path(base, key);
            match plan {
                Plan::Create(data) => Request::Create {
                    path,
                    data: data.clone(),
                    mode: CreateMode::Ephemeral,
                },
                Plan::Set(data) => Request::SetData {
                    path,
                    data: data.clone(),
                    version: -1,
                },
                Plan::Takeover { version, data } => Request::Multi(vec![
                    Request::Delete {
                        path: path.clone(),
                        version: *version,
                    },
                    Request::Create {
                        path,
                        data: data.clone(),
                        mode: CreateMode::Ephemeral,
                    },
                ]),
                Plan::Delete => Request::Delete { path, version: -1 },
            }
        }
    }
}

/// A catalog change (WIT `change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Instance),
    Remove(InstanceKey),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, name: &str, addr: &str, port: u16, tag: &str) -> Instance {
        Instance {
            node: "n1".into(),
            id: id.into(),
            name: name.into(),
            tags: vec![tag.into()],
            address: addr.into(),
            port,
            meta: vec![],
        }
    }

    fn ck(service: &str, child: &str) -> ChildKey {
        ChildKey {
            service: service.into(),
            child: child.into(),
        }
    }

    #[test]
    fn last_upsert_wins_and_remove_only_drops_own_claim() {
        let mut m = Model::default();
        let mut dirty = BTreeSet::new();
        let a = inst("a", "web", "10.0.0.1", 80, "a");
        let b = inst("b", "web", "10.0.0.1", 80, "b");
        m.upsert(&a, &mut dirty).unwrap();
        m.upsert(&b, &mut dirty).unwrap();
        let k = ck("web", "10.0.0.1:80");
        assert_eq!(m.desired(&k), Some(b.body().as_slice()));
        // Removing the loser keeps the winner's data.
        m.remove(&a.key(), &mut dirty);
        assert_eq!(m.desired(&k), Some(b.body().as_slice()));
        // Re-upserting a makes it win again; removing it falls back to b.
        m.upsert(&a, &mut dirty).unwrap();
        assert_eq!(m.desired(&k), Some(a.body().as_slice()));
        m.remove(&a.key(), &mut dirty);
        assert_eq!(m.desired(&k), Some(b.body().as_slice()));
        m.remove(&b.key(), &mut dirty);
        assert_eq!(m.desired(&k), None);
        assert!(!m.service_wanted("web"));
        // Removing something never exported is a no-op.
        let before = dirty.len();
        m.remove(
            &InstanceKey {
                node: "x".into(),
                id: "y".into(),
            },
            &mut dirty,
        );
        assert_eq!(dirty.len(), before);
    }

    #[test]
    fn moving_an_instance_dirties_both_children() {
        let mut m = Model::default();
        let mut dirty = BTreeSet::new();
        m.upsert(&inst("a", "web", "10.0.0.1", 80, "t"), &mut dirty)
            .unwrap();
        dirty.clear();
        m.upsert(&inst("a", "web", "10.0.0.2", 80, "t"), &mut dirty)
            .unwrap();
        assert!(dirty.contains(&ck("web", "10.0.0.1:80")));
        assert!(dirty.contains(&ck("web", "10.0.0.2:80")));
        assert_eq!(m.desired(&ck("web", "10.0.0.1:80")), None);
        assert!(m.service_wanted("web"));
        assert!(!m.service_wanted("we"));
        assert!(!m.service_wanted("web2"));
    }

    #[test]
    fn unexportable_upsert_drops_previous_claim() {
        let mut m = Model::default();
        let mut dirty = BTreeSet::new();
        m.upsert(&inst("a", "web", "10.0.0.1", 80, "t"), &mut dirty)
            .unwrap();
        assert!(m
            .upsert(&inst("a", "we/b", "10.0.0.1", 80, "t"), &mut dirty)
            .is_err());
        assert_eq!(m.desired(&ck("web", "10.0.0.1:80")), None);
    }

    #[test]
    fn plans() {
        let d = b"x".to_vec();
        assert_eq!(plan(Some(&d), None), Some(Plan::Create(d.clone())));
        assert_eq!(
            plan(Some(&d), Some(&Belief::Unknown)),
            Some(Plan::Create(d.clone()))
        );
        assert_eq!(plan(Some(&d), Some(&Belief::Mine(d.clone()))), None);
        assert_eq!(
            plan(Some(&d), Some(&Belief::Mine(b"y".to_vec()))),
            Some(Plan::Set(d.clone()))
        );
        assert_eq!(
            plan(Some(&d), Some(&Belief::Foreign { version: 3 })),
            Some(Plan::Takeover {
                version: 3,
                data: d.clone()
            })
        );
        assert_eq!(plan(None, None), None);
        assert_eq!(plan(None, Some(&Belief::Unknown)), Some(Plan::Delete));
        assert_eq!(plan(None, Some(&Belief::Mine(d))), Some(Plan::Delete));
    }
}
