//! Randomized test of the catalog's KV, lock, session and transaction
//! semantics against a deliberately simple model: a plain map of key ->
//! (value, session). Thousands of random commands, seeded so any failure
//! replays; the catalog must never panic, must agree with the model after
//! every command, keep indexes monotonic, and leave a failed transaction
//! without a trace.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::command::{Command, KvOp, NewSession, Response};
use super::types::SessionBehavior;
use super::Catalog;

const KEYS: &[&str] = &["a", "a/b", "a/c", "b", "b/x", "c"];
const SESSIONS: &[&str] = &["s1", "s2", "s3"];

#[derive(Default, Clone, PartialEq, Debug)]
struct Model {
    /// key -> (value, lock holder, modify index)
    kv: BTreeMap<String, (Vec<u8>, Option<String>, u64)>,
    sessions: BTreeMap<String, SessionBehavior>,
}

fn pick<'a>(rng: &mut StdRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.gen_range(0..xs.len())]
}

fn random_op(rng: &mut StdRng, cat: &Catalog) -> KvOp {
    let key = pick(rng, KEYS).to_string();
    let value = vec![rng.gen::<u8>(); rng.gen_range(0..3)];
    let session = pick(rng, SESSIONS).to_string();
    // Indexes that are sometimes right and sometimes stale.
    let index = match (rng.gen_bool(0.5), cat.kv().get(&key)) {
        (true, Some(e)) => e.modify_index,
        (true, None) => 0,
        _ => rng.gen_range(0..50),
    };
    match rng.gen_range(0..12) {
        0 => KvOp::Set {
            key,
            value,
            flags: 0,
        },
        1 => KvOp::Cas {
            key,
            value,
            flags: 0,
            index,
        },
        2 => KvOp::Lock {
            key,
            value,
            flags: 0,
            session,
        },
        3 => KvOp::Unlock {
            key,
            value,
            flags: 0,
            session,
        },
        4 => KvOp::Get { key },
        5 => KvOp::GetTree { prefix: key },
        6 => KvOp::CheckIndex { key, index },
        7 => KvOp::CheckSession { key, session },
        8 => KvOp::CheckNotExists { key },
        9 => KvOp::Delete { key },
        10 => KvOp::DeleteTree { prefix: key },
        _ => KvOp::DeleteCas { key, index },
    }
}

/// Applies `op` at log index `at` to the model; Err if Consul's semantics
/// make it fail.
fn model_op(m: &mut Model, at: u64, op: &KvOp) -> Result<(), ()> {
    let current_index = |m: &Model, k: &str| m.kv.get(k).map(|e| e.2).unwrap_or(0);
    let holder = |m: &Model, k: &str| m.kv.get(k).and_then(|e| e.1.clone());
    match op {
        KvOp::Set { key, value, .. } => {
            let s = holder(m, key);
            m.kv.insert(key.clone(), (value.clone(), s, at));
        }
        KvOp::Cas {
            key, value, index, ..
        } => {
            if current_index(m, key) != *index {
                return Err(());
            }
            let s = holder(m, key);
            m.kv.insert(key.clone(), (value.clone(), s, at));
        }
        KvOp::Lock {
            key,
            value,
            session,
            ..
        } => {
            if !m.sessions.contains_key(session) {
                return Err(());
            }
            match holder(m, key) {
                Some(h) if &h != session => return Err(()),
                _ => {
                    m.kv.insert(key.clone(), (value.clone(), Some(session.clone()), at));
                }
            }
        }
        KvOp::Unlock {
            key,
            value,
            session,
            ..
        } => {
            if holder(m, key).as_ref() != Some(session) {
                return Err(());
            }
            m.kv.insert(key.clone(), (value.clone(), None, at));
        }
        KvOp::Get { key } => {
            if !m.kv.contains_key(key) {
                return Err(());
            }
        }
        KvOp::GetTree { .. } => {}
        KvOp::CheckIndex { key, index } => {
            if !m.kv.contains_key(key) || current_index(m, key) != *index {
                return Err(());
            }
        }
        KvOp::CheckSession { key, session } => {
            if holder(m, key).as_ref() != Some(session) {
                return Err(());
            }
        }
        KvOp::CheckNotExists { key } => {
            if m.kv.contains_key(key) {
                return Err(());
            }
        }
        KvOp::Delete { key } => {
            m.kv.remove(key);
        }
        KvOp::DeleteTree { prefix } => m.kv.retain(|k, _| !k.starts_with(prefix.as_str())),
        KvOp::DeleteCas { key, index } => {
            if current_index(m, key) != *index {
                return Err(());
            }
            m.kv.remove(key);
        }
    }
    Ok(())
}

fn observed(cat: &Catalog) -> BTreeMap<String, (Vec<u8>, Option<String>, u64)> {
    cat.kv()
        .all()
        .map(|e| {
            (
                e.key.clone(),
                (e.value.clone(), e.session.clone(), e.modify_index),
            )
        })
        .collect()
}

