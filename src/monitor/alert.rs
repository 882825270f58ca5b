//! Alerting: rules over sampled figures with Prometheus/Alertmanager
//! semantics — `for` (pending before firing), `keep_firing_for`
//! (hysteresis), a repeat interval (cooldown between re-notifications) and a
//! resolve notification.
//!
//! A rule watches the whole client or, one alert per host, each host; an
//! inhibition mutes some rules while another fires, for any host or only
//! the same one (Alertmanager's `equal`).
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

use super::figures::FigureSource;

mod inhibit;
mod rule;

use inhibit::{Inhibition, Match};
pub use rule::{AlertRule, Comparison, DEFAULT_REPEAT_INTERVAL, Scope, Severity};

/// Most hosts one per-host rule tracks at once. The hosts come from the
/// statistics (64 by default) and the breaker registry, both bounded; this
/// bounds a rule's memory whatever a [`FigureSource`] lists. A host past
/// it is not watched until another host's alert is forgotten (an inactive
/// alert whose host the figures no longer list).
pub const MAX_ALERT_HOSTS: usize = 256;

/// The figure [`AlertRule::min_requests`] reads.
const REQUESTS: &str = "http.requests";

/// The least number of requests in the statistics' window (a minute by
/// default) for the built-in error-rate and latency rules to hold: below
/// it, one failure or one slow call is a large share of a small number.
/// An outage of a host asked less often still shows, as an open circuit.
pub const DEFAULT_ALERT_MIN_REQUESTS: u64 = 10;

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
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The rule's name.
    pub name: String,
    /// The host (`host:port`) of a per-host rule's alert; `None` for a
    /// rule over the whole client.
    pub host: Option<String>,
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

/// A rule and its alerts: one for a rule over the whole client, one per
/// host seen for a per-host rule.
#[derive(Debug, Clone)]
struct Tracked {
    rule: AlertRule,
    alerts: Vec<Instance>,
}

/// One alert's standing.
#[derive(Debug, Clone)]
struct Instance {
    host: Option<String>,
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

impl Instance {
    fn new(host: Option<String>) -> Self {
        Instance {
            host,
            state: AlertState::Inactive,
            since: Instant::now(),
            last_notified: None,
            cleared_since: None,
            value: None,
            told: false,
            inhibited_by: None,
        }
    }

