//! The export feed: the catalog's service instances as exporters see them,
//! and the ordered log of their changes.
//!
//! The state machine hands the feed the instances each applied batch
//! touched; the feed recomputes just those, compares them with its own view
//! and appends one change per instance that really changed, numbered by a
//! sequence that never repeats. An exporter starts from a `snapshot` (the
//! whole view at sequence N, read under the same lock that appends) and
//! then reads every change after N: nothing falls between the two. The log
//! is bounded; a reader that falls behind its start is told so and
//! resyncs from a fresh snapshot instead of blocking the catalog.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::catalog::types::{CheckStatus, Meta};
use crate::catalog::{Catalog, Index, Key, Touched};

/// Changes kept for readers that are behind; one that falls further back
/// resyncs. At 1,000 changes/s this is over a minute of backend outage.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A service instance as exporters see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub node: String,
    pub node_address: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// The service's address, else its node's.
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    /// The worst status among the instance's checks and its node's.
    pub status: CheckStatus,
}

/// One change, in commit order.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(Arc<Instance>),
    Remove(Key),
}

impl Change {
    pub fn key(&self) -> Key {
        match self {
            Change::Upsert(i) => (i.node.clone(), i.id.clone()),
            Change::Remove(k) => k.clone(),
        }
    }
}

/// A change with its place in the feed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// The Raft index whose batch produced it.
    pub index: Index,
    /// When the feed recorded it (just after commit and apply): where the
    /// export lag is measured from.
    pub at: Instant,
    pub change: Change,
}

/// Every instance at one point of the feed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The sequence of the last change the snapshot includes.
    pub seq: u64,
    pub index: Index,
    pub instances: Vec<Arc<Instance>>,
}

/// A reader asked for changes the bounded log no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the export feed dropped changes after {after} (oldest kept: {oldest})")]
pub struct Overflow {
    pub after: u64,
    pub oldest: u64,
}

struct State {
    view: BTreeMap<Key, Arc<Instance>>,
    log: VecDeque<Entry>,
    /// The sequence of the newest change (0 before the first).
    seq: u64,
    index: Index,
    capacity: usize,
}

/// The feed; one per catalog, shared by every exporter.
pub struct ExportFeed {
    state: Mutex<State>,
    latest: watch::Sender<u64>,
}

impl Default for ExportFeed {
    fn default() -> Self {
        ExportFeed::new(DEFAULT_CAPACITY)
    }
}

impl ExportFeed {
    pub fn new(capacity: usize) -> ExportFeed {
        ExportFeed {
            state: Mutex::new(State {
                view: BTreeMap::new(),
                log: VecDeque::new(),
                seq: 0,
                index: 0,
                capacity: capacity.max(1),
            }),
            latest: watch::channel(0).0,
        }
    }

    /// Records what an applied batch changed. Called by the state machine
    /// with the catalog still locked, so the feed's order is commit order.
    pub fn record(&self, catalog: &Catalog, touched: Touched) {
        if touched.is_empty() {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let index = catalog.last_index();
        let mut keys: BTreeSet<Key> = BTreeSet::new();
        if touched.all {
            keys.extend(state.view.keys().cloned());
            for node in catalog.nodes() {
                keys.extend(
                    catalog
                        .node_services(&node.name)
                        .map(|s| (s.node.clone(), s.id.clone())),
                );
            }
        } else {
            keys.extend(touched.instances);
            for node in &touched.nodes {
                let start = (node.clone(), String::new());
                keys.extend(
                    state
                        .view
                        .range(start..)
                        .take_while(|((n, _), _)| n == node)
                        .map(|(k, _)| k.clone()),
                );
                keys.extend(
                    catalog
                        .node_services(node)
                        .map(|s| (s.node.clone(), s.id.clone())),
                );
            }
        }
        let at = Instant::now();
        let mut changed = false;
        for key in keys {
            let now = instance(catalog, &key.0, &key.1);
            let change = match (state.view.get(&key), now) {
                (None, None) => continue,
                (Some(old), Some(new)) if **old == new => continue,
                (_, Some(new)) => {
                    let new = Arc::new(new);
                    state.view.insert(key, new.clone());
                    Change::Upsert(new)
                }
                (Some(_), None) => {
                    state.view.remove(&key);
                    Change::Remove(key)
                }
            };
            state.seq += 1;
            let seq = state.seq;
            state.log.push_back(Entry {
                seq,
                index,
                at,
                change,
            });
            if state.log.len() > state.capacity {
                state.log.pop_front();
            }
            changed = true;
        }
        state.index = index;
        if changed {
            let seq = state.seq;
            drop(state);
            self.latest.send_replace(seq);
        }
    }

    /// Every instance now, and the sequence it stands at.
    pub fn snapshot(&self) -> Snapshot {
        match self.state.lock() {
            Ok(state) => Snapshot {
                seq: state.seq,
                index: state.index,
                instances: state.view.values().cloned().collect(),
            },
            Err(_) => Snapshot {
                seq: 0,
                index: 0,
                instances: Vec::new(),
            },
        }
    }

    /// Up to `max` changes after sequence `after`, oldest first.
    pub fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, Overflow> {
        let Ok(state) = self.state.lock() else {
            return Ok(Vec::new());
        };
        let oldest = state.log.front().map_or(state.seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Err(Overflow { after, oldest });
        }
        let skip = (after + 1 - oldest) as usize;
        Ok(state.log.iter().skip(skip).take(max).cloned().collect())
    }

    /// The newest sequence; changes whenever a change is recorded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The newest sequence now.
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }
}

