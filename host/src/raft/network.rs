//! Inter-server Raft RPC over TCP on `addresses.server`.
//!
//! One frame per message: a 4-byte big-endian length, then the message in
//! postcard (a compact binary encoding of openraft's own serde types). A
//! connection carries one request at a time; openraft drives one
//! replication stream per follower, and each stream gets its own
//! connection, so followers are served in parallel. A broken or timed-out
//! connection is dropped and the next call reconnects.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::proposer::Proposer;
use super::{NodeId, TypeConfig, WriteError};
use crate::catalog::{Command, Index, Response};
use crate::cluster::rpc::{ClusterRequest, ClusterResponse, HttpRequest, HttpResponse};

/// Largest frame accepted: a snapshot chunk or a batch of entries.
const MAX_FRAME: usize = 64 << 20;
/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
pub(crate) enum RpcRequest {
    Vote(VoteRequest<NodeId>),
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write a follower (or a client agent) forwards to the leader.
    Propose(Command),
    /// Membership: joining, heartbeats, anti-entropy reads, leaving.
    Cluster(ClusterRequest),
    /// An HTTP API request forwarded to the leader (or, from a client
    /// agent, to a server), answered by its router.
    Http(HttpRequest),
}

type Answer<T, E = openraft::error::Infallible> = Result<T, RaftError<NodeId, E>>;

#[derive(Serialize, Deserialize)]
pub(crate) enum RpcResponse {
    Vote(Answer<VoteResponse<NodeId>>),
    Append(Answer<AppendEntriesResponse<NodeId>>),
    Snapshot(Answer<InstallSnapshotResponse<NodeId>, InstallSnapshotError>),
    Proposed(Result<(Index, Response), WriteError>),
    Cluster(Result<ClusterResponse, String>),
    Http(HttpResponse),
}

/// What a server answers besides Raft itself: the cluster protocol and
/// forwarded HTTP requests. Set once the node is up; until then peers are
/// told it is starting.
#[async_trait::async_trait]
pub trait RpcServices: Send + Sync {
    async fn cluster(&self, request: ClusterRequest) -> Result<ClusterResponse, String>;
    async fn http(&self, request: HttpRequest) -> HttpResponse;
}

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("cannot decode a frame: {0}")]
    Decode(#[from] postcard::Error),
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, message: &T) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(message)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    Ok(())
}

async fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

/// What a connection handler needs.
#[derive(Clone)]
pub(crate) struct Served {
    pub raft: Raft<TypeConfig>,
    pub proposer: Proposer,
    pub services: Arc<dyn RpcServices>,
    /// When an AppendEntries last arrived (ms on `clock`), for
    /// `X-Consul-LastContact` on stale reads.
    pub last_contact: Arc<std::sync::atomic::AtomicU64>,
    pub clock: tokio::time::Instant,
}

/// Serves Raft RPCs, forwarded writes, the cluster protocol and forwarded
/// HTTP requests from peers on `listener` until the process ends.
pub(crate) fn serve(listener: TcpListener, served: Served) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "raft RPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let served = served.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connection(stream, served).await {
                    tracing::debug!(%peer, error = %e, "raft RPC connection closed");
                }
            });
        }
    });
}

