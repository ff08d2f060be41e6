//! Runs the checks this agent owns through their plugins: HTTP and TCP
//! checks through the built-ins, `Wasm` checks through `[[check_plugin]]`s.
//!
//! Each check is one task that sleeps until its next slot, so a check never
//! runs twice at once; first slots are spread at random over the interval,
//! so a thousand checks registered together do not fire together. Results
//! pass Consul's SuccessBeforePassing / FailuresBeforeCritical thresholds
//! and go to the agent as reports; the agent writes only what differs from
//! the catalog, so steady checks cost no Raft traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::stats::SchedulerStats;
use crate::catalog::types::{CheckDefinition, CheckStatus};
use crate::plugins::health_check::{CheckTarget, Verdict};
use crate::plugins::{AllowList, Plugins};

/// Consul's floor for check intervals.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Consul's default timeout of HTTP and TCP checks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A check the agent runs itself, with what it examines.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub check_id: String,
    pub definition: CheckDefinition,
    pub service_id: String,
    pub service_name: String,
    /// The service's address, else its node's.
    pub address: String,
    pub port: u16,
}

/// A check result that passed its thresholds, for the agent to record.
#[derive(Debug, Clone)]
pub struct Report {
    pub check_id: String,
    pub status: CheckStatus,
    pub output: String,
}

/// The agent's running checks.
pub struct Scheduler {
    plugins: Plugins,
    reports: mpsc::UnboundedSender<Report>,
    running: Mutex<HashMap<String, (Probe, AbortHandle)>>,
    pub stats: Arc<SchedulerStats>,
}

impl Scheduler {
    /// A scheduler that sends its reports to `reports`.
    pub fn new(plugins: Plugins, reports: mpsc::UnboundedSender<Report>) -> Scheduler {
        Scheduler {
            plugins,
            reports,
            running: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        }
    }

    /// Starts running a check, or restarts it if its definition changed; an
    /// unchanged re-registration keeps its schedule and thresholds.
    pub fn schedule(&self, probe: Probe) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if let Some((existing, handle)) = running.get(&probe.check_id) {
            if *existing == probe && !handle.is_finished() {
                return;
            }
            handle.abort();
        }
        let task = tokio::spawn(run(
            self.plugins.clone(),
            probe.clone(),
            self.reports.clone(),
            self.stats.clone(),
        ));
        running.insert(probe.check_id.clone(), (probe, task.abort_handle()));
    }

    /// Stops a check (deregistered).
    pub fn cancel(&self, check_id: &str) {
        if let Ok(mut running) = self.running.lock() {
            if let Some((_, handle)) = running.remove(check_id) {
                handle.abort();
            }
        }
    }

    /// How many checks are scheduled.
    pub fn len(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether no check is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The plugin, configuration and reachable addresses of one check, fixed
/// for as long as its definition is.
struct Prepared {
    plugin: String,
    target: CheckTarget,
    config: String,
    /// (host, port) the check may reach besides its plugin's grant.
    reach: Option<(String, u16)>,
}

fn prepare(probe: &Probe, plugins: &Plugins) -> Prepared {
    let def = &probe.definition;
    let timeout = match def.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let target = CheckTarget {
        service_id: probe.service_id.clone(),
        service_name: probe.service_name.clone(),
        address: probe.address.clone(),
        port: probe.port,
        endpoint: def.endpoint.clone(),
        timeout,
        tls_skip_verify: def.kind == "http" && def.tls_skip_verify,
    };
    match def.kind.as_str() {
        "http" => Prepared {
            plugin: "http-check".into(),
            config: serde_json::json!({
                "method": def.method,
                "header": def.headers,
                "body": def.body,
                "tls_skip_verify": def.tls_skip_verify,
            })
            .to_string(),
            reach: url_host_port(&def.endpoint),
            target,
        },
        "tcp" => Prepared {
            plugin: "tcp-check".into(),
            config: "{}".into(),
            reach: host_port(&def.endpoint),
            target,
        },
        _ => {
            // The plugin block's config, with the check's own keys on top.
            let mut config = plugins
                .get(&def.plugin)
                .map(|p| p.config.clone())
                .unwrap_or_default();
            if let Ok(serde_json::Value::Object(own)) = serde_json::from_str(&def.config) {
                config.extend(own);
            }
            Prepared {
                plugin: def.plugin.clone(),
                config: serde_json::Value::Object(config).to_string(),
                reach: (!probe.address.is_empty() && probe.port != 0)
                    .then(|| (probe.address.clone(), probe.port)),
                target,
            }
        }
    }
}

/// `host:port` of an http(s) URL, with the scheme's default port.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    match host_port(authority) {
        Some(hp) => Some(hp),
        None => Some((authority.trim_matches(['[', ']']).to_string(), default)),
    }
}

