//! Service definition files: Consul's service definition shape (snake_case
//! keys, with the CamelCase aliases of Consul's HTTP API) in TOML or JSON,
//! parsed into plain Rust values.
//!
//! A file holds `service` and/or `services`, each one service table or a
//! list of them (Consul writes `service` for one, `services` for several,
//! but takes either). Every check on a value is done while deserializing it, in a
//! visitor, so that the parser still knows where it is: the error then
//! carries the line (a TOML span, a JSON position) and, through
//! `serde_path_to_error`, the field path. See [`parse`].

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};

use crate::duration;

/// The syntax of a definition file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// The format of a file in the definitions directory, or `None` when the
    /// file is not a definition: another extension, or a hidden name (editors
    /// write their temporary and swap files as `.name.toml.swp`, `.#name`...).
    pub fn of_file_name(name: &str) -> Option<Format> {
        if name.starts_with('.') {
            None
        } else if name.ends_with(".toml") {
            Some(Format::Toml)
        } else if name.ends_with(".json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

/// A service to register, as a definition file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique on the node; the `name` when the file gives none.
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// Empty means "the node's address".
    pub address: String,
    pub port: u16,
    /// Sorted by key; keys are unique.
    pub meta: Vec<(String, String)>,
    /// `check` first, then `checks` in order.
    pub checks: Vec<Check>,
}

/// How a service is checked, in the terms of the WIT `check-definition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// "http", "tcp", "ttl", or the name of a check plugin (`wasm = "..."`).
    pub kind: String,
    /// The URL for "http", host:port for "tcp", empty otherwise.
    pub endpoint: String,
    pub interval_ms: u32,
    /// 0: the node's default.
    pub timeout_ms: u32,
    /// Only for "ttl".
    pub ttl_ms: u32,
    /// 0: never deregister.
    pub deregister_critical_after_ms: u32,
    /// None: critical until the first run.
    pub initial_status: Option<Status>,
}

/// A check's status before its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

/// Parses the text of one definition file.
///
/// `origin` (the file's path) only goes into the error, which reads
/// `<origin>: line <n>: <field path>: <what is wrong>`, e.g.
///
/// ```text
/// /etc/muster/services.d/web.toml: line 4: service[0].port: invalid value: integer `70000`, expected u16
/// ```
///
/// The line is left out when the parser does not know it, the path when
/// the error is not about a field (a syntax error). A file of zero bytes is
/// an error: that is what a file looks like while an editor or `>`
/// rewrites it, and its services must not flap away meanwhile (delete the
/// file to remove them). A file with only whitespace or comments has no
/// services.
pub fn parse(origin: &str, format: Format, text: &str) -> Result<Vec<Service>, String> {
    // Neither parser takes a byte-order mark, which some editors write.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.is_empty() {
        return Err(format!(
            "{origin}: the file is empty (still being written?); its services stay until it has content or is deleted"
        ));
    }
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed = match format {
        Format::Toml => parse_toml(text),
        Format::Json => parse_json(text),
    };
    parsed.map_err(|e| format!("{origin}: {e}"))
}

fn parse_toml(text: &str) -> Result<Vec<Service>, String> {
    // Syntax errors come from the first step, before there is any path.
    let document = toml::Deserializer::parse(text)
        .map_err(|e| located(line_at_span(text, e.span()), "", e.message()))?;
    match serde_path_to_error::deserialize::<_, File>(document) {
        Ok(File(services)) => Ok(services),
        Err(e) => {
            let path = field_path(e.path());
            let inner = e.inner();
            Err(located(
                line_at_span(text, inner.span()),
                &path,
                inner.message(),
            ))
        }
    }
}

fn parse_json(text: &str) -> Result<Vec<Service>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let File(services) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = field_path(e.path());
        let inner = e.inner();
        located(json_line(text, inner), &path, &json_message(inner))
    })?;
    // Anything after the top-level object is an error, as serde_json's own
    // `from_str` has it.
    de.end()
        .map_err(|e| located(json_line(text, &e), "", &json_message(&e)))?;
    Ok(services)
}

/// Renders a field path as `service[0].checks[1].interval`.
///
/// Unlike `Path`'s own Display, which writes "." for the document and "?"
/// for a place it could not name (a JSON syntax error between two keys),
/// this leaves both out: the line says where.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                // A key that would read as more than one segment, or as
                // none, is quoted as TOML would: meta."a.b".
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Puts an error's line and field path in front of its message.
fn located(line: Option<usize>, path: &str, message: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// The 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line where a TOML error's span starts.
fn line_at_span(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    span.map(|span| line_at(text, span.start))
}

/// serde_json's message without the " at line L column C" it appends.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_string(),
        None => full,
    }
}

