//! Named figures for alert rules, gathered from the layers' statistics.

use super::alert::Figures;
use super::stats::StatsSnapshot;

/// The figures the crate gathers for alert rules, each under the name a
/// rule's `figure` gives (other names are the user's gauges, see
/// [`Monitor::register_gauge`](super::Monitor::register_gauge)).
pub const FIGURES: [&str; 12] = [
    "http.rate",
    "http.error_rate",
    "http.p50",
    "http.p99",
    "cache.hit_ratio",
    "cache.bytes",
    "cache.bytes_ratio",
    "cache.entries",
    "cache.stale_on_error_ratio",
    "circuit_breaker.open",
    "process.resident_memory",
    "process.cpu_percent",
];

/// Collects figures by name for [`AlertManager::evaluate`](super::AlertManager::evaluate):
///
/// | name | from |
/// |---|---|
/// | `http.rate`, `http.error_rate`, `http.p50`, `http.p99` | [`StatsSnapshot`] (overall) |
/// | `cache.hit_ratio`, `cache.bytes`, `cache.bytes_ratio`, `cache.entries` | `CacheStats` |
/// | `cache.stale_on_error_ratio` | the [`Monitor`](super::Monitor)'s sampler: share of the cache's answers since its previous sample that stood in for an upstream error |
/// | `circuit_breaker.open` | breakers open or forced open |
/// | `process.resident_memory` | `/proc/self/status` (Linux) |
/// | `process.cpu_percent` | the [`Monitor`](super::Monitor)'s sampler: the process's CPU time since its previous sample, in percent of one core |
///
/// ```
/// use tower_optimizer::monitor::{FigureSet, StatsSnapshot};
/// let figures = FigureSet::new().stats(&StatsSnapshot::default()).into_map();
/// assert_eq!(figures["http.error_rate"], 0.0);
/// ```
#[derive(Debug, Default, Clone)]
pub struct FigureSet {
    figures: Figures,
}

impl FigureSet {
    /// No figures yet.
    pub fn new() -> Self {
        FigureSet::default()
    }

    /// Request figures (overall).
    #[must_use]
    pub fn stats(mut self, snapshot: &StatsSnapshot) -> Self {
        let o = &snapshot.overall;
        self.set("http.rate", o.rate);
        self.set("http.error_rate", o.error_rate);
        if let Some(p50) = o.p50 {
            self.set("http.p50", p50);
        }
        if let Some(p99) = o.p99 {
            self.set("http.p99", p99);
        }
        self
    }

    /// Cache figures.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    #[must_use]
    pub fn cache(mut self, stats: &crate::cache::CacheStats) -> Self {
        self.set("cache.hit_ratio", stats.hit_ratio());
        self.set("cache.bytes", stats.bytes as f64);
        self.set("cache.entries", stats.entries as f64);
        if stats.max_bytes > 0 {
            self.set("cache.bytes_ratio", stats.bytes as f64 / stats.max_bytes as f64);
        }
        self
    }

    /// Breaker figures.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    #[must_use]
    pub fn breakers(mut self, snapshot: &[crate::circuit_breaker::BreakerSnapshot]) -> Self {
        use crate::circuit_breaker::State;
        let open = snapshot
            .iter()
            .filter(|b| matches!(b.state, State::Open | State::ForcedOpen))
            .count();
        self.set("circuit_breaker.open", open as f64);
        self
    }

    /// Process figures that Linux `/proc` gives (nothing elsewhere).
    #[must_use]
    pub fn process(mut self) -> Self {
        if let Some(rss) = resident_memory() {
            self.set("process.resident_memory", rss as f64);
        }
        self
    }

    /// Any other figure.
    #[must_use]
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.set(name, value);
        self
    }

    fn set(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    /// The figures.
    pub fn into_map(self) -> Figures {
        self.figures
    }
}

/// The process's resident memory in bytes, from `/proc/self/status`.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FIGURES` names what the sets gather (the sampler adds the two it
    /// works out between samples).
    // Resident memory comes from Linux's `/proc`.
    #[cfg(all(feature = "cache", feature = "circuit-breaker", target_os = "linux"))]
    #[test]
    fn figures_lists_every_figure_gathered() {
        let mut snapshot = StatsSnapshot::default();
        snapshot.overall.p50 = Some(0.01);
        snapshot.overall.p99 = Some(0.1);
        let cache = crate::cache::CacheStats {
            max_bytes: 1,
            ..crate::cache::CacheStats::default()
        };
        let gathered = FigureSet::new()
            .stats(&snapshot)
            .cache(&cache)
            .breakers(&[])
            .process()
            .with("cache.stale_on_error_ratio", 0.0)
            .with("process.cpu_percent", 0.0)
            .into_map();
        let mut names: Vec<&str> = gathered.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut listed = FIGURES.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
    }
}
