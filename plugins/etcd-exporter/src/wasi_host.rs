//! The [`Host`] of the component: wasi:http for requests, wasi:clocks for
//! time, the node's `log` import for logging. Compiles on every target (the
//! bindings stub the imports out natively) but only runs in wasm.

use crate::config::{Endpoint, Scheme};
use crate::exporter::{Host, Level, Response};
use crate::muster::plugin::log;
use crate::wasi::clocks::monotonic_clock;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme,
};
use crate::wasi::io::streams::StreamError;

/// Far more than a page of 1000 keys needs; a bound so that a confused
/// server cannot make the exporter run out of memory.
const MAX_RESPONSE: usize = 32 * 1024 * 1024;

pub struct WasiHost;

impl Host for WasiHost {
    fn post(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
        timeout_ms: u32,
    ) -> Result<Response, String> {
        post(endpoint, path, body, timeout_ms)
    }

    fn now_ms(&mut self) -> u64 {
        monotonic_clock::now() / 1_000_000
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }
}

fn post(endpoint: &Endpoint, path: &str, body: &str, timeout_ms: u32) -> Result<Response, String> {
    let headers = Fields::new();
    headers
        .append("content-type", b"application/json")
        .map_err(|e| format!("content-type header: {e:?}"))?;
    let req = OutgoingRequest::new(headers);
    req.set_method(&Method::Post)
        .map_err(|()| "invalid method".to_string())?;
    let scheme = match endpoint.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    req.set_scheme(Some(&scheme))
        .map_err(|()| "invalid scheme".to_string())?;
    req.set_authority(Some(&endpoint.authority))
        .map_err(|()| format!("invalid host \"{}\"", endpoint.authority))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| format!("invalid path \"{path}\""))?;
    // One budget for each phase: an unreachable member costs at most one
    // timeout before the next endpoint is tried.
    let options = RequestOptions::new();
    let ns = u64::from(timeout_ms.max(1)) * 1_000_000;
    let _ = options.set_connect_timeout(Some(ns));
    let _ = options.set_first_byte_timeout(Some(ns));
    let _ = options.set_between_bytes_timeout(Some(ns));
    let out_body = req.body().map_err(|()| "request body taken".to_string())?;
    let pending = outgoing_handler::handle(req, Some(options)).map_err(describe)?;
    // When the connection fails, the body stream just closes; the reason
    // ("connection refused") is in the response future. So a failed write
    // is reported only if the response has nothing better to say.
    let sent = send_body(&out_body, body);
    let finished = OutgoingBody::finish(out_body, None).map_err(describe);
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(describe(e)),
        Some(Err(())) | None => return Err("no response".to_string()),
    };
    sent?;
    finished?;
    let status = response.status();
    let body = read_body(response)?;
    Ok(Response { status, body })
}

fn send_body(out_body: &OutgoingBody, body: &str) -> Result<(), String> {
    let out = out_body
        .write()
        .map_err(|()| "request body stream taken".to_string())?;
    // blocking-write-and-flush takes at most 4096 bytes a call.
    for chunk in body.as_bytes().chunks(4096) {
        out.blocking_write_and_flush(chunk)
            .map_err(|e| format!("sending the request: {}", stream_error(e)))?;
    }
    Ok(())
}

fn read_body(response: IncomingResponse) -> Result<String, String> {
    let body = response
        .consume()
        .map_err(|()| "response body taken".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "response body stream taken".to_string())?;
    let mut buf = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the response: {}", stream_error(e))),
        }
        if buf.len() > MAX_RESPONSE {
            return Err(format!(
                "response larger than {} MiB",
                MAX_RESPONSE / (1024 * 1024)
            ));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "connection closed".to_string(),
        StreamError::LastOperationFailed(err) => {
            match crate::wasi::http::types::http_error_code(&err) {
                Some(code) => describe(code),
                None => err.to_debug_string(),
            }
        }
    }
}

/// wasi:http's error codes in the words an operator searches for.
fn describe(e: ErrorCode) -> String {
    match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "timed out connecting".into(),
        ErrorCode::ConnectionReadTimeout => "timed out waiting for the response".into(),
        ErrorCode::ConnectionTerminated => "connection closed by the server".into(),
        ErrorCode::DnsTimeout => "DNS lookup timed out".into(),
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => "host not found".into(),
        ErrorCode::HttpRequestDenied => {
            "the node refused the connection: the address is not in the exporter's grant.connect"
                .into()
        }
        ErrorCode::TlsCertificateError => "TLS certificate not trusted".into(),
        ErrorCode::TlsProtocolError => "TLS handshake failed".into(),
        other => format!("{other:?}"),
    }
}
