//! `builtin:zookeeper-exporter`: mirrors the catalog into ZooKeeper in
//! Registrator's layout, speaking ZooKeeper's client protocol itself over a
//! wasi:sockets TCP stream.
//!
//! # Config
//!
//! The `config` table of the exporter's TOML block:
//!
//! - `servers` (required): non-empty list of `"HOST:PORT"`, tried in order
//!   until one answers.
//! - `path` (default `"/services"`): the parent of the service znodes; no
//!   trailing slash. Created with its ancestors if missing.
//! - `session_timeout` (Go duration, default `"10s"`): asked of the server,
//!   which may grant another (by default between 2 and 20 ticks).
//! - `timeout` (Go duration, default `"2s"`): for a connect and for each
//!   reply.
//!
//! Unknown keys are refused, naming the key.
//!
//! # Layout
//!
//! For each exported instance, a persistent znode `<path>/<service-name>`
//! and under it an ephemeral child `<address>:<port>` whose data is the JSON
//! Registrator writes: `{"Name","IP","PublicPort","PrivatePort",
//! "ContainerID","Tags","Attrs"}` (both ports are the instance's port,
//! `ContainerID` is the `container-id` meta value or "", `Attrs` the meta).
//! A service znode is deleted with its last child. Two instances with one
//! address:port under one name share the child: the last upsert wins, and
//! removing one instance leaves the child to the other.
//!
//! # Sessions
//!
//! One session, kept alive by `tick` (a ping after a third of the granted
//! timeout without traffic) and resumed after a broken connection. When the
//! server says it expired, a new session re-creates every child. A child
//! that exists but belongs to another session (a previous leader's
//! exporter, our own expired session) is replaced in one multi (delete at
//! its version + create), so nothing we export vanishes when that session
//! ends.
//!
//! Modules: `jute` (wire records), `config`, `layout` (instance to znode),
//! `client` (connection, session, pipelining), `exporter` (model and
//! reconciliation), `net` (transport trait; `std::net` off wasm), `wasm`
//! (the component: bindings, wasi:sockets transport, exports).

pub mod client;
pub mod config;
pub mod exporter;
pub mod jute;
pub mod layout;
pub mod net;

#[cfg(target_arch = "wasm32")]
mod wasm;
