//! `/v1/catalog/...`: the cluster-wide registry of nodes and services.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::agent::validate_meta;
use super::{
    check_dc, decode, json, read, render, ApiError, AppState, Interest, Query, RawBody, Reply,
    State, Tables,
};
use crate::catalog::command::{CheckSpec, NodeSpec, Registration, ServiceSpec};
use crate::catalog::types::{CheckDefinition, CheckStatus, Weights};
use crate::catalog::{Command, Response as Applied};
use crate::config::valid_name;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/node/{node}", get(node))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CatalogService {
    id: String,
    service: String,
    /// Accepted as an alias of `Service`, which some clients send.
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    #[serde(rename = "enabletagoverride")]
    enable_tag_override: bool,
    weights: Option<WeightsBody>,
}

#[derive(Deserialize)]
struct WeightsBody {
    passing: u32,
    warning: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CatalogCheck {
    #[serde(alias = "id")]
    checkid: String,
    name: String,
    notes: String,
    status: String,
    output: String,
    #[serde(rename = "serviceid")]
    service_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegisterBody {
    id: String,
    node: String,
    address: String,
    #[serde(rename = "taggedaddresses")]
    tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "nodemeta")]
    node_meta: BTreeMap<String, String>,
    service: Option<CatalogService>,
    check: Option<CatalogCheck>,
    checks: Vec<CatalogCheck>,
    #[serde(rename = "skipnodeupdate")]
    skip_node_update: bool,
}

fn check_spec(field: &str, c: CatalogCheck) -> Result<CheckSpec, ApiError> {
    if c.checkid.is_empty() && c.name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field}.CheckID: missing check ID"
        )));
    }
    let status = if c.status.is_empty() {
        CheckStatus::Critical
    } else {
        CheckStatus::parse(&c.status).ok_or_else(|| {
            ApiError::bad_request(format!("{field}.Status: invalid status \"{}\"", c.status))
        })?
    };
    Ok(CheckSpec {
        id: if c.checkid.is_empty() {
            c.name.clone()
        } else {
            c.checkid
        },
        name: c.name,
        status,
        notes: c.notes,
        output: c.output,
        service_id: c.service_id,
        definition: CheckDefinition::default(),
    })
}

async fn register(
    state: State,
    Query(p): Query,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let b: RegisterBody = decode::body(&body)?;
    if b.node.is_empty() {
        return Err(ApiError::bad_request("Missing node name"));
    }
    if !valid_name(&b.node) {
        return Err(ApiError::bad_request(format!(
            "Node: invalid node name \"{}\": use letters, digits, '-', '_' or '.'",
            b.node
        )));
    }
    if b.address.is_empty() && !b.skip_node_update {
        return Err(ApiError::bad_request("Missing node address"));
    }
    validate_meta("NodeMeta", &b.node_meta)?;
    let service = match b.service {
        None => None,
        Some(s) => {
            let name = if s.service.is_empty() {
                s.name
            } else {
                s.service
            };
            if name.is_empty() {
                return Err(ApiError::bad_request(
                    "Service.Service: missing service name",
                ));
            }
            validate_meta("Service.Meta", &s.meta)?;
            Some(ServiceSpec {
                id: if s.id.is_empty() { name.clone() } else { s.id },
                name,
                tags: s.tags,
                address: s.address,
                port: s.port,
                meta: s.meta,
                enable_tag_override: s.enable_tag_override,
                weights: s
                    .weights
                    .map(|w| Weights {
                        passing: w.passing,
                        warning: w.warning,
                    })
                    .unwrap_or_default(),
            })
        }
    };
    let mut checks = Vec::new();
    if let Some(c) = b.check {
        checks.push(check_spec("Check", c)?);
    }
    for (i, c) in b.checks.into_iter().enumerate() {
        checks.push(check_spec(&format!("Checks[{i}]"), c)?);
    }
    let reg = Registration {
        node: NodeSpec {
            id: b.id,
            name: b.node,
            address: b.address,
            datacenter: state.config.datacenter.clone(),
            tagged_addresses: b.tagged_addresses,
            meta: b.node_meta,
        },
        skip_node_update: b.skip_node_update,
        service,
        checks,
    };
    applied_true(&state, Command::Register(reg)).await
}

async fn applied_true(state: &AppState, cmd: Command) -> Result<Response, ApiError> {
    match state.consensus.write(cmd).await?.1 {
        Applied::Rejected(m) => Err(ApiError::bad_request(m)),
        _ => Ok(json(Value::Bool(true))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeregisterBody {
    node: String,
    #[serde(rename = "serviceid")]
    service_id: String,
    #[serde(rename = "checkid")]
    check_id: String,
}

async fn deregister(
    state: State,
    Query(p): Query,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let b: DeregisterBody = decode::body(&body)?;
    if b.node.is_empty() {
        return Err(ApiError::bad_request("Missing node name"));
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    applied_true(
        &state,
        Command::Deregister {
            node: b.node,
            service_id: non_empty(b.service_id),
            check_id: non_empty(b.check_id),
        },
    )
    .await
}

async fn datacenters(state: State) -> Response {
    json(json!([state.config.datacenter]))
}

async fn nodes(state: State, Query(p): Query) -> Result<Response, ApiError> {
    let meta = p.node_meta()?;
    read(&state, &p, Interest::Tables(Tables::NODES), |cat| {
        Ok(Reply::list(
            cat.nodes()
                .filter(|n| cat.node_matches(&n.name, &meta))
                .map(render::node),
            cat.indexes().nodes,
        ))
    })
    .await
}

async fn services(state: State, Query(p): Query) -> Result<Response, ApiError> {
    let meta = p.node_meta()?;
    read(
        &state,
        &p,
        Interest::Tables(Tables::SERVICES.and(Tables::NODES)),
        |cat| {
            let map: Map<String, Value> = cat
                .service_names(&meta)
                .into_iter()
                .map(|(name, tags)| (name.to_string(), json!(tags)))
                .collect();
            Ok(Reply::found(Value::Object(map), cat.indexes().services))
        },
    )
    .await
}

async fn service(
    state: State,
    Path(name): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let tags = p.all("tag");
    let meta = p.node_meta()?;
    read(
        &state,
        &p,
        Interest::Tables(Tables::SERVICES.and(Tables::NODES)),
        |cat| {
            let rows: Vec<Value> = cat
                .instances(&name, &tags)
                .into_iter()
                .filter(|(n, _)| cat.node_matches(&n.name, &meta))
                .map(|(n, s)| render::catalog_service(n, s))
                .collect();
            let i = cat.indexes();
            Ok(Reply::found(Value::Array(rows), i.services.max(i.nodes)))
        },
    )
    .await
}

async fn node(
    state: State,
    Path(name): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let dc = state.config.datacenter.clone();
    read(
        &state,
        &p,
        Interest::Tables(Tables::SERVICES.and(Tables::NODES)),
        |cat| {
            let i = cat.indexes();
            let index = i.services.max(i.nodes);
            let Some(n) = cat.node(&name) else {
                return Ok(Reply::found(Value::Null, index));
            };
            let services = render::services_by_id(cat.node_services(&name), &dc);
            Ok(Reply::found(
                json!({"Node": render::node(n), "Services": services}),
                index,
            ))
        },
    )
    .await
}
