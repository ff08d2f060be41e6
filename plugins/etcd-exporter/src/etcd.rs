//! The etcd v3 JSON gateway's request and response shapes, as plain
//! functions from and to text. Keys and values are `bytes` in the protobuf,
//! so base64 in JSON; int64 fields (lease IDs, TTLs, limits) are JSON
//! strings, though the gateway reads numbers too. Zero values are left out
//! of responses (a keepalive for a dead lease has no `TTL`).

use serde_json::{json, Value};

use crate::base64;

/// etcd's default `--max-txn-ops`: a txn with more operations is refused.
pub const MAX_TXN_OPS: usize = 128;
/// Stay well under etcd's default `--max-request-bytes` (1.5 MiB) even
/// when values are large JSON objects.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;
/// Keys fetched per range request during resync, so that a large prefix
/// does not become one huge response.
pub const RANGE_PAGE: usize = 1000;

/// One write, in a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put under the exporter's lease.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Op {
    fn to_json(&self, lease: i64) -> Value {
        match self {
            Op::Put { key, value } => json!({"requestPut": {
                "key": base64::encode(key),
                "value": base64::encode(value),
                "lease": lease.to_string(),
            }}),
            Op::Delete { key } => json!({"requestDeleteRange": {"key": base64::encode(key)}}),
        }
    }
}

/// One `/v3/kv/txn` request: how many of the operations it carries (in
/// order, after those of the batches before it) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnBatch {
    pub ops: usize,
    pub body: String,
}

/// Splits `ops` into txns of at most [`MAX_TXN_OPS`] operations and about
/// [`MAX_TXN_BYTES`], in order, every operation unconditional (no
/// `compare`, so `success` always runs). A txn is atomic, so each batch
/// lands whole or not at all. The caller must not give the same key twice:
/// etcd refuses a txn that writes a key more than once.
pub fn txn_batches(ops: &[Op], lease: i64) -> Vec<TxnBatch> {
    let mut batches = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let text = op.to_json(lease).to_string();
        if !batch.is_empty() && (batch.len() == MAX_TXN_OPS || bytes + text.len() > MAX_TXN_BYTES) {
            batches.push(TxnBatch {
                ops: batch.len(),
                body: txn_body(&batch),
            });
            batch.clear();
            bytes = 0;
        }
        bytes += text.len() + 1;
        batch.push(text);
    }
    if !batch.is_empty() {
        batches.push(TxnBatch {
            ops: batch.len(),
            body: txn_body(&batch),
        });
    }
    batches
}

fn txn_body(ops: &[String]) -> String {
    format!("{{\"success\":[{}]}}", ops.join(","))
}

/// The end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte incremented (bytes of 0xff dropped first), as
/// etcd's clientv3 `GetPrefixRangeEnd`. `[0]` (every key) if none can be.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A `/v3/kv/range` body for up to [`RANGE_PAGE`] keys in `[from, end)`,
/// with values (resync compares them so that it rewrites only what
/// changed, sparing watchers a storm of identical PUT events).
pub fn range_body(from: &[u8], end: &[u8]) -> String {
    json!({
        "key": base64::encode(from),
        "range_end": base64::encode(end),
        "limit": RANGE_PAGE.to_string(),
    })
    .to_string()
}

/// One key of a range response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// 0 when the key has no lease.
    pub lease: i64,
}

/// A page of a range response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RangePage {
    pub kvs: Vec<Kv>,
    /// More keys follow the last one.
    pub more: bool,
}

pub fn parse_range(body: &str) -> Result<RangePage, String> {
    let v = parse_json(body, "range")?;
    let mut page = RangePage {
        more: v.get("more").and_then(Value::as_bool).unwrap_or(false),
        ..RangePage::default()
    };
    if let Some(kvs) = v.get("kvs") {
        let kvs = kvs
            .as_array()
            .ok_or_else(|| format!("range response: \"kvs\" is not a list: {}", short(body)))?;
        for kv in kvs {
            page.kvs.push(Kv {
                key: bytes_field(kv, "key")?,
                value: bytes_field(kv, "value")?,
                lease: int_field(kv, "lease")?.unwrap_or(0),
            });
        }
    }
    Ok(page)
}

