//! Monitoring: the [`MetricsLayer`] (OpenTelemetry HTTP client metrics
//! through the `metrics` facade) and in-process [`Stats`] with latency
//! quantiles from a mergeable [`Sketch`].
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::monitor::{MetricsLayer, Stats};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let stats = Stats::default();
//! let mut client = ServiceBuilder::new()
//!     .layer(MetricsLayer::new().stats(stats.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
//!     });
//! let res = client.ready().await?.call(Request::get("http://api.test/").body(Full::default())?).await?;
//! res.into_body().collect().await?; // the request is measured when its body ends
//! let snap = stats.snapshot(tokio::time::Instant::now());
//! assert_eq!(snap.overall.requests, 1);
//! assert_eq!(snap.hosts[0].0, "api.test:80");
//! # Ok(())
//! # }
//! ```

mod accept;
mod admin;
mod alert;
mod alertmanager;
mod body;
pub mod counters;
mod figures;
pub mod future;
mod handles;
mod health;
mod layer;
mod post;
mod process;
mod route;
mod sampler;
mod service;
#[cfg(feature = "circuit-breaker")]
mod share;
mod sketch;
mod stats;

pub use admin::{
    AdminBuilder, AdminService, CONNECTION_DRAIN, DEFAULT_ADMIN_ADDR, DURATION_BUCKETS, HEADER_READ_TIMEOUT,
    KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, LivenessAuth, MAX_CONNECTION_AGE, install_prometheus,
};
pub use alert::{
    Alert, AlertHandler, AlertManager, AlertRule, AlertState, AlertStatus, AsyncAlertHandler, Comparison,
    DEFAULT_ALERT_MIN_REQUESTS, DEFAULT_REPEAT_INTERVAL, Figures, MAX_ALERT_HOSTS, Scope, Severity,
};
pub use alertmanager::{
    AlertmanagerError, AlertmanagerPush, AlertmanagerPushBuilder, DEFAULT_PUSH_TIMEOUT, DEFAULT_RESEND,
};
pub use body::MetricsBody;
pub use figures::{FIGURES, FigureSet, FigureSource, HOST_FIGURES, resident_memory};
pub use handles::{
    ACTIVE_REQUESTS, DEFAULT_MAX_SERVER_ADDRESSES, OTHER_SERVER_ADDRESS, REQUEST_DURATION, RESPONSE_BODY_SIZE,
};
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub use health::breakers_check;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use health::cache_memory_check;
pub use health::{CheckResult, HEALTH_JSON, HealthRegistry, HealthReport, HealthStatus, Probe, http_check};
pub use layer::{BodySizes, MetricsLayer};
pub use process::{ProcessCounters, cpu_percent};
pub use route::{InvalidTemplate, RouteTemplate, RouteTemplates};
pub use sampler::gauges;
pub use sampler::{
    BreakerSample, CacheSample, DEFAULT_HISTORY, DEFAULT_SAMPLE_INTERVAL, Monitor, MonitorBuilder, MonitorSnapshot,
    Sample, SharedOpeningsSample,
};
#[cfg(feature = "stack")]
pub(crate) use service::Meter;
pub use service::MetricsService;
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub use share::{
    DEFAULT_SHARE_TIMEOUT, MAX_RESOLVED_PEERS, MAX_SHARES_IN_FLIGHT, SharedOpenings, SharedOpeningsBuilder,
    SharedOpeningsError, SharedOpeningsStats,
};
pub use sketch::{MAX_VALUE, MIN_VALUE, RELATIVE_ACCURACY, Sketch};
pub use stats::{DEFAULT_MAX_HOSTS, DEFAULT_WINDOW, DEFAULT_WINDOW_BUCKETS, Stats, StatsSnapshot, WindowStats};
