//! `/v1/operator/raft/...`: the Raft configuration, and removing a server
//! from it (a dead server that will not come back).

use std::sync::Arc;

use axum::response::Response;
use axum::routing::{delete, get};
use axum::Router;
use serde_json::{json, Value};

use super::{json, ApiError, AppState, Query, State};
use crate::cluster::rpc::Role;
use crate::cluster::META_RPC;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/operator/raft/configuration", get(configuration))
        .route("/v1/operator/raft/peer", delete(remove_peer))
}

fn servers_only(state: &AppState) -> Result<(), ApiError> {
    match state.cluster.role() {
        Role::Server => Ok(()),
        Role::Client => Err(ApiError::internal(
            "a client agent has no Raft configuration",
        )),
    }
}

/// Each member of the configuration, named from the catalog (the node
/// whose `muster-rpc` meta is its address).
fn servers(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let leader = state.consensus.leader_addr();
    let st = super::catalog_read(&state.consensus)?;
    Ok(state
        .consensus
        .membership()
        .into_iter()
        .map(|(id, addr, voter)| {
            let node = st
                .catalog
                .nodes()
                .find(|n| n.meta.get(META_RPC) == Some(&addr));
            json!({
                "ID": node.map(|n| n.id.clone()).unwrap_or_else(|| id.to_string()),
                "RaftID": id,
                "Node": node.map(|n| n.name.clone()).unwrap_or_default(),
                "Address": addr,
                "Leader": leader.as_deref() == Some(addr.as_str()),
                "Voter": voter,
                "ProtocolVersion": "3",
            })
        })
        .collect())
}

async fn configuration(state: State) -> Result<Response, ApiError> {
    servers_only(&state)?;
    Ok(json(json!({
        "Servers": servers(&state)?,
        "Index": state.consensus.membership_index(),
    })))
}

/// `?id=` (node UUID or Raft ID) or `?address=` (IP:PORT).
async fn remove_peer(state: State, Query(p): Query) -> Result<Response, ApiError> {
    servers_only(&state)?;
    let wanted = match (p.get("id"), p.get("address")) {
        (Some(id), _) if !id.is_empty() => id.to_string(),
        (_, Some(addr)) if !addr.is_empty() => addr.to_string(),
        _ => return Err(ApiError::bad_request("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")),
    };
    let found = servers(&state)?.into_iter().find(|s| {
        s["ID"] == wanted.as_str()
            || s["Address"] == wanted.as_str()
            || s["RaftID"].as_u64().map(|r| r.to_string()) == Some(wanted.clone())
    });
    let Some(server) = found else {
        return Err(ApiError::bad_request(format!(
            "id or address '{wanted}' is not in the Raft configuration"
        )));
    };
    let raft_id = server["RaftID"].as_u64().unwrap_or(0);
    state
        .cluster
        .remove_server(raft_id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(server = %server["Address"], "removed from the Raft configuration");
    Ok(json(Value::Bool(true)))
}
