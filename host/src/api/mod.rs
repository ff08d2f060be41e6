//! The Consul-compatible HTTP API (`/v1/...`).
//!
//! Reads borrow the applied catalog and can block (`?index`, `?wait`) on the
//! table they read; writes go through the agent or straight to Raft. Errors
//! are plain-text bodies with Consul's status codes and wording, so that
//! Consul client libraries recognise them.

pub(crate) mod agent;
mod catalog;
pub(crate) mod decode;
mod filter;
pub mod forward;
mod health;
mod kv;
mod muster;
mod operator;
mod render;
mod server;
mod session;
mod snapshot;
mod status;
mod txn;

pub use decode::{format_duration, parse_duration};

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::Rng;
use serde_json::Value;

use crate::agent::Agent;
use crate::catalog::{Catalog, Index};
use crate::config::Config;
use crate::raft::{Consensus, WriteError};
pub use crate::watch::{Interest, Tables};

/// What every handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub consensus: Consensus,
    pub agent: Arc<Agent>,
    pub plugins: crate::plugins::Plugins,
    pub sources: crate::sources::Sources,
    pub renders: Renders,
    pub cluster: Arc<crate::cluster::Cluster>,
    pub exporters: Arc<crate::exporters::Exporters>,
}

/// Shared state as handlers receive it.
pub type State = axum::extract::State<Arc<AppState>>;

/// The largest request body accepted anywhere; KV values have their own,
/// smaller limit (Consul's `kv_max_value_size`).
const MAX_BODY: usize = 4 << 20;
/// Consul's default maximum KV value size.
pub const MAX_KV_VALUE: usize = 512 * 1024;

/// Builds the `/v1` router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(kv::routes())
        .merge(session::routes())
        .merge(txn::routes())
        .merge(status::routes())
        .merge(operator::routes())
        .merge(snapshot::routes())
        .merge(muster::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Not found: no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::forward,
        ))
        .with_state(state)
}

/// An error answered as Consul does: a status code and a plain-text message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400 with a message that names what was wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: Consul's answer for errors that happen past validation.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.message).into_response();
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

/// Query-string parameters, Consul style: `?recurse` alone means true.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// The request path, for keying shared renders of blocking reads.
    path: String,
}

impl Params {
    /// Parses a raw query string.
    pub fn parse(path: &str, raw: Option<&str>) -> Params {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Params {
            pairs,
            path: path.to_string(),
        }
    }

    /// What identifies a read apart from when it was asked: the path and
    /// every parameter except `index` and `wait`. Watchers with equal keys
    /// see equal answers at equal catalog indexes.
    fn read_key(&self) -> String {
        let mut key = self.path.clone();
        for (k, v) in &self.pairs {
            if k != "index" && k != "wait" {
                key.push('\u{1f}');
                key.push_str(k);
                key.push('=');
                key.push_str(v);
            }
        }
        key
    }

    /// Whether a flag is present, whatever its value: Consul reads
    /// `?recurse`, `?keys`, `?raw`, `?stale`, `?consistent` and `?pretty`
    /// that way (py-consul sends `recurse=True`).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A boolean parameter read as Go's `strconv.ParseBool` reads it (what
    /// Consul uses for `?passing` and `?enable`): absent is None, an empty
    /// value is true, anything unparseable is a 400 naming the parameter.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid value for \"{name}\": \"{v}\" is not a boolean"
            ))),
        }
    }

    /// `?node-meta=key:value` filters (repeatable; all must match).
    pub fn node_meta(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.all("node-meta")
            .into_iter()
            .map(|kv| match kv.split_once(':') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(ApiError::bad_request(format!(
                    "Invalid node-meta filter \"{kv}\": use key:value"
                ))),
            })
            .collect()
    }

    /// A parameter's value (the last one, if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter (`?tag=a&tag=b`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// An unsigned integer parameter; a malformed one is a 400 naming it.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid {name} parameter: '{v}' is not an unsigned integer"
                ))
            }),
        }
    }
}

/// A request body, read whole up to `MAX_BODY`; an oversized or broken
/// body is answered with a message that says what the limit is.
pub struct RawBody(pub bytes::Bytes);

/// How much of an oversized body is read and thrown away before the 413
/// goes out. A client writes its whole body before it reads the answer;
/// closing on unread data resets the connection, and the client would see
/// a broken pipe instead of the 413 that explains it.
const OVERSIZE_DRAIN: usize = MAX_BODY;

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let mut body = req.into_body();
        let mut kept = bytes::BytesMut::new();
        let mut seen: usize = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request(format!("Request body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > MAX_BODY + OVERSIZE_DRAIN {
                break;
            }
        }
        if seen > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large: the limit is {MAX_BODY} bytes"),
            ));
        }
        Ok(RawBody(kept.freeze()))
    }
}

