//! Health checks: named async checks with timeouts, grouped into liveness
//! (the process itself) and readiness (its dependencies), reported in the
//! `application/health+json` shape of the IETF health-check draft.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// The media type of a health report.
pub const HEALTH_JSON: &str = "application/health+json";

/// A check's verdict (the draft's `pass` / `warn` / `fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy.
    Pass,
    /// Healthy, with a concern.
    Warn,
    /// Unhealthy.
    Fail,
}

impl HealthStatus {
    /// The HTTP status a report with this status is served with: 503 for
    /// `fail`, 200 otherwise (as the draft recommends).
    pub fn http_status(self) -> http::StatusCode {
        if self == HealthStatus::Fail {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            http::StatusCode::OK
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The verdict.
    pub status: HealthStatus,
    /// A human-readable note, mainly for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A measured value, if the check has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<f64>,
    /// Its unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
}

impl CheckResult {
    /// A passing result.
    pub fn pass() -> Self {
        CheckResult {
            status: HealthStatus::Pass,
            output: None,
            observed_value: None,
            observed_unit: None,
        }
    }

    /// A warning with a note.
    pub fn warn(output: impl Into<String>) -> Self {
        CheckResult {
            status: HealthStatus::Warn,
            output: Some(output.into()),
            ..CheckResult::pass()
        }
    }

    /// A failure with a note.
    pub fn fail(output: impl Into<String>) -> Self {
        CheckResult {
            status: HealthStatus::Fail,
            output: Some(output.into()),
            ..CheckResult::pass()
        }
    }

    /// Adds a measured value.
    #[must_use]
    pub fn observed(mut self, value: f64, unit: &str) -> Self {
        self.observed_value = Some(value);
        self.observed_unit = Some(unit.to_owned());
        self
    }
}

/// Which report a check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The process itself: restarting it would help.
    Liveness,
    /// Its dependencies: sending it traffic would not help now.
    Readiness,
}

/// A report: the worst status and every check's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// The worst check's status (`pass` with no checks).
    pub status: HealthStatus,
    /// Results by check name (each a one-element list, as the draft shapes it).
    pub checks: BTreeMap<String, Vec<CheckResult>>,
}

type Run = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
type Check = Arc<dyn Fn() -> Run + Send + Sync>;

struct Entry {
    name: String,
    probe: Probe,
    timeout: Duration,
    check: Check,
}

/// Named health checks; clones share them.
///
/// ```
/// use std::time::Duration;
/// use tower_optimizer::monitor::{CheckResult, HealthRegistry, HealthStatus, Probe};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let health = HealthRegistry::new();
/// health.register("upstream", Probe::Readiness, Duration::from_secs(1), || async { CheckResult::warn("slow") });
/// let report = health.report(Probe::Readiness).await;
/// assert_eq!(report.status, HealthStatus::Warn);
/// assert_eq!(health.report(Probe::Liveness).await.status, HealthStatus::Pass);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct HealthRegistry {
    entries: Arc<RwLock<Vec<Entry>>>,
}

impl std::fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|e| e.name.clone())
            .collect();
        f.debug_struct("HealthRegistry").field("checks", &names).finish()
    }
}

impl HealthRegistry {
    /// No checks.
    pub fn new() -> Self {
        HealthRegistry::default()
    }

    /// Adds (or replaces) a check; one that takes longer than `timeout` fails.
    pub fn register<F, Fut>(&self, name: &str, probe: Probe, timeout: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|e| e.name != name);
        entries.push(Entry {
            name: name.to_owned(),
            probe,
            timeout,
            check,
        });
    }

    /// Whether a check of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|e| e.name == name)
    }

    /// Runs the checks of `probe` concurrently and reports.
    pub async fn report(&self, probe: Probe) -> HealthReport {
        let runs: Vec<(String, Duration, Run)> = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e.probe == probe)
            .map(|e| (e.name.clone(), e.timeout, (e.check)()))
            .collect();
        let mut handles = Vec::with_capacity(runs.len());
        for (name, timeout, run) in runs {
            handles.push((
                name,
                tokio::spawn(async move {
                    tokio::time::timeout(timeout, run)
                        .await
                        .unwrap_or_else(|_| CheckResult::fail(format!("timed out after {timeout:?}")))
                }),
            ));
        }
        let mut checks = BTreeMap::new();
        let mut status = HealthStatus::Pass;
        for (name, handle) in handles {
            let result = handle.await.unwrap_or_else(|_| CheckResult::fail("check panicked"));
            status = status.max(result.status);
            checks.insert(name, vec![result]);
        }
        HealthReport { status, checks }
    }
}

/// A readiness check: fails while any breaker is open (or forced open),
/// warns while one is half-open.
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub fn breakers_check(
    breakers: crate::circuit_breaker::CircuitBreakers,
) -> impl Fn() -> std::future::Ready<CheckResult> + Send + Sync + 'static {
    use crate::circuit_breaker::State;
    move || {
        let snapshot = breakers.snapshot();
        let open: Vec<String> = snapshot
            .iter()
            .filter(|b| matches!(b.state, State::Open | State::ForcedOpen))
            .map(|b| b.key.to_string())
            .collect();
        let half: Vec<String> = snapshot
            .iter()
            .filter(|b| b.state == State::HalfOpen)
            .map(|b| b.key.to_string())
            .collect();
        std::future::ready(if !open.is_empty() {
            CheckResult::fail(format!("circuit open for {}", open.join(", "))).observed(open.len() as f64, "breakers")
        } else if !half.is_empty() {
            CheckResult::warn(format!("circuit half-open for {}", half.join(", ")))
        } else {
            CheckResult::pass()
        })
    }
}

