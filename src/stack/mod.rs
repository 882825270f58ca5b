//! The assembled stack: [`OptimizerStack`] builds every configured layer in
//! the order of the onion around any client service (or the crate's own
//! HTTP/2 client), and [`Optimizer`] starts, reports and shuts it down.
//!
//! ```
//! use std::time::Duration;
//! use tower_optimizer::cache::Cache;
//! use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
//! use tower_optimizer::stack::OptimizerStack;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let (client, optimizer) = OptimizerStack::builder()
//!     .cache(Cache::builder().max_bytes(32 << 20).build()?)
//!     .circuit_breaker(CircuitBreakerConfig::default())
//!     .timeout(Duration::from_secs(10))
//!     .build_http2_client()?;
//! optimizer.start().await?;
//! assert_eq!(optimizer.stats().in_flight, 0);
//! let last = optimizer.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(last.cache.unwrap().entries, 0);
//! # drop(client);
//! assert!(OptimizerStack::builder().timeout(Duration::ZERO).build::<()>().unwrap_err().to_string().contains("timeout"));
//! # Ok(())
//! # }
//! ```

mod builder;
mod client;
mod config;
mod deadline;
mod gate;
mod grpc_refusals;
mod held;
mod hit_first;
mod host_limit;
mod layer;
mod limit;
mod optimizer;
mod optional;
mod persist;
mod probe;
#[cfg(feature = "reqwest")]
mod reqwest_client;
#[cfg(feature = "reqwest-middleware")]
mod reqwest_middleware;
mod settings;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use self::reqwest_middleware::OptimizerMiddleware;
pub use builder::{
    DEFAULT_WARM_UP_PARALLELISM, DEFAULT_WARM_UP_TIMEOUT, OptimizerStack, OptimizerStackBuilder, RETRIES_GAUGE,
    RETRY_BUDGET_EXHAUSTED_GAUGE,
};
pub use client::{ClientBody, ClientConfig, HttpClient, Protocol, http_client};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use client::{HttpsClient, https_client};
pub use config::{
    AdminSection, AlertSection, AlertmanagerSection, BreakerSection, CacheSection, ClientSection, InhibitSection,
    MonitorSection, OptimizerConfig, PressureSection, ReadinessSection, RetrySection, ShareSection, TtlRoute,
    parse_duration,
};
pub use deadline::RequestTimeout;
pub use gate::ShuttingDown;
pub use grpc_refusals::{GrpcRefusals, GrpcRefusalsFuture, GrpcRefusalsLayer};
pub use layer::{OptimizedService, OptimizerLayer, Overload, ResponseBody, WhenOpen};
pub use optimizer::{Optimizer, OptimizerStats, StartReport};
pub use probe::DEFAULT_PROBE_TIMEOUT;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use reqwest_client::{ReqwestService, ResponseFuture as ReqwestFuture};
pub use settings::{CGROUP_RSS_ALERT_FRACTION, DEFAULT_RSS_ALERT, MonitorSettings, StackError};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{MaybeH2c, PriorKnowledge, custom_ca, danger_accept_invalid_certs, native_roots, webpki_roots};
