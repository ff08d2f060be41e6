//! The Raft state machine: the catalog in memory, snapshots in redb.
//!
//! Applying entries only touches memory; durability comes from the log
//! (fsynced before a write is acknowledged) and from snapshots, which are
//! written to the same redb file so that a restart loads the last snapshot
//! and replays the log after it.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{NodeId, TypeConfig};
use crate::catalog::{Catalog, Index, Response, Touched};
use crate::exporters::feed::ExportFeed;
use crate::watch::{Tables, Watches};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_CURRENT: &str = "current";

/// The catalog plus the Raft bookkeeping that travels with it.
#[derive(Default)]
pub struct Applied {
    pub catalog: Catalog,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// What a snapshot holds on disk and on the wire.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// Shared handle to the state machine; readers take the lock briefly.
#[derive(Clone)]
pub struct StateMachine {
    state: Arc<RwLock<Applied>>,
    db: Option<Arc<Database>>,
    current: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
    applied_tx: Arc<watch::Sender<Index>>,
    watches: Arc<Watches>,
    /// Service-instance changes in commit order, for exporters.
    feed: Arc<ExportFeed>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot from `db` if any.
    pub fn open(
        db: Option<Arc<Database>>,
        path: Option<&std::path::Path>,
        watches: Arc<Watches>,
        feed: Arc<ExportFeed>,
    ) -> anyhow::Result<StateMachine> {
        use anyhow::Context;
        let mut applied = Applied::default();
        let mut current = None;
        if let (Some(db), Some(path)) = (&db, path) {
            let where_ = || format!("reading the snapshot in {}", path.display());
            let tx = db.begin_write().with_context(where_)?;
            tx.open_table(SNAPSHOT).with_context(where_)?;
            tx.commit().with_context(where_)?;
            let tx = db.begin_read().with_context(where_)?;
            let table = tx.open_table(SNAPSHOT).with_context(where_)?;
            if let Some(bytes) = table.get(KEY_CURRENT).with_context(where_)? {
                let snap: StoredSnapshot = postcard::from_bytes(bytes.value())
                    .with_context(|| format!("{}: snapshot record is corrupt", path.display()))?;
                let catalog: Catalog = postcard::from_bytes(&snap.data)
                    .with_context(|| format!("{}: snapshot data is corrupt", path.display()))?;
                applied = Applied {
                    catalog: catalog.restored(),
                    last_applied: snap.meta.last_log_id,
                    membership: snap.meta.last_membership.clone(),
                };
                tracing::info!(index = ?snap.meta.last_log_id, "snapshot restored");
                current = Some(snap);
            }
        }
        let index = applied.catalog.last_index();
        feed.record(&applied.catalog, everything());
        Ok(StateMachine {
            state: Arc::new(RwLock::new(applied)),
            db,
            current: Arc::new(tokio::sync::Mutex::new(current)),
            applied_tx: Arc::new(watch::channel(index).0),
            watches,
            feed,
        })
    }

    /// The applied state, for readers.
    pub fn state(&self) -> Arc<RwLock<Applied>> {
        self.state.clone()
    }

    /// A receiver that changes whenever an entry is applied.
    pub fn subscribe(&self) -> watch::Receiver<Index> {
        self.applied_tx.subscribe()
    }

    fn save(&self, snap: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let bytes = postcard::to_allocvec(snap).map_err(sm_err)?;
        let tx = db.begin_write().map_err(sm_err)?;
        {
            let mut table = tx.open_table(SNAPSHOT).map_err(sm_err)?;
            table
                .insert(KEY_CURRENT, bytes.as_slice())
                .map_err(sm_err)?;
        }
        tx.commit().map_err(sm_err)
    }

    fn replace(&self, applied: Applied) -> Result<(), StorageError<NodeId>> {
        let index = applied.catalog.last_index();
        let mut state = self
            .state
            .write()
            .map_err(|_| sm_err("state machine lock poisoned"))?;
        *state = applied;
        self.feed.record(&state.catalog, everything());
        drop(state);
        self.applied_tx.send_replace(index);
        self.watches.notify_all(index);
        Ok(())
    }
}

/// Every instance: after a snapshot replaced the catalog wholesale.
fn everything() -> Touched {
    Touched {
        all: true,
        ..Touched::default()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, meta) = {
            let state = self
                .state
                .read()
                .map_err(|_| sm_err("state machine lock poisoned"))?;
            let data = postcard::to_allocvec(&state.catalog).map_err(sm_err)?;
            let id = state
                .last_applied
                .map(|l| format!("{}-{}", l.leader_id, l.index))
                .unwrap_or_else(|| "empty".into());
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            };
            (data, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save(&stored)?;
        *self.current.lock().await = Some(stored);
        tracing::info!(index = ?meta.last_log_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let state = self
            .state
            .read()
            .map_err(|_| sm_err("state machine lock poisoned"))?;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
    {
        let mut out = Vec::new();
        let (index, tables, keys) = {
            let mut state = self
                .state
                .write()
                .map_err(|_| sm_err("state machine lock poisoned"))?;
            let before = state.catalog.indexes();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(req) => state.catalog.apply_entry(entry.log_id.index, req),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                };
                out.push(response);
            }
            let tables = Tables::changed(&before, &state.catalog.indexes());
            let keys = state.catalog.take_kv_changes();
            let replaced = state.catalog.take_replaced();
            let touched = state.catalog.take_touched();
            self.feed.record(&state.catalog, touched);
            (
                state.last_applied.map(|l| l.index).unwrap_or(0),
                tables,
                (keys, replaced),
            )
        };
        // Wake blocking queries once per batch, after the lock is released,
        // and only those whose tables or prefixes moved (all of them after
        // a restore).
        self.applied_tx.send_replace(index);
        let (keys, replaced) = keys;
        if replaced {
            self.watches.notify_all(index);
        } else {
            self.watches.notify(tables, &keys, index);
        }
        Ok(out)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let catalog: Catalog = postcard::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save(&stored)?;
        self.replace(Applied {
            catalog: catalog.restored(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        })?;
        tracing::info!(index = ?meta.last_log_id, "installed a snapshot from the leader");
        *self.current.lock().await = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.current.lock().await.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}
