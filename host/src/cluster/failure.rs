//! The leader's failure detector: every node heartbeats; a node not heard
//! from for `node_timeout` gets its `serfHealth` check set critical (so its
//! services drop out of healthy answers and its sessions are invalidated),
//! and passing again when it is heard from.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Cluster, ALIVE_OUTPUT, FAILED_OUTPUT};
use crate::agent::NODE_CHECK_ID;
use crate::catalog::types::CheckStatus;
use crate::catalog::Command;
use crate::raft::Consensus;

/// How often the leader looks.
const SCAN: Duration = Duration::from_millis(200);

pub async fn run(cluster: Arc<Cluster>, consensus: Consensus, me: String) {
    // When this server became leader: nodes are given node_timeout from
    // then, since heartbeats went to the old leader until now.
    let mut leading_since: Option<Instant> = None;
    // When each left node was first seen left: only a heartbeat sent after
    // that (the node came back) revives it.
    let mut left_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(SCAN).await;
        if !consensus.is_leader() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        cluster.saw(&me);
        let timeout = cluster.settings.node_timeout;
        let seen: HashMap<String, Instant> = match cluster.last_seen.lock() {
            Ok(s) => s.clone(),
            Err(_) => return,
        };
        let now = Instant::now();
        let updates: Vec<(String, CheckStatus, &str)> = {
            let Ok(st) = consensus.state().read() else {
                return;
            };
            st.catalog
                .all_checks()
                .filter(|c| c.id == NODE_CHECK_ID)
                // Only agents heartbeat; nodes registered through the
                // catalog API are not judged.
                .filter(|c| {
                    st.catalog
                        .node(&c.node)
                        .is_some_and(|n| n.meta.contains_key(super::META_ROLE))
                })
                .filter_map(|c| {
                    let mut floor = since;
                    if c.output == super::LEFT_OUTPUT {
                        floor = floor.max(*left_since.entry(c.node.clone()).or_insert(now));
                    } else {
                        left_since.remove(&c.node);
                    }
                    let last = seen.get(&c.node).copied().filter(|t| *t > floor);
                    let alive = match last {
                        Some(t) => now.duration_since(t) < timeout,
                        None => now.duration_since(since) < timeout,
                    };
                    match (c.status, alive) {
                        (CheckStatus::Passing, false) => {
                            Some((c.node.clone(), CheckStatus::Critical, FAILED_OUTPUT))
                        }
                        // Only a heartbeat revives a node (a left or failed
                        // node that comes back); leader grace alone does not.
                        (CheckStatus::Critical | CheckStatus::Warning, true) if last.is_some() => {
                            Some((c.node.clone(), CheckStatus::Passing, ALIVE_OUTPUT))
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        for (node, status, output) in updates {
            match status {
                CheckStatus::Critical => {
                    tracing::warn!(%node, "node failed: no heartbeat for {timeout:?}")
                }
                _ => tracing::info!(%node, "node is alive again"),
            }
            let cmd = Command::UpdateCheck {
                node,
                check_id: NODE_CHECK_ID.into(),
                status,
                output: output.into(),
            };
            if let Err(e) = consensus.write(cmd).await {
                tracing::debug!(error = %e, "failure detector write failed");
            }
        }
    }
}
