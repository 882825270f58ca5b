//! [`Monitor`]: a background sampler of process, cache, breaker, request
//! and user figures, with a bounded history and alert evaluation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::alert::{AlertManager, AlertStatus};
use super::alertmanager::AlertmanagerPush;
use super::figures::FigureSet;
use super::process::{ProcessCounters, cpu_percent};
use super::stats::{Stats, StatsSnapshot};

/// Default sampling period: 5 s, fine enough for a live dashboard and
/// cheap (a few `/proc` reads).
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Default history: the last 15 minutes, what the dashboard charts.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(15 * 60);

/// Cache figures in a sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CacheSample {
    /// Fresh hits so far.
    pub hits: u64,
    /// Misses so far.
    pub misses: u64,
    /// Hit ratio so far (stale and revalidated count as hits).
    pub hit_ratio: f64,
    /// Stale answers so far (max-stale, stale-while-revalidate, stale-if-error).
    pub stale: u64,
    /// Of those, answers that stood in for an upstream error so far.
    pub stale_on_error: u64,
    /// Share of the cache's answers since the previous sample that stood in
    /// for an upstream error (0..=1): what the `cache.stale_on_error_ratio`
    /// figure and the `ServingStaleOnError` alert read.
    pub stale_on_error_ratio: f64,
    /// Bytes charged.
    pub bytes: u64,
    /// Budget.
    pub max_bytes: u64,
    /// Entries.
    pub entries: u64,
}

/// One breaker in a sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BreakerSample {
    /// Its key.
    pub key: String,
    /// Its state (`closed`, `open`, `half_open` ...).
    pub state: &'static str,
    /// Failure rate of its window, percent.
    pub failure_rate: f64,
    /// For an open breaker, what opened it (`calls`, `probe`, or `trip`:
    /// another instance's opening); `null` otherwise.
    pub opened_by: Option<&'static str>,
}

/// What this instance sent of its circuit openings to its peers, in a
/// sample (see [`SharedOpenings`](super::SharedOpenings)): the totals so
/// far, and what did not reach a peer since the previous sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SharedOpeningsSample {
    /// Posts a peer took so far.
    pub delivered: u64,
    /// Posts refused, unanswered in time, or that could not be sent, so far.
    pub failed: u64,
    /// Sends not made so far (too many in flight, or no runtime).
    pub dropped: u64,
    /// Sends that did not reach a peer (failed or dropped) since the
    /// previous sample: what the `circuit_breaker.openings_unshared`
    /// figure and the `OpeningsNotShared` alert read.
    pub unshared: u64,
}

/// Everything sampled at one instant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Milliseconds since the monitor was built.
    pub at_ms: u64,
    /// When it was taken on the wall clock, milliseconds since the Unix
    /// epoch: what a script that reads `/stats` lines up with its logs.
    pub unix_ms: u64,
    /// CPU use of the process since the previous sample, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Process counters.
    pub process: ProcessCounters,
    /// Request statistics, when a `Stats` handle is attached.
    pub requests: Option<StatsSnapshot>,
    /// Cache figures, when a cache is attached.
    pub cache: Option<CacheSample>,
    /// Breakers, when attached.
    pub breakers: Vec<BreakerSample>,
    /// The openings sent to peer instances, when attached
    /// ([`MonitorBuilder::shared_openings`]).
    pub shared_openings: Option<SharedOpeningsSample>,
    /// User gauges.
    pub gauges: BTreeMap<String, f64>,
    /// Alerts firing after this sample's evaluation.
    pub alerts_firing: usize,
}

/// What `/stats` serves: the latest sample, the history and the alerts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MonitorSnapshot {
    /// The most recent sample.
    pub latest: Option<Sample>,
    /// Samples, oldest first.
    pub history: Vec<Sample>,
    /// Every alert rule with its state.
    pub alerts: Vec<AlertStatus>,
}

type Gauge = Arc<dyn Fn() -> f64 + Send + Sync>;