/// An instance as the catalog has it now, or `None` if it is gone.
fn instance(catalog: &Catalog, node: &str, id: &str) -> Option<Instance> {
    let service = catalog.service(node, id)?;
    let node_record = catalog.node(node)?;
    let address = if service.address.is_empty() {
        node_record.address.clone()
    } else {
        service.address.clone()
    };
    Some(Instance {
        node: node.to_string(),
        node_address: node_record.address.clone(),
        id: id.to_string(),
        name: service.name.clone(),
        tags: service.tags.clone(),
        address,
        port: service.port,
        meta: service.meta.clone(),
        status: catalog.instance_status(node, id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{CheckSpec, NodeSpec, Registration, ServiceSpec};
    use crate::catalog::Command;

    fn node(name: &str) -> NodeSpec {
        NodeSpec {
            id: String::new(),
            name: name.into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: Meta::new(),
            meta: Meta::new(),
        }
    }

    fn check(id: &str, service_id: &str, status: CheckStatus) -> CheckSpec {
        CheckSpec {
            id: id.into(),
            name: id.into(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: service_id.into(),
            definition: Default::default(),
        }
    }

    fn register(
        c: &mut Catalog,
        index: Index,
        node_name: &str,
        id: &str,
        status: Option<CheckStatus>,
    ) {
        let reg = Registration {
            node: node(node_name),
            skip_node_update: false,
            service: Some(ServiceSpec {
                id: id.into(),
                name: "web".into(),
                tags: Vec::new(),
                address: String::new(),
                port: 80,
                meta: Meta::new(),
                enable_tag_override: false,
                weights: Default::default(),
            }),
            checks: status
                .map(|s| check(&format!("{id}-check"), id, s))
                .into_iter()
                .collect(),
        };
        c.apply(index, 0, Command::Register(reg));
    }

    fn record(feed: &ExportFeed, c: &mut Catalog) {
        let touched = c.take_touched();
        feed.record(c, touched);
    }

    fn upserts(entries: &[Entry]) -> Vec<(String, CheckStatus)> {
        entries
            .iter()
            .filter_map(|e| match &e.change {
                Change::Upsert(i) => Some((i.id.clone(), i.status)),
                Change::Remove(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_snapshot_and_the_changes_after_it_cover_everything_once() {
        let feed = ExportFeed::new(100);
        let mut c = Catalog::default();
        register(&mut c, 1, "n1", "a", None);
        let touched = c.take_touched();
        assert!(!touched.is_empty());
        feed.record(&c, touched);
        let snap = feed.snapshot();
        assert_eq!(snap.instances.len(), 1);
        register(&mut c, 2, "n1", "b", Some(CheckStatus::Critical));
        record(&feed, &mut c);
        let after = feed.read(snap.seq, 10).unwrap();
        assert_eq!(upserts(&after), vec![("b".into(), CheckStatus::Critical)]);
        // A node-level check changes the health of every instance on it.
        let reg = Registration {
            node: node("n1"),
            skip_node_update: false,
            service: None,
            checks: vec![check("serfHealth", "", CheckStatus::Warning)],
        };
        c.apply(3, 0, Command::Register(reg));
        record(&feed, &mut c);
        let after = feed.read(snap.seq + 1, 10).unwrap();
        assert_eq!(upserts(&after), vec![("a".into(), CheckStatus::Warning)]);
        // Re-registering the same thing changes nothing.
        register(&mut c, 4, "n1", "a", None);
        record(&feed, &mut c);
        assert_eq!(feed.latest(), snap.seq + 2);
        // Deregistering the node removes both instances.
        c.apply(
            5,
            0,
            Command::Deregister {
                node: "n1".into(),
                service_id: None,
                check_id: None,
            },
        );
        record(&feed, &mut c);
        let removed: Vec<Key> = feed
            .read(snap.seq + 2, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.change.key())
            .collect();
        assert_eq!(
            removed,
            vec![("n1".into(), "a".into()), ("n1".into(), "b".into())]
        );
        assert!(feed.snapshot().instances.is_empty());
    }

    #[test]
    fn a_reader_behind_the_bounded_log_is_told_to_resync() {
        let feed = ExportFeed::new(3);
        let mut c = Catalog::default();
        for i in 0..5 {
            register(&mut c, i + 1, "n1", &format!("s{i}"), None);
            record(&feed, &mut c);
        }
        assert_eq!(feed.read(0, 10).unwrap_err().oldest, 3);
        assert_eq!(feed.read(2, 10).unwrap().len(), 3);
        assert!(feed.read(5, 10).unwrap().is_empty());
    }
}
