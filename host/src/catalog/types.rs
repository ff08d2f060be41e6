//! The records the catalog keeps. Every record carries the Raft index that
//! created it and the one that last changed it, which is what Consul clients
//! see as `CreateIndex` / `ModifyIndex` and what blocking queries compare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Raft log index: the catalog's logical clock.
pub type Index = u64;

/// Free-form string metadata as Consul has it on nodes and services.
pub type Meta = BTreeMap<String, String>;

/// Records that carry Consul's `CreateIndex` / `ModifyIndex`.
pub trait Versioned: PartialEq {
    /// (create index, modify index).
    fn stamp(&self) -> (Index, Index);
    fn set_stamp(&mut self, create: Index, modify: Index);
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn stamp(&self) -> (Index, Index) {
                (self.create_index, self.modify_index)
            }
            fn set_stamp(&mut self, create: Index, modify: Index) {
                self.create_index = create;
                self.modify_index = modify;
            }
        }
    )*};
}

versioned!(Node, Service, Check);

/// A machine that hosts services (an agent, or an external node registered
/// through the catalog API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: Meta,
    pub meta: Meta,
    pub create_index: Index,
    pub modify_index: Index,
}

/// Consul's DNS weights: how often an instance is returned in each health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// One instance of a service on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    pub enable_tag_override: bool,
    pub weights: Weights,
    pub create_index: Index,
    pub modify_index: Index,
}

impl Service {
    /// Whether the instance carries `tag`, compared case-insensitively as
    /// Consul does (HTTP `?tag=` and DNS tag lookups alike).
    pub fn has_tag(&self, tag: &str) -> bool {
        fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
            s.chars().flat_map(char::to_lowercase)
        }
        self.tags.iter().any(|t| folded(t).eq(folded(tag)))
    }
}

/// The states a check can be in, ordered from best to worst so that the
/// aggregate of several checks is simply the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    /// The lower-case word Consul uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    /// Parses Consul's status words; `None` for anything else.
    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

/// How a check is run, kept with the check so that any agent (or the same
/// agent after a restart) can re-arm it from the catalog alone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckDefinition {
    /// "ttl" for host-tracked TTL checks; "http", "tcp" or "wasm" for checks
    /// the agent runs through a plugin; "" for checks fed from outside
    /// (catalog registrations, maintenance mode).
    pub kind: String,
    pub ttl_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub deregister_critical_after_ms: u64,
    /// The URL of an HTTP check, `host:port` of a TCP check.
    pub endpoint: String,
    /// For "wasm": the `[[check_plugin]]` that runs it.
    pub plugin: String,
    /// HTTP method, headers and body (HTTP checks).
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub tls_skip_verify: bool,
    /// For "wasm": the check's own `Config`, JSON, merged over the plugin's.
    pub config: String,
    /// Consecutive results needed before the status moves (Consul's
    /// SuccessBeforePassing / FailuresBeforeCritical).
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
}

impl CheckDefinition {
    /// Whether the agent runs this check itself through a plugin.
    pub fn is_probe(&self) -> bool {
        matches!(self.kind.as_str(), "http" | "tcp" | "wasm")
    }
}

/// A health check on a node, or on one service instance of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub node: String,
    pub id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    /// Empty for node-level checks, which apply to every service on the node.
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub definition: CheckDefinition,
    pub create_index: Index,
    pub modify_index: Index,
}

/// A key/value pair with Consul's lock bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub lock_index: u64,
    pub session: Option<String>,
    pub create_index: Index,
    pub modify_index: Index,
}

/// What happens to the locks a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionBehavior {
    Release,
    Delete,
}

impl SessionBehavior {
    /// Consul's wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionBehavior::Release => "release",
            SessionBehavior::Delete => "delete",
        }
    }
}

/// A session: the unit Consul builds locks and leader election on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior: SessionBehavior,
    /// The TTL as the client wrote it ("30s"), empty for none.
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
    pub create_index: Index,
    pub modify_index: Index,
}
