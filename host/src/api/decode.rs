//! Request bodies, read as Consul reads them: field names match without
//! regard to case or underscores (`Name`, `name`, `enable_tag_override`),
//! except inside user maps (`Meta`, `NodeMeta`, `TaggedAddresses`, ...),
//! whose keys are the user's data. Errors name the field.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::ApiError;

/// Normalized names of fields whose values are user maps.
const USER_MAPS: &[&str] = &[
    "meta",
    "nodemeta",
    "servicemeta",
    "taggedaddresses",
    "header",
    "definition",
    "config",
];

fn normalize_key(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn normalize(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                // Go clients send unset fields as null, which Consul reads
                // as "leave the default": do the same.
                if v.is_null() {
                    continue;
                }
                let key = normalize_key(&k);
                let v = if USER_MAPS.contains(&key.as_str()) {
                    v
                } else {
                    normalize(v)
                };
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Decodes a JSON body into `T`, whose serde names are the normalized
/// (lower-case, no underscore) forms. An empty body decodes as `{}` when
/// `T` allows it.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let raw: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?
    };
    let normalized = normalize(raw);
    serde_path_to_error::deserialize(normalized).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad_request(format!("Request decode failed: {}", e.inner()))
        } else {
            ApiError::bad_request(format!(
                "Request decode failed: field {path}: {}",
                e.inner()
            ))
        }
    })
}

/// Parses Go's duration syntax ("10s", "1m30s", "250ms", "1.5h"), which
/// is what Consul accepts everywhere a duration is written.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration \"{s}\""))?;
        if num_end == 0 {
            return Err(format!("invalid duration \"{s}\""));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration \"{s}\""))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e10 {
        return Err(format!("duration \"{s}\" is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration written as a Go string or as integer nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s.is_empty() => Ok(GoDuration(Duration::ZERO)),
            Value::String(s) => parse_duration(&s)
                .map(GoDuration)
                .map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .map(|ns| GoDuration(Duration::from_nanos(ns)))
                .ok_or_else(|| {
                    serde::de::Error::custom(
                        "duration must be a non-negative number of nanoseconds",
                    )
                }),
            Value::Null => Ok(GoDuration(Duration::ZERO)),
            other => Err(serde::de::Error::custom(format!(
                "expected a duration like \"10s\", got {other}"
            ))),
        }
    }
}

/// Renders a duration the way Go prints it ("15s", "1m30s"), for echoing
/// TTLs back to clients.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, rem_ms) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if rem_ms > 0 {
        out.push_str(&format!("{}s", s as f64 + rem_ms as f64 / 1000.0));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Svc {
        name: String,
        #[serde(rename = "enabletagoverride", default)]
        eto: bool,
        #[serde(default)]
        meta: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn field_names_match_any_case_but_meta_keys_are_kept() {
        let s: Svc =
            body(br#"{"NAME":"web","enable_tag_override":true,"Meta":{"Env":"x"}}"#).unwrap();
        assert_eq!(s.name, "web");
        assert!(s.eto);
        assert_eq!(s.meta.get("Env").map(String::as_str), Some("x"));
    }

    #[test]
    fn nulls_mean_defaults_as_for_go_clients() {
        let s: Svc =
            body(br#"{"Name":"web","Port":null,"Meta":null,"EnableTagOverride":null}"#).unwrap();
        assert_eq!(
            (s.name.as_str(), s.port, s.eto, s.meta.len()),
            ("web", 0, false, 0)
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = body::<Svc>(br#"{"Name":"web","Port":"eighty"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("port"), "{}", e.message);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
    }
}