/// The line to report for a JSON error.
///
/// serde_json reports an error that is found only at the end of an object
/// (a missing `name`, a check without a kind, a duplicate service ID) at
/// the object's closing brace, which can be many lines below the object's
/// start. A reader looks for the object where it opens, so such an error is
/// reported at the line of the matching opening brace. Syntax errors are
/// left alone: there the brace itself may be what is wrong.
fn json_line(text: &str, e: &serde_json::Error) -> Option<usize> {
    if e.line() == 0 {
        return None;
    }
    if e.classify() == serde_json::error::Category::Data {
        if let Some(offset) = json_offset(text, e.line(), e.column()) {
            if text.as_bytes().get(offset) == Some(&b'}') {
                if let Some(open) = json_opening_brace(text, offset) {
                    return Some(line_at(text, open));
                }
            }
        }
    }
    Some(e.line())
}

/// The byte offset of serde_json's (line, column): the column counts bytes
/// from 1, and points at the last byte the parser consumed.
fn json_offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let line_start = if line == 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    (line_start + column).checked_sub(1)
}

/// The offset of the `{` that the `}` at `close` ends, skipping strings.
fn json_opening_brace(text: &str, close: usize) -> Option<usize> {
    let mut open = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in text.as_bytes().get(..close)?.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => open.push(i),
            b'}' | b']' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
        .filter(|&i| text.as_bytes().get(i) == Some(&b'{'))
}

// ---------------------------------------------------------------------------
// The document: `service` and `services`.

/// A whole file: its services in order.
struct File(Vec<Service>);

impl<'de> Deserialize<'de> for File {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FileVisitor)
    }
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = File;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table with `service` or `services`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<File, A::Error> {
        let mut services = Vec::new();
        // Both keys may appear; each adds to the same list so that a
        // duplicate ID is caught across them too.
        while map.next_key::<TopKey>()?.is_some() {
            map.next_value_seed(ServiceList { out: &mut services })?;
        }
        Ok(File(services))
    }
}

/// A top-level key: `service` or `services`, nothing else. Checked while
/// the key is read, so that the error points at the key's line.
struct TopKey;

const TOP_KEYS: &[&str] = &["service", "services"];

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(TopKeyVisitor)
    }
}

struct TopKeyVisitor;

impl<'de> Visitor<'de> for TopKeyVisitor {
    type Value = TopKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`service` or `services`")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<TopKey, E> {
        if TOP_KEYS.contains(&key) {
            Ok(TopKey)
        } else {
            Err(E::unknown_field(key, TOP_KEYS))
        }
    }
}

/// The value of `service`/`services`: one service table or a list of them,
/// appended to `out`.
struct ServiceList<'a> {
    out: &'a mut Vec<Service>,
}