/// Extracts `Params` from the raw query string.
pub struct Query(pub Params);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Query(Params::parse(parts.uri.path(), parts.uri.query())))
    }
}

/// How a read must be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consistency {
    Default,
    Stale,
    Consistent,
}

/// The blocking and consistency options every read accepts.
struct ReadOptions {
    index: Index,
    wait: Duration,
    consistency: Consistency,
    filter: Option<filter::Expr>,
    pretty: bool,
}

/// Consul's default and maximum blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

impl ReadOptions {
    fn parse(state: &AppState, p: &Params) -> Result<ReadOptions, ApiError> {
        check_dc(state, p)?;
        let wait = match p.get("wait") {
            Some(w) if !w.is_empty() => decode::parse_duration(w)
                .map_err(|e| ApiError::bad_request(format!("Invalid wait time: {e}")))?
                .min(MAX_WAIT),
            _ => DEFAULT_WAIT,
        };
        let consistency = match (p.flag("stale"), p.flag("consistent")) {
            (true, true) => {
                return Err(ApiError::bad_request(
                    "Cannot specify ?stale with ?consistent, conflicting semantics.",
                ))
            }
            (true, false) => Consistency::Stale,
            (false, true) => Consistency::Consistent,
            _ => Consistency::Default,
        };
        let filter = match p.get("filter") {
            Some(f) if !f.is_empty() => Some(filter::parse(f).map_err(|e| {
                ApiError::bad_request(format!(
                    "Failed to create boolean expression evaluator: {e}"
                ))
            })?),
            _ => None,
        };
        Ok(ReadOptions {
            index: p.u64("index")?.unwrap_or(0),
            wait,
            consistency,
            filter,
            pretty: p.flag("pretty"),
        })
    }
}

/// Borrows the applied catalog for reading. The lock is only poisoned if a
/// writer panicked, which the state machine never does on any input.
pub fn catalog_read(
    consensus: &Consensus,
) -> Result<std::sync::RwLockReadGuard<'_, crate::raft::Applied>, ApiError> {
    consensus
        .state()
        .read()
        .map_err(|_| ApiError::internal("catalog lock poisoned"))
}

/// Only the local datacenter exists until WAN federation lands.
pub fn check_dc(state: &AppState, p: &Params) -> Result<(), ApiError> {
    match p.get("dc") {
        Some(dc) if !dc.is_empty() && dc != state.config.datacenter => {
            Err(ApiError::internal("No path to datacenter"))
        }
        _ => Ok(()),
    }
}

/// The body of a read.
pub enum Body {
    Json(Value),
    /// `?raw` KV reads: the value's bytes as they were stored.
    Raw(Vec<u8>),
    /// 404 with an empty body, as Consul answers a missing key.
    NotFound,
}

/// What a read produced and the index it reflects.
pub struct Reply {
    pub body: Body,
    pub index: Index,
}

impl Reply {
    pub fn found(body: Value, index: Index) -> Reply {
        Reply {
            body: Body::Json(body),
            index,
        }
    }

    /// A JSON array of `items`.
    pub fn list(items: impl IntoIterator<Item = Value>, index: Index) -> Reply {
        Reply::found(Value::Array(items.into_iter().collect()), index)
    }

    pub fn missing(index: Index) -> Reply {
        Reply {
            body: Body::NotFound,
            index,
        }
    }
}

