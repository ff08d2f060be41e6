//! `builtin:tcp-check`: Consul's TCP check as a component. Passing when a
//! TCP connection to the endpoint opens within the timeout, critical
//! otherwise. Connects through wasi:sockets, so the node's grant check
//! sees (and limits) every address it tries.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "health-check",
    generate_all,
});

use std::net::{IpAddr, SocketAddr};

use muster::plugin::types::CheckStatus;
use wasi::clocks::monotonic_clock;
use wasi::io::poll;
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::ip_name_lookup;
use wasi::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

struct TcpCheck;

impl Guest for TcpCheck {
    fn check(target: Target, _config: String) -> CheckResult {
        let endpoint = if target.endpoint.is_empty() {
            format!("{}:{}", target.address, target.port)
        } else {
            target.endpoint.clone()
        };
        let deadline_ns = monotonic_clock::now() + u64::from(target.timeout_ms.max(1)) * 1_000_000;
        match connect(&endpoint, deadline_ns) {
            Ok(()) => CheckResult {
                status: CheckStatus::Passing,
                output: format!("TCP connect {endpoint}: Success"),
            },
            Err(e) => CheckResult {
                status: CheckStatus::Critical,
                output: format!("dial tcp {endpoint}: {e}"),
            },
        }
    }
}

/// Splits "host:port" / "[v6]:port".
fn split_endpoint(endpoint: &str) -> Result<(&str, u16), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| "missing port in address".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port \"{port}\""))?;
    Ok((host, port))
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
    let stream = ip_name_lookup::resolve_addresses(network, host).map_err(describe)?;
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => {
                return Ok(SocketAddr::new(IpAddr::from([a, b, c, d]), port))
            }
            Ok(Some(IpAddress::Ipv6(_))) => continue,
            Ok(None) => return Err(format!("lookup {host}: no such host")),
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

fn connect(endpoint: &str, deadline_ns: u64) -> Result<(), String> {
    let (host, port) = split_endpoint(endpoint)?;
    let network = instance_network();
    let addr = resolve(&network, host, port, deadline_ns)?;
    let (family, remote) = wasi_addr(addr);
    let socket = create_tcp_socket(family).map_err(describe)?;
    socket
        .start_connect(&network, remote)
        .map_err(|e| format!("connect: {}", describe(e)))?;
    loop {
        match socket.finish_connect() {
            Ok(_streams) => return Ok(()),
            Err(ErrorCode::WouldBlock) => wait(&socket.subscribe(), deadline_ns)?,
            Err(e) => return Err(format!("connect: {}", describe(e))),
        }
    }
}

/// Socket errors in the words Go's net package uses, which is what Consul
/// users grep their check outputs for.
fn describe(e: ErrorCode) -> String {
    match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::AccessDenied => {
            "permission denied (the node allows only the check's target and its grant)".into()
        }
        ErrorCode::Timeout => "i/o timeout".into(),
        ErrorCode::RemoteUnreachable => "no route to host".into(),
        ErrorCode::ConnectionReset => "connection reset by peer".into(),
        ErrorCode::NameUnresolvable => "no such host".into(),
        other => format!("{other:?}"),
    }
}

export!(TcpCheck);
