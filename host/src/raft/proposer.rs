//! Write batching in front of Raft.
//!
//! openraft 0.9 appends and fsyncs one log entry at a time, so one command
//! per entry would cap writes at the disk's fsync rate. Instead, writers
//! queue their commands here; a single task takes everything queued while
//! the previous entries were being committed and proposes it as one entry.
//! Under load many writes share one fsync; a lone writer still goes out at
//! once. Commands of one entry apply in order, all at the entry's index.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{TypeConfig, WriteError};
use crate::catalog::command::KvOp;
use crate::catalog::{Command, Index, Request, Response};

/// At most this many commands, or about this many bytes, go in one entry.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries proposed but not yet committed: one being synced, one filling.
const IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<(Index, Response), WriteError>>;

struct Pending {
    command: Command,
    reply: Reply,
}

/// The queue writers submit to.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rough size of a command in the log, to bound entries.
fn weight(c: &Command) -> usize {
    let kv = |op: &KvOp| match op {
        KvOp::Set { value, .. }
        | KvOp::Cas { value, .. }
        | KvOp::Lock { value, .. }
        | KvOp::Unlock { value, .. } => value.len() + 64,
        _ => 64,
    };
    match c {
        Command::Kv(op) => kv(op),
        Command::Txn(ops) => ops.iter().map(kv).sum(),
        _ => 512,
    }
}

impl Proposer {
    /// Starts the batching task.
    pub fn start(raft: Raft<TypeConfig>) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Queues a command and waits for it to be committed and applied.
    pub async fn propose(&self, command: Command) -> Result<(Index, Response), WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { command, reply })
            .map_err(|_| WriteError::Raft("node is shutting down".into()))?;
        rx.await
            .map_err(|_| WriteError::Raft("node is shutting down".into()))?
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the queue fill up under load.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = weight(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += weight(&p.command);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<Command>, Vec<Reply>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let request = Request {
            now_ms: now_ms(),
            commands,
        };
        // Submitted here, in queue order; awaited in a task so the next
        // batch can be assembled meanwhile.
        let submitted = raft.client_write_ff(request).await;
        tokio::spawn(async move {
            let outcome = match submitted {
                Err(e) => Err(WriteError::Raft(e.to_string())),
                Ok(rx) => match rx.await {
                    Err(_) => Err(WriteError::Raft("write abandoned (raft stopped)".into())),
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(WriteError::NoLeader),
                    Ok(Err(e)) => Err(WriteError::Raft(
                        RaftError::<u64, _>::APIError(e).to_string(),
                    )),
                    Ok(Ok(r)) => Ok((r.log_id.index, r.data)),
                },
            };
            match outcome {
                Ok((index, responses)) => {
                    let mut responses = responses.into_iter();
                    for reply in replies {
                        let r = responses.next().ok_or_else(|| {
                            WriteError::Raft("missing response for a batched command".into())
                        });
                        let _ = reply.send(r.map(|r| (index, r)));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}
