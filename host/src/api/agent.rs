//! `/v1/agent/...`: this node's view — identity, members, local services
//! and checks, registration, TTL reports, maintenance, join and leave.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::decode::{self, GoDuration};
use super::{
    check_dc, read, render, ApiError, AppState, Interest, Query, RawBody, Reply, State, Tables,
};
use crate::catalog::command::{CheckSpec, ServiceSpec};
use crate::catalog::types::{CheckDefinition, CheckStatus, Weights};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        )
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/check/pass/{id}", put(pass))
        .route("/v1/agent/check/warn/{id}", put(warn))
        .route("/v1/agent/check/fail/{id}", put(fail))
        .route("/v1/agent/check/update/{id}", put(update))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/force-leave/{node}", put(force_leave))
}

fn member_json(m: &crate::cluster::Member, dc: &str) -> Value {
    let role = match m.role {
        crate::cluster::rpc::Role::Server => "consul",
        crate::cluster::rpc::Role::Client => "node",
    };
    json!({
        "Name": m.name,
        "Addr": m.address,
        "Port": m.rpc_port,
        "Tags": {
            "role": role,
            "dc": dc,
            "port": m.rpc_port.to_string(),
            "build": env!("CARGO_PKG_VERSION"),
            "id": m.id,
            "vsn": "2", "vsn_min": "2", "vsn_max": "3",
        },
        "Status": m.status as u8,
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

/// This agent as a member (from what it knows of itself).
fn member(state: &AppState) -> Value {
    let id = &state.agent.identity;
    let me = crate::cluster::Member {
        name: id.node_name.clone(),
        address: id.address.clone(),
        role: state.cluster.role(),
        status: crate::cluster::MemberStatus::Alive,
        id: id.node_id.clone(),
        rpc_port: state.config.server_addr.port(),
    };
    member_json(&me, &id.datacenter)
}

async fn agent_self(state: State) -> Response {
    let id = &state.agent.identity;
    super::json(json!({
        "Config": {
            "Datacenter": id.datacenter,
            "PrimaryDatacenter": id.datacenter,
            "NodeName": id.node_name,
            "NodeID": id.node_id,
            "Server": state.config.server,
            "Revision": "",
            "Version": env!("CARGO_PKG_VERSION"),
            "Product": "muster",
        },
        "DebugConfig": {},
        "Coord": null,
        "Member": member(&state),
        "Meta": {},
        "Stats": {},
    }))
}

/// Every agent in the catalog with its role and status (on a client
/// agent this is forwarded to a server).
async fn members(state: State) -> Result<Response, ApiError> {
    let dc = state.config.datacenter.clone();
    let st = super::catalog_read(&state.consensus)?;
    let all: Vec<Value> = crate::cluster::members(&st.catalog)
        .iter()
        .map(|m| member_json(m, &dc))
        .collect();
    Ok(super::json(Value::Array(all)))
}

async fn services(state: State, Query(p): Query) -> Result<Response, ApiError> {
    let node = state.agent.identity.node_name.clone();
    let dc = state.config.datacenter.clone();
    read(&state, &p, Interest::Tables(Tables::SERVICES), |cat| {
        Ok(Reply::found(
            render::services_by_id(cat.node_services(&node), &dc),
            cat.indexes().services,
        ))
    })
    .await
}

async fn service(
    state: State,
    Path(id): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let node = state.agent.identity.node_name.clone();
    let dc = state.config.datacenter.clone();
    read(
        &state,
        &p,
        Interest::Tables(Tables::SERVICES),
        |cat| match cat.service(&node, &id) {
            Some(s) => Ok(Reply::found(render::service(s, &dc), s.modify_index)),
            None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
        },
    )
    .await
}

async fn checks(state: State, Query(p): Query) -> Result<Response, ApiError> {
    let node = state.agent.identity.node_name.clone();
    read(&state, &p, Interest::Tables(Tables::CHECKS), |cat| {
        let map: Map<String, Value> = cat
            .node_checks(&node)
            .map(|c| (c.id.clone(), render::check(c)))
            .collect();
        Ok(Reply::found(Value::Object(map), cat.indexes().checks))
    })
    .await
}

/// A check definition as clients send it (agent and service registration).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CheckDef {
    #[serde(alias = "checkid")]
    id: String,
    name: String,
    notes: String,
    status: String,
    #[serde(rename = "serviceid")]
    service_id: String,
    ttl: GoDuration,
    interval: GoDuration,
    timeout: GoDuration,
    #[serde(rename = "deregistercriticalserviceafter")]
    deregister_after: GoDuration,
    http: Option<String>,
    method: String,
    header: BTreeMap<String, Vec<String>>,
    body: String,
    #[serde(rename = "tlsskipverify")]
    tls_skip_verify: bool,
    tcp: Option<String>,
    /// muster's addition: the `[[check_plugin]]` that runs this check.
    wasm: Option<String>,
    /// The check's own plugin config, merged over the plugin block's.
    config: Option<Value>,
    #[serde(rename = "successbeforepassing")]
    success_before_passing: u32,
    #[serde(rename = "failuresbeforecritical")]
    failures_before_critical: u32,
    // Kinds muster does not run; present only to reject clearly.
    grpc: Option<String>,
    h2ping: Option<String>,
    udp: Option<String>,
    args: Option<Vec<String>>,
    script: Option<String>,
    #[serde(rename = "dockercontainerid")]
    docker_container_id: Option<String>,
}

impl CheckDef {
    /// A check that a source plugin asked for, so that it is validated
    /// exactly as one sent to `/v1/agent/service/register`. `kind` is
    /// "http", "tcp", "ttl", or a check plugin's name.
    pub(crate) fn from_source(
        kind: &str,
        endpoint: String,
        timings: SourceTimings,
        status: Option<CheckStatus>,
    ) -> CheckDef {
        let mut def = CheckDef {
            interval: GoDuration(timings.interval),
            timeout: GoDuration(timings.timeout),
            deregister_after: GoDuration(timings.deregister_after),
            status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
            ..CheckDef::default()
        };
        match kind {
            "http" => def.http = Some(endpoint),
            "tcp" => def.tcp = Some(endpoint),
            "ttl" => def.ttl = GoDuration(timings.ttl),
            plugin => def.wasm = Some(plugin.to_string()),
        }
        def
    }

    /// Validates and turns the definition into a catalog check. `field`
    /// is how the error names it ("Check", "Checks[1]"); `plugins` tells
    /// which `Wasm` names exist.
    pub(crate) fn into_spec(
        self,
        field: &str,
        default_id: String,
        default_name: String,
        service_id: &str,
        plugins: &crate::plugins::PluginRegistry,
    ) -> Result<CheckSpec, ApiError> {
        if self.args.is_some() || self.script.is_some() {
            return Err(ApiError::bad_request(format!(
                "{field}.Args: script checks are not offered by muster; write the check as a WebAssembly health-check plugin (Wasm = \"name\") instead, which runs sandboxed"
            )));
        }
        let unsupported = [
            ("GRPC", self.grpc.is_some()),
            ("H2PING", self.h2ping.is_some()),
            ("UDP", self.udp.is_some()),
            ("DockerContainerID", self.docker_container_id.is_some()),
        ];
        if let Some((kind, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(ApiError::bad_request(format!(
                "{field}.{kind}: {kind} checks are not built in; use HTTP, TCP, TTL, or a Wasm check plugin"
            )));
        }
        let kinds: Vec<&str> = [
            ("TTL", !self.ttl.0.is_zero()),
            ("HTTP", self.http.is_some()),
            ("TCP", self.tcp.is_some()),
            ("Wasm", self.wasm.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                return Err(ApiError::bad_request(format!(
                    "{field}: a check needs one of TTL, HTTP, TCP or Wasm"
                )))
            }
            many => {
                return Err(ApiError::bad_request(format!(
                    "{field}: set only one of {}",
                    many.join(", ")
                )))
            }
        };
        if kind != "TTL" && self.interval.0.is_zero() {
            return Err(ApiError::bad_request(format!(
                "{field}.Interval: required (> 0) for {kind} checks"
            )));
        }
        let mut definition = CheckDefinition {
            kind: kind.to_ascii_lowercase(),
            ttl_ms: self.ttl.0.as_millis() as u64,
            interval_ms: self.interval.0.as_millis() as u64,
            timeout_ms: self.timeout.0.as_millis() as u64,
            deregister_critical_after_ms: self.deregister_after.0.as_millis() as u64,
            success_before_passing: self.success_before_passing,
            failures_before_critical: self.failures_before_critical,
            ..Default::default()
        };
        if self.config.is_some() && kind != "Wasm" {
            return Err(ApiError::bad_request(format!(
                "{field}.Config: only Wasm checks take a Config"
            )));
        }
        match kind {
            "HTTP" => {
                let url = self.http.unwrap_or_default();
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://"))
                    || url.len() <= "http://".len()
                {
                    return Err(ApiError::bad_request(format!(
                        "{field}.HTTP: \"{url}\" is not an http:// or https:// URL"
                    )));
                }
                definition.endpoint = url;
                definition.method = self.method.to_ascii_uppercase();
                definition.headers = self.header;
                definition.body = self.body;
                definition.tls_skip_verify = self.tls_skip_verify;
            }
            "TCP" => {
                let endpoint = self.tcp.unwrap_or_default();
                let port_ok = endpoint
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(ApiError::bad_request(format!(
                        "{field}.TCP: \"{endpoint}\" is not HOST:PORT"
                    )));
                }
                definition.endpoint = endpoint;
            }
            "Wasm" => {
                let name = self.wasm.unwrap_or_default();
                match plugins.get(&name) {
                    Some(p) if p.world == crate::plugins::World::HealthCheck => {}
                    Some(p) => {
                        return Err(ApiError::bad_request(format!(
                            "{field}.Wasm: plugin \"{name}\" is a {} plugin, not a health check",
                            p.world.as_str()
                        )))
                    }
                    None => {
                        let known: Vec<String> = plugins
                            .list()
                            .into_iter()
                            .filter(|p| p.world == crate::plugins::World::HealthCheck)
                            .map(|p| p.name)
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "{field}.Wasm: no health-check plugin named \"{name}\" is loaded (loaded: {}; add a [[check_plugin]] block)",
                            known.join(", ")
                        )));
                    }
                }
                definition.plugin = name;
                definition.config = match self.config {
                    None => "{}".into(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => {
                        return Err(ApiError::bad_request(format!(
                            "{field}.Config: must be an object"
                        )))
                    }
                };
            }
            _ => {}
        }
        let status = if self.status.is_empty() {
            CheckStatus::Critical
        } else {
            CheckStatus::parse(&self.status).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field}.Status: invalid status \"{}\"",
                    self.status
                ))
            })?
        };
        let service_id = if self.service_id.is_empty() {
            service_id.to_string()
        } else {
            self.service_id
        };
        Ok(CheckSpec {
            id: if self.id.is_empty() {
                default_id
            } else {
                self.id
            },
            name: if self.name.is_empty() {
                default_name
            } else {
                self.name
            },
            status,
            notes: self.notes,
            output: String::new(),
            service_id,
            definition,
        })
    }
}

