//! [`Optimizer`]: the stack's lifecycle handle — start (warm-up and
//! background tasks), aggregated stats, and a draining shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::gate::GateState;
use super::layer::OptimizedService;
use crate::cache::{Cache, CacheStats, Loaded, Saved};
use crate::circuit_breaker::{BreakerSnapshot, CircuitBreakers};
use crate::invalidation::Invalidator;
use crate::monitor::{AdminService, AlertStatus, Monitor, SharedOpenings, SharedOpeningsStats, Stats, StatsSnapshot};
use crate::retry::{RetryPolicy, RetryStats};

/// Everything the stack knows, at one moment; `serde::Serialize`, to log
/// or export it as JSON (durations in seconds, counters per cause keyed by
/// name).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OptimizerStats {
    /// Cache counters, if a cache is configured.
    pub cache: Option<CacheStats>,
    /// Every breaker.
    pub breakers: Vec<BreakerSnapshot>,
    /// Retry counters, if retries are configured.
    pub retry: Option<RetryStats>,
    /// Request statistics, if monitoring is configured.
    pub requests: Option<StatsSnapshot>,
    /// Requests in flight now: sent through the stack, and their response
    /// body not yet ended, failed or dropped.
    pub in_flight: usize,
    /// The alerts that are not inactive (pending, firing or resolved) as
    /// of the monitor's last evaluation, if monitoring is configured.
    pub alerts: Vec<AlertStatus>,
    /// What was sent to the peers, if openings are shared with them
    /// ([`OptimizerStackBuilder::share_openings`](super::OptimizerStackBuilder::share_openings)).
    pub shared_openings: Option<SharedOpeningsStats>,
    /// In the figures [`Optimizer::shutdown`] returns, with a cache file
    /// ([`OptimizerStackBuilder::persist_cache`](super::OptimizerStackBuilder::persist_cache)):
    /// what it saved there, or why it could not. `None` elsewhere.
    pub cache_saved: Option<Result<Saved, String>>,
}

/// What `start` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Warm-up URLs fetched (and stored where cacheable).
    pub warmed: usize,
    /// Warm-up URLs that failed, with the reason.
    pub warm_up_failures: Vec<(String, String)>,
    /// Where the admin server listens, if configured.
    pub admin: Option<SocketAddr>,
    /// What was loaded from the cache file, with one
    /// ([`OptimizerStackBuilder::persist_cache`](super::OptimizerStackBuilder::persist_cache)):
    /// nothing when it did not exist yet; the error's text when it could
    /// not be read, which leaves the cache with what loaded before the
    /// error (logged as a warning too; `start` goes on).
    pub restored: Option<Result<Loaded, String>>,
}

pub(crate) struct Inner {
    pub(crate) gate: Arc<GateState>,
    pub(crate) cache: Option<Cache>,
    pub(crate) invalidator: Option<Invalidator>,
    pub(crate) breakers: Option<CircuitBreakers>,
    pub(crate) shared_openings: Option<SharedOpenings>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) stats: Option<Stats>,
    pub(crate) monitor: Option<Monitor>,
    pub(crate) admin: Option<(SocketAddr, Option<String>)>,
    pub(crate) admin_liveness: crate::monitor::LivenessAuth,
    pub(crate) health: crate::monitor::HealthRegistry,
    pub(crate) prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub(crate) warm_up: Vec<Uri>,
    pub(crate) warm_up_parallelism: usize,
    pub(crate) warm_up_timeout: Duration,
    pub(crate) cache_file: Option<super::persist::CacheFile>,
    pub(crate) client: Mutex<Option<OptimizedService<Full<Bytes>>>>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}

/// The lifecycle handle returned with the layer. Dropping it (and every
/// clone) stops its tasks; the cache sweep and monitor stop with their own
/// last handles.
#[derive(Clone)]
pub struct Optimizer {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("in_flight", &self.inner.gate.in_flight())
            .finish_non_exhaustive()
    }
}

