//! Recording what concurrent KV clients saw, and checking it with a
//! linearizability checker (stateright's `LinearizabilityTester`), not by
//! eye. Clients run get (`?consistent`), put and check-and-set on a few
//! keys against every server while tests kill and pause nodes.
//!
//! Every written value is unique, so a CAS on the index a read returned is
//! a CAS on the value that read saw: the model can be a plain register.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// One key as a register of unique values (None: absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Register(Option<u64>);

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Read,
    Write(u64),
    /// Replace `expect` (None: the key is absent) with the new value.
    Cas {
        expect: Option<u64>,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ret {
    Read(Option<u64>),
    Write,
    Cas(bool),
}

impl SequentialSpec for Register {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Read => Ret::Read(self.0),
            Op::Write(v) => {
                self.0 = Some(*v);
                Ret::Write
            }
            Op::Cas { expect, new } => {
                let ok = self.0 == *expect;
                if ok {
                    self.0 = Some(*new);
                }
                Ret::Cas(ok)
            }
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone)]
enum Event {
    Invoke {
        id: u64,
        thread: u64,
        key: usize,
        op: Op,
    },
    /// Answered: the operation took effect (or not) as `ret` says.
    Return { thread: u64, key: usize, ret: Ret },
    /// Never reached a server (connection refused): it did not happen.
    Refused { id: u64 },
}

/// The shared, real-time-ordered event log.
#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
    next_thread: AtomicU64,
    next_op: AtomicU64,
}

/// The outcome of a check.
pub struct Verdict {
    pub operations: usize,
    pub answered: usize,
    pub indeterminate: usize,
    pub per_key: Vec<(usize, usize)>,
    pub linearizable: bool,
    pub failure: String,
    pub took: Duration,
}

impl History {
    fn push(&self, e: Event) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push(e);
        }
    }

    /// A fresh thread ID (a client whose last request has an unknown
    /// outcome must not issue another under the same ID).
    pub fn thread(&self) -> u64 {
        self.next_thread.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks every key's history (linearizability is local: the whole
    /// history is linearizable iff each key's is).
    pub fn check(&self) -> Verdict {
        let start = Instant::now();
        let events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        if let Ok(path) = std::env::var("MUSTER_HISTORY_DUMP") {
            let text: String = events.iter().map(|e| format!("{e:?}\n")).collect();
            let _ = std::fs::write(path, text);
        }
        let refused: std::collections::HashSet<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Refused { id } => Some(*id),
                _ => None,
            })
            .collect();
        // Ops that never got an answer: a read among them constrains
        // nothing and is dropped; a write may or may not have happened and
        // stays in flight for the checker to place (or not).
        let answered_ids: std::collections::HashSet<u64> = {
            let mut open: BTreeMap<u64, u64> = BTreeMap::new();
            let mut done = std::collections::HashSet::new();
            for e in &events {
                match e {
                    Event::Invoke { id, thread, .. } => {
                        open.insert(*thread, *id);
                    }
                    Event::Return { thread, .. } => {
                        if let Some(id) = open.remove(thread) {
                            done.insert(id);
                        }
                    }
                    Event::Refused { .. } => {}
                }
            }
            done
        };
        let dropped = |id: &u64, op: &Op| -> bool {
            refused.contains(id) || (*op == Op::Read && !answered_ids.contains(id))
        };
        // Threads whose last op is unanswered get the highest IDs: the
        // checker tries threads in ID order, so answered ops are placed
        // first and an in-flight write only where the history needs it.
        let rank: BTreeMap<u64, u64> = {
            let mut last: BTreeMap<u64, bool> = BTreeMap::new();
            for e in &events {
                match e {
                    Event::Invoke { id, thread, op, .. } if !dropped(id, op) => {
                        last.insert(*thread, answered_ids.contains(id));
                    }
                    _ => {}
                }
            }
            let (done, open): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, ok)| *ok);
            done.into_iter()
                .chain(open)
                .enumerate()
                .map(|(rank, (thread, _))| (thread, rank as u64))
                .collect()
        };
        let mut testers: BTreeMap<usize, LinearizabilityTester<u64, Register>> = BTreeMap::new();
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        let (mut operations, mut answered) = (0, 0);
        let mut failure = String::new();
        for e in &events {
            let r = match e {
                // A refused request never happened.
                Event::Invoke { id, op, .. } if dropped(id, op) => continue,
                Event::Invoke {
                    thread, key, op, ..
                } => {
                    operations += 1;
                    *counts.entry(*key).or_default() += 1;
                    testers
                        .entry(*key)
                        .or_insert_with(|| LinearizabilityTester::new(Register::default()))
                        .on_invoke(rank[thread], op.clone())
                        .map(|_| ())
                }
                Event::Return { thread, key, ret } => {
                    answered += 1;
                    match testers.get_mut(key) {
                        Some(t) => t.on_return(rank[thread], ret.clone()).map(|_| ()),
                        None => Err("return without invoke".into()),
                    }
                }
                Event::Refused { .. } => continue,
            };
            if let Err(e) = r {
                failure = format!("malformed history: {e}");
            }
        }
        let mut linearizable = failure.is_empty();
        for (key, tester) in &testers {
            if linearizable && !tester.is_consistent() {
                linearizable = false;
                failure = format!("key {key}: no linearization exists");
            }
        }
        Verdict {
            operations,
            answered,
            indeterminate: operations - answered,
            per_key: counts.into_iter().collect(),
            linearizable,
            failure,
            took: start.elapsed(),
        }
    }
}

