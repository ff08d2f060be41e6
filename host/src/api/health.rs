//! `/v1/health/...`: instances and checks filtered by health.

use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::{read, render, ApiError, AppState, Interest, Query, Reply, State, Tables};
use crate::catalog::types::CheckStatus;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/health/node/{node}", get(node))
        .route("/v1/health/checks/{service}", get(service_checks))
        .route("/v1/health/service/{service}", get(service))
        .route("/v1/health/state/{state}", get(by_state))
}

async fn node(
    state: State,
    Path(name): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    read(&state, &p, Interest::Tables(Tables::CHECKS), |cat| {
        Ok(Reply::list(
            cat.node_checks(&name).map(render::check),
            cat.indexes().checks,
        ))
    })
    .await
}

async fn service_checks(
    state: State,
    Path(name): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let meta = p.node_meta()?;
    read(&state, &p, Interest::Tables(Tables::HEALTH), |cat| {
        Ok(Reply::list(
            cat.all_checks()
                .filter(|c| c.service_name == name && cat.node_matches(&c.node, &meta))
                .map(render::check),
            cat.indexes().checks,
        ))
    })
    .await
}

async fn service(
    state: State,
    Path(name): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let tags = p.all("tag");
    let passing = p.boolean("passing")?.unwrap_or(false);
    let meta = p.node_meta()?;
    let dc = state.config.datacenter.clone();
    read(&state, &p, Interest::Tables(Tables::HEALTH), |cat| {
        Ok(Reply::list(
            cat.health_entries(&name, &tags)
                .into_iter()
                .filter(|e| cat.node_matches(&e.node.name, &meta))
                // `?passing` keeps only instances whose every check passes.
                .filter(|e| !passing || e.status() == CheckStatus::Passing)
                .map(|e| {
                    json!({
                        "Node": render::node(e.node),
                        "Service": render::service(e.service, &dc),
                        "Checks": e.checks.iter().map(|c| render::check(c)).collect::<Vec<_>>(),
                    })
                }),
            cat.health_index(),
        ))
    })
    .await
}

async fn by_state(
    state: State,
    Path(wanted): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let filter: Option<CheckStatus> = match wanted.as_str() {
        "any" => None,
        s => Some(CheckStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid state \"{s}\": use any, passing, warning or critical"
            ))
        })?),
    };
    let meta = p.node_meta()?;
    read(&state, &p, Interest::Tables(Tables::HEALTH), |cat| {
        Ok(Reply::list(
            cat.all_checks()
                .filter(|c| {
                    filter.is_none_or(|s| c.status == s) && cat.node_matches(&c.node, &meta)
                })
                .map(render::check),
            cat.indexes().checks,
        ))
    })
    .await
}
