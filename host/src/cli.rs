//! The command line: `muster agent` runs a node; `kv`, `catalog` and
//! `members` talk to a running agent over its HTTP API, like Consul's CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, Flags};

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Service registry and discovery, Consul-compatible, extensible with WebAssembly"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a muster agent (a server node).
    Agent(AgentArgs),
    /// Read and write the key/value store.
    Kv {
        #[command(subcommand)]
        cmd: KvCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List services and nodes in the catalog.
    Catalog {
        #[command(subcommand)]
        cmd: CatalogCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the members of the cluster.
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask the agent to join a server (its addresses.server, IP[:PORT]).
    Join {
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Re-read the agent's config files and apply the `[[exporter]]`
    /// blocks: added, removed or changed exporters (Consul's `reload`).
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Leave the cluster gracefully and stop the agent.
    Leave {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a failed node from the cluster (and a server from Raft).
    ForceLeave {
        node: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Save the catalog to a file, or restore one (on the servers).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster operator tools.
    Operator {
        #[command(subcommand)]
        cmd: OperatorCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Inspect and measure WebAssembly plugins.
    Plugin {
        #[command(subcommand)]
        cmd: PluginCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Write the leader's catalog to FILE.
    Save { file: PathBuf },
    /// Replace the cluster's catalog with the one in FILE.
    Restore { file: PathBuf },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// The Raft configuration.
    Raft {
        #[command(subcommand)]
        cmd: RaftCmd,
    },
}

#[derive(Subcommand)]
enum RaftCmd {
    /// Servers in the Raft configuration, with the leader and voters.
    ListPeers,
    /// Remove a server (by -id or -address) from the configuration.
    RemovePeer {
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// The agent's loaded plugins: world, source, hash, calls, failures.
    List {
        /// Print the full JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hot-swap exporter NAME to the component its file holds now: the new
    /// version is opened and resynced beside the old one, then takes over
    /// the change stream. A version that fails leaves the old one running.
    Reload { name: String },
    /// Time instantiate + check + drop of a health-check plugin, in this
    /// process (no agent needed): what each check run costs in overhead.
    Bench {
        /// `builtin:NAME` or a path to a component.
        plugin: String,
        /// The plugin's config, JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// Where to cache the compiled component (default: none).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// The check's endpoint (URL or HOST:PORT), which it may reach.
        #[arg(long, default_value = "")]
        endpoint: String,
        /// Meter fuel, with this budget per call.
        #[arg(long)]
        fuel: Option<u64>,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// One in-memory server with everything on, for trying things out.
    #[arg(long)]
    dev: bool,
    /// A TOML file or a directory of them (repeatable; later ones win).
    #[arg(long = "config", value_name = "PATH")]
    config: Vec<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    node: Option<String>,
    #[arg(long)]
    datacenter: Option<String>,
    #[arg(long)]
    http_addr: Option<String>,
    #[arg(long)]
    dns_addr: Option<String>,
    #[arg(long)]
    server_addr: Option<String>,
    /// Run as a server (without it, a client agent).
    #[arg(long)]
    server: bool,
    /// Start the cluster once this many servers are present.
    #[arg(long)]
    bootstrap_expect: Option<u32>,
    /// A server's addresses.server to join, retried until it answers
    /// (repeatable).
    #[arg(long = "retry-join", value_name = "ADDR")]
    retry_join: Vec<String>,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Address of the agent's HTTP API.
    #[arg(
        long,
        env = "MUSTER_HTTP_ADDR",
        default_value = "127.0.0.1:8500",
        global = true
    )]
    http_addr: String,
}

#[derive(Subcommand)]
enum KvCmd {
    /// Print a value (or, with -recurse, every key:value under a prefix).
    Get {
        key: String,
        #[arg(long)]
        recurse: bool,
        /// Print the full entry as JSON.
        #[arg(long)]
        detailed: bool,
    },
    /// Write a value.
    Put {
        key: String,
        #[arg(default_value = "")]
        value: String,
        #[arg(long)]
        flags: Option<u64>,
        /// Check-and-set against -modify-index.
        #[arg(long)]
        cas: bool,
        #[arg(long)]
        modify_index: Option<u64>,
    },
    /// Delete a key (or, with -recurse, a prefix).
    Delete {
        key: String,
        #[arg(long)]
        recurse: bool,
    },
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Service names (with -tags, their tags).
    Services {
        #[arg(long)]
        tags: bool,
    },
    /// Nodes with their address and datacenter.
    Nodes,
}

/// Consul's CLI takes single-dash long flags (`-recurse`); accept both.
fn consul_style_args() -> Vec<String> {
    std::env::args()
        .map(|a| {
            let is_long_single_dash = a.starts_with('-')
                && !a.starts_with("--")
                && a.len() > 2
                && a[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic());
            if is_long_single_dash {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(consul_style_args());
    let result = match cli.command {
        Cmd::Agent(a) => run_agent(a),
        Cmd::Kv { cmd, client } => kv(&Client::new(&client.http_addr), cmd),
        Cmd::Catalog { cmd, client } => catalog(&Client::new(&client.http_addr), cmd),
        Cmd::Members { client } => members(&Client::new(&client.http_addr)),
        Cmd::Join { address, client } => Client::new(&client.http_addr)
            .call("PUT", &format!("/v1/agent/join/{address}"), Some(b""))
            .map(|_| println!("Successfully joined cluster by contacting 1 nodes.")),
        Cmd::Leave { client } => Client::new(&client.http_addr)
            .call("PUT", "/v1/agent/leave", Some(b""))
            .map(|_| println!("Graceful leave complete")),
        Cmd::ForceLeave { node, client } => Client::new(&client.http_addr)
            .call("PUT", &format!("/v1/agent/force-leave/{node}"), Some(b""))
            .map(|_| ()),
        Cmd::Operator { cmd, client } => operator(&Client::new(&client.http_addr), cmd),
        Cmd::Snapshot { cmd, client } => snapshot(&Client::new(&client.http_addr), cmd),
        Cmd::Plugin {
            cmd: PluginCmd::List { json },
            client,
        } => plugin_list(&Client::new(&client.http_addr), json),
        Cmd::Plugin {
            cmd: PluginCmd::Reload { name },
            client,
        } => plugin_reload(&Client::new(&client.http_addr), &name),
        Cmd::Reload { client } => reload(&Client::new(&client.http_addr)),
        Cmd::Plugin {
            cmd:
                PluginCmd::Bench {
                    plugin,
                    config,
                    calls,
                    cache_dir,
                    endpoint,
                    fuel,
                },
            ..
        } => plugin_bench(plugin, config, calls, cache_dir, endpoint, fuel),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(a: AgentArgs) -> anyhow::Result<()> {
    let flags = Flags {
        dev: a.dev,
        config: a.config,
        data_dir: a.data_dir,
        node: a.node,
        datacenter: a.datacenter,
        http_addr: a.http_addr,
        dns_addr: a.dns_addr,
        server_addr: a.server_addr,
        server: a.server,
        bootstrap_expect: a.bootstrap_expect,
        retry_join: a.retry_join,
    };
    let config = Config::load(&flags)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},openraft=warn,hickory_server=warn,hickory_net=warn,hickory_proto=warn",
            config.log_level
        ))
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(crate::node::run(config))
}

/// A minimal HTTP client of the agent API.
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(addr: &str) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Client {
            base,
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    /// Sends a request; Ok(None) for 404, an error with the server's
    /// message for any other failure.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Option<String>> {
        let url = format!("{}{}", self.base, path);
        let req = self.agent.request(method, &url);
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(Some(r.into_string().context("reading the response")?)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                let msg = r.into_string().unwrap_or_default();
                bail!("Unexpected response code: {code} ({})", msg.trim())
            }
            Err(e) => Err(anyhow!("cannot reach the agent at {}: {e}", self.base)),
        }
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.call("GET", path, None)? {
            None => Ok(None),
            Some(text) => Ok(Some(
                serde_json::from_str(&text).context("decoding the response")?,
            )),
        }
    }
}

fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|seg| form_urlencoded::byte_serialize(seg.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

fn decode_value(entry: &Value) -> String {
    let b64 = entry.get("Value").and_then(Value::as_str).unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn kv(c: &Client, cmd: KvCmd) -> anyhow::Result<()> {
    match cmd {
        KvCmd::Get {
            key,
            recurse,
            detailed,
        } => {
            let q = if recurse { "?recurse" } else { "" };
            let Some(entries) = c.get_json(&format!("/v1/kv/{}{q}", encode_key(&key)))? else {
                if recurse {
                    return Ok(());
                }
                bail!("No key exists at: {key}");
            };
            for e in entries.as_array().into_iter().flatten() {
                if detailed {
                    println!("{}", serde_json::to_string_pretty(e)?);
                } else if recurse {
                    println!(
                        "{}:{}",
                        e.get("Key").and_then(Value::as_str).unwrap_or(""),
                        decode_value(e)
                    );
                } else {
                    println!("{}", decode_value(e));
                }
            }
            Ok(())
        }
        KvCmd::Put {
            key,
            value,
            flags,
            cas,
            modify_index,
        } => {
            let mut q = Vec::new();
            if let Some(f) = flags {
                q.push(format!("flags={f}"));
            }
            if cas {
                let idx = modify_index.ok_or_else(|| anyhow!("-cas needs -modify-index"))?;
                q.push(format!("cas={idx}"));
            }
            let qs = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            let out = c
                .call(
                    "PUT",
                    &format!("/v1/kv/{}{qs}", encode_key(&key)),
                    Some(value.as_bytes()),
                )?
                .unwrap_or_default();
            if out.trim() == "true" {
                println!("Success! Data written to: {key}");
                Ok(())
            } else {
                bail!(
                    "Failed to write {key}: CAS index {} is stale",
                    modify_index.unwrap_or(0)
                )
            }
        }
        KvCmd::Delete { key, recurse } => {
            let q = if recurse { "?recurse" } else { "" };
            c.call("DELETE", &format!("/v1/kv/{}{q}", encode_key(&key)), None)?;
            if recurse {
                println!("Success! Deleted keys with prefix: {key}");
            } else {
                println!("Success! Deleted key: {key}");
            }
            Ok(())
        }
    }
}

fn catalog(c: &Client, cmd: CatalogCmd) -> anyhow::Result<()> {
    match cmd {
        CatalogCmd::Services { tags } => {
            let services = c.get_json("/v1/catalog/services")?.unwrap_or(Value::Null);
            for (name, t) in services.as_object().into_iter().flatten() {
                if tags {
                    let list: Vec<&str> = t
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!("{name:<30} {}", list.join(","));
                } else {
                    println!("{name}");
                }
            }
            Ok(())
        }
        CatalogCmd::Nodes => {
            let nodes = c.get_json("/v1/catalog/nodes")?.unwrap_or(Value::Null);
            println!("{:<24} {:<10} {:<16} DC", "Node", "ID", "Address");
            for n in nodes.as_array().into_iter().flatten() {
                let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let id: String = s("ID").chars().take(8).collect();
                println!(
                    "{:<24} {:<10} {:<16} {}",
                    s("Node"),
                    id,
                    s("Address"),
                    s("Datacenter")
                );
            }
            Ok(())
        }
    }
}

fn snapshot(c: &Client, cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Save { file } => {
            let url = format!("{}/v1/snapshot", c.base);
            let response = c.agent.get(&url).call().map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    anyhow!("{code}: {}", r.into_string().unwrap_or_default())
                }
                e => anyhow!("cannot reach the agent at {}: {e}", c.base),
            })?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)
                .context("reading the snapshot")?;
            std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            println!(
                "Saved and verified snapshot to {} ({} bytes)",
                file.display(),
                bytes.len()
            );
            Ok(())
        }
        SnapshotCmd::Restore { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            c.call("PUT", "/v1/snapshot", Some(&bytes))?;
            println!("Restored snapshot from {}", file.display());
            Ok(())
        }
    }
}

fn operator(c: &Client, cmd: OperatorCmd) -> anyhow::Result<()> {
    let OperatorCmd::Raft { cmd } = cmd;
    match cmd {
        RaftCmd::ListPeers => {
            let conf = c
                .get_json("/v1/operator/raft/configuration")?
                .unwrap_or(Value::Null);
            println!(
                "{:<20} {:<38} {:<22} {:<10} {:<6} RaftProtocol",
                "Node", "ID", "Address", "State", "Voter"
            );
            for s in conf["Servers"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
                let state = if s["Leader"] == true {
                    "leader"
                } else {
                    "follower"
                };
                let voter = if s["Voter"] == true {
                    "voter"
                } else {
                    "learner"
                };
                println!(
                    "{:<20} {:<38} {:<22} {:<10} {:<6} 3",
                    text("Node"),
                    text("ID"),
                    text("Address"),
                    state,
                    voter
                );
            }
            Ok(())
        }
        RaftCmd::RemovePeer { id, address } => {
            let query = match (id, address) {
                (Some(id), _) => format!("id={id}"),
                (None, Some(a)) => format!("address={a}"),
                (None, None) => bail!("give -id or -address of the server to remove"),
            };
            c.call("DELETE", &format!("/v1/operator/raft/peer?{query}"), None)?;
            println!("Removed peer with {query}");
            Ok(())
        }
    }
}

fn members(c: &Client) -> anyhow::Result<()> {
    let members = c.get_json("/v1/agent/members")?.unwrap_or(Value::Null);
    println!(
        "{:<24} {:<22} {:<8} {:<8} {:<8} DC",
        "Node", "Address", "Status", "Type", "Build"
    );
    for m in members.as_array().into_iter().flatten() {
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let tag = |k: &str| {
            m.get("Tags")
                .and_then(|t| t.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let status = match m.get("Status").and_then(Value::as_u64) {
            Some(1) => "alive",
            Some(2) => "leaving",
            Some(3) => "left",
            Some(4) => "failed",
            _ => "unknown",
        };
        let role = if tag("role") == "consul" {
            "server"
        } else {
            "client"
        };
        // Client agents listen on no server port.
        let addr = match m.get("Port").and_then(Value::as_u64).unwrap_or(0) {
            0 => s("Addr"),
            port => format!("{}:{port}", s("Addr")),
        };
        println!(
            "{:<24} {:<22} {:<8} {:<8} {:<8} {}",
            s("Name"),
            addr,
            status,
            role,
            tag("build"),
            tag("dc")
        );
    }
    Ok(())
}

fn plugin_reload(c: &Client, name: &str) -> anyhow::Result<()> {
    let answer = c
        .call(
            "PUT",
            &format!("/v1/muster/plugins/{}/reload", encode_key(name)),
            Some(b""),
        )?
        .ok_or_else(|| anyhow!("no exporter named \"{name}\" is configured"))?;
    let v: Value = serde_json::from_str(&answer).context("decoding the response")?;
    let hash = v.get("Hash").and_then(Value::as_str).unwrap_or("");
    println!("{name}: now running {}", &hash[..hash.len().min(12)]);
    Ok(())
}

fn reload(c: &Client) -> anyhow::Result<()> {
    let v = c
        .call("PUT", "/v1/agent/reload", Some(b""))?
        .map(|t| serde_json::from_str::<Value>(&t))
        .transpose()
        .context("decoding the response")?
        .unwrap_or(Value::Null);
    println!("Configuration reload triggered");
    let mut rejected = Vec::new();
    for e in v["Exporters"].as_array().into_iter().flatten() {
        let name = e["Name"].as_str().unwrap_or("");
        let action = e["Action"].as_str().unwrap_or("");
        match e["Error"].as_str() {
            Some(err) => {
                println!("  exporter {name}: {action}: {err}");
                rejected.push(name.to_string());
            }
            None => println!("  exporter {name}: {action}"),
        }
    }
    if !rejected.is_empty() {
        bail!(
            "rejected: {} (the running versions stay)",
            rejected.join(", ")
        );
    }
    Ok(())
}

fn plugin_list(c: &Client, as_json: bool) -> anyhow::Result<()> {
    let plugins = c.get_json("/v1/muster/plugins")?.unwrap_or(Value::Null);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<13} {:<34} {:<14} {:>8} {:>8}  Last error",
        "Name", "World", "Source", "Hash", "Calls", "Failures"
    );
    for p in plugins.as_array().into_iter().flatten() {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        let hash = s("Hash");
        println!(
            "{:<20} {:<13} {:<34} {:<14} {:>8} {:>8}  {}",
            s("Name"),
            s("World"),
            s("Source"),
            &hash[..hash.len().min(12)],
            n("Calls"),
            n("Failures"),
            s("LastError")
        );
    }
    Ok(())
}

fn plugin_bench(
    plugin: String,
    config: String,
    calls: usize,
    cache_dir: Option<PathBuf>,
    endpoint: String,
    fuel: Option<u64>,
) -> anyhow::Result<()> {
    use crate::plugins::health_check::CheckTarget;
    // One thread: the calls are sequential, and a multi-thread runtime only
    // adds cross-thread wake-ups to what is being measured.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let registry = crate::plugins::PluginRegistry::new(cache_dir, fuel.is_some())?;
        let block = crate::config::PluginBlock {
            name: "bench".into(),
            plugin,
            grant: Default::default(),
            config: Default::default(),
            memory_mb: None,
            fuel,
        };
        let loaded = registry.load(&block, crate::plugins::World::HealthCheck)?;
        let target = CheckTarget {
            service_id: "bench".into(),
            service_name: "bench".into(),
            address: "127.0.0.1".into(),
            port: 1,
            endpoint: endpoint.clone(),
            timeout: std::time::Duration::from_secs(10),
            tls_skip_verify: false,
        };
        let mut allow = crate::plugins::AllowList::default();
        let reach = crate::health::scheduler::url_host_port(&endpoint)
            .or_else(|| crate::health::scheduler::host_port(&endpoint));
        if let Some((host, port)) = reach {
            allow.allow(&host, Some(port)).await;
        }
        let mut times = Vec::with_capacity(calls);
        let mut last = None;
        for _ in 0..calls.max(1) {
            let t = std::time::Instant::now();
            let verdict = registry
                .run_check(&loaded, &target, &config, allow.clone())
                .await;
            times.push(t.elapsed());
            last = Some(verdict);
        }
        times.sort();
        let q = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        let last = last.ok_or_else(|| anyhow!("no call ran"))?;
        println!(
            "{}",
            serde_json::json!({
                "calls": times.len(),
                "load_ms": loaded.load_time.as_secs_f64() * 1000.0,
                "compile_cache_hit": loaded.cache_hit,
                "p50_us": us(q(0.5)),
                "p99_us": us(q(0.99)),
                "mean_us": us(times.iter().sum::<std::time::Duration>()) / times.len() as f64,
                "last_status": last.status.as_str(),
                "last_output": last.output,
            })
        );
        Ok(())
    })
}
