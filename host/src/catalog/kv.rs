//! The KV table: entries, the tombstones that keep prefix indexes monotonic
//! after deletes, and an undo journal so that a transaction whose later op
//! fails can be rolled back without copying the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Index, KvEntry};

/// One reversible change, recorded while a transaction runs.
enum Undo {
    Entry(String, Option<KvEntry>),
    Tombstone(String, Option<Index>),
    TableIndex(Index),
}

/// The changes made so far by the command being applied; dropping it keeps
/// them, `rollback` reverts them.
#[derive(Default)]
pub struct Journal {
    undo: Vec<Undo>,
}

/// Keys, values and their indexes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, Index>,
    index: Index,
    /// The newest tombstone index reaped so far: prefix indexes never fall
    /// below it, so reaping a delete cannot move a prefix's index back.
    #[serde(default)]
    reaped: Index,
    /// Keys written since the last `take_changes`, for waking watchers.
    #[serde(skip)]
    changed: Vec<String>,
}

impl KvStore {
    /// The entry at `key`, if any.
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// Every entry (snapshot iteration, session scans).
    pub fn all(&self) -> impl Iterator<Item = &KvEntry> {
        self.entries.values()
    }

    /// The index of the whole table: the last index at which any key changed.
    pub fn table_index(&self) -> Index {
        self.index
    }

    /// The index a blocking read of one key should report: the key's own
    /// modify index, else the table's (Consul's rule, so that a watcher of a
    /// missing key still sees progress).
    pub fn key_index(&self, key: &str) -> Index {
        match self.entries.get(key) {
            Some(e) => e.modify_index,
            None => self.index,
        }
    }

    /// The index of a prefix: the newest change under it, deletes included.
    /// Watchers of one prefix are not woken by writes to another.
    pub fn prefix_index(&self, prefix: &str) -> Index {
        let live = self
            .prefix(prefix)
            .map(|e| e.modify_index)
            .max()
            .unwrap_or(0);
        let dead = self
            .tombstones
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.index,
            i => i.max(self.reaped),
        }
    }

    /// The newest tombstone index at or below `upto`.
    pub fn newest_tombstone_upto(&self, upto: Index) -> Option<Index> {
        self.tombstones
            .values()
            .copied()
            .filter(|i| *i <= upto)
            .max()
    }

    /// Drops tombstones at or below `upto`.
    pub fn reap_tombstones(&mut self, upto: Index) {
        let mut newest = 0;
        self.tombstones.retain(|_, i| {
            let keep = *i > upto;
            if !keep {
                newest = newest.max(*i);
            }
            keep
        });
        self.reaped = self.reaped.max(newest);
    }

    /// Writes `entry`, recording the previous state in `journal`.
    pub fn put(&mut self, entry: KvEntry, journal: &mut Journal) {
        let key = entry.key.clone();
        let index = entry.modify_index;
        self.changed.push(key.clone());
        let previous = self.entries.insert(key.clone(), entry);
        journal.undo.push(Undo::Entry(key.clone(), previous));
        if let Some(old) = self.tombstones.remove(&key) {
            journal.undo.push(Undo::Tombstone(key, Some(old)));
        }
        self.bump(index, journal);
    }

    /// Deletes `key` at `index`, leaving a tombstone. Returns whether it existed.
    pub fn remove(&mut self, key: &str, index: Index, journal: &mut Journal) -> bool {
        let Some(previous) = self.entries.remove(key) else {
            return false;
        };
        self.changed.push(key.to_string());
        journal
            .undo
            .push(Undo::Entry(key.to_string(), Some(previous)));
        let old = self.tombstones.insert(key.to_string(), index);
        journal.undo.push(Undo::Tombstone(key.to_string(), old));
        self.bump(index, journal);
        true
    }

    /// The keys written since the last call (a rolled-back write included:
    /// waking a watcher for nothing is harmless, missing one is not).
    pub fn take_changes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed)
    }

    fn bump(&mut self, index: Index, journal: &mut Journal) {
        if index != self.index {
            journal.undo.push(Undo::TableIndex(self.index));
            self.index = index;
        }
    }

    /// Reverts everything recorded in `journal`, newest first.
    pub fn rollback(&mut self, journal: Journal) {
        for undo in journal.undo.into_iter().rev() {
            match undo {
                Undo::Entry(key, Some(e)) => {
                    self.entries.insert(key, e);
                }
                Undo::Entry(key, None) => {
                    self.entries.remove(&key);
                }
                Undo::Tombstone(key, Some(i)) => {
                    self.tombstones.insert(key, i);
                }
                Undo::Tombstone(key, None) => {
                    self.tombstones.remove(&key);
                }
                Undo::TableIndex(i) => self.index = i,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, index: Index) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
            lock_index: 0,
            session: None,
            create_index: index,
            modify_index: index,
        }
    }

    #[test]
    fn rollback_restores_entries_tombstones_and_index() {
        let mut kv = KvStore::default();
        kv.put(entry("a", 1), &mut Journal::default());
        kv.take_changes();
        let before = format!("{kv:?}");
        let mut j = Journal::default();
        kv.put(entry("b", 2), &mut j);
        kv.remove("a", 2, &mut j);
        kv.rollback(j);
        assert_eq!(
            kv.take_changes(),
            ["b", "a"],
            "rolled-back writes still wake watchers"
        );
        assert_eq!(format!("{kv:?}"), before);
    }

    #[test]
    fn reaping_tombstones_never_moves_a_prefix_index_back() {
        let mut kv = KvStore::default();
        let mut j = Journal::default();
        kv.put(entry("a/1", 3), &mut j);
        kv.put(entry("a/2", 4), &mut j);
        kv.remove("a/2", 9, &mut j);
        assert_eq!(kv.prefix_index("a/"), 9);
        assert_eq!(kv.newest_tombstone_upto(10), Some(9));
        kv.reap_tombstones(10);
        assert_eq!(kv.newest_tombstone_upto(10), None);
        assert!(kv.prefix_index("a/") >= 9);
    }

    #[test]
    fn prefix_index_counts_deletes_but_not_other_prefixes() {
        let mut kv = KvStore::default();
        let mut j = Journal::default();
        kv.put(entry("a/1", 3), &mut j);
        kv.put(entry("b/1", 4), &mut j);
        assert_eq!(kv.prefix_index("a/"), 3);
        kv.remove("a/1", 7, &mut j);
        assert_eq!(kv.prefix_index("a/"), 7);
        assert_eq!(kv.prefix_index("b/"), 4);
    }
}
