//! [`OptimizerStack`]: one builder for the whole stack.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use tower::Layer;

use super::client::{ClientConfig, Protocol, http_client};
use super::gate::GateState;
use super::layer::{OptimizedService, OptimizerLayer, Overload, Parts, WhenOpen};
use super::optimizer::{Inner, Optimizer};
use super::probe::ProbeSettings;
use super::settings::{MonitorSettings, StackError};
use crate::cache::{Cache, CacheLayer};
use crate::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, ProbeSuccess};
use crate::invalidation::{InvalidationLayer, Invalidator};
use crate::monitor::{HealthRegistry, LivenessAuth, MetricsLayer, Monitor, SharedOpenings, Stats};
use crate::retry::{RetryPolicy, RetryStats};

/// The monitor's figure for the retries sent so far, where the stack has
/// both ([`RetryStats::retries`]).
pub const RETRIES_GAUGE: &str = "retry.retries";
/// The monitor's figure for the retries the budget refused so far
/// ([`RetryStats::budget_exhausted`]).
pub const RETRY_BUDGET_EXHAUSTED_GAUGE: &str = "retry.budget_exhausted";

/// Warm-up fetches run this many at a time by default: enough to fill a
/// cache quickly without a burst an upstream would notice.
pub const DEFAULT_WARM_UP_PARALLELISM: usize = 8;

/// Each warm-up fetch (body included) gets this long by default: ample for
/// a slow first answer, and a hung upstream cannot hold `Optimizer::start`
/// for good.
pub const DEFAULT_WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the stack; every part is optional.
#[derive(Debug, Default)]
#[must_use]
pub struct OptimizerStackBuilder {
    cache: Option<Cache>,
    invalidation: Option<InvalidationLayer>,
    breaker: Option<CircuitBreakerConfig>,
    shared_openings: Option<SharedOpenings>,
    retry: Option<RetryPolicy>,
    secondary: Option<String>,
    timeout: Option<Duration>,
    when_open: WhenOpen,
    concurrency_limit: Option<usize>,
    overload: Overload,
    per_host_limit: Option<(usize, Overload)>,
    monitor: Option<MonitorSettings>,
    admin: Option<(String, Option<String>)>,
    admin_liveness: LivenessAuth,
    probe: Option<ProbeSettings>,
    health: HealthRegistry,
    readiness: Vec<(String, String, Duration)>,
    warm_up: Vec<String>,
    warm_up_parallelism: Option<usize>,
    warm_up_timeout: Option<Duration>,
    cache_file: Option<std::path::PathBuf>,
    save_every: Option<Duration>,
    client: ClientConfig,
}

/// The entry point: `OptimizerStack::builder()`.
#[derive(Debug)]
pub struct OptimizerStack;

impl OptimizerStack {
    /// A builder with nothing configured.
    pub fn builder() -> OptimizerStackBuilder {
        OptimizerStackBuilder::default()
    }
}

