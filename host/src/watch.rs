//! Wake-ups for blocking queries.
//!
//! A blocking query sleeps until what it read may have changed, not until
//! anything changed: it subscribes to the tables it reads (nodes, services,
//! checks, sessions) or, for KV, to its key prefix. The state machine tells
//! this hub which tables moved and which keys were written after each
//! applied batch, and only the matching subscribers wake. Ten thousand
//! watchers of one prefix therefore sleep through a stream of writes
//! elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::select_all;
use tokio::sync::watch;

use crate::catalog::{Index, TableIndexes};

/// The catalog tables a query can read, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables(u8);

impl Tables {
    pub const NODES: Tables = Tables(1);
    pub const SERVICES: Tables = Tables(2);
    pub const CHECKS: Tables = Tables(4);
    pub const SESSIONS: Tables = Tables(8);
    /// Everything a health query joins.
    pub const HEALTH: Tables = Tables(1 | 2 | 4);
    const ALL: [Tables; 4] = [
        Tables::NODES,
        Tables::SERVICES,
        Tables::CHECKS,
        Tables::SESSIONS,
    ];

    /// Both sets.
    pub const fn and(self, other: Tables) -> Tables {
        Tables(self.0 | other.0)
    }

    fn contains(self, t: Tables) -> bool {
        self.0 & t.0 == t.0
    }

    fn slot(self) -> usize {
        self.0.trailing_zeros() as usize
    }

    /// The tables whose index differs between two snapshots of indexes.
    pub fn changed(before: &TableIndexes, after: &TableIndexes) -> Tables {
        let mut t = 0;
        if before.nodes != after.nodes {
            t |= Tables::NODES.0;
        }
        if before.services != after.services {
            t |= Tables::SERVICES.0;
        }
        if before.checks != after.checks {
            t |= Tables::CHECKS.0;
        }
        if before.sessions != after.sessions {
            t |= Tables::SESSIONS.0;
        }
        Tables(t)
    }
}

/// What a blocking query waits on.
#[derive(Debug, Clone)]
pub enum Interest {
    Tables(Tables),
    /// Keys starting with this prefix (a single key is its own prefix).
    KvPrefix(String),
}

/// The hub: one channel per table, one per watched KV prefix.
pub struct Watches {
    tables: [watch::Sender<Index>; 4],
    kv: Mutex<KvChannels>,
}

/// Channels of watched prefixes. A channel whose watchers are all gone is
/// dropped when a write reaches it, or by a sweep once the map has doubled
/// since the last one (prefixes that are watched but never written).
struct KvChannels {
    map: HashMap<String, watch::Sender<Index>>,
    sweep_at: usize,
}

/// The map size below which no sweep is worth its scan.
const MIN_SWEEP: usize = 1024;

