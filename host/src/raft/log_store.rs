//! The Raft log on redb, with group commit.
//!
//! openraft hands us one `append` per client write. Syncing each one would
//! cap throughput at the disk's fsync rate, so `append` records the entries
//! in memory, queues them for a single writer thread and returns; the writer
//! commits everything queued since its last fsync in one redb transaction
//! and only then reports the entries flushed (`LogFlushed`), which is what
//! lets openraft acknowledge them. Reads are served from the in-memory copy,
//! which holds exactly the entries not yet purged behind a snapshot.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, Mutex};

use super::{NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_FORMAT: &str = "format";

/// The encoding of log entries and snapshots (postcard of the catalog's
/// types). Bump it with any change to those types, so that an old data dir
/// is refused with a clear message instead of misread.
pub const DATA_FORMAT: u32 = 2;

/// A change queued for the writer thread.
enum LogOp {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(u64, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Meta(&'static str, Vec<u8>, oneshot::Sender<Result<(), String>>),
}

#[derive(Default)]
struct Inner {
    log: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The newest commit marker, not yet written. It rides along with the next
/// batch instead of costing a sync of its own.
type PendingCommitted = Arc<std::sync::Mutex<Option<Vec<u8>>>>;

/// The log store handed to openraft; cheap to clone (one per reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// None in `--dev` mode: the same code path, nothing written to disk.
    writer: Option<mpsc::Sender<LogOp>>,
    committed: PendingCommitted,
}

fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StorageError<NodeId>> {
    postcard::to_allocvec(v).map_err(io_err)
}

impl LogStore {
    /// A log that lives only in memory (`--dev`).
    pub fn in_memory() -> LogStore {
        LogStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            writer: None,
            committed: Default::default(),
        }
    }

    /// Opens the log in `db`, loading what survived the last run, and starts
    /// the writer thread. A record that does not decode is an error naming
    /// the file: never a silently shorter log.
    pub fn open(db: Arc<Database>, path: &std::path::Path) -> anyhow::Result<LogStore> {
        use anyhow::Context;
        let where_ = || format!("reading the Raft log in {}", path.display());
        let mut inner = Inner::default();
        {
            let tx = db.begin_write().with_context(where_)?;
            // Create the tables on first start so that readers find them,
            // and stamp a new file with the format this build writes.
            tx.open_table(LOG).with_context(where_)?;
            {
                let mut meta = tx.open_table(META).with_context(where_)?;
                let stamped = meta
                    .get(KEY_FORMAT)
                    .with_context(where_)?
                    .map(|v| v.value().to_vec());
                match stamped {
                    None => {
                        meta.insert(KEY_FORMAT, DATA_FORMAT.to_le_bytes().as_slice())
                            .with_context(where_)?;
                    }
                    Some(v) if v == DATA_FORMAT.to_le_bytes() => {}
                    Some(v) => anyhow::bail!(
                        "{}: written in data format {:?}, but this build reads format {DATA_FORMAT}; \
                         use the muster version that wrote it, or restore from a snapshot",
                        path.display(),
                        v
                    ),
                }
            }
            tx.commit().with_context(where_)?;
        }
        let tx = db.begin_read().with_context(where_)?;
        let log = tx.open_table(LOG).with_context(where_)?;
        for row in log.range::<u64>(..).with_context(where_)? {
            let (k, v) = row.with_context(where_)?;
            let entry: Entry = postcard::from_bytes(v.value()).with_context(|| {
                format!("{}: log entry {} is corrupt", path.display(), k.value())
            })?;
            inner.log.insert(k.value(), entry);
        }
        let meta = tx.open_table(META).with_context(where_)?;
        let read_meta = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
            Ok(meta
                .get(key)
                .with_context(where_)?
                .map(|v| v.value().to_vec()))
        };
        if let Some(b) = read_meta(KEY_VOTE)? {
            inner.vote = Some(
                postcard::from_bytes(&b)
                    .with_context(|| format!("{}: vote is corrupt", path.display()))?,
            );
        }
        if let Some(b) = read_meta(KEY_COMMITTED)? {
            inner.committed = postcard::from_bytes(&b)
                .with_context(|| format!("{}: commit index is corrupt", path.display()))?;
        }
        if let Some(b) = read_meta(KEY_PURGED)? {
            inner.last_purged = postcard::from_bytes(&b)
                .with_context(|| format!("{}: purge marker is corrupt", path.display()))?;
        }
        tracing::info!(entries = inner.log.len(), "raft log loaded");
        let (tx, rx) = mpsc::channel();
        let committed = PendingCommitted::default();
        let pending = committed.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(db, rx, pending))
            .context("starting the Raft log writer")?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            writer: Some(tx),
            committed,
        })
    }

    /// Queues `op` and waits for the writer to make it durable.
    async fn persist(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> LogOp,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        writer
            .send(make(tx))
            .map_err(|_| io_err("raft log writer stopped"))?;
        rx.await
            .map_err(|_| io_err("raft log writer stopped"))?
            .map_err(io_err)
    }
}

