//! Registrator's mapping from Docker containers to services, as pure Rust
//! over plain structs so that it can be unit-tested on the host target.
//!
//! One container yields one service per port it publishes (or, with
//! `internal`, exposes). `SERVICE_*` environment variables and labels
//! describe each service; `SERVICE_<port>_*` applies to one port only.
//! Everything here is a function of its inputs: the plugin is called in a
//! fresh instance on every container event and returns the complete set.

use std::collections::{BTreeMap, HashSet};

use go_duration::DurationError;
use serde_json::{Map, Value};

/// A published or exposed port of a container (one Docker binding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Port {
    /// The port inside the container.
    pub private_port: u16,
    /// The port on the host; 0 when only exposed.
    pub public_port: u16,
    /// "tcp", "udp" (or "sctp").
    pub protocol: String,
    /// The host address of the binding; "0.0.0.0" or "::" for all.
    pub host_ip: String,
}

/// The parts of a container that decide its services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading "/".
    pub name: String,
    /// The image reference it was started from.
    pub image: String,
    /// Its address on its first network; empty if none.
    pub ip: String,
    pub running: bool,
    pub paused: bool,
    /// Exit code of the last run; 0 while running.
    pub exit_code: i32,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<Port>,
}

/// When a stopped container's services go away (Registrator's
/// `-deregister`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deregister {
    /// As soon as the container stops.
    #[default]
    Always,
    /// Only when it exits successfully (or is killed by a signal); a
    /// container that failed keeps its services, so their checks show it.
    OnSuccess,
}

/// The plugin's configuration, read from the node's TOML `config` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Advertised address of every service; empty: per binding.
    pub ip: String,
    /// Container IP and private port instead of host binding.
    pub internal: bool,
    /// Only ports with a SERVICE_NAME are registered.
    pub explicit: bool,
    /// Added to every service's tags.
    pub tags: Vec<String>,
    pub deregister: Deregister,
    /// Used in default IDs; `None`: the Docker host's name.
    pub hostname: Option<String>,
}

/// The config keys this plugin reads, plus the two the node reads.
const KNOWN_KEYS: &str = "ip, internal, explicit, tags, deregister, hostname, resync, cleanup";

impl Settings {
    /// Parses the config JSON. Errors name the key, because they end up in
    /// the node's log far from the TOML that caused them.
    pub fn parse(json: &str) -> Result<Settings, String> {
        // The node sends "{}" for an absent table, but an empty string costs
        // nothing to accept.
        if json.trim().is_empty() {
            return Ok(Settings::default());
        }
        let object: Map<String, Value> = match serde_json::from_str(json) {
            Ok(Value::Object(o)) => o,
            Ok(other) => return Err(format!("config: must be a table, got {other}")),
            Err(e) => return Err(format!("config: not valid JSON: {e}")),
        };
        let mut settings = Settings::default();
        for (key, value) in &object {
            match key.as_str() {
                "ip" => settings.ip = string_value(key, value)?,
                "internal" => settings.internal = bool_value(key, value)?,
                "explicit" => settings.explicit = bool_value(key, value)?,
                "tags" => settings.tags = tags_value(value)?,
                "deregister" => {
                    settings.deregister = match value.as_str() {
                        Some("always") => Deregister::Always,
                        Some("on-success") => Deregister::OnSuccess,
                        _ => {
                            return Err(format!(
                                "config.deregister: must be \"always\" or \"on-success\", got {}",
                                shown(value)
                            ))
                        }
                    }
                }
                "hostname" => {
                    let name = string_value(key, value)?;
                    // An empty string reads as "not set" rather than IDs
                    // that start with ':'.
                    settings.hostname = (!name.is_empty()).then_some(name);
                }
                // The node's own keys (resync interval, cleanup at start).
                "resync" | "cleanup" => {}
                other => {
                    return Err(format!(
                        "config: unknown key \"{other}\" (known: {KNOWN_KEYS})"
                    ))
                }
            }
        }
        Ok(settings)
    }
}

/// A value as an error message shows it: as JSON, so strings are quoted.
fn shown(value: &Value) -> String {
    value.to_string()
}

fn string_value(key: &str, value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("config.{key}: must be a string, got {}", shown(value)))
}

fn bool_value(key: &str, value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("config.{key}: must be true or false, got {}", shown(value)))
}

/// `tags` is Registrator's comma-separated `-tags`, or a TOML list.
fn tags_value(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(split_tags(s)),
        Value::Array(items) => {
            let mut tags = Vec::new();
            for item in items {
                let tag = item.as_str().ok_or_else(|| {
                    format!(
                        "config.tags: must be a string or a list of strings, got {}",
                        shown(value)
                    )
                })?;
                let tag = tag.trim();
                if !tag.is_empty() {
                    tags.push(tag.to_string());
                }
            }
            Ok(tags)
        }
        _ => Err(format!(
            "config.tags: must be a string or a list of strings, got {}",
            shown(value)
        )),
    }
}

/// Splits a comma-separated tag list; `\,` is a comma inside a tag (as in
/// Registrator). Parts are trimmed and empty ones dropped.
pub fn split_tags(s: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => tags.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    tags.push(current);
    tags.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Initial status of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

/// A check as the WIT `check-definition` has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// "http", "tcp" or "ttl".
    pub kind: String,
    /// With `{address}` and `{port}` left for the node to fill in.
    pub endpoint: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub ttl_ms: u32,
    pub deregister_critical_after_ms: u32,
    pub initial_status: Option<Status>,
}

