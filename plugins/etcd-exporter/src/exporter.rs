//! The exporter itself: what `open`, `resync`, `apply` and `tick` do, over
//! a small [`Host`] trait for the outside world (HTTP, clock, log). The
//! component implements it with wasi:http; the tests with a fake etcd and
//! with a std::net client against a real one.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::{Config, Endpoint};
use crate::etcd::{self, Op};
use crate::layout::{Catalog, Change, Instance};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// What the exporter needs from its environment.
pub trait Host {
    /// POSTs a JSON `body` to `path` on `endpoint` and returns the answer.
    /// `Err` when no HTTP answer came (refused, timed out, host not found),
    /// worded for an operator: the exporter then tries the next endpoint.
    fn post(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
        timeout_ms: u32,
    ) -> Result<Response, String>;
    /// A monotonic clock, in milliseconds.
    fn now_ms(&mut self) -> u64;
    fn log(&mut self, level: Level, message: &str);
}

/// Why a request to etcd failed.
#[derive(Debug)]
enum Failure {
    /// etcd does not know the lease a put named: it expired (or was
    /// revoked), and every key under it is gone.
    LeaseNotFound(String),
    Other(String),
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        match f {
            Failure::LeaseNotFound(m) | Failure::Other(m) => m,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// As granted (etcd may raise a TTL below its minimum).
    ttl_s: i64,
    /// When it was last granted or renewed: taken before the request went
    /// out, so the estimate of its expiry errs on the early side.
    renewed_ms: u64,
}

impl Lease {
    /// Renew after a third of the TTL: two more chances before it expires.
    fn renew_due(&self, now_ms: u64) -> bool {
        let ttl_ms = u64::try_from(self.ttl_s).unwrap_or(0) * 1000;
        now_ms.saturating_sub(self.renewed_ms) >= ttl_ms / 3
    }
}

/// One exporter instance's state, alive from `open` until the node drops
/// the component.
pub struct Exporter<H: Host> {
    host: H,
    config: Config,
    /// Index of the endpoint that answered last: tried first next time.
    current: usize,
    /// None after the lease was found gone and no new one could be had.
    lease: Option<Lease>,
    /// What should be in etcd.
    catalog: Catalog,
    /// What we last wrote to etcd (under the current lease) and still
    /// believe is there: `apply` skips a put that would change nothing.
    /// Cleared whenever it may be wrong; resync rebuilds it.
    written: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl<H: Host> Exporter<H> {
    /// Connects: grants the lease every key will live under, which also
    /// proves an endpoint answers.
    pub fn open(config: Config, host: H) -> Result<Self, String> {
        let mut ex = Exporter {
            host,
            config,
            current: 0,
            lease: None,
            catalog: Catalog::default(),
            written: BTreeMap::new(),
        };
        let lease = ex.grant()?;
        let message = format!(
            "connected to {}; lease {:016x} with a TTL of {}s, keys under {}/",
            ex.config.endpoints[ex.current].url, lease.id, lease.ttl_s, ex.config.prefix
        );
        ex.host.log(Level::Info, &message);
        Ok(ex)
    }

    /// Makes every key under `<prefix>/` equal to `all`: deletes what is
    /// not wanted (whoever wrote it), puts what is missing, different, or
    /// under another lease (an earlier leader's, which will expire).
    pub fn resync(&mut self, all: Vec<Instance>) -> Result<(), String> {
        self.catalog.clear();
        for inst in &all {
            self.catalog
                .upsert(&self.config.prefix, self.config.value, inst);
        }
        let shared = self.catalog.collisions();
        if shared > 0 {
            self.host.log(
                Level::Warn,
                &format!(
                    "{shared} instance(s) share a key with an instance of the same service name and ID on another node; such a key holds the instance of the node that sorts first"
                ),
            );
        }
        // Nothing is known about etcd until the writes below succeed.
        self.written.clear();
        self.renew()?;
        let lease = self.lease_id()?;
        let existing = self.range_all()?;
        let targets = self.catalog.targets();
        let have: HashMap<&[u8], &etcd::Kv> =
            existing.iter().map(|kv| (kv.key.as_slice(), kv)).collect();
        // Puts first: a consumer never sees a service with fewer instances
        // than before because of the order of our writes.
        let mut ops: Vec<Op> = targets
            .iter()
            .filter(|(k, v)| {
                !have
                    .get(k.as_bytes())
                    .is_some_and(|kv| kv.value == v.as_bytes() && kv.lease == lease)
            })
            .map(|(k, v)| Op::Put {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        ops.extend(
            existing
                .iter()
                .filter(|kv| {
                    std::str::from_utf8(&kv.key).map_or(true, |k| !targets.contains_key(k))
                })
                .map(|kv| Op::Delete {
                    key: kv.key.clone(),
                }),
        );
        let wanted: BTreeMap<Vec<u8>, Vec<u8>> = targets
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let (puts, deletes) = (
            ops.iter().filter(|op| matches!(op, Op::Put { .. })).count(),
            ops.iter()
                .filter(|op| matches!(op, Op::Delete { .. }))
                .count(),
        );
        match self.write(&ops) {
            Ok(()) => {}
            // Lost between the keepalive above and now: a new lease puts
            // every key back; the deletes still have to be sent.
            Err(Failure::LeaseNotFound(_)) => {
                self.replace_lease()?;
                ops.retain(|op| matches!(op, Op::Delete { .. }));
                self.write(&ops).map_err(String::from)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.written = wanted;
        self.host.log(
            Level::Debug,
            &format!(
                "resync: {} keys wanted, {} found, {puts} put, {deletes} deleted",
                self.written.len(),
                existing.len()
            ),
        );
        Ok(())
    }

    /// Applies a batch of changes, in order. Several changes to one key
    /// collapse into the last one (a txn may not write a key twice). Every
    /// upserted key is put, even one etcd should already hold with that
    /// value: during a hot swap the previous version keeps writing after
    /// this one's resync, under its own lease, which expires once it is
    /// dropped. Putting the key again moves it under this version's lease.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<(), String> {
        let mut touched: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for change in &changes {
            let keys = match change {
                Change::Upsert(inst) => {
                    self.catalog
                        .upsert(&self.config.prefix, self.config.value, inst)
                }
                // Unknown instances (never exported) give no key: nothing
                // to delete, and no error.
                Change::Remove(ik) => self.catalog.remove(ik).into_iter().collect(),
            };
            for k in keys {
                if seen.insert(k.clone()) {
                    touched.push(k);
                }
            }
        }
        if self.lease.is_none() {
            // The lease was lost and could not be replaced then: try again,
            // which puts back every key, this batch's included.
            self.replace_lease()?;
        }
        let ops: Vec<Op> = touched
            .iter()
            .map(|k| match self.catalog.value_of(k) {
                Some(v) => Op::Put {
                    key: k.as_bytes().to_vec(),
                    value: v.as_bytes().to_vec(),
                },
                // Deleted even if we do not remember writing it: deleting a
                // missing key is harmless, and `written` may be incomplete.
                None => Op::Delete {
                    key: k.as_bytes().to_vec(),
                },
            })
            .collect();
        match self.write(&ops) {
            Ok(()) => Ok(()),
            // etcd dropped the lease and every key under it before tick
            // noticed: a new lease and every key back under it.
            Err(Failure::LeaseNotFound(_)) => self.replace_lease(),
            Err(e) => Err(e.into()),
        }
    }

    /// Called every second: renews the lease when a third of its TTL has
    /// passed, and replaces it (re-putting every key) if etcd let it expire.
    pub fn tick(&mut self) -> Result<(), String> {
        let now = self.host.now_ms();
        match self.lease {
            Some(lease) if !lease.renew_due(now) => Ok(()),
            _ => self.renew(),
        }
    }

    /// Keeps the lease alive, or replaces it if it is gone.
    fn renew(&mut self) -> Result<(), String> {
        let Some(lease) = self.lease else {
            return self.replace_lease();
        };
        let now = self.host.now_ms();
        let body = self.call("/v3/lease/keepalive", &etcd::keepalive_body(lease.id))?;
        match etcd::parse_keepalive(&body) {
            Ok(Some(ttl_s)) => {
                self.lease = Some(Lease {
                    ttl_s,
                    renewed_ms: now,
                    ..lease
                });
                Ok(())
            }
            Ok(None) => self.replace_lease(),
            Err(e) => Err(format!("{}: {e}", self.here())),
        }
    }

    /// The lease is gone, and with it every key under it: grants a new one
    /// and puts every key back.
    fn replace_lease(&mut self) -> Result<(), String> {
        let old = self.lease.take();
        self.written.clear();
        let new = self.grant()?;
        let targets: Vec<Op> = self
            .catalog
            .targets()
            .into_iter()
            .map(|(k, v)| Op::Put {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        let what = match old {
            Some(old) => format!(
                "lease {:016x} is gone (it expired while etcd or this node was away, or was revoked)",
                old.id
            ),
            None => "no lease held".to_string(),
        };
        self.host.log(
            Level::Warn,
            &format!(
                "{what}; granted lease {:016x} with a TTL of {}s, re-putting {} keys",
                new.id,
                new.ttl_s,
                targets.len()
            ),
        );
        // A fresh lease cannot be "not found": any failure is just an error.
        self.write(&targets).map_err(String::from)
    }

    fn grant(&mut self) -> Result<Lease, String> {
        let now = self.host.now_ms();
        let body = self.call(
            "/v3/lease/grant",
            &etcd::grant_body(self.config.lease_ttl_s),
        )?;
        let (id, ttl_s) = etcd::parse_grant(&body).map_err(|e| format!("{}: {e}", self.here()))?;
        let lease = Lease {
            id,
            ttl_s,
            renewed_ms: now,
        };
        self.lease = Some(lease);
        Ok(lease)
    }

    fn lease_id(&self) -> Result<i64, String> {
        self.lease
            .map(|l| l.id)
            .ok_or_else(|| "no lease held".to_string())
    }

    /// Every key under `<prefix>/`, a page at a time.
    fn range_all(&mut self) -> Result<Vec<etcd::Kv>, String> {
        let mut from = format!("{}/", self.config.prefix).into_bytes();
        let end = etcd::prefix_range_end(&from);
        let mut all = Vec::new();
        loop {
            let body = self.call("/v3/kv/range", &etcd::range_body(&from, &end))?;
            let page = etcd::parse_range(&body).map_err(|e| format!("{}: {e}", self.here()))?;
            let last = page.kvs.last().map(|kv| kv.key.clone());
            all.extend(page.kvs);
            match last {
                Some(mut key) if page.more => {
                    // The next page starts just after the last key.
                    key.push(0);
                    from = key;
                }
                _ => return Ok(all),
            }
        }
    }

    /// Sends `ops` as txns, keeping `written` up to date batch by batch.
    fn write(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let lease = self.lease_id().map_err(Failure::Other)?;
        let mut done = 0;
        for batch in etcd::txn_batches(ops, lease) {
            self.call("/v3/kv/txn", &batch.body)?;
            for op in &ops[done..done + batch.ops] {
                match op {
                    Op::Put { key, value } => {
                        self.written.insert(key.clone(), value.clone());
                    }
                    Op::Delete { key } => {
                        self.written.remove(key);
                    }
                }
            }
            done += batch.ops;
        }
        Ok(())
    }

    /// The URL of the endpoint in use, for messages.
    fn here(&self) -> &str {
        &self.config.endpoints[self.current].url
    }

    /// POSTs to the endpoint in use, then to each next one while they fail
    /// to answer (or answer "unavailable"). Every request we send is safe
    /// to repeat: puts and deletes are idempotent, and a lease granted twice
    /// leaves only an empty lease to expire.
    fn call(&mut self, path: &str, body: &str) -> Result<String, Failure> {
        let n = self.config.endpoints.len();
        let mut failures = Vec::new();
        for step in 0..n {
            let i = (self.current + step) % n;
            let outcome = self.host.post(
                &self.config.endpoints[i],
                path,
                body,
                self.config.timeout_ms,
            );
            let reason = match outcome {
                Err(e) => e,
                // The gateway's words for gRPC's Unavailable and
                // DeadlineExceeded (no leader, member stopping): another
                // member may do better.
                Ok(r) if matches!(r.status, 502..=504) => etcd::error_message(r.status, &r.body),
                Ok(r) => {
                    self.switch_to(i, &failures);
                    if r.status == 200 {
                        return Ok(r.body);
                    }
                    let message = format!(
                        "{}: {}",
                        self.here(),
                        etcd::error_message(r.status, &r.body)
                    );
                    return Err(if etcd::is_lease_not_found(&message) {
                        Failure::LeaseNotFound(message)
                    } else {
                        Failure::Other(message)
                    });
                }
            };
            failures.push(format!("{}: {reason}", self.config.endpoints[i].url));
        }
        Err(Failure::Other(failures.join("; ")))
    }

    /// Makes endpoint `i`, which just answered, the one tried first.
    fn switch_to(&mut self, i: usize, failures: &[String]) {
        if i != self.current {
            let message = format!(
                "{}; switched to {}",
                failures.join("; "),
                self.config.endpoints[i].url
            );
            self.host.log(Level::Warn, &message);
            self.current = i;
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::base64;
    use crate::config::Config;
    use crate::layout::tests::inst;
    use crate::layout::InstanceKey;
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// An in-memory etcd that speaks just enough of the JSON gateway, with
    /// etcd's own refusals (duplicate keys in a txn, too many operations,
    /// unknown lease), endpoints that can be taken down, and a clock.
    #[derive(Default)]
    pub struct Fake {
        kv: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
        leases: BTreeMap<i64, i64>,
        next_lease: i64,
        pub down: HashSet<String>,
        pub now_ms: u64,
        pub logs: Vec<(Level, String)>,
        /// (endpoint URL, path) of every request that got an answer.
        pub requests: Vec<(String, String)>,
        /// Puts applied, to check that unchanged keys are not rewritten.
        pub puts: usize,
    }

    #[derive(Clone, Default)]
    pub struct FakeHost(pub Rc<RefCell<Fake>>);

    fn ok(v: Value) -> Result<Response, String> {
        Ok(Response {
            status: 200,
            body: v.to_string(),
        })
    }

    fn grpc_error(status: u16, code: u32, message: &str) -> Result<Response, String> {
        Ok(Response {
            status,
            body: json!({"error": message, "message": message, "code": code}).to_string(),
        })
    }

    fn b64(v: &Value) -> Vec<u8> {
        base64::decode(v.as_str().unwrap_or_default()).expect("base64 from the exporter")
    }

    fn int(v: &Value) -> i64 {
        match v {
            Value::String(s) => s.parse().expect("int64 string"),
            Value::Number(n) => n.as_i64().expect("int64"),
            _ => 0,
        }
    }

    impl Fake {
        /// What etcd holds under `prefix`, as text.
        pub fn dump(&self, prefix: &str) -> BTreeMap<String, String> {
            self.kv
                .iter()
                .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
                .map(|(k, (v, _))| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect()
        }

        pub fn lease_of(&self, key: &str) -> i64 {
            self.kv.get(key.as_bytes()).map_or(0, |(_, l)| *l)
        }

        /// etcd lets a lease expire: it and its keys are gone.
        pub fn expire(&mut self, lease: i64) {
            self.leases.remove(&lease);
            self.kv.retain(|_, (_, l)| *l != lease);
        }

        pub fn put(&mut self, key: &str, value: &str, lease: i64) {
            self.kv
                .insert(key.as_bytes().to_vec(), (value.as_bytes().to_vec(), lease));
        }

        fn serve(&mut self, path: &str, body: &Value) -> Result<Response, String> {
            match path {
                "/v3/lease/grant" => {
                    self.next_lease += 1;
                    let id = 0x1000 + self.next_lease;
                    let ttl = int(&body["TTL"]);
                    self.leases.insert(id, ttl);
                    ok(json!({"header": {}, "ID": id.to_string(), "TTL": ttl.to_string()}))
                }
                "/v3/lease/keepalive" => {
                    let id = int(&body["ID"]);
                    match self.leases.get(&id) {
                        Some(ttl) => ok(
                            json!({"result": {"header": {}, "ID": id.to_string(), "TTL": ttl.to_string()}}),
                        ),
                        None => ok(json!({"result": {"header": {}, "ID": id.to_string()}})),
                    }
                }
                "/v3/kv/range" => {
                    let from = b64(&body["key"]);
                    let end = b64(&body["range_end"]);
                    let limit = usize::try_from(int(&body["limit"])).unwrap_or(0);
                    let matching: Vec<_> = self
                        .kv
                        .range(from..end)
                        .map(|(k, (v, l))| {
                            json!({"key": base64::encode(k), "value": base64::encode(v), "lease": l.to_string()})
                        })
                        .collect();
                    let more = limit > 0 && matching.len() > limit;
                    let page: Vec<_> = matching
                        .into_iter()
                        .take(if limit > 0 { limit } else { usize::MAX })
                        .collect();
                    ok(json!({"header": {}, "kvs": page, "more": more}))
                }
                "/v3/kv/txn" => {
                    let ops = body["success"].as_array().cloned().unwrap_or_default();
                    if ops.len() > 128 {
                        return grpc_error(
                            400,
                            3,
                            "etcdserver: too many operations in txn request",
                        );
                    }
                    let mut keys = HashSet::new();
                    for op in &ops {
                        let key = op
                            .get("requestPut")
                            .or_else(|| op.get("requestDeleteRange"))
                            .map(|r| b64(&r["key"]))
                            .expect("a put or a delete");
                        if !keys.insert(key) {
                            return grpc_error(
                                400,
                                3,
                                "etcdserver: duplicate key given in txn request",
                            );
                        }
                        if let Some(put) = op.get("requestPut") {
                            let lease = int(&put["lease"]);
                            if lease != 0 && !self.leases.contains_key(&lease) {
                                return grpc_error(404, 5, "etcdserver: requested lease not found");
                            }
                        }
                    }
                    for op in &ops {
                        if let Some(put) = op.get("requestPut") {
                            self.puts += 1;
                            self.kv
                                .insert(b64(&put["key"]), (b64(&put["value"]), int(&put["lease"])));
                        } else {
                            self.kv.remove(&b64(&op["requestDeleteRange"]["key"]));
                        }
                    }
                    ok(json!({"header": {}, "succeeded": true}))
                }
                _ => Ok(Response {
                    status: 404,
                    body: "404 page not found\n".into(),
                }),
            }
        }
    }

    impl Host for FakeHost {
        fn post(
            &mut self,
            endpoint: &Endpoint,
            path: &str,
            body: &str,
            _timeout_ms: u32,
        ) -> Result<Response, String> {
            let mut fake = self.0.borrow_mut();
            if fake.down.contains(&endpoint.url) {
                return Err("connection refused".into());
            }
            fake.requests.push((endpoint.url.clone(), path.to_string()));
            let body: Value = serde_json::from_str(body).expect("the exporter sends JSON");
            fake.serve(path, &body)
        }

        fn now_ms(&mut self) -> u64 {
            self.0.borrow().now_ms
        }

        fn log(&mut self, level: Level, message: &str) {
            self.0.borrow_mut().logs.push((level, message.to_string()));
        }
    }

    const TWO: &str = r#"{"endpoints": ["http://e1:2379", "http://e2:2379"], "lease_ttl": "15s"}"#;

    fn open(config: &str) -> (Exporter<FakeHost>, Rc<RefCell<Fake>>) {
        let host = FakeHost::default();
        let fake = host.0.clone();
        let config = Config::parse(config).expect("valid config");
        let ex = Exporter::open(config, host).expect("open");
        (ex, fake)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key(node: &str, id: &str) -> InstanceKey {
        InstanceKey {
            node: node.into(),
            id: id.into(),
        }
    }

    fn txns(fake: &Rc<RefCell<Fake>>) -> usize {
        fake.borrow()
            .requests
            .iter()
            .filter(|(_, p)| p == "/v3/kv/txn")
            .count()
    }

    #[test]
    fn open_fails_naming_every_endpoint() {
        let host = FakeHost::default();
        host.0.borrow_mut().down.insert("http://e1:2379".into());
        host.0.borrow_mut().down.insert("http://e2:2379".into());
        let config = Config::parse(TWO).expect("valid");
        let err = Exporter::open(config, host).err().expect("open must fail");
        assert_eq!(
            err,
            "http://e1:2379: connection refused; http://e2:2379: connection refused"
        );
    }

    #[test]
    fn resync_makes_the_prefix_equal() {
        let (mut ex, fake) = open(TWO);
        {
            let mut f = fake.borrow_mut();
            f.put("/services/old/gone", "1.1.1.1:1", 0);
            f.put("/services/web/web-1", "9.9.9.9:9", 0);
            f.put("/servicesX/keep", "x", 0);
            f.put("/other", "x", 0);
        }
        ex.resync(vec![
            inst("n1", "web-1", "web", "10.0.0.1", 80),
            inst("n2", "web-2", "web", "10.0.0.2", 80),
            inst("n2", "db/1", "db", "10.0.0.3", 5432),
        ])
        .expect("resync");
        let f = fake.borrow();
        assert_eq!(
            f.dump("/services/"),
            map(&[
                ("/services/db/db_1", "10.0.0.3:5432"),
                ("/services/web/web-1", "10.0.0.1:80"),
                ("/services/web/web-2", "10.0.0.2:80"),
            ])
        );
        assert_eq!(f.dump("/servicesX").len(), 1);
        assert_eq!(f.dump("/other").len(), 1);
        let lease = ex.lease_id().expect("lease");
        assert_eq!(f.lease_of("/services/web/web-1"), lease);
    }

    #[test]
    fn resync_rewrites_only_what_differs() {
        let (mut ex, fake) = open(TWO);
        let all = vec![
            inst("n1", "web-1", "web", "10.0.0.1", 80),
            inst("n2", "web-2", "web", "10.0.0.2", 80),
        ];
        ex.resync(all.clone()).expect("resync");
        assert_eq!(fake.borrow().puts, 2);
        ex.resync(all.clone()).expect("resync again");
        assert_eq!(fake.borrow().puts, 2, "nothing changed, nothing put");
        // An earlier leader's key with the right value but its own lease is
        // put again under ours, or it would vanish with that lease.
        fake.borrow_mut()
            .put("/services/web/web-1", "10.0.0.1:80", 99);
        ex.resync(all).expect("resync");
        assert_eq!(fake.borrow().puts, 3);
        assert_eq!(
            fake.borrow().lease_of("/services/web/web-1"),
            ex.lease_id().expect("lease")
        );
    }

    #[test]
    fn resync_pages_and_batches() {
        let (mut ex, fake) = open(TWO);
        for i in 0..2500 {
            fake.borrow_mut()
                .put(&format!("/services/stale/{i:05}"), "x", 0);
        }
        let all: Vec<Instance> = (0..300)
            .map(|i| inst("n1", &format!("s{i}"), "svc", "10.0.0.1", 1000 + i))
            .collect();
        ex.resync(all).expect("resync");
        let f = fake.borrow();
        assert_eq!(f.dump("/services/").len(), 300);
        let ranges = f
            .requests
            .iter()
            .filter(|(_, p)| p == "/v3/kv/range")
            .count();
        assert_eq!(ranges, 3, "2500 keys in pages of 1000");
        // 300 puts + 2500 deletes in txns of at most 128 (the fake refuses
        // more): 2800 / 128, rounded up.
        drop(f);
        assert_eq!(txns(&fake), 22);
    }

    #[test]
    fn apply_puts_and_deletes() {
        let (mut ex, fake) = open(TWO);
        ex.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
            .expect("resync");
        ex.apply(vec![
            Change::Upsert(inst("n1", "web-2", "web", "10.0.0.2", 80)),
            Change::Remove(key("n1", "web-1")),
            Change::Remove(key("n7", "never-exported")),
        ])
        .expect("apply");
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[("/services/web/web-2", "10.0.0.2:80")])
        );
        // Several changes to one key in a batch: the last wins, in one txn
        // (the fake, like etcd, refuses a key twice in a txn).
        let before = txns(&fake);
        ex.apply(vec![
            Change::Upsert(inst("n1", "web-3", "web", "10.0.0.3", 80)),
            Change::Remove(key("n1", "web-3")),
            Change::Upsert(inst("n1", "web-3", "web", "10.0.0.4", 80)),
            Change::Remove(key("n1", "web-2")),
            Change::Upsert(inst("n1", "web-2", "web", "10.0.0.5", 80)),
        ])
        .expect("apply");
        assert_eq!(txns(&fake), before + 1);
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[
                ("/services/web/web-2", "10.0.0.5:80"),
                ("/services/web/web-3", "10.0.0.4:80"),
            ])
        );
        // An upsert that changes nothing in the value (here: health, in the
        // address layout) is still put: it claims the key for this
        // version's lease (a swapped-out version may have written it).
        let mut warn = inst("n1", "web-3", "web", "10.0.0.4", 80);
        warn.status = crate::layout::Status::Warning;
        let puts = fake.borrow().puts;
        ex.apply(vec![Change::Upsert(warn)]).expect("apply");
        assert_eq!(fake.borrow().puts, puts + 1);
        // A rename moves the key.
        ex.apply(vec![Change::Upsert(inst(
            "n1", "web-3", "www", "10.0.0.4", 80,
        ))])
        .expect("apply");
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[
                ("/services/web/web-2", "10.0.0.5:80"),
                ("/services/www/web-3", "10.0.0.4:80"),
            ])
        );
        ex.apply(Vec::new()).expect("an empty batch");
    }

    #[test]
    fn same_id_on_two_nodes() {
        let (mut ex, fake) = open(TWO);
        ex.resync(vec![inst("n2", "web", "web", "10.0.0.2", 80)])
            .expect("resync");
        ex.apply(vec![Change::Upsert(inst(
            "n1", "web", "web", "10.0.0.1", 80,
        ))])
        .expect("apply");
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[("/services/web/web", "10.0.0.1:80")])
        );
        ex.apply(vec![Change::Remove(key("n1", "web"))])
            .expect("apply");
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[("/services/web/web", "10.0.0.2:80")])
        );
    }