struct Inner {
    interval: Duration,
    history_len: usize,
    epoch: Instant,
    stats: Option<Stats>,
    #[cfg(feature = "cache")]
    cache: Option<crate::cache::Cache>,
    #[cfg(feature = "circuit-breaker")]
    breakers: Option<crate::circuit_breaker::CircuitBreakers>,
    /// The openings sender, and its unshared sends at the previous sample.
    #[cfg(feature = "circuit-breaker")]
    shared_openings: Option<(super::SharedOpenings, Mutex<u64>)>,
    gauges: Mutex<Vec<(String, Gauge)>>,
    alerts: Mutex<AlertManager>,
    alertmanager: Option<AlertmanagerPush>,
    history: Mutex<VecDeque<Sample>>,
    last_cpu: Mutex<Option<(Instant, Option<Duration>)>>,
    /// Cache answers and stale-on-error answers at the previous sample.
    #[cfg(feature = "cache")]
    last_cache: Mutex<(u64, u64)>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

/// The sampler handle. Clones share it; the background task stops on
/// [`Monitor::stop`] or when the last handle is dropped.
///
/// ```
/// use tower_optimizer::monitor::{Monitor, Stats};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let monitor = Monitor::builder().stats(Stats::default()).build();
/// monitor.register_gauge("queue.depth", || 3.0);
/// let sample = monitor.sample_now();
/// assert_eq!(sample.gauges["queue.depth"], 3.0);
/// assert_eq!(monitor.snapshot().history.len(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("interval", &self.inner.interval)
            .field("running", &self.is_running())
            .finish()
    }
}

/// Builds a [`Monitor`].
#[must_use]
pub struct MonitorBuilder {
    interval: Duration,
    history: Duration,
    stats: Option<Stats>,
    #[cfg(feature = "cache")]
    cache: Option<crate::cache::Cache>,
    #[cfg(feature = "circuit-breaker")]
    breakers: Option<crate::circuit_breaker::CircuitBreakers>,
    #[cfg(feature = "circuit-breaker")]
    shared_openings: Option<super::SharedOpenings>,
    alerts: AlertManager,
    alertmanager: Option<AlertmanagerPush>,
}

impl std::fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("interval", &self.interval)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl MonitorBuilder {
    /// Sampling period (zero is taken as the default).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = if interval.is_zero() {
            DEFAULT_SAMPLE_INTERVAL
        } else {
            interval
        };
        self
    }

    /// How much history to keep.
    pub fn history(mut self, history: Duration) -> Self {
        self.history = history;
        self
    }

    /// Samples these request statistics.
    pub fn stats(mut self, stats: Stats) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Samples this cache.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache(mut self, cache: crate::cache::Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Samples these breakers.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    pub fn breakers(mut self, breakers: crate::circuit_breaker::CircuitBreakers) -> Self {
        self.breakers = Some(breakers);
        self
    }

    /// Samples what this openings sender sent to its peers: the totals,
    /// and the `circuit_breaker.openings_unshared` figure (sends that did
    /// not reach a peer since the previous sample) for alert rules.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    pub fn shared_openings(mut self, share: super::SharedOpenings) -> Self {
        self.shared_openings = Some(share);
        self
    }

    /// Evaluates these alerts after every sample.
    pub fn alerts(mut self, alerts: AlertManager) -> Self {
        self.alerts = alerts;
        self
    }

    /// Pushes the alerts to a Prometheus Alertmanager after every
    /// evaluation (see [`AlertmanagerPush`]).
    pub fn alertmanager(mut self, push: AlertmanagerPush) -> Self {
        self.alertmanager = Some(push);
        self
    }

    /// The monitor (not started: see [`Monitor::start`]).
    pub fn build(self) -> Monitor {
        let history_len = usize::try_from(self.history.as_millis() / self.interval.as_millis().max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, 100_000);
        Monitor {
            inner: Arc::new(Inner {
                interval: self.interval,
                history_len,
                epoch: Instant::now(),
                stats: self.stats,
                #[cfg(feature = "cache")]
                cache: self.cache,
                #[cfg(feature = "circuit-breaker")]
                breakers: self.breakers,
                #[cfg(feature = "circuit-breaker")]
                shared_openings: self.shared_openings.map(|share| (share, Mutex::default())),
                gauges: Mutex::default(),
                alerts: Mutex::new(self.alerts),
                alertmanager: self.alertmanager,
                history: Mutex::default(),
                last_cpu: Mutex::default(),
                #[cfg(feature = "cache")]
                last_cache: Mutex::default(),
                task: Mutex::default(),
            }),
        }
    }
}

