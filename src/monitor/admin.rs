//! The admin service: metrics, health, statistics, alerts, the dashboard,
//! cache invalidation and breaker control over HTTP, behind a bearer token.
//!
//! It is a tower `Service` over `http::Request<B>` for any body (hyper's
//! `Incoming`, axum's `Body`), so it mounts in axum with
//! `Router::nest_service("/admin", admin)`; [`AdminService::serve`] runs it
//! on its own hyper server, bound to loopback by default.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_service::Service;

use super::health::{HEALTH_JSON, HealthRegistry, Probe};
use super::sampler::Monitor;

/// The dashboard page: one self-contained file (no CDN, no external fetch).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Largest request body read (an invalidation, a breaker action): a JSON
/// object naming one target.
const MAX_BODY: usize = 64 * 1024;

/// How long [`AdminService::serve`] waits for an HTTP/1.1 request's head
/// before it closes the connection: a browser, `curl` or a Prometheus
/// scrape sends it at once, and a connection that has not in this time is
/// stuck or hostile (a slow-headers attack), holding a task and a file
/// descriptor until cut off; without a timer hyper would wait forever.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long [`AdminService::serve`] keeps any one connection: then it asks
/// the client to go (an HTTP/2 `GOAWAY`, or closing after the current
/// HTTP/1.1 answer) and lets requests in flight finish for
/// [`CONNECTION_DRAIN`]. An HTTP/2 connection has no request head to time
/// out between requests, so an idle one would otherwise be held for good;
/// five minutes costs a dashboard or a scraper one reconnect.
pub const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// How long an HTTP/2 client of [`AdminService::serve`] may stay silent
/// before it is pinged. A client that vanished (a laptop closed, a NAT
/// entry dropped) sends no FIN; without pings its connection would be held
/// until [`MAX_CONNECTION_AGE`]. A dashboard polls more often than this.
pub const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a ping's answer may take before the connection is closed:
/// generous for a slow link, short beside [`MAX_CONNECTION_AGE`].
pub const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long requests in flight on a connection past [`MAX_CONNECTION_AGE`]
/// may take before it is closed under them.
pub const CONNECTION_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Default address of [`AdminService::serve`]: loopback only, so the admin
/// routes are never exposed by accident.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";

/// OpenTelemetry's advisory buckets for `http.client.request.duration`.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Whether liveness needs the token too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LivenessAuth {
    /// Every route needs the token (the default).
    #[default]
    Required,
    /// `/health/live` answers without it (for orchestrators' probes).
    Exempt,
}

struct Config {
    token: Option<String>,
    liveness: LivenessAuth,
    prometheus: Option<PrometheusHandle>,
    monitor: Option<Monitor>,
    health: HealthRegistry,
    #[cfg(feature = "invalidation")]
    invalidator: Option<crate::invalidation::Invalidator>,
    #[cfg(feature = "circuit-breaker")]
    breakers: Option<crate::circuit_breaker::CircuitBreakers>,
}

/// The admin routes as a service. Cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    config: Arc<Config>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("token", &self.config.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Builds an [`AdminService`].
#[must_use]
pub struct AdminBuilder {
    config: Config,
}

impl std::fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBuilder").finish_non_exhaustive()
    }
}

impl AdminBuilder {
    /// Requires `Authorization: Bearer <token>` (or `?token=` on GET routes,
    /// for the dashboard in a browser) on every route.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// Lets `/health/live` answer without the token.
    pub fn liveness(mut self, liveness: LivenessAuth) -> Self {
        self.config.liveness = liveness;
        self
    }