impl Optimizer {
    /// The cache, if configured.
    pub fn cache(&self) -> Option<&Cache> {
        self.inner.cache.as_ref()
    }

    /// The invalidator, if configured.
    pub fn invalidator(&self) -> Option<&Invalidator> {
        self.inner.invalidator.as_ref()
    }

    /// The breakers, if configured.
    pub fn breakers(&self) -> Option<&CircuitBreakers> {
        self.inner.breakers.as_ref()
    }

    /// The monitor, if configured.
    pub fn monitor(&self) -> Option<&Monitor> {
        self.inner.monitor.as_ref()
    }

    /// The health checks the admin serves: the stack's own (`breakers`,
    /// `cache`), those given to the builder, and any added here.
    pub fn health(&self) -> &crate::monitor::HealthRegistry {
        &self.inner.health
    }

    /// The admin service over this stack's parts (Prometheus text when the
    /// monitor installed it, statistics, alerts, the dashboard, health from
    /// [`health`](Self::health), and invalidation),
    /// requiring `token` when given (on `/health/live` too, unless the
    /// builder's `admin_liveness` exempts it). [`start`](Self::start) serves one on
    /// the configured admin address; this one is for mounting in your own
    /// server, e.g. axum's `Router::nest_service("/admin", ..)`.
    pub fn admin_service(&self, token: Option<&str>) -> AdminService {
        let inner = &self.inner;
        let mut builder = AdminService::builder().liveness(inner.admin_liveness);
        if let Some(token) = token {
            builder = builder.token(token.to_owned());
        }
        if let Some(handle) = &inner.prometheus {
            builder = builder.prometheus(handle.clone());
        }
        if let Some(monitor) = &inner.monitor {
            builder = builder.monitor(monitor.clone());
        }
        if let Some(invalidator) = &inner.invalidator {
            builder = builder.invalidator(invalidator.clone());
        }
        if let Some(breakers) = &inner.breakers {
            builder = builder.breakers(breakers.clone());
        }
        builder.health(inner.health.clone()).build()
    }

    /// The service warm-up sends through (set by `build_http2_client`, or
    /// by you with [`Optimizer::warm_up_through`] when you layer your own client).
    pub fn warm_up_through(&self, client: OptimizedService<Full<Bytes>>) {
        *self.inner.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(client);
    }

    /// Starts the monitor sampler and the admin server, then warms the
    /// cache by fetching the configured URLs (a few at a time) through the
    /// stack, reporting what failed.
    pub async fn start(&self) -> Result<StartReport, crate::BoxError> {
        let inner = &self.inner;
        let mut report = StartReport::default();
        if let Some(monitor) = &inner.monitor {
            monitor.start();
        }
        if let Some((addr, token)) = &inner.admin {
            let (bound, task) = self.admin_service(token.as_deref()).serve(*addr).await?;
            inner.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
            report.admin = Some(bound);
        }
        if let (Some(file), Some(cache)) = (&inner.cache_file, &inner.cache) {
            // Before warm-up, which then fetches only what did not load.
            report.restored = Some(file.load(cache).await);
            if let Some(task) = file.spawn_periodic(cache) {
                inner.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
            }
        }
        let client = inner.client.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(client) = client {
            let (warmed, failures) = warm_up(
                &client,
                &inner.warm_up,
                inner.warm_up_parallelism,
                inner.warm_up_timeout,
            )
            .await;
            report.warmed = warmed;
            report.warm_up_failures = failures;
        } else if !inner.warm_up.is_empty() {
            report.warm_up_failures.extend(
                inner
                    .warm_up
                    .iter()
                    .map(|u| (u.to_string(), "no client to warm up through".to_owned())),
            );
        }
        Ok(report)
    }