impl Default for Watches {
    fn default() -> Self {
        Watches {
            tables: std::array::from_fn(|_| watch::channel(0).0),
            kv: Mutex::new(KvChannels {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }
}

/// A subscription; `changed` resolves when something it watches moved
/// since the last `mark_seen`.
pub struct Waiter {
    receivers: Vec<watch::Receiver<Index>>,
}

impl Waiter {
    /// Forgets changes so far: call before reading the catalog.
    pub fn mark_seen(&mut self) {
        for r in &mut self.receivers {
            r.borrow_and_update();
        }
    }

    /// Waits for a change. Returns false if the node is shutting down.
    pub async fn changed(&mut self) -> bool {
        if self.receivers.is_empty() {
            return std::future::pending().await;
        }
        let futures = self.receivers.iter_mut().map(|r| Box::pin(r.changed()));
        select_all(futures).await.0.is_ok()
    }
}

impl Watches {
    /// Subscribes to `interest`.
    pub fn subscribe(&self, interest: &Interest) -> Waiter {
        let receivers = match interest {
            Interest::Tables(t) => Tables::ALL
                .iter()
                .filter(|one| t.contains(**one))
                .map(|one| self.tables[one.slot()].subscribe())
                .collect(),
            Interest::KvPrefix(prefix) => match self.kv.lock() {
                Ok(mut kv) => {
                    if kv.map.len() >= kv.sweep_at {
                        kv.map.retain(|_, tx| tx.receiver_count() > 0);
                        kv.sweep_at = (kv.map.len() * 2).max(MIN_SWEEP);
                    }
                    vec![kv
                        .map
                        .entry(prefix.clone())
                        .or_insert_with(|| watch::channel(0).0)
                        .subscribe()]
                }
                Err(_) => Vec::new(),
            },
        };
        Waiter { receivers }
    }

    /// Wakes the watchers of the tables that changed and of every prefix of
    /// every written key, at `index`.
    pub fn notify(&self, tables: Tables, keys: &[String], index: Index) {
        for one in Tables::ALL {
            if tables.contains(one) {
                self.tables[one.slot()].send_replace(index);
            }
        }
        if keys.is_empty() {
            return;
        }
        let Ok(mut kv) = self.kv.lock() else { return };
        let map = &mut kv.map;
        if map.is_empty() {
            return;
        }
        for key in keys {
            // Every prefix of the key, "" included, on char boundaries.
            let ends = key
                .char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(key.len()));
            for end in ends {
                let prefix = &key[..end];
                if let Some(tx) = map.get(prefix) {
                    if tx.receiver_count() == 0 {
                        map.remove(prefix);
                    } else {
                        tx.send_replace(index);
                    }
                }
            }
        }
    }

    /// Wakes everyone (a snapshot replaced the whole catalog).
    pub fn notify_all(&self, index: Index) {
        for tx in &self.tables {
            tx.send_replace(index);
        }
        if let Ok(mut kv) = self.kv.lock() {
            kv.map.retain(|_, tx| tx.receiver_count() > 0);
            for tx in kv.map.values() {
                tx.send_replace(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken(w: &mut Waiter) -> bool {
        w.receivers.iter().any(|r| r.has_changed().unwrap_or(false))
    }

    #[test]
    fn kv_watchers_wake_only_for_their_prefix() {
        let hub = Watches::default();
        let mut a = hub.subscribe(&Interest::KvPrefix("app/".into()));
        let mut root = hub.subscribe(&Interest::KvPrefix(String::new()));
        let mut other = hub.subscribe(&Interest::KvPrefix("other/".into()));
        hub.notify(Tables(0), &["app/x".to_string()], 7);
        assert!(woken(&mut a));
        assert!(woken(&mut root));
        assert!(!woken(&mut other));
    }

    #[test]
    fn table_watchers_wake_only_for_their_tables() {
        let hub = Watches::default();
        let mut health = hub.subscribe(&Interest::Tables(Tables::HEALTH));
        let mut sessions = hub.subscribe(&Interest::Tables(Tables::SESSIONS));
        hub.notify(Tables::CHECKS, &[], 3);
        assert!(woken(&mut health));
        assert!(!woken(&mut sessions));
        health.mark_seen();
        assert!(!woken(&mut health));
    }

    #[test]
    fn dropped_watchers_are_forgotten() {
        let hub = Watches::default();
        drop(hub.subscribe(&Interest::KvPrefix("gone/".into())));
        hub.notify(Tables(0), &["gone/x".to_string()], 1);
        assert!(hub.kv.lock().unwrap().map.is_empty());
    }

    #[test]
    fn prefixes_watched_but_never_written_are_swept() {
        let hub = Watches::default();
        for i in 0..5 * MIN_SWEEP {
            drop(hub.subscribe(&Interest::KvPrefix(format!("never/{i}"))));
        }
        let _live = hub.subscribe(&Interest::KvPrefix("live/".into()));
        let kv = hub.kv.lock().unwrap();
        assert!(
            kv.map.len() <= MIN_SWEEP + 1,
            "{} channels kept",
            kv.map.len()
        );
        assert!(kv.map.contains_key("live/"));
    }
}
