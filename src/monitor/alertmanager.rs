//! Pushing alerts to a Prometheus Alertmanager, as Prometheus does (see
//! [`AlertmanagerPush`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use super::alert::{AlertState, AlertStatus, Comparison};
use super::post::Poster;
use crate::BoxError;

/// How often a firing alert is sent again: Prometheus's `resend_delay`
/// default. Each send says the alert ends four of these ahead, so three
/// lost sends in a row do not resolve it.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);

/// How long one push may take: Prometheus's Alertmanager `timeout`
/// default. A push still running is not doubled; the next evaluation
/// after it ends sends again.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How far ahead a firing alert's `endsAt` may be: a year. No resend
/// period needs more, and the date keeps RFC 3339's four-digit year.
const MAX_AHEAD: Duration = Duration::from_secs(365 * 86_400);

/// A resolved alert is sent until a push carrying it succeeds, but no
/// longer than this: Prometheus's `resolved_retention`.
const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Why an [`AlertmanagerPush`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerError {
    setting: &'static str,
    reason: String,
}

impl AlertmanagerError {
    fn new(setting: &'static str, reason: String) -> Self {
        AlertmanagerError { setting, reason }
    }

    /// The builder setting at fault, by its method's name (`"builder"` for
    /// the URL, `"label"`, `"resend_every"`, `"timeout"`,
    /// `"generator_url"`), for a caller
    /// that maps it back to where the value came from.
    #[must_use]
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for AlertmanagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alertmanager push: {}", self.reason)
    }
}

impl std::error::Error for AlertmanagerError {}

/// Builds an [`AlertmanagerPush`]; errors come back from [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct AlertmanagerPushBuilder {
    url: String,
    resend: Duration,
    timeout: Duration,
    labels: BTreeMap<String, String>,
    authorization: Option<http::HeaderValue>,
    generator_url: Option<String>,
}

impl AlertmanagerPushBuilder {
    /// Sends firing alerts again this often (default [`DEFAULT_RESEND`]).
    pub fn resend_every(mut self, every: Duration) -> Self {
        self.resend = every;
        self
    }

    /// Gives one push this long (default [`DEFAULT_PUSH_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A label on every alert sent, such as `instance` or `job`, for
    /// Alertmanager's routing and grouping. The alert's own labels
    /// (`alertname`, `severity`, `host`) win over one of the same name.
    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The `generatorURL` of every alert sent: where Alertmanager's
    /// notifications link back to, such as this instance's dashboard
    /// (`http://10.0.0.2:9464/dashboard`). None by default.
    pub fn generator_url(mut self, url: &str) -> Self {
        self.generator_url = Some(url.to_owned());
        self
    }

    /// An `Authorization` value sent with every push, such as `Bearer
    /// ..` or `Basic ..` for an Alertmanager behind authentication. It is
    /// marked sensitive, so hyper keeps it out of HPACK tables and debug
    /// output.
    pub fn authorization(mut self, mut value: http::HeaderValue) -> Self {
        value.set_sensitive(true);
        self.authorization = Some(value);
        self
    }

