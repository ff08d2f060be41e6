//! `/v1/session/...`: sessions, the basis of Consul locks and leader election.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::decode::{self, GoDuration};
use super::{
    check_dc, read, render, ApiError, AppState, Interest, Query, RawBody, Reply, State, Tables,
};
use crate::agent::NODE_CHECK_ID;
use crate::catalog::command::NewSession;
use crate::catalog::types::SessionBehavior;
use crate::catalog::{Command, Response as Applied};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/destroy/{id}", put(destroy))
        .route("/v1/session/info/{id}", get(info))
        .route("/v1/session/node/{node}", get(by_node))
        .route("/v1/session/list", get(list))
        .route("/v1/session/renew/{id}", put(renew))
}

#[derive(Deserialize)]
struct ServiceCheckRef {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateBody {
    name: String,
    node: String,
    checks: Option<Vec<String>>,
    #[serde(rename = "nodechecks")]
    node_checks: Option<Vec<String>>,
    #[serde(rename = "servicechecks")]
    service_checks: Vec<ServiceCheckRef>,
    #[serde(rename = "lockdelay")]
    lock_delay: Option<GoDuration>,
    behavior: String,
    ttl: String,
}

const MIN_TTL: Duration = Duration::from_secs(10);
const MAX_TTL: Duration = Duration::from_secs(86_400);

async fn create(
    state: State,
    Query(p): Query,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let b: CreateBody = decode::body(&body)?;
    let behavior = match b.behavior.as_str() {
        "" | "release" => SessionBehavior::Release,
        "delete" => SessionBehavior::Delete,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid Behavior setting '{other}'"
            )))
        }
    };
    let ttl = if b.ttl.is_empty() {
        None
    } else {
        let d = decode::parse_duration(&b.ttl)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: field TTL: {e}")))?;
        if d != Duration::ZERO && !(MIN_TTL..=MAX_TTL).contains(&d) {
            return Err(ApiError::bad_request(format!(
                "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                b.ttl
            )));
        }
        (!d.is_zero()).then_some(d)
    };
    // Consul reads a bare number below 1000 as seconds, larger ones as ns.
    let lock_delay = match b.lock_delay {
        None => Duration::from_secs(15),
        Some(GoDuration(d)) if d < Duration::from_nanos(1000) => {
            Duration::from_secs(d.as_nanos() as u64)
        }
        Some(GoDuration(d)) => d,
    };
    let node_checks = b
        .node_checks
        .or(b.checks)
        .unwrap_or_else(|| vec![NODE_CHECK_ID.to_string()]);
    let session = NewSession {
        id: uuid::Uuid::new_v4().to_string(),
        name: b.name,
        // A client agent forwards its requests: the session belongs to
        // the node that received it, as in Consul.
        node: if b.node.is_empty() {
            headers
                .get(&super::forward::ORIGIN_NODE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| state.agent.identity.node_name.clone())
        } else {
            b.node
        },
        lock_delay_ms: lock_delay.as_millis() as u64,
        behavior,
        ttl: if ttl.is_some() { b.ttl } else { String::new() },
        node_checks,
        service_checks: b.service_checks.into_iter().map(|c| c.id).collect(),
    };
    let id = session.id.clone();
    match state
        .consensus
        .write(Command::SessionCreate(session))
        .await?
        .1
    {
        Applied::Rejected(m) => return Err(ApiError::internal(m)),
        _ => {
            if let Some(ttl) = ttl {
                state.agent.renew_session(&id, ttl);
            }
        }
    }
    Ok(super::json(json!({"ID": id})))
}

async fn destroy(
    state: State,
    Path(id): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    state
        .consensus
        .write(Command::SessionDestroy { id })
        .await?;
    Ok(super::json(Value::Bool(true)))
}

async fn info(state: State, Path(id): Path<String>, Query(p): Query) -> Result<Response, ApiError> {
    read(&state, &p, Interest::Tables(Tables::SESSIONS), |cat| {
        Ok(Reply::list(
            cat.session(&id).map(render::session),
            cat.indexes().sessions,
        ))
    })
    .await
}

async fn by_node(
    state: State,
    Path(node): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    read(&state, &p, Interest::Tables(Tables::SESSIONS), |cat| {
        Ok(Reply::list(
            cat.sessions()
                .filter(|s| s.node == node)
                .map(render::session),
            cat.indexes().sessions,
        ))
    })
    .await
}

async fn list(state: State, Query(p): Query) -> Result<Response, ApiError> {
    read(&state, &p, Interest::Tables(Tables::SESSIONS), |cat| {
        Ok(Reply::list(
            cat.sessions().map(render::session),
            cat.indexes().sessions,
        ))
    })
    .await
}

async fn renew(
    state: State,
    Path(id): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let (found, ttl) = {
        let st = super::catalog_read(&state.consensus)?;
        match st.catalog.session(&id) {
            None => return Err(ApiError::not_found(format!("Session id '{id}' not found"))),
            Some(s) => (render::session(s), decode::parse_duration(&s.ttl).ok()),
        }
    };
    if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
        state.agent.renew_session(&id, ttl);
    }
    Ok(super::json(Value::Array(vec![found])))
}
