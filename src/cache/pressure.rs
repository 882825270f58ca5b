//! Memory pressure ("emergency cleanup"): above a high watermark of process
//! or cgroup memory, evict cache entries until usage would be back at a low
//! watermark.
//!
//! The reading and the decision are pure; the watcher task lives in
//! `background.rs`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often the watcher reads memory by default: often enough to react
/// within a burst of large responses, rarely enough to cost nothing.
pub const DEFAULT_PRESSURE_INTERVAL: Duration = Duration::from_secs(1);

/// Where the watcher reads memory usage from.
#[derive(Clone)]
pub enum MemorySource {
    /// The process's resident set (`VmRSS` in `/proc/self/status`).
    ProcessRss,
    /// The cgroup the process runs in, v2 or v1's memory controller, found
    /// from `/proc/self/cgroup`: its working set, the usage less the
    /// inactive file cache (as the kubelet and `docker stats` count it),
    /// since the kernel reclaims that before the cgroup runs out.
    Cgroup,
    /// A user-supplied reading in bytes (`None` when unavailable).
    Custom(Arc<dyn Fn() -> Option<u64> + Send + Sync>),
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemorySource::ProcessRss => f.write_str("ProcessRss"),
            MemorySource::Cgroup => f.write_str("Cgroup"),
            MemorySource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl MemorySource {
    /// Current usage in bytes, or `None` when it cannot be read (not Linux,
    /// no cgroup memory accounting): the watcher then does nothing.
    pub fn read(&self) -> Option<u64> {
        match self {
            MemorySource::ProcessRss => parse_status_rss(&std::fs::read_to_string("/proc/self/status").ok()?),
            MemorySource::Cgroup => super::cgroup::working_set(Path::new("/")),
            MemorySource::Custom(read) => read(),
        }
    }
}

/// The memory limit on the process's cgroup (v2 or v1), if one is set.
pub(crate) fn cgroup_limit() -> Option<u64> {
    super::cgroup::limit(Path::new("/"))
}

/// Memory-pressure settings.
#[derive(Debug, Clone)]
pub struct MemoryPressure {
    pub(crate) source: MemorySource,
    pub(crate) high: u64,
    pub(crate) low: u64,
    pub(crate) interval: Duration,
}

impl MemoryPressure {
    /// Evict when `source` reads above `high` bytes, down to `low` bytes.
    pub fn new(source: MemorySource, high: u64, low: u64) -> Self {
        MemoryPressure {
            source,
            high,
            low,
            interval: DEFAULT_PRESSURE_INTERVAL,
        }
    }

    /// Watermarks as fractions of the cgroup limit (the lowest set on the
    /// process's cgroup or an ancestor), reading the cgroup's working set.
    /// `None` when the process has no cgroup memory limit.
    pub fn cgroup_fraction(high: f64, low: f64) -> Option<Self> {
        let limit = cgroup_limit()? as f64;
        Some(Self::new(
            MemorySource::Cgroup,
            (limit * high) as u64,
            (limit * low) as u64,
        ))
    }

    /// How often to read memory usage.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Bytes to evict at a reading of `usage`, given `cache_bytes` held by
    /// the cache: zero below the high watermark, otherwise enough to come
    /// back to the low one (never more than the cache holds).
    pub fn bytes_to_free(&self, usage: u64, cache_bytes: u64) -> u64 {
        if usage <= self.high {
            return 0;
        }
        usage.saturating_sub(self.low).min(cache_bytes)
    }
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    let unit = fields.next().unwrap_or("kB");
    Some(if unit.eq_ignore_ascii_case("kb") {
        value * 1024
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let p = MemoryPressure::new(MemorySource::ProcessRss, 1000, 600);
        assert_eq!(p.bytes_to_free(900, 500), 0);
        assert_eq!(p.bytes_to_free(1000, 500), 0);
        assert_eq!(p.bytes_to_free(1100, 800), 500);
        assert_eq!(p.bytes_to_free(1100, 100), 100, "never more than the cache holds");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_status_rss("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        assert_eq!(parse_status_rss("VmRSS: garbage"), None);
        assert_eq!(parse_status_rss(""), None);
        #[cfg(target_os = "linux")]
        assert!(MemorySource::ProcessRss.read().is_some_and(|rss| rss > 0));
    }
}
