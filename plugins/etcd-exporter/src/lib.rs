//! `builtin:etcd-exporter`: mirrors the catalog's service instances into
//! etcd v3 through its JSON gateway (`/v3/...` over HTTP), in Registrator's
//! layout, so that anything that reads Registrator's etcd backend can read
//! muster's catalog.
//!
//! Config (JSON, the `config` table of the `[[exporter]]` block; unknown
//! keys are refused):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `endpoints` | required | etcd client URLs, `["http://HOST:PORT", ...]`; when one does not answer, the next is tried, and the one that answered is kept |
//! | `prefix` | `"/services"` | where the keys go (a trailing `/` is dropped) |
//! | `value` | `"address"` | `"address"`: `ip:port`; `"json"`: `{"ID","Name","Node","Address","Port","Tags","Meta","Status"}` |
//! | `lease_ttl` | `"15s"` | Go duration, at least 2s: every key lives under one lease, so a dead node's entries expire |
//! | `timeout` | `"2s"` | Go duration: connect, first-byte and between-bytes timeout of each request |
//!
//! Layout: `<prefix>/<service-name>/<service-id>`, a `/` inside the name
//! or ID written as `_`. Each instance the node exports is one key; the
//! node has already chosen which instances (for example, passing ones).
//!
//! - `start` grants the lease (which proves an endpoint answers).
//! - `resync(all)` renews the lease (or replaces it), reads every key under
//!   `<prefix>/` and makes it equal to `all`: puts what is missing or
//!   different or under another lease, deletes everything else under it.
//! - `apply(changes)` puts and deletes what changed, the last change to a
//!   key winning, in txns of at most 128 operations (etcd's default limit).
//! - `tick` renews the lease once a third of its TTL has passed. If etcd
//!   let it expire (etcd or this node was away), a new lease is granted and
//!   every key is put back under it.
//!
//! The work is plain Rust over a small `Host` trait (`exporter`, `etcd`,
//! `layout`, `config`, `base64`), tested on the host with a fake etcd, and
//! against a real one with `cargo test -p etcd-exporter -- --ignored`.
//! `guest` (the WIT exports) and `wasi_host` (wasi:http, clocks, log) are
//! the glue, compiled for wasm only.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "exporter",
    generate_all,
});

pub mod base64;
pub mod config;
pub mod etcd;
pub mod exporter;
pub mod layout;

// The glue to the WIT and WASI only exists in the component: natively
// there is nothing to export and no host to call.
#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
mod wasi_host;

#[cfg(test)]
mod real_etcd;
