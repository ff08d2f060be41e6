//! `PUT /v1/txn`: KV operations applied atomically — all or none.

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    check_dc, decode, json_response, render, ApiError, Query, RawBody, State, MAX_KV_VALUE,
};
use crate::catalog::{Command, KvOp, Response as Applied};

/// Consul's default `txn_max_ops`.
const MAX_OPS: usize = 64;

pub fn routes() -> Router<std::sync::Arc<super::AppState>> {
    Router::new().route("/v1/txn", put(txn))
}

#[derive(Deserialize)]
struct TxnOp {
    kv: Option<KvBody>,
    node: Option<Value>,
    service: Option<Value>,
    check: Option<Value>,
}

#[derive(Deserialize)]
struct KvBody {
    verb: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    session: String,
}

fn to_op(i: usize, body: KvBody) -> Result<KvOp, String> {
    let value = match body.value.as_deref() {
        None | Some("") => Vec::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("op {i}: KV.Value is not valid base64: {e}"))?,
    };
    if value.len() > MAX_KV_VALUE {
        return Err(format!(
            "op {i}: KV.Value is larger than {MAX_KV_VALUE} bytes"
        ));
    }
    let key = body.key;
    let needs_key = body.verb != "get-tree" && body.verb != "delete-tree";
    if needs_key && key.is_empty() {
        return Err(format!("op {i}: KV.Key is missing"));
    }
    let session = |s: String| {
        if s.is_empty() {
            Err(format!(
                "op {i}: KV.Session is required for verb \"{}\"",
                body.verb
            ))
        } else {
            Ok(s)
        }
    };
    Ok(match body.verb.as_str() {
        "set" => KvOp::Set {
            key,
            value,
            flags: body.flags,
        },
        "cas" => KvOp::Cas {
            key,
            value,
            flags: body.flags,
            index: body.index,
        },
        "lock" => KvOp::Lock {
            key,
            value,
            flags: body.flags,
            session: session(body.session.clone())?,
        },
        "unlock" => KvOp::Unlock {
            key,
            value,
            flags: body.flags,
            session: session(body.session.clone())?,
        },
        "get" => KvOp::Get { key },
        "get-tree" => KvOp::GetTree { prefix: key },
        "check-index" => KvOp::CheckIndex {
            key,
            index: body.index,
        },
        "check-session" => KvOp::CheckSession {
            key,
            session: session(body.session.clone())?,
        },
        "check-not-exists" => KvOp::CheckNotExists { key },
        "delete" => KvOp::Delete { key },
        "delete-tree" => KvOp::DeleteTree { prefix: key },
        "delete-cas" => KvOp::DeleteCas {
            key,
            index: body.index,
        },
        other => return Err(format!("op {i}: unknown KV.Verb \"{other}\"")),
    })
}

fn errors(list: Vec<(usize, String)>) -> Response {
    let errs: Vec<Value> = list
        .into_iter()
        .map(|(i, what)| json!({"OpIndex": i, "What": what}))
        .collect();
    json_response(
        StatusCode::CONFLICT,
        &json!({"Results": null, "Errors": errs}),
        false,
    )
}

async fn txn(state: State, Query(p): Query, RawBody(body): RawBody) -> Result<Response, ApiError> {
    check_dc(&state, &p)?;
    let ops: Vec<TxnOp> = decode::body(&body)?;
    if ops.len() > MAX_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {MAX_OPS})",
                ops.len()
            ),
        ));
    }
    let mut kv_ops = Vec::with_capacity(ops.len());
    let mut invalid = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            TxnOp { kv: Some(kv), .. } => match to_op(i, kv) {
                Ok(op) => kv_ops.push(op),
                Err(e) => invalid.push((i, e)),
            },
            TxnOp {
                node,
                service,
                check,
                ..
            } => {
                let what = if node.is_some() {
                    "Node"
                } else if service.is_some() {
                    "Service"
                } else if check.is_some() {
                    "Check"
                } else {
                    "empty"
                };
                invalid.push((
                    i,
                    format!("op {i}: {what} operations are not supported in transactions; use KV"),
                ));
            }
        }
    }
    // Consul rejects a malformed txn as a whole with 400-class errors
    // before anything is proposed.
    if !invalid.is_empty() {
        return Ok(errors(invalid));
    }
    let reads: Vec<bool> = kv_ops
        .iter()
        .map(|op| matches!(op, KvOp::Get { .. } | KvOp::GetTree { .. }))
        .collect();
    let (_, applied) = state.consensus.write(Command::Txn(kv_ops)).await?;
    match applied {
        Applied::Kv(per_op) => {
            let results: Vec<Value> = per_op
                .iter()
                .zip(reads)
                .flat_map(|(entries, is_read)| {
                    entries
                        .iter()
                        .map(move |e| json!({"KV": render::kv(e, is_read)}))
                })
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"Results": results, "Errors": null}),
                false,
            ))
        }
        Applied::TxnFailed(errs) => Ok(errors(
            errs.into_iter().map(|e| (e.op_index, e.what)).collect(),
        )),
        Applied::Rejected(m) => Err(ApiError::internal(m)),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}