/// Drains everything queued, writes it in one transaction, fsyncs once and
/// then completes every op in the batch.
fn writer_loop(db: Arc<Database>, rx: mpsc::Receiver<LogOp>, committed: PendingCommitted) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 8192 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let marker = committed.lock().ok().and_then(|mut m| m.take());
        let result = write_batch(&db, &batch, marker.as_deref()).map_err(|e| {
            tracing::error!(error = %e, "raft log write failed");
            e
        });
        tracing::trace!(
            ops = batch.len(),
            micros = started.elapsed().as_micros() as u64,
            "raft log batch synced"
        );
        for op in batch {
            match op {
                LogOp::Append(_, cb) => {
                    cb.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                LogOp::Truncate(_, tx) | LogOp::Purge(_, _, tx) | LogOp::Meta(_, _, tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[LogOp], committed: Option<&[u8]>) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut log = tx.open_table(LOG).map_err(|e| e.to_string())?;
        let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
        if let Some(bytes) = committed {
            meta.insert(KEY_COMMITTED, bytes)
                .map_err(|e| e.to_string())?;
        }
        for op in batch {
            match op {
                LogOp::Append(entries, _) => {
                    for (i, bytes) in entries {
                        log.insert(*i, bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                }
                LogOp::Truncate(from, _) => {
                    log.retain_in(*from.., |_, _| false)
                        .map_err(|e| e.to_string())?;
                }
                LogOp::Purge(upto, marker, _) => {
                    log.retain_in(..=*upto, |_, _| false)
                        .map_err(|e| e.to_string())?;
                    meta.insert(KEY_PURGED, marker.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                LogOp::Meta(key, bytes, _) => {
                    meta.insert(*key, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(vote)?;
        self.persist(|tx| LogOp::Meta(KEY_VOTE, bytes, tx)).await?;
        self.inner.lock().await.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Written with the next batch, never on its own: a lost commit
        // marker only means re-applying entries that the next leader
        // commits again anyway, not worth an fsync per write.
        if self.writer.is_some() {
            let bytes = encode(&committed)?;
            if let Ok(mut slot) = self.committed.lock() {
                *slot = Some(bytes);
            }
        }
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut inner = self.inner.lock().await;
        let mut encoded = Vec::new();
        for entry in entries {
            if self.writer.is_some() {
                encoded.push((entry.log_id.index, encode(&entry)?));
            }
            inner.log.insert(entry.log_id.index, entry);
        }
        match &self.writer {
            // Sent while holding the lock so that the writer sees appends,
            // truncates and purges in the order openraft issued them.
            Some(writer) => writer
                .send(LogOp::Append(encoded, callback))
                .map_err(|_| io_err("raft log writer stopped"))?,
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut inner = self.inner.lock().await;
            inner.log.split_off(&log_id.index);
        }
        self.persist(|tx| LogOp::Truncate(log_id.index, tx)).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut inner = self.inner.lock().await;
            let keep = inner.log.split_off(&(log_id.index + 1));
            inner.log = keep;
            inner.last_purged = Some(log_id);
        }
        let marker = encode(&Some(log_id))?;
        self.persist(|tx| LogOp::Purge(log_id.index, marker, tx))
            .await
    }
}
