//! `builtin:http-check`: Consul's HTTP check as a component. The node makes
//! the request through wasi:http (so TLS and connection handling are the
//! host's), this plugin decides what the answer means: 2xx passing, 429
//! warning, anything else (or no answer) critical.
//!
//! Config (JSON, built by the node from the Consul check definition):
//! `{"method": "GET", "header": {"Name": ["v"]}, "body": "", "tls_skip_verify": false}`.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "health-check",
    generate_all,
});

use muster::plugin::types::CheckStatus;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};

/// How much of the response body becomes the check's output, as Consul.
const OUTPUT_LIMIT: usize = 4096;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Settings {
    method: String,
    header: std::collections::BTreeMap<String, Vec<String>>,
    body: String,
}

struct HttpCheck;

impl Guest for HttpCheck {
    fn check(target: Target, config: String) -> CheckResult {
        let config: Settings = match serde_json::from_str(&config) {
            Ok(c) => c,
            Err(e) => return critical(format!("invalid http-check config: {e}")),
        };
        let method = if config.method.is_empty() {
            "GET".to_string()
        } else {
            config.method.to_ascii_uppercase()
        };
        let url = if target.endpoint.is_empty() {
            format!("http://{}:{}/", target.address, target.port)
        } else {
            target.endpoint.clone()
        };
        match request(&method, &url, &config, target.timeout_ms) {
            Ok((status, body)) => {
                let verdict = match status {
                    200..=299 => CheckStatus::Passing,
                    429 => CheckStatus::Warning,
                    _ => CheckStatus::Critical,
                };
                CheckResult {
                    status: verdict,
                    output: format!(
                        "HTTP {method} {url}: {status} {} Output: {body}",
                        reason(status)
                    ),
                }
            }
            Err(e) => critical(format!("HTTP {method} {url}: {e}")),
        }
    }
}

fn critical(output: String) -> CheckResult {
    CheckResult {
        status: CheckStatus::Critical,
        output,
    }
}

/// The parts of a URL wasi:http wants separately.
struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: &'a str,
}

fn split_url(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("\"{url}\" is not an absolute URL"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme \"{other}\"")),
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok(Url {
        scheme,
        authority,
        path: if path.is_empty() { "/" } else { path },
    })
}

fn wasi_method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        "TRACE" => Method::Trace,
        other => Method::Other(other.to_string()),
    }
}

/// Sends the request; returns the status and the first 4 KiB of the body.
fn request(
    method: &str,
    url: &str,
    config: &Settings,
    timeout_ms: u32,
) -> Result<(u16, String), String> {
    let parts = split_url(url)?;
    let headers = Fields::new();
    let mut has_agent = false;
    for (name, values) in &config.header {
        has_agent |= name.eq_ignore_ascii_case("user-agent");
        for v in values {
            headers
                .append(name, v.as_bytes())
                .map_err(|e| format!("header {name}: {e:?}"))?;
        }
    }
    if !has_agent {
        // What Consul sends, so servers that special-case it keep working.
        let _ = headers.append("User-Agent", b"Consul Health Check");
    }
    let _ = headers.append("Accept", b"text/plain, text/*, */*");
    let req = OutgoingRequest::new(headers);
    req.set_method(&wasi_method(method))
        .map_err(|()| format!("invalid method {method}"))?;
    req.set_scheme(Some(&parts.scheme))
        .map_err(|()| "invalid scheme".to_string())?;
    req.set_authority(Some(parts.authority))
        .map_err(|()| format!("invalid host \"{}\"", parts.authority))?;
    req.set_path_with_query(Some(parts.path))
        .map_err(|()| format!("invalid path \"{}\"", parts.path))?;
    let options = RequestOptions::new();
    let ns = u64::from(timeout_ms.max(1)) * 1_000_000;
    let _ = options.set_connect_timeout(Some(ns));
    let _ = options.set_first_byte_timeout(Some(ns));
    let _ = options.set_between_bytes_timeout(Some(ns));
    let body = req.body().map_err(|()| "request body taken".to_string())?;
    let pending = outgoing_handler::handle(req, Some(options)).map_err(describe)?;
    if !config.body.is_empty() {
        let out = body
            .write()
            .map_err(|()| "request body stream taken".to_string())?;
        for chunk in config.body.as_bytes().chunks(4096) {
            out.blocking_write_and_flush(chunk)
                .map_err(|e| format!("sending body: {e:?}"))?;
        }
        drop(out);
    }
    OutgoingBody::finish(body, None).map_err(describe)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(describe(e)),
        Some(Err(())) | None => return Err("no response".to_string()),
    };
    let status = response.status();
    Ok((status, read_body(response)))
}

fn read_body(response: IncomingResponse) -> String {
    let Ok(body) = response.consume() else {
        return String::new();
    };
    let Ok(stream) = body.stream() else {
        return String::new();
    };
    let mut buf = Vec::new();
    while buf.len() < OUTPUT_LIMIT {
        match stream.blocking_read((OUTPUT_LIMIT - buf.len()) as u64) {
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
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
            "the node refused the connection: the address is not the check's target or in its grant"
                .into()
        }
        ErrorCode::TlsCertificateError => "TLS certificate not trusted".into(),
        ErrorCode::TlsProtocolError => "TLS handshake failed".into(),
        other => format!("{other:?}"),
    }
}

/// The reason phrase Go's net/http prints after the code.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

export!(HttpCheck);
