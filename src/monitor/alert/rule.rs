//! Alert rules: a figure, a threshold, timings, and whether the rule
//! watches the whole client or each host.

use std::time::Duration;

/// How a figure is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Fires when the figure is above the threshold.
    Above,
    /// Fires when the figure is below the threshold.
    Below,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Act now.
    Critical,
}

/// What a rule watches: the whole client's figure, or each host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One alert over the figure of every host together (the default).
    #[default]
    Overall,
    /// One alert per host (`host:port`), over that host's figure: a host
    /// failing every call fires even while the others keep the overall
    /// error rate low. Only the figures in
    /// [`HOST_FIGURES`](crate::monitor::HOST_FIGURES) exist per host. The
    /// hosts are those the statistics keep (past their `max_hosts`, the
    /// rest share one named `_other`) and those of breakers keyed by
    /// `scheme://authority`; a global or custom-keyed breaker gives no
    /// host its `circuit_breaker.open`, so watch that one overall.
    PerHost,
}

/// A rule over one named figure.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRule {
    /// The alert's name.
    pub name: String,
    /// The figure it watches (see [`FigureSet`](crate::monitor::FigureSet)).
    pub figure: String,
    /// How the figure is compared.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (in JSON,
    /// `for_seconds`).
    #[serde(rename = "for_seconds", serialize_with = "crate::json::seconds")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after the condition clears (in
    /// JSON, `keep_firing_for_seconds`).
    #[serde(rename = "keep_firing_for_seconds", serialize_with = "crate::json::seconds")]
    pub keep_firing_for: Duration,
    /// Least time between two notifications of a firing alert (in JSON,
    /// `repeat_interval_seconds`).
    #[serde(rename = "repeat_interval_seconds", serialize_with = "crate::json::seconds")]
    pub repeat_interval: Duration,
    /// Severity.
    pub severity: Severity,
    /// The whole client's figure, or each host's.
    pub scope: Scope,
    /// The condition holds only while the statistics' window saw at least
    /// this many requests (the whole client's, or the host's for a
    /// per-host rule; the figure `http.requests`). 0: always.
    pub min_requests: u64,
}

/// Default cooldown: re-notify a still-firing alert at most every 4 hours,
/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

impl AlertRule {
    /// Fires when `figure` is above `threshold` (for one sample, no hysteresis).
    pub fn above(name: &str, figure: &str, threshold: f64) -> Self {
        AlertRule {
            name: name.to_owned(),
            figure: figure.to_owned(),
            comparison: Comparison::Above,
            threshold,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            severity: Severity::Warning,
            scope: Scope::Overall,
            min_requests: 0,
        }
    }

    /// Fires when `figure` is below `threshold`.
    pub fn below(name: &str, figure: &str, threshold: f64) -> Self {
        AlertRule {
            comparison: Comparison::Below,
            ..AlertRule::above(name, figure, threshold)
        }
    }

    /// Pending for this long before firing.
    #[must_use]
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_ = d;
        self
    }

    /// Keeps firing this long after the condition clears.
    #[must_use]
    pub fn keep_firing_for(mut self, d: Duration) -> Self {
        self.keep_firing_for = d;
        self
    }

    /// Least time between re-notifications while firing.
    #[must_use]
    pub fn repeat_interval(mut self, d: Duration) -> Self {
        self.repeat_interval = d;
        self
    }

    /// Severity.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// One alert per host, over that host's figure (see [`Scope::PerHost`]).
    #[must_use]
    pub fn per_host(mut self) -> Self {
        self.scope = Scope::PerHost;
        self
    }

    /// Holds only while the window saw at least `n` requests: an error
    /// rate or a p99 over a handful of calls is a blip, not a trend (one
    /// failure of two is 50 %). No requests figure (no statistics) counts
    /// as none.
    #[must_use]
    pub fn min_requests(mut self, n: u64) -> Self {
        self.min_requests = n;
        self
    }

    /// Whether the condition holds for `value`, given the window's
    /// request count (read only when the rule asks for one).
    pub(super) fn holds_with(&self, value: Option<f64>, requests: impl FnOnce() -> Option<f64>) -> bool {
        value.is_some_and(|v| self.holds(v))
            && (self.min_requests == 0 || requests().is_some_and(|n| n >= self.min_requests as f64))
    }

    fn holds(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }
}