/// What a request to muster came back with.
enum Outcome<T> {
    Ok(T),
    Refused,
    Unknown,
}

fn key_path(prefix: &str, key: usize) -> String {
    format!("/v1/kv/{prefix}/k{key}")
}

/// A GET ?consistent: the value and its ModifyIndex, None if absent.
fn read(agent: &ureq::Agent, base: &str, path: &str) -> Outcome<Option<(u64, u64)>> {
    match agent.get(&format!("{base}{path}?consistent")).call() {
        Ok(r) => {
            let Ok(body) = r.into_json::<serde_json::Value>() else {
                return Outcome::Unknown;
            };
            let entry = &body[0];
            let value = String::from_utf8(crate::kv_value(entry))
                .ok()
                .and_then(|s| s.parse().ok());
            match (value, entry["ModifyIndex"].as_u64()) {
                (Some(v), Some(i)) => Outcome::Ok(Some((v, i))),
                _ => Outcome::Unknown,
            }
        }
        Err(ureq::Error::Status(404, _)) => Outcome::Ok(None),
        Err(e) => classify(e),
    }
}

fn put(agent: &ureq::Agent, base: &str, path: &str, value: u64, cas: Option<u64>) -> Outcome<bool> {
    let url = match cas {
        Some(i) => format!("{base}{path}?cas={i}"),
        None => format!("{base}{path}"),
    };
    match agent.put(&url).send_string(&value.to_string()) {
        Ok(r) => match r.into_string().map(|s| s.trim().to_string()) {
            Ok(s) if s == "true" => Outcome::Ok(true),
            Ok(s) if s == "false" => Outcome::Ok(false),
            _ => Outcome::Unknown,
        },
        Err(e) => classify(e),
    }
}

fn classify<T>(e: ureq::Error) -> Outcome<T> {
    match e {
        ureq::Error::Transport(t) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
            Outcome::Refused
        }
        _ => Outcome::Unknown,
    }
}

/// Clients running get/put/CAS until stopped, each against the servers in
/// turn, recording everything in `history`.
pub struct Workload {
    pub history: Arc<History>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Completion times of acknowledged writes (for the write gap).
    pub acked_writes: Arc<Mutex<Vec<Instant>>>,
}

impl Workload {
    /// `clients` threads on `keys` keys under `prefix`, against `servers`
    /// (HTTP base URLs).
    pub fn start(servers: Vec<String>, prefix: &str, clients: usize, keys: usize) -> Workload {
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (history, stop, acked, servers) = (
                    history.clone(),
                    stop.clone(),
                    acked.clone(),
                    servers.clone(),
                );
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    client(c, &servers, &prefix, keys, &history, &stop, &acked)
                })
            })
            .collect();
        Workload {
            history,
            stop,
            threads,
            acked_writes: acked,
        }
    }

    /// Stops the clients and returns the history.
    pub fn stop(self) -> (Arc<History>, Vec<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let acked = self
            .acked_writes
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        (self.history, acked)
    }
}