    /// The push, sending through `client` (any HTTP client service that
    /// speaks what the Alertmanager does: HTTP/1.1 for a stock one).
    ///
    /// # Errors
    ///
    /// The URL is not an absolute `http` or `https` URL, a label name is
    /// not a Prometheus label name, or a duration is zero.
    pub fn build<S, B, R>(self, client: S) -> Result<AlertmanagerPush, AlertmanagerError>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
    {
        // The API's path under whatever path prefix the base has
        // (Alertmanager's `--web.route-prefix`).
        let url =
            super::post::url_under(&self.url, "/api/v2/alerts").map_err(|e| AlertmanagerError::new("builder", e))?;
        if let Some(bad) = self.labels.keys().find(|name| !is_label_name(name)) {
            return Err(AlertmanagerError::new(
                "label",
                format!("{bad:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
        for (setting, d, name) in [
            ("resend_every", self.resend, "resend_every"),
            ("timeout", self.timeout, "timeout"),
        ] {
            if d.is_zero() {
                return Err(AlertmanagerError::new(
                    setting,
                    format!("{name} must be longer than zero"),
                ));
            }
        }
        // As logs show it: no query, no user information.
        // Alertmanager refuses a push whose `generatorURL` is not a URL.
        if let Some(link) = &self.generator_url {
            let absolute = link
                .parse::<http::Uri>()
                .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
            if !absolute {
                return Err(AlertmanagerError::new(
                    "generator_url",
                    format!("{link:?} is not an absolute http or https URL"),
                ));
            }
        }
        let shown = crate::util::shown_url(&url);
        let send = super::post::json_poster(client, self.authorization, self.timeout);
        Ok(AlertmanagerPush {
            inner: Arc::new(Inner {
                send,
                url,
                shown,
                resend: self.resend,
                labels: self.labels,
                generator_url: self.generator_url,
                push: Mutex::new(None),
                state: Arc::new(Mutex::new(State::default())),
            }),
        })
    }
}

/// Prometheus's label-name rule.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sends alerts to a Prometheus Alertmanager, as Prometheus does. Cheap to
/// clone; give it to [`MonitorBuilder::alertmanager`](super::MonitorBuilder::alertmanager).
///
/// Alertmanager takes alerts at `POST /api/v2/alerts` and holds each until
/// its `endsAt`; a client must send a firing alert again before then, or
/// Alertmanager resolves it by itself. So, as Prometheus's notifier does,
/// it sends every firing alert at once when it starts
/// firing and again every `resend_every` (1 minute by default) with an
/// `endsAt` four resend periods ahead, and sends a resolved alert with
/// `endsAt` set to when it resolved. The [`Monitor`](super::Monitor)
/// calls it after each evaluation.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower_optimizer::monitor::{AlertManager, AlertRule, AlertmanagerPush, Monitor};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let alertmanager = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
///     let tx = tx.clone();
///     async move {
///         tx.send((req.uri().to_string(), req.into_body().collect().await.unwrap().to_bytes())).unwrap();
///         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
///     }
/// });
/// let push = AlertmanagerPush::builder("http://alertmanager.test:9093")
///     .label("instance", "checkout-1")
///     .build(alertmanager)
///     .unwrap();
/// let mut alerts = AlertManager::new();
/// alerts.add_rule(AlertRule::above("QueueDeep", "queue.depth", 10.0));
/// let monitor = Monitor::builder().alerts(alerts).alertmanager(push).build();
/// monitor.register_gauge("queue.depth", || 50.0);
/// monitor.sample_now();
/// let (uri, body) = rx.recv().await.unwrap();
/// assert_eq!(uri, "http://alertmanager.test:9093/api/v2/alerts");
/// let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(sent[0]["labels"]["alertname"], "QueueDeep");
/// assert_eq!(sent[0]["labels"]["instance"], "checkout-1");
/// # });
/// ```
#[derive(Clone)]
pub struct AlertmanagerPush {
    inner: Arc<Inner>,
}

struct Inner {
    send: Poster,
    /// Where the alerts go: `{base}/api/v2/alerts`.
    url: http::Uri,
    shown: String,
    resend: Duration,
    labels: BTreeMap<String, String>,
    generator_url: Option<String>,
    /// The push running or last run: one at a time, and ended with the
    /// last handle (its task holds no handle).
    push: Mutex<Option<tokio::task::JoinHandle<()>>>,
    state: Arc<Mutex<State>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(push) = self.push.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            push.abort();
        }
    }
}

impl fmt::Debug for AlertmanagerPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertmanagerPush")
            .field("url", &self.inner.shown)
            .field("resend", &self.inner.resend)
            .finish_non_exhaustive()
    }
}

/// An alert as Alertmanager names it: its rule and host.
type Key = (String, Option<String>);

#[derive(Debug, Default)]
struct State {
    /// The alerts sent as firing, with when they started.
    firing: HashMap<Key, SystemTime>,
    /// Resolved alerts not yet delivered, with their last payload entry.
    resolved: Vec<(serde_json::Value, Instant)>,
    /// Something changed since the last push began.
    changed: bool,
    last_push: Option<Instant>,
}

impl AlertmanagerPush {
    /// A builder for the Alertmanager at `url` (its base, such as
    /// `http://alertmanager:9093`).
    pub fn builder(url: &str) -> AlertmanagerPushBuilder {
        AlertmanagerPushBuilder {
            url: url.to_owned(),
            resend: DEFAULT_RESEND,
            timeout: DEFAULT_PUSH_TIMEOUT,
            labels: BTreeMap::new(),
            authorization: None,
            generator_url: None,
        }
    }

