//! The component: WIT bindings, the wasi:sockets transport and the exports,
//! which keep one `Exporter` alive across calls.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "exporter",
    generate_all,
});

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use muster::plugin::log::{log as host_log, Level as HostLevel};
use muster::plugin::types::Change as WitChange;
use wasi::clocks::monotonic_clock;
use wasi::io::poll;
use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::ip_name_lookup;
use wasi::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use wasi::sockets::tcp::TcpSocket;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

use crate::config::Config as ExporterConfig;
use crate::exporter::{Change as ExChange, Exporter};
use crate::layout::{Instance, InstanceKey};
use crate::net::{split_server, Conn, Env, Level};

struct WasiEnv;

/// A connected stream. Field order matters: the streams are children of
/// the socket and must be dropped before it.
struct WasiConn {
    input: InputStream,
    output: OutputStream,
    _socket: TcpSocket,
}

impl Env for WasiEnv {
    type Conn = WasiConn;

    fn now_ns(&self) -> u64 {
        monotonic_clock::now()
    }

    fn connect(&self, server: &str, deadline_ns: u64) -> Result<WasiConn, String> {
        let (host, port) = split_server(server)?;
        let network = instance_network();
        let addr = resolve(&network, host, port, deadline_ns)?;
        let (family, remote) = wasi_addr(addr);
        let socket = create_tcp_socket(family).map_err(describe)?;
        socket.start_connect(&network, remote).map_err(describe)?;
        loop {
            match socket.finish_connect() {
                Ok((input, output)) => {
                    return Ok(WasiConn {
                        input,
                        output,
                        _socket: socket,
                    })
                }
                Err(ErrorCode::WouldBlock) => wait(&socket.subscribe(), deadline_ns)?,
                Err(e) => return Err(describe(e)),
            }
        }
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => HostLevel::Debug,
            Level::Info => HostLevel::Info,
            Level::Warn => HostLevel::Warn,
            Level::Error => HostLevel::Error,
        };
        host_log(level, message);
    }
}

impl Conn for WasiConn {
    fn write_all(&mut self, mut buf: &[u8], deadline_ns: u64) -> Result<(), String> {
        while !buf.is_empty() {
            let permit = self.output.check_write().map_err(stream_error)?;
            if permit == 0 {
                wait(&self.output.subscribe(), deadline_ns)?;
                continue;
            }
            let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
            self.output.write(&buf[..n]).map_err(stream_error)?;
            buf = &buf[n..];
        }
        // Push it out now rather than when the host's buffer decides to.
        self.output.flush().map_err(stream_error)?;
        // The flush is done when writing is allowed again.
        loop {
            match self.output.check_write().map_err(stream_error)? {
                0 => wait(&self.output.subscribe(), deadline_ns)?,
                _ => return Ok(()),
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], deadline_ns: u64) -> Result<(), String> {
        let mut at = 0;
        while at < buf.len() {
            let want = u64::try_from(buf.len() - at).unwrap_or(u64::MAX);
            let chunk = self.input.read(want).map_err(stream_error)?;
            if chunk.is_empty() {
                wait(&self.input.subscribe(), deadline_ns)?;
                continue;
            }
            // The host never returns more than asked; `min` keeps a buggy
            // one from making us panic on the slice.
            let n = chunk.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&chunk[..n]);
            at += n;
        }
        Ok(())
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "connection closed by server".into(),
        // `network-error-code` is unstable in this WIT: the host's own
        // description is the best we have.
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

fn resolve(
    network: &Network,
    host: &str,
    port: u16,
    deadline_ns: u64,
) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let stream = ip_name_lookup::resolve_addresses(network, host)
        .map_err(|e| format!("lookup {host}: {}", describe(e)))?;
    let mut v6 = None;
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => {
                return Ok(SocketAddr::new(IpAddr::from([a, b, c, d]), port))
            }
            Ok(Some(IpAddress::Ipv6(s))) => {
                // Prefer IPv4 (what most ZooKeeper deployments listen on),
                // but do not ignore an IPv6-only name.
                v6.get_or_insert(SocketAddr::new(
                    IpAddr::from([s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7]),
                    port,
                ));
            }
            Ok(None) => return v6.ok_or_else(|| format!("lookup {host}: no such host")),
            Err(ErrorCode::WouldBlock) => wait(&stream.subscribe(), deadline_ns)?,
            Err(e) => return Err(format!("lookup {host}: {}", describe(e))),
        }
    }
}