fn client(
    id: usize,
    servers: &[String],
    prefix: &str,
    keys: usize,
    history: &History,
    stop: &AtomicBool,
    acked: &Mutex<Vec<Instant>>,
) {
    // No pooled connections: ureq retries a request whose pooled connection
    // broke, which could turn a PUT the server applied into what looks
    // like a refused connection. A fresh connection per request makes a
    // refusal mean the request was never sent.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .max_idle_connections(0)
        .build();
    let mut thread = history.thread();
    let mut n: u64 = 0;
    let mut state = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rand = move || {
        // xorshift: the tests need no crate for a few random choices.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while !stop.load(Ordering::Relaxed) {
        let key = (rand() % keys as u64) as usize;
        let base = &servers[(rand() % servers.len() as u64) as usize];
        let path = key_path(prefix, key);
        n += 1;
        let value = ((id as u64) << 32) | n;
        // Each recorded step: invoke, send, then return/refused/unknown.
        let mut step = |op: Op, send: &mut dyn FnMut() -> Outcome<Ret>| -> Option<Ret> {
            let op_id = history.next_op.fetch_add(1, Ordering::Relaxed);
            history.push(Event::Invoke {
                id: op_id,
                thread,
                key,
                op,
            });
            match send() {
                Outcome::Ok(ret) => {
                    history.push(Event::Return {
                        thread,
                        key,
                        ret: ret.clone(),
                    });
                    Some(ret)
                }
                Outcome::Refused => {
                    history.push(Event::Refused { id: op_id });
                    None
                }
                Outcome::Unknown => {
                    thread = history.thread();
                    // As a client would: back off before trying again.
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            }
        };
        match rand() % 10 {
            0..=3 => {
                let _ = step(Op::Read, &mut || match read(&agent, base, &path) {
                    Outcome::Ok(v) => Outcome::Ok(Ret::Read(v.map(|(v, _)| v))),
                    Outcome::Refused => Outcome::Refused,
                    Outcome::Unknown => Outcome::Unknown,
                });
            }
            4..=7 => {
                let r = step(
                    Op::Write(value),
                    &mut || match put(&agent, base, &path, value, None) {
                        Outcome::Ok(true) => Outcome::Ok(Ret::Write),
                        Outcome::Ok(false) => Outcome::Unknown,
                        Outcome::Refused => Outcome::Refused,
                        Outcome::Unknown => Outcome::Unknown,
                    },
                );
                if r.is_some() {
                    if let Ok(mut a) = acked.lock() {
                        a.push(Instant::now());
                    }
                }
            }
            _ => {
                // Read (recorded), then CAS on the index it returned.
                let mut seen = None;
                let got = step(Op::Read, &mut || match read(&agent, base, &path) {
                    Outcome::Ok(v) => {
                        seen = Some(v);
                        Outcome::Ok(Ret::Read(v.map(|(v, _)| v)))
                    }
                    Outcome::Refused => Outcome::Refused,
                    Outcome::Unknown => Outcome::Unknown,
                });
                if let (Some(_), Some(seen)) = (got, seen) {
                    let (expect, index) = match seen {
                        Some((v, i)) => (Some(v), i),
                        None => (None, 0),
                    };
                    let r = step(Op::Cas { expect, new: value }, &mut || match put(
                        &agent,
                        base,
                        &path,
                        value,
                        Some(index),
                    ) {
                        Outcome::Ok(ok) => Outcome::Ok(Ret::Cas(ok)),
                        Outcome::Refused => Outcome::Refused,
                        Outcome::Unknown => Outcome::Unknown,
                    });
                    if r == Some(Ret::Cas(true)) {
                        if let Ok(mut a) = acked.lock() {
                            a.push(Instant::now());
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The longest time between two acknowledged writes in `acked`.
pub fn longest_gap(acked: &[Instant]) -> Duration {
    let mut sorted = acked.to_vec();
    sorted.sort();
    sorted
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke(h: &History, thread: u64, op: Op) {
        let id = h.next_op.fetch_add(1, Ordering::Relaxed);
        h.push(Event::Invoke {
            id,
            thread,
            key: 0,
            op,
        });
    }

    fn ret(h: &History, thread: u64, ret: Ret) {
        h.push(Event::Return {
            thread,
            key: 0,
            ret,
        });
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let h = History::default();
        invoke(&h, 0, Op::Write(1));
        ret(&h, 0, Ret::Write);
        invoke(&h, 1, Op::Read);
        ret(&h, 1, Ret::Read(None));
        assert!(!h.check().linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = History::default();
        invoke(&h, 0, Op::Write(1));
        invoke(&h, 1, Op::Read);
        ret(&h, 1, Ret::Read(Some(1)));
        // An unanswered write may have happened...
        invoke(&h, 2, Op::Write(2));
        ret(&h, 0, Ret::Write);
        invoke(
            &h,
            1,
            Op::Cas {
                expect: Some(2),
                new: 3,
            },
        );
        ret(&h, 1, Ret::Cas(true));
        let v = h.check();
        assert!(v.linearizable, "{}", v.failure);
        assert_eq!(v.indeterminate, 1);
    }
}
