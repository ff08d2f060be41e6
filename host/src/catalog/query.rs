//! Read-side views of the catalog. Each returns what it found together with
//! the index a blocking query on it should compare against.

use std::collections::BTreeMap;

use super::kv::KvStore;
use super::types::*;
use super::Catalog;

/// One row of `/v1/health/service`: an instance, its node and every check
/// that affects it (the node's checks and its own).
pub struct HealthEntry<'a> {
    pub node: &'a Node,
    pub service: &'a Service,
    pub checks: Vec<&'a Check>,
}

impl HealthEntry<'_> {
    /// The worst status among the instance's checks (passing if none).
    pub fn status(&self) -> CheckStatus {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(CheckStatus::Passing)
    }
}

impl Catalog {
    /// The KV table.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The services registered on `node`.
    pub fn node_services<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .range((node.to_string(), String::new())..)
            .take_while(move |((n, _), _)| n == node)
            .map(|(_, s)| s)
    }

    /// One service instance.
    pub fn service(&self, node: &str, id: &str) -> Option<&Service> {
        self.services.get(&(node.to_string(), id.to_string()))
    }

    /// The checks registered on `node` (node-level and service-level).
    pub fn node_checks<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks
            .range((node.to_string(), String::new())..)
            .take_while(move |((n, _), _)| n == node)
            .map(|(_, c)| c)
    }

    /// One check.
    pub fn check(&self, node: &str, id: &str) -> Option<&Check> {
        self.checks.get(&(node.to_string(), id.to_string()))
    }

    /// Every check.
    pub fn all_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values()
    }

    /// Service names with the union of their instances' tags, counting
    /// only instances on nodes that match `node_meta`.
    pub fn service_names(&self, node_meta: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for svc in self
            .services
            .values()
            .filter(|s| self.node_matches(&s.node, node_meta))
        {
            let tags = out.entry(svc.name.as_str()).or_default();
            for t in &svc.tags {
                if !tags.contains(&t.as_str()) {
                    tags.push(t.as_str());
                }
            }
        }
        for tags in out.values_mut() {
            tags.sort_unstable();
        }
        out
    }

    /// Instances of the service `name` carrying every tag in `tags` (name
    /// and tags compared case-insensitively, as Consul does).
    pub fn instances<'a>(&'a self, name: &str, tags: &[String]) -> Vec<(&'a Node, &'a Service)> {
        let Some(keys) = self.by_name.get(&name.to_lowercase()) else {
            return Vec::new();
        };
        keys.0
            .iter()
            .filter_map(|k| self.services.get(k))
            .filter(|s| tags.iter().all(|t| s.has_tag(t)))
            .filter_map(|s| self.nodes.get(&s.node).map(|n| (n, s)))
            .collect()
    }

    /// Whether node `name` carries every `key:value` in `filters`
    /// (`?node-meta=`).
    pub fn node_matches(&self, name: &str, filters: &[(String, String)]) -> bool {
        filters.is_empty()
            || self.nodes.get(name).is_some_and(|n| {
                filters
                    .iter()
                    .all(|(k, v)| n.meta.get(k).is_some_and(|x| x == v))
            })
    }

    /// Instances with their health, for `/v1/health/service`.
    pub fn health_entries<'a>(&'a self, name: &str, tags: &[String]) -> Vec<HealthEntry<'a>> {
        self.instances(name, tags)
            .into_iter()
            .map(|(node, service)| HealthEntry {
                node,
                service,
                checks: self.instance_checks(&node.name, &service.id).collect(),
            })
            .collect()
    }

    /// The checks that decide an instance's health: the node's own checks,
    /// then the instance's, each group in ID order.
    pub fn instance_checks<'a>(
        &'a self,
        node: &'a str,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks_by_instance
            .ids(node, "")
            .chain(self.checks_by_instance.ids(node, service_id))
            .filter_map(move |id| self.checks.get(&(node.to_string(), id.to_string())))
    }

    /// The worst status among an instance's checks and its node's
    /// (passing if none); allocation-free.
    pub fn instance_status(&self, node: &str, service_id: &str) -> CheckStatus {
        self.checks_by_instance.status(node, service_id)
    }

    /// Every instance of service `name` in a random order, resolved only as
    /// the caller takes them: DNS picks a few healthy instances out of
    /// thousands without looking at the rest. The order is a random start
    /// and a random stride coprime with the count, so every instance is
    /// visited once and each is equally likely to come first.
    pub fn shuffled_instances<'a, R: rand::Rng>(
        &'a self,
        name: &str,
        rng: &mut R,
    ) -> impl Iterator<Item = (&'a Node, &'a Service)> + 'a {
        let keys: &'a [(String, String)] = self
            .by_name
            .get(&name.to_lowercase())
            .map_or(&[], |k| k.0.as_slice());
        let n = keys.len();
        let (start, stride) = match n {
            0 | 1 => (0, 1),
            _ => {
                let mut stride = rng.gen_range(1..n);
                while gcd(stride, n) != 1 {
                    stride = rng.gen_range(1..n);
                }
                (rng.gen_range(0..n), stride)
            }
        };
        (0..n)
            .map(move |i| &keys[(start + i * stride) % n])
            .filter_map(|k| self.services.get(k))
            .filter_map(|s| self.nodes.get(&s.node).map(|n| (n, s)))
    }

    /// The index for queries that join nodes, services and checks.
    pub fn health_index(&self) -> Index {
        let i = self.indexes;
        i.nodes.max(i.services).max(i.checks)
    }

    /// All sessions.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// One session.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