async fn serve_connection(mut stream: TcpStream, served: Served) -> Result<(), FrameError> {
    let Served {
        raft,
        proposer,
        services,
        last_contact,
        clock,
    } = served;
    stream.set_nodelay(true)?;
    loop {
        let request: RpcRequest = match read_frame(&mut stream).await {
            Ok(r) => r,
            // The peer hung up between requests: the normal end.
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let response = match request {
            RpcRequest::Vote(r) => RpcResponse::Vote(raft.vote(r).await),
            RpcRequest::Append(r) => {
                let from_leader = r.vote.is_committed();
                let answer = raft.append_entries(r).await;
                if from_leader && answer.is_ok() {
                    last_contact.store(
                        clock.elapsed().as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                RpcResponse::Append(answer)
            }
            RpcRequest::Snapshot(r) => RpcResponse::Snapshot(raft.install_snapshot(r).await),
            // Proposed here only if this node still leads: a forwarded
            // write is never forwarded again, so it cannot loop.
            RpcRequest::Propose(command) => {
                RpcResponse::Proposed(if raft.current_leader().await == Some(raft_id(&raft)) {
                    proposer.propose(command).await
                } else {
                    Err(WriteError::NoLeader)
                })
            }
            RpcRequest::Cluster(r) => RpcResponse::Cluster(services.cluster(r).await),
            RpcRequest::Http(r) => RpcResponse::Http(services.http(r).await),
        };
        write_frame(&mut stream, &response).await?;
    }
}

/// Builds connections to peers.
pub struct Network;

/// A connection to one peer, opened on first use and after any failure.
pub struct Connection {
    target: NodeId,
    addr: Arc<str>,
    stream: Option<TcpStream>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.as_str().into(),
            stream: None,
        }
    }
}

/// A failed call: the peer could not be reached at all, or the exchange
/// broke midway (openraft backs off from the first, retries the second).
enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl Connection {
    async fn call(&mut self, request: RpcRequest, ttl: Duration) -> Result<RpcResponse, CallError> {
        let stream = match self.stream.take() {
            Some(s) => s,
            None => {
                let connect = TcpStream::connect(&*self.addr);
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| {
                        CallError::Unreachable(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "connecting to server {} at {} timed out",
                                self.target, self.addr
                            ),
                        ))
                    })?
                    .map_err(|e| {
                        CallError::Unreachable(std::io::Error::new(
                            e.kind(),
                            format!("server {} at {}: {e}", self.target, self.addr),
                        ))
                    })?;
                let _ = stream.set_nodelay(true);
                stream
            }
        };
        let mut stream = stream;
        let exchange = async {
            write_frame(&mut stream, &request).await?;
            read_frame::<RpcResponse>(&mut stream).await
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(response)) => {
                // Kept only after a whole exchange, so a half-read frame
                // never poisons the next call.
                self.stream = Some(stream);
                Ok(response)
            }
            Ok(Err(e)) => Err(CallError::Network(std::io::Error::other(format!(
                "server {} at {}: {e}",
                self.target, self.addr
            )))),
            Err(_) => Err(CallError::Network(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "server {} at {} did not answer in {ttl:?}",
                    self.target, self.addr
                ),
            ))),
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::other(format!(
            "server {} answered a different RPC than was asked",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RpcRequest::Append(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::Append(r)) => r.map_err(|e| {
                RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e))
            }),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(RpcRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::Snapshot(r)) => r.map_err(|e| {
                RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e))
            }),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RpcRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::Vote(r)) => r.map_err(|e| {
                RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e))
            }),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }
}

fn raft_id(raft: &Raft<TypeConfig>) -> NodeId {
    raft.metrics().borrow().id
}

/// Connections to other servers for forwarded writes, HTTP requests and
/// the cluster protocol, reused one exchange at a time (a call in flight
/// holds its connection).
#[derive(Default)]
pub struct Forwarder {
    idle: std::sync::Mutex<Vec<(Arc<str>, TcpStream)>>,
}

/// Keeps a few idle connections; more concurrent calls open more.
const IDLE_FORWARD_CONNECTIONS: usize = 32;

impl Forwarder {
    /// Sends `request` to the server at `addr` and waits for its answer.
    pub(crate) async fn call(
        &self,
        addr: &str,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, String> {
        let reused = self.idle.lock().ok().and_then(|mut idle| {
            let at = idle.iter().position(|(a, _)| &**a == addr)?;
            Some(idle.swap_remove(at).1)
        });
        let mut stream = match reused {
            Some(s) => s,
            None => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connecting to {addr} timed out"))?
                    .map_err(|e| format!("connecting to {addr}: {e}"))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        let exchange = async {
            write_frame(&mut stream, request).await?;
            read_frame::<RpcResponse>(&mut stream).await
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{addr} did not answer in {timeout:?}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_FORWARD_CONNECTIONS {
                idle.push((addr.into(), stream));
            }
        }
        Ok(answer)
    }

    /// Sends a write to the leader at `addr` and waits for its outcome.
    pub async fn write(
        &self,
        addr: &str,
        command: Command,
        timeout: Duration,
    ) -> Result<(Index, Response), WriteError> {
        match self
            .call(addr, &RpcRequest::Propose(command), timeout)
            .await
            .map_err(|e| WriteError::Raft(format!("forwarding to the leader: {e}")))?
        {
            RpcResponse::Proposed(outcome) => outcome,
            _ => Err(WriteError::Raft(format!(
                "the leader at {addr} answered a different RPC"
            ))),
        }
    }

    /// A cluster-protocol call.
    pub async fn cluster(
        &self,
        addr: &str,
        request: ClusterRequest,
        timeout: Duration,
    ) -> Result<ClusterResponse, String> {
        match self
            .call(addr, &RpcRequest::Cluster(request), timeout)
            .await?
        {
            RpcResponse::Cluster(answer) => answer,
            _ => Err(format!("{addr} answered a different RPC")),
        }
    }

    /// Forwards an HTTP request.
    pub async fn http(
        &self,
        addr: &str,
        request: HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, String> {
        match self.call(addr, &RpcRequest::Http(request), timeout).await? {
            RpcResponse::Http(answer) => Ok(answer),
            _ => Err(format!("{addr} answered a different RPC")),
        }
    }
}