    /// Every component's figures.
    pub fn stats(&self) -> OptimizerStats {
        let inner = &self.inner;
        OptimizerStats {
            cache: inner.cache.as_ref().map(Cache::stats),
            breakers: inner
                .breakers
                .as_ref()
                .map(CircuitBreakers::snapshot)
                .unwrap_or_default(),
            retry: inner.retry.as_ref().map(RetryPolicy::stats),
            requests: inner.stats.as_ref().map(|s| s.snapshot(tokio::time::Instant::now())),
            in_flight: inner.gate.in_flight(),
            alerts: inner.monitor.as_ref().map(Monitor::alerts).unwrap_or_default(),
            shared_openings: inner.shared_openings.as_ref().map(SharedOpenings::stats),
            cache_saved: None,
        }
    }

    /// Saves the cache to its file now (see
    /// [`OptimizerStackBuilder::persist_cache`](super::OptimizerStackBuilder::persist_cache)).
    ///
    /// # Errors
    ///
    /// No cache file is configured, or writing it failed.
    pub async fn save_cache(&self) -> std::io::Result<Saved> {
        match (&self.inner.cache_file, &self.inner.cache) {
            (Some(file), Some(cache)) => file.save(cache).await,
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no cache file: see OptimizerStackBuilder::persist_cache",
            )),
        }
    }

    /// Stops taking requests (new ones fail with `ShuttingDown`), waits up
    /// to `deadline` for those in flight (their response bodies included:
    /// read to the end or dropped), stops the background tasks and
    /// returns the final figures.
    pub async fn shutdown(&self, deadline: Duration) -> OptimizerStats {
        let inner = &self.inner;
        inner.gate.close();
        let _ = tokio::time::timeout(deadline, inner.gate.drained()).await;
        if let Some(monitor) = &inner.monitor {
            monitor.stop();
        }
        for task in inner.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
        let mut stats = self.stats();
        if inner.cache_file.is_some() {
            let saved = self.save_cache().await;
            if let Err(e) = &saved {
                tracing::warn!(error = %e, "cache file not saved at shutdown");
            }
            stats.cache_saved = Some(saved.map_err(|e| e.to_string()));
        }
        stats
    }
}

/// Fetches `urls` through `client`, at most `parallel` at a time (a new one
/// starts as soon as one ends), each within `timeout` (body included), so a
/// hung upstream cannot hold `start()` for good. The count fetched with a
/// 2xx, and the failures with their reason, in the order of `urls`.
async fn warm_up(
    client: &OptimizedService<Full<Bytes>>,
    urls: &[Uri],
    parallel: usize,
    timeout: Duration,
) -> (usize, Vec<(String, String)>) {
    let fetch = |index: usize, uri: Uri| {
        let client = client.clone();
        async move {
            let attempt = async {
                let request = Request::get(uri).body(Full::default())?;
                let response = client.oneshot(request).await?;
                let status = response.status();
                // The cache keeps what it stores; a body too large for it
                // must not be held here whole instead.
                crate::util::drain(response.into_body()).await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(crate::BoxError::from(format!("status {status}")))
                }
            };
            let result = tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}").into()));
            // With its sources: a client error's own text (`client error
            // (Connect)`) does not say that the connection was refused.
            (index, result.map_err(|e| crate::util::with_sources(&*e)))
        }
    };
    let mut running = tokio::task::JoinSet::new();
    let mut pending = urls.iter().cloned().enumerate();
    let mut results: Vec<Option<Result<(), String>>> = vec![None; urls.len()];
    loop {
        while running.len() < parallel.max(1) {
            let Some((index, uri)) = pending.next() else { break };
            running.spawn(fetch(index, uri));
        }
        let Some(done) = running.join_next().await else { break };
        match done {
            Ok((index, result)) => results[index] = Some(result),
            // A fetch task that panicked: its URL is reported below.
            Err(error) => tracing::error!(%error, "warm-up fetch failed"),
        }
    }
    let mut warmed = 0;
    let mut failures = Vec::new();
    for (uri, result) in urls.iter().zip(results) {
        match result {
            Some(Ok(())) => warmed += 1,
            Some(Err(reason)) => failures.push((uri.to_string(), reason)),
            None => failures.push((uri.to_string(), "the fetch panicked".to_owned())),
        }
    }
    (warmed, failures)
}
