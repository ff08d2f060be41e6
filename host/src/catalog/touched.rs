//! Which service instances a batch of commands may have changed, for the
//! export feed: it recomputes only these instead of the whole catalog.
//! Over-marking is harmless (the feed drops instances that did not change);
//! under-marking would lose a change, so every mutation of a node, service
//! or check marks what it affects.

use std::collections::BTreeSet;

use super::Key;

/// Instances touched since the last `Catalog::take_touched`.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// Everything (a snapshot restore replaced the catalog).
    pub all: bool,
    /// Nodes whose every instance may have changed: the node's address,
    /// a node-level check, or the node itself went away.
    pub nodes: BTreeSet<String>,
    /// Single instances, by (node, service ID).
    pub instances: BTreeSet<Key>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        !self.all && self.nodes.is_empty() && self.instances.is_empty()
    }

    pub(super) fn node(&mut self, node: &str) {
        if !self.all && !self.nodes.contains(node) {
            self.nodes.insert(node.to_string());
        }
    }

    pub(super) fn instance(&mut self, node: &str, service_id: &str) {
        if !self.all {
            self.instances
                .insert((node.to_string(), service_id.to_string()));
        }
    }

    /// A check changed: a node-level check (empty service ID) decides the
    /// health of every instance on its node.
    pub(super) fn check(&mut self, node: &str, service_id: &str) {
        if service_id.is_empty() {
            self.node(node);
        } else {
            self.instance(node, service_id);
        }
    }
}
