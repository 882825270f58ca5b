//! A circuit breaker for HTTP clients: per-host breakers in a bounded
//! registry, HTTP-aware failure rules, `Retry-After`-aware backoff, recovery
//! probes, failover, and a downcastable [`error::Open`].
//!
//! The state machine is resilience4j's (closed, open, half-open, plus
//! disabled, forced open and metrics only) over a count or time window,
//! tripping on failure rate, slow-call rate or consecutive failures. An open
//! circuit fails fast in `call` (never in `poll_ready`); results that come
//! back after a state change are discarded. Instances of a client can share
//! their openings: each [`Event::Opened`] by a breaker's own calls, passed
//! to another instance's [`CircuitBreakers::trip`] (built in over the admin
//! servers: [`SharedOpenings`](crate::monitor::SharedOpenings)).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::circuit_breaker::{error::Open, CircuitBreakerConfig, CircuitBreakerLayer, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let config = CircuitBreakerConfig::builder().consecutive_failures(Some(3)).build()?;
//! let layer = CircuitBreakerLayer::new(config);
//! let breakers = layer.breakers();
//! let mut client = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(Response::builder().status(503).body(Full::new(Bytes::new())).unwrap())
//! });
//! for _ in 0..3 {
//!     let res = client.ready().await?.call(Request::get("http://down.test/").body(Full::default())?).await?;
//!     assert_eq!(res.status(), 503);
//! }
//! assert_eq!(breakers.state("http://down.test"), Some(State::Open));
//! let err = client.ready().await?.call(Request::get("http://down.test/").body(Full::default())?).await.unwrap_err();
//! let open = err.downcast_ref::<Open>().expect("fails fast with error::Open");
//! assert_eq!(open.key(), "http://down.test");
//! # Ok(())
//! # }
//! ```

mod body;
mod classify;
mod config;
pub mod error;
mod events;
mod fallback;
pub mod future;
mod grpc;
mod layer;
mod probe;
mod registry;
mod respond;
mod service;
mod state;
mod tally;
#[cfg(feature = "tower-http")]
mod tower_http_classify;
mod window;

pub use crate::grpc::GrpcCode;
pub use body::BreakerBody;
#[allow(unused_imports)] // used by the retry layer when it is built
pub(crate) use classify::retry_after;
pub use classify::{CallResult, Classify, FAILURE_STATUSES, HttpClassifier, Outcome};
pub use config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_CALLS, DEFAULT_IDLE,
    DEFAULT_MAX_HALF_OPEN, DEFAULT_MAX_KEYS, DEFAULT_MAX_OPEN, DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN,
    DEFAULT_OPEN_BACKOFF, DEFAULT_SLOW_CALL, DEFAULT_WINDOW_BUCKETS, DEFAULT_WINDOW_CALLS, KeyBy, Listener,
    MAX_WINDOW_BUCKETS, MAX_WINDOW_CALLS, Probe, ProbeSuccess, WindowKind,
};
pub use events::{Event, OTHER_KEY, OpenCause};
pub use fallback::{Fallback, FallbackFuture, NoFallback, WithFallback};
pub use grpc::{DEFAULT_GRPC_FAILURES, GrpcClassifier};
pub use layer::CircuitBreakerLayer;
pub use probe::http_probe;
pub use registry::{BreakerSnapshot, CircuitBreakers};
pub use respond::{RespondOpen, RespondOpenLayer};
pub use service::CircuitBreakerService;
pub use state::State;
#[cfg(feature = "tower-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
pub use tower_http_classify::TowerHttpClassifier;
pub use window::WindowFigures;
