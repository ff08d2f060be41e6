//! The DNS interface: an authoritative server for the `consul.` zone (or
//! the configured domain) on hickory-server, UDP and TCP, answering every
//! query live from the local catalog.
//!
//! - `name`: what a query name asks for (service, node, addr, apex).
//! - `answer`: the records, computed from the catalog; pure.
//! - `handler`: hickory's `RequestHandler`, response flags, EDNS, fitting.

mod answer;
pub mod fixture;
mod handler;
mod name;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_server::net::runtime::TokioTime;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use hickory_server::Server;

pub use answer::Zone;
pub use handler::{DnsHandler, MAX_UDP_PAYLOAD};
pub use hickory_server::net::xfer::Protocol;
pub use name::Lookup;

use crate::config::Config;
use crate::raft::{Applied, Consensus};

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The running DNS server; dropping it stops it.
pub struct DnsServer {
    server: Server<DnsHandler>,
    pub addr: SocketAddr,
}

impl DnsServer {
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "DNS server stopped with an error");
        }
    }
}

/// Binds UDP and TCP on `addresses.dns` and starts answering.
pub async fn start(config: &Config, consensus: &Consensus) -> anyhow::Result<DnsServer> {
    let zone = Zone::new(config.dns.clone(), &config.datacenter, &config.node_name)
        .with_context(|| format!("dns.domain '{}'", config.dns.domain))?;
    let handler = DnsHandler::new(zone, consensus.state().clone(), Some(consensus.clone()));
    let mut server = Server::new(handler);
    let addr = config.dns_addr;
    // TCP first: it has no SO_REUSEPORT, so a port another process holds
    // fails here instead of silently sharing its UDP queries.
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding DNS (TCP) on {addr}"))?;
    // One UDP socket per worker thread (SO_REUSEPORT): each has its own
    // receive loop, so one busy loop does not cap the query rate.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..workers {
        let udp = bind_udp(addr).with_context(|| format!("binding DNS (UDP) on {addr}"))?;
        server.register_socket(udp);
    }
    server.register_listener(tcp, TCP_IDLE, 64);
    tracing::info!(%addr, domain = %config.dns.domain, "DNS listening (UDP and TCP)");
    Ok(DnsServer { server, addr })
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Bursts of queries wait in the kernel, not on the floor.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Runs one raw request through the same path the server uses (hickory's
/// decoder, then [`DnsHandler`]) and returns the encoded response, or
/// `None` where the server would send nothing. For the fuzz target and
/// the corpus test.
pub async fn respond(handler: &DnsHandler, bytes: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let src: SocketAddr = ([127, 0, 0, 1], 53000).into();
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(r) => r,
        // hickory answers FORMERR when the header decodes; nothing to test
        // of ours there.
        Err(_) => return None,
    };
    if request.metadata.message_type == MessageType::Response {
        return None;
    }
    let capture = Capture {
        protocol,
        out: Arc::default(),
    };
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    let out = capture.out.lock().ok()?.take();
    out
}

/// A handler over a fixed catalog, for tests and fuzzing.
pub fn handler_for(
    catalog: crate::catalog::Catalog,
    settings: crate::config::DnsSettings,
) -> anyhow::Result<DnsHandler> {
    let zone = Zone::new(settings, "dc1", "muster-1")?;
    let applied = Applied {
        catalog,
        ..Default::default()
    };
    Ok(DnsHandler::new(zone, Arc::new(RwLock::new(applied)), None))
}

/// A `ResponseHandler` that keeps the encoded response.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    out: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        // The same size rule as hickory's UDP/TCP response handle.
        let max = match (self.protocol, response.edns()) {
            (Protocol::Udp, Some(e)) => e.max_payload(),
            (Protocol::Udp, None) => 512,
            _ => u16::MAX,
        };
        let id = response.metadata().id;
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(e) => {
                // hickory sends a bare SERVFAIL header when a response
                // cannot be encoded; so do we.
                tracing::debug!(error = %e, "encoding a DNS response failed");
                let mut metadata = hickory_server::proto::op::Metadata::new(
                    id,
                    MessageType::Response,
                    OpCode::Query,
                );
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                buf.clear();
                let mut encoder = BinEncoder::new(&mut buf);
                header
                    .emit(&mut encoder)
                    .map_err(hickory_server::net::NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        if let Ok(mut out) = self.out.lock() {
            *out = Some(buf);
        }
        Ok(info)
    }
}
