//! Where a request is answered. A client agent answers its own
//! `/v1/agent/...` endpoints and forwards everything else to a server. A
//! follower server forwards reads in the default and `?consistent` modes
//! (the leader answers them, as in Consul), and operator and snapshot
//! requests; `?stale` reads are answered from its own copy. Writes need no
//! forwarding here: Raft forwards them to the leader. Forwarding travels
//! on the cluster transport and happens once at most.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use super::{ApiError, AppState, Params, MAX_BODY};
use crate::cluster::rpc::{ClusterRequest, ClusterResponse, HttpRequest, HttpResponse, Role};
use crate::cluster::Cluster;

/// Set on a forwarded request: answer it here, never forward again.
const FORWARDED: HeaderName = HeaderName::from_static("x-muster-forwarded");
/// The node a forwarded request came from (a session's default node).
pub const ORIGIN_NODE: HeaderName = HeaderName::from_static("x-muster-node");

/// A forwarded request's deadline: a blocking query may wait 10 minutes.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(600);

enum Target {
    Here,
    Server(String),
}

/// Endpoints a client agent answers itself: its own services and checks,
/// and muster's plugin and source views of this node.
fn client_local(path: &str) -> bool {
    (path.starts_with("/v1/agent/")
        && path != "/v1/agent/members"
        && !path.starts_with("/v1/agent/force-leave"))
        || path.starts_with("/v1/muster/")
}

/// Requests a follower hands to the leader.
fn leader_only(method: &axum::http::Method, path: &str, query: Option<&str>) -> bool {
    if path.starts_with("/v1/operator/")
        || path == "/v1/snapshot"
        || path.starts_with("/v1/agent/force-leave")
        || path == "/v1/txn"
    {
        return true;
    }
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    let table = ["/v1/catalog/", "/v1/health/", "/v1/kv/", "/v1/session/"]
        .iter()
        .any(|p| path.starts_with(p));
    read && table && !Params::parse(path, query).flag("stale")
}

fn target(state: &AppState, req: &Request) -> Result<Target, ApiError> {
    if req.headers().contains_key(&FORWARDED) {
        return Ok(Target::Here);
    }
    let path = req.uri().path();
    let cluster = &state.cluster;
    match cluster.role() {
        Role::Client if client_local(path) => Ok(Target::Here),
        Role::Client => cluster
            .server_target()
            .map(Target::Server)
            .map_err(|e| ApiError::internal(e.to_string())),
        Role::Server if state.consensus.is_leader() => Ok(Target::Here),
        Role::Server if leader_only(req.method(), path, req.uri().query()) => {
            match state.consensus.leader_addr() {
                Some(leader) => Ok(Target::Server(leader)),
                None => Err(ApiError::internal("No cluster leader")),
            }
        }
        Role::Server => Ok(Target::Here),
    }
}

/// The middleware.
pub async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match target(&state, &req) {
        Ok(Target::Here) => next.run(req).await,
        Ok(Target::Server(addr)) => match proxy(&state, addr, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

async fn proxy(state: &AppState, addr: String, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = if parts.uri.path() == "/v1/snapshot" {
        super::snapshot::MAX_SNAPSHOT
    } else {
        MAX_BODY
    };
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    let params = Params::parse(parts.uri.path(), parts.uri.query());
    let timeout = if params.flag("index") {
        let wait = params
            .get("wait")
            .and_then(|w| super::parse_duration(w).ok())
            .unwrap_or(Duration::from_secs(300))
            .min(MAX_WAIT);
        wait + wait / 16 + PLAIN_TIMEOUT
    } else {
        PLAIN_TIMEOUT
    };
    let mut headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    headers.push((FORWARDED.as_str().into(), b"1".to_vec()));
    if !parts.headers.contains_key(&ORIGIN_NODE) {
        headers.push((
            ORIGIN_NODE.as_str().into(),
            state.agent.identity.node_name.as_bytes().to_vec(),
        ));
    }
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers,
        body: body.to_vec(),
    };
    let cluster: &Cluster = &state.cluster;
    let mut target = addr;
    let mut tries = 0;
    let answer = loop {
        tries += 1;
        match cluster.rpc().http(&target, request.clone(), timeout).await {
            Ok(a) => break a,
            // A client tries another server once if this one is gone.
            Err(e) if tries < 2 && cluster.role() == Role::Client => {
                tracing::debug!(%target, error = %e, "forwarding failed; trying another server");
                cluster.forget_leader();
                target = cluster
                    .server_target()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Err(e) => return Err(ApiError::internal(format!("rpc error: {e}"))),
        }
    };
    Ok(into_response(answer))
}

fn into_response(answer: HttpResponse) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = response.headers_mut();
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_bytes(&v)) {
            // The body is whole now; its framing is ours to set.
            if k != axum::http::header::TRANSFER_ENCODING && k != axum::http::header::CONTENT_LENGTH
            {
                h.append(k, v);
            }
        }
    }
    response
}

/// What a server answers to peers besides Raft: the cluster protocol, and
/// HTTP requests forwarded to it (run through its own router).
pub struct PeerServices {
    cluster: Arc<Cluster>,
    router: OnceLock<Router>,
}

impl PeerServices {
    pub fn new(cluster: Arc<Cluster>) -> Arc<PeerServices> {
        Arc::new(PeerServices {
            cluster,
            router: OnceLock::new(),
        })
    }

    /// Called once the HTTP API is built.
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }
}

#[async_trait::async_trait]
impl crate::raft::RpcServices for PeerServices {
    async fn cluster(&self, request: ClusterRequest) -> Result<ClusterResponse, String> {
        self.cluster.handle(request).await
    }

    async fn http(&self, request: HttpRequest) -> HttpResponse {
        let failed = |status: StatusCode, message: String| HttpResponse {
            status: status.as_u16(),
            headers: vec![("content-type".into(), b"text/plain; charset=utf-8".to_vec())],
            body: message.into_bytes(),
        };
        let Some(router) = self.router.get() else {
            return failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is starting".into(),
            );
        };
        let mut builder = axum::http::Request::builder()
            .method(request.method.as_str())
            .uri(request.uri.as_str());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_slice());
        }
        let req = match builder.body(Body::from(request.body)) {
            Ok(r) => r,
            Err(e) => {
                return failed(
                    StatusCode::BAD_REQUEST,
                    format!("bad forwarded request: {e}"),
                )
            }
        };
        let response = match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect(),
                body: bytes.to_vec(),
            },
            Err(e) => failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the answer: {e}"),
            ),
        }
    }
}
