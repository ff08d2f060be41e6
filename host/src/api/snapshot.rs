//! `/v1/snapshot`: the whole catalog as a file (`GET`, on the leader), and
//! restoring one (`PUT`), possibly taken on another cluster. The file is a
//! magic line, the SHA-256 of the payload, and the catalog in postcard; a
//! restore goes through Raft, so every server replaces its catalog at the
//! same log index.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::{catalog_read, consul_headers, ApiError, AppState, State};
use crate::catalog::{Catalog, Command};
use crate::cluster::rpc::Role;

/// What every snapshot file starts with (the version is its last digit).
const MAGIC: &[u8] = b"MUSTERSNAP1\n";
/// Restored snapshots may be larger than other request bodies; the restore
/// travels as one Raft entry, which must fit a 64 MiB transport frame.
pub const MAX_SNAPSHOT: usize = 60 << 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/snapshot", get(save).put(restore))
}

fn servers_only(state: &AppState) -> Result<(), ApiError> {
    match state.cluster.role() {
        Role::Server => Ok(()),
        Role::Client => Err(ApiError::internal(
            "a client agent holds no catalog to snapshot",
        )),
    }
}

async fn save(state: State) -> Result<Response, ApiError> {
    servers_only(&state)?;
    // The leader answers (forwarded there), after confirming it leads.
    state
        .consensus
        .linearize()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (payload, index) = {
        let st = catalog_read(&state.consensus)?;
        let payload = st
            .catalog
            .to_snapshot()
            .map_err(|e| ApiError::internal(format!("encoding the snapshot: {e}")))?;
        (payload, st.catalog.last_index())
    };
    let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&Sha256::digest(&payload));
    file.extend_from_slice(&payload);
    let mut response = (StatusCode::OK, file).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    consul_headers(&state, &mut response, index);
    Ok(response)
}

/// Checks a snapshot file and returns its payload.
fn payload(file: &[u8]) -> Result<&[u8], ApiError> {
    let Some(rest) = file.strip_prefix(MAGIC) else {
        return Err(ApiError::bad_request(
            "snapshot: not a muster snapshot file (bad header)",
        ));
    };
    if rest.len() < 32 {
        return Err(ApiError::bad_request("snapshot: file is truncated"));
    }
    let (sum, payload) = rest.split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        return Err(ApiError::bad_request(
            "snapshot: checksum mismatch (the file is corrupt or truncated)",
        ));
    }
    Catalog::check_snapshot(payload)
        .map_err(|e| ApiError::bad_request(format!("snapshot: cannot decode the catalog: {e}")))?;
    Ok(payload)
}

async fn restore(state: State, req: axum::extract::Request) -> Result<Response, ApiError> {
    servers_only(&state)?;
    let body = axum::body::to_bytes(req.into_body(), MAX_SNAPSHOT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("snapshot: larger than {} MiB", MAX_SNAPSHOT >> 20),
            )
        })?;
    let payload = payload(&body)?.to_vec();
    state
        .agent
        .write(Command::Restore { catalog: payload })
        .await?;
    tracing::info!(bytes = body.len(), "catalog restored from a snapshot");
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(payload: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&Sha256::digest(payload));
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_saved_catalog_reads_back_and_damage_is_refused() {
        let good = Catalog::default().to_snapshot().expect("encode");
        assert!(payload(&file(&good)).is_ok());
        let mut flipped = file(&good);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = payload(&flipped).expect_err("corrupt");
        assert!(err.message.contains("checksum"), "{}", err.message);
        assert!(payload(b"hello")
            .expect_err("magic")
            .message
            .contains("header"));
        assert!(payload(&file(b"\xff\xff\xff")).is_err());
    }
}