/// Serves a read: applies consistency, blocks while the result's index is
/// not past `?index`, filters, renders, and sets Consul's headers.
pub async fn read<F>(
    state: &AppState,
    params: &Params,
    interest: Interest,
    view: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Catalog) -> Result<Reply, ApiError>,
{
    let opts = ReadOptions::parse(state, params)?;
    match opts.consistency {
        Consistency::Consistent => state
            .consensus
            .linearize()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?,
        Consistency::Default if !state.consensus.has_leader() => {
            return Err(ApiError::internal("No cluster leader"))
        }
        _ => {}
    }
    let applied = state.consensus.applied();
    // A blocking read has a deadline and a subscription to what it reads
    // (only blocking reads subscribe, so a plain GET leaves nothing behind).
    let mut blocking = (opts.index > 0).then(|| {
        // Consul adds up to wait/16 of jitter so that many watchers that
        // started together do not all return together.
        let jitter_ms = (opts.wait.as_millis() as u64 / 16).max(1);
        let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..jitter_ms));
        let deadline = tokio::time::Instant::now() + opts.wait + jitter;
        (deadline, state.consensus.watches().subscribe(&interest))
    });
    // Blocking reads share one render per catalog index: when a write wakes
    // thousands of watchers of one prefix, the first renders and the rest
    // copy its bytes.
    let key = blocking.as_ref().map(|_| params.read_key());
    loop {
        // The published index trails the catalog: the state is at least
        // this new, so a render keyed by it is never stale for it.
        if let Some((_, waiter)) = &mut blocking {
            waiter.mark_seen();
        }
        let at = *applied.borrow();
        let cached = key.as_ref().and_then(|k| state.renders.get(k, at));
        let rendered = match cached {
            Some(hit) => hit,
            None => {
                let reply = {
                    let guard = catalog_read(&state.consensus)?;
                    view(&guard.catalog)?
                };
                let r = Arc::new(render(&opts, reply));
                if let Some(k) = &key {
                    state.renders.put(k.clone(), at, r.clone());
                }
                r
            }
        };
        let Some((deadline, waiter)) = &mut blocking else {
            return Ok(rendered.response(state));
        };
        if rendered.index > opts.index || tokio::time::Instant::now() >= *deadline {
            return Ok(rendered.response(state));
        }
        drop(rendered);
        tokio::select! {
            alive = waiter.changed() => {
                if !alive {
                    return Err(ApiError::internal("node is shutting down"));
                }
            }
            _ = tokio::time::sleep_until(*deadline) => {}
        }
    }
}

/// A read's answer, rendered to bytes once and shareable between requests.
pub struct Rendered {
    index: Index,
    status: StatusCode,
    content_type: &'static str,
    body: bytes::Bytes,
}

impl Rendered {
    fn response(&self, state: &AppState) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        if !self.content_type.is_empty() {
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static(self.content_type));
        }
        consul_headers(state, &mut response, self.index);
        response
    }
}

fn render(opts: &ReadOptions, reply: Reply) -> Rendered {
    let (status, content_type, body) = match reply.body {
        Body::Json(mut v) => {
            if let Some(f) = &opts.filter {
                filter::apply(f, &mut v);
            }
            (
                StatusCode::OK,
                "application/json",
                json_bytes(&v, opts.pretty),
            )
        }
        Body::Raw(bytes) => (StatusCode::OK, "", bytes),
        Body::NotFound => (StatusCode::NOT_FOUND, "", Vec::new()),
    };
    Rendered {
        index: reply.index,
        status,
        content_type,
        body: body.into(),
    }
}

/// The last few shared renders of blocking reads, by read key.
#[derive(Default)]
pub struct Renders {
    map: std::sync::Mutex<std::collections::HashMap<String, (Index, Arc<Rendered>)>>,
}

/// Enough for every distinct watched query of a busy node; a full cache
/// is simply emptied (entries are only useful for one index anyway).
const MAX_RENDERS: usize = 4096;

impl Renders {
    fn get(&self, key: &str, at: Index) -> Option<Arc<Rendered>> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(i, _)| *i == at)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, at: Index, r: Arc<Rendered>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_RENDERS {
                map.clear();
            }
            map.insert(key, (at, r));
        }
    }
}

/// Sets `X-Consul-Index` (never 0, as Consul), `X-Consul-KnownLeader` and
/// `X-Consul-LastContact`.
pub fn consul_headers(state: &AppState, response: &mut Response, index: Index) {
    const INDEX: HeaderName = HeaderName::from_static("x-consul-index");
    const KNOWN_LEADER: HeaderName = HeaderName::from_static("x-consul-knownleader");
    const LAST_CONTACT: HeaderName = HeaderName::from_static("x-consul-lastcontact");
    let h = response.headers_mut();
    h.insert(INDEX, HeaderValue::from(index.max(1)));
    let known = state.consensus.has_leader();
    h.insert(
        KNOWN_LEADER,
        HeaderValue::from_static(if known { "true" } else { "false" }),
    );
    h.insert(
        LAST_CONTACT,
        HeaderValue::from(state.consensus.last_contact_ms()),
    );
}

fn json_bytes(v: &Value, pretty: bool) -> Vec<u8> {
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    }
    .unwrap_or_default();
    if pretty {
        bytes.push(b'\n');
    }
    bytes
}

/// Renders JSON (pretty with `?pretty`).
pub fn json_response(status: StatusCode, v: &Value, pretty: bool) -> Response {
    let mut r = (status, json_bytes(v, pretty)).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// A plain JSON answer for writes (`true`, `{"ID": ...}`).
pub fn json(v: Value) -> Response {
    json_response(StatusCode::OK, &v, false)
}

/// Serves the HTTP API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    server::run(listener, router, shutdown).await;
    Ok(())
}
