//! What an exporter reports about itself: which version is live, where it
//! stands in the feed, how far behind the catalog it runs, and every swap
//! it went through. Shown by `GET /v1/muster/exporters` and next to the
//! plugin in `GET /v1/muster/plugins`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Lag samples kept for the percentiles.
const LAG_SAMPLES: usize = 20_000;
/// Swaps kept in the history.
const SWAP_HISTORY: usize = 100;

/// What the exporter is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Not the Raft leader: exporters run on the leader only.
    Standby,
    /// Opening the plugin and handing it the whole catalog.
    Opening,
    /// Streaming changes.
    Exporting,
    /// The backend or the plugin failed; waiting to open or resync again.
    Retrying,
    /// Removed from the config.
    Stopped,
}

/// One attempted swap.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwapRecord {
    /// Unix milliseconds.
    pub at: u64,
    /// What asked for it: "file", "reload", "config".
    pub trigger: String,
    pub from_hash: String,
    pub to_hash: String,
    /// "live", or "rejected: why".
    pub outcome: String,
    /// The feed sequence the new version's resync stood at.
    pub resync_seq: u64,
    /// How far the new version had caught up, behind the old one, when it
    /// took over the stream (see `pump::catch_up`).
    pub caught_up_seq: u64,
    /// The last sequence the old version applied before the switch.
    pub old_applied_seq: u64,
    /// The first sequence the new version was handed after the switch
    /// (caught_up_seq + 1 when there was a change to hand).
    pub first_streamed_seq: Option<u64>,
    /// How long the change stream waited at the switch: the new version
    /// catching up from its resync to where the old one was.
    pub pause_ms: f64,
}

/// An exporter's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExporterStatus {
    pub name: String,
    pub phase: Phase,
    /// The content hash of the version that exports now (none while
    /// standing by or before the first open succeeded).
    pub live_hash: Option<String>,
    pub only_passing: bool,
    /// The last feed sequence applied to the backend.
    pub applied_seq: u64,
    /// The feed's newest sequence.
    pub feed_seq: u64,
    pub changes_applied: u64,
    pub batches: u64,
    pub resyncs: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Commit to backend write acknowledged, over recent changes.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// How long `apply` calls took, over recent batches: what of the lag
    /// is the plugin and its backend.
    pub apply_p99_ms: f64,
    pub apply_max_ms: f64,
    pub swaps: VecDeque<SwapRecord>,
    #[serde(skip)]
    lags: VecDeque<f64>,
    #[serde(skip)]
    applies: VecDeque<f64>,
}

impl ExporterStatus {
    pub fn new(name: &str, only_passing: bool) -> ExporterStatus {
        ExporterStatus {
            name: name.to_string(),
            phase: Phase::Standby,
            live_hash: None,
            only_passing,
            applied_seq: 0,
            feed_seq: 0,
            changes_applied: 0,
            batches: 0,
            resyncs: 0,
            failures: 0,
            last_error: None,
            lag_p50_ms: 0.0,
            lag_p99_ms: 0.0,
            lag_max_ms: 0.0,
            apply_p99_ms: 0.0,
            apply_max_ms: 0.0,
            swaps: VecDeque::new(),
            lags: VecDeque::new(),
            applies: VecDeque::new(),
        }
    }

    /// Counts an applied batch, how long its call took and the lag of
    /// each of its changes.
    pub fn applied(&mut self, seq: u64, took: Duration, lags: impl Iterator<Item = Duration>) {
        self.applied_seq = seq;
        self.batches += 1;
        if self.applies.len() == LAG_SAMPLES {
            self.applies.pop_front();
        }
        self.applies.push_back(took.as_secs_f64() * 1000.0);
        for lag in lags {
            self.changes_applied += 1;
            if self.lags.len() == LAG_SAMPLES {
                self.lags.pop_front();
            }
            self.lags.push_back(lag.as_secs_f64() * 1000.0);
        }
    }

    pub fn failed(&mut self, error: String) {
        self.failures += 1;
        self.phase = Phase::Retrying;
        self.last_error = Some(error);
    }

    pub fn swapped(&mut self, record: SwapRecord) {
        if self.swaps.len() == SWAP_HISTORY {
            self.swaps.pop_front();
        }
        self.swaps.push_back(record);
    }

    /// Clears the lag samples (the benchmark measures one phase at a time).
    pub fn reset_lag(&mut self) {
        self.lags.clear();
        self.applies.clear();
    }

    /// A copy with the percentiles filled in.
    pub fn snapshot(&self, feed_seq: u64) -> ExporterStatus {
        let mut out = self.clone();
        out.feed_seq = feed_seq;
        let lags = sorted(&self.lags);
        out.lag_p50_ms = pick(&lags, 0.5);
        out.lag_p99_ms = pick(&lags, 0.99);
        out.lag_max_ms = lags.last().copied().unwrap_or(0.0);
        let applies = sorted(&self.applies);
        out.apply_p99_ms = pick(&applies, 0.99);
        out.apply_max_ms = applies.last().copied().unwrap_or(0.0);
        out.lags.clear();
        out.applies.clear();
        out
    }
}

fn sorted(samples: &VecDeque<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of sorted samples (0 when there are none).
fn pick(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