impl<'de> DeserializeSeed<'de> for ServiceList<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ServiceList<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a service table or a list of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ServiceSeed { out: self.out }.deserialize(MapAccessDeserializer::new(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ServiceSeed {
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One service table, appended to `out` unless its ID is already there.
struct ServiceSeed<'a> {
    out: &'a mut Vec<Service>,
}

impl<'de> DeserializeSeed<'de> for ServiceSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ServiceSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a service table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let map = Aliased {
            map,
            aliases: SERVICE_ALIASES,
        };
        let service = RawService::deserialize(MapAccessDeserializer::new(map))?.into_service();
        // Raised here, inside the table, so that the error has its line.
        if self.out.iter().any(|s| s.id == service.id) {
            return Err(de::Error::custom(format!(
                "service id {:?} is defined twice in this file",
                service.id
            )));
        }
        self.out.push(service);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Services and checks as written.

/// The CamelCase keys of Consul's HTTP API, accepted for the snake_case
/// keys of its definition files.
///
/// They are translated as the key is read rather than declared as serde
/// aliases: serde lists every alias in an "unknown field" error, which
/// would double the list of keys a reader is offered.
const SERVICE_ALIASES: &[(&str, &str)] = &[
    ("Name", "name"),
    ("ID", "id"),
    ("Tags", "tags"),
    ("Address", "address"),
    ("Port", "port"),
    ("Meta", "meta"),
    ("Check", "check"),
    ("Checks", "checks"),
];

/// See [`SERVICE_ALIASES`]. Consul's API calls a check's ID `CheckID`
/// (`check_id` in its files).
const CHECK_ALIASES: &[(&str, &str)] = &[
    ("ID", "id"),
    ("CheckID", "id"),
    ("check_id", "id"),
    ("Name", "name"),
    ("HTTP", "http"),
    ("TCP", "tcp"),
    ("TTL", "ttl"),
    ("Interval", "interval"),
    ("Timeout", "timeout"),
    (
        "DeregisterCriticalServiceAfter",
        "deregister_critical_service_after",
    ),
    ("Status", "status"),
];

/// A table whose keys are translated through `aliases` before the derived
/// `Deserialize` of a struct sees them. A key and its alias both present
/// are then a "duplicate field", as with serde's own aliases.
struct Aliased<A> {
    map: A,
    aliases: &'static [(&'static str, &'static str)],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Aliased<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.map.next_key_seed(AliasedKey {
            seed,
            aliases: self.aliases,
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// One key of an [`Aliased`] table.
struct AliasedKey<K> {
    seed: K,
    aliases: &'static [(&'static str, &'static str)],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for AliasedKey<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K::Value, D::Error> {
        let key = String::deserialize(deserializer)?;
        let key = match self.aliases.iter().find(|(alias, _)| *alias == key) {
            Some((_, field)) => (*field).to_string(),
            None => key,
        };
        self.seed.deserialize(key.into_deserializer())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: NonEmpty,
    #[serde(default)]
    id: Option<NonEmpty>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Meta,
    #[serde(default)]
    check: Option<Check>,
    #[serde(default)]
    checks: Vec<Check>,
}

impl RawService {
    fn into_service(self) -> Service {
        let name = self.name.0;
        Service {
            id: self.id.map_or_else(|| name.clone(), |id| id.0),
            name,
            tags: self.tags,
            address: self.address,
            port: self.port,
            meta: self.meta.0,
            checks: self.check.into_iter().chain(self.checks).collect(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    // Checked to be strings, then dropped: the WIT check-definition has
    // neither, the node names checks itself.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    http: Option<HttpUrl>,
    #[serde(default)]
    tcp: Option<TcpAddress>,
    #[serde(default)]
    ttl: Option<NonZeroMs>,
    #[serde(default)]
    wasm: Option<PluginName>,
    #[serde(default)]
    interval: Option<NonZeroMs>,
    #[serde(default)]
    timeout: Option<Ms>,
    #[serde(default)]
    deregister_critical_service_after: Option<Ms>,
    #[serde(default)]
    status: Option<Status>,
}

impl RawCheck {
    /// The rules that span fields: exactly one kind, and an interval for
    /// every kind that runs on a schedule.
    fn into_check(self) -> Result<Check, String> {
        let given: Vec<&str> = [
            ("http", self.http.is_some()),
            ("tcp", self.tcp.is_some()),
            ("ttl", self.ttl.is_some()),
            ("wasm", self.wasm.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, present)| present.then_some(kind))
        .collect();
        if given.len() > 1 {
            return Err(format!(
                "a check has exactly one of `http`, `tcp`, `ttl` or `wasm`, not `{}`",
                given.join("` and `")
            ));
        }
        let interval_ms = self.interval.map_or(0, |i| i.0);
        let (kind, endpoint, ttl_ms) = if let Some(HttpUrl(url)) = self.http {
            ("http".to_string(), url, 0)
        } else if let Some(TcpAddress(address)) = self.tcp {
            ("tcp".to_string(), address, 0)
        } else if let Some(NonZeroMs(ttl)) = self.ttl {
            ("ttl".to_string(), String::new(), ttl)
        } else if let Some(PluginName(plugin)) = self.wasm {
            (plugin, String::new(), 0)
        } else {
            return Err("a check needs one of `http`, `tcp`, `ttl` or `wasm`".to_string());
        };
        // A TTL check is fed by whoever reports it; the others run on the
        // node's schedule, which Consul also refuses to guess.
        if ttl_ms == 0 && interval_ms == 0 {
            return Err(format!("`{}` checks need `interval`", given.join("")));
        }
        Ok(Check {
            kind,
            endpoint,
            interval_ms,
            timeout_ms: self.timeout.map_or(0, |t| t.0),
            ttl_ms,
            deregister_critical_after_ms: self.deregister_critical_service_after.map_or(0, |d| d.0),
            initial_status: self.status,
        })
    }
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a check table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Check, A::Error> {
        // The cross-field rules are checked here, still inside the table, so
        // that their error carries the check's line and path.
        let map = Aliased {
            map,
            aliases: CHECK_ALIASES,
        };
        RawCheck::deserialize(MapAccessDeserializer::new(map))?
            .into_check()
            .map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Validated values. Each is checked in its visitor, where the parser still
// knows the value's position.

/// A visitor for a string value that `check` turns into `T` or rejects.
struct StrVisitor<T> {
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        (self.check)(value).map_err(E::custom)
    }
}

/// Implements `Deserialize` for a newtype over a string-checked value.
macro_rules! checked_str {
    ($type:ident, $expecting:expr, $check:expr) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer
                    .deserialize_str(StrVisitor {
                        expecting: $expecting,
                        check: $check,
                    })
                    .map($type)
            }
        }
    };
}

/// A string that must not be empty (service name and ID).
struct NonEmpty(String);

checked_str!(NonEmpty, "a non-empty string", |s| {
    if s.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
});

/// A duration in milliseconds; 0 allowed.
struct Ms(u32);

checked_str!(Ms, "a duration such as \"10s\"", duration::parse_ms);

/// A duration in milliseconds that must be more than 0 (intervals, TTLs).
struct NonZeroMs(u32);

checked_str!(NonZeroMs, "a duration such as \"10s\"", |s| {
    match duration::parse_ms(s)? {
        0 => Err(format!("{s:?} is zero; it must be longer")),
        ms => Ok(ms),
    }
});

/// An HTTP check's URL. `{address}` and `{port}` are left for the node.
struct HttpUrl(String);

checked_str!(HttpUrl, "an http:// or https:// URL", |s| {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        None => Err(format!("{s:?} is not an http:// or https:// URL")),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Err(format!("{s:?} has no host")),
        Some(_) if s.chars().any(char::is_whitespace) => Err(format!("{s:?} contains white space")),
        Some(_) => Ok(s.to_string()),
    }
});

/// A TCP check's "host:port". `{address}` and `{port}` are left for the node.
struct TcpAddress(String);

checked_str!(TcpAddress, "a \"host:port\" string", |s| {
    let valid = match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.chars().any(char::is_whitespace)
                && (port == "{port}" || port.parse::<u16>().is_ok_and(|p| p != 0))
        }
        None => false,
    };
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not \"host:port\""))
    }
});