impl Monitor {
    /// A builder with the defaults (every 5 s, 15 minutes of history).
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder {
            interval: DEFAULT_SAMPLE_INTERVAL,
            history: DEFAULT_HISTORY,
            stats: None,
            #[cfg(feature = "cache")]
            cache: None,
            #[cfg(feature = "circuit-breaker")]
            breakers: None,
            #[cfg(feature = "circuit-breaker")]
            shared_openings: None,
            alerts: AlertManager::new(),
            alertmanager: None,
        }
    }

    /// Adds a user figure, sampled with the rest (and usable in alert rules).
    pub fn register_gauge(&self, name: &str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        let mut gauges = self.inner.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        gauges.retain(|(n, _)| n != name);
        gauges.push((name.to_owned(), Arc::new(read)));
    }

    /// Starts the background sampler (once; needs a Tokio runtime).
    pub fn start(&self) {
        let mut task = self.inner.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = self.inner.interval;
        *task = Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Monitor { inner }.sample_now();
            }
        }));
    }

    /// Stops the background sampler.
    pub fn stop(&self) {
        if let Some(task) = self.inner.task.lock().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }

    /// Whether the background sampler runs.
    pub fn is_running(&self) -> bool {
        self.inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Takes a sample now, keeps it in the history and evaluates the alerts.
    pub fn sample_now(&self) -> Sample {
        let inner = &self.inner;
        let now = Instant::now();
        let process = ProcessCounters::read();
        let cpu = {
            let mut last = inner.last_cpu.lock().unwrap_or_else(PoisonError::into_inner);
            let cpu =
                last.and_then(|(at, before)| cpu_percent(before, process.cpu_time, now.saturating_duration_since(at)));
            *last = Some((now, process.cpu_time));
            cpu
        };
        let requests = inner.stats.as_ref().map(|s| s.snapshot(now));
        let mut figures = FigureSet::new();
        if let Some(r) = &requests {
            figures = figures.stats(r);
        }
        #[cfg(feature = "cache")]
        let cache = inner.cache.as_ref().map(|c| {
            let s = c.stats();
            super::counters::export(&s);
            // Answers from the lookup on: a stale-on-error answer was
            // first counted as a miss, so it is not counted twice. The
            // counters are read one by one while others count, so one may
            // run a step ahead: saturate rather than underflow.
            let answered = s.hits + s.misses + s.stale.saturating_sub(s.stale_on_error);
            let stale_on_error_ratio = {
                let mut last = inner.last_cache.lock().unwrap_or_else(PoisonError::into_inner);
                let (before, on_error_before) = std::mem::replace(&mut *last, (answered, s.stale_on_error));
                ratio(
                    s.stale_on_error.saturating_sub(on_error_before),
                    answered.saturating_sub(before),
                )
            };
            figures = std::mem::take(&mut figures)
                .cache(&s)
                .with("cache.stale_on_error_ratio", stale_on_error_ratio);
            CacheSample {
                hits: s.hits,
                misses: s.misses,
                hit_ratio: s.hit_ratio(),
                stale: s.stale,
                stale_on_error: s.stale_on_error,
                stale_on_error_ratio,
                bytes: s.bytes,
                max_bytes: s.max_bytes,
                entries: s.entries,
            }
        });
        #[cfg(not(feature = "cache"))]
        let cache = None;
        #[cfg(feature = "circuit-breaker")]
        let breakers: Vec<BreakerSample> = inner.breakers.as_ref().map_or_else(Vec::new, |b| {
            let snapshot = b.snapshot();
            figures = std::mem::take(&mut figures).breakers(&snapshot);
            snapshot
                .iter()
                .map(|s| BreakerSample {
                    key: s.key.to_string(),
                    state: s.state.as_str(),
                    failure_rate: s.figures.failure_rate(),
                    opened_by: s.opened_by.map(crate::circuit_breaker::OpenCause::as_str),
                })
                .collect()
        });
        #[cfg(not(feature = "circuit-breaker"))]
        let breakers = Vec::new();
        #[cfg(feature = "circuit-breaker")]
        let shared_openings = inner.shared_openings.as_ref().map(|(share, last)| {
            let s = share.stats();
            let not_sent = s.failed + s.dropped;
            let before = std::mem::replace(&mut *last.lock().unwrap_or_else(PoisonError::into_inner), not_sent);
            // Counted one by one while sends finish: saturate rather
            // than underflow.
            let unshared = not_sent.saturating_sub(before);
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            {
                figures = std::mem::take(&mut figures).with("circuit_breaker.openings_unshared", unshared as f64);
            }
            SharedOpeningsSample {
                delivered: s.delivered,
                failed: s.failed,
                dropped: s.dropped,
                unshared,
            }
        });
        #[cfg(not(feature = "circuit-breaker"))]
        let shared_openings = None;
        let gauges: BTreeMap<String, f64> = {
            let gauges = inner.gauges.lock().unwrap_or_else(PoisonError::into_inner).clone();
            // A gauge that panics is left out of this sample, not the end
            // of sampling.
            gauges
                .iter()
                .filter_map(|(name, read)| Some((name.clone(), crate::util::guarded("gauge", || read())?)))
                .collect()
        };
        for (name, value) in &gauges {
            figures = figures.with(name, *value);
        }
        if let Some(rss) = process.resident_memory {
            figures = figures.with("process.resident_memory", rss as f64);
        }
        if let Some(cpu) = cpu {
            figures = figures.with("process.cpu_percent", cpu);
        }
        let alerts_firing = {
            let mut alerts = inner.alerts.lock().unwrap_or_else(PoisonError::into_inner);
            alerts.evaluate_figures(&figures, now);
            if let Some(push) = &inner.alertmanager {
                push.observe(&alerts.statuses(), inner.interval, now);
            }
            alerts.firing()
        };
        let sample = Sample {
            at_ms: u64::try_from(now.saturating_duration_since(inner.epoch).as_millis()).unwrap_or(u64::MAX),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            cpu_percent: cpu,
            process,
            requests,
            cache,
            breakers,
            shared_openings,
            gauges,
            alerts_firing,
        };
        export(&sample);
        let mut history = inner.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() >= inner.history_len {
            history.pop_front();
        }
        history.push_back(sample.clone());
        sample
    }

    /// The alerts that are not inactive (pending, firing or resolved), as
    /// of the last evaluation; [`snapshot`](Self::snapshot) lists every
    /// rule's, with the history.
    pub fn alerts(&self) -> Vec<AlertStatus> {
        let alerts = self.inner.alerts.lock().unwrap_or_else(PoisonError::into_inner);
        alerts
            .statuses()
            .into_iter()
            .filter(|s| s.state != super::AlertState::Inactive)
            .collect()
    }

    /// The latest sample, the history and the alerts.
    pub fn snapshot(&self) -> MonitorSnapshot {
        let history: Vec<Sample> = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        MonitorSnapshot {
            latest: history.last().cloned(),
            history,
            alerts: self
                .inner
                .alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .statuses(),
        }
    }
}