/// The durations of a check from a source plugin.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SourceTimings {
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub ttl: std::time::Duration,
    pub deregister_after: std::time::Duration,
}

#[derive(Deserialize)]
struct WeightsDef {
    #[serde(default = "one")]
    passing: u32,
    #[serde(default = "one")]
    warning: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServiceDef {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    #[serde(rename = "enabletagoverride")]
    enable_tag_override: bool,
    weights: Option<WeightsDef>,
    kind: String,
    check: Option<CheckDef>,
    checks: Vec<CheckDef>,
}

/// Consul's limits on metadata, so that what registers here also
/// registers there.
pub fn validate_meta(field: &str, meta: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if meta.len() > 64 {
        return Err(ApiError::bad_request(format!(
            "{field}: at most 64 key/value pairs, got {}",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty()
            || k.len() > 128
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::bad_request(format!(
                "{field}: key \"{k}\" must be 1-128 characters of letters, digits, '-' or '_'"
            )));
        }
        if k.starts_with("consul-") {
            return Err(ApiError::bad_request(format!(
                "{field}: key \"{k}\" uses the reserved prefix \"consul-\""
            )));
        }
        if v.len() > 512 {
            return Err(ApiError::bad_request(format!(
                "{field}: value of \"{k}\" is longer than 512 characters"
            )));
        }
    }
    Ok(())
}

async fn register_service(
    state: State,
    Query(p): Query,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let def: ServiceDef = decode::body(&body)?;
    if def.name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    if !def.kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Kind: service kind \"{}\" is not supported",
            def.kind
        )));
    }
    validate_meta("Meta", &def.meta)?;
    let id = if def.id.is_empty() {
        def.name.clone()
    } else {
        def.id.clone()
    };
    let mut defs: Vec<(String, CheckDef)> = Vec::new();
    if let Some(c) = def.check {
        defs.push(("Check".into(), c));
    }
    defs.extend(
        def.checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("Checks[{i}]"), c)),
    );
    let many = defs.len() > 1;
    let mut checks = Vec::with_capacity(defs.len());
    for (n, (field, c)) in defs.into_iter().enumerate() {
        let default_id = if many {
            format!("service:{id}:{}", n + 1)
        } else {
            format!("service:{id}")
        };
        checks.push(c.into_spec(
            &field,
            default_id,
            format!("Service '{}' check", def.name),
            &id,
            &state.plugins,
        )?);
    }
    let spec = ServiceSpec {
        id,
        name: def.name,
        tags: def.tags,
        address: def.address,
        port: def.port,
        meta: def.meta,
        enable_tag_override: def.enable_tag_override,
        weights: def
            .weights
            .map(|w| Weights {
                passing: w.passing,
                warning: w.warning,
            })
            .unwrap_or_default(),
    };
    let service_id = spec.id.clone();
    let kept: Vec<String> = checks.iter().map(|c| c.id.clone()).collect();
    state.agent.register(Some(spec), checks).await?;
    if p.flag("replace-existing-checks") {
        // Consul keeps checks of an earlier registration unless asked not to.
        let stale: Vec<String> = {
            let st = super::catalog_read(&state.consensus)?;
            st.catalog
                .node_checks(&state.agent.identity.node_name)
                .filter(|c| c.service_id == service_id && !kept.contains(&c.id))
                .map(|c| c.id.clone())
                .collect()
        };
        for id in stale {
            state.agent.deregister_check(&id).await?;
        }
    }
    Ok(StatusCode::OK.into_response())
}

