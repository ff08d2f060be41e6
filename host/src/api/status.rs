//! `/v1/status/...`: the Raft leader and voters, by their server address.

use std::sync::Arc;

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{json, AppState, State};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

/// Consul answers `""` when there is no leader, not an error.
async fn leader(state: State) -> Response {
    json(Value::String(
        state.consensus.leader_addr().unwrap_or_default(),
    ))
}

async fn peers(state: State) -> Response {
    json(json!(state.consensus.peers()))
}
