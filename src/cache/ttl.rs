//! A caller's say in how long responses stay fresh, route by route, over
//! what the upstream's headers say. Knows nothing of tower.
//!
//! Many upstreams send no caching headers at all (an internal API, a third
//! party's), while the caller knows that `/rates` may be a minute old and
//! `/countries` a day. [`default_ttl`](super::CacheBuilder::default_ttl)
//! gives every such response one lifetime; a [`TtlPolicy`] gives each the
//! one it should have.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let cache = Cache::builder()
//!     .ttl_with(|req: &http::request::Parts, res: &http::response::Parts| {
//!         let ok = res.status == StatusCode::OK;
//!         match req.uri.path() {
//!             "/rates" if ok => Some(Duration::from_secs(60)),
//!             p if ok && p.starts_with("/countries") => Some(Duration::from_secs(86_400)),
//!             _ => None, // the upstream's own headers decide
//!         }
//!     })
//!     .build()?;
//! // An upstream that sends no caching headers at all.
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(cache.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//!     });
//! let get = |path: &str| Request::get(format!("http://api.test{path}")).body(Full::default()).unwrap();
//! let res = client.ready().await?.call(get("/rates")).await?;
//! let status = res.extensions().get::<CacheStatus>().unwrap();
//! assert!(status.stored && status.ttl.is_some_and(|ttl| (59..=60).contains(&ttl)));
//! let res = client.ready().await?.call(get("/news")).await?;
//! assert!(!res.extensions().get::<CacheStatus>().unwrap().stored, "no freshness: not stored");
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use http::{request, response};

/// How long a response stays fresh, where the caller knows better than its
/// headers. `Some(ttl)` is taken as if the response said `max-age` (its
/// `Age` still counts, and `max_ttl` still caps it), whatever freshness it
/// named or did not, and whatever its status; `None` leaves the RFC 9111
/// rules to decide. It sets how long, never whether: `no-store`,
/// `private` in a shared cache, `Vary: *` and the other reasons a response
/// is not stored still hold, as do `no-cache` and `must-revalidate`.
/// Return `None` for statuses that should not be kept (errors, say).
pub trait TtlPolicy: Send + Sync + 'static {
    /// The lifetime of `response`, the answer to `request`, or `None`.
    fn ttl(&self, request: &request::Parts, response: &response::Parts) -> Option<Duration>;
}

impl<F> TtlPolicy for F
where
    F: Fn(&request::Parts, &response::Parts) -> Option<Duration> + Send + Sync + 'static,
{
    fn ttl(&self, request: &request::Parts, response: &response::Parts) -> Option<Duration> {
        self(request, response)
    }
}

impl std::fmt::Debug for dyn TtlPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtlPolicy")
    }
}