fn wasi_addr(addr: SocketAddr) -> (IpAddressFamily, IpSocketAddress) {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: v4.port(),
                    address: (a, b, c, d),
                }),
            )
        }
        SocketAddr::V6(v6) => {
            let s = v6.ip().segments();
            (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: v6.port(),
                    flow_info: 0,
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    scope_id: 0,
                }),
            )
        }
    }
}

/// Waits for `ready` or the deadline, whichever comes first.
fn wait(ready: &poll::Pollable, deadline_ns: u64) -> Result<(), String> {
    let timer = monotonic_clock::subscribe_instant(deadline_ns);
    let fired = poll::poll(&[ready, &timer]);
    if fired.contains(&0) {
        Ok(())
    } else {
        Err("i/o timeout".to_string())
    }
}

fn describe(e: ErrorCode) -> String {
    match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::AccessDenied => "permission denied (not in the exporter's grant.connect)".into(),
        ErrorCode::Timeout => "i/o timeout".into(),
        ErrorCode::RemoteUnreachable => "no route to host".into(),
        ErrorCode::ConnectionReset => "connection reset by peer".into(),
        ErrorCode::ConnectionAborted => "connection aborted".into(),
        ErrorCode::NameUnresolvable => "no such host".into(),
        other => format!("{other:?}"),
    }
}

thread_local! {
    /// The node keeps one instance per exporter and calls it from one
    /// thread; the connection and session live here between calls.
    static STATE: RefCell<Option<Exporter<WasiEnv>>> = const { RefCell::new(None) };
}

fn prefixed<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, String> {
    r.map_err(|e| format!("zookeeper-exporter: {e}"))
}

fn with_exporter(
    f: impl FnOnce(&mut Exporter<WasiEnv>) -> Result<(), crate::client::Error>,
) -> Result<(), String> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        match state.as_mut() {
            Some(ex) => prefixed(f(ex)),
            None => Err("zookeeper-exporter: not opened".into()),
        }
    })
}

fn instance(si: ServiceInstance) -> Instance {
    Instance {
        node: si.node,
        id: si.id,
        name: si.name,
        tags: si.tags,
        address: si.address,
        port: si.port,
        meta: si.meta.into_iter().map(|p| (p.key, p.value)).collect(),
    }
}

struct Plugin;

impl Guest for Plugin {
    fn start(config: String) -> Result<(), String> {
        let config = prefixed(ExporterConfig::parse(&config))?;
        let ex = prefixed(Exporter::open(&config, WasiEnv))?;
        // A second start replaces the first; its session simply expires and
        // the new one takes over its nodes.
        STATE.with(|state| *state.borrow_mut() = Some(ex));
        Ok(())
    }

    fn apply(changes: Vec<WitChange>) -> Result<(), String> {
        let changes = changes
            .into_iter()
            .map(|c| match c {
                WitChange::Upsert(si) => ExChange::Upsert(instance(si)),
                WitChange::Remove(k) => ExChange::Remove(InstanceKey {
                    node: k.node,
                    id: k.id,
                }),
            })
            .collect();
        with_exporter(|ex| ex.apply(changes))
    }

    fn resync(all: Vec<ServiceInstance>) -> Result<(), String> {
        let all = all.into_iter().map(instance).collect();
        with_exporter(|ex| ex.resync(all))
    }

    fn tick() -> Result<(), String> {
        with_exporter(Exporter::tick)
    }
}

export!(Plugin);