/// A service to register, as the WIT `registration` has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    /// The container's ID.
    pub origin: String,
    pub name: String,
    pub tags: Vec<String>,
    /// Empty: the node's address.
    pub address: String,
    pub port: u16,
    pub meta: Vec<(String, String)>,
    pub checks: Vec<Check>,
}

/// Something wrong with one container's settings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The container's ID.
    pub origin: String,
    /// Starts with "container <name>:".
    pub message: String,
}

/// The complete set the source wants registered now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Sorted by ID.
    pub services: Vec<Service>,
    /// Sorted by origin, then message; no duplicates.
    pub problems: Vec<Problem>,
}

/// Maps every container to its services. `hostname` goes into default IDs.
pub fn desired(settings: &Settings, hostname: &str, containers: &[Container]) -> Desired {
    let mut services = Vec::new();
    let mut problems = Vec::new();
    // Which container a service came from, for duplicate-ID messages.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for container in containers {
        let name = container.name.trim_start_matches('/');
        if kept_after_failure(settings, container) {
            // Registrator keeps such a container's services only across a
            // die it saw. Reporting the container as a problem does exactly
            // that: the node keeps what it registered for it and never
            // registers anything new for a long-dead container (its
            // dynamic ports and IP are gone anyway).
            problems.push(Problem {
                origin: container.id.clone(),
                message: format!(
                    "container {name}: exited with code {}; its services stay registered (deregister = \"on-success\")",
                    container.exit_code
                ),
            });
            continue;
        }
        if !contributes(container) {
            continue;
        }
        let outcome = container_services(settings, hostname, container);
        problems.extend(outcome.problems.into_iter().map(|message| Problem {
            origin: container.id.clone(),
            message: format!("container {name}: {message}"),
        }));
        if !outcome.fatal {
            owner.insert(container.id.clone(), name.to_string());
            services.extend(outcome.services);
        }
    }
    // The node keys services by ID, so two services with one ID would
    // overwrite each other on every event. Keep the first (by origin, so the
    // choice does not depend on Docker's listing order) and report the rest.
    services.sort_by(|a, b| (&a.id, &a.origin, a.port).cmp(&(&b.id, &b.origin, b.port)));
    let mut kept: Vec<Service> = Vec::with_capacity(services.len());
    for service in services {
        match kept.last() {
            Some(first) if first.id == service.id => {
                let name = owner.get(&service.origin).map_or("", String::as_str);
                let message = if first.origin == service.origin {
                    format!(
                        "container {name}: service ID \"{}\" is given to more than one port (set SERVICE_<port>_ID)",
                        service.id
                    )
                } else {
                    let other = owner.get(&first.origin).map_or("", String::as_str);
                    format!(
                        "container {name}: service ID \"{}\" is already used by container {other}",
                        service.id
                    )
                };
                problems.push(Problem {
                    origin: service.origin,
                    message,
                });
            }
            _ => kept.push(service),
        }
    }
    problems.sort();
    problems.dedup();
    Desired {
        services: kept,
        problems,
    }
}

/// Whether a container's services should be registered now.
fn contributes(container: &Container) -> bool {
    container.running && !container.paused
}

/// Whether a stopped container keeps what it registered: it failed, and
/// `deregister = "on-success"`. Registrator treats an exit code with bit
/// 128 set as "killed by a signal", i.e. stopped on purpose, and
/// deregisters it like a clean exit.
fn kept_after_failure(settings: &Settings, container: &Container) -> bool {
    !container.running
        && settings.deregister == Deregister::OnSuccess
        && container.exit_code != 0
        && container.exit_code & 128 != 128
}

/// What one container yields.
#[derive(Debug, Default)]
struct Outcome {
    services: Vec<Service>,
    /// Messages without the "container <name>:" prefix.
    problems: Vec<String>,
    /// A setting could not be read: leave all the container's services out,
    /// so that the node keeps what it registered before for it instead of
    /// registering something other than what was asked for.
    fatal: bool,
}

/// One port group after choosing its binding.
struct PortGroup<'a> {
    private_port: u16,
    protocol: String,
    binding: &'a Port,
}

/// Groups the container's bindings by (private port, protocol) and keeps
/// the ones that count: published ones, or all of them when internal.
fn port_groups<'a>(settings: &Settings, container: &'a Container) -> Vec<PortGroup<'a>> {
    let mut groups: BTreeMap<(u16, String), Vec<&'a Port>> = BTreeMap::new();
    for port in &container.ports {
        let protocol = port.protocol.to_ascii_lowercase();
        // Docker omits the protocol only for TCP.
        let protocol = if protocol.is_empty() {
            "tcp".to_string()
        } else {
            protocol
        };
        groups
            .entry((port.private_port, protocol))
            .or_default()
            .push(port);
    }
    groups
        .into_iter()
        .filter_map(|((private_port, protocol), bindings)| {
            // IPv4 and IPv6 bindings of one port come as separate entries;
            // prefer one that is published.
            let binding = bindings
                .iter()
                .find(|p| p.public_port != 0)
                .or_else(|| bindings.first())?;
            (settings.internal || binding.public_port != 0).then_some(PortGroup {
                private_port,
                protocol,
                binding,
            })
        })
        .collect()
}

