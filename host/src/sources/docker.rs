//! The node's view of Docker, for sources granted `docker = true`: every
//! container as `docker inspect` describes it, kept current from the
//! engine's event stream. Each container event updates the view and wakes
//! the sources; when the stream breaks or dockerd restarts, the watcher
//! reconnects with backoff and lists everything again, so nothing that
//! happened meanwhile is missed (Registrator exits instead).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, PortMap};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::plugins::source::{Container, DockerView, Pair, Port};

/// What a container event does to the view. Only `start` (and `rename`,
/// `update`) need a fresh inspect: a die carries its exit code, pause and
/// unpause flip a flag, destroy removes. `create`, `kill`, `stop`, `oom`
/// and `restart` are always followed by one of those, and exec_*,
/// attach, health_status and the like change nothing a source reads.
enum Change {
    Inspect(String),
    Died { id: String, exit_code: i32 },
    Paused { id: String, paused: bool },
    Destroyed(String),
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Inspect(id) | Change::Destroyed(id) => id,
            Change::Died { id, .. } | Change::Paused { id, .. } => id,
        }
    }
}

/// Inspects in flight at once while following events, so a burst of
/// starts is not inspected one after another (results stay in order).
const INSPECTS_IN_FLIGHT: usize = 16;

/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Time for the event subscription to reach dockerd before the listing.
const SUBSCRIBE_GRACE: Duration = Duration::from_millis(50);

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the watcher shows about itself in `/v1/muster/sources`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerStatus {
    pub endpoint: String,
    pub connected: bool,
    pub containers: usize,
    pub events: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// The shared view and the watcher's counters.
pub struct DockerWatch {
    view: RwLock<Arc<DockerView>>,
    status: RwLock<DockerStatus>,
}

impl DockerWatch {
    /// Starts watching `endpoint`; `changed` is notified after every
    /// update; everything is listed again every `relist`.
    pub fn spawn(endpoint: String, changed: Arc<Notify>, relist: Duration) -> Arc<DockerWatch> {
        let watch = Arc::new(DockerWatch {
            view: RwLock::new(Arc::new(DockerView {
                host_name: String::new(),
                containers: Err(format!("not connected to Docker at {endpoint} yet")),
            })),
            status: RwLock::new(DockerStatus {
                endpoint: endpoint.clone(),
                ..Default::default()
            }),
        });
        let me = watch.clone();
        tokio::spawn(async move { me.run(endpoint, changed, relist).await });
        watch
    }

    /// The view a reconcile runs against.
    pub fn view(&self) -> Arc<DockerView> {
        self.view
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn status(&self) -> DockerStatus {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn update_status(&self, f: impl FnOnce(&mut DockerStatus)) {
        if let Ok(mut s) = self.status.write() {
            f(&mut s);
        }
    }

    fn publish(&self, host_name: &str, containers: &BTreeMap<String, Container>) {
        let view = Arc::new(DockerView {
            host_name: host_name.to_string(),
            containers: Ok(containers.values().cloned().collect()),
        });
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
        self.update_status(|s| s.containers = containers.len());
    }

    async fn run(self: Arc<Self>, endpoint: String, changed: Arc<Notify>, relist: Duration) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let error = match self.session(&endpoint, &changed, relist).await {
                Ok(()) => "the event stream ended".to_string(),
                Err(e) => format!("{e:#}"),
            };
            // A session that held for a while earns a quick retry; one that
            // fails at once (a proxy closing long polls, an API mismatch)
            // backs off instead of listing everything ten times a second.
            if started.elapsed() >= STABLE_SESSION {
                backoff = Duration::from_millis(100);
            }
            tracing::warn!(endpoint = %endpoint, error = %error, retry_in_ms = backoff.as_millis() as u64, "Docker connection lost; reconnecting");
            // Keep the last view: a reconcile during the outage would
            // otherwise see no containers and remove every service. The
            // error is recorded for the operator, not served to plugins.
            self.update_status(|s| {
                s.connected = false;
                s.last_error = Some(error);
                s.reconnects += 1;
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Every container, inspected.
    async fn list_all(docker: &Docker) -> anyhow::Result<BTreeMap<String, Container>> {
        let summaries = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await?;
        let mut containers = BTreeMap::new();
        let ids: Vec<String> = summaries.into_iter().filter_map(|c| c.id).collect();
        let mut inspected = futures::stream::iter(ids)
            .map(|id| async move { (id.clone(), docker.inspect_container(&id, None).await) })
            .buffer_unordered(INSPECTS_IN_FLIGHT);
        while let Some((id, result)) = inspected.next().await {
            match result {
                Ok(c) => {
                    containers.insert(id, to_container(c));
                }
                // Removed between the listing and the inspect.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(containers)
    }

    /// One connection: subscribe to events, list everything, then follow
    /// the events (and list again every `relist`) until the stream breaks.
    async fn session(
        &self,
        endpoint: &str,
        changed: &Notify,
        relist: Duration,
    ) -> anyhow::Result<()> {
        let docker = connect(endpoint)?.negotiate_version().await?;
        let host_name = docker.info().await?.name.unwrap_or_default();
        // The event stream is pumped by its own task from before the
        // listing, so a change during the listing queues up instead of
        // being lost. (bollard sends the request on the first poll.)
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pumped = docker.clone();
        let pump = AbortOnDrop(tokio::spawn(async move {
            let mut events = pumped.events(Some(EventsOptions {
                since: None,
                until: None,
                filters: Some(HashMap::from([(
                    "type".to_string(),
                    vec!["container".to_string()],
                )])),
            }));
            while let Some(event) = events.next().await {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }));
        tokio::time::sleep(SUBSCRIBE_GRACE).await;
        let mut containers = Self::list_all(&docker).await?;
        self.publish(&host_name, &containers);
        self.update_status(|s| {
            s.connected = true;
            s.last_error = None;
        });
        tracing::info!(endpoint, host = %host_name, containers = containers.len(), "watching Docker");
        changed.notify_one();
        // A missed event (dockerd drops them for slow readers) is repaired
        // by the next full listing.
        let mut relist_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + relist, relist);
        let events = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        });
        let docker = &docker;
        let mut updates = std::pin::pin!(events
            .map(|event| async move {
                let event = event?;
                let at = event.time_nano;
                let Some(change) = classify(event) else {
                    return Ok(None);
                };
                let inspected = match &change {
                    Change::Inspect(id) => match docker.inspect_container(id, None).await {
                        Ok(c) => Some(to_container(c)),
                        Err(e) if is_not_found(&e) => None,
                        Err(e) => return Err(e),
                    },
                    _ => None,
                };
                Ok(Some((change, inspected, at)))
            })
            .buffered(INSPECTS_IN_FLIGHT));
        // A re-list runs beside the events, not instead of them: a burst
        // of events must not wait for a few hundred inspects. Containers
        // an event touched while the listing ran keep what the event said.
        let mut relisting: Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>>,
        > = None;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        loop {
            let update = tokio::select! {
                update = updates.next() => update,
                _ = relist_timer.tick(), if relisting.is_none() => {
                    touched.clear();
                    relisting = Some(Box::pin(Self::list_all(docker)));
                    continue;
                }
                listed = async { relisting.as_mut().expect("guarded by is_some").await }, if relisting.is_some() => {
                    relisting = None;
                    let mut listed = listed?;
                    for id in std::mem::take(&mut touched) {
                        match containers.get(&id) {
                            Some(c) => listed.insert(id, c.clone()),
                            None => listed.remove(&id),
                        };
                    }
                    containers = listed;
                    self.publish(&host_name, &containers);
                    changed.notify_one();
                    continue;
                }
            };
            let Some(update) = update else {
                drop(pump);
                return Ok(());
            };
            let Some((change, inspected, at)) = update? else {
                continue;
            };
            self.update_status(|s| s.events += 1);
            if let Some(at) = at {
                tracing::debug!(lag_ms = lag_ms(at), "container event applied to the view");
            }
            if relisting.is_some() {
                touched.insert(change.id().to_string());
            }
            match change {
                Change::Inspect(id) => match inspected {
                    Some(c) => {
                        containers.insert(id, c);
                    }
                    // Gone before it could be inspected.
                    None => {
                        containers.remove(&id);
                    }
                },
                Change::Died { id, exit_code } => {
                    if let Some(c) = containers.get_mut(&id) {
                        c.running = false;
                        c.paused = false;
                        c.exit_code = exit_code;
                    }
                }
                Change::Paused { id, paused } => {
                    if let Some(c) = containers.get_mut(&id) {
                        c.paused = paused;
                    }
                }
                Change::Destroyed(id) => {
                    containers.remove(&id);
                }
            }
            self.publish(&host_name, &containers);
            changed.notify_one();
        }
    }
}

/// Aborts a task when dropped: the event pump ends with its session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long ago dockerd stamped an event, in milliseconds (for the
/// debug log: the first place to look when sources feel slow).
fn lag_ms(time_nano: i64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(time_nano);
    (now - time_nano) as f64 / 1e6
}

/// What an event means for the view, if anything.
fn classify(event: bollard::models::EventMessage) -> Option<Change> {
    let action = event.action?;
    let actor = event.actor?;
    let id = actor.id?;
    // "exec_start: sh -c ..." and the like carry a detail after a colon.
    match action.split(':').next().unwrap_or_default() {
        "start" | "rename" | "update" => Some(Change::Inspect(id)),
        "die" => {
            let exit_code = actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("exitCode"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Some(Change::Died { id, exit_code })
        }
        "pause" => Some(Change::Paused { id, paused: true }),
        "unpause" => Some(Change::Paused { id, paused: false }),
        "destroy" => Some(Change::Destroyed(id)),
        _ => None,
    }
}

fn connect(endpoint: &str) -> anyhow::Result<Docker> {
    let timeout = 30;
    let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)?
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, timeout, bollard::API_DEFAULT_VERSION)?
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(endpoint, timeout, bollard::API_DEFAULT_VERSION)?
    } else {
        anyhow::bail!(
            "docker_host \"{endpoint}\": write unix:///path/to/docker.sock or tcp://HOST:PORT"
        );
    };
    Ok(docker)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Reduces `docker inspect` to the WIT `container`.
fn to_container(c: ContainerInspectResponse) -> Container {
    let config = c.config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let network = c.network_settings.unwrap_or_default();
    // The network the container was started on, else the default bridge,
    // else the first by name: the same answer on every inspect.
    let mode = c
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let ip = network
        .networks
        .as_ref()
        .and_then(|n| {
            let by_name: BTreeMap<&String, _> = n.iter().collect();
            by_name
                .iter()
                .find(|(name, _)| ***name == mode)
                .or_else(|| by_name.iter().find(|(name, _)| name.as_str() == "bridge"))
                .or_else(|| by_name.iter().next())
                .and_then(|(_, e)| e.ip_address.clone())
        })
        .filter(|ip| !ip.is_empty())
        .unwrap_or_default();
    // A stopped container has no live port map: its bindings come from
    // the host config, so `deregister = "on-success"` can keep a failed
    // container's services with their ports.
    let mut ports = ports_of(network.ports.as_ref());
    if ports.is_empty() {
        ports = ports_of(
            c.host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref()),
        );
        for exposed in config.exposed_ports.iter().flatten() {
            let (private, protocol) = split_port(exposed);
            if !ports
                .iter()
                .any(|p| p.private_port == private && p.protocol == protocol)
                && private != 0
            {
                ports.push(Port {
                    private_port: private,
                    public_port: 0,
                    protocol,
                    host_ip: String::new(),
                });
            }
        }
    }
    Container {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        hostname: config.hostname.unwrap_or_default(),
        ip,
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        exit_code: state
            .exit_code
            .unwrap_or(0)
            .clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        env: config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Pair {
                    key: k.to_string(),
                    value: v.to_string(),
                },
                None => Pair {
                    key: kv,
                    value: String::new(),
                },
            })
            .collect(),
        labels: config
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect(),
        ports,
    }
}

/// "80/tcp" → (80, "tcp"); a missing protocol is TCP.
fn split_port(spec: &str) -> (u16, String) {
    let (port, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    (port.parse().unwrap_or(0), protocol.to_string())
}

/// One `Port` per binding (IPv4 and IPv6 bindings are separate entries),
/// or one unpublished entry for an exposed port without bindings; sorted
/// so that a reconcile sees the same order every time.
fn ports_of(map: Option<&PortMap>) -> Vec<Port> {
    let mut ports = Vec::new();
    for (spec, bindings) in map.into_iter().flatten() {
        let (private_port, protocol) = split_port(spec);
        if private_port == 0 {
            continue;
        }
        let bindings = bindings.as_deref().unwrap_or_default();
        if bindings.is_empty() {
            ports.push(Port {
                private_port,
                public_port: 0,
                protocol: protocol.clone(),
                host_ip: String::new(),
            });
        }
        for b in bindings {
            ports.push(Port {
                private_port,
                public_port: b
                    .host_port
                    .as_deref()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                protocol: protocol.clone(),
                host_ip: b.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    ports.sort_by(|a, b| {
        (a.private_port, &a.protocol, a.host_ip.contains(':')).cmp(&(
            b.private_port,
            &b.protocol,
            b.host_ip.contains(':'),
        ))
    });
    ports
}
