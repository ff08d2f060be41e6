//! DNS on a client agent: queries are relayed to a server's DNS listener
//! (a client keeps no catalog of its own to answer from), over UDP and TCP,
//! trying the next server when one does not answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::Cluster;

/// How long a server may take to answer one relayed query.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers' DNS addresses, leader first.
fn upstreams(cluster: &Cluster) -> Vec<SocketAddr> {
    let leader = cluster.leader_addr();
    let mut servers = cluster.servers();
    servers.sort_by_key(|s| Some(&s.rpc) != leader.as_ref());
    servers.iter().filter_map(|s| s.dns.parse().ok()).collect()
}

/// Binds `addr` (UDP and TCP) and relays until the process ends.
pub async fn start(addr: SocketAddr, cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let udp = Arc::new(
        UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding DNS (udp) on {addr}"))?,
    );
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding DNS (tcp) on {addr}"))?;
    let c = cluster.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            let udp = udp.clone();
            let c = c.clone();
            tokio::spawn(async move {
                for up in upstreams(&c) {
                    if let Ok(answer) = relay_udp(&query, up).await {
                        let _ = udp.send_to(&answer, from).await;
                        return;
                    }
                }
                tracing::debug!(%from, "no server answered a relayed DNS query");
            });
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = tcp.accept().await else {
                continue;
            };
            let c = cluster.clone();
            tokio::spawn(async move {
                for up in upstreams(&c) {
                    if let Ok(Ok(mut upstream)) =
                        tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(up)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

async fn relay_udp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(ANSWER_TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    buf.truncate(n);
    Ok(buf)
}