/// Names of the gauges each sample sets through the `metrics` facade.
///
/// ```
/// use tower_optimizer::monitor::gauges;
///
/// // OpenTelemetry's names where it has one, ours under `tower_optimizer.`.
/// assert_eq!(gauges::PROCESS_MEMORY, "process.memory.usage");
/// assert!(gauges::CACHE_SIZE.starts_with("tower_optimizer.cache."));
/// ```
pub mod gauges {
    /// Bytes charged to the cache budget.
    pub const CACHE_SIZE: &str = "tower_optimizer.cache.size";
    /// The cache budget in bytes.
    pub const CACHE_CAPACITY: &str = "tower_optimizer.cache.capacity";
    /// Entries stored.
    pub const CACHE_ENTRIES: &str = "tower_optimizer.cache.entries";
    /// Hit ratio so far (0..=1).
    pub const CACHE_HIT_RATIO: &str = "tower_optimizer.cache.hit_ratio";
    /// Share of the cache's answers since the previous sample that stood in
    /// for an upstream error (0..=1).
    pub const CACHE_STALE_ON_ERROR_RATIO: &str = "tower_optimizer.cache.stale_on_error_ratio";
    /// Alerts firing.
    pub const ALERTS_FIRING: &str = "tower_optimizer.alerts.firing";
    /// Resident memory of the process, bytes (OpenTelemetry name).
    pub const PROCESS_MEMORY: &str = "process.memory.usage";
    /// CPU use of the process, fraction of one core (OpenTelemetry name).
    pub const PROCESS_CPU: &str = "process.cpu.utilization";
}

