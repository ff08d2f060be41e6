//! Agent configuration: TOML files (or directories of them, merged in name
//! order) over built-in defaults, with `--dev` defaults first and command
//! line flags last. Unknown keys are rejected with the file and line, so a
//! typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Addresses the agent listens on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressesFile {
    pub http: Option<String>,
    pub dns: Option<String>,
    pub server: Option<String>,
}

/// A TTL as written in `[dns]`: one duration for everything, or (as in
/// Consul's `service_ttl`) a table of service name -> duration, where the
/// key `"*"` is the fallback and `"web*"` matches by prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TtlFile {
    All(String),
    PerName(std::collections::BTreeMap<String, String>),
}

/// The `[dns]` section (Consul's `dns_config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// The zone muster answers for (default `consul.`).
    pub domain: Option<String>,
    pub service_ttl: Option<TtlFile>,
    pub node_ttl: Option<String>,
    /// Leave out instances in warning too, not only critical ones.
    pub only_passing: Option<bool>,
    /// Answers per UDP response for service lookups (Consul's
    /// `udp_answer_limit`, default 3); 0 means as many as fit.
    pub max_udp_answers: Option<usize>,
    /// Set TC when `max_udp_answers` left records out, so that clients
    /// retry over TCP for the full set (Consul's `enable_truncate`).
    pub enable_truncate: Option<bool>,
    /// Any server may answer from its local copy of the catalog.
    pub allow_stale: Option<bool>,
    /// Node metadata as TXT records in node lookups and SRV additionals.
    pub node_meta_txt: Option<bool>,
}

/// What a plugin block may use; read here, enforced by the plugin runtime.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub connect: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub docker: bool,
}

/// A `[[source]]`, `[[exporter]]` or `[[check_plugin]]` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBlock {
    pub name: String,
    pub plugin: String,
    #[serde(default)]
    pub grant: Grant,
    #[serde(default)]
    pub config: toml::Table,
    /// Memory cap of one instance, MiB (default 128, at most 1024).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Fuel (roughly, wasm instructions) one call may burn; unmetered if unset.
    #[serde(default)]
    pub fuel: Option<u64>,
}

/// One configuration file as written: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub server: Option<bool>,
    pub bootstrap_expect: Option<u32>,
    pub retry_join: Option<Vec<String>>,
    /// How long a node may go without a heartbeat before the leader marks
    /// it failed (a Go duration; default "5s").
    pub node_timeout: Option<String>,
    /// Client agents: how often anti-entropy compares everything (default
    /// "60s"; changes are synced at once regardless).
    pub sync_interval: Option<String>,
    pub log_level: Option<String>,
    /// Log entries between snapshots (Consul's `raft_snapshot_threshold`).
    pub raft_snapshot_threshold: Option<u64>,
    /// Where compiled plugins are cached (default: `data_dir/plugin-cache`,
    /// or `~/.cache/muster/plugins` in `--dev`).
    pub plugin_cache_dir: Option<PathBuf>,
    /// The Docker engine that sources with `grant.docker` see (default:
    /// `$DOCKER_HOST`, else `unix:///var/run/docker.sock`).
    pub docker_host: Option<String>,
    pub addresses: Option<AddressesFile>,
    pub dns: Option<DnsFile>,
    #[serde(default)]
    pub source: Vec<PluginBlock>,
    #[serde(default)]
    pub exporter: Vec<PluginBlock>,
    #[serde(default)]
    pub check_plugin: Vec<PluginBlock>,
}

impl ConfigFile {
    /// Later layers win key by key; plugin blocks accumulate.
    fn merge(&mut self, other: ConfigFile) {
        // `take!(dst, src; fields)`: each field set in `src` replaces `dst`'s.
        macro_rules! take {
            ($dst:expr, $src:expr; $($f:ident),*) => { $( if $src.$f.is_some() { $dst.$f = $src.$f; } )* };
        }
        take!(self, other;
            node_name,
            datacenter,
            data_dir,
            server,
            bootstrap_expect,
            retry_join,
            node_timeout,
            sync_interval,
            log_level,
            raft_snapshot_threshold,
            plugin_cache_dir,
            docker_host
        );
        if let Some(a) = other.addresses {
            let mine = self.addresses.get_or_insert_with(Default::default);
            take!(mine, a; http, dns, server);
        }
        if let Some(d) = other.dns {
            let mine = self.dns.get_or_insert_with(Default::default);
            take!(mine, d;
                domain,
                service_ttl,
                node_ttl,
                only_passing,
                max_udp_answers,
                enable_truncate,
                allow_stale,
                node_meta_txt
            );
        }
        self.source.extend(other.source);
        self.exporter.extend(other.exporter);
        self.check_plugin.extend(other.check_plugin);
    }
}

