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

/// Deadlines of this agent's TTL checks, keyed by check ID.
#[derive(Default)]
pub struct TtlTracker {
    deadlines: Mutex<HashMap<String, (Duration, Instant)>>,
    /// Wakes the TTL task when a deadline moves earlier.
    pub changed: Notify,
}

impl TtlTracker {
    /// Starts (or restarts) the clock of a TTL check.
    pub fn arm(&self, check_id: &str, ttl: Duration) {
        if let Ok(mut d) = self.deadlines.lock() {
            d.insert(check_id.to_string(), (ttl, Instant::now() + ttl));
        }
        self.changed.notify_one();
    }

    /// Restarts the clock of a known check: a pass/warn/fail report.
    /// Returns the TTL, or None if the check is not a TTL check here.
    pub fn reset(&self, check_id: &str) -> Option<Duration> {
        let mut d = self.deadlines.lock().ok()?;
        let entry = d.get_mut(check_id)?;
        entry.1 = Instant::now() + entry.0;
        Some(entry.0)
    }

    /// Whether a check is tracked here.
    pub fn knows(&self, check_id: &str) -> bool {
        self.deadlines
            .lock()
            .map(|d| d.contains_key(check_id))
            .unwrap_or(false)
    }

    /// Forgets a check (deregistered).
    pub fn disarm(&self, check_id: &str) {
        if let Ok(mut d) = self.deadlines.lock() {
            d.remove(check_id);
        }
    }

    /// The checks whose TTL ran out; their clocks are parked until the next
    /// report, so an expired check is marked critical once, not every tick.
    pub fn take_expired(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(mut d) = self.deadlines.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (id, (ttl, deadline)) in d.iter_mut() {
            if *deadline <= now {
                out.push(id.clone());
                // Far in the future until reset() brings it back.
                *deadline = now + Duration::from_secs(86_400 * 365).max(*ttl);
            }
        }
        out
    }

    /// When the next TTL runs out, if any check is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.lock().ok()?.values().map(|(_, d)| *d).min()
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
