//! The checks of each instance, with their statuses, keyed so that a read
//! can ask "how healthy is instance (node, service)" with borrowed strings
//! and no allocation: DNS does that for every instance it answers.

use std::collections::BTreeMap;

use super::types::CheckStatus;

/// node -> service ID ("" for node-level checks) -> check ID -> status.
/// Derived from the checks table; rebuilt after a snapshot restore.
#[derive(Debug, Clone, Default)]
pub struct InstanceChecks {
    by_node: BTreeMap<String, BTreeMap<String, BTreeMap<String, CheckStatus>>>,
}

impl InstanceChecks {
    pub fn clear(&mut self) {
        self.by_node.clear();
    }

    /// Files (or refiles) a check with its current status.
    pub fn insert(&mut self, node: &str, service_id: &str, check_id: &str, status: CheckStatus) {
        self.by_node
            .entry(node.to_string())
            .or_default()
            .entry(service_id.to_string())
            .or_default()
            .insert(check_id.to_string(), status);
    }

    pub fn remove(&mut self, node: &str, service_id: &str, check_id: &str) {
        let Some(services) = self.by_node.get_mut(node) else {
            return;
        };
        if let Some(checks) = services.get_mut(service_id) {
            checks.remove(check_id);
            if checks.is_empty() {
                services.remove(service_id);
            }
        }
        if services.is_empty() {
            self.by_node.remove(node);
        }
    }

    /// The IDs of the checks filed under (node, service ID).
    pub fn ids<'a>(&'a self, node: &str, service_id: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.by_node
            .get(node)
            .and_then(|s| s.get(service_id))
            .into_iter()
            .flat_map(|checks| checks.keys().map(String::as_str))
    }

    /// The worst status among the node's own checks and the instance's
    /// (passing if there are none).
    pub fn status(&self, node: &str, service_id: &str) -> CheckStatus {
        let Some(services) = self.by_node.get(node) else {
            return CheckStatus::Passing;
        };
        let worst = |sid: &str| {
            services
                .get(sid)
                .and_then(|checks| checks.values().max().copied())
                .unwrap_or(CheckStatus::Passing)
        };
        worst("").max(worst(service_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_of_node_and_instance() {
        let mut ix = InstanceChecks::default();
        assert_eq!(ix.status("n", "web"), CheckStatus::Passing);
        ix.insert("n", "web", "c1", CheckStatus::Warning);
        ix.insert("n", "db", "c2", CheckStatus::Critical);
        assert_eq!(
            ix.status("n", "web"),
            CheckStatus::Warning,
            "db's check is not web's"
        );
        ix.insert("n", "", "serf", CheckStatus::Critical);
        assert_eq!(
            ix.status("n", "web"),
            CheckStatus::Critical,
            "node checks apply to all"
        );
        ix.remove("n", "", "serf");
        ix.insert("n", "web", "c1", CheckStatus::Passing);
        assert_eq!(ix.status("n", "web"), CheckStatus::Passing);
        ix.remove("n", "web", "c1");
        ix.remove("n", "db", "c2");
        assert!(ix.by_node.is_empty(), "empty levels are pruned");
    }
}