/// The resolved configuration every module reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub dev: bool,
    pub node_name: String,
    pub datacenter: String,
    /// None only in `--dev`, where everything stays in memory.
    pub data_dir: Option<PathBuf>,
    pub server: bool,
    pub bootstrap_expect: u32,
    /// Servers' `addresses.server` (IP:PORT; a bare IP means port 8300).
    pub retry_join: Vec<String>,
    pub node_timeout: std::time::Duration,
    pub sync_interval: std::time::Duration,
    pub log_level: String,
    pub raft_snapshot_threshold: u64,
    pub plugin_cache_dir: Option<PathBuf>,
    pub docker_host: String,
    pub http_addr: SocketAddr,
    pub dns_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub dns: DnsSettings,
    pub sources: Vec<PluginBlock>,
    pub exporters: Vec<PluginBlock>,
    pub check_plugins: Vec<PluginBlock>,
    /// What the config was loaded from, so `PUT /v1/agent/reload` can read
    /// the same files again.
    pub flags: Flags,
}

/// A TTL rule resolved from [`TtlFile`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TtlRule {
    /// Exact service names (lower-cased).
    pub exact: std::collections::BTreeMap<String, u32>,
    /// Name prefixes from `"web*"` keys, longest first.
    pub prefixes: Vec<(String, u32)>,
    /// The `"*"` key, or the single duration.
    pub fallback: u32,
}

impl TtlRule {
    /// The TTL, in seconds, for records of service `name` (lower-cased).
    pub fn for_name(&self, name: &str) -> u32 {
        if let Some(t) = self.exact.get(name) {
            return *t;
        }
        self.prefixes
            .iter()
            .find(|(p, _)| name.starts_with(p.as_str()))
            .map_or(self.fallback, |(_, t)| *t)
    }
}

/// The resolved `[dns]` section; defaults are Consul's.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Lower-case, with the trailing dot: `consul.`.
    pub domain: String,
    pub service_ttl: TtlRule,
    pub node_ttl: u32,
    pub only_passing: bool,
    pub max_udp_answers: usize,
    pub enable_truncate: bool,
    pub allow_stale: bool,
    pub node_meta_txt: bool,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            domain: "consul.".into(),
            service_ttl: TtlRule::default(),
            node_ttl: 0,
            only_passing: false,
            max_udp_answers: 3,
            enable_truncate: false,
            allow_stale: true,
            node_meta_txt: true,
        }
    }
}

/// A TTL in whole seconds from a Go-style duration.
fn ttl_seconds(field: &str, text: &str) -> anyhow::Result<u32> {
    let d =
        crate::api::decode::parse_duration(text).map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
    u32::try_from(d.as_secs())
        .map_err(|_| anyhow::anyhow!("{field}: '{text}' is too long for a DNS TTL"))
}

impl DnsSettings {
    fn resolve(file: Option<DnsFile>) -> anyhow::Result<DnsSettings> {
        let d = file.unwrap_or_default();
        let defaults = DnsSettings::default();
        let domain = match d.domain {
            None => defaults.domain,
            Some(raw) => normalize_domain(&raw)?,
        };
        let service_ttl = match d.service_ttl {
            None => TtlRule::default(),
            Some(TtlFile::All(text)) => TtlRule {
                fallback: ttl_seconds("dns.service_ttl", &text)?,
                ..Default::default()
            },
            Some(TtlFile::PerName(map)) => {
                let mut rule = TtlRule::default();
                for (name, text) in map {
                    let ttl = ttl_seconds(&format!("dns.service_ttl.\"{name}\""), &text)?;
                    let name = name.to_lowercase();
                    if name == "*" {
                        rule.fallback = ttl;
                    } else if let Some(prefix) = name.strip_suffix('*') {
                        rule.prefixes.push((prefix.to_string(), ttl));
                    } else {
                        rule.exact.insert(name, ttl);
                    }
                }
                rule.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
                rule
            }
        };
        Ok(DnsSettings {
            domain,
            service_ttl,
            node_ttl: match d.node_ttl {
                Some(t) => ttl_seconds("dns.node_ttl", &t)?,
                None => defaults.node_ttl,
            },
            only_passing: d.only_passing.unwrap_or(defaults.only_passing),
            max_udp_answers: d.max_udp_answers.unwrap_or(defaults.max_udp_answers),
            enable_truncate: d.enable_truncate.unwrap_or(defaults.enable_truncate),
            allow_stale: d.allow_stale.unwrap_or(defaults.allow_stale),
            node_meta_txt: d.node_meta_txt.unwrap_or(defaults.node_meta_txt),
        })
    }
}

