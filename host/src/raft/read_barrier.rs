//! Linearizable reads, batched: a `?consistent` read needs the leader to
//! confirm with a quorum, after the read arrived, that it still leads. One
//! confirmation round serves every read that was waiting when it started,
//! so 64 concurrent readers cost one heartbeat round, not 64.

use std::sync::{Arc, Mutex};

use openraft::Raft;
use tokio::sync::oneshot;

use super::{ReadError, TypeConfig};

type Waiter = oneshot::Sender<Result<(), ReadError>>;

pub struct ReadBarrier {
    raft: Raft<TypeConfig>,
    state: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// A confirmation round is running.
    running: bool,
    /// Reads that arrived after the running round started.
    next: Vec<Waiter>,
}

impl ReadBarrier {
    pub fn new(raft: Raft<TypeConfig>) -> ReadBarrier {
        ReadBarrier {
            raft,
            state: Mutex::new(Waiting::default()),
        }
    }

    /// Returns once a round that started after this call confirmed
    /// leadership and the state machine applied up to its read index.
    pub async fn confirm(self: &Arc<Self>) -> Result<(), ReadError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = self.state.lock().map_err(|_| ReadError::NoLeader)?;
            w.next.push(tx);
            !std::mem::replace(&mut w.running, true)
        };
        if start {
            // Rounds run on a task of their own, so a reader that gives up
            // (its request was cancelled) does not stall the others.
            let me = self.clone();
            tokio::spawn(async move { me.rounds().await });
        }
        rx.await.map_err(|_| ReadError::NoLeader)?
    }

    async fn rounds(&self) {
        loop {
            let batch = match self.state.lock() {
                Ok(mut w) if !w.next.is_empty() => std::mem::take(&mut w.next),
                Ok(mut w) => {
                    w.running = false;
                    return;
                }
                Err(_) => return,
            };
            let ok = self.raft.ensure_linearizable().await.is_ok();
            for waiter in batch {
                let _ = waiter.send(if ok { Ok(()) } else { Err(ReadError::NoLeader) });
            }
        }
    }
}