impl OptimizerStackBuilder {
    /// The response cache.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Keeps the cache in the file at `path` between runs: `start` loads
    /// it (each response aged by the time since it was saved; a file not
    /// made yet is no error, and a damaged one only leaves the cache
    /// emptier, see [`StartReport::restored`](super::StartReport)),
    /// `shutdown` saves it once the requests in flight are done (the
    /// result in [`OptimizerStats::cache_saved`](super::OptimizerStats)),
    /// and so does [`Optimizer::save_cache`] at any time. See
    /// [`Cache::save`] for what is kept. Needs a cache. TOML: `[cache]`
    /// `persist`.
    pub fn persist_cache(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Saves the cache to its file every `period` as well, so a crash
    /// loses at most that much. Needs [`persist_cache`](Self::persist_cache).
    /// TOML: `[cache]` `save_every`.
    pub fn save_cache_every(mut self, period: Duration) -> Self {
        self.save_every = Some(period);
        self
    }

    /// The invalidation layer (default with a cache: one over it, reading
    /// every tag header).
    pub fn invalidation(mut self, layer: InvalidationLayer) -> Self {
        self.invalidation = Some(layer);
        self
    }

    /// Per-host circuit breakers.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Sends each opening of the breakers by their own calls to the peers
    /// in `share` (other instances of this client, behind one load
    /// balancer), whose admin servers open their breakers for the same
    /// host and period (see [`SharedOpenings`]); what was sent is in
    /// [`Optimizer::stats`] and, with a monitor, in its samples, where the
    /// built-in `OpeningsNotShared` alert fires when a send does not reach
    /// its peer. Needs a circuit breaker. TOML: `[circuit_breaker.share]`
    /// `peers`, `resolve`, `token_env`, `timeout`.
    pub fn share_openings(mut self, share: SharedOpenings) -> Self {
        self.shared_openings = Some(share);
        self
    }

    /// Retries of failed upstream calls, outside the breaker (each attempt
    /// passes it, and an open circuit ends the retries) and inside the
    /// cache (a hit is never retried). `policy` is the handle its figures
    /// are read from; they are in [`Optimizer::stats`] too.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Where requests go while their circuit is open (and no stale entry
    /// can answer): `scheme://authority` of a secondary upstream.
    pub fn secondary_upstream(mut self, origin: &str) -> Self {
        self.secondary = Some(origin.to_owned());
        self
    }

    /// What callers get when a request's circuit is open and neither a
    /// stale entry nor the secondary upstream answers it: the error
    /// `circuit_breaker::error::Open` (the default) or a `503` with
    /// `Retry-After` ([`WhenOpen::Respond503`]). Needs a circuit breaker.
    pub fn when_open(mut self, when_open: WhenOpen) -> Self {
        self.when_open = when_open;
        self
    }

    /// A timeout on each upstream call (inside the breaker, so slow calls
    /// count as failures). A request can carry its own limit, shorter or
    /// longer, in a [`RequestTimeout`](super::RequestTimeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The client settings so far (for tests of the configuration file).
    #[cfg(test)]
    pub(crate) fn client_settings(&self) -> &ClientConfig {
        &self.client
    }

    /// At most `n` upstream calls at once, waiting or shedding beyond. A
    /// call holds its slot until its response body ends, fails or is
    /// dropped (not only until the head arrives, as tower's own limit does),
    /// so bodies streaming from a slow upstream count too. A caller holding
    /// a body it has not finished keeps its slot: with [`Overload::Wait`],
    /// finish or drop it before waiting on another call under a full limit.
    /// [`Overload::WaitAtMost`] bounds the wait, then refuses with tower's
    /// `Overloaded` (TOML: `max_wait = "100ms"`).
    pub fn concurrency_limit(mut self, n: usize, overload: Overload) -> Self {
        self.concurrency_limit = Some(n);
        self.overload = overload;
        self
    }

    /// At most `n` upstream calls at once to each host (`scheme://authority`),
    /// waiting or shedding beyond: a bulkhead per origin, so that one slow
    /// host cannot take the slots of the others, as it can under
    /// [`concurrency_limit`](Self::concurrency_limit) alone. A call holds
    /// its slot until its response body ends, fails or is dropped, as there
    /// (so with [`Overload::Wait`], finish or drop a body before waiting on
    /// another call to the same full host). A call waiting for its host's
    /// slot holds no global slot meanwhile;
    /// one refused ([`Overload::Shed`]) fails at once with tower's
    /// `Overloaded`, which the cache answers stale where the entry allows,
    /// and which the breaker never sees.
    pub fn per_host_limit(mut self, n: usize, overload: Overload) -> Self {
        self.per_host_limit = Some((n, overload));
        self
    }

    /// Metrics, statistics, the sampler and alerts.
    pub fn monitor(mut self, settings: MonitorSettings) -> Self {
        self.monitor = Some(settings);
        self
    }

    /// The admin server (started by `Optimizer::start`), with an optional token.
    pub fn admin(mut self, addr: &str, token: Option<&str>) -> Self {
        self.admin = Some((addr.to_owned(), token.map(str::to_owned)));
        self
    }

    /// The circuit breaker's recovery probe, over the stack's own client:
    /// at the end of each open period, `GET {scheme://authority}{path}`
    /// goes straight to the host, past the stack's layers, and a 2xx or
    /// 3xx answer within `timeout` moves the breaker as `on_success` says
    /// (no user request spent on finding the host back). Needs a circuit
    /// breaker keyed by authority (the default) and one of the
    /// `build_*_client` methods; with [`build`](Self::build), which has no
    /// client of its own, give the breaker's config a probe instead
    /// ([`http_probe`](crate::circuit_breaker::http_probe)). TOML:
    /// `[circuit_breaker] probe_path`, `probe_timeout`, `probe_success`.
    pub fn recovery_probe(mut self, path: &str, timeout: Duration, on_success: ProbeSuccess) -> Self {
        self.probe = Some(ProbeSettings {
            path: path.to_owned(),
            timeout,
            on_success,
        });
        self
    }

    /// Health checks the stack's admin serves (`/health/live`,
    /// `/health/ready`) beside its own: `breakers` (fails while a circuit
    /// is open) and `cache` (warns near the budget). A check of either name
    /// here takes the built-in one's place. The registry is shared: checks
    /// added to it later (or through [`Optimizer::health`]) are served too.
    pub fn health(mut self, registry: HealthRegistry) -> Self {
        self.health = registry;
        self
    }

    /// A readiness check named `name` that asks an upstream: `GET url`
    /// over the stack's own client, past its layers (an open circuit or a
    /// cached answer would say nothing of the upstream), passing on a 2xx
    /// or 3xx within `timeout` (see [`http_check`](crate::monitor::http_check)).
    /// Needs one of the `build_*_client` methods; with
    /// [`build`](Self::build), register an `http_check` over your client in
    /// [`health`](Self::health). TOML: `[[monitor.readiness]]`.
    pub fn readiness_check(mut self, name: &str, url: &str, timeout: Duration) -> Self {
        self.readiness.push((name.to_owned(), url.to_owned(), timeout));
        self
    }

    /// Whether the admin's `/health/live` needs the token (default
    /// [`LivenessAuth::Required`]); [`LivenessAuth::Exempt`] lets an
    /// orchestrator's liveness probe in without it, every other route
    /// still asking. For the server `start` runs and for
    /// [`Optimizer::admin_service`] alike.
    pub fn admin_liveness(mut self, liveness: LivenessAuth) -> Self {
        self.admin_liveness = liveness;
        self
    }

    /// URLs fetched into the cache by `Optimizer::start`.
    pub fn warm_up<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.warm_up.extend(urls.into_iter().map(Into::into));
        self
    }

