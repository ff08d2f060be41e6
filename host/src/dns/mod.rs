//! The DNS interface: an authoritative server for the `consul.` zone (or
//! the configured domain) on hickory-server, UDP and TCP, answering every
//! query live from the local catalog.
//!
//! - `name`: what a query name asks for (service, node, addr, apex).
//! - `answer`: the records, computed from the catalog; pure.
//! - `handler`: hickory's `RequestHandler`, response flags, EDNS, fitting.
//! - this file: the sockets. TCP is hickory-server's `Server`; UDP is a
//!   a thread per core blocked in `recv_from` on its own SO_REUSEPORT
//!   socket, which decodes with hickory, answers inline with the same
//!   handler and sends the reply itself. hickory's UDP loop (a tokio task
//!   that spawns a task per query and hands every reply through a channel
//!   to a sender task) woke threads twice per query and reached about
//!   half of Knot's rate on this machine.

mod answer;
pub mod fixture;
mod handler;
mod name;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_server::net::runtime::TokioTime;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
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

/// The largest UDP request read; a longer datagram is cut and then fails
/// to decode (FORMERR). Queries are tens of bytes.
const MAX_UDP_REQUEST: usize = 4096;

/// How often a UDP thread looks at the stop flag while idle.
const UDP_STOP_POLL: Duration = Duration::from_millis(250);

/// The running DNS server.
pub struct DnsServer {
    tcp: Server<DnsHandler>,
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl DnsServer {
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::debug!(%error, "DNS server stopped with an error");
        }
    }
}

/// Binds UDP and TCP on `addresses.dns` and starts answering.
pub async fn start(config: &Config, consensus: &Consensus) -> anyhow::Result<DnsServer> {
    let zone = Zone::new(config.dns.clone(), &config.datacenter, &config.node_name)
        .with_context(|| format!("dns.domain '{}'", config.dns.domain))?;
    let handler = DnsHandler::new(zone, consensus.state().clone(), Some(consensus.clone()));
    let mut tcp_server = Server::new(handler.clone());
    let addr = config.dns_addr;
    // TCP first: it has no SO_REUSEPORT, so a port another process holds
    // fails here instead of silently sharing its UDP queries.
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding DNS (TCP) on {addr}"))?;
    // One UDP socket per worker thread (SO_REUSEPORT): each has its own
    // receive loop, so one busy loop does not cap the query rate.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..workers {
        let socket = bind_udp(addr).with_context(|| format!("binding DNS (UDP) on {addr}"))?;
        let (handler, stop) = (handler.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || serve_udp(socket, handler, stop))
            .context("starting a DNS UDP thread")?;
    }
    tcp_server.register_listener(tcp, TCP_IDLE, 64);
    tracing::info!(%addr, domain = %config.dns.domain, "DNS listening (UDP and TCP)");
    Ok(DnsServer {
        tcp: tcp_server,
        stop,
        addr,
    })
}

/// One UDP receive loop on its own thread: each query is decoded,
/// answered and sent before the next is read. The handler never waits (it
/// reads the catalog under a short lock), so its future completes on the
/// first poll and answering inline costs no concurrency.
fn serve_udp(socket: std::net::UdpSocket, handler: DnsHandler, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; MAX_UDP_REQUEST];
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; the socket
                // itself is fine.
                tracing::debug!(%error, "DNS UDP receive error");
                continue;
            }
        };
        // Never answer port 0 or unspecified sources (reflection).
        if src.port() == 0 || src.ip().is_unspecified() {
            continue;
        }
        let reply = futures::executor::block_on(respond(&handler, &buf[..len], Protocol::Udp));
        if let Some(reply) = reply {
            if let Err(error) = socket.send_to(&reply, src) {
                tracing::debug!(%error, %src, "DNS UDP send error");
            }
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(UDP_STOP_POLL))?;
    // Bursts of queries wait in the kernel, not on the floor.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Answers one raw request: hickory's decoder, then [`DnsHandler`], then
/// the encoder. Returns the encoded response, or `None` where nothing is
/// sent (no readable header, or a response sent to us). The UDP loop, the
/// fuzz target and the corpus test all go through here.
pub async fn respond(handler: &DnsHandler, bytes: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let src: SocketAddr = ([127, 0, 0, 1], 53000).into();
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => return form_error(bytes),
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

/// FORMERR for a request whose header decodes but whose body does not,
/// as hickory-server's own loop answers; nothing for anything less.
fn form_error(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let reply = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut buf = Vec::with_capacity(12);
    reply.emit(&mut BinEncoder::new(&mut buf)).ok()?;
    Some(buf)
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
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
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
