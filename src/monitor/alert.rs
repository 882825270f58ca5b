//! Alerting: rules over sampled figures with Prometheus/Alertmanager
//! semantics — `for` (pending before firing), `keep_firing_for`
//! (hysteresis), a repeat interval (cooldown between re-notifications) and a
//! resolve notification.
//!
//! Pure logic: [`AlertManager::evaluate`] takes the figures and `now`; the
//! sampler calls it on its schedule.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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

/// A rule over one named figure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRule {
    /// The alert's name.
    pub name: String,
    /// The figure it watches (see [`FigureSet`](super::FigureSet)).
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

    fn holds(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Condition false.
    Inactive,
    /// Condition true, not yet for long enough.
    Pending,
    /// Firing.
    Firing,
    /// Was firing; the condition cleared (until it holds again).
    Resolved,
}

/// A notification.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The rule's name.
    pub name: String,
    /// Its severity.
    pub severity: Severity,
    /// `Firing` (first or repeated) or `Resolved`.
    pub state: AlertState,
    /// The figure's value at notification.
    pub value: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// A sentence for people.
    pub summary: String,
}

#[derive(Debug, Clone)]
struct Tracked {
    rule: AlertRule,
    state: AlertState,
    since: Instant,
    last_notified: Option<Instant>,
    cleared_since: Option<Instant>,
    value: Option<f64>,
    /// Its handlers heard it fire in this episode (so they hear it resolve).
    told: bool,
    /// The firing rule holding its notifications back, if one is.
    inhibited_by: Option<String>,
}

/// While `source` fires, `targets` are not notified (see
/// [`AlertManager::inhibit`]).
#[derive(Debug, Clone)]
struct Inhibition {
    source: String,
    targets: Vec<String>,
}

/// A synchronous alert handler.
pub type AlertHandler = Arc<dyn Fn(&Alert) + Send + Sync>;
/// An asynchronous alert handler, spawned per notification.
pub type AsyncAlertHandler = Arc<dyn Fn(Alert) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Evaluates rules and notifies handlers.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_optimizer::monitor::{AlertManager, AlertRule, AlertState};
///
/// let mut alerts = AlertManager::new();
/// alerts.add_rule(AlertRule::above("errors", "http.error_rate", 0.05).for_duration(Duration::from_secs(60)));
/// let t0 = Instant::now();
/// let high = |name: &str| (name == "http.error_rate").then_some(0.2);
/// assert!(alerts.evaluate(&high, t0).is_empty(), "pending first");
/// let fired = alerts.evaluate(&high, t0 + Duration::from_secs(60));
/// assert_eq!(fired[0].state, AlertState::Firing);
/// ```
#[derive(Default)]
pub struct AlertManager {
    tracked: Vec<Tracked>,
    inhibitions: Vec<Inhibition>,
    handlers: Vec<AlertHandler>,
    async_handlers: Vec<AsyncAlertHandler>,
}

impl fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertManager")
            .field("rules", &self.tracked.len())
            .finish_non_exhaustive()
    }
}

/// One rule's current standing, for `/alerts` and the dashboard.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertStatus {
    /// The rule.
    pub rule: AlertRule,
    /// Its state.
    pub state: AlertState,
    /// The figure's last value.
    pub value: Option<f64>,
    /// The firing rule that holds this one's notifications back (see
    /// [`AlertManager::inhibit`]), if one does.
    pub inhibited_by: Option<String>,
}

impl AlertManager {
    /// No rules, no handlers.
    pub fn new() -> Self {
        AlertManager::default()
    }