/// A `/v3/lease/grant` body; etcd picks the ID.
pub fn grant_body(ttl_s: i64) -> String {
    json!({"TTL": ttl_s.to_string()}).to_string()
}

/// The granted lease's ID and TTL (etcd may raise a TTL below its minimum).
pub fn parse_grant(body: &str) -> Result<(i64, i64), String> {
    let v = parse_json(body, "lease grant")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let id = int_field(&v, "ID")?.filter(|id| *id != 0);
    let ttl = int_field(&v, "TTL")?.filter(|ttl| *ttl > 0);
    match (id, ttl) {
        (Some(id), Some(ttl)) => Ok((id, ttl)),
        _ => Err(format!(
            "lease grant response without an ID and TTL: {}",
            short(body)
        )),
    }
}

/// A `/v3/lease/keepalive` body (one message of the stream).
pub fn keepalive_body(id: i64) -> String {
    json!({"ID": id.to_string()}).to_string()
}

/// The lease's new TTL, or None if etcd no longer has it. The gateway
/// answers a streaming call with `{"result": {...}}` (or `{"error": ...}`)
/// per message; a TTL of 0, which JSON leaves out, means "not found".
pub fn parse_keepalive(body: &str) -> Result<Option<i64>, String> {
    // A stream may carry several messages, one per line; the first is ours.
    let first = body
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let v = parse_json(first, "lease keepalive")?;
    if let Some(e) = v.get("error") {
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map_or_else(|| e.to_string(), str::to_string);
        return Err(message);
    }
    let result = v
        .get("result")
        .ok_or_else(|| format!("lease keepalive response without a result: {}", short(body)))?;
    Ok(int_field(result, "TTL")?.filter(|ttl| *ttl > 0))
}

/// What etcd said went wrong, from an error response (HTTP status other
/// than 200): `{"error": "...", "message": "...", "code": N}`.
pub fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body.trim()).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
    });
    match message {
        Some(m) if !m.is_empty() => m.to_string(),
        _ if body.trim().is_empty() => format!("HTTP {status}"),
        _ => format!("HTTP {status}: {}", short(body)),
    }
}

/// Whether an error says the lease is gone (expired or revoked), which
/// calls for a new lease and re-putting every key rather than a retry.
pub fn is_lease_not_found(message: &str) -> bool {
    message.contains("requested lease not found")
}

fn parse_json(body: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(body.trim())
        .map_err(|e| format!("{what} response is not JSON ({e}): {}", short(body)))
}

/// An int64 field: a JSON string as the gateway writes it, or a number.
fn int_field(v: &Value, name: &str) -> Result<Option<i64>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("\"{name}\": \"{s}\" is not an integer")),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("\"{name}\": {n} is not an integer")),
        Some(other) => Err(format!("\"{name}\": {other} is not an integer")),
    }
}

/// A base64 `bytes` field; missing means empty, as protobuf's JSON omits it.
fn bytes_field(v: &Value, name: &str) -> Result<Vec<u8>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => base64::decode(s).map_err(|e| format!("\"{name}\": {e}")),
        Some(other) => Err(format!("\"{name}\": {other} is not a base64 string")),
    }
}

