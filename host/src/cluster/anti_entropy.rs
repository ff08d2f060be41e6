//! Anti-entropy for client agents: the agent's own services and checks
//! (kept in its private, in-memory catalog) are the truth, and the servers'
//! catalog is brought in line with them — each change at once, and a full
//! comparison on joining and every `resync`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::agent::NODE_CHECK_ID;
use crate::catalog::command::{CheckSpec, NodeSpec, Registration, ServiceSpec};
use crate::catalog::types::{CheckStatus, Node};
use crate::catalog::{Catalog, Command};
use crate::raft::Consensus;

/// What one node has in a catalog, in the shape registrations take. The
/// node check (`serfHealth`) is left out: the leader owns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: Option<NodeSpec>,
    pub services: BTreeMap<String, ServiceSpec>,
    pub checks: BTreeMap<String, CheckSpec>,
}

fn node_spec(n: &Node) -> NodeSpec {
    NodeSpec {
        id: n.id.clone(),
        name: n.name.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        tagged_addresses: n.tagged_addresses.clone(),
        meta: n.meta.clone(),
    }
}

impl NodeState {
    /// Reads `node`'s entries from `catalog`.
    pub fn read(catalog: &Catalog, node: &str) -> NodeState {
        let services = catalog
            .node_services(node)
            .map(|s| {
                (
                    s.id.clone(),
                    ServiceSpec {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        tags: s.tags.clone(),
                        address: s.address.clone(),
                        port: s.port,
                        meta: s.meta.clone(),
                        enable_tag_override: s.enable_tag_override,
                        weights: s.weights,
                    },
                )
            })
            .collect();
        let checks = catalog
            .node_checks(node)
            .filter(|c| c.id != NODE_CHECK_ID)
            .map(|c| {
                (
                    c.id.clone(),
                    CheckSpec {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        status: c.status,
                        notes: c.notes.clone(),
                        output: c.output.clone(),
                        service_id: c.service_id.clone(),
                        definition: c.definition.clone(),
                    },
                )
            })
            .collect();
        NodeState {
            node: catalog.node(node).map(node_spec),
            services,
            checks,
        }
    }
}

/// The writes that turn `remote` into `local`. The node's own
/// registration comes first (and must commit first): services hang off it.
pub fn plan(local: &NodeState, remote: &NodeState) -> (Option<Command>, Vec<Command>) {
    let Some(node) = &local.node else {
        return (None, Vec::new());
    };
    let first = (remote.node.as_ref() != Some(node)).then(|| {
        Command::Register(Registration {
            node: node.clone(),
            skip_node_update: false,
            service: None,
            // A node new to the servers starts alive; from then on the
            // leader's failure detector owns this check.
            checks: match remote.node {
                None => vec![crate::agent::node_check(CheckStatus::Passing)],
                Some(_) => Vec::new(),
            },
        })
    });
    let mut rest = Vec::new();
    // Checks grouped by service once: looking them up per service would
    // cost O(services x checks) on a node with tens of thousands of each.
    fn by_service(state: &NodeState) -> BTreeMap<&str, Vec<&CheckSpec>> {
        let mut grouped: BTreeMap<&str, Vec<&CheckSpec>> = BTreeMap::new();
        for c in state.checks.values().filter(|c| !c.service_id.is_empty()) {
            grouped.entry(c.service_id.as_str()).or_default().push(c);
        }
        grouped
    }
    let (local_checks, remote_checks) = (by_service(local), by_service(remote));
    let none = Vec::new();
    for (id, service) in &local.services {
        let mine = local_checks.get(id.as_str()).unwrap_or(&none);
        let theirs = remote_checks.get(id.as_str()).unwrap_or(&none);
        if remote.services.get(id) != Some(service) || theirs != mine {
            rest.push(Command::Register(Registration {
                node: node.clone(),
                skip_node_update: true,
                service: Some(service.clone()),
                checks: mine.iter().map(|c| (*c).clone()).collect(),
            }));
        }
    }
    let node_checks: Vec<CheckSpec> = local
        .checks
        .values()
        .filter(|c| c.service_id.is_empty() && remote.checks.get(&c.id) != Some(*c))
        .cloned()
        .collect();
    if !node_checks.is_empty() {
        rest.push(Command::Register(Registration {
            node: node.clone(),
            skip_node_update: true,
            service: None,
            checks: node_checks,
        }));
    }
    for id in remote.services.keys() {
        if !local.services.contains_key(id) {
            rest.push(Command::Deregister {
                node: node.name.clone(),
                service_id: Some(id.clone()),
                check_id: None,
            });
        }
    }
    for (id, check) in &remote.checks {
        // A removed service takes its checks with it.
        let service_gone =
            !check.service_id.is_empty() && !local.services.contains_key(&check.service_id);
        if !local.checks.contains_key(id) && !service_gone {
            rest.push(Command::Deregister {
                node: node.name.clone(),
                service_id: None,
                check_id: Some(id.clone()),
            });
        }
    }
    (first, rest)
}

