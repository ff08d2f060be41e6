//! Where an instance goes in etcd and what is stored there, plus the
//! exporter's picture of the catalog (which instance owns which key).
//!
//! The layout is Registrator's: `<prefix>/<service-name>/<service-id>`, so
//! that anything that reads Registrator's etcd backend reads this too.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ValueFormat;

/// The health of an instance, from the WIT `check-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

/// Identifies an instance across changes (the WIT `instance-key`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceKey {
    pub node: String,
    pub id: String,
}

/// A service instance as the node hands it over (the WIT
/// `service-instance`, minus the node's address, which no layout uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// The service's address, else its node's.
    pub address: String,
    pub port: u16,
    pub meta: Vec<(String, String)>,
    pub status: Status,
}

/// One catalog change (the WIT `change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Instance),
    Remove(InstanceKey),
}

/// A `/` inside a name or ID would add a directory level and break the
/// layout for readers, so it becomes `_`.
fn segment(text: &str) -> String {
    text.replace('/', "_")
}

/// The etcd key of an instance.
pub fn key(prefix: &str, inst: &Instance) -> String {
    format!("{prefix}/{}/{}", segment(&inst.name), segment(&inst.id))
}

/// The JSON value, field for field what the docs promise (and in this
/// order, which serde keeps for a struct).
#[derive(serde::Serialize)]
struct JsonValue<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Node")]
    node: &'a str,
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Tags")]
    tags: &'a [String],
    /// Sorted, so that the same instance always gives the same bytes and
    /// resync can tell an unchanged key from a changed one.
    #[serde(rename = "Meta")]
    meta: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "Status")]
    status: &'static str,
}

/// The value stored under an instance's key.
pub fn value(format: ValueFormat, inst: &Instance) -> String {
    match format {
        // Go's net.JoinHostPort, as Registrator uses: brackets around IPv6.
        ValueFormat::Address if inst.address.contains(':') => {
            format!("[{}]:{}", inst.address, inst.port)
        }
        ValueFormat::Address => format!("{}:{}", inst.address, inst.port),
        ValueFormat::Json => {
            let v = JsonValue {
                id: &inst.id,
                name: &inst.name,
                node: &inst.node,
                address: &inst.address,
                port: inst.port,
                tags: &inst.tags,
                meta: inst
                    .meta
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                status: inst.status.as_str(),
            };
            // Only strings, numbers, lists and string maps: cannot fail.
            serde_json::to_string(&v).unwrap_or_default()
        }
    }
}

/// What should be in etcd: every instance the node gave us, with its key
/// and value, and for each key the instances that map to it.
///
/// Service IDs are unique per node only, so two instances on different
/// nodes can land on the same key. The key then holds the value of the
/// smallest (node, id): a rule that does not depend on the order changes
/// came in, so apply and resync agree, and removing one of the two hands
/// the key to the other instead of deleting it.
#[derive(Debug, Default)]
pub struct Catalog {
    instances: BTreeMap<InstanceKey, (String, String)>,
    owners: BTreeMap<String, BTreeSet<InstanceKey>>,
}

impl Catalog {
    /// Forgets everything (resync starts over).
    pub fn clear(&mut self) {
        self.instances.clear();
        self.owners.clear();
    }

    /// Adds or replaces an instance; returns the keys whose value may have
    /// changed (its old key too, if it moved).
    pub fn upsert(&mut self, prefix: &str, format: ValueFormat, inst: &Instance) -> Vec<String> {
        let ik = InstanceKey {
            node: inst.node.clone(),
            id: inst.id.clone(),
        };
        let new_key = key(prefix, inst);
        let mut touched = self.remove(&ik).into_iter().collect::<Vec<_>>();
        touched.retain(|k| *k != new_key);
        self.owners
            .entry(new_key.clone())
            .or_default()
            .insert(ik.clone());
        self.instances
            .insert(ik, (new_key.clone(), value(format, inst)));
        touched.push(new_key);
        touched
    }

    /// Removes an instance; returns its key, or None if it was unknown.
    pub fn remove(&mut self, ik: &InstanceKey) -> Option<String> {
        let (key, _) = self.instances.remove(ik)?;
        if let Some(set) = self.owners.get_mut(&key) {
            set.remove(ik);
            if set.is_empty() {
                self.owners.remove(&key);
            }
        }
        Some(key)
    }

