//! What a plugin's Store holds: its WASI context (no files, no env, network
//! only through the allow list), the wasi:http egress hook, its memory
//! limits, and what the node tells the operator afterwards (connections it
//! refused, what the plugin wrote to stderr).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::grant::AllowList;

/// Longest log line a plugin may write, as the WIT promises.
const LOG_LINE_LIMIT: usize = 4096;
/// Log lines one call may write before the rest are dropped (and counted).
const LOG_LINES_PER_CALL: u32 = 100;
/// How much of a plugin's stderr (where a Rust panic message lands) is kept.
pub const STDERR_LIMIT: usize = 2048;

/// Addresses a call tried to reach and was refused, for the check output.
pub type Refused = Arc<Mutex<Vec<String>>>;

fn note_refusal(refused: &Refused, what: String) {
    if let Ok(mut r) = refused.lock() {
        if !r.contains(&what) && r.len() < 8 {
            r.push(what);
        }
    }
}

/// The data of one Store: one plugin call.
pub struct HostState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    egress: Egress,
    pub limits: StoreLimits,
    log_lines: u32,
    pub refused: Refused,
    pub stderr: MemoryOutputPipe,
    /// What a source's `docker` import answers from (sources only).
    pub docker: Option<Arc<super::source::DockerView>>,
}

impl HostState {
    /// A sandbox for one call of `plugin`: TCP only to `allow`, name
    /// lookups allowed (they reach the host's resolver, not the network
    /// the plugin names), nothing else.
    pub fn new(
        plugin: Arc<str>,
        allow: Arc<AllowList>,
        memory_bytes: usize,
        tls_skip_verify: bool,
    ) -> HostState {
        let refused: Refused = Arc::default();
        let stderr = MemoryOutputPipe::new(STDERR_LIMIT);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(true)
            .stderr(stderr.clone());
        let (check_allow, check_refused) = (allow.clone(), refused.clone());
        wasi.socket_addr_check(move |addr, use_| {
            let ok = match use_ {
                SocketAddrUse::TcpConnect => check_allow.permits(addr),
                // connect() binds an ephemeral local port first.
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            if !ok {
                note_refusal(&check_refused, addr.to_string());
            }
            Box::pin(async move { ok })
        });
        HostState::build(
            plugin,
            wasi,
            allow,
            refused,
            stderr,
            memory_bytes,
            tls_skip_verify,
        )
    }

    /// A sandbox for one call of a source: the `read` directories
    /// preopened read-only under their own paths, no network at all, and
    /// the node's view of Docker when granted.
    pub fn for_source(
        plugin: Arc<str>,
        memory_bytes: usize,
        read: &[std::path::PathBuf],
        docker: Option<Arc<super::source::DockerView>>,
    ) -> anyhow::Result<HostState> {
        let stderr = MemoryOutputPipe::new(STDERR_LIMIT);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stderr(stderr.clone());
        for dir in read {
            let guest = dir.to_string_lossy();
            wasi.preopened_dir(dir, guest.as_ref(), wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("grant.read {}: {e}", dir.display()))?;
        }
        let mut state = HostState::build(
            plugin,
            wasi,
            Arc::new(AllowList::default()),
            Refused::default(),
            stderr,
            memory_bytes,
            false,
        );
        state.docker = docker;
        Ok(state)
    }

    fn build(
        plugin: Arc<str>,
        mut wasi: WasiCtxBuilder,
        allow: Arc<AllowList>,
        refused: Refused,
        stderr: MemoryOutputPipe,
        memory_bytes: usize,
        tls_skip_verify: bool,
    ) -> HostState {
        HostState {
            plugin,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            egress: Egress {
                allow,
                refused: refused.clone(),
                tls_skip_verify,
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            log_lines: 0,
            refused,
            stderr,
            docker: None,
        }
    }

    /// Starts a new call on a long-lived Store: the per-call log budget
    /// starts again.
    pub fn begin_call(&mut self) {
        self.log_lines = 0;
    }

    /// The plugin's name, for logs.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Writes one plugin log line into the node's log, within the limits.
    pub fn log(&mut self, level: tracing::Level, message: &str) {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.plugin, "plugin logs too much; dropping the rest of this call's lines");
            }
            return;
        }
        let mut cut = message.len().min(LOG_LINE_LIMIT);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let line = &message[..cut];
        let plugin = &*self.plugin;
        match level {
            tracing::Level::ERROR => tracing::error!(plugin, "{line}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{line}"),
            tracing::Level::INFO => tracing::info!(plugin, "{line}"),
            _ => tracing::debug!(plugin, "{line}"),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

/// The wasi:http egress hook: the node makes the request, but only to an
/// address the plugin may reach.
struct Egress {
    allow: Arc<AllowList>,
    refused: Refused,
    /// The check asked for `TLSSkipVerify`.
    tls_skip_verify: bool,
}

type IoFuture = Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (http::Response<wasmtime_wasi_http::WasiBody>, IoFuture),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let allow = self.allow.clone();
        let refused = self.refused.clone();
        let skip_verify = self.tls_skip_verify;
        Box::new(async move {
            use http_body_util::BodyExt;
            use wasmtime_wasi_http::Error;
            let uri = request.uri();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = uri
                .host()
                .ok_or(Error::HttpRequestUriInvalid)?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|_| Error::DestinationNotFound)?
                    .collect(),
            };
            if addrs.is_empty() {
                return Err(Error::DestinationNotFound);
            }
            if !addrs.iter().all(|a| allow.permits(*a)) {
                note_refusal(&refused, format!("{host}:{port}"));
                return Err(Error::HttpRequestDenied);
            }
            if https && skip_verify {
                let timeout = options
                    .and_then(|o| o.connect_timeout)
                    .unwrap_or(std::time::Duration::from_secs(10));
                return super::insecure_tls::send(request, &host, port, timeout).await;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}