    /// Takes the alerts' standing after an evaluation (`interval` is the
    /// evaluation period) and sends what is due: at once when an alert
    /// starts firing or resolves, else every `resend_every` while any
    /// fires. An alert held back by an inhibition is not sent (to
    /// Alertmanager it resolves). Needs a Tokio runtime to send.
    pub fn observe(&self, statuses: &[AlertStatus], interval: Duration, now: Instant) {
        let inner = &self.inner;
        let wall = SystemTime::now();
        let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let firing: Vec<&AlertStatus> = statuses
            .iter()
            .filter(|s| s.state == AlertState::Firing && s.inhibited_by.is_none())
            .collect();
        let key = |s: &AlertStatus| (s.rule.name.clone(), s.host.clone());
        for s in &firing {
            if let std::collections::hash_map::Entry::Vacant(started) = state.firing.entry(key(s)) {
                started.insert(wall);
                state.changed = true;
            }
        }
        let gone: Vec<Key> = state
            .firing
            .keys()
            .filter(|k| !firing.iter().any(|s| key(s) == **k))
            .cloned()
            .collect();
        for k in gone {
            let started = state.firing.remove(&k).unwrap_or(wall);
            let last = statuses.iter().find(|s| key(s) == k);
            state.resolved.push((self.entry(&k, last, started, wall), now));
            state.changed = true;
        }
        state
            .resolved
            .retain(|(_, at)| now.saturating_duration_since(*at) < RESOLVED_RETENTION);
        let due = state.changed
            || (!state.firing.is_empty()
                && state
                    .last_push
                    .is_none_or(|at| now.saturating_duration_since(at) >= inner.resend));
        let mut push = inner.push.lock().unwrap_or_else(PoisonError::into_inner);
        if !due || push.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(url = %inner.shown, "no Tokio runtime here: alerts not pushed to the Alertmanager");
            return;
        };
        // Firing: ends four resend periods (or evaluations, if longer)
        // ahead unless sent again, as Prometheus sets it; a year at most,
        // whatever the periods (and no overflow).
        let ahead = inner
            .resend
            .max(interval)
            .checked_mul(4)
            .map_or(MAX_AHEAD, |d| d.min(MAX_AHEAD));
        let ends = wall.checked_add(ahead).unwrap_or(wall);
        let mut entries: Vec<serde_json::Value> = firing
            .iter()
            .map(|s| {
                let k = key(s);
                let started = state.firing.get(&k).copied().unwrap_or(wall);
                self.entry(&k, Some(s), started, ends)
            })
            .collect();
        let resolved = std::mem::take(&mut state.resolved);
        entries.extend(resolved.iter().map(|(entry, _)| entry.clone()));
        state.changed = false;
        state.last_push = Some(now);
        drop(state);
        let body = match serde_json::to_vec(&entries) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::warn!(url = %inner.shown, error = %e, "alerts not pushed to the Alertmanager");
                return;
            }
        };
        let send = (inner.send)(inner.url.clone(), body);
        let (keep, shown) = (inner.state.clone(), inner.shown.clone());
        *push = Some(runtime.spawn(async move {
            let delivered = match send.await {
                Ok(status) if status.is_success() => true,
                Ok(status) => {
                    tracing::warn!(url = %shown, %status, "the Alertmanager refused the alerts pushed");
                    false
                }
                Err(e) => {
                    tracing::warn!(url = %shown, error = %crate::util::with_sources(&*e), "alerts not pushed to the Alertmanager");
                    false
                }
            };
            if !delivered {
                // Sent again at the next evaluation: the resolutions, and
                // the firing alerts (by `changed`).
                let mut state = keep.lock().unwrap_or_else(PoisonError::into_inner);
                state.resolved.extend(resolved);
                state.changed = true;
            }
        }));
    }

    /// One alert in Alertmanager's form.
    fn entry(
        &self,
        key: &Key,
        status: Option<&AlertStatus>,
        starts: SystemTime,
        ends: SystemTime,
    ) -> serde_json::Value {
        let mut labels: BTreeMap<&str, &str> = self
            .inner
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.insert("alertname", &key.0);
        if let Some(host) = &key.1 {
            labels.insert("host", host);
        }
        let mut annotations = BTreeMap::new();
        if let Some(s) = status {
            labels.insert(
                "severity",
                match s.rule.severity {
                    super::Severity::Warning => "warning",
                    super::Severity::Critical => "critical",
                },
            );
            let value = s.value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
            let side = if s.rule.comparison == Comparison::Above {
                "above"
            } else {
                "below"
            };
            annotations.insert(
                "summary",
                format!("{} = {value} ({side} {})", s.rule.figure, s.rule.threshold),
            );
            annotations.insert("value", value);
        }
        let mut entry = serde_json::json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        });
        if let Some(link) = &self.inner.generator_url {
            entry["generatorURL"] = link.as_str().into();
        }
        entry
    }
}

/// `t` as RFC 3339 in UTC, to the millisecond (`2026-11-29T12:00:00.000Z`).
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests;
