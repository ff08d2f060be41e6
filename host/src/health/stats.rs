//! Counters of the check scheduler, for `/v1/muster/checks` and the
//! `bench/checks` script: runs, plugin faults, catalog writes, and how late
//! checks start against their schedule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Upper bounds of the lateness buckets, in microseconds.
const BOUNDS_US: &[u64] = &[
    500,
    1_000,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    300_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    u64::MAX,
];

/// Scheduler counters; all lock-free.
pub struct SchedulerStats {
    runs: AtomicU64,
    faults: AtomicU64,
    writes: AtomicU64,
    max_lateness_us: AtomicU64,
    lateness: Vec<AtomicU64>,
}

impl Default for SchedulerStats {
    fn default() -> Self {
        SchedulerStats {
            runs: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            max_lateness_us: AtomicU64::new(0),
            lateness: BOUNDS_US.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SchedulerStats {
    /// A check started `late` after its slot.
    pub fn record_start(&self, late: Duration) {
        let us = late.as_micros().min(u64::MAX as u128) as u64;
        let bucket = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len() - 1);
        self.lateness[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_lateness_us.fetch_max(us, Ordering::Relaxed);
    }

    /// A check finished; `fault` if its plugin misbehaved.
    pub fn record_run(&self, fault: bool) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if fault {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A check result was written to the catalog.
    pub fn record_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as JSON; buckets are `[upper bound in ms, count]`, so a
    /// client can take two snapshots and compute quantiles of the window.
    pub fn to_json(&self, scheduled: usize) -> Value {
        let counts: Vec<u64> = self
            .lateness
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Value {
            if total == 0 {
                return Value::Null;
            }
            let want = (q * total as f64).ceil() as u64;
            let mut seen = 0;
            for (bound, c) in BOUNDS_US.iter().zip(&counts) {
                seen += c;
                if seen >= want {
                    return json!(*bound as f64 / 1000.0);
                }
            }
            Value::Null
        };
        json!({
            "Scheduled": scheduled,
            "Runs": self.runs.load(Ordering::Relaxed),
            "Faults": self.faults.load(Ordering::Relaxed),
            "Writes": self.writes.load(Ordering::Relaxed),
            "LatenessMs": {
                "P50": quantile(0.5),
                "P99": quantile(0.99),
                "Max": self.max_lateness_us.load(Ordering::Relaxed) as f64 / 1000.0,
                "Buckets": BOUNDS_US.iter().zip(&counts).map(|(b, c)| {
                    let bound = if *b == u64::MAX { Value::Null } else { json!(*b as f64 / 1000.0) };
                    json!([bound, c])
                }).collect::<Vec<_>>(),
            },
        })
    }
}