    /// Serves `/metrics` from this Prometheus recorder handle.
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.config.prometheus = Some(handle);
        self
    }

    /// Serves `/stats`, `/alerts` and the dashboard from this monitor.
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.config.monitor = Some(monitor);
        self
    }

    /// Serves `/health/*` from these checks.
    pub fn health(mut self, health: HealthRegistry) -> Self {
        self.config.health = health;
        self
    }

    /// Enables `POST /cache/invalidate`.
    #[cfg(feature = "invalidation")]
    #[cfg_attr(docsrs, doc(cfg(feature = "invalidation")))]
    pub fn invalidator(mut self, invalidator: crate::invalidation::Invalidator) -> Self {
        self.config.invalidator = Some(invalidator);
        self
    }

    /// Enables `GET /breakers` (every breaker's state and figures) and
    /// `POST /breakers`, which takes one JSON object, `{"key": ..,
    /// "action": ..}`, the action one of `force_open`, `force_closed`,
    /// `reset`, `disable` and `metrics_only` (see [`CircuitBreakers`]), or
    /// `trip` with `"open_for_ms": ..` (another instance's opening, see
    /// [`CircuitBreakers::trip`]), and answers with that breaker's state.
    /// Only `force_open` and `trip` may name a key no request has made yet
    /// (to cut a host off before it is used); any other action on an
    /// unknown key is a 404, so a mistyped key changes nothing.
    ///
    /// [`CircuitBreakers`]: crate::circuit_breaker::CircuitBreakers
    /// [`CircuitBreakers::trip`]: crate::circuit_breaker::CircuitBreakers::trip
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    pub fn breakers(mut self, breakers: crate::circuit_breaker::CircuitBreakers) -> Self {
        self.config.breakers = Some(breakers);
        self
    }

    /// The service.
    pub fn build(self) -> AdminService {
        AdminService {
            config: Arc::new(self.config),
        }
    }
}

/// Installs the Prometheus recorder globally with explicit histogram
/// buckets (OpenTelemetry's advisory ones) and unit suffixes, and starts its
/// upkeep task.
/// For binaries and examples: a library never installs a recorder.
pub fn install_prometheus() -> Result<PrometheusHandle, crate::BoxError> {
    // Recommended naming (unit suffixes, `_total`) gives the Prometheus names of OpenTelemetry metrics
    // (`http_client_request_duration_seconds`).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)?
        .with_recommended_naming(true)
        .install_recorder()?;
    let upkeep = handle.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            // Without upkeep, histogram buffers grow; 5 s is the exporter's
            // recommended order of magnitude.
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                ticks.tick().await;
                upkeep.run_upkeep();
            }
        });
    }
    Ok(handle)
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        res.headers_mut().insert(CONTENT_TYPE, value);
    }
    res
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(e) => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

/// The methods an admin route answers, for the `Allow` of a 405 (RFC 9110
/// §15.5.6 requires it); `None` for no route.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/metrics" | "/health/live" | "/health/ready" | "/stats" | "/alerts" | "/dashboard" | "/" => Some("GET, HEAD"),
        "/cache/invalidate" => Some("POST"),
        "/breakers" => Some("GET, HEAD, POST"),
        _ => None,
    }
}

fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": reason }))
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive and may be followed by several spaces (RFC 9110
/// §11.1, §11.4): `bearer abc` is the same credentials as `Bearer abc`.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let scheme = value.get(..SCHEME.len())?;
    let rest = &value[SCHEME.len()..];
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

/// `text` with its `%XX` escapes decoded, as JavaScript's
/// `decodeURIComponent` reads it: `+` stays `+` (only form decoding makes
/// it a space), and a `%` not followed by two hex digits stays as it is.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        if let (b'%', Some(high), Some(low)) = (bytes[i], hex(i + 1), hex(i + 2)) {
            // Two hex digits: at most 255.
            #[allow(clippy::cast_possible_truncation)]
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

impl AdminService {
    /// A builder: no token, no recorder, no monitor, no checks.
    pub fn builder() -> AdminBuilder {
        AdminBuilder {
            config: Config {
                token: None,
                liveness: LivenessAuth::Required,
                prometheus: None,
                monitor: None,
                health: HealthRegistry::new(),
                #[cfg(feature = "invalidation")]
                invalidator: None,
                #[cfg(feature = "circuit-breaker")]
                breakers: None,
            },
        }
    }

    fn authorised<B>(&self, request: &Request<B>) -> bool {
        let Some(token) = &self.config.token else { return true };
        if request.uri().path() == "/health/live" && self.config.liveness == LivenessAuth::Exempt {
            return true;
        }
        let from_header = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| bearer_credentials(v.as_bytes()))
            .is_some_and(|given| constant_time_eq(given, token.as_bytes()));
        let from_query = matches!(*request.method(), Method::GET | Method::HEAD)
            && request
                .uri()
                .query()
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|pair| pair.strip_prefix("token="))
                // As sent, or percent-decoded as the dashboard reads it: a
                // token with `+`, `/` or `=` (base64) may come either way.
                .any(|given| {
                    let raw = constant_time_eq(given.as_bytes(), token.as_bytes());
                    raw | constant_time_eq(&percent_decoded(given), token.as_bytes())
                });
        from_header || from_query
    }

    async fn route<B>(self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<crate::BoxError>,
    {
        if !self.authorised(&request) {
            let mut res = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            res.headers_mut().insert(
                WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"tower-optimizer\""),
            );
            return res;
        }
        let config = &self.config;
        // A HEAD is answered as its GET, and its body left out by `call`.
        let method = match request.method() {
            &Method::HEAD => Method::GET,
            other => other.clone(),
        };
        match (method, request.uri().path()) {
            (Method::GET, "/metrics") => match &config.prometheus {
                Some(handle) => response(StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
                None => error(StatusCode::NOT_FOUND, "no Prometheus recorder configured"),
            },
            (Method::GET, "/health/live") => health(&config.health, Probe::Liveness).await,
            (Method::GET, "/health/ready") => health(&config.health, Probe::Readiness).await,
            (Method::GET, "/stats") => match &config.monitor {
                Some(monitor) => json(StatusCode::OK, &monitor.snapshot()),
                None => error(StatusCode::NOT_FOUND, "no monitor configured"),
            },
            (Method::GET, "/alerts") => match &config.monitor {
                Some(monitor) => json(StatusCode::OK, &monitor.snapshot().alerts),
                None => error(StatusCode::NOT_FOUND, "no monitor configured"),
            },
            (Method::GET, "/dashboard" | "/") => response(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
            (Method::POST, "/cache/invalidate") => self.invalidate(request).await,
            (Method::GET, "/breakers") => self.breakers::<B>(None).await,
            (Method::POST, "/breakers") => self.breakers(Some(request)).await,
            (_, path) => match allowed(path) {
                Some(methods) => {
                    let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                    res.headers_mut().insert(ALLOW, http::HeaderValue::from_static(methods));
                    res
                }
                None => error(StatusCode::NOT_FOUND, "no such admin route"),
            },
        }
    }

    /// Serves the admin routes on `addr` (use [`DEFAULT_ADMIN_ADDR`] for
    /// loopback) until the returned task is aborted; returns the bound
    /// address and the task.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let serve = |(stream, _peer)| {
                let service = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        async move { Ok::<_, Infallible>(service.route(req).await) }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                    builder
                        .http2()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
                    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let mut connection = std::pin::pin!(connection);
                    if tokio::time::timeout(MAX_CONNECTION_AGE, connection.as_mut())
                        .await
                        .is_err()
                    {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CONNECTION_DRAIN, connection).await;
                    }
                });
            };
            super::accept::accept_forever(|| listener.accept(), serve).await;
        });
        Ok((local, task))
    }
}

async fn health(registry: &HealthRegistry, probe: Probe) -> Response<Full<Bytes>> {
    let report = registry.report(probe).await;
    let mut res = json(report.status.http_status(), &report);
    res.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(HEALTH_JSON));
    res
}

impl<B> Service<Request<B>> for AdminService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        let head = request.method() == Method::HEAD;
        // Boxed: this is an application edge (a router mounts it), not a
        // layer in the client's hot path.
        Box::pin(async move {
            let mut response = this.route(request).await;
            if head {
                // RFC 9110 §9.3.2: the GET's head, without its content
                // (uptime checkers and load balancers probe with HEAD).
                *response.body_mut() = Full::default();
            }
            Ok(response)
        })
    }
}

mod actions;

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, constant_time_eq, percent_decoded};

    #[test]
    fn percent_decoding_as_decode_uri_component() {
        assert_eq!(percent_decoded("a%2Bb%2fc%3D"), b"a+b/c=");
        assert_eq!(percent_decoded("a+b"), b"a+b", "a plus is no space");
        assert_eq!(percent_decoded("100%"), b"100%");
        assert_eq!(percent_decoded("%zz%4"), b"%zz%4");
        assert_eq!(percent_decoded("%C3%A9"), "é".as_bytes());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"BEARER   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"Bear"), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
        assert_eq!(bearer_credentials(b"Bearer "), Some(&b""[..]));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