/// A check that asks an upstream: `GET url` through `client`, passing on
/// a 2xx or 3xx answer (its time observed in milliseconds) and failing on
/// any other status or an error. The registry's timeout bounds it. The
/// check's output names the scheme, host and path, not the user
/// information or the query, which may carry a credential.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower_optimizer::monitor::{http_check, HealthRegistry, HealthStatus, Probe};
///
/// let upstream = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
///     let status = if req.uri().path() == "/health" { 200 } else { 503 };
///     Ok::<_, Infallible>(http::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
/// });
/// let health = HealthRegistry::new();
/// let url: http::Uri = "http://api.test/health".parse().unwrap();
/// health.register("api", Probe::Readiness, Duration::from_secs(2), http_check(upstream.clone(), url));
/// let down: http::Uri = "http://user:pw@api.test/down?key=s3cret".parse().unwrap();
/// health.register("other", Probe::Readiness, Duration::from_secs(2), http_check(upstream, down));
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let report = health.report(Probe::Readiness).await;
/// assert_eq!(report.checks["api"][0].status, HealthStatus::Pass);
/// assert_eq!(report.checks["other"][0].status, HealthStatus::Fail);
/// // Named without its credentials or query.
/// assert_eq!(report.checks["other"][0].output.as_deref(), Some("http://api.test/down answered 503 Service Unavailable"));
/// # });
/// ```
pub fn http_check<S, B, R>(
    client: S,
    url: http::Uri,
) -> impl Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync + 'static
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<crate::BoxError>,
    B: Default + Send + 'static,
{
    // The URL as outputs show it: no credentials, no query.
    let shown = crate::util::shown_url(&url);
    move || {
        let mut client = client.clone();
        let (url, shown) = (url.clone(), shown.clone());
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let request = match http::Request::get(url).body(B::default()) {
                Ok(request) => request,
                Err(e) => return CheckResult::fail(format!("{shown}: {e}")),
            };
            let answer = async {
                std::future::poll_fn(|cx| client.poll_ready(cx)).await?;
                client.call(request).await
            }
            .await;
            let millis = start.elapsed().as_secs_f64() * 1000.0;
            match answer {
                Ok(response) if response.status().is_success() || response.status().is_redirection() => {
                    CheckResult::pass().observed(millis, "ms")
                }
                Ok(response) => {
                    CheckResult::fail(format!("{shown} answered {}", response.status())).observed(millis, "ms")
                }
                Err(e) => {
                    let e: crate::BoxError = e.into();
                    CheckResult::fail(format!("{shown}: {}", crate::util::with_sources(&*e)))
                }
            }
        })
    }
}

/// A readiness check: warns when the cache holds more than `warn_ratio` of
/// its budget (it is never a failure: a full cache still works).
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub fn cache_memory_check(
    cache: crate::cache::Cache,
    warn_ratio: f64,
) -> impl Fn() -> std::future::Ready<CheckResult> + Send + Sync + 'static {
    move || {
        let stats = cache.stats();
        let ratio = if stats.max_bytes == 0 {
            0.0
        } else {
            stats.bytes as f64 / stats.max_bytes as f64
        };
        let result = if ratio > warn_ratio {
            CheckResult::warn(format!("cache at {:.0}% of its budget", ratio * 100.0))
        } else {
            CheckResult::pass()
        };
        std::future::ready(result.observed(ratio, "ratio"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn worst_status_timeouts_and_json_shape() {
        let health = HealthRegistry::new();
        health.register("fast", Probe::Readiness, Duration::from_secs(1), || async {
            CheckResult::pass().observed(3.0, "ms")
        });
        health.register("hung", Probe::Readiness, Duration::from_secs(1), || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            CheckResult::pass()
        });
        health.register("process", Probe::Liveness, Duration::from_secs(1), || async {
            CheckResult::pass()
        });
        let ready = health.report(Probe::Readiness).await;
        assert_eq!(ready.status, HealthStatus::Fail);
        assert_eq!(ready.status.http_status(), 503);
        assert_eq!(ready.checks["hung"][0].output.as_deref(), Some("timed out after 1s"));
        let json = serde_json::to_value(&ready).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["checks"]["fast"][0]["status"], "pass");
        assert_eq!(json["checks"]["fast"][0]["observedValue"], 3.0);
        assert_eq!(json["checks"]["fast"][0]["observedUnit"], "ms");
        assert!(json["checks"]["fast"][0].get("output").is_none());
        let live = health.report(Probe::Liveness).await;
        assert_eq!((live.status, live.checks.len()), (HealthStatus::Pass, 1));
    }

    #[cfg(all(feature = "circuit-breaker", feature = "cache"))]
    #[tokio::test(start_paused = true)]
    async fn built_in_checks() {
        use crate::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
        let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
        let breakers = layer.breakers();
        let health = HealthRegistry::new();
        health.register(
            "breakers",
            Probe::Readiness,
            Duration::from_secs(1),
            breakers_check(breakers.clone()),
        );
        let cache = crate::cache::Cache::builder().build().unwrap();
        health.register(
            "cache",
            Probe::Readiness,
            Duration::from_secs(1),
            cache_memory_check(cache, 0.9),
        );
        assert_eq!(health.report(Probe::Readiness).await.status, HealthStatus::Pass);
        breakers.force_open("http://down.test");
        let report = health.report(Probe::Readiness).await;
        assert_eq!(report.status, HealthStatus::Fail);
        assert_eq!(
            report.checks["breakers"][0].output.as_deref(),
            Some("circuit open for http://down.test")
        );
    }
}