/// One `SERVICE_` setting that applies to a port.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    /// The env/label key as written, for messages.
    source: String,
    /// From `SERVICE_<port>_X` rather than `SERVICE_X`.
    per_port: bool,
}

/// The container's `SERVICE_` keys with their values; a label beats an
/// environment variable of the same name.
fn service_keys(container: &Container) -> BTreeMap<&str, &str> {
    let mut keys = BTreeMap::new();
    for (key, value) in container.env.iter().chain(&container.labels) {
        if key.starts_with("SERVICE_") {
            keys.insert(key.as_str(), value.as_str());
        }
    }
    keys
}

/// The settings for one port, keyed by the lowercased name after
/// `SERVICE_` (and after `<port>_`). A per-port key beats the general one.
fn port_settings(keys: &BTreeMap<&str, &str>, private_port: u16) -> BTreeMap<String, Setting> {
    let mut settings: BTreeMap<String, Setting> = BTreeMap::new();
    for (&key, &value) in keys {
        let rest = &key["SERVICE_".len()..];
        let (name, per_port) = match rest.split_once('_') {
            Some((head, tail)) if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) => {
                if head.parse::<u16>() != Ok(private_port) {
                    continue;
                }
                (tail, true)
            }
            _ => (rest, false),
        };
        if name.is_empty() {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if !per_port && settings.get(&name).is_some_and(|s| s.per_port) {
            continue;
        }
        settings.insert(
            name,
            Setting {
                value: value.to_string(),
                source: key.to_string(),
                per_port,
            },
        );
    }
    settings
}

/// The service name Registrator derives from an image reference:
/// "registry.example.com:5000/team/web:1.2@sha256:..." is "web".
pub fn image_base_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let base = image.rsplit('/').next().unwrap_or(image);
    base.split(':').next().unwrap_or(base)
}

fn container_services(settings: &Settings, hostname: &str, container: &Container) -> Outcome {
    let mut outcome = Outcome::default();
    let groups = port_groups(settings, container);
    let several = groups.len() > 1;
    let keys = service_keys(container);
    let container_name = container.name.trim_start_matches('/');
    for group in &groups {
        let mut port_keys = port_settings(&keys, group.private_port);
        // Any non-empty value ignores, "false" included, as in Registrator:
        // containers written for it must not start registering here.
        if port_keys
            .remove("ignore")
            .is_some_and(|s| !s.value.is_empty())
        {
            continue;
        }
        let given_name = port_keys.remove("name").filter(|s| !s.value.is_empty());
        if given_name.is_none() && settings.explicit {
            continue;
        }
        let mut name = match &given_name {
            Some(s) => s.value.clone(),
            None => image_base_name(&container.image).to_string(),
        };
        if name.is_empty() {
            outcome.problems.push(format!(
                "port {}/{}: no service name (the image name is empty): set SERVICE_NAME",
                group.private_port, group.protocol
            ));
            continue;
        }
        // A per-port name is already unique to the port; anything else would
        // give every port of the container the same name.
        if several && !given_name.as_ref().is_some_and(|s| s.per_port) {
            name = format!("{name}-{}", group.private_port);
        }

        let not_tcp = group.protocol != "tcp";
        let id = match port_keys.remove("id").filter(|s| !s.value.is_empty()) {
            Some(s) => s.value,
            None if not_tcp => format!(
                "{hostname}:{container_name}:{}:{}",
                group.private_port, group.protocol
            ),
            None => format!("{hostname}:{container_name}:{}", group.private_port),
        };

        let mut tags = port_keys
            .remove("tags")
            .map_or_else(Vec::new, |s| split_tags(&s.value));
        tags.extend(settings.tags.iter().cloned());
        if not_tcp {
            tags.push(group.protocol.clone());
        }
        let mut seen = HashSet::new();
        tags.retain(|t| seen.insert(t.clone()));

        // As in Registrator, internal mode wins over a forced ip.
        let address = if settings.internal {
            container.ip.clone()
        } else if !settings.ip.is_empty() {
            settings.ip.clone()
        } else {
            match group.binding.host_ip.as_str() {
                // Bound to every host address: let the node advertise its own.
                "0.0.0.0" | "::" | "" => String::new(),
                ip => ip.to_string(),
            }
        };
        let port = if settings.internal {
            group.private_port
        } else {
            group.binding.public_port
        };

        let (check_keys, meta_keys): (BTreeMap<_, _>, BTreeMap<_, _>) = port_keys
            .into_iter()
            .partition(|(k, _)| k.starts_with("check_"));
        let checks = match checks(&check_keys, &mut outcome.problems) {
            Ok(c) => c,
            Err(()) => {
                outcome.fatal = true;
                continue;
            }
        };
        let meta = meta_keys
            .into_iter()
            .filter_map(|(key, setting)| match meta_problem(&key, &setting.value) {
                None => Some((key, setting.value)),
                Some(why) => {
                    outcome.problems.push(format!("{}: {why}", setting.source));
                    None
                }
            })
            .collect();

        outcome.services.push(Service {
            id,
            origin: container.id.clone(),
            name,
            tags,
            address,
            port,
            meta,
            checks,
        });
    }
    outcome
}

