//! Cache invalidation: the [`Invalidator`] handle and the [`InvalidationLayer`].
//!
//! Strategies: by key or URI, by tag (from `Cache-Groups`, `Surrogate-Key`,
//! `Cache-Tag` headers or a closure), by regex pattern (a chunked scan that
//! yields), by dependency (transitive, cycle-safe), by namespace version
//! (O(1) bumps, entries dropped lazily), by predicate or age, and by custom
//! [`InvalidationStrategy`]s. Each can be soft (mark stale, keep for
//! revalidation) or hard (remove), and returns an [`InvalidationReport`].
//! The layer applies RFC 9111 §4.4 (unsafe methods), RFC 9875
//! (`Cache-Group-Invalidation`) and CRUD [`Rule`]s. A write whose outcome
//! is unknown (failed after it was sent, or given up by its caller) marks
//! its target and what its rules name stale instead.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Method, Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::cache::{Cache, CacheLayer};
//! use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let cache = Cache::builder().build()?;
//! let invalidator = Invalidator::new(cache.clone());
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(cache.clone()))
//!     .layer(InvalidationLayer::new(invalidator.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .header("surrogate-key", "user:7 users")
//!             .body(Full::new(Bytes::from_static(b"{}")))
//!             .unwrap())
//!     });
//! let get = || Request::get("http://api.test/users/7").body(Full::default()).unwrap();
//! client.ready().await?.call(get()).await?;
//! assert_eq!(cache.stats().entries, 1);
//! assert_eq!(invalidator.tag("user:7").entries, 1);
//! assert_eq!(cache.stats().entries, 0);
//!
//! // A successful write invalidates its target URI (RFC 9111 §4.4).
//! client.ready().await?.call(get()).await?;
//! let put = Request::builder().method(Method::PUT).uri("http://api.test/users/7").body(Full::default())?;
//! client.ready().await?.call(put).await?;
//! assert_eq!(cache.stats().entries, 0);
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod future;
mod handle;
pub mod headers;
mod layer;
mod report;
mod rules;
mod scan;
mod service;
mod strategy;
mod target;

pub use crate::cache::{InvalidationKind, Node, Purge};
pub use error::InvalidationError;
pub use handle::{Invalidator, group_tag};
pub use layer::{HeaderVisibility, InvalidationLayer, TagHeaders};
pub use report::InvalidationReport;
pub use rules::{Rule, RuleMatch};
pub use scan::SCAN_CHUNK;
pub use service::InvalidationService;
pub use strategy::{InvalidationEvent, InvalidationStrategy};
pub use target::{Pattern, PatternScope, Target};
