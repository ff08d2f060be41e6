//! `/v1/muster/...`: what muster adds to Consul's API — the loaded plugins,
//! the check scheduler's counters and the sources.

use std::sync::Arc;

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::{json, AppState, State};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/muster/plugins", get(plugins))
        .route("/v1/muster/checks", get(checks))
        .route("/v1/muster/sources", get(sources))
}

/// Every loaded plugin: name, world, source, content hash, load time,
/// calls, failures, last error.
async fn plugins(state: State) -> Response {
    json(json!(state.plugins.list()))
}

/// The scheduler's counters (runs, faults, writes, start lateness).
async fn checks(state: State) -> Response {
    json(state.agent.probes.stats.to_json(state.agent.probes.len()))
}

/// Every source: its plugin, counters, current problems (files or
/// containers it could not read) and, for Docker, the connection.
async fn sources(state: State) -> Response {
    json(json!(state.sources.list()))
}