    /// The built-in rules: error rate over 5% for a minute, p99 latency over
    /// 1 s for five minutes, any breaker open, the cache standing in for
    /// upstream errors (stale-if-error) for a minute, cache bytes over 90% of
    /// the budget, process memory over `rss_limit` bytes.
    ///
    /// `ServingStaleOnError` is there because stale-if-error hides outages:
    /// callers see successes (so the error rate stays low) while the
    /// upstream fails.
    pub fn with_default_rules(rss_limit: f64) -> Self {
        let mut manager = AlertManager::new();
        for rule in [
            AlertRule::above("HighErrorRate", "http.error_rate", 0.05)
                .for_duration(Duration::from_secs(60))
                .severity(Severity::Critical),
            AlertRule::above("SlowRequests", "http.p99", 1.0).for_duration(Duration::from_secs(300)),
            AlertRule::above("CircuitOpen", "circuit_breaker.open", 0.0).severity(Severity::Critical),
            AlertRule::above("ServingStaleOnError", "cache.stale_on_error_ratio", 0.0)
                .for_duration(Duration::from_secs(60)),
            AlertRule::above("CacheNearBudget", "cache.bytes_ratio", 0.9).for_duration(Duration::from_secs(300)),
            AlertRule::above("ProcessMemoryHigh", "process.resident_memory", rss_limit)
                .for_duration(Duration::from_secs(120)),
        ] {
            manager.add_rule(rule.keep_firing_for(Duration::from_secs(60)));
        }
        manager
    }

    /// Adds a rule (replacing one of the same name).
    pub fn add_rule(&mut self, rule: AlertRule) {
        self.tracked.retain(|t| t.rule.name != rule.name);
        self.tracked.push(Tracked {
            rule,
            state: AlertState::Inactive,
            since: Instant::now(),
            last_notified: None,
            cleared_since: None,
            value: None,
            told: false,
            inhibited_by: None,
        });
    }

    /// While the rule `source` fires, the rules `targets` fire unheard, as
    /// Alertmanager's inhibition mutes them: their states change as ever
    /// and [`statuses`](Self::statuses) shows them, with `inhibited_by`,
    /// but no handler is told of their firing until `source` stops. A
    /// target still firing then is notified at the next evaluation; one
    /// whose firing was told before the source fired is told when it
    /// resolves. A rule never inhibits itself. For example, an open
    /// circuit makes every call to its host fail: `inhibit("CircuitOpen",
    /// ["HighErrorRate"])` pages once for it, not twice. The figures are
    /// the whole client's, so that also holds back another host's error
    /// rate while a circuit is open; no inhibition is set by default.
    pub fn inhibit<I, S>(&mut self, source: &str, targets: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inhibitions.push(Inhibition {
            source: source.to_owned(),
            targets: targets.into_iter().map(Into::into).collect(),
        });
    }

    /// Whether a rule of this name is set.
    pub fn has_rule(&self, name: &str) -> bool {
        self.tracked.iter().any(|t| t.rule.name == name)
    }

    /// Calls `handler` for every notification.
    pub fn on_alert(&mut self, handler: impl Fn(&Alert) + Send + Sync + 'static) {
        self.handlers.push(Arc::new(handler));
    }

