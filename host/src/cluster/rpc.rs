//! The cluster protocol's messages, carried on the Raft transport
//! (`addresses.server`) beside Raft's own RPCs.

use serde::{Deserialize, Serialize};

use super::anti_entropy::NodeState;
use crate::catalog::{Command, Index, Response};
use crate::raft::{NodeId, WriteError};

/// Whether a node takes part in consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// How a node introduces itself and how servers are listed to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The Raft ID (derived from the node's UUID).
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    /// `addresses.server` as others reach it (servers only).
    pub rpc: String,
    pub http: String,
    pub dns: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// Joining: "here I am, who do you know, is there a cluster yet?"
    Hello {
        me: MemberInfo,
        bootstrap_expect: u32,
    },
    /// To the leader: add this server as a learner, then a voter.
    AddServer(MemberInfo),
    /// To the leader: remove this server from the voters (graceful leave).
    RemoveServer { id: NodeId },
    /// "I am alive": to the leader, or relayed to it by another server.
    Heartbeat { node: String },
    /// Anti-entropy: what the catalog holds for this node.
    NodeView { node: String },
    /// A client agent's write: proposed by the leader, forwarded to it by
    /// any other server.
    Write(Command),
    /// Many independent writes at once (anti-entropy): proposed
    /// concurrently, so the leader commits them in a few Raft entries.
    WriteBatch(Vec<Command>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterResponse {
    Welcome {
        /// The answering server already belongs to a Raft cluster.
        initialized: bool,
        /// The leader's `addresses.server`, if known.
        leader: Option<String>,
        servers: Vec<MemberInfo>,
    },
    /// Heartbeat acknowledged; where the leader is now.
    Alive {
        leader: Option<String>,
        servers: Vec<MemberInfo>,
    },
    NodeView(Option<NodeState>),
    Written(Result<(Index, Response), WriteError>),
    WrittenBatch(Vec<Result<(Index, Response), WriteError>>),
    Done,
}

/// An HTTP request forwarded between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The answer to a forwarded HTTP request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}
