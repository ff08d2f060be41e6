//! The plugin's configuration: the `config` table of its TOML block, as
//! JSON text. Parsed by hand from a `serde_json::Value` rather than derived,
//! so that every error names the key it is about (serde's own messages name
//! the expected type but not the field).

use serde_json::{Map, Value};

/// Where the keys go when the config does not say (Registrator's default).
pub const DEFAULT_PREFIX: &str = "/services";
/// How long an entry outlives a node that stopped renewing its lease.
pub const DEFAULT_LEASE_TTL: &str = "15s";
/// Per-request deadline.
pub const DEFAULT_TIMEOUT: &str = "2s";
/// A shorter lease leaves no room to renew it (a third of the TTL, on a
/// one-second tick) before it expires.
const MIN_LEASE_TTL_MS: u32 = 2_000;

const KNOWN_KEYS: &str = "endpoints, prefix, value, lease_ttl, timeout";

/// How a request reaches an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One etcd member's client URL, split the way wasi:http wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As the user wrote it, minus a trailing "/": what errors and logs show.
    pub url: String,
    pub scheme: Scheme,
    /// `HOST:PORT`.
    pub authority: String,
}

/// What a key's value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// `ip:port`, as Registrator writes it.
    Address,
    /// A JSON object describing the instance.
    Json,
}

/// What the plugin reads from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Tried in order; the one that last answered is tried first.
    pub endpoints: Vec<Endpoint>,
    /// Without a trailing "/"; never empty.
    pub prefix: String,
    pub value: ValueFormat,
    /// The TTL asked for when granting the lease, in whole seconds.
    pub lease_ttl_s: i64,
    /// Per HTTP request, in milliseconds.
    pub timeout_ms: u32,
}

impl Config {
    /// Parses the config. Empty text is an empty table (which then lacks
    /// the required `endpoints`).
    pub fn parse(text: &str) -> Result<Config, String> {
        let map = if text.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err("config: must be a table (a JSON object)".to_string()),
                Err(e) => return Err(format!("config: {e}")),
            }
        };
        let mut endpoints = None;
        let mut prefix = None;
        let mut value = None;
        let mut lease_ttl = None;
        let mut timeout = None;
        for (key, v) in &map {
            match key.as_str() {
                "endpoints" => endpoints = Some(parse_endpoints(v)?),
                "prefix" => prefix = Some(parse_prefix(v)?),
                "value" => value = Some(parse_value(v)?),
                "lease_ttl" => lease_ttl = Some(duration_ms("lease_ttl", v)?),
                "timeout" => timeout = Some(duration_ms("timeout", v)?),
                other => {
                    return Err(format!(
                        "config: unknown key \"{other}\" (known keys: {KNOWN_KEYS})"
                    ))
                }
            }
        }
        let endpoints = endpoints.ok_or_else(|| {
            "config.endpoints: required, a list of etcd client URLs such as [\"http://127.0.0.1:2379\"]"
                .to_string()
        })?;
        let lease_ttl_ms = match lease_ttl {
            Some(ms) => ms,
            None => duration_ms("lease_ttl", &Value::from(DEFAULT_LEASE_TTL))?,
        };
        if lease_ttl_ms < MIN_LEASE_TTL_MS {
            return Err(format!(
                "config.lease_ttl: {} is shorter than the minimum of 2s",
                map.get("lease_ttl").unwrap_or(&Value::Null)
            ));
        }
        let timeout_ms = match timeout {
            Some(ms) => ms,
            None => duration_ms("timeout", &Value::from(DEFAULT_TIMEOUT))?,
        };
        if timeout_ms == 0 {
            return Err("config.timeout: must be longer than 0".to_string());
        }
        Ok(Config {
            endpoints,
            prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
            value: value.unwrap_or(ValueFormat::Address),
            // etcd counts TTLs in whole seconds; round up so "2500ms" does
            // not become a shorter lease than asked for.
            lease_ttl_s: i64::from(lease_ttl_ms.div_ceil(1000)),
            timeout_ms,
        })
    }
}

fn parse_endpoints(v: &Value) -> Result<Vec<Endpoint>, String> {
    let list = v.as_array().ok_or_else(|| {
        format!("config.endpoints: {v} is not a list of URLs such as [\"http://127.0.0.1:2379\"]")
    })?;
    if list.is_empty() {
        return Err("config.endpoints: must list at least one etcd client URL".to_string());
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let text = item
                .as_str()
                .ok_or_else(|| format!("config.endpoints[{i}]: {item} is not a string"))?;
            parse_endpoint(text).map_err(|e| format!("config.endpoints[{i}]: \"{text}\" {e}"))
        })
        .collect()
}

/// Accepts `http://HOST:PORT` (or https, which the node's wasi:http
/// speaks too), with at most a trailing "/". The port is required: a
/// forgotten one would silently mean port 80, not etcd's 2379.
fn parse_endpoint(text: &str) -> Result<Endpoint, &'static str> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("is not a URL of the form http://HOST:PORT")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err("must start with http:// or https://"),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("has no host");
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err("must be just http://HOST:PORT, without a path, query or user");
    }
    // The port is after the last ':' that is not inside an IPv6 literal.
    let port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[i + 1..],
        _ => return Err("has no port (etcd's client port is usually 2379)"),
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err("has an invalid port");
    }
    if authority.len() == port.len() + 1 {
        return Err("has no host");
    }
    Ok(Endpoint {
        url: format!("{}://{authority}", scheme_name(scheme)),
        scheme,
        authority: authority.to_string(),
    })
}

fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

fn parse_prefix(v: &Value) -> Result<String, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("config.prefix: {v} is not a string"))?;
    let trimmed = text.trim_end_matches('/');
    // Resync deletes every key under the prefix that it did not write, so
    // an empty prefix would wipe the whole keyspace.
    if trimmed.is_empty() {
        return Err(format!(
            "config.prefix: \"{text}\" would be the whole keyspace; name a directory such as \"/services\""
        ));
    }
    Ok(trimmed.to_string())
}

fn parse_value(v: &Value) -> Result<ValueFormat, String> {
    match v.as_str() {
        Some("address") => Ok(ValueFormat::Address),
        Some("json") => Ok(ValueFormat::Json),
        _ => Err(format!(
            "config.value: {v} is not one of \"address\" (ip:port) or \"json\""
        )),
    }
}

fn duration_ms(field: &str, v: &Value) -> Result<u32, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("config.{field}: {v} is not a duration string such as \"15s\""))?;
    go_duration::parse_ms(text).map_err(|e| match e {
        go_duration::DurationError::TooLong => {
            format!("config.{field}: \"{text}\" is too long")
        }
        _ => format!("config.{field}: \"{text}\" is not a duration such as \"15s\" or \"1m\""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text)
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"endpoints": ["http://127.0.0.1:2379"]}"#).expect("valid");
        assert_eq!(
            c.endpoints,
            vec![Endpoint {
                url: "http://127.0.0.1:2379".into(),
                scheme: Scheme::Http,
                authority: "127.0.0.1:2379".into(),
            }]
        );
        assert_eq!(c.prefix, "/services");
        assert_eq!(c.value, ValueFormat::Address);
        assert_eq!(c.lease_ttl_s, 15);
        assert_eq!(c.timeout_ms, 2_000);
    }

    #[test]
    fn everything_set() {
        let c = parse(
            r#"{"endpoints": ["http://a:1/", "https://[::1]:2379"], "prefix": "/reg/",
                "value": "json", "lease_ttl": "2500ms", "timeout": "500ms"}"#,
        )
        .expect("valid");
        assert_eq!(c.endpoints[0].url, "http://a:1");
        assert_eq!(c.endpoints[0].authority, "a:1");
        assert_eq!(c.endpoints[1].scheme, Scheme::Https);
        assert_eq!(c.endpoints[1].authority, "[::1]:2379");
        assert_eq!(c.prefix, "/reg");
        assert_eq!(c.value, ValueFormat::Json);
        assert_eq!(c.lease_ttl_s, 3);
        assert_eq!(c.timeout_ms, 500);
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should be rejected")
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(r#"{"endpoints": ["http://a:1"], "ttl": "5s"}"#);
        assert!(e.starts_with("config: unknown key \"ttl\""), "{e}");
    }

    #[test]
    fn endpoints_are_required_and_checked() {
        assert!(err("").starts_with("config.endpoints: required"));
        assert!(err(r#"{"endpoints": []}"#).starts_with("config.endpoints: must list"));
        assert!(err(r#"{"endpoints": "http://a:1"}"#).starts_with("config.endpoints: "));
        let e = err(r#"{"endpoints": ["http://a:1", "a:2379"]}"#);
        assert!(e.starts_with("config.endpoints[1]: \"a:2379\""), "{e}");
        let e = err(r#"{"endpoints": ["http://a"]}"#);
        assert!(e.contains("has no port"), "{e}");
        let e = err(r#"{"endpoints": ["http://[::1]"]}"#);
        assert!(e.contains("has no port"), "{e}");
        let e = err(r#"{"endpoints": ["http://a:1/v3"]}"#);
        assert!(e.contains("without a path"), "{e}");
        let e = err(r#"{"endpoints": ["unix://a:1"]}"#);
        assert!(e.contains("http://"), "{e}");
        let e = err(r#"{"endpoints": ["http://a:99999"]}"#);
        assert!(e.contains("invalid port"), "{e}");
        let e = err(r#"{"endpoints": ["http://:2379"]}"#);
        assert!(e.contains("no host"), "{e}");
        let e = err(r#"{"endpoints": [5]}"#);
        assert!(
            e.starts_with("config.endpoints[0]: 5 is not a string"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = r#""endpoints": ["http://a:1"]"#;
        let e = err(&format!(r#"{{{base}, "prefix": "/"}}"#));
        assert!(e.starts_with("config.prefix: "), "{e}");
        let e = err(&format!(r#"{{{base}, "prefix": 1}}"#));
        assert!(e.starts_with("config.prefix: "), "{e}");
        let e = err(&format!(r#"{{{base}, "value": "ip"}}"#));
        assert!(e.starts_with("config.value: \"ip\""), "{e}");
        let e = err(&format!(r#"{{{base}, "lease_ttl": "1s"}}"#));
        assert!(e.starts_with("config.lease_ttl: \"1s\" is shorter"), "{e}");
        let e = err(&format!(r#"{{{base}, "lease_ttl": "soon"}}"#));
        assert!(e.starts_with("config.lease_ttl: \"soon\""), "{e}");
        let e = err(&format!(r#"{{{base}, "timeout": 2}}"#));
        assert!(e.starts_with("config.timeout: 2 is not"), "{e}");
        let e = err(&format!(r#"{{{base}, "timeout": "0"}}"#));
        assert!(e.starts_with("config.timeout: must be longer"), "{e}");
        assert!(err("[1]").starts_with("config: must be a table"));
        assert!(err("{").starts_with("config: "));
    }
}
