//! In-process request statistics: per host and overall, over a sliding
//! window, with latency quantiles from [`Sketch`]es.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::sketch::Sketch;

/// Default window: one minute, in six 10 s buckets, like a dashboard's
/// "last minute" panel.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Buckets per window.
pub const DEFAULT_WINDOW_BUCKETS: usize = 6;
/// Hosts tracked separately; the rest are counted under `_other` so a
/// crawler cannot grow the statistics without bound.
pub const DEFAULT_MAX_HOSTS: usize = 64;

/// Figures over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct WindowStats {
    /// Requests finished in the window.
    pub requests: u64,
    /// Of which errors (transport errors and 4xx/5xx).
    pub errors: u64,
    /// Requests per second over the window.
    pub rate: f64,
    /// Errors over requests (0..=1).
    pub error_rate: f64,
    /// Mean latency, seconds.
    pub mean: f64,
    /// Latency quantiles, seconds (`None` with no requests).
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
}

/// Overall and per-host figures.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Every host together.
    pub overall: WindowStats,
    /// Per host (`host:port`), sorted by name (in JSON, one object keyed
    /// by host).
    #[serde(serialize_with = "crate::json::object")]
    pub hosts: Vec<(String, WindowStats)>,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    slot: Option<u64>,
    requests: u64,
    errors: u64,
    latency: Sketch,
}

impl Bucket {
    /// Empties it for `slot`. Out of line: once per bucket length (10 s by
    /// default), where every request records.
    #[cold]
    #[inline(never)]
    fn start(&mut self, slot: u64) {
        self.slot = Some(slot);
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
    }
}

/// One host's buckets, shared by the statistics and by the metrics
/// layer's endpoint of that host, which records into it without looking
/// the host up again.
#[derive(Debug)]
pub(crate) struct HostSlot {
    epoch: Instant,
    bucket_len: Duration,
    buckets: Mutex<Vec<Bucket>>,
}

impl HostSlot {
    fn slot(&self, now: Instant) -> u64 {
        // In 64-bit nanoseconds (584 years) rather than `as_nanos`' 128
        // bits, whose division is a call into the runtime library.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        nanos(now.saturating_duration_since(self.epoch)) / nanos(self.bucket_len).max(1)
    }

    /// Records one finished request.
    pub(crate) fn record(&self, latency: Duration, error: bool, now: Instant) {
        let slot = self.slot(now);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let n = buckets.len() as u64;
        let bucket = &mut buckets[(slot % n) as usize];
        if bucket.slot != Some(slot) {
            bucket.start(slot);
        }
        bucket.requests += 1;
        bucket.errors += u64::from(error);
        bucket.latency.add(latency.as_secs_f64());
    }

    /// The live buckets at `now`, merged.
    fn merged(&self, now: Instant) -> Bucket {
        let current = self.slot(now);
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = Bucket::default();
        for bucket in buckets.iter() {
            if bucket
                .slot
                .is_some_and(|s| current.saturating_sub(s) < buckets.len() as u64)
            {
                merged.requests += bucket.requests;
                merged.errors += bucket.errors;
                merged.latency.merge(&bucket.latency);
            }
        }
        merged
    }
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    window: Duration,
    bucket_len: Duration,
    max_hosts: usize,
    hosts: Mutex<HashMap<Arc<str>, Arc<HostSlot>>>,
}

/// Shared request statistics; clones share them.
#[derive(Debug, Clone)]
pub struct Stats {
    inner: Arc<Inner>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(DEFAULT_WINDOW, DEFAULT_WINDOW_BUCKETS, DEFAULT_MAX_HOSTS)
    }
}

const OTHER: &str = "_other";

impl Stats {
    /// Statistics over `window` in `buckets` buckets, for at most `max_hosts` hosts.
    pub fn new(window: Duration, buckets: usize, max_hosts: usize) -> Self {
        let buckets = buckets.max(1);
        Stats {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                window,
                bucket_len: (window / buckets as u32).max(Duration::from_millis(1)),
                max_hosts: max_hosts.max(1),
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The buckets `host` records into (`_other` once `max_hosts` hosts
    /// have theirs).
    pub(crate) fn host(&self, host: &str) -> Arc<HostSlot> {
        let inner = &*self.inner;
        let mut hosts = inner.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if hosts.contains_key(host) || hosts.len() < inner.max_hosts {
            host
        } else {
            OTHER
        };
        if let Some(slot) = hosts.get(key) {
            return slot.clone();
        }
        let n = (inner.window.as_nanos() / inner.bucket_len.as_nanos()).max(1) as usize;
        let slot = Arc::new(HostSlot {
            epoch: inner.epoch,
            bucket_len: inner.bucket_len,
            buckets: Mutex::new(vec![Bucket::default(); n]),
        });
        hosts.insert(key.into(), slot.clone());
        slot
    }

    /// Records one finished request.
    pub fn record(&self, host: &str, latency: Duration, error: bool, now: Instant) {
        self.host(host).record(latency, error, now);
    }

    /// Figures over the window ending at `now`.
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let slots: Vec<(Arc<str>, Arc<HostSlot>)> = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(host, slot)| (host.clone(), slot.clone()))
            .collect();
        let span = self.inner.window.as_secs_f64();
        let mut overall = Bucket::default();
        let mut hosts: Vec<(String, WindowStats)> = slots
            .iter()
            .map(|(host, slot)| {
                let merged = slot.merged(now);
                overall.requests += merged.requests;
                overall.errors += merged.errors;
                overall.latency.merge(&merged.latency);
                (host.to_string(), figures(&merged, span))
            })
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        StatsSnapshot {
            overall: figures(&overall, span),
            hosts,
        }
    }
}

fn figures(bucket: &Bucket, span: f64) -> WindowStats {
    let requests = bucket.requests;
    WindowStats {
        requests,
        errors: bucket.errors,
        rate: requests as f64 / span,
        error_rate: if requests == 0 {
            0.0
        } else {
            bucket.errors as f64 / requests as f64
        },
        mean: bucket.latency.mean(),
        p50: bucket.latency.quantile(0.5),
        p90: bucket.latency.quantile(0.9),
        p99: bucket.latency.quantile(0.99),
        p999: bucket.latency.quantile(0.999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_rates_quantiles_and_host_bound() {
        let stats = Stats::new(Duration::from_secs(60), 6, 2);
        let t0 = Instant::now();
        for i in 0..100u32 {
            stats.record("a:80", Duration::from_millis(u64::from(i) + 1), i % 10 == 0, t0);
        }
        stats.record("b:80", Duration::from_millis(5), false, t0);
        stats.record("c:80", Duration::from_millis(5), true, t0);
        let snap = stats.snapshot(t0);
        assert_eq!(snap.overall.requests, 102);
        assert_eq!(snap.overall.errors, 11);
        let a = &snap.hosts.iter().find(|(h, _)| h == "a:80").unwrap().1;
        assert!((a.rate - 100.0 / 60.0).abs() < 1e-9);
        assert!((a.error_rate - 0.1).abs() < 1e-9);
        let p50 = a.p50.unwrap();
        assert!((p50 - 0.050).abs() <= 0.050 * 0.03, "{p50}");
        assert!(
            snap.hosts.iter().any(|(h, _)| h == "_other"),
            "the third host is folded"
        );
        let later = stats.snapshot(t0 + Duration::from_secs(61));
        assert_eq!(later.overall.requests, 0, "the window slid past");
    }
}