/// Splits `host:port` / `[v6]:port`.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') && !host.starts_with('[') {
        return None; // a bare IPv6 address without a port
    }
    let port = port.parse().ok()?;
    Some((host.trim_matches(['[', ']']).to_string(), port))
}

/// Runs one check once.
async fn run_once(plugins: &Plugins, prepared: &Prepared) -> Verdict {
    let Some(plugin) = plugins.get(&prepared.plugin) else {
        return Verdict {
            status: CheckStatus::Critical,
            output: format!(
                "no plugin named \"{}\" is loaded (add a [[check_plugin]] block with that name)",
                prepared.plugin
            ),
            fault: None,
        };
    };
    let mut allow = AllowList::default();
    if let Some((host, port)) = &prepared.reach {
        allow.allow(host, Some(*port)).await;
    }
    allow.allow_grant(&plugin.block.grant).await;
    plugins
        .run_check(&plugin, &prepared.target, &prepared.config, allow)
        .await
}

/// Consul's thresholds: a status moves to passing/warning only after
/// `success_before_passing` good results in a row, to critical only after
/// `failures_before_critical` bad ones.
#[derive(Default)]
struct Thresholds {
    successes: u32,
    failures: u32,
}

impl Thresholds {
    fn admit(&mut self, def: &CheckDefinition, verdict: &Verdict) -> bool {
        if verdict.status == CheckStatus::Critical {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            self.failures >= def.failures_before_critical
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            self.successes >= def.success_before_passing
        }
    }
}

/// One check's life: wait for the slot, run, report, repeat.
async fn run(
    plugins: Plugins,
    probe: Probe,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<SchedulerStats>,
) {
    let prepared = prepare(&probe, &plugins);
    let interval = Duration::from_millis(probe.definition.interval_ms).max(MIN_INTERVAL);
    let offset = rand::thread_rng().gen_range(0..interval.as_micros() as u64);
    let mut due = Instant::now() + Duration::from_micros(offset);
    let mut thresholds = Thresholds::default();
    loop {
        tokio::time::sleep_until(due).await;
        stats.record_start(Instant::now().saturating_duration_since(due));
        let verdict = run_once(&plugins, &prepared).await;
        stats.record_run(verdict.fault.is_some());
        if thresholds.admit(&probe.definition, &verdict) {
            let report = Report {
                check_id: probe.check_id.clone(),
                status: verdict.status,
                output: verdict.output,
            };
            if reports.send(report).is_err() {
                return; // the agent is gone
            }
        }
        due += interval;
        let now = Instant::now();
        if due <= now {
            // A run overran its slot: skip the missed slots rather than
            // running back to back to catch up.
            let behind = now.duration_since(due).as_micros() / interval.as_micros().max(1);
            due += interval * (behind as u32 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: CheckStatus) -> Verdict {
        Verdict {
            status,
            output: String::new(),
            fault: None,
        }
    }

    #[test]
    fn thresholds_hold_a_status_until_enough_results_agree() {
        let def = CheckDefinition {
            success_before_passing: 2,
            failures_before_critical: 3,
            ..Default::default()
        };
        let mut t = Thresholds::default();
        assert!(!t.admit(&def, &verdict(CheckStatus::Passing)));
        assert!(t.admit(&def, &verdict(CheckStatus::Passing)));
        assert!(!t.admit(&def, &verdict(CheckStatus::Critical)));
        assert!(!t.admit(&def, &verdict(CheckStatus::Critical)));
        assert!(
            !t.admit(&def, &verdict(CheckStatus::Passing)),
            "a pass resets the failures"
        );
        assert!(!t.admit(&def, &verdict(CheckStatus::Critical)));
        assert!(!t.admit(&def, &verdict(CheckStatus::Critical)));
        assert!(t.admit(&def, &verdict(CheckStatus::Critical)));
    }

    #[test]
    fn endpoints_name_what_a_check_may_reach() {
        assert_eq!(
            url_host_port("http://127.0.0.1:8080/health"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            url_host_port("https://example.com/x"),
            Some(("example.com".into(), 443))
        );
        assert_eq!(url_host_port("http://[::1]:81/"), Some(("::1".into(), 81)));
        assert_eq!(
            host_port("localhost:6379"),
            Some(("localhost".into(), 6379))
        );
        assert_eq!(host_port("nope"), None);
    }
}