/// Why a meta pair would be refused (Consul's limits, which the node
/// enforces too, plus this node's own reserved prefix).
fn meta_problem(key: &str, value: &str) -> Option<String> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some(format!(
            "meta key \"{key}\" must be 1-128 characters of letters, digits, '-' or '_'"
        ));
    }
    for reserved in ["consul-", "muster-"] {
        if key.starts_with(reserved) {
            return Some(format!(
                "meta key \"{key}\" uses the reserved prefix \"{reserved}\""
            ));
        }
    }
    // Bytes, as the node counts them.
    if value.len() > 512 {
        return Some(format!(
            "the value of meta key \"{key}\" is longer than 512 characters"
        ));
    }
    None
}

/// Check settings without a home in the WIT `check-definition`.
const UNSUPPORTED_CHECKS: &[&str] = &["check_script", "check_docker", "check_cmd"];

/// Registrator's consul-backend check settings that the WIT
/// `check-definition` cannot carry.
const UNCARRIED_CHECKS: &[&str] = &["check_http_method", "check_tls_skip_verify"];

/// Builds the checks from a port's `check_*` settings. Problems that only
/// drop a check are pushed and the service still registers; a value that
/// cannot be read is `Err` (its problem pushed), see `Outcome::fatal`.
fn checks(keys: &BTreeMap<String, Setting>, problems: &mut Vec<String>) -> Result<Vec<Check>, ()> {
    // Registrator reads an empty value as "not set".
    let get = |k: &str| keys.get(k).filter(|s| !s.value.is_empty());
    let mut bad = false;
    let mut duration = |k: &str, default_ms: u32| -> u32 {
        let Some(s) = get(k) else {
            return default_ms;
        };
        match parse_duration_ms(&s.value) {
            Ok(ms) => ms,
            Err(why) => {
                problems.push(format!("{} \"{}\": {why}", s.source, s.value));
                bad = true;
                0
            }
        }
    };
    let interval_ms = duration("check_interval", 10_000);
    let timeout_ms = duration("check_timeout", 0);
    let ttl_ms = duration("check_ttl", 0);
    let deregister_ms = duration("check_deregister_after", 0);

    let initial_status = match get("check_initial_status") {
        None => None,
        Some(s) => match s.value.as_str() {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => {
                problems.push(format!(
                    "{} \"{}\": must be \"passing\", \"warning\" or \"critical\"",
                    s.source, s.value
                ));
                bad = true;
                None
            }
        },
    };
    // Registrator turns the TCP check on for any value ("true", "1").
    let tcp = get("check_tcp").is_some();

    for (key, setting) in keys {
        let key = key.as_str();
        if UNSUPPORTED_CHECKS.contains(&key) {
            problems.push(format!(
                "{} is not supported by muster (use SERVICE_CHECK_HTTP/TCP/TTL or a wasm check)",
                setting.source
            ));
        } else if UNCARRIED_CHECKS.contains(&key) {
            problems.push(format!(
                "{} is not supported by muster; the check is registered without it",
                setting.source
            ));
        } else if !matches!(
            key,
            "check_http"
                | "check_https"
                | "check_tcp"
                | "check_ttl"
                | "check_interval"
                | "check_timeout"
                | "check_initial_status"
                | "check_deregister_after"
        ) {
            // Most likely a typo: say so rather than silently not checking.
            problems.push(format!(
                "{} is not a check setting muster knows (known: SERVICE_CHECK_HTTP, _HTTPS, _TCP, _TTL, _INTERVAL, _TIMEOUT, _INITIAL_STATUS, _DEREGISTER_AFTER)",
                setting.source
            ));
        }
    }
    if bad {
        return Err(());
    }

    let polled = |kind: &str, endpoint: String| Check {
        kind: kind.to_string(),
        endpoint,
        interval_ms,
        timeout_ms,
        ttl_ms: 0,
        deregister_critical_after_ms: deregister_ms,
        initial_status,
    };
    // One check, chosen in Registrator's order (HTTP, HTTPS, TTL, TCP), so
    // that its ID is `service:<id>` as Registrator users' TTL updaters
    // expect, and a second kind is never left unfed.
    let check = if let Some(s) = get("check_http") {
        Some(polled(
            "http",
            format!("http://{{address}}:{{port}}{}", s.value),
        ))
    } else if let Some(s) = get("check_https") {
        Some(polled(
            "http",
            format!("https://{{address}}:{{port}}{}", s.value),
        ))
    } else if get("check_ttl").is_some() {
        Some(Check {
            kind: "ttl".to_string(),
            endpoint: String::new(),
            interval_ms: 0,
            timeout_ms: 0,
            ttl_ms,
            deregister_critical_after_ms: deregister_ms,
            initial_status,
        })
    } else if tcp {
        Some(polled("tcp", "{address}:{port}".to_string()))
    } else {
        None
    };
    Ok(check.into_iter().collect())
}

/// Parses a Go duration ("10s", "1m30s", "500ms", "1.5h"; plain digits are
/// seconds) into milliseconds, rounding a fraction of a millisecond up so
/// that a positive duration never reads as 0 ("the node's default").
pub fn parse_duration_ms(s: &str) -> Result<u32, String> {
    const NOT: &str = "not a duration";
    if s.is_empty() {
        return Err(NOT.to_string());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| too_long())?;
        return secs
            .checked_mul(1000)
            .and_then(|ms| u32::try_from(ms).ok())
            .ok_or_else(too_long);
    }
    go_duration::parse_ms(s).map_err(|e| match e {
        DurationError::NotADuration => NOT.to_string(),
        DurationError::MissingUnit => format!("{NOT} (missing unit)"),
        DurationError::TooLong => too_long(),
    })
}