fn node_registration() -> Command {
    use super::command::{CheckSpec, NodeSpec, Registration};
    use super::types::{CheckDefinition, CheckStatus};
    Command::Register(Registration {
        node: NodeSpec {
            id: "id".into(),
            name: "n1".into(),
            address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            meta: Default::default(),
        },
        skip_node_update: false,
        service: None,
        checks: vec![CheckSpec {
            id: "serfHealth".into(),
            name: "Serf".into(),
            status: CheckStatus::Passing,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            definition: CheckDefinition::default(),
        }],
    })
}

#[test]
fn kv_locks_sessions_and_txns_match_the_model() {
    for seed in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cat = Catalog::default();
        let mut model = Model::default();
        // Lock delays are real time: keep "now" far past any delay so the
        // model need not track them (lock delay has its own e2e test).
        let mut now = 0u64;
        let mut index = 1;
        cat.apply(index, now, node_registration());
        let mut last_prefix_index: BTreeMap<&str, u64> = BTreeMap::new();
        for step in 0..300 {
            index += 1;
            now += 1_000_000;
            let roll = rng.gen_range(0..10);
            let ctx = format!("seed {seed} step {step}");
            let mut last = String::new();
            if roll == 0 {
                let id = pick(&mut rng, SESSIONS).to_string();
                let behavior = if rng.gen_bool(0.5) {
                    SessionBehavior::Release
                } else {
                    SessionBehavior::Delete
                };
                let created = !model.sessions.contains_key(&id);
                let r = cat.apply(
                    index,
                    now,
                    Command::SessionCreate(NewSession {
                        id: id.clone(),
                        name: String::new(),
                        node: "n1".into(),
                        lock_delay_ms: 0,
                        behavior,
                        ttl: String::new(),
                        node_checks: vec!["serfHealth".into()],
                        service_checks: vec![],
                    }),
                );
                if created {
                    assert!(matches!(r, Response::Applied(true)), "{ctx}: {r:?}");
                    model.sessions.insert(id, behavior);
                } else {
                    assert!(
                        matches!(r, Response::Rejected(_)),
                        "{ctx}: duplicate session {r:?}"
                    );
                }
            } else if roll == 1 {
                let id = pick(&mut rng, SESSIONS).to_string();
                last = format!("destroy {id}");
                cat.apply(index, now, Command::SessionDestroy { id: id.clone() });
                if let Some(behavior) = model.sessions.remove(&id) {
                    let held: Vec<String> = model
                        .kv
                        .iter()
                        .filter(|(_, (_, s, _))| s.as_deref() == Some(id.as_str()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in held {
                        match behavior {
                            SessionBehavior::Release => {
                                if let Some(e) = model.kv.get_mut(&k) {
                                    e.1 = None;
                                    e.2 = index;
                                }
                            }
                            SessionBehavior::Delete => {
                                model.kv.remove(&k);
                            }
                        }
                    }
                }
            } else if roll < 4 {
                // A transaction of 1-4 ops: all apply, or none.
                let n = rng.gen_range(1..5);
                let ops: Vec<KvOp> = (0..n).map(|_| random_op(&mut rng, &cat)).collect();
                let mut scratch = model.clone();
                let expect_ok = ops
                    .iter()
                    .all(|op| model_op(&mut scratch, index, op).is_ok());
                let before = observed(&cat);
                last = format!("txn {ops:?}");
                let r = cat.apply(index, now, Command::Txn(ops.clone()));
                match r {
                    Response::Kv(_) => {
                        assert!(
                            expect_ok,
                            "{ctx}: txn {ops:?} applied but the model says it fails"
                        );
                        model = scratch;
                    }
                    Response::TxnFailed(_) => {
                        assert!(
                            !expect_ok,
                            "{ctx}: txn {ops:?} failed but the model says it applies"
                        );
                        assert_eq!(observed(&cat), before, "{ctx}: a failed txn left a trace");
                    }
                    other => panic!("{ctx}: unexpected {other:?}"),
                }
            } else {
                let op = random_op(&mut rng, &cat);
                let mut next = model.clone();
                let expect = model_op(&mut next, index, &op);
                last = format!("{op:?}");
                let r = cat.apply(index, now, Command::Kv(op.clone()));
                // A failed precondition is `false`, an invalid session an
                // error; either way nothing applied.
                let applied = !matches!(r, Response::Applied(false) | Response::Rejected(_));
                assert_eq!(applied, expect.is_ok(), "{ctx}: {op:?} gave {r:?}");
                if applied {
                    model = next;
                }
            }
            assert_eq!(
                observed(&cat),
                model.kv,
                "{ctx}: catalog and model disagree after {last}"
            );
            for e in cat.kv().all() {
                assert!(
                    e.create_index <= e.modify_index && e.modify_index <= cat.kv().table_index(),
                    "{ctx}: {e:?}"
                );
            }
            for p in ["", "a", "a/", "b"] {
                let i = cat.kv().prefix_index(p);
                let last = last_prefix_index.entry(p).or_insert(0);
                assert!(
                    i >= *last,
                    "{ctx}: prefix {p:?} index went back from {last} to {i}"
                );
                *last = i;
            }
        }
    }
}