    /// How many warm-up fetches run at once.
    pub fn warm_up_parallelism(mut self, n: usize) -> Self {
        self.warm_up_parallelism = Some(n);
        self
    }

    /// How long each warm-up fetch may take, body included (default
    /// [`DEFAULT_WARM_UP_TIMEOUT`]); one that takes longer is reported as
    /// failed.
    pub fn warm_up_timeout(mut self, timeout: Duration) -> Self {
        self.warm_up_timeout = Some(timeout);
        self
    }

    /// Settings of the built-in client (`build_http2_client`).
    pub fn client(mut self, config: ClientConfig) -> Self {
        self.client = config;
        self
    }

    /// Speak HTTP/1.1 to upstreams (for those that only speak it).
    pub fn http1(mut self) -> Self {
        self.client.protocol = Protocol::Http1;
        self
    }

    /// Checks the settings; the layer for any client service over
    /// `http::Request<B>`, and the lifecycle handle.
    pub fn build<B>(self) -> Result<(OptimizerLayer<B>, Optimizer), StackError> {
        let readiness = readiness_checks(&self.readiness)?;
        if !readiness.is_empty() {
            return Err(StackError::new(
                "readiness_check",
                "an upstream check goes over the stack's own client: use a build_*_client method, or with build() \
                 register an http_check over your client in the stack's health registry",
            ));
        }
        if let Some(probe) = &self.probe {
            probe.check(self.breaker.as_ref())?;
            return Err(StackError::new(
                "recovery_probe",
                "the probe goes over the stack's own client: use a build_*_client method, or with build() \
                 give the circuit breaker's config a probe (CircuitBreakerConfig::builder().probe(http_probe(..)))",
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(StackError::new("timeout", "must be greater than zero"));
        }
        // Each limit is a Tokio semaphore, which holds at most this many
        // permits (and panics when asked for more).
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        for (field, limit) in [
            ("concurrency_limit", self.concurrency_limit),
            ("per_host_limit", self.per_host_limit.map(|(n, _)| n)),
        ] {
            match limit {
                Some(0) => return Err(StackError::new(field, "must be at least 1")),
                Some(n) if n > most => return Err(StackError::new(field, format!("must be at most {most}"))),
                _ => {}
            }
        }
        if self.warm_up_parallelism == Some(0) {
            return Err(StackError::new("warm_up_parallelism", "must be at least 1"));
        }
        if self.warm_up_timeout.is_some_and(|t| t.is_zero()) {
            return Err(StackError::new("warm_up_timeout", "must be greater than zero"));
        }
        let warm_up = self
            .warm_up
            .iter()
            .enumerate()
            .map(|(i, url)| absolute_url(&format!("warm_up[{i}]"), url))
            .collect::<Result<Vec<_>, _>>()?;
        let secondary = match &self.secondary {
            None => None,
            Some(origin) => {
                let uri: Uri = origin
                    .parse()
                    .map_err(|_| StackError::new("secondary_upstream", "not a URL"))?;
                match (uri.scheme().cloned(), uri.authority().cloned()) {
                    (Some(s), Some(a)) if self.breaker.is_some() => Some((s, a)),
                    (Some(_), Some(_)) => {
                        return Err(StackError::new(
                            "secondary_upstream",
                            "needs a circuit breaker to decide when to use it",
                        ));
                    }
                    _ => return Err(StackError::new("secondary_upstream", "must be scheme://authority")),
                }
            }
        };
        let cache_file = match (&self.cache_file, self.save_every) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(StackError::new(
                    "save_cache_every",
                    "needs a cache file (persist_cache)",
                ));
            }
            (Some(_), _) if self.cache.is_none() => {
                return Err(StackError::new("persist_cache", "needs a cache to keep"));
            }
            (Some(_), Some(every)) if every.is_zero() => {
                return Err(StackError::new("save_cache_every", "must be longer than zero"));
            }
            (Some(path), every) => Some(super::persist::CacheFile::new(path.clone(), every)),
        };
        if self.when_open != WhenOpen::Error && self.breaker.is_none() {
            return Err(StackError::new("when_open", "needs a circuit breaker to open circuits"));
        }
        let admin = match &self.admin {
            None => None,
            Some((addr, token)) => {
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| StackError::new("admin", format!("{addr:?} is not an address")))?;
                if token.as_deref().is_some_and(str::is_empty) {
                    return Err(StackError::new("admin", "an empty token would allow anyone"));
                }
                if self.monitor.is_none() {
                    return Err(StackError::new(
                        "admin",
                        "needs monitoring for /stats and the dashboard",
                    ));
                }
                Some((addr, token.clone()))
            }
        };
        let invalidator = self.cache.as_ref().map(|c| {
            self.invalidation
                .as_ref()
                .map_or_else(|| Invalidator::new(c.clone()), |l| l.invalidator().clone())
        });
        let invalidation = match (&self.cache, self.invalidation, &invalidator) {
            (Some(_), Some(layer), _) => Some(layer),
            (Some(_), None, Some(inv)) => Some(InvalidationLayer::new(inv.clone())),
            (None, Some(_), _) => return Err(StackError::new("invalidation", "needs a cache")),
            _ => None,
        };
        let mut breaker = self.breaker;
        if let Some(share) = &self.shared_openings {
            let Some(config) = breaker.as_mut() else {
                return Err(StackError::new(
                    "share_openings",
                    "needs a circuit breaker, whose openings it shares",
                ));
            };
            config.state_listeners.push(Arc::new(share.listener()));
        }
        let breaker = breaker.map(CircuitBreakerLayer::new);
        let (metrics, stats, monitor, prometheus) = match self.monitor {
            None => (None, None, None, None),
            Some(settings) => {
                let prometheus = if settings.prometheus {
                    Some(
                        crate::monitor::install_prometheus()
                            .map_err(|e| StackError::new("monitor.prometheus", e.to_string()))?,
                    )
                } else {
                    None
                };
                let stats = Stats::default();
                let mut monitor = Monitor::builder()
                    .interval(settings.interval)
                    .history(settings.history)
                    .stats(stats.clone())
                    .alerts(settings.alerts);
                if let Some(push) = settings.alertmanager {
                    monitor = monitor.alertmanager(push);
                }
                if let Some(cache) = &self.cache {
                    monitor = monitor.cache(cache.clone());
                }
                if let Some(breaker) = &breaker {
                    monitor = monitor.breakers(breaker.breakers());
                }
                if let Some(share) = &self.shared_openings {
                    monitor = monitor.shared_openings(share.clone());
                }
                let mut metrics = MetricsLayer::new()
                    .stats(stats.clone())
                    .max_server_addresses(settings.max_server_addresses);
                if let Some(routes) = settings.route_templates {
                    metrics = metrics.route_templates(routes);
                }
                let monitor = monitor.build();
                if let Some(policy) = &self.retry {
                    // In every sample (and `/stats`), for alert rules too.
                    for (name, read) in [
                        (RETRIES_GAUGE, (|s: RetryStats| s.retries) as fn(RetryStats) -> u64),
                        (RETRY_BUDGET_EXHAUSTED_GAUGE, |s: RetryStats| s.budget_exhausted),
                    ] {
                        let policy = policy.clone();
                        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                        monitor.register_gauge(name, move || read(policy.stats()) as f64);
                    }
                }
                (Some(metrics), Some(stats), Some(monitor), prometheus)
            }
        };
        let gate = Arc::new(GateState::default());
        let breakers = breaker.as_ref().map(CircuitBreakerLayer::breakers);
        let layer = OptimizerLayer {
            parts: Arc::new(Parts {
                gate: gate.clone(),
                metrics,
                cache: self.cache.clone().map(CacheLayer::new),
                invalidation,
                concurrency_limit: self.concurrency_limit,
                overload: self.overload,
                per_host_limit: self.per_host_limit,
                breaker,
                retry: self.retry.clone(),
                secondary,
                timeout: self.timeout,
                when_open: self.when_open,
            }),
            body: PhantomData,
        };
        let health = built_in_checks(self.health, self.cache.as_ref(), breakers.as_ref());
        let optimizer = Optimizer {
            inner: Arc::new(Inner {
                gate,
                cache: self.cache,
                invalidator,
                breakers,
                shared_openings: self.shared_openings,
                retry: self.retry,
                stats,
                monitor,
                admin,
                admin_liveness: self.admin_liveness,
                health,
                prometheus,
                warm_up,
                warm_up_parallelism: self.warm_up_parallelism.unwrap_or(DEFAULT_WARM_UP_PARALLELISM),
                warm_up_timeout: self.warm_up_timeout.unwrap_or(DEFAULT_WARM_UP_TIMEOUT),
                cache_file,
                client: Mutex::new(None),
                tasks: Mutex::default(),
            }),
        };
        Ok((layer, optimizer))
    }

    /// Builds the stack over the crate's own hyper client (HTTP/2 by prior
    /// knowledge unless `.http1()`), and lets warm-up use it.
    pub fn build_http2_client(self) -> Result<(OptimizedService<Full<Bytes>>, Optimizer), StackError> {
        let client = http_client(&self.client);
        self.build_over(client)
    }

    /// Like [`build_http2_client`](Self::build_http2_client), over rustls
    /// with the roots in `tls` (for example [`native_roots`](super::native_roots)):
    /// `https` upstreams over TLS, HTTP/2 by ALPN unless `.http1()`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn build_https_client(
        self,
        tls: rustls::ClientConfig,
    ) -> Result<(OptimizedService<Full<Bytes>>, Optimizer), StackError> {
        let client = super::client::https_client(&self.client, tls);
        self.build_over(client)
    }

    /// Builds the stack over a reqwest client (feature `reqwest`); set
    /// HTTP/2, TLS and pool options on `client` itself.
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn build_reqwest_client(
        self,
        client: reqwest::Client,
    ) -> Result<(OptimizedService<Full<Bytes>>, Optimizer), StackError> {
        self.build_over(super::ReqwestService::new(client))
    }

    /// Builds the stack as a `reqwest_middleware::Middleware` (feature
    /// `reqwest-middleware`): add it to a `reqwest_middleware::ClientBuilder`
    /// and a miss goes on down that chain. `client` serves the requests made
    /// outside any call: warm-up and background refreshes.
    #[cfg(feature = "reqwest-middleware")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
    pub fn build_reqwest_middleware(
        self,
        client: reqwest::Client,
    ) -> Result<(super::OptimizerMiddleware, Optimizer), StackError> {
        let this = self.with_probe_over(super::ReqwestService::new(client.clone()))?;
        let (layer, optimizer) = this.build::<reqwest::Body>()?;
        optimizer.warm_up_through(super::OptimizerMiddleware::warm_up_service(&layer, client.clone()));
        Ok((super::OptimizerMiddleware::new(&layer, client), optimizer))
    }

    /// The breaker's config given the recovery probe asked for, over
    /// `client` (the stack's own, without its layers).
    fn with_probe_over<S, R>(mut self, client: S) -> Result<Self, StackError>
    where
        S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
        S::Future: Send,
    {
        if let Some(probe) = self.probe.take() {
            probe.check(self.breaker.as_ref())?;
            if let Some(breaker) = self.breaker.as_mut() {
                probe.attach(breaker, client);
            }
        }
        Ok(self)
    }

    /// Layers the stack over a client and lets warm-up
    /// use the result.
    fn build_over<S, R>(self, client: S) -> Result<(OptimizedService<Full<Bytes>>, Optimizer), StackError>
    where
        S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<crate::BoxError>,
        R: http_body::Body<Data = Bytes> + Send + 'static,
        R::Error: Into<crate::BoxError>,
    {
        let mut this = self.with_probe_over(client.clone())?;
        let readiness = readiness_checks(&std::mem::take(&mut this.readiness))?;
        let (layer, optimizer) = this.build::<Full<Bytes>>()?;
        for (name, url, timeout) in readiness {
            let check = crate::monitor::http_check(client.clone(), url);
            optimizer
                .health()
                .register(&name, crate::monitor::Probe::Readiness, timeout, check);
        }
        let service = layer.layer(client);
        optimizer.warm_up_through(service.clone());
        Ok((service, optimizer))
    }
}

