//! `/v1/kv/...`: get (single, `?recurse`, `?keys` with `?separator`,
//! `?raw`), put (`?flags`, `?cas`, `?acquire`, `?release`), delete
//! (`?recurse`, `?cas`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::{
    check_dc, json, read, render, ApiError, Body, Interest, Query, RawBody, Reply, State,
    MAX_KV_VALUE,
};
use crate::catalog::{Command, KvOp, Response as Applied};

pub fn routes() -> Router<std::sync::Arc<super::AppState>> {
    Router::new()
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
}

async fn get_root(state: State, q: Query) -> Result<Response, ApiError> {
    get_kv(state, String::new(), q).await
}
async fn put_root(state: State, q: Query, RawBody(body): RawBody) -> Result<Response, ApiError> {
    put_kv(state, String::new(), q, body).await
}
async fn delete_root(state: State, q: Query) -> Result<Response, ApiError> {
    delete_kv(state, String::new(), q).await
}
async fn get_key(state: State, Path(key): Path<String>, q: Query) -> Result<Response, ApiError> {
    get_kv(state, key, q).await
}
async fn put_key(
    state: State,
    Path(key): Path<String>,
    q: Query,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    put_kv(state, key, q, body).await
}
async fn delete_key(state: State, Path(key): Path<String>, q: Query) -> Result<Response, ApiError> {
    delete_kv(state, key, q).await
}

async fn get_kv(state: State, key: String, Query(p): Query) -> Result<Response, ApiError> {
    if p.flag("keys") {
        let separator = p.get("separator").unwrap_or("").to_string();
        return read(&state, &p, Interest::KvPrefix(key.clone()), |cat| {
            let kv = cat.kv();
            let mut keys: Vec<String> = Vec::new();
            for e in kv.prefix(&key) {
                let rest = &e.key[key.len()..];
                let k = match (!separator.is_empty())
                    .then(|| rest.find(&separator))
                    .flatten()
                {
                    Some(at) => format!("{key}{}", &rest[..at + separator.len()]),
                    None => e.key.clone(),
                };
                if keys.last() != Some(&k) {
                    keys.push(k);
                }
            }
            let index = kv.prefix_index(&key);
            // Consul answers an empty store's root with [], not 404.
            Ok(if keys.is_empty() && !key.is_empty() {
                Reply::missing(index)
            } else {
                Reply::found(Value::from(keys), index)
            })
        })
        .await;
    }
    if p.flag("recurse") {
        return read(&state, &p, Interest::KvPrefix(key.clone()), |cat| {
            let kv = cat.kv();
            let entries: Vec<Value> = kv.prefix(&key).map(|e| render::kv(e, true)).collect();
            let index = kv.prefix_index(&key);
            Ok(if entries.is_empty() {
                Reply::missing(index)
            } else {
                Reply::found(Value::Array(entries), index)
            })
        })
        .await;
    }
    let raw = p.flag("raw");
    read(&state, &p, Interest::KvPrefix(key.clone()), |cat| {
        let kv = cat.kv();
        let index = kv.key_index(&key);
        Ok(match kv.get(&key) {
            None => Reply::missing(index),
            Some(e) if raw => Reply {
                body: Body::Raw(e.value.clone()),
                index,
            },
            Some(e) => Reply::found(Value::Array(vec![render::kv(e, true)]), index),
        })
    })
    .await
}

/// Consul's message for an oversized value, with its status (413).
fn too_large(len: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body({len} bytes) too large, max size: {MAX_KV_VALUE} bytes. See kv_max_value_size."),
    )
}

async fn put_kv(
    state: State,
    key: String,
    Query(p): Query,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    if body.len() > MAX_KV_VALUE {
        return Err(too_large(body.len()));
    }
    let flags = p
        .u64("flags")
        .map_err(|_| ApiError::bad_request("Invalid flags: must be an unsigned 64-bit integer"))?
        .unwrap_or(0);
    let value = body.to_vec();
    let op = match (p.get("acquire"), p.get("release"), p.get("cas")) {
        (Some(_), Some(_), _) => {
            return Err(ApiError::bad_request(
                "Conflicting flags: acquire and release",
            ))
        }
        (Some(s), None, _) => KvOp::Lock {
            key,
            value,
            flags,
            session: non_empty_session(s)?,
        },
        (None, Some(s), _) => KvOp::Unlock {
            key,
            value,
            flags,
            session: non_empty_session(s)?,
        },
        (None, None, Some(_)) => KvOp::Cas {
            key,
            value,
            flags,
            index: p
                .u64("cas")
                .map_err(|_| ApiError::bad_request("Invalid CAS index"))?
                .unwrap_or(0),
        },
        (None, None, None) => KvOp::Set { key, value, flags },
    };
    write_bool(&state, Command::Kv(op)).await
}

fn non_empty_session(s: &str) -> Result<String, ApiError> {
    if s.is_empty() {
        Err(ApiError::bad_request(
            "Missing session: acquire and release need a session ID",
        ))
    } else {
        Ok(s.to_string())
    }
}

async fn delete_kv(state: State, key: String, Query(p): Query) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let op = if p.flag("recurse") {
        KvOp::DeleteTree { prefix: key }
    } else if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    } else if p.get("cas").is_some() {
        KvOp::DeleteCas {
            key,
            index: p
                .u64("cas")
                .map_err(|_| ApiError::bad_request("Invalid CAS index"))?
                .unwrap_or(0),
        }
    } else {
        KvOp::Delete { key }
    };
    write_bool(&state, Command::Kv(op)).await
}

/// Proposes a KV command and answers Consul's `true`/`false`.
async fn write_bool(state: &super::AppState, cmd: Command) -> Result<Response, ApiError> {
    let (_, applied) = state.consensus.write(cmd).await?;
    match applied {
        Applied::Applied(b) => Ok(json(Value::Bool(b))),
        Applied::Kv(_) => Ok(json(Value::Bool(true))),
        Applied::Rejected(m) => Err(ApiError::internal(m)),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}
