//! The JSON shapes Consul clients expect, built from catalog records.

use base64::Engine;
use serde_json::{json, Value};

use crate::catalog::types::{Check, KvEntry, Node, Service, Session};

/// A node as `/v1/catalog/nodes` and health entries show it.
pub fn node(n: &Node) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

fn weights(s: &Service) -> Value {
    json!({"Passing": s.weights.passing, "Warning": s.weights.warning})
}

/// A service as the agent and health endpoints show it (`Service`, `Tags`, ...).
pub fn service(s: &Service, datacenter: &str) -> Value {
    json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": weights(s),
        "EnableTagOverride": s.enable_tag_override,
        "Datacenter": datacenter,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

/// Services keyed by ID, as `/v1/agent/services` and `/v1/catalog/node`
/// show them.
pub fn services_by_id<'a>(services: impl Iterator<Item = &'a Service>, datacenter: &str) -> Value {
    Value::Object(
        services
            .map(|s| (s.id.clone(), service(s, datacenter)))
            .collect(),
    )
}

/// A row of `/v1/catalog/service/:name`: node fields and `Service*` fields.
pub fn catalog_service(n: &Node, s: &Service) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "NodeMeta": n.meta,
        "ServiceKind": "",
        "ServiceID": s.id,
        "ServiceName": s.name,
        "ServiceTags": s.tags,
        "ServiceAddress": s.address,
        "ServiceWeights": weights(s),
        "ServiceMeta": s.meta,
        "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

fn ms_to_go(ms: u64) -> String {
    if ms == 0 {
        String::new()
    } else {
        super::decode::format_duration(std::time::Duration::from_millis(ms))
    }
}

/// A health check.
pub fn check(c: &Check) -> Value {
    json!({
        "Node": c.node,
        "CheckID": c.id,
        "Name": c.name,
        "Status": c.status.as_str(),
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": c.service_tags,
        "Type": c.definition.kind,
        "Interval": ms_to_go(c.definition.interval_ms),
        "Timeout": ms_to_go(c.definition.timeout_ms),
        "ExposedPort": 0,
        "Definition": definition(&c.definition),
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
    })
}

/// The `Definition` object of a check, in Consul's shape.
fn definition(d: &crate::catalog::types::CheckDefinition) -> Value {
    let mut v = json!({
        "Interval": ms_to_go(d.interval_ms),
        "Timeout": ms_to_go(d.timeout_ms),
        "DeregisterCriticalServiceAfter": ms_to_go(d.deregister_critical_after_ms),
    });
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    match d.kind.as_str() {
        "http" => {
            obj.insert("HTTP".into(), json!(d.endpoint));
            obj.insert("Method".into(), json!(d.method));
            obj.insert("Header".into(), json!(d.headers));
            obj.insert("Body".into(), json!(d.body));
            obj.insert("TLSSkipVerify".into(), json!(d.tls_skip_verify));
        }
        "tcp" => {
            obj.insert("TCP".into(), json!(d.endpoint));
        }
        "wasm" => {
            obj.insert("Wasm".into(), json!(d.plugin));
            let config: Value = serde_json::from_str(&d.config).unwrap_or(Value::Null);
            obj.insert("Config".into(), config);
        }
        "ttl" => {
            obj.insert("TTL".into(), json!(ms_to_go(d.ttl_ms)));
        }
        _ => {}
    }
    v
}

/// A KV entry; `with_value: false` for txn write results, which Consul
/// returns without the value.
pub fn kv(e: &KvEntry, with_value: bool) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        // Consul returns null, not "", for an empty value.
        "Value": if with_value && !e.value.is_empty() { Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value)) } else { Value::Null },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let (Some(s), Some(obj)) = (&e.session, v.as_object_mut()) {
        obj.insert("Session".into(), Value::String(s.clone()));
    }
    v
}

/// A session.
pub fn session(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": s.lock_delay_ms.saturating_mul(1_000_000),
        "Behavior": s.behavior.as_str(),
        "TTL": s.ttl,
        "NodeChecks": s.node_checks,
        "ServiceChecks": if s.service_checks.is_empty() { Value::Null } else {
            Value::Array(s.service_checks.iter().map(|id| json!({"ID": id, "Namespace": ""})).collect())
        },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}