    /// The value `key` should hold, or None if it should not exist.
    pub fn value_of(&self, key: &str) -> Option<&str> {
        let owner = self.owners.get(key)?.first()?;
        self.instances.get(owner).map(|(_, v)| v.as_str())
    }

    /// Every key that should exist, with its value, in key order.
    pub fn targets(&self) -> BTreeMap<&str, &str> {
        self.owners
            .keys()
            .filter_map(|k| Some((k.as_str(), self.value_of(k)?)))
            .collect()
    }

    /// How many instances share a key with another one.
    pub fn collisions(&self) -> usize {
        self.instances.len() - self.owners.len()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A passing instance with a tag and some meta.
    pub fn inst(node: &str, id: &str, name: &str, address: &str, port: u16) -> Instance {
        Instance {
            node: node.into(),
            id: id.into(),
            name: name.into(),
            tags: vec!["v1".into()],
            address: address.into(),
            port,
            meta: vec![("zone".into(), "a".into()), ("env".into(), "prod".into())],
            status: Status::Passing,
        }
    }

    #[test]
    fn registrator_layout() {
        let i = inst("n1", "host:redis:6379", "redis", "10.0.0.5", 6379);
        assert_eq!(key("/services", &i), "/services/redis/host:redis:6379");
        assert_eq!(value(ValueFormat::Address, &i), "10.0.0.5:6379");
        let v6 = inst("n1", "a", "b", "fd00::1", 80);
        assert_eq!(value(ValueFormat::Address, &v6), "[fd00::1]:80");
    }

    #[test]
    fn slashes_in_segments() {
        let i = inst("n1", "web/1", "team/web", "10.0.0.5", 80);
        assert_eq!(key("/p", &i), "/p/team_web/web_1");
    }

    #[test]
    fn json_value() {
        let mut i = inst("n1", "web-1", "web", "10.0.0.5", 80);
        i.status = Status::Warning;
        assert_eq!(
            value(ValueFormat::Json, &i),
            r#"{"ID":"web-1","Name":"web","Node":"n1","Address":"10.0.0.5","Port":80,"Tags":["v1"],"Meta":{"env":"prod","zone":"a"},"Status":"warning"}"#
        );
        let mut bare = inst("n1", "x\"y", "web", "h", 1);
        bare.tags.clear();
        bare.meta.clear();
        let parsed: serde_json::Value =
            serde_json::from_str(&value(ValueFormat::Json, &bare)).expect("valid JSON");
        assert_eq!(parsed["ID"], "x\"y");
        assert_eq!(parsed["Tags"], serde_json::json!([]));
        assert_eq!(parsed["Meta"], serde_json::json!({}));
    }

    #[test]
    fn catalog_moves_and_collisions() {
        let mut c = Catalog::default();
        let a = inst("n1", "web-1", "web", "10.0.0.1", 80);
        assert_eq!(
            c.upsert("/s", ValueFormat::Address, &a),
            vec!["/s/web/web-1".to_string()]
        );
        // Renamed: the old key is touched too.
        let mut renamed = a.clone();
        renamed.name = "www".into();
        assert_eq!(
            c.upsert("/s", ValueFormat::Address, &renamed),
            vec!["/s/web/web-1".to_string(), "/s/www/web-1".to_string()]
        );
        assert_eq!(c.value_of("/s/web/web-1"), None);
        // The same ID on another node: the smallest (node, id) wins,
        // whichever came first.
        let other = inst("n0", "web-1", "www", "10.0.0.2", 80);
        c.upsert("/s", ValueFormat::Address, &other);
        assert_eq!(c.value_of("/s/www/web-1"), Some("10.0.0.2:80"));
        assert_eq!(c.collisions(), 1);
        let gone = c.remove(&InstanceKey {
            node: "n0".into(),
            id: "web-1".into(),
        });
        assert_eq!(gone.as_deref(), Some("/s/www/web-1"));
        assert_eq!(c.value_of("/s/www/web-1"), Some("10.0.0.1:80"));
        assert_eq!(c.collisions(), 0);
        assert_eq!(
            c.remove(&InstanceKey {
                node: "n9".into(),
                id: "nope".into()
            }),
            None
        );
        let targets = c.targets();
        assert_eq!(targets.len(), 1);
    }
}