    /// Spawns `handler` for every notification (needs a Tokio runtime).
    pub fn on_alert_async<F, Fut>(&mut self, handler: F)
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.async_handlers
            .push(Arc::new(move |alert| Box::pin(handler(alert))));
    }

    /// Every rule with its state.
    pub fn statuses(&self) -> Vec<AlertStatus> {
        self.tracked
            .iter()
            .map(|t| AlertStatus {
                rule: t.rule.clone(),
                state: t.state,
                value: t.value,
                inhibited_by: t.inhibited_by.clone(),
            })
            .collect()
    }

    /// Alerts firing now.
    pub fn firing(&self) -> usize {
        self.tracked.iter().filter(|t| t.state == AlertState::Firing).count()
    }

    /// Evaluates every rule against `figures` at `now`; notifies the
    /// handlers and returns the notifications. A figure that is missing
    /// counts as the condition not holding.
    pub fn evaluate(&mut self, figures: &dyn Fn(&str) -> Option<f64>, now: Instant) -> Vec<Alert> {
        let mut candidates = Vec::new();
        for (i, t) in self.tracked.iter_mut().enumerate() {
            let value = figures(&t.rule.figure);
            t.value = value;
            let holds = value.is_some_and(|v| t.rule.holds(v));
            let notify = match (t.state, holds) {
                (AlertState::Inactive | AlertState::Resolved, true) => {
                    t.since = now;
                    t.cleared_since = None;
                    if t.rule.for_.is_zero() {
                        t.state = AlertState::Firing;
                        true
                    } else {
                        t.state = AlertState::Pending;
                        false
                    }
                }
                (AlertState::Pending, true) if now.saturating_duration_since(t.since) >= t.rule.for_ => {
                    t.state = AlertState::Firing;
                    true
                }
                (AlertState::Pending, false) => {
                    t.state = AlertState::Inactive;
                    false
                }
                (AlertState::Firing, true) => {
                    t.cleared_since = None;
                    t.last_notified
                        .is_none_or(|at| now.saturating_duration_since(at) >= t.rule.repeat_interval)
                }
                (AlertState::Firing, false) => {
                    let cleared = *t.cleared_since.get_or_insert(now);
                    if now.saturating_duration_since(cleared) >= t.rule.keep_firing_for {
                        t.state = AlertState::Resolved;
                        t.last_notified = None;
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            if notify {
                let verb = if t.state == AlertState::Firing {
                    "is firing"
                } else {
                    "resolved"
                };
                candidates.push((
                    i,
                    Alert {
                        name: t.rule.name.clone(),
                        severity: t.rule.severity,
                        state: t.state,
                        value,
                        threshold: t.rule.threshold,
                        summary: format!(
                            "{} {verb}: {} = {} ({} {})",
                            t.rule.name,
                            t.rule.figure,
                            value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}")),
                            if t.rule.comparison == Comparison::Above {
                                "above"
                            } else {
                                "below"
                            },
                            t.rule.threshold
                        ),
                    },
                ));
            }
        }
        self.mark_inhibited();
        let mut out = Vec::with_capacity(candidates.len());
        for (i, alert) in candidates {
            let t = &mut self.tracked[i];
            if alert.state == AlertState::Firing {
                if t.inhibited_by.is_some() {
                    // Held back; `last_notified` stays, so it is told
                    // once the source stops firing.
                    continue;
                }
                t.last_notified = Some(now);
                t.told = true;
            } else {
                // A resolution only of what was told.
                if !std::mem::take(&mut t.told) {
                    continue;
                }
            }
            out.push(alert);
        }
        for alert in &out {
            // Logged whether or not a handler is set: an alert no one
            // hears of helps no one.
            if alert.state == AlertState::Firing {
                tracing::warn!(alert = %alert.name, severity = ?alert.severity, "{}", alert.summary);
            } else {
                tracing::info!(alert = %alert.name, "{}", alert.summary);
            }
            for handler in &self.handlers {
                crate::util::guarded("alert handler", || handler(alert));
            }
            if !self.async_handlers.is_empty() {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    for handler in &self.async_handlers {
                        runtime.spawn(handler(alert.clone()));
                    }
                } else {
                    // Evaluated from a thread with no runtime (a direct
                    // `sample_now` call): say so rather than drop it unseen.
                    tracing::warn!(alert = %alert.name, "no Tokio runtime here: the async alert handlers did not run");
                }
            }
        }
        out
    }
}

impl AlertManager {
    /// Sets each rule's `inhibited_by` from the rules firing now.
    fn mark_inhibited(&mut self) {
        if self.inhibitions.is_empty() {
            return;
        }
        let firing: Vec<&str> = self
            .tracked
            .iter()
            .filter(|t| t.state == AlertState::Firing)
            .map(|t| t.rule.name.as_str())
            .collect();
        let held: Vec<Option<String>> = self
            .tracked
            .iter()
            .map(|t| {
                self.inhibitions
                    .iter()
                    .find(|i| {
                        i.source != t.rule.name
                            && firing.contains(&i.source.as_str())
                            && i.targets.contains(&t.rule.name)
                    })
                    .map(|i| i.source.clone())
            })
            .collect();
        for (t, held) in self.tracked.iter_mut().zip(held) {
            t.inhibited_by = held;
        }
    }
}

/// Figures by name, for alert evaluation.
pub type Figures = HashMap<String, f64>;

#[cfg(test)]
mod tests;
