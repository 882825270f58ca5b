//! Tower middleware that makes HTTP clients fast and hard to break.
//!
//! Each capability is an independent [`tower_layer::Layer`] behind a Cargo
//! feature; the default features give the whole stack.
//!
//! | feature | module | what it gives |
//! |---|---|---|
//! | `cache` | [`cache`] | memory-bounded RFC 9111 response cache with coalescing, SWR, stale-if-error, kept between runs in a file |
//! | `invalidation` | [`invalidation`] | tag, pattern, dependency, version, predicate and header-driven invalidation |
//! | `circuit-breaker` | [`circuit_breaker`] | per-host breakers, HTTP-aware classification, probes, failover |
//! | `retry` | [`retry`] | a `tower::retry` policy: HTTP rules, backoff with jitter, `Retry-After`, a retry budget, never retrying an open circuit |
//! | `monitor` | [`monitor`] | OpenTelemetry client metrics, statistics, sampler, alerts, health checks, admin service and dashboard |
//! | `stack` | [`stack`], [`bench`](mod@bench) | `OptimizerStack`, `Optimizer`, the HTTP/2 client, TOML config and the benchmark engine |
//! | `reqwest` (not in `full`) | [`stack`] | `ReqwestService`, `build_reqwest_client`: the stack around a `reqwest::Client` |
//! | `tls` (not in `full`) | [`stack`] | HTTPS upstreams over rustls (ring): `https_client`, `native_roots`, `custom_ca`, `build_https_client` |
//! | `reqwest-middleware` (not in `full`) | [`stack`] | `OptimizerMiddleware`, `build_reqwest_middleware`: the stack as a `reqwest_middleware::Middleware` |
//! | `serde` (on with `monitor`) | | `serde::Serialize` for `CacheStats`, `BreakerSnapshot`, `OptimizerStats` and the monitor's snapshots (durations in seconds, per-cause counters keyed by name) |
//!
//! The onion, outermost first:
//!
//! ```text
//! MetricsLayer          sees every request, hits included
//!   CacheLayer          fresh hit -> answer; miss -> coalesce; stale + error -> serve stale
//!     InvalidationLayer unsafe methods and invalidation headers -> Invalidator
//!       (retry)         tower::retry with a RetryPolicy, under a budget
//!         (concurrency limit / load shed)
//!           CircuitBreakerLayer   per-host state; open -> fails fast
//!             (timeout)
//!               HTTP/2 client
//! ```

// docs.rs builds with `--cfg docsrs` on nightly: each item gated by a
// feature then says which.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Writes `get_ref`, `get_mut` and `into_inner` for a middleware whose
/// inner service `S` is its field `inner`.
#[allow(unused_macros)] // used by whichever layers the features enable
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

#[cfg(feature = "serde")]
mod json;
mod util;

#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub mod bench;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod body;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub mod circuit_breaker;
#[cfg(any(feature = "circuit-breaker", feature = "monitor"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "circuit-breaker", feature = "monitor"))))]
pub mod grpc;
#[cfg(feature = "invalidation")]
#[cfg_attr(docsrs, doc(cfg(feature = "invalidation")))]
pub mod invalidation;
#[cfg(feature = "monitor")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitor")))]
pub mod monitor;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub mod stack;

#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub use stack::{Optimizer, OptimizerStack};

/// The error type between layers: callers `downcast_ref` to the named
/// error of the layer that failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