/// `part / whole`, 0 when nothing happened.
#[cfg(feature = "cache")]
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).min(1.0)
    }
}

/// Publishes a sample's figures as gauges (for Prometheus and dashboards).
fn export(sample: &Sample) {
    use metrics::Unit;
    // Described on every sample (every few seconds): cheap, and whichever
    // recorder is current learns the units.
    metrics::describe_gauge!(gauges::CACHE_SIZE, Unit::Bytes, "Bytes charged to the cache budget.");
    metrics::describe_gauge!(gauges::CACHE_CAPACITY, Unit::Bytes, "The cache budget.");
    metrics::describe_gauge!(gauges::CACHE_ENTRIES, "Entries stored in the cache.");
    metrics::describe_gauge!(gauges::CACHE_HIT_RATIO, "Cache hit ratio since start.");
    metrics::describe_gauge!(
        gauges::CACHE_STALE_ON_ERROR_RATIO,
        "Share of cache answers since the previous sample that stood in for an upstream error."
    );
    metrics::describe_gauge!(gauges::ALERTS_FIRING, "Alerts firing.");
    metrics::describe_gauge!(gauges::PROCESS_MEMORY, Unit::Bytes, "Resident memory of the process.");
    metrics::describe_gauge!(gauges::PROCESS_CPU, "CPU use of the process, fraction of one core.");
    if let Some(cache) = &sample.cache {
        super::counters::describe();
        metrics::gauge!(gauges::CACHE_SIZE).set(cache.bytes as f64);
        metrics::gauge!(gauges::CACHE_CAPACITY).set(cache.max_bytes as f64);
        metrics::gauge!(gauges::CACHE_ENTRIES).set(cache.entries as f64);
        metrics::gauge!(gauges::CACHE_HIT_RATIO).set(cache.hit_ratio);
        metrics::gauge!(gauges::CACHE_STALE_ON_ERROR_RATIO).set(cache.stale_on_error_ratio);
    }
    metrics::gauge!(gauges::ALERTS_FIRING).set(sample.alerts_firing as f64);
    if let Some(rss) = sample.process.resident_memory {
        metrics::gauge!(gauges::PROCESS_MEMORY).set(rss as f64);
    }
    if let Some(cpu) = sample.cpu_percent {
        metrics::gauge!(gauges::PROCESS_CPU).set(cpu / 100.0);
    }
}

#[cfg(test)]
mod tests;