async fn deregister_service(state: State, Path(id): Path<String>) -> Result<Response, ApiError> {
    state.agent.deregister_service(&id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn register_check(
    state: State,
    Query(p): Query,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let def: CheckDef = decode::body(&body)?;
    if def.name.is_empty() {
        return Err(ApiError::bad_request("Missing check name"));
    }
    if !def.service_id.is_empty() {
        let node = &state.agent.identity.node_name;
        let known = super::catalog_read(&state.consensus)?
            .catalog
            .service(node, &def.service_id)
            .is_some();
        if !known {
            return Err(ApiError::bad_request(format!(
                "ServiceID \"{}\" does not exist",
                def.service_id
            )));
        }
    }
    let name = def.name.clone();
    let spec = def.into_spec("Check", name.clone(), name, "", &state.plugins)?;
    state.agent.register(None, vec![spec]).await?;
    Ok(StatusCode::OK.into_response())
}

async fn deregister_check(state: State, Path(id): Path<String>) -> Result<Response, ApiError> {
    state.agent.deregister_check(&id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn ttl_report(
    state: &AppState,
    id: &str,
    status: CheckStatus,
    output: String,
) -> Result<Response, ApiError> {
    state.agent.update_ttl(id, status, output).await?;
    Ok(StatusCode::OK.into_response())
}

/// `?note=` of a TTL report becomes the check's output, as in Consul.
fn note(p: &super::Params) -> String {
    p.get("note").unwrap_or("").to_string()
}

async fn pass(state: State, Path(id): Path<String>, Query(p): Query) -> Result<Response, ApiError> {
    ttl_report(&state, &id, CheckStatus::Passing, note(&p)).await
}

async fn warn(state: State, Path(id): Path<String>, Query(p): Query) -> Result<Response, ApiError> {
    ttl_report(&state, &id, CheckStatus::Warning, note(&p)).await
}

async fn fail(state: State, Path(id): Path<String>, Query(p): Query) -> Result<Response, ApiError> {
    ttl_report(&state, &id, CheckStatus::Critical, note(&p)).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CheckUpdate {
    status: String,
    output: String,
}

async fn update(
    state: State,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let u: CheckUpdate = decode::body(&body)?;
    let status = CheckStatus::parse(&u.status).ok_or_else(|| {
        ApiError::bad_request(format!("Status: invalid check status: \"{}\"", u.status))
    })?;
    ttl_report(&state, &id, status, u.output).await
}

async fn maintenance(
    state: &AppState,
    p: &super::Params,
    check_id: String,
    name: &str,
    service_id: &str,
) -> Result<Response, ApiError> {
    let Some(enable) = p.boolean("enable")? else {
        return Err(ApiError::bad_request("Missing value for enable"));
    };
    if enable {
        let reason = p
            .get("reason")
            .filter(|r| !r.is_empty())
            .unwrap_or("Maintenance mode is enabled for this service, but no reason was provided. This is a default message.");
        let spec = CheckSpec {
            id: check_id,
            name: name.into(),
            status: CheckStatus::Critical,
            notes: reason.to_string(),
            output: String::new(),
            service_id: service_id.to_string(),
            definition: CheckDefinition::default(),
        };
        state.agent.register(None, vec![spec]).await?;
    } else {
        let exists = super::catalog_read(&state.consensus)?
            .catalog
            .check(&state.agent.identity.node_name, &check_id)
            .is_some();
        if exists {
            state.agent.deregister_check(&check_id).await?;
        }
    }
    Ok(StatusCode::OK.into_response())
}

async fn service_maintenance(
    state: State,
    Path(id): Path<String>,
    Query(p): Query,
) -> Result<Response, ApiError> {
    let exists = super::catalog_read(&state.consensus)?
        .catalog
        .service(&state.agent.identity.node_name, &id)
        .is_some();
    if !exists {
        return Err(ApiError::not_found(format!("Unknown service ID \"{id}\"")));
    }
    maintenance(
        &state,
        &p,
        format!("_service_maintenance:{id}"),
        "Service Maintenance Mode",
        &id,
    )
    .await
}

async fn node_maintenance(state: State, Query(p): Query) -> Result<Response, ApiError> {
    maintenance(
        &state,
        &p,
        "_node_maintenance".into(),
        "Node Maintenance Mode",
        "",
    )
    .await
}

/// `muster join ADDR`: one join attempt against a server's
/// `addresses.server` (IP:PORT, or an IP on port 8300).
async fn join(state: State, Path(addr): Path<String>) -> Result<Response, ApiError> {
    let target = crate::config::server_address(&addr)
        .ok_or_else(|| ApiError::bad_request(format!("address '{addr}' is not IP:PORT")))?
        .to_string();
    if target == state.cluster.me.rpc {
        return Ok(StatusCode::OK.into_response());
    }
    state
        .cluster
        .join(&target)
        .await
        .map_err(|e| ApiError::internal(format!("cannot join {target}: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

/// A graceful leave: the node is marked left (its services leave healthy
/// answers), a server leaves the Raft voters, then the agent stops.
async fn leave(state: State) -> Result<Response, ApiError> {
    tracing::info!("leave requested over the API");
    let node = state.agent.identity.node_name.clone();
    if let Err(e) = state.cluster.leave(&node).await {
        // Stopping anyway: the leader marks the node failed once its
        // heartbeats stop, which is what a leave that cannot reach the
        // cluster comes to.
        tracing::warn!(error = %e, "leaving the cluster gracefully failed; stopping anyway");
    }
    state.agent.leave.notify_one();
    Ok(StatusCode::OK.into_response())
}

/// Removes a failed node: from the Raft voters if it is a server, then from
/// the catalog. An alive node is refused: it would only come back.
async fn force_leave(state: State, Path(node): Path<String>) -> Result<Response, ApiError> {
    let (status, rpc) = {
        let st = super::catalog_read(&state.consensus)?;
        let member = crate::cluster::members(&st.catalog)
            .into_iter()
            .find(|m| m.name == node)
            .ok_or_else(|| ApiError::not_found(format!("Unknown node: {node}")))?;
        let rpc = st
            .catalog
            .node(&node)
            .and_then(|n| n.meta.get(crate::cluster::META_RPC).cloned());
        (member.status, rpc)
    };
    if status == crate::cluster::MemberStatus::Alive {
        return Err(ApiError::bad_request(format!(
            "node {node} is alive; force-leave removes only failed or left nodes"
        )));
    }
    if let Some(addr) = rpc {
        if let Some(id) = state.consensus.member_id(&addr) {
            state
                .cluster
                .remove_server(id)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    state
        .agent
        .write(crate::catalog::Command::Deregister {
            node: node.clone(),
            service_id: None,
            check_id: None,
        })
        .await?;
    tracing::info!(%node, "force-left");
    Ok(StatusCode::OK.into_response())
}