/// The name of a check plugin (`wasm = "..."`), used as the check's kind.
struct PluginName(String);

checked_str!(PluginName, "the name of a check plugin", |s| {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        Err(format!("{s:?} is not a check plugin name"))
    } else if ["http", "tcp", "ttl"].contains(&s) {
        // The node would read these as the built-in kinds, without the
        // endpoint they need.
        Err(format!(
            "{s:?} is a built-in kind: write `{s} = ...` instead"
        ))
    } else {
        Ok(s.to_string())
    }
});

/// Most characters a meta key may have, as Consul.
const META_KEY_MAX: usize = 128;
/// Most characters a meta value may have, as Consul.
const META_VALUE_MAX: usize = 512;

/// A meta key: 1 to 128 letters, digits, '-' or '_'.
struct MetaKey(String);

checked_str!(MetaKey, "a meta key", |s| {
    if s.is_empty() {
        Err("meta key must not be empty".to_string())
    } else if s.chars().count() > META_KEY_MAX {
        Err(format!(
            "meta key {s:?} is longer than {META_KEY_MAX} characters"
        ))
    } else if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Err(format!(
            "meta key {s:?} may only have letters, digits, '-' and '_'"
        ))
    } else {
        Ok(s.to_string())
    }
});

/// A meta value: a string of at most 512 characters.
struct MetaValue(String);

checked_str!(MetaValue, "a string", |s| {
    if s.chars().count() > META_VALUE_MAX {
        Err(format!(
            "meta value is longer than {META_VALUE_MAX} characters"
        ))
    } else {
        Ok(s.to_string())
    }
});

/// A service's meta table, sorted by key.
#[derive(Default)]
struct Meta(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MetaVisitor)
    }
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = Meta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        while let Some(MetaKey(key)) = map.next_key()? {
            let MetaValue(value) = map.next_value()?;
            // TOML refuses a repeated key itself; JSON leaves it to us.
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("meta key {key:?} appears twice")));
            }
            pairs.push((key, value));
        }
        // TOML hands tables over sorted by key, JSON in file order: sort so
        // that both give the same registration for the same meta.
        pairs.sort();
        Ok(Meta(pairs))
    }
}

#[cfg(test)]
mod tests;