fn too_long() -> String {
    // u32 milliseconds, what the WIT carries.
    "longer than 1193h, the longest a check setting can be".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn port(private: u16, public: u16, protocol: &str, host_ip: &str) -> Port {
        Port {
            private_port: private,
            public_port: public,
            protocol: protocol.to_string(),
            host_ip: host_ip.to_string(),
        }
    }

    /// A running container publishing 80/tcp on 0.0.0.0:8080.
    fn web() -> Container {
        Container {
            id: "c0ffee".to_string(),
            name: "web-1".to_string(),
            image: "registry.example.com:5000/team/web:1.2".to_string(),
            ip: "172.17.0.2".to_string(),
            running: true,
            ports: vec![port(80, 8080, "tcp", "0.0.0.0")],
            ..Container::default()
        }
    }

    fn run(settings: &Settings, containers: &[Container]) -> Desired {
        desired(settings, "dockerhost", containers)
    }

    fn one(settings: &Settings, container: Container) -> Service {
        let d = run(settings, &[container]);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(d.services.len(), 1, "{:?}", d.services);
        d.services.into_iter().next().expect("one service")
    }

    fn problem_messages(d: &Desired) -> Vec<&str> {
        d.problems.iter().map(|p| p.message.as_str()).collect()
    }

    #[test]
    fn default_name_id_address_and_port() {
        let s = one(&Settings::default(), web());
        assert_eq!(s.name, "web");
        assert_eq!(s.id, "dockerhost:web-1:80");
        assert_eq!(s.origin, "c0ffee");
        assert_eq!(s.address, "");
        assert_eq!(s.port, 8080);
        assert!(s.tags.is_empty());
        assert!(s.meta.is_empty());
        assert!(s.checks.is_empty());
    }

    #[test]
    fn image_base_names() {
        assert_eq!(
            image_base_name("registry.example.com:5000/team/web:1.2"),
            "web"
        );
        assert_eq!(image_base_name("redis:7"), "redis");
        assert_eq!(image_base_name("redis"), "redis");
        assert_eq!(image_base_name("muster-test/busybox:1"), "busybox");
        assert_eq!(image_base_name("localhost:5000/app@sha256:0123abcd"), "app");
        assert_eq!(image_base_name("nginx:1.25@sha256:0123abcd"), "nginx");
    }

    #[test]
    fn specific_host_ip_is_the_address() {
        let mut c = web();
        c.ports = vec![port(80, 8080, "tcp", "10.0.0.5")];
        assert_eq!(one(&Settings::default(), c).address, "10.0.0.5");
        let mut c = web();
        c.ports = vec![port(80, 8080, "tcp", "::")];
        assert_eq!(one(&Settings::default(), c).address, "");
    }

    #[test]
    fn several_ports_get_suffixed_names() {
        let mut c = web();
        c.ports = vec![
            port(443, 8443, "tcp", "0.0.0.0"),
            port(80, 8080, "tcp", "0.0.0.0"),
            // Exposed only: does not count, so it neither registers nor
            // makes the container "several ports" on its own.
            port(9000, 0, "tcp", ""),
        ];
        let d = run(&Settings::default(), &[c]);
        let got: Vec<_> = d
            .services
            .iter()
            .map(|s| (s.id.as_str(), s.name.as_str(), s.port))
            .collect();
        assert_eq!(
            got,
            [
                ("dockerhost:web-1:443", "web-443", 8443),
                ("dockerhost:web-1:80", "web-80", 8080),
            ]
        );
    }

    #[test]
    fn service_name_gets_the_suffix_too_but_not_a_per_port_name() {
        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.env = pairs(&[("SERVICE_NAME", "site"), ("SERVICE_443_NAME", "secure")]);
        let d = run(&Settings::default(), &[c]);
        let names: Vec<_> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["secure", "site-80"]);
    }

    #[test]
    fn one_published_port_among_exposed_ones_has_no_suffix() {
        let mut c = web();
        c.ports = vec![port(80, 8080, "tcp", "0.0.0.0"), port(81, 0, "tcp", "")];
        assert_eq!(one(&Settings::default(), c).name, "web");
    }

    #[test]
    fn ipv4_and_ipv6_bindings_are_one_port() {
        let mut c = web();
        c.ports = vec![
            port(80, 0, "tcp", ""),
            port(80, 8080, "tcp", "0.0.0.0"),
            port(80, 8080, "tcp", "::"),
        ];
        let s = one(&Settings::default(), c);
        assert_eq!((s.name.as_str(), s.port), ("web", 8080));
    }

    #[test]
    fn per_port_keys_beat_general_ones_for_their_port_only() {
        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.env = pairs(&[
            ("SERVICE_TAGS", "general"),
            ("SERVICE_80_TAGS", "plain"),
            ("SERVICE_80_ID", "web-plain"),
            ("SERVICE_VERSION", "1"),
        ]);
        let d = run(&Settings::default(), &[c]);
        let got: Vec<_> = d
            .services
            .iter()
            .map(|s| (s.id.as_str(), s.tags.clone(), s.meta.clone()))
            .collect();
        let version = vec![("version".to_string(), "1".to_string())];
        assert_eq!(
            got,
            [
                (
                    "dockerhost:web-1:443",
                    vec!["general".to_string()],
                    version.clone()
                ),
                ("web-plain", vec!["plain".to_string()], version),
            ]
        );
    }

    #[test]
    fn label_beats_env() {
        let mut c = web();
        c.env = pairs(&[("SERVICE_NAME", "from-env"), ("SERVICE_OWNER", "env")]);
        c.labels = pairs(&[("SERVICE_NAME", "from-label")]);
        let s = one(&Settings::default(), c);
        assert_eq!(s.name, "from-label");
        assert_eq!(s.meta, pairs(&[("owner", "env")]));
    }

    #[test]
    fn ignore_skips_the_port() {
        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.labels = pairs(&[("SERVICE_443_IGNORE", "true")]);
        let d = run(&Settings::default(), std::slice::from_ref(&c));
        let ids: Vec<_> = d.services.iter().map(|s| s.name.as_str()).collect();
        // Still "several ports": the ignored one was published.
        assert_eq!(ids, ["web-80"]);

        c.labels = pairs(&[("SERVICE_IGNORE", "1"), ("SERVICE_CHECK_TTL", "bogus")]);
        let d = run(&Settings::default(), &[c]);
        // Ignored ports are not looked at, so their settings raise nothing.
        assert_eq!(d, Desired::default());
    }

    #[test]
    fn explicit_registers_only_named_ports() {
        let settings = Settings {
            explicit: true,
            ..Settings::default()
        };
        assert_eq!(run(&settings, &[web()]), Desired::default());

        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.env = pairs(&[("SERVICE_443_NAME", "secure")]);
        let d = run(&settings, &[c]);
        let names: Vec<_> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["secure"]);
    }

    #[test]
    fn internal_uses_container_ip_and_private_port() {
        let settings = Settings {
            internal: true,
            ..Settings::default()
        };
        let mut c = web();
        c.ports = vec![port(80, 8080, "tcp", "0.0.0.0"), port(9000, 0, "tcp", "")];
        let d = run(&settings, &[c]);
        let got: Vec<_> = d
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.address.as_str(), s.port))
            .collect();
        assert_eq!(
            got,
            [
                ("web-80", "172.17.0.2", 80),
                ("web-9000", "172.17.0.2", 9000)
            ]
        );
    }

    #[test]
    fn ip_setting_overrides_every_address() {
        let settings = Settings {
            ip: "192.0.2.7".to_string(),
            ..Settings::default()
        };
        let mut c = web();
        c.ports = vec![port(80, 8080, "tcp", "10.0.0.5")];
        let s = one(&settings, c);
        assert_eq!((s.address.as_str(), s.port), ("192.0.2.7", 8080));

        // Internal mode wins, as in Registrator.
        let settings = Settings {
            internal: true,
            ..settings
        };
        let s = one(&settings, web());
        assert_eq!((s.address.as_str(), s.port), ("172.17.0.2", 80));
    }

    #[test]
    fn udp_gets_a_tag_and_an_id_suffix() {
        let mut c = web();
        c.image = "coredns/coredns:1.11".to_string();
        c.ports = vec![port(53, 53, "udp", "0.0.0.0")];
        c.env = pairs(&[("SERVICE_TAGS", "dns")]);
        let settings = Settings {
            tags: vec!["prod".to_string()],
            ..Settings::default()
        };
        let s = one(&settings, c);
        assert_eq!(s.id, "dockerhost:web-1:53:udp");
        assert_eq!(s.name, "coredns");
        assert_eq!(s.tags, ["dns", "prod", "udp"]);
    }

    #[test]
    fn same_port_over_tcp_and_udp_is_two_services() {
        let mut c = web();
        c.ports = vec![
            port(53, 53, "udp", "0.0.0.0"),
            port(53, 53, "tcp", "0.0.0.0"),
        ];
        let d = run(&Settings::default(), &[c]);
        let got: Vec<_> = d
            .services
            .iter()
            .map(|s| (s.id.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("dockerhost:web-1:53", "web-53"),
                ("dockerhost:web-1:53:udp", "web-53")
            ]
        );
    }

    #[test]
    fn tags_split_on_unescaped_commas_and_lose_duplicates() {
        assert_eq!(split_tags(r"a\,b, c,,a\,b ,d"), ["a,b", "c", "a,b", "d"]);
        let mut c = web();
        c.env = pairs(&[("SERVICE_TAGS", r"env=prod\,eu,canary,,canary")]);
        let settings = Settings {
            tags: vec!["canary".to_string(), "extra".to_string()],
            ..Settings::default()
        };
        assert_eq!(one(&settings, c).tags, ["env=prod,eu", "canary", "extra"]);
    }

    #[test]
    fn stopped_and_paused_containers_have_no_services() {
        let mut stopped = web();
        stopped.running = false;
        stopped.exit_code = 1;
        let mut paused = web();
        paused.paused = true;
        assert_eq!(
            run(&Settings::default(), &[stopped, paused]),
            Desired::default()
        );
    }

    #[test]
    fn on_success_keeps_failed_containers_but_not_signalled_ones() {
        let settings = Settings {
            deregister: Deregister::OnSuccess,
            ..Settings::default()
        };
        let exited = |code: i32| Container {
            running: false,
            exit_code: code,
            ..web()
        };
        // A failure is a problem of the container: the node keeps what it
        // registered for it, and nothing new is registered.
        for code in [1, 2] {
            let d = run(&settings, &[exited(code)]);
            assert!(d.services.is_empty(), "{d:?}");
            assert_eq!(d.problems.len(), 1);
            assert_eq!(d.problems[0].origin, "c0ffee");
            assert!(d.problems[0]
                .message
                .contains(&format!("exited with code {code}")));
        }
        for code in [0, 137, 143, 130] {
            assert_eq!(
                run(&settings, &[exited(code)]),
                Desired::default(),
                "exit code {code}"
            );
        }
        let mut paused = web();
        paused.paused = true;
        assert_eq!(run(&settings, &[paused]), Desired::default());
    }

    #[test]
    fn checks_map_onto_check_definitions() {
        let mut c = web();
        c.env = pairs(&[
            ("SERVICE_CHECK_HTTP", "/health"),
            ("SERVICE_CHECK_TCP", "true"),
            ("SERVICE_CHECK_TIMEOUT", "2s"),
            ("SERVICE_CHECK_INTERVAL", "1m30s"),
            ("SERVICE_CHECK_INITIAL_STATUS", "passing"),
            ("SERVICE_CHECK_DEREGISTER_AFTER", "90m"),
        ]);
        let s = one(&Settings::default(), c);
        let http = Check {
            kind: "http".to_string(),
            endpoint: "http://{address}:{port}/health".to_string(),
            interval_ms: 90_000,
            timeout_ms: 2_000,
            ttl_ms: 0,
            deregister_critical_after_ms: 5_400_000,
            initial_status: Some(Status::Passing),
        };
        // One check, HTTP first, as Registrator registers.
        assert_eq!(s.checks, [http.clone()]);
        let mut c = web();
        c.env = pairs(&[
            ("SERVICE_CHECK_TCP", "1"),
            ("SERVICE_CHECK_INTERVAL", "1m30s"),
        ]);
        let s = one(&Settings::default(), c);
        assert_eq!(s.checks.len(), 1);
        assert_eq!(
            (s.checks[0].kind.as_str(), s.checks[0].endpoint.as_str()),
            ("tcp", "{address}:{port}")
        );
        // check_* settings never become meta.
        assert!(s.meta.is_empty());
    }

    #[test]
    fn https_and_ttl_checks_with_defaults() {
        let mut c = web();
        c.labels = pairs(&[
            ("SERVICE_CHECK_HTTPS", "/ready?full=1"),
            ("SERVICE_CHECK_TTL", "30s"),
        ]);
        let s = one(&Settings::default(), c);
        assert_eq!(
            s.checks,
            [Check {
                kind: "http".to_string(),
                endpoint: "https://{address}:{port}/ready?full=1".to_string(),
                interval_ms: 10_000,
                ..Check::default()
            }]
        );
        // TTL comes before TCP.
        let mut c = web();
        c.labels = pairs(&[("SERVICE_CHECK_TTL", "30s"), ("SERVICE_CHECK_TCP", "true")]);
        let s = one(&Settings::default(), c);
        assert_eq!(
            s.checks,
            [Check {
                kind: "ttl".to_string(),
                ttl_ms: 30_000,
                ..Check::default()
            }]
        );
    }

    #[test]
    fn script_checks_are_reported_but_the_service_registers() {
        let mut c = web();
        c.env = pairs(&[
            ("SERVICE_CHECK_SCRIPT", "curl localhost"),
            ("SERVICE_CHECK_TTL", "10s"),
        ]);
        let d = run(&Settings::default(), &[c]);
        assert_eq!(
            problem_messages(&d),
            ["container web-1: SERVICE_CHECK_SCRIPT is not supported by muster (use SERVICE_CHECK_HTTP/TCP/TTL or a wasm check)"]
        );
        assert_eq!(d.problems[0].origin, "c0ffee");
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].checks.len(), 1);
        assert_eq!(d.services[0].checks[0].kind, "ttl");
    }

    #[test]
    fn bad_duration_leaves_the_container_out() {
        let mut bad = web();
        bad.env = pairs(&[
            ("SERVICE_CHECK_HTTP", "/health"),
            ("SERVICE_CHECK_INTERVAL", "ten"),
        ]);
        let mut good = web();
        good.id = "beef".to_string();
        good.name = "web-2".to_string();
        let d = run(&Settings::default(), &[bad, good]);
        assert_eq!(
            d.problems,
            [Problem {
                origin: "c0ffee".to_string(),
                message: "container web-1: SERVICE_CHECK_INTERVAL \"ten\": not a duration"
                    .to_string(),
            }]
        );
        let ids: Vec<_> = d.services.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["dockerhost:web-2:80"]);
    }

    #[test]
    fn bad_per_port_duration_leaves_all_ports_out() {
        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.env = pairs(&[("SERVICE_443_CHECK_TTL", "5x")]);
        let d = run(&Settings::default(), &[c]);
        assert!(d.services.is_empty());
        assert_eq!(
            problem_messages(&d),
            ["container web-1: SERVICE_443_CHECK_TTL \"5x\": not a duration"]
        );
    }

    #[test]
    fn bad_initial_status_leaves_the_container_out() {
        let mut c = web();
        c.env = pairs(&[
            ("SERVICE_CHECK_TCP", "true"),
            ("SERVICE_CHECK_INITIAL_STATUS", "ok"),
        ]);
        let d = run(&Settings::default(), &[c]);
        assert!(d.services.is_empty());
        assert_eq!(d.problems.len(), 1);
        assert!(d.problems[0]
            .message
            .starts_with("container web-1: SERVICE_CHECK_INITIAL_STATUS \"ok\""));
    }

    #[test]
    fn bad_meta_keys_are_reported_and_left_out() {
        let mut c = web();
        c.env = pairs(&[
            ("SERVICE_VERSION", "2"),
            ("SERVICE_MUSTER-OWNER", "me"),
            ("SERVICE_BAD.KEY", "x"),
        ]);
        c.labels = pairs(&[("SERVICE_NOTES", &"n".repeat(513))]);
        let d = run(&Settings::default(), &[c]);
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].meta, pairs(&[("version", "2")]));
        let messages = problem_messages(&d);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages.contains(
            &"container web-1: SERVICE_BAD.KEY: meta key \"bad.key\" must be 1-128 characters of letters, digits, '-' or '_'"
        ));
        assert!(messages.contains(
            &"container web-1: SERVICE_MUSTER-OWNER: meta key \"muster-owner\" uses the reserved prefix \"muster-\""
        ));
        assert!(messages.contains(
            &"container web-1: SERVICE_NOTES: the value of meta key \"notes\" is longer than 512 characters"
        ));
    }

    #[test]
    fn a_container_wide_problem_is_reported_once() {
        let mut c = web();
        c.ports = vec![
            port(80, 8080, "tcp", "0.0.0.0"),
            port(443, 8443, "tcp", "0.0.0.0"),
        ];
        c.env = pairs(&[("SERVICE_CHECK_CMD", "true")]);
        let d = run(&Settings::default(), &[c]);
        assert_eq!(d.services.len(), 2);
        assert_eq!(d.problems.len(), 1);
    }

    #[test]
    fn duplicate_ids_keep_one_and_report_the_other() {
        let mut a = web();
        a.env = pairs(&[("SERVICE_ID", "shared")]);
        let mut b = a.clone();
        b.id = "beef".to_string();
        b.name = "web-2".to_string();
        let d = run(&Settings::default(), &[a, b]);
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].origin, "beef");
        assert_eq!(
            d.problems,
            [Problem {
                origin: "c0ffee".to_string(),
                message:
                    "container web-1: service ID \"shared\" is already used by container web-2"
                        .to_string(),
            }]
        );
    }

    #[test]
    fn services_are_sorted_by_id() {
        let mut a = web();
        a.name = "zeta".to_string();
        let mut b = web();
        b.id = "beef".to_string();
        b.name = "alpha".to_string();
        let d = run(&Settings::default(), &[a, b]);
        let ids: Vec<_> = d.services.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["dockerhost:alpha:80", "dockerhost:zeta:80"]);
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("1.5s", 1_500),
            (".5s", 500),
            ("15", 15_000),
            ("0", 0),
            ("0s", 0),
            ("1us", 1),
            ("1h2m3s4ms", 3_723_004),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for text in [
            "", "ten", "s", "1.5", "-1s", "1x", "1.2.3s", "1 s", ".", "5m3",
        ] {
            assert!(parse_duration_ms(text).is_err(), "{text}");
        }
        assert!(parse_duration_ms("2000h").is_err());
        assert!(parse_duration_ms("99999999999999999999999s").is_err());
    }

    #[test]
    fn config_reads_every_key() {
        let s = Settings::parse(
            r#"{"ip": "192.0.2.1", "internal": true, "explicit": true, "tags": "a,b",
                "deregister": "on-success", "hostname": "h1", "resync": "30s", "cleanup": false}"#,
        )
        .expect("valid config");
        assert_eq!(
            s,
            Settings {
                ip: "192.0.2.1".to_string(),
                internal: true,
                explicit: true,
                tags: vec!["a".to_string(), "b".to_string()],
                deregister: Deregister::OnSuccess,
                hostname: Some("h1".to_string()),
            }
        );
        let s = Settings::parse(r#"{"tags": ["x", "y"]}"#).expect("list of tags");
        assert_eq!(s.tags, ["x", "y"]);
        assert_eq!(Settings::parse("{}"), Ok(Settings::default()));
        assert_eq!(Settings::parse(""), Ok(Settings::default()));
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_values() {
        assert_eq!(
            Settings::parse(r#"{"ips": "x"}"#),
            Err(format!("config: unknown key \"ips\" (known: {KNOWN_KEYS})"))
        );
        assert_eq!(
            Settings::parse(r#"{"deregister": "x"}"#),
            Err(r#"config.deregister: must be "always" or "on-success", got "x""#.to_string())
        );
        assert_eq!(
            Settings::parse(r#"{"internal": "yes"}"#),
            Err(r#"config.internal: must be true or false, got "yes""#.to_string())
        );
        assert!(Settings::parse(r#"{"tags": [1]}"#).is_err_and(|e| e.starts_with("config.tags:")));
        assert!(Settings::parse("[]").is_err());
        assert!(Settings::parse("{").is_err());
    }
}