/// The start of a response, for error messages.
fn short(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn txn_json() {
        let ops = [
            put("/s/a/1", "1.2.3.4:80"),
            Op::Delete { key: "/s/b".into() },
        ];
        let batches = txn_batches(&ops, 7587);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].ops, 2);
        let v: Value = serde_json::from_str(&batches[0].body).expect("JSON");
        assert_eq!(
            v,
            json!({"success": [
                {"requestPut": {"key": "L3MvYS8x", "value": "MS4yLjMuNDo4MA==", "lease": "7587"}},
                {"requestDeleteRange": {"key": "L3MvYg=="}},
            ]})
        );
    }

    #[test]
    fn txn_batches_of_128() {
        let ops: Vec<Op> = (0..300).map(|i| put(&format!("/k{i}"), "v")).collect();
        let batches = txn_batches(&ops, 1);
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(&b.body).expect("JSON");
                v["success"].as_array().map_or(0, Vec::len)
            })
            .collect();
        assert_eq!(sizes, vec![128, 128, 44]);
        assert_eq!(batches.iter().map(|b| b.ops).collect::<Vec<_>>(), sizes);
        assert!(txn_batches(&[], 1).is_empty());
        // The order of operations is kept across batches.
        assert!(batches[1].body.contains(&base64::encode(b"/k128")));
    }

    #[test]
    fn txn_batches_by_size() {
        let big = "x".repeat(300 * 1024);
        let ops: Vec<Op> = (0..5).map(|i| put(&format!("/k{i}"), &big)).collect();
        let batches = txn_batches(&ops, 1);
        assert!(batches.len() >= 2);
        assert!(batches.iter().all(|b| b.body.len() <= MAX_TXN_BYTES + 1024));
        assert_eq!(batches.iter().map(|b| b.ops).sum::<usize>(), 5);
        // A single op over the limit still goes out, alone.
        let huge = "x".repeat(2 * MAX_TXN_BYTES);
        assert_eq!(txn_batches(&[put("/a", &huge), put("/b", "1")], 1).len(), 2);
    }

    #[test]
    fn range_end() {
        assert_eq!(prefix_range_end(b"/services/"), b"/services0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        let v: Value =
            serde_json::from_str(&range_body(b"/services/", b"/services0")).expect("JSON");
        assert_eq!(
            v,
            json!({"key": "L3NlcnZpY2VzLw==", "range_end": "L3NlcnZpY2VzMA==", "limit": "1000"})
        );
    }

    #[test]
    fn range_response() {
        let body = r#"{"header":{"revision":"2"},"kvs":[{"key":"L3NlcnZpY2VzL2EvYg==","create_revision":"2","mod_revision":"2","version":"1","value":"MQ==","lease":"4111120259173344519"},{"key":"eA=="}],"more":true,"count":"5"}"#;
        let page = parse_range(body).expect("valid");
        assert!(page.more);
        assert_eq!(
            page.kvs,
            vec![
                Kv {
                    key: b"/services/a/b".to_vec(),
                    value: b"1".to_vec(),
                    lease: 4111120259173344519
                },
                Kv {
                    key: b"x".to_vec(),
                    value: vec![],
                    lease: 0
                },
            ]
        );
        assert_eq!(
            parse_range(r#"{"header":{"revision":"2"}}"#),
            Ok(RangePage::default())
        );
        assert!(parse_range(r#"{"kvs":[{"key":"!!"}]}"#).is_err());
        assert!(parse_range("<html>").is_err());
    }

    #[test]
    fn grant_and_keepalive() {
        assert_eq!(
            parse_grant(r#"{"header":{},"ID":"4111120259173344517","TTL":"15"}"#),
            Ok((4111120259173344517, 15))
        );
        assert_eq!(parse_grant(r#"{"ID":7,"TTL":5}"#), Ok((7, 5)));
        assert!(parse_grant(r#"{"header":{}}"#).is_err());
        assert!(parse_grant(r#"{"ID":"x","TTL":"5"}"#).is_err());
        assert_eq!(grant_body(15), r#"{"TTL":"15"}"#);
        assert_eq!(keepalive_body(42), r#"{"ID":"42"}"#);
        assert_eq!(
            parse_keepalive(r#"{"result":{"header":{},"ID":"42","TTL":"15"}}"#),
            Ok(Some(15))
        );
        // The lease is gone: no TTL (zero is left out), or a negative one.
        assert_eq!(
            parse_keepalive("{\"result\":{\"header\":{},\"ID\":\"42\"}}\n"),
            Ok(None)
        );
        assert_eq!(parse_keepalive(r#"{"result":{"TTL":"-1"}}"#), Ok(None));
        assert_eq!(
            parse_keepalive(r#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#),
            Err("etcdserver: no leader".to_string())
        );
        assert!(parse_keepalive("").is_err());
    }

    #[test]
    fn errors() {
        let body = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        let m = error_message(404, body);
        assert_eq!(m, "etcdserver: requested lease not found");
        assert!(is_lease_not_found(&m));
        assert_eq!(error_message(502, ""), "HTTP 502");
        assert_eq!(
            error_message(404, "404 page not found\n"),
            "HTTP 404: 404 page not found"
        );
    }
}
