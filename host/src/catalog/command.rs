//! The mutations the catalog accepts. Each is a Raft log entry, so
//! everything the state machine needs to apply it deterministically (the
//! leader's clock, generated IDs) is inside the command.

use serde::{Deserialize, Serialize};

use super::types::{CheckDefinition, CheckStatus, Index, KvEntry, Meta, SessionBehavior, Weights};

/// A log entry's payload: the commands proposed together (writers are
/// batched into one entry, so one fsync commits many writes) and the
/// proposing leader's wall clock, which lock-delay bookkeeping needs and
/// replicas must not read themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub commands: Vec<Command>,
}

/// Every change the catalog knows how to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Register(Registration),
    Deregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
    UpdateCheck {
        node: String,
        check_id: String,
        status: CheckStatus,
        output: String,
    },
    Kv(KvOp),
    Txn(Vec<KvOp>),
    SessionCreate(NewSession),
    SessionDestroy {
        id: String,
    },
    /// Forgets KV tombstones at or below this index (Consul's tombstone
    /// GC): proposed by the leader once they are older than the tombstone
    /// TTL, so deletes do not cost memory forever.
    ReapTombstones {
        upto: Index,
    },
    /// Replaces the whole catalog with one saved by `GET /v1/snapshot`
    /// (postcard bytes, checked by the API before proposing). Every table
    /// moves to this entry's index, so blocking queries see a change.
    Restore {
        catalog: Vec<u8>,
    },
}

/// A catalog registration: a node, optionally one service on it, and checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub node: NodeSpec,
    /// Keep the node's address and meta as they are (Consul's SkipNodeUpdate).
    pub skip_node_update: bool,
    pub service: Option<ServiceSpec>,
    pub checks: Vec<CheckSpec>,
}

/// The node part of a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: Meta,
    pub meta: Meta,
}

/// The service part of a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    pub enable_tag_override: bool,
    pub weights: Weights,
}

/// A check in a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    pub id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub definition: CheckDefinition,
}

/// A session as the API validated it; the ID is chosen before proposing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSession {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior: SessionBehavior,
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
}

/// One KV operation: Consul's txn verbs, which also express the plain
/// `PUT`/`DELETE /v1/kv` requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvOp {
    Set {
        key: String,
        value: Vec<u8>,
        flags: u64,
    },
    Cas {
        key: String,
        value: Vec<u8>,
        flags: u64,
        index: u64,
    },
    Lock {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    Unlock {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    Get {
        key: String,
    },
    GetTree {
        prefix: String,
    },
    CheckIndex {
        key: String,
        index: u64,
    },
    CheckSession {
        key: String,
        session: String,
    },
    CheckNotExists {
        key: String,
    },
    Delete {
        key: String,
    },
    DeleteTree {
        prefix: String,
    },
    DeleteCas {
        key: String,
        index: u64,
    },
}

/// What applying a command produced, handed back to the proposer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Raft-internal entries (blank, membership) and commands with no result.
    Done,
    /// The `true`/`false` of Consul's KV and check writes.
    Applied(bool),
    /// The rejection of a command whose preconditions failed at apply time.
    Rejected(String),
    /// Results of a KV op or a txn: the entries each op returned.
    Kv(Vec<Vec<KvEntry>>),
    /// A txn that failed: the op that failed and why; nothing was applied.
    TxnFailed(Vec<TxnError>),
}

/// Why one operation of a txn failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}