    #[test]
    fn json_values() {
        let (mut ex, fake) =
            open(r#"{"endpoints": ["http://e1:2379"], "value": "json", "prefix": "/reg/"}"#);
        ex.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
            .expect("resync");
        let dump = fake.borrow().dump("/reg/");
        let v: Value = serde_json::from_str(&dump["/reg/web/web-1"]).expect("JSON value");
        assert_eq!(v["Address"], "10.0.0.1");
        assert_eq!(v["Port"], 80);
        assert_eq!(v["Status"], "passing");
    }

    #[test]
    fn tick_renews_at_a_third_of_the_ttl() {
        let (mut ex, fake) = open(TWO);
        let keepalives = |f: &Rc<RefCell<Fake>>| {
            f.borrow()
                .requests
                .iter()
                .filter(|(_, p)| p == "/v3/lease/keepalive")
                .count()
        };
        for s in 1..=4 {
            fake.borrow_mut().now_ms = s * 1000;
            ex.tick().expect("tick");
        }
        assert_eq!(keepalives(&fake), 0);
        fake.borrow_mut().now_ms = 5000;
        ex.tick().expect("tick");
        assert_eq!(keepalives(&fake), 1);
        fake.borrow_mut().now_ms = 6000;
        ex.tick().expect("tick");
        assert_eq!(keepalives(&fake), 1);
        fake.borrow_mut().now_ms = 10_000;
        ex.tick().expect("tick");
        assert_eq!(keepalives(&fake), 2);
    }

    #[test]
    fn tick_replaces_an_expired_lease() {
        let (mut ex, fake) = open(TWO);
        ex.resync(vec![
            inst("n1", "web-1", "web", "10.0.0.1", 80),
            inst("n1", "web-2", "web", "10.0.0.2", 80),
        ])
        .expect("resync");
        let old = ex.lease_id().expect("lease");
        fake.borrow_mut().expire(old);
        assert!(fake.borrow().dump("/services/").is_empty());
        fake.borrow_mut().now_ms = 60_000;
        ex.tick().expect("tick");
        let new = ex.lease_id().expect("lease");
        assert_ne!(new, old);
        let f = fake.borrow();
        assert_eq!(f.dump("/services/").len(), 2);
        assert_eq!(f.lease_of("/services/web/web-1"), new);
        assert!(
            f.logs
                .iter()
                .any(|(l, m)| *l == Level::Warn && m.contains("re-putting 2 keys")),
            "{:?}",
            f.logs
        );
    }

    #[test]
    fn apply_replaces_an_expired_lease() {
        let (mut ex, fake) = open(TWO);
        ex.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
            .expect("resync");
        let old = ex.lease_id().expect("lease");
        fake.borrow_mut().expire(old);
        ex.apply(vec![Change::Upsert(inst(
            "n1", "web-2", "web", "10.0.0.2", 80,
        ))])
        .expect("apply");
        assert_eq!(
            fake.borrow().dump("/services/"),
            map(&[
                ("/services/web/web-1", "10.0.0.1:80"),
                ("/services/web/web-2", "10.0.0.2:80"),
            ])
        );
        assert_ne!(ex.lease_id().expect("lease"), old);
    }

    #[test]
    fn resync_after_an_outage_repairs_everything() {
        let (mut ex, fake) = open(TWO);
        ex.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
            .expect("resync");
        // etcd goes away; the lease expires meanwhile; changes fail.
        fake.borrow_mut()
            .down
            .extend(["http://e1:2379".to_string(), "http://e2:2379".to_string()]);
        let err = ex
            .apply(vec![Change::Upsert(inst(
                "n1", "web-2", "web", "10.0.0.2", 80,
            ))])
            .expect_err("etcd is down");
        assert!(err.contains("http://e1:2379: connection refused"), "{err}");
        fake.borrow_mut().now_ms = 60_000;
        assert!(ex.tick().is_err());
        let old = ex.lease_id().expect("lease");
        fake.borrow_mut().expire(old);
        fake.borrow_mut().down.clear();
        ex.resync(vec![
            inst("n1", "web-2", "web", "10.0.0.2", 80),
            inst("n1", "web-3", "web", "10.0.0.3", 80),
        ])
        .expect("resync");
        let new = ex.lease_id().expect("lease");
        assert_ne!(new, old);
        let f = fake.borrow();
        assert_eq!(
            f.dump("/services/"),
            map(&[
                ("/services/web/web-2", "10.0.0.2:80"),
                ("/services/web/web-3", "10.0.0.3:80"),
            ])
        );
        assert_eq!(f.lease_of("/services/web/web-3"), new);
    }

    #[test]
    fn fails_over_and_sticks() {
        let (mut ex, fake) = open(TWO);
        fake.borrow_mut().down.insert("http://e1:2379".into());
        ex.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
            .expect("resync through e2");
        {
            let f = fake.borrow();
            let warnings: Vec<_> = f.logs.iter().filter(|(l, _)| *l == Level::Warn).collect();
            assert_eq!(warnings.len(), 1, "one failover, logged once: {warnings:?}");
            assert_eq!(
                warnings[0].1,
                "http://e1:2379: connection refused; switched to http://e2:2379"
            );
        }
        // e1 comes back: e2 stays in use.
        fake.borrow_mut().down.clear();
        fake.borrow_mut().requests.clear();
        ex.apply(vec![Change::Remove(key("n1", "web-1"))])
            .expect("apply");
        assert!(fake
            .borrow()
            .requests
            .iter()
            .all(|(url, _)| url == "http://e2:2379"));
    }

    #[test]
    fn etcd_errors_are_reported_not_failed_over() {
        let (mut ex, fake) = open(TWO);
        // A key twice in one resync cannot happen (the catalog is a map),
        // so provoke a refusal by hand: a txn with an unknown path.
        let err = ex.call("/v3/nope", "{}").map_err(String::from);
        assert_eq!(
            err,
            Err("http://e1:2379: HTTP 404: 404 page not found".into())
        );
        assert!(fake
            .borrow()
            .requests
            .iter()
            .all(|(u, _)| u == "http://e1:2379"));
    }
}