/// `Consul`, `consul` and `consul.` all mean the zone `consul.`.
fn normalize_domain(raw: &str) -> anyhow::Result<String> {
    let lower = raw.trim().trim_end_matches('.').to_lowercase();
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if lower.is_empty() || lower.len() > 200 || !lower.split('.').all(ok_label) {
        bail!("dns.domain '{raw}' is not a domain name (labels of letters, digits, '-' or '_', separated by dots)");
    }
    Ok(format!("{lower}."))
}

/// Command-line overrides, applied after every file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub dev: bool,
    pub config: Vec<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub node: Option<String>,
    pub datacenter: Option<String>,
    pub http_addr: Option<String>,
    pub dns_addr: Option<String>,
    pub server_addr: Option<String>,
    pub server: bool,
    pub bootstrap_expect: Option<u32>,
    pub retry_join: Vec<String>,
}

/// Reads one TOML file; toml's errors already carry line and column.
fn read_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))
}

/// Reads a file, or every `*.toml` in a directory in name order.
fn read_path(path: &Path) -> anyhow::Result<Vec<ConfigFile>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading config dir {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files.iter().map(|p| read_file(p)).collect()
    } else {
        Ok(vec![read_file(path)?])
    }
}

fn parse_addr(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{what}: '{s}' is not an address of the form IP:PORT"))
}

/// A server's `addresses.server` as `retry_join` and `muster join` take
/// it: IP:PORT, or a bare IP on Consul's port 8300.
pub fn server_address(s: &str) -> Option<SocketAddr> {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, 8300)),
        Err(_) => s.parse().ok(),
    }
}

fn join_addr(s: &str) -> anyhow::Result<String> {
    server_address(s)
        .map(|a| a.to_string())
        .ok_or_else(|| anyhow::anyhow!("retry_join: '{s}' is not an address of the form IP:PORT"))
}

fn duration_key(key: &str, s: &str) -> anyhow::Result<std::time::Duration> {
    crate::api::parse_duration(s).map_err(|e| anyhow::anyhow!("{key} = '{s}': {e}"))
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "muster".into())
}

