//! Named figures for alert rules, gathered from the layers' statistics.

use std::collections::BTreeMap;

use super::alert::Figures;
use super::stats::StatsSnapshot;

/// The figures the crate gathers for alert rules, each under the name a
/// rule's `figure` gives (other names are the user's gauges, see
/// [`Monitor::register_gauge`](super::Monitor::register_gauge)).
pub const FIGURES: [&str; 14] = [
    "http.requests",
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
    "circuit_breaker.openings_unshared",
    "process.resident_memory",
    "process.cpu_percent",
];

/// The figures the crate gathers per host (`host:port`) as well, for
/// per-host alert rules ([`AlertRule::per_host`](super::AlertRule::per_host)):
/// the request figures from the statistics' hosts, and the breakers open
/// for a host (from breakers keyed by `scheme://authority`, the default).
pub const HOST_FIGURES: [&str; 6] = [
    "http.requests",
    "http.rate",
    "http.error_rate",
    "http.p50",
    "http.p99",
    "circuit_breaker.open",
];

/// Where [`AlertManager::evaluate`](super::AlertManager::evaluate) reads
/// figures: by name for the whole client and, for per-host rules, by name
/// and host. [`FigureSet`] is one; so is any `Fn(&str) -> Option<f64>`
/// (with no hosts).
pub trait FigureSource {
    /// The whole client's figure of this name.
    fn figure(&self, name: &str) -> Option<f64>;

    /// The hosts that have figures of their own.
    fn hosts(&self) -> Vec<&str> {
        Vec::new()
    }

    /// A host's figure of this name.
    fn host_figure(&self, name: &str, host: &str) -> Option<f64> {
        let _ = (name, host);
        None
    }
}

impl<F: Fn(&str) -> Option<f64> + ?Sized> FigureSource for F {
    fn figure(&self, name: &str) -> Option<f64> {
        self(name)
    }
}

/// Collects figures by name for [`AlertManager::evaluate`](super::AlertManager::evaluate):
///
/// | name | from |
/// |---|---|
/// | `http.requests` (in the window), `http.rate`, `http.error_rate`, `http.p50`, `http.p99` | [`StatsSnapshot`] (overall, and per host) |
/// | `cache.hit_ratio`, `cache.bytes`, `cache.bytes_ratio`, `cache.entries` | `CacheStats` |
/// | `cache.stale_on_error_ratio` | the [`Monitor`](super::Monitor)'s sampler: share of the cache's answers since its previous sample that stood in for an upstream error |
/// | `circuit_breaker.open` | breakers open or forced open (overall, and per host) |
/// | `circuit_breaker.openings_unshared` | the [`Monitor`](super::Monitor)'s sampler, given a [`SharedOpenings`](super::SharedOpenings): sends of this instance's openings that did not reach a peer (failed or dropped) since its previous sample |
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
    hosts: BTreeMap<String, Figures>,
}

impl FigureSet {
    /// No figures yet.
    pub fn new() -> Self {
        FigureSet::default()
    }

