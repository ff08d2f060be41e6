//! The component's side of the WIT: the exporter's state between calls,
//! the conversions from the WIT types, and the four exports.

use std::cell::RefCell;

use crate::exporter::Exporter;
use crate::muster::plugin::types::CheckStatus;
use crate::wasi_host::WasiHost;
// The world's types (`Change`, `ServiceInstance`, and `Config`, the JSON
// text) are at the crate root; the plain ones of `layout` and `config` are
// named through their module.
use crate::{config, layout, Change, Guest, ServiceInstance};

thread_local! {
    /// The node keeps one instance alive from `start` on and calls it from
    /// one thread, so the exporter's state lives here between calls.
    static STATE: RefCell<Option<Exporter<WasiHost>>> = const { RefCell::new(None) };
}

/// Every error the node shows says which plugin it comes from.
fn tagged(e: String) -> String {
    format!("etcd-exporter: {e}")
}

fn with_exporter(
    f: impl FnOnce(&mut Exporter<WasiHost>) -> Result<(), String>,
) -> Result<(), String> {
    STATE.with(|state| match state.borrow_mut().as_mut() {
        Some(ex) => f(ex).map_err(tagged),
        None => Err(tagged("not started (start must succeed first)".to_string())),
    })
}

fn instance(i: ServiceInstance) -> layout::Instance {
    layout::Instance {
        node: i.node,
        id: i.id,
        name: i.name,
        tags: i.tags,
        address: i.address,
        port: i.port,
        meta: i.meta.into_iter().map(|p| (p.key, p.value)).collect(),
        status: match i.status {
            CheckStatus::Passing => layout::Status::Passing,
            CheckStatus::Warning => layout::Status::Warning,
            CheckStatus::Critical => layout::Status::Critical,
        },
    }
}

struct EtcdExporter;

impl Guest for EtcdExporter {
    fn start(config: String) -> Result<(), String> {
        let config = config::Config::parse(&config).map_err(tagged)?;
        // On failure the state of an earlier start, if any, stays in place.
        let ex = Exporter::open(config, WasiHost).map_err(tagged)?;
        STATE.with(|state| *state.borrow_mut() = Some(ex));
        Ok(())
    }

    fn apply(changes: Vec<Change>) -> Result<(), String> {
        let changes = changes
            .into_iter()
            .map(|c| match c {
                Change::Upsert(i) => layout::Change::Upsert(instance(i)),
                Change::Remove(k) => layout::Change::Remove(layout::InstanceKey {
                    node: k.node,
                    id: k.id,
                }),
            })
            .collect();
        with_exporter(|ex| ex.apply(changes))
    }

    fn resync(all: Vec<ServiceInstance>) -> Result<(), String> {
        let all = all.into_iter().map(instance).collect();
        with_exporter(|ex| ex.resync(all))
    }

    fn tick() -> Result<(), String> {
        with_exporter(Exporter::tick)
    }
}

crate::export!(EtcdExporter with_types_in crate);
