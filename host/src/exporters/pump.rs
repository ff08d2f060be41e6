//! One exporter's task: on the leader, open the plugin, hand it the whole
//! catalog, then stream the feed to it in ordered batches, tick it every
//! second, and recover from every failure by backing off and resyncing.
//! A hot swap prepares the new version beside the running one and switches
//! at a known feed sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::feed::{Change, ExportFeed, Instance};
use super::settings::Settings;
use super::status::{now_ms, ExporterStatus, Phase, SwapRecord};
use crate::catalog::types::CheckStatus;
use crate::plugins::exporter::{ExportError, LiveExporter};
use crate::plugins::{Plugin, Plugins};

/// First wait after a failure; doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts: a backend that returns is written to
/// within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often `tick` is called.
const TICK: Duration = Duration::from_secs(1);
/// Longest a swap's new version chases the running one before the switch.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// What the manager asks of a running exporter.
pub enum Control {
    /// Replace the plugin with `plugin` (already compiled and linked).
    Swap {
        plugin: Arc<Plugin>,
        settings: Settings,
        trigger: &'static str,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// A new version, started, resynced at `resync_seq` and caught up to
/// `cursor` beside the running one.
struct Prepared {
    live: LiveExporter,
    resync_seq: u64,
    cursor: u64,
}

/// A new version being opened and resynced beside the running one.
struct Pending {
    task: JoinHandle<Result<Prepared, ExportError>>,
    plugin: Arc<Plugin>,
    settings: Settings,
    trigger: &'static str,
    /// Everyone who asked for this version (a file change and a reload
    /// command often ask together).
    replies: Vec<oneshot::Sender<Result<String, String>>>,
}

pub struct Pump {
    pub name: String,
    pub plugin: Arc<Plugin>,
    pub settings: Settings,
    pub registry: Plugins,
    pub feed: Arc<ExportFeed>,
    pub status: Arc<Mutex<ExporterStatus>>,
    live: Option<LiveExporter>,
    /// The last feed sequence the backend has (through resync or apply).
    cursor: u64,
    /// `cursor`, shared with a swap's new version, which catches up only
    /// to what this version has already applied (see `prepare`).
    applied: Arc<AtomicU64>,
    needs_resync: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Set by a swap until the new version is handed its first change.
    awaiting_first: bool,
}

impl Pump {
    pub fn new(
        name: String,
        plugin: Arc<Plugin>,
        settings: Settings,
        registry: Plugins,
        feed: Arc<ExportFeed>,
        status: Arc<Mutex<ExporterStatus>>,
    ) -> Pump {
        Pump {
            name,
            plugin,
            settings,
            registry,
            feed,
            status,
            live: None,
            cursor: 0,
            applied: Arc::default(),
            needs_resync: true,
            retry_at: None,
            backoff: MIN_BACKOFF,
            awaiting_first: false,
        }
    }

    fn with_status(&self, f: impl FnOnce(&mut ExporterStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Runs until the manager drops the control channel.
    pub async fn run(
        mut self,
        mut leader: watch::Receiver<bool>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut feed_rx = self.feed.subscribe();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Option<Pending> = None;
        loop {
            let leading = *leader.borrow_and_update();
            if !leading {
                if self.live.take().is_some() {
                    tracing::info!(exporter = %self.name, "not the leader any more: exporter stands by");
                }
                self.needs_resync = true;
                self.retry_at = None;
                self.with_status(|s| {
                    s.phase = Phase::Standby;
                    s.live_hash = None;
                });
            } else if self.needs_work() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
                self.recover().await;
                continue;
            }
            let ready = leading && !self.needs_work();
            let behind = ready && self.cursor < self.feed.latest();
            let retry_at = self.retry_at.filter(|_| leading && self.needs_work());
            tokio::select! {
                biased;
                changed = leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                msg = control.recv() => match msg {
                    None => return,
                    Some(Control::Swap { plugin, settings, trigger, reply }) => {
                        let same = |p: &Arc<Plugin>, s: &Settings| p.hash == plugin.hash && *s == settings;
                        match pending.as_mut() {
                            // Already on its way: answer with its outcome.
                            Some(p) if same(&p.plugin, &p.settings) => p.replies.push(reply),
                            // Already running: nothing to swap.
                            None if same(&self.plugin, &self.settings) => {
                                let _ = reply.send(Ok(plugin.hash.clone()));
                            }
                            _ => {
                                if let Some(old) = pending.take() {
                                    old.task.abort();
                                    for r in old.replies {
                                        let _ = r.send(Err("superseded by a newer version".into()));
                                    }
                                }
                                pending = Some(self.prepare(plugin, settings, trigger, reply, leading));
                            }
                        }
                    }
                },
                prepared = wait(&mut pending), if pending.is_some() => {
                    if let Some(p) = pending.take() {
                        let leading = *leader.borrow();
                        self.finish_swap(p, prepared, leading).await;
                    }
                }
                _ = ticker.tick(), if ready => self.tick().await,
                _ = std::future::ready(()), if behind => self.apply_batch().await,
                _ = feed_rx.changed(), if ready => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => {}
            }
        }
    }

    fn set_cursor(&mut self, seq: u64) {
        self.cursor = seq;
        self.applied.store(seq, Ordering::Release);
    }

    fn needs_work(&self) -> bool {
        self.needs_resync || self.live.as_ref().is_none_or(LiveExporter::is_poisoned)
    }

    /// Opens the plugin if needed and resyncs it; on failure, schedules
    /// the next attempt.
    async fn recover(&mut self) {
        self.with_status(|s| s.phase = Phase::Opening);
        if self.live.as_ref().is_none_or(LiveExporter::is_poisoned) {
            self.live = None;
            match self
                .registry
                .open_exporter(
                    self.plugin.clone(),
                    &self.settings.plugin_config,
                    self.settings.call_timeout,
                )
                .await
            {
                Ok(live) => self.live = Some(live),
                Err(e) => return self.fail(e),
            }
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let snapshot = self.feed.snapshot();
        let all = exported(&snapshot.instances, self.settings.only_passing);
        let resynced = live.resync(&all, self.settings.call_timeout * 3).await;
        let hash = live.hash().to_string();
        match resynced {
            Ok(()) => {
                self.set_cursor(snapshot.seq);
                self.needs_resync = false;
                self.retry_at = None;
                self.backoff = MIN_BACKOFF;
                let recovered = self.status.lock().is_ok_and(|s| s.phase == Phase::Retrying);
                if recovered {
                    tracing::info!(exporter = %self.name, seq = snapshot.seq, instances = all.len(), "exporter recovered with a full resync");
                } else {
                    tracing::info!(exporter = %self.name, seq = snapshot.seq, instances = all.len(), hash = &hash[..12], "exporter open and resynced");
                }
                self.with_status(|s| {
                    s.phase = Phase::Exporting;
                    s.live_hash = Some(hash);
                    s.resyncs += 1;
                    s.applied_seq = snapshot.seq;
                });
            }
            Err(e) => self.fail(e),
        }
    }

    /// Records a failure and schedules a resync (a fresh instance after a
    /// trap) after the back-off.
    fn fail(&mut self, e: ExportError) {
        if matches!(e, ExportError::Fault(_)) {
            self.live = None;
        }
        self.needs_resync = true;
        self.retry_at = Some(Instant::now() + self.backoff);
        let message = e.to_string();
        let repeated = self
            .status
            .lock()
            .is_ok_and(|s| s.last_error.as_deref() == Some(message.as_str()));
        if repeated {
            tracing::debug!(exporter = %self.name, error = %message, "exporter still failing");
        } else {
            tracing::warn!(exporter = %self.name, error = %message, retry_ms = self.backoff.as_millis() as u64, "exporter failed; will resync");
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.with_status(|s| s.failed(message));
    }

    /// Hands the next batch of the feed to the plugin.
    async fn apply_batch(&mut self) {
        let entries = match self.feed.read(self.cursor, self.settings.batch) {
            Ok(entries) => entries,
            Err(overflow) => {
                tracing::warn!(exporter = %self.name, error = %overflow, "exporter fell behind the feed; resyncing");
                self.needs_resync = true;
                return;
            }
        };
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first_seq, last_seq) = (first.seq, last.seq);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let changes: Vec<Change> = entries
            .iter()
            .map(|e| exported_change(&e.change, self.settings.only_passing))
            .collect();
        let started = Instant::now();
        match live.apply(&changes, self.settings.call_timeout).await {
            Ok(()) => {
                self.set_cursor(last_seq);
                let now = Instant::now();
                let took = now - started;
                let first_after_swap = std::mem::take(&mut self.awaiting_first);
                self.with_status(|s| {
                    s.applied(last_seq, took, entries.iter().map(|e| now - e.at));
                    if first_after_swap {
                        if let Some(swap) = s.swaps.back_mut() {
                            swap.first_streamed_seq = Some(first_seq);
                        }
                    }
                });
            }
            Err(e) => self.fail(e),
        }
    }

    async fn tick(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if let Err(e) = live.tick(self.settings.call_timeout).await {
            self.fail(e);
        }
    }

    /// Starts opening and resyncing `plugin` beside the running version.
    /// Off the leader there is nothing to open: the new version is simply
    /// the one to open when this node leads.
    fn prepare(
        &self,
        plugin: Arc<Plugin>,
        settings: Settings,
        trigger: &'static str,
        reply: oneshot::Sender<Result<String, String>>,
        leading: bool,
    ) -> Pending {
        let (registry, feed) = (self.registry.clone(), self.feed.clone());
        let (p, s) = (plugin.clone(), settings.clone());
        let old_applied = self.applied.clone();
        let task = tokio::spawn(async move {
            if !leading {
                return Err(ExportError::Refused(String::new()));
            }
            let mut live = registry
                .open_exporter(p, &s.plugin_config, s.call_timeout)
                .await?;
            let snapshot = feed.snapshot();
            let all = exported(&snapshot.instances, s.only_passing);
            live.resync(&all, s.call_timeout * 3).await?;
            let cursor = catch_up(&mut live, &feed, &s, snapshot.seq, &old_applied).await?;
            Ok(Prepared {
                live,
                resync_seq: snapshot.seq,
                cursor,
            })
        });
        Pending {
            task,
            plugin,
            settings,
            trigger,
            replies: vec![reply],
        }
    }

    /// Switches to a prepared version, or records why it was rejected.
    async fn finish_swap(
        &mut self,
        pending: Pending,
        prepared: Result<Prepared, ExportError>,
        leading: bool,
    ) {
        let from_hash = self.plugin.hash.clone();
        let to_hash = pending.plugin.hash.clone();
        let mut record = SwapRecord {
            at: now_ms(),
            trigger: pending.trigger.to_string(),
            from_hash: from_hash.clone(),
            to_hash: to_hash.clone(),
            outcome: String::new(),
            resync_seq: 0,
            caught_up_seq: 0,
            old_applied_seq: self.cursor,
            first_streamed_seq: None,
            pause_ms: 0.0,
        };
        let mut recorded = false;
        let answer = match prepared {
            // Not leading: the new version becomes the one to open later.
            Err(ExportError::Refused(why)) if why.is_empty() && !leading => {
                self.adopt(&pending);
                record.outcome = "live (standing by: not the leader)".into();
                Ok(to_hash.clone())
            }
            Ok(Prepared {
                live,
                resync_seq,
                cursor: seq,
            }) if leading => {
                let started = Instant::now();
                let old_applied = self.cursor;
                self.adopt(&pending);
                self.live = Some(live);
                self.set_cursor(seq);
                self.needs_resync = false;
                self.retry_at = None;
                self.backoff = MIN_BACKOFF;
                record.resync_seq = resync_seq;
                record.caught_up_seq = seq;
                record.outcome = "live".into();
                // In the history before the first change reaches the new
                // version, which fills in `FirstStreamedSeq`.
                self.with_status(|s| s.swapped(record.clone()));
                recorded = true;
                self.awaiting_first = true;
                // The old version may have applied past the new one's
                // resync: hand the new one those changes now, before
                // anything else, so the stream resumes where it was.
                while self.cursor < old_applied && !self.needs_work() {
                    self.apply_batch().await;
                }
                let pause_ms = started.elapsed().as_secs_f64() * 1000.0;
                record.pause_ms = pause_ms;
                let hash = to_hash.clone();
                self.with_status(|s| {
                    s.phase = Phase::Exporting;
                    s.live_hash = Some(hash);
                    s.resyncs += 1;
                    if let Some(last) = s.swaps.back_mut() {
                        last.pause_ms = pause_ms;
                    }
                });
                Ok(to_hash.clone())
            }
            Ok(_) => {
                self.adopt(&pending);
                record.outcome = "live (standing by: not the leader)".into();
                Ok(to_hash.clone())
            }
            Err(e) => {
                record.outcome = format!("rejected: {e}");
                Err(e.to_string())
            }
        };
        match &answer {
            Ok(_) => {
                tracing::info!(exporter = %self.name, from = &from_hash[..12], to = &to_hash[..12], trigger = pending.trigger, resync_seq = record.resync_seq, pause_ms = record.pause_ms, "exporter swapped")
            }
            Err(e) => {
                tracing::warn!(exporter = %self.name, to = &to_hash[..12], trigger = pending.trigger, error = %e, "exporter swap rejected; the running version stays")
            }
        }
        // A live swap on the leader is in the history already.
        if !recorded {
            self.with_status(|s| s.swapped(record));
        }
        for r in pending.replies {
            let _ = r.send(answer.clone());
        }
    }

    /// Makes the pending version the current one (in listings too).
    fn adopt(&mut self, pending: &Pending) {
        self.plugin = pending.plugin.clone();
        self.settings = pending.settings.clone();
        self.registry.install(pending.plugin.clone());
        let only_passing = self.settings.only_passing;
        self.with_status(|s| s.only_passing = only_passing);
    }
}

/// Brings a new version from its resync towards the running one while the
/// running one keeps streaming, so the switch itself has at most about a
/// batch left to hand over. It applies only changes the running version
/// has applied already: whatever that one wrote (under its own lease or
/// session), this one writes after it, and so owns. Gives up after
/// `CATCH_UP_LIMIT` if the running version keeps pulling away (the switch
/// then hands over the rest).
async fn catch_up(
    live: &mut LiveExporter,
    feed: &ExportFeed,
    settings: &Settings,
    from: u64,
    old_applied: &AtomicU64,
) -> Result<u64, ExportError> {
    let started = Instant::now();
    let mut cursor = from;
    while started.elapsed() < CATCH_UP_LIMIT {
        let limit = old_applied.load(Ordering::Acquire);
        if limit <= cursor {
            break;
        }
        let Ok(entries) = feed.read(cursor, settings.batch) else {
            // Fell off the feed: the switch resyncs instead.
            break;
        };
        let changes: Vec<Change> = entries
            .iter()
            .take_while(|e| e.seq <= limit)
            .map(|e| exported_change(&e.change, settings.only_passing))
            .collect();
        let Some(last) = entries.get(changes.len().wrapping_sub(1)) else {
            break;
        };
        let last = last.seq;
        live.apply(&changes, settings.call_timeout).await?;
        cursor = last;
    }
    Ok(cursor)
}

async fn wait(pending: &mut Option<Pending>) -> Result<Prepared, ExportError> {
    match pending.as_mut() {
        Some(p) => match (&mut p.task).await {
            Ok(result) => result,
            Err(e) => Err(ExportError::Fault(format!(
                "opening the new version failed: {e}"
            ))),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The instances an exporter is handed.
fn exported(all: &[Arc<Instance>], only_passing: bool) -> Vec<Arc<Instance>> {
    all.iter()
        .filter(|i| !only_passing || i.status != CheckStatus::Critical)
        .cloned()
        .collect()
}

/// A change as an exporter sees it: with `only_passing`, an instance that
/// turned critical is removed from the backend.
fn exported_change(change: &Change, only_passing: bool) -> Change {
    match change {
        Change::Upsert(i) if only_passing && i.status == CheckStatus::Critical => {
            Change::Remove((i.node.clone(), i.id.clone()))
        }
        other => other.clone(),
    }
}
