//! muster: a service registry and discovery node, wire-compatible with
//! Consul's HTTP API, with the catalog replicated by openraft.

pub mod agent;
pub mod api;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod exporters;
pub mod health;
pub mod node;
pub mod plugins;
pub mod raft;
pub mod sources;
pub mod watch;