    /// Request figures, overall and per host.
    #[must_use]
    pub fn stats(mut self, snapshot: &StatsSnapshot) -> Self {
        fn put(figures: &mut Figures, w: &super::stats::WindowStats) {
            figures.insert("http.requests".to_owned(), w.requests as f64);
            figures.insert("http.rate".to_owned(), w.rate);
            figures.insert("http.error_rate".to_owned(), w.error_rate);
            if let Some(p50) = w.p50 {
                figures.insert("http.p50".to_owned(), p50);
            }
            if let Some(p99) = w.p99 {
                figures.insert("http.p99".to_owned(), p99);
            }
        }
        put(&mut self.figures, &snapshot.overall);
        for (host, w) in &snapshot.hosts {
            put(self.hosts.entry(host.clone()).or_default(), w);
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
        let is_open = |b: &crate::circuit_breaker::BreakerSnapshot| matches!(b.state, State::Open | State::ForcedOpen);
        let open = snapshot.iter().filter(|b| is_open(b)).count();
        self.set("circuit_breaker.open", open as f64);
        for b in snapshot {
            // Keys that name no host (the global breaker's, a custom
            // key's) have no per-host figure.
            let Some(host) = breaker_host(&b.key) else { continue };
            let figure = self
                .hosts
                .entry(host)
                .or_default()
                .entry("circuit_breaker.open".to_owned())
                .or_default();
            *figure += f64::from(u8::from(is_open(b)));
        }
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

    /// Any other figure of one host (`host:port`).
    #[must_use]
    pub fn with_host(mut self, host: &str, name: &str, value: f64) -> Self {
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .insert(name.to_owned(), value);
        self
    }

    fn set(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    /// The whole client's figures.
    pub fn into_map(self) -> Figures {
        self.figures
    }
}

impl FigureSource for FigureSet {
    fn figure(&self, name: &str) -> Option<f64> {
        self.figures.get(name).copied()
    }

    fn hosts(&self) -> Vec<&str> {
        self.hosts.keys().map(String::as_str).collect()
    }

    fn host_figure(&self, name: &str, host: &str) -> Option<f64> {
        self.hosts.get(host)?.get(name).copied()
    }
}

/// The `host:port` of a breaker keyed by `scheme://authority`, as the
/// statistics name hosts (the scheme's port when the key has none).
#[cfg(feature = "circuit-breaker")]
fn breaker_host(key: &str) -> Option<String> {
    if !key.contains("://") {
        return None;
    }
    let uri: http::Uri = key.parse().ok()?;
    uri.authority()?;
    let no_headers = http::HeaderMap::new();
    let (host, port) = super::service::server(&uri, &no_headers);
    Some(format!("{host}:{port}"))
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

    /// `FIGURES` names what the sets gather (the sampler adds the three
    /// it works out between samples).
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
            .with("circuit_breaker.openings_unshared", 0.0)
            .with("process.cpu_percent", 0.0)
            .into_map();
        let mut names: Vec<&str> = gathered.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut listed = FIGURES.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
    }

    /// `HOST_FIGURES` names what the sets gather per host, under the host
    /// names the statistics use; a breaker's key gives its host with the
    /// scheme's port, and keys that name no host give none.
    #[cfg(feature = "circuit-breaker")]
    #[test]
    fn host_figures_lists_every_figure_gathered_per_host() {
        use crate::circuit_breaker::{BreakerSnapshot, State};
        let host = super::super::stats::WindowStats {
            p50: Some(0.01),
            p99: Some(0.1),
            ..Default::default()
        };
        let snapshot = StatsSnapshot {
            hosts: vec![("a.test:443".to_owned(), host)],
            ..StatsSnapshot::default()
        };
        let breaker = |key: &str, state| BreakerSnapshot {
            key: key.into(),
            state,
            figures: crate::circuit_breaker::WindowFigures::default(),
            retry_after: None,
            opened_by: None,
        };
        let set = FigureSet::new().stats(&snapshot).breakers(&[
            breaker("https://a.test", State::Open),
            breaker("http://[::1]:8080", State::ForcedOpen),
            breaker("http://b.test:80", State::Closed),
            breaker("*", State::Open),
            breaker("tenant-7", State::Open),
        ]);
        assert_eq!(set.hosts(), ["[::1]:8080", "a.test:443", "b.test:80"]);
        let mut names: Vec<&str> = HOST_FIGURES
            .iter()
            .copied()
            .filter(|name| set.host_figure(name, "a.test:443").is_some())
            .collect();
        names.sort_unstable();
        let mut listed = HOST_FIGURES.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
        assert_eq!(set.host_figure("circuit_breaker.open", "a.test:443"), Some(1.0));
        assert_eq!(set.host_figure("circuit_breaker.open", "[::1]:8080"), Some(1.0));
        assert_eq!(set.host_figure("circuit_breaker.open", "b.test:80"), Some(0.0));
        assert_eq!(
            set.figure("circuit_breaker.open"),
            Some(4.0),
            "overall counts every key"
        );
    }
}
