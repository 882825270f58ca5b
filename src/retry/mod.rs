//! Retries that a failing host cannot turn into a storm: a
//! [`tower::retry::Policy`] with HTTP rules, backoff with jitter,
//! `Retry-After`, a shared retry budget, and respect for the circuit
//! breaker (an open circuit is never retried).
//!
//! [`RetryPolicy::layer`] gives `tower`'s `RetryLayer`. Put it outside the
//! [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer), so
//! each attempt passes the breaker and an open circuit ends the retries,
//! and inside the cache, so hits are never retried. By default it retries
//! idempotent requests on 502, 503, 504, 408 and 429 (after `Retry-After`
//! up to 5 s) and on transport errors and timeouts, and any request whose
//! connection was refused; at most 3 attempts, and retries at most 20 % of
//! the requests of the last 10 s plus 10 a second ([`BudgetConfig`]).
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use tower_optimizer::retry::{RetryConfig, RetryPolicy};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let retries = RetryPolicy::new(RetryConfig::default());
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // An upstream that is unavailable twice, then answers.
//! let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { 503 } else { 200 };
//!         Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
//!     }
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(retries.layer())
//!     .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()))
//!     .service(upstream);
//! let request = Request::get("http://api.test/items").body(Full::default())?;
//! let response = client.ready().await?.call(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(retries.stats().retries, 2);
//! # Ok(())
//! # }
//! ```

mod budget;
mod config;
mod decide;
mod policy;
mod replay;

pub use budget::{BudgetConfig, DEFAULT_BUDGET_RATIO, DEFAULT_BUDGET_WINDOW, DEFAULT_MIN_PER_SECOND};
pub use config::{
    ConfigError, DEFAULT_BASE_DELAY, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY, DEFAULT_MAX_RETRY_AFTER, Methods,
    RetryConfig, RetryConfigBuilder,
};
pub use decide::{Attempt, Decision, HttpRetry, RETRY_STATUSES, RequestRetry, Resent, RetryOn};
pub use policy::{RetryPolicy, RetryStats};
