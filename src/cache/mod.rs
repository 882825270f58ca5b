//! A memory-bounded HTTP cache for client services, correct by RFC 9111.
//!
//! [`Cache`] is the shared handle (store, counters, background sweep);
//! [`CacheLayer`] wraps any `Service<http::Request<B>>` whose response body
//! yields [`Bytes`](bytes::Bytes). What it does:
//!
//! - **Keys**: normalised absolute URI; GET is stored, HEAD is answered from
//!   a stored GET (and one that goes upstream revalidates it, §4.3.5);
//!   several `Vary` variants per URI; `Vary: *` never stored.
//! - **Freshness** (§4.2): `s-maxage` (shared mode), `max-age`, `Expires`,
//!   `Date`, `Age`; heuristic and default lifetimes only when enabled;
//!   `max_ttl` cap. Served with a correct `Age`.
//! - **Directives**: `no-store`, `no-cache`, `must-revalidate`,
//!   `proxy-revalidate`, `private`/`public`, `must-understand` (stored
//!   for a status this cache knows, `no-store` beside it notwithstanding),
//!   `immutable` (RFC 8246: a fresh one answers a `max-age=0` reload);
//!   request `no-cache`, `no-store`,
//!   `max-age`, `max-stale`, `min-fresh`, `only-if-cached` (504 on a miss,
//!   or for a request the cache steps aside for). A caller can also choose
//!   per request, without a header sent upstream, with a
//!   [`RequestCacheMode`] in the request's extensions (the Fetch
//!   standard's `no-store`, `reload`, `no-cache`, `force-cache`,
//!   `only-if-cached`).
//! - **Validation** (§4.3) with `If-None-Match`/`If-Modified-Since`; a 304
//!   freshens the stored headers. A whole new answer replaces the stored
//!   response its request revalidated, even one that may not be stored
//!   itself, unless it is one caller's own or a 5xx. A caller's own
//!   `If-None-Match`/`If-Modified-Since` is judged by the cache (§4.3.2)
//!   against the stored response it answers from: a 304 where it matches,
//!   the response where not. On a miss or a stale entry the cache asks
//!   upstream for itself, without them.
//!   `stale-while-revalidate` refreshes once in
//!   the background; `stale-if-error` covers 5xx, errors from the inner
//!   service (a circuit breaker's open error included) and failing bodies.
//! - **Writes** (§4.4): after a 2xx or 3xx answer to an unsafe method, the
//!   target URI and same-origin `Location`/`Content-Location` are removed. A
//!   write that fails upstream, or whose caller stops waiting, may still
//!   have happened: its target is marked stale (revalidated on next use),
//!   unless the error says the request never left (an open circuit, a shed
//!   load, a failed connect). The `InvalidationLayer` adds tags, rules and
//!   dependents on top.
//! - **Coalescing**: concurrent misses for one key make one upstream call,
//!   with a lock timeout; waiters are released at once when the leader fails.
//! - **Memory**: a hard byte budget over key, headers, body and measured
//!   per-entry overhead; oversized bodies stream through uncached and intact,
//!   and long storable ones reach the caller as they arrive while a copy is
//!   kept (`stream_above`);
//!   in-flight buffering is capped; an optional memory-pressure watcher.
//! - **Kept between runs**: [`Cache::save`] / [`Cache::save_file`] write
//!   the stored responses (with their tags, dependency edges and age) and
//!   [`Cache::load`] / [`Cache::load_file`] put them back in a cache, aged
//!   by the time on disk; a file saved under other key or storage settings,
//!   or damaged, is refused by name, keeping what loaded before.
//! - **Observability**: RFC 9211 `Cache-Status` on every response, a
//!   [`CacheStatus`] in the response extensions (unless
//!   [`StatusExtension::Omit`]), [`CacheStats`], an
//!   eviction listener, and [`Cache::audit`].
//!
//! It runs on Tokio with its timers enabled (`#[tokio::main]` does;
//! a runtime built by hand needs `enable_time()`): the lock timeout of
//! coalesced waiters and the background sweep are Tokio timers.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let cache = Cache::builder().max_bytes(8 << 20).build()?;
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(cache.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .header("etag", "\"v1\"")
//!             .body(Full::new(Bytes::from_static(b"hello")))
//!             .unwrap())
//!     });
//!
//! for _ in 0..2 {
//!     let req = Request::get("http://api.test/greeting").body(Full::default())?;
//!     let res = client.ready().await?.call(req).await?;
//!     assert_eq!(res.status(), 200);
//! }
//! let req = Request::get("http://api.test/greeting").body(Full::default())?;
//! let res = client.ready().await?.call(req).await?;
//! assert!(res.extensions().get::<CacheStatus>().unwrap().hit);
//! assert_eq!(cache.stats().hits, 2);
//! assert_eq!(cache.stats().misses, 1);
//!
//! // A caller revalidating its own copy gets a 304 from the cache.
//! let req = Request::get("http://api.test/greeting")
//!     .header("if-none-match", "\"v1\"")
//!     .body(Full::default())?;
//! let res = client.ready().await?.call(req).await?;
//! assert_eq!(res.status(), 304);
//! assert_eq!(cache.stats().not_modified, 1);
//! # Ok(())
//! # }
//! ```

mod background;
mod broadcast;
mod buffer;
mod builder;
mod cgroup;
mod coalesce;
mod conditional;
mod directives;
mod entry;
mod epochs;
pub mod error;
mod fetch;
mod freshen;
mod freshness;
pub mod future;
mod handle;
mod index;
pub(crate) mod key;
mod labels;
mod layer;
mod mode;
mod persist;
mod policy;
pub(crate) mod pressure;
mod query;
mod seen;
mod service;
mod stats;
mod status;
mod store;
mod text;
mod ttl;
pub(crate) mod write;

// The store's key copies, for the invalidation scan's key snapshots.
#[cfg(feature = "invalidation")]
pub(crate) use store::UriKey;

pub use builder::{
    CacheBuilder, DEFAULT_HEURISTIC_MAX, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRY_BYTES,
    DEFAULT_MAX_VARIANTS, DEFAULT_REMEMBER_UNCACHEABLE, DEFAULT_STALE_RETENTION, DEFAULT_STREAM_ABOVE,
    DEFAULT_SWEEP_INTERVAL,
};
pub use entry::EntryMeta;
pub use freshness::Freshness;
pub use handle::Cache;
pub use labels::{Dependencies, Node, Tags, VersionStamp, Versions};
pub use layer::CacheLayer;
pub use mode::RequestCacheMode;
pub use persist::{LoadError, LoadErrorKind, Loaded, Saved};
pub use policy::{AuthorizationPolicy, Bypass, CacheMode, CachePredicate, NotStorable, SetCookiePolicy};
pub use pressure::{DEFAULT_PRESSURE_INTERVAL, MemoryPressure, MemorySource};
pub use query::{QueryKey, QueryOrder};
pub use service::CacheService;
pub use stats::{CacheStats, InvalidationKind};
pub use status::{CACHE_NAME, CACHE_STATUS, CacheStatus, Forward, Outcome, StatusExtension};
pub use store::{Audit, EvictionListener, Purge, RemovalCause, Removed};
pub use ttl::TtlPolicy;

/// Per-entry overhead the budget charges beyond key, headers and body.
#[doc(hidden)]
pub const ENTRY_OVERHEAD: usize = entry::ENTRY_OVERHEAD;
/// Per-header overhead the budget charges beyond name and value text.
#[doc(hidden)]
pub const HEADER_OVERHEAD: usize = entry::HEADER_OVERHEAD;
/// Per-line hash-index overhead the budget charges on a header map's capacity.
#[doc(hidden)]
pub const HEADER_INDEX_OVERHEAD: usize = entry::HEADER_INDEX_OVERHEAD;
/// Per-dependency-edge overhead the budget charges beyond the node's name.
#[doc(hidden)]
pub const DEPENDENCY_OVERHEAD: usize = store::DEPENDENCY_OVERHEAD;
