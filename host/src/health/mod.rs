//! Health bookkeeping the agent does itself: TTL checks (a check that goes
//! critical unless something reports in before its TTL runs out) and the
//! `DeregisterCriticalServiceAfter` reaper; and the scheduler that runs
//! HTTP, TCP and WebAssembly checks through plugins.

pub mod scheduler;
pub mod stats;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Deadlines of this agent's TTL checks, keyed by check ID, and ordered by
/// deadline so that finding the expired ones does not scan every check.
#[derive(Default)]
pub struct TtlTracker {
    inner: Mutex<Deadlines>,
    /// Wakes the TTL task when the earliest deadline moves earlier.
    pub changed: Notify,
}

#[derive(Default)]
struct Deadlines {
    /// check ID -> (TTL, deadline; None while parked after expiring).
    by_id: HashMap<String, (Duration, Option<Instant>)>,
    queue: std::collections::BTreeSet<(Instant, String)>,
}

impl Deadlines {
    fn set(&mut self, id: &str, ttl: Duration, deadline: Option<Instant>) {
        if let Some((_, Some(old))) = self.by_id.get(id) {
            self.queue.remove(&(*old, id.to_string()));
        }
        if let Some(d) = deadline {
            self.queue.insert((d, id.to_string()));
        }
        self.by_id.insert(id.to_string(), (ttl, deadline));
    }

    fn earliest(&self) -> Option<Instant> {
        self.queue.first().map(|(d, _)| *d)
    }
}

impl TtlTracker {
    /// Starts (or restarts) the clock of a TTL check.
    pub fn arm(&self, check_id: &str, ttl: Duration) {
        let deadline = Instant::now() + ttl;
        let earlier = match self.inner.lock() {
            Ok(mut d) => {
                let before = d.earliest();
                d.set(check_id, ttl, Some(deadline));
                before.is_none_or(|b| deadline < b)
            }
            Err(_) => false,
        };
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Restarts the clock of a known check: a pass/warn/fail report.
    /// Returns the TTL, or None if the check is not a TTL check here.
    pub fn reset(&self, check_id: &str) -> Option<Duration> {
        let mut d = self.inner.lock().ok()?;
        let ttl = d.by_id.get(check_id)?.0;
        let before = d.earliest();
        let deadline = Instant::now() + ttl;
        d.set(check_id, ttl, Some(deadline));
        drop(d);
        if before.is_none_or(|b| deadline < b) {
            self.changed.notify_one();
        }
        Some(ttl)
    }

    /// Whether a check is tracked here.
    pub fn knows(&self, check_id: &str) -> bool {
        self.inner
            .lock()
            .map(|d| d.by_id.contains_key(check_id))
            .unwrap_or(false)
    }

    /// Forgets a check (deregistered).
    pub fn disarm(&self, check_id: &str) {
        if let Ok(mut d) = self.inner.lock() {
            if let Some((_, Some(old))) = d.by_id.remove(check_id) {
                d.queue.remove(&(old, check_id.to_string()));
            }
        }
    }

    /// The checks whose TTL ran out; their clocks are parked until the next
    /// report, so an expired check is marked critical once, not every tick.
    pub fn take_expired(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(mut d) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some((deadline, _)) = d.queue.first() {
            if *deadline > now {
                break;
            }
            if let Some((_, id)) = d.queue.pop_first() {
                if let Some(entry) = d.by_id.get_mut(&id) {
                    entry.1 = None;
                }
                out.push(id);
            }
        }
        out
    }

    /// When the next TTL runs out, if any check is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inner.lock().ok()?.earliest()
    }
}

/// How long each of this agent's checks has been critical, for
/// `DeregisterCriticalServiceAfter`.
#[derive(Default)]
pub struct CriticalSince {
    since: Mutex<HashMap<String, Instant>>,
}

impl CriticalSince {
    /// Records the current status of a check; returns how long it has been
    /// critical (zero when it is not).
    pub fn observe(&self, check_id: &str, critical: bool) -> Duration {
        let Ok(mut m) = self.since.lock() else {
            return Duration::ZERO;
        };
        if !critical {
            m.remove(check_id);
            return Duration::ZERO;
        }
        m.entry(check_id.to_string())
            .or_insert_with(Instant::now)
            .elapsed()
    }

    /// Drops checks that no longer exist.
    pub fn retain(&self, live: &dyn Fn(&str) -> bool) {
        if let Ok(mut m) = self.since.lock() {
            m.retain(|id, _| live(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_once_until_reset() {
        let t = TtlTracker::default();
        t.arm("c", Duration::from_secs(10));
        assert!(t.take_expired().is_empty());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.take_expired(), vec!["c".to_string()]);
        assert!(t.take_expired().is_empty());
        assert_eq!(t.reset("c"), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.take_expired(), vec!["c".to_string()]);
    }
}
