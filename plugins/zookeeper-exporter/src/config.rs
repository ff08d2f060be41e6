//! The exporter's `config` table, parsed and checked. Errors name the key
//! (unknown keys) or the field (bad values), since the operator fixes them
//! in a TOML file.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// "HOST:PORT" of each ensemble member, tried in order.
    pub servers: Vec<String>,
    /// The parent of the service znodes, without a trailing slash.
    pub path: String,
    /// Asked of the server at session creation; it may negotiate another.
    pub session_timeout_ms: u32,
    /// Deadline for a connect and for each request's reply.
    pub timeout_ms: u32,
}

const KEYS: &[&str] = &["servers", "path", "session_timeout", "timeout"];

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let value: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(text).map_err(|e| format!("config: not valid JSON: {e}"))?
        };
        let Value::Object(map) = value else {
            return Err("config: expected a table".into());
        };
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "config: unknown key \"{key}\" (expected one of: {})",
                KEYS.join(", ")
            ));
        }

        let servers = match map.get("servers") {
            None => return Err("config: \"servers\" is required (a list of \"HOST:PORT\")".into()),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => check_server(s).map(|()| s.clone()),
                    other => Err(format!(
                        "config: servers: expected \"HOST:PORT\" strings, got {other}"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err("config: servers: expected a non-empty list of \"HOST:PORT\"".into())
            }
        };

        let path = match map.get("path") {
            None => "/services".to_string(),
            Some(Value::String(p)) => {
                check_path(p)?;
                p.clone()
            }
            Some(other) => return Err(format!("config: path: expected a string, got {other}")),
        };

        Ok(Config {
            servers,
            path,
            session_timeout_ms: duration(&map, "session_timeout", "10s")?,
            timeout_ms: duration(&map, "timeout", "2s")?,
        })
    }
}

fn check_server(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("config: servers: \"{s}\": {why}"));
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("expected HOST:PORT");
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return bad("missing host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("invalid port"),
    }
}

/// A ZooKeeper path: absolute, no empty, "." or ".." segments, no trailing
/// slash (the server rejects those with "bad arguments" much later, on
/// every write).
fn check_path(p: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("config: path: \"{p}\": {why}"));
    if !p.starts_with('/') {
        return bad("must start with \"/\"");
    }
    if p == "/" {
        return Ok(());
    }
    if p.ends_with('/') {
        return bad("must not end with \"/\"");
    }
    if p.contains('\0') {
        return bad("must not contain NUL");
    }
    for segment in p[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("empty, \".\" or \"..\" segment");
        }
    }
    Ok(())
}

fn duration(map: &Map<String, Value>, key: &str, default: &str) -> Result<u32, String> {
    let text = match map.get(key) {
        None => default,
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(format!(
                "config: {key}: expected a duration string like \"{default}\", got {other}"
            ))
        }
    };
    match go_duration::parse_ms(text) {
        Ok(0) => Err(format!("config: {key}: must be more than 0")),
        Ok(ms) => Ok(ms),
        Err(e) => Err(format!(
            "config: {key}: \"{text}\" is not a duration ({e:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::parse(r#"{"servers":["zk1:2181","[::1]:2182"]}"#).unwrap();
        assert_eq!(c.servers, vec!["zk1:2181", "[::1]:2182"]);
        assert_eq!(c.path, "/services");
        assert_eq!(c.session_timeout_ms, 10_000);
        assert_eq!(c.timeout_ms, 2_000);
    }

    #[test]
    fn all_keys() {
        let c = Config::parse(
            r#"{"servers":["127.0.0.1:2181"],"path":"/a/b","session_timeout":"30s","timeout":"500ms"}"#,
        )
        .unwrap();
        assert_eq!(c.path, "/a/b");
        assert_eq!(c.session_timeout_ms, 30_000);
        assert_eq!(c.timeout_ms, 500);
        assert_eq!(
            Config::parse(r#"{"servers":["h:1"],"path":"/"}"#)
                .unwrap()
                .path,
            "/"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |s: &str| Config::parse(s).unwrap_err();
        assert!(err(r#"{"servers":["h:1"],"prefix":"/x"}"#).contains("unknown key \"prefix\""));
        assert!(err("{}").contains("\"servers\" is required"));
        assert!(err("").contains("\"servers\" is required"));
        assert!(err(r#"{"servers":[]}"#).contains("servers: expected a non-empty list"));
        assert!(err(r#"{"servers":"h:1"}"#).contains("servers:"));
        assert!(err(r#"{"servers":[1]}"#).contains("servers:"));
        assert!(err(r#"{"servers":["h"]}"#).contains("servers: \"h\""));
        assert!(err(r#"{"servers":["h:0"]}"#).contains("invalid port"));
        assert!(err(r#"{"servers":[":2181"]}"#).contains("missing host"));
        assert!(err(r#"{"servers":["h:1"],"path":"services"}"#).contains("path:"));
        assert!(err(r#"{"servers":["h:1"],"path":"/services/"}"#).contains("path:"));
        assert!(err(r#"{"servers":["h:1"],"path":"/a//b"}"#).contains("path:"));
        assert!(err(r#"{"servers":["h:1"],"path":5}"#).contains("path:"));
        assert!(err(r#"{"servers":["h:1"],"timeout":"2"}"#).contains("timeout:"));
        assert!(err(r#"{"servers":["h:1"],"timeout":"0s"}"#).contains("timeout:"));
        assert!(err(r#"{"servers":["h:1"],"session_timeout":10}"#).contains("session_timeout:"));
        assert!(err("[1]").contains("expected a table"));
        assert!(err("{").contains("not valid JSON"));
    }
}