    /// Moves it on by one evaluation; `true` when that is worth a
    /// notification (a firing, first or past the repeat interval, or a
    /// resolution).
    fn step(&mut self, rule: &AlertRule, value: Option<f64>, holds: bool, now: Instant) -> bool {
        self.value = value;
        match (self.state, holds) {
            (AlertState::Inactive | AlertState::Resolved, true) => {
                self.since = now;
                self.cleared_since = None;
                if rule.for_.is_zero() {
                    self.state = AlertState::Firing;
                    true
                } else {
                    self.state = AlertState::Pending;
                    false
                }
            }
            (AlertState::Pending, true) if now.saturating_duration_since(self.since) >= rule.for_ => {
                self.state = AlertState::Firing;
                true
            }
            (AlertState::Pending, false) => {
                self.state = AlertState::Inactive;
                false
            }
            (AlertState::Firing, true) => {
                self.cleared_since = None;
                self.last_notified
                    .is_none_or(|at| now.saturating_duration_since(at) >= rule.repeat_interval)
            }
            (AlertState::Firing, false) => {
                let cleared = *self.cleared_since.get_or_insert(now);
                if now.saturating_duration_since(cleared) >= rule.keep_firing_for {
                    self.state = AlertState::Resolved;
                    self.last_notified = None;
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    fn alert(&self, rule: &AlertRule) -> Alert {
        let verb = if self.state == AlertState::Firing {
            "is firing"
        } else {
            "resolved"
        };
        let host = self.host.as_ref().map_or_else(String::new, |h| format!(" for {h}"));
        Alert {
            name: rule.name.clone(),
            host: self.host.clone(),
            severity: rule.severity,
            state: self.state,
            value: self.value,
            threshold: rule.threshold,
            summary: format!(
                "{} {verb}{host}: {} = {} ({} {})",
                rule.name,
                rule.figure,
                self.value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}")),
                if rule.comparison == Comparison::Above {
                    "above"
                } else {
                    "below"
                },
                rule.threshold
            ),
        }
    }

    fn status(&self, rule: &AlertRule) -> AlertStatus {
        AlertStatus {
            rule: rule.clone(),
            host: self.host.clone(),
            state: self.state,
            value: self.value,
            inhibited_by: self.inhibited_by.clone(),
        }
    }
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
/// use tower_optimizer::monitor::{AlertManager, AlertRule, AlertState, FigureSet};
///
/// let mut alerts = AlertManager::new();
/// alerts.add_rule(AlertRule::above("errors", "http.error_rate", 0.05).for_duration(Duration::from_secs(60)));
/// let t0 = Instant::now();
/// let high = |name: &str| (name == "http.error_rate").then_some(0.2);
/// assert!(alerts.evaluate(&high, t0).is_empty(), "pending first");
/// let fired = alerts.evaluate(&high, t0 + Duration::from_secs(60));
/// assert_eq!(fired[0].state, AlertState::Firing);
///
/// // Per host: one host failing fires for that host alone.
/// alerts.add_rule(AlertRule::above("HostErrors", "http.error_rate", 0.5).per_host());
/// let figures = FigureSet::new()
///     .with("http.error_rate", 0.2) // the whole client's: "errors" keeps firing, unheard (repeat interval)
///     .with_host("a.test:443", "http.error_rate", 1.0)
///     .with_host("b.test:443", "http.error_rate", 0.0);
/// let fired = alerts.evaluate_figures(&figures, t0 + Duration::from_secs(70));
/// assert_eq!(fired.len(), 1);
/// assert_eq!(fired[0].host.as_deref(), Some("a.test:443"));
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

/// One alert's current standing, for `/alerts` and the dashboard.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertStatus {
    /// The rule.
    pub rule: AlertRule,
    /// The host of a per-host rule's alert; `None` for a rule over the
    /// whole client, and for a per-host rule that has seen no host yet.
    pub host: Option<String>,
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
    /// 1 s for five minutes (both over at least
    /// [`DEFAULT_ALERT_MIN_REQUESTS`] requests in the window), any breaker open, the cache standing in for
    /// upstream errors (stale-if-error) for a minute, an opening of this
    /// instance's that did not reach a peer (with
    /// [`SharedOpenings`](super::SharedOpenings) sampled), cache bytes over
    /// 90% of the budget, process memory over `rss_limit` bytes.
    ///
    /// `ServingStaleOnError` is there because stale-if-error hides outages:
    /// callers see successes (so the error rate stays low) while the
    /// upstream fails. `OpeningsNotShared` because a peer that cannot be
    /// told (a wrong token, a peer list gone stale) fails silently
    /// otherwise: each instance keeps spending its own calls on a host
    /// the others found down.
    pub fn with_default_rules(rss_limit: f64) -> Self {
        let mut manager = AlertManager::new();
        for rule in [
            AlertRule::above("HighErrorRate", "http.error_rate", 0.05)
                .for_duration(Duration::from_secs(60))
                .min_requests(DEFAULT_ALERT_MIN_REQUESTS)
                .severity(Severity::Critical),
            AlertRule::above("SlowRequests", "http.p99", 1.0)
                .for_duration(Duration::from_secs(300))
                .min_requests(DEFAULT_ALERT_MIN_REQUESTS),
            AlertRule::above("CircuitOpen", "circuit_breaker.open", 0.0).severity(Severity::Critical),
            AlertRule::above("ServingStaleOnError", "cache.stale_on_error_ratio", 0.0)
                .for_duration(Duration::from_secs(60)),
            AlertRule::above("OpeningsNotShared", "circuit_breaker.openings_unshared", 0.0),
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
        let alerts = match rule.scope {
            Scope::Overall => vec![Instance::new(None)],
            // Made as the figures name hosts.
            Scope::PerHost => Vec::new(),
        };
        self.tracked.push(Tracked { rule, alerts });
    }

    /// While the rule `source` fires, the rules `targets` fire unheard, as
    /// Alertmanager's inhibition mutes them: their states change as ever
    /// and [`statuses`](Self::statuses) shows them, with `inhibited_by`,
    /// but no handler is told of their firing until `source` stops. A
    /// target still firing then is notified at the next evaluation; one
    /// whose firing was told before the source fired is told when it
    /// resolves. A rule never inhibits itself. For example, an open
    /// circuit makes every call to its host fail: `inhibit("CircuitOpen",
    /// ["HighErrorRate"])` pages once for it, not twice. The source's
    /// firing for any host holds back every alert of the targets; to hold
    /// back only the same host's, see
    /// [`inhibit_same_host`](Self::inhibit_same_host). No inhibition is
    /// set by default.
    pub fn inhibit<I, S>(&mut self, source: &str, targets: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inhibitions.push(Inhibition::new(source, targets, Match::Any));
    }

    /// As [`inhibit`](Self::inhibit), but the source firing for a host
    /// holds back only the targets' alerts for that host (Alertmanager's
    /// `equal: [server_address]`); a rule over the whole client counts as
    /// a host of its own, so it holds back, and is held back by, only
    /// rules over the whole client. With per-host rules,
    /// `inhibit_same_host("CircuitOpen", ["HighErrorRate"])` keeps a
    /// host's open circuit from paging twice, while another host's error
    /// rate still pages.
    pub fn inhibit_same_host<I, S>(&mut self, source: &str, targets: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inhibitions.push(Inhibition::new(source, targets, Match::SameHost));
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

    /// Every alert with its state: one per rule over the whole client, one
    /// per host for a per-host rule (a per-host rule that has seen no host
    /// shows once, inactive, with no host).
    pub fn statuses(&self) -> Vec<AlertStatus> {
        let mut out = Vec::with_capacity(self.tracked.len());
        for t in &self.tracked {
            if t.alerts.is_empty() {
                out.push(Instance::new(None).status(&t.rule));
            }
            out.extend(t.alerts.iter().map(|a| a.status(&t.rule)));
        }
        out
    }

    /// Alerts firing now (a per-host rule counts once per host).
    pub fn firing(&self) -> usize {
        self.tracked
            .iter()
            .flat_map(|t| &t.alerts)
            .filter(|a| a.state == AlertState::Firing)
            .count()
    }

    /// Evaluates every rule against the whole client's figures at `now`;
    /// notifies the handlers and returns the notifications. A figure that
    /// is missing counts as the condition not holding. Per-host rules see
    /// no host here: see [`evaluate_figures`](Self::evaluate_figures).
    pub fn evaluate(&mut self, figures: &dyn Fn(&str) -> Option<f64>, now: Instant) -> Vec<Alert> {
        self.evaluate_figures(figures, now)
    }

    /// As [`evaluate`](Self::evaluate), over figures that may be per host
    /// too, such as a [`FigureSet`](super::FigureSet) (what the
    /// [`Monitor`](super::Monitor)'s sampler passes).
    pub fn evaluate_figures<F: FigureSource + ?Sized>(&mut self, figures: &F, now: Instant) -> Vec<Alert> {
        let hosts = figures.hosts();
        let mut candidates = Vec::new();
        for (i, t) in self.tracked.iter_mut().enumerate() {
            if t.rule.scope == Scope::PerHost {
                for host in &hosts {
                    if t.alerts.len() < MAX_ALERT_HOSTS && !t.alerts.iter().any(|a| a.host.as_deref() == Some(*host)) {
                        t.alerts.push(Instance::new(Some((*host).to_owned())));
                    }
                }
            }
            for (j, alert) in t.alerts.iter_mut().enumerate() {
                let read = |name: &str| match &alert.host {
                    None => figures.figure(name),
                    Some(host) => figures.host_figure(name, host),
                };
                let value = read(&t.rule.figure);
                let holds = t.rule.holds_with(value, || read(REQUESTS));
                if alert.step(&t.rule, value, holds, now) {
                    candidates.push((i, j));
                }
            }
        }
        self.mark_inhibited();
        let mut out = Vec::with_capacity(candidates.len());
        for (i, j) in candidates {
            let t = &mut self.tracked[i];
            let a = &mut t.alerts[j];
            if a.state == AlertState::Firing {
                if a.inhibited_by.is_some() {
                    // Held back; `last_notified` stays, so it is told
                    // once the source stops firing.
                    continue;
                }
                a.last_notified = Some(now);
                a.told = true;
            } else if !std::mem::take(&mut a.told) {
                // A resolution only of what was told.
                continue;
            }
            out.push(a.alert(&t.rule));
        }
        self.forget_hosts_gone(&hosts);
        self.notify(&out);
        out
    }

    /// Drops a per-host rule's alerts that stand for nothing now: quiet
    /// (inactive, or resolved and told so) and for a host the figures no
    /// longer list. A host that comes back starts afresh.
    fn forget_hosts_gone(&mut self, hosts: &[&str]) {
        for t in &mut self.tracked {
            if t.rule.scope == Scope::PerHost {
                t.alerts.retain(|a| {
                    let quiet = matches!(a.state, AlertState::Inactive | AlertState::Resolved) && !a.told;
                    !quiet || a.host.as_deref().is_some_and(|h| hosts.contains(&h))
                });
            }
        }
    }

    fn notify(&self, alerts: &[Alert]) {
        for alert in alerts {
            // Logged whether or not a handler is set: an alert no one
            // hears of helps no one.
            if alert.state == AlertState::Firing {
                tracing::warn!(alert = %alert.name, host = alert.host.as_deref(), severity = ?alert.severity, "{}", alert.summary);
            } else {
                tracing::info!(alert = %alert.name, host = alert.host.as_deref(), "{}", alert.summary);
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
    }
}

/// Figures by name, for alert evaluation.
pub type Figures = HashMap<String, f64>;

#[cfg(test)]
mod tests;
