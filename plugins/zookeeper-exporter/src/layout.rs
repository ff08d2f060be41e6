//! Registrator's ZooKeeper layout: `<path>/<service-name>` (persistent)
//! holding one ephemeral `<address>:<port>` child per instance, whose data
//! is the JSON Registrator's `ZnodeBody` marshals to.

use std::collections::BTreeMap;

use serde::Serialize;

/// A catalog instance as the exporter needs it (the WIT record, minus what
/// the layout does not use), so the logic is testable off wasm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Vec<(String, String)>,
}

/// Identifies a catalog instance across changes (WIT `instance-key`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub node: String,
    pub id: String,
}

/// One exported child: the service name and the `<address>:<port>` node
/// name under it. Ordered by service first, so a range query finds every
/// child of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildKey {
    pub service: String,
    pub child: String,
}

/// Registrator's `ZnodeBody`, field names and order included, so its
/// consumers parse ours unchanged.
#[derive(Serialize)]
struct ZnodeBody<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "IP")]
    ip: &'a str,
    #[serde(rename = "PublicPort")]
    public_port: u16,
    #[serde(rename = "PrivatePort")]
    private_port: u16,
    #[serde(rename = "ContainerID")]
    container_id: &'a str,
    #[serde(rename = "Tags")]
    tags: &'a [String],
    /// Sorted, as Go marshals maps; a duplicate key keeps its last value.
    #[serde(rename = "Attrs")]
    attrs: BTreeMap<&'a str, &'a str>,
}

impl Instance {
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            node: self.node.clone(),
            id: self.id.clone(),
        }
    }

    /// Where the instance goes, or why it cannot be exported (a name that
    /// is not a single znode name would land somewhere else or be refused
    /// by the server on every retry).
    pub fn child_key(&self) -> Result<ChildKey, String> {
        let child = format!("{}:{}", self.address, self.port);
        check_name("service name", &self.name)?;
        check_name("address", &child)?;
        Ok(ChildKey {
            service: self.name.clone(),
            child,
        })
    }

    /// The child's data.
    pub fn body(&self) -> Vec<u8> {
        let container_id = self
            .meta
            .iter()
            .rev()
            .find(|(k, _)| k == "container-id")
            .map_or("", |(_, v)| v.as_str());
        let body = ZnodeBody {
            name: &self.name,
            ip: &self.address,
            public_port: self.port,
            private_port: self.port,
            container_id,
            tags: &self.tags,
            attrs: self
                .meta
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        // Serializing strings and integers into a Vec cannot fail; an empty
        // body is a harmless fallback rather than a panic path.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(format!("{what} \"{name}\" cannot be a znode name"));
    }
    // ZooKeeper's PathUtils also refuses these code points.
    if name.chars().any(|c| {
        ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
    }) {
        return Err(format!(
            "{what} \"{name}\" holds a character ZooKeeper refuses"
        ));
    }
    Ok(())
}

/// `<base>/<name>`, minding the root.
pub fn join(base: &str, name: &str) -> String {
    if base == "/" {
        format!("/{name}")
    } else {
        format!("{base}/{name}")
    }
}

pub fn service_path(base: &str, service: &str) -> String {
    join(base, service)
}

pub fn child_path(base: &str, key: &ChildKey) -> String {
    join(&join(base, &key.service), &key.child)
}

/// Every ancestor of `path` and `path` itself, root excluded, shortest
/// first: what must exist before a child of `path` can be created.
pub fn prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = path[at + 1..].find('/') {
        at += i + 1;
        out.push(path[..at].to_string());
    }
    if path != "/" {
        out.push(path.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        Instance {
            node: "n1".into(),
            id: "web-1".into(),
            name: "web".into(),
            tags: vec!["a".into(), "b".into()],
            address: "10.0.0.5".into(),
            port: 8080,
            meta: vec![
                ("z".into(), "1".into()),
                ("container-id".into(), "abc123".into()),
            ],
        }
    }

    #[test]
    fn body_matches_registrator() {
        let body = String::from_utf8(inst().body()).unwrap();
        assert_eq!(
            body,
            r#"{"Name":"web","IP":"10.0.0.5","PublicPort":8080,"PrivatePort":8080,"ContainerID":"abc123","Tags":["a","b"],"Attrs":{"container-id":"abc123","z":"1"}}"#
        );
        let mut bare = inst();
        bare.meta.clear();
        bare.tags.clear();
        assert_eq!(
            String::from_utf8(bare.body()).unwrap(),
            r#"{"Name":"web","IP":"10.0.0.5","PublicPort":8080,"PrivatePort":8080,"ContainerID":"","Tags":[],"Attrs":{}}"#
        );
    }

    #[test]
    fn keys_and_paths() {
        let k = inst().child_key().unwrap();
        assert_eq!(
            k,
            ChildKey {
                service: "web".into(),
                child: "10.0.0.5:8080".into()
            }
        );
        assert_eq!(child_path("/services", &k), "/services/web/10.0.0.5:8080");
        assert_eq!(child_path("/", &k), "/web/10.0.0.5:8080");
        assert_eq!(service_path("/a/b", "web"), "/a/b/web");
        let mut bad = inst();
        bad.name = "a/b".into();
        assert!(bad.child_key().is_err());
        bad.name = "..".into();
        assert!(bad.child_key().is_err());
        bad.name = "x\u{1}".into();
        assert!(bad.child_key().is_err());
        let mut v6 = inst();
        v6.address = "::1".into();
        assert_eq!(v6.child_key().unwrap().child, "::1:8080");
    }

    #[test]
    fn prefixes_of_paths() {
        assert_eq!(prefixes("/a/b/c"), vec!["/a", "/a/b", "/a/b/c"]);
        assert_eq!(prefixes("/services"), vec!["/services"]);
        assert!(prefixes("/").is_empty());
    }
}
