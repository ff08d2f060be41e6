//! `/v1/muster/...`: what muster adds to Consul's API — the loaded plugins,
//! the check scheduler's counters, the sources and the exporters; and
//! `PUT /v1/agent/reload`, which re-reads the config files.

use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde_json::json;

use super::{json, ApiError, AppState, State};
use crate::exporters::ReloadError;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/muster/plugins", get(plugins))
        .route("/v1/muster/plugins/{name}/reload", put(reload_plugin))
        .route("/v1/muster/checks", get(checks))
        .route("/v1/muster/sources", get(sources))
        .route("/v1/muster/exporters", get(exporters))
        .route("/v1/muster/exporters/reset-lag", put(reset_lag))
        .route("/v1/agent/reload", put(reload_config))
}

/// Every loaded plugin: name, world, source, content hash, load time,
/// calls, failures, last error.
/// Exporters carry their live version and swap history as `Exporter`.
async fn plugins(state: State) -> Response {
    let exporters = state.exporters.statuses().await;
    let list: Vec<serde_json::Value> = state
        .plugins
        .list()
        .into_iter()
        .map(|p| {
            let mut v = json!(p);
            if let Some(e) = exporters.iter().find(|e| e.name == p.name) {
                v["Exporter"] = json!(e);
            }
            v
        })
        .collect();
    json(json!(list))
}

/// `muster plugin reload NAME`: swaps an exporter to the component its
/// file (or built-in) holds now. 200 with the live hash once the new
/// version exports; 400 naming why it was rejected (the old one runs on).
async fn reload_plugin(state: State, Path(name): Path<String>) -> Result<Response, ApiError> {
    match state.exporters.reload(&name, "reload").await {
        Ok(hash) => Ok(json(json!({ "Name": name, "Hash": hash }))),
        Err(ReloadError::Unknown(_)) if state.plugins.get(&name).is_some() => {
            Err(ApiError::bad_request(format!(
                "plugin \"{name}\" is not an exporter: only exporters are hot-swapped (checks and sources load their plugin at start)"
            )))
        }
        Err(e @ ReloadError::Unknown(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ ReloadError::Rejected(_)) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// Every exporter: phase, live hash, feed position, lag, swap history.
async fn exporters(state: State) -> Response {
    json(json!(state.exporters.statuses().await))
}

async fn reset_lag(state: State) -> Response {
    state.exporters.reset_lag().await;
    json(json!(true))
}

/// Consul's `PUT /v1/agent/reload`: reads the config files again and
/// applies the `[[exporter]]` blocks (added, removed, changed). A config
/// that does not load is refused with 400 and nothing changes. Other
/// settings need a restart, as most of Consul's do.
async fn reload_config(state: State) -> Result<Response, ApiError> {
    let flags = state.config.flags.clone();
    let config = tokio::task::spawn_blocking(move || crate::config::Config::load(&flags))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::bad_request(format!("config not reloaded: {e:#}")))?;
    let exporters = if state.cluster.role() == crate::cluster::rpc::Role::Server {
        config.exporters.as_slice()
    } else {
        &[]
    };
    let outcomes = state.exporters.apply_config(exporters).await;
    Ok(json(json!({ "Exporters": outcomes })))
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