/// `url` parsed, if it names a scheme and a host; else an error naming
/// `field`.
fn absolute_url(field: &str, url: &str) -> Result<Uri, StackError> {
    match url.parse::<Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
        _ => Err(StackError::new(field, format!("{url:?} is not an absolute URL"))),
    }
}

/// The `readiness_check`s asked for, each checked: a name, an absolute
/// URL, a timeout.
fn readiness_checks(checks: &[(String, String, Duration)]) -> Result<Vec<(String, Uri, Duration)>, StackError> {
    checks
        .iter()
        .enumerate()
        .map(|(i, (name, url, timeout))| {
            let field = format!("readiness_check[{i}]");
            if name.trim().is_empty() {
                return Err(StackError::new(field, "a check needs a name"));
            }
            if timeout.is_zero() {
                return Err(StackError::new(field, "the timeout must be greater than zero"));
            }
            Ok((name.clone(), absolute_url(&field, url)?, *timeout))
        })
        .collect()
}

/// `health` with the stack's own checks added where the user has none of
/// that name: `breakers` (fails while a circuit is open) and `cache`
/// (warns above 95 % of its budget).
fn built_in_checks(
    health: HealthRegistry,
    cache: Option<&Cache>,
    breakers: Option<&crate::circuit_breaker::CircuitBreakers>,
) -> HealthRegistry {
    // The built-in checks read memory: a second is far more than they take.
    const TIMEOUT: Duration = Duration::from_secs(1);
    if let Some(breakers) = breakers.filter(|_| !health.contains("breakers")) {
        health.register(
            "breakers",
            crate::monitor::Probe::Readiness,
            TIMEOUT,
            crate::monitor::breakers_check(breakers.clone()),
        );
    }
    if let Some(cache) = cache.filter(|_| !health.contains("cache")) {
        health.register(
            "cache",
            crate::monitor::Probe::Readiness,
            TIMEOUT,
            crate::monitor::cache_memory_check(cache.clone(), 0.95),
        );
    }
    health
}
