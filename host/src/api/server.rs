//! The HTTP listener: one hyper HTTP/1.1 connection task per client.
//!
//! A hand-rolled accept loop rather than `axum::serve`, so that the
//! per-connection state stays minimal (thousands of parked blocking queries
//! are the normal load of a registry), accept errors such as running out of
//! file descriptors back off instead of spinning, and shutdown gives open
//! requests a moment to finish without waiting out 10-minute blocking waits.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long open connections get to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn run(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|r: hyper::Request<Incoming>| r.map(axum::body::Body::new)),
        );
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(closing);
        });
    }
    drop(closing_rx);
    let _ = closing_tx.send(true);
    // Every connection task holds a receiver; wait until they are gone.
    let _ = tokio::time::timeout(DRAIN, closing_tx.closed()).await;
}