/// Writes per request to the servers, and requests in flight: a burst of
/// registrations costs a few RPCs and a few Raft entries, not one each.
const BATCH: usize = 256;
const PARALLEL_BATCHES: usize = 4;

/// Runs for the life of a client agent.
pub async fn run(cluster: Arc<Cluster>, local: Consensus, node: String, resync: Duration) {
    let mut applied = local.applied();
    // What the servers are known to hold; None forces a full comparison.
    let mut remote: Option<NodeState> = None;
    let rejoined = cluster.rejoined();
    loop {
        applied.borrow_and_update();
        let known = match remote.take() {
            Some(r) => r,
            None => match cluster.node_view(&node).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "anti-entropy: cannot read this node from the servers");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let mine = match local.state().read() {
            Ok(st) => NodeState::read(&st.catalog, &node),
            Err(_) => return,
        };
        let (first, rest) = plan(&mine, &known);
        let mut synced = true;
        if let Some(cmd) = first {
            synced = cluster.write(cmd).await.is_ok();
        }
        if synced && !rest.is_empty() {
            let count = rest.len();
            let batches: Vec<Vec<Command>> = rest.chunks(BATCH).map(<[Command]>::to_vec).collect();
            let failed: usize = stream::iter(batches)
                .map(|batch| {
                    let cluster = cluster.clone();
                    let size = batch.len();
                    async move { cluster.write_batch(batch).await.unwrap_or(size) }
                })
                .buffer_unordered(PARALLEL_BATCHES)
                .fold(0, |sum, failed| std::future::ready(sum + failed))
                .await;
            tracing::debug!(count, failed, "anti-entropy: synced changes");
            synced = failed == 0;
        }
        if !synced {
            // Compare afresh once the servers answer again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        remote = Some(mine);
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(resync) => remote = None,
            _ = rejoined.notified() => remote = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::types::Weights;
    use crate::dns::fixture::check;

    fn node() -> NodeSpec {
        NodeSpec {
            id: "id".into(),
            name: "c1".into(),
            address: "127.0.0.4".into(),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            meta: Default::default(),
        }
    }

    fn service(id: &str, port: u16) -> ServiceSpec {
        ServiceSpec {
            id: id.into(),
            name: "web".into(),
            tags: vec![],
            address: String::new(),
            port,
            meta: Default::default(),
            enable_tag_override: false,
            weights: Weights::default(),
        }
    }

    fn state(services: &[ServiceSpec], checks: &[CheckSpec]) -> NodeState {
        NodeState {
            node: Some(node()),
            services: services.iter().map(|s| (s.id.clone(), s.clone())).collect(),
            checks: checks.iter().map(|c| (c.id.clone(), c.clone())).collect(),
        }
    }

    #[test]
    fn equal_states_need_no_writes() {
        let s = state(&[service("a", 1)], &[check("c", "a", CheckStatus::Passing)]);
        let (first, rest) = plan(&s, &s.clone());
        assert!(first.is_none() && rest.is_empty());
    }

    #[test]
    fn a_node_new_to_the_servers_is_registered_alive_first() {
        let local = state(&[service("a", 1)], &[]);
        let (first, rest) = plan(&local, &NodeState::default());
        match first {
            Some(Command::Register(r)) => {
                assert_eq!(r.checks.len(), 1);
                assert_eq!(r.checks[0].id, NODE_CHECK_ID);
            }
            other => panic!("expected the node registration, got {other:?}"),
        }
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn changed_check_re_registers_its_service_and_extras_are_removed() {
        let local = state(
            &[service("a", 1)],
            &[
                check("c", "a", CheckStatus::Critical),
                check("n", "", CheckStatus::Passing),
            ],
        );
        let remote = state(
            &[service("a", 1), service("gone", 2)],
            &[
                check("c", "a", CheckStatus::Passing),
                check("n", "", CheckStatus::Passing),
                check("stale", "", CheckStatus::Passing),
                check("gone-check", "gone", CheckStatus::Passing),
            ],
        );
        let (first, rest) = plan(&local, &remote);
        assert!(first.is_none());
        let text = format!("{rest:?}");
        assert_eq!(rest.len(), 3, "{text}");
        assert!(text.contains("service_id: Some(\"gone\")"), "{text}");
        assert!(text.contains("check_id: Some(\"stale\")"), "{text}");
        assert!(!text.contains("gone-check"), "{text}");
    }
}