impl Config {
    /// Layers dev defaults, files and flags, then validates the result.
    pub fn load(flags: &Flags) -> anyhow::Result<Config> {
        let mut merged = ConfigFile::default();
        if flags.dev {
            merged.server = Some(true);
            merged.bootstrap_expect = Some(1);
        }
        for path in &flags.config {
            for file in read_path(path)? {
                merged.merge(file);
            }
        }
        let addresses = merged.addresses.unwrap_or_default();
        let http = flags
            .http_addr
            .clone()
            .or(addresses.http)
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let dns = flags
            .dns_addr
            .clone()
            .or(addresses.dns)
            .unwrap_or_else(|| "127.0.0.1:8600".into());
        let server_addr = flags
            .server_addr
            .clone()
            .or(addresses.server)
            .unwrap_or_else(|| "127.0.0.1:8300".into());
        let config = Config {
            dev: flags.dev,
            node_name: flags
                .node
                .clone()
                .or(merged.node_name)
                .unwrap_or_else(default_node_name),
            datacenter: flags
                .datacenter
                .clone()
                .or(merged.datacenter)
                .unwrap_or_else(|| "dc1".into()),
            data_dir: flags.data_dir.clone().or(merged.data_dir),
            server: flags.server || merged.server.unwrap_or(false),
            bootstrap_expect: flags
                .bootstrap_expect
                .or(merged.bootstrap_expect)
                .unwrap_or(0),
            retry_join: {
                let mut all = merged.retry_join.unwrap_or_default();
                all.extend(flags.retry_join.iter().cloned());
                all.iter()
                    .map(|a| join_addr(a))
                    .collect::<anyhow::Result<Vec<_>>>()?
            },
            node_timeout: duration_key(
                "node_timeout",
                merged.node_timeout.as_deref().unwrap_or("5s"),
            )?,
            sync_interval: duration_key(
                "sync_interval",
                merged.sync_interval.as_deref().unwrap_or("60s"),
            )?,
            log_level: merged.log_level.unwrap_or_else(|| "info".into()),
            raft_snapshot_threshold: merged.raft_snapshot_threshold.unwrap_or(16_384),
            plugin_cache_dir: merged.plugin_cache_dir,
            docker_host: merged
                .docker_host
                .or_else(|| std::env::var("DOCKER_HOST").ok())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
            http_addr: parse_addr("addresses.http", &http)?,
            dns_addr: parse_addr("addresses.dns", &dns)?,
            server_addr: parse_addr("addresses.server", &server_addr)?,
            dns: DnsSettings::resolve(merged.dns)?,
            sources: merged.source,
            exporters: merged.exporter,
            check_plugins: merged.check_plugin,
            flags: flags.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !valid_name(&self.node_name) {
            bail!(
                "node_name '{}' must be letters, digits, '-', '_' or '.'",
                self.node_name
            );
        }
        if !valid_name(&self.datacenter) {
            bail!(
                "datacenter '{}' must be letters, digits, '-', '_' or '.'",
                self.datacenter
            );
        }
        if self.data_dir.is_none() && !self.dev {
            bail!("data_dir is required (set it in the config file or with --data-dir), or run with --dev");
        }
        if self.raft_snapshot_threshold < 16 {
            bail!(
                "raft_snapshot_threshold = {} is too small (at least 16)",
                self.raft_snapshot_threshold
            );
        }
        if !self.server && self.bootstrap_expect > 0 {
            bail!(
                "bootstrap_expect = {} is for servers; set server = true or remove it",
                self.bootstrap_expect
            );
        }
        if self.node_timeout < std::time::Duration::from_millis(500) {
            bail!(
                "node_timeout = {:?} is too short (at least 500ms)",
                self.node_timeout
            );
        }
        if self.sync_interval < std::time::Duration::from_secs(1) {
            bail!(
                "sync_interval = {:?} is too short (at least 1s)",
                self.sync_interval
            );
        }
        self.validate_plugins()
    }

    /// Plugin blocks: unique names (built-ins included), grants that parse,
    /// limits in range. Loading the component itself happens at start.
    fn validate_plugins(&self) -> anyhow::Result<()> {
        let mut seen: std::collections::BTreeSet<&str> = crate::plugins::BUILTINS
            .iter()
            .map(|(name, _, _)| *name)
            .collect();
        for (section, blocks) in [
            ("source", &self.sources),
            ("exporter", &self.exporters),
            ("check_plugin", &self.check_plugins),
        ] {
            for b in blocks {
                if !valid_name(&b.name) {
                    bail!(
                        "[[{section}]] name '{}' must be letters, digits, '-', '_' or '.'",
                        b.name
                    );
                }
                if !seen.insert(&b.name) {
                    bail!("[[{section}]] name '{}' is used twice (built-in plugins take their own names)", b.name);
                }
                if b.plugin.is_empty() {
                    bail!("[[{section}]] '{}': plugin is empty (write builtin:NAME or a path to a .wasm file)", b.name);
                }
                for entry in &b.grant.connect {
                    crate::plugins::grant::parse_connect(entry)
                        .map_err(|e| anyhow::anyhow!("[[{section}]] '{}': {e}", b.name))?;
                }
                if let Some(mb) = b.memory_mb {
                    if mb == 0 || mb > crate::plugins::MAX_MEMORY_MB {
                        bail!(
                            "[[{section}]] '{}': memory_mb = {mb} is out of range (1..={})",
                            b.name,
                            crate::plugins::MAX_MEMORY_MB
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// Node and datacenter names end up in DNS names and URLs.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_and_line() {
        let dir = std::env::temp_dir().join(format!("muster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "server = true\nbootstrap_expekt = 1\n").unwrap();
        let err = Config::load(&Flags {
            config: vec![path.clone()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("bootstrap_expekt"), "{err}");
    }

    #[test]
    fn flags_beat_files_beat_dev_defaults() {
        let dir = std::env::temp_dir().join(format!("muster-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        std::fs::write(
            &path,
            "node_name = \"from-file\"\n[addresses]\nhttp = \"127.0.0.1:9500\"\n",
        )
        .unwrap();
        let cfg = Config::load(&Flags {
            dev: true,
            config: vec![path],
            node: Some("from-flag".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.node_name, "from-flag");
        assert_eq!(cfg.raft_snapshot_threshold, 16_384, "default");
        assert_eq!(cfg.http_addr.port(), 9500);
        assert!(cfg.server);
    }

    #[test]
    fn every_file_key_reaches_the_config() {
        let dir = std::env::temp_dir().join(format!("muster-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("all.toml");
        std::fs::write(
            &path,
            "node_name = \"n\"\ndatacenter = \"east\"\ndata_dir = \"/tmp/d\"\nserver = true\n\
             bootstrap_expect = 1\nlog_level = \"debug\"\nraft_snapshot_threshold = 64\n\
             [addresses]\nhttp = \"127.0.0.1:1\"\ndns = \"127.0.0.1:2\"\nserver = \"127.0.0.1:3\"\n",
        )
        .unwrap();
        let cfg = Config::load(&Flags {
            config: vec![path],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.node_name, "n");
        assert_eq!(cfg.datacenter, "east");
        assert_eq!(cfg.data_dir.as_deref(), Some(Path::new("/tmp/d")));
        assert!(cfg.server);
        assert_eq!(cfg.bootstrap_expect, 1);
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.raft_snapshot_threshold, 64);
        assert_eq!(
            (
                cfg.http_addr.port(),
                cfg.dns_addr.port(),
                cfg.server_addr.port()
            ),
            (1, 2, 3)
        );
    }

    fn load_text(name: &str, text: &str) -> anyhow::Result<Config> {
        let dir = std::env::temp_dir().join(format!("muster-cfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&Flags {
            dev: true,
            config: vec![path],
            ..Default::default()
        })
    }

    #[test]
    fn dns_section_resolves_with_consul_defaults() {
        let cfg = load_text("dns0", "").unwrap();
        assert_eq!(cfg.dns, DnsSettings::default());
        assert_eq!(cfg.dns.max_udp_answers, 3);
        let cfg = load_text(
            "dns1",
            "[dns]\ndomain = \"Muster\"\nservice_ttl = { \"web\" = \"30s\", \"api*\" = \"10s\", \"a*\" = \"2s\", \"*\" = \"5s\" }\nnode_ttl = \"1m\"\nonly_passing = true\n",
        )
        .unwrap();
        assert_eq!(cfg.dns.domain, "muster.");
        assert_eq!(cfg.dns.node_ttl, 60);
        assert!(cfg.dns.only_passing);
        let ttl = &cfg.dns.service_ttl;
        assert_eq!(
            (
                ttl.for_name("web"),
                ttl.for_name("api-v2"),
                ttl.for_name("auth"),
                ttl.for_name("db")
            ),
            (30, 10, 2, 5),
            "exact, longest prefix, shorter prefix, fallback"
        );
        let cfg = load_text("dns2", "[dns]\nservice_ttl = \"15s\"\n").unwrap();
        assert_eq!(cfg.dns.service_ttl.for_name("anything"), 15);
    }

    #[test]
    fn bad_dns_settings_name_the_field() {
        let err = load_text("dns3", "[dns]\nnode_ttl = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.node_ttl"), "{err}");
        let err = load_text("dns4", "[dns]\nservice_ttl = { \"web\" = \"x\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.service_ttl.\"web\""), "{err}");
        let err = load_text("dns5", "[dns]\ndomain = \"bad domain\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.domain"), "{err}");
        let err = load_text("dns6", "[dns]\nmax_udp_answerz = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_udp_answerz"), "{err}");
    }
}
