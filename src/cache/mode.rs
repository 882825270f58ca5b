//! [`RequestCacheMode`]: how one request may use the cache, chosen by its
//! caller in the request's extensions, without a header sent upstream.
//!
//! The modes are the Fetch standard's `RequestInit.cache` values, which
//! browsers and `http-cache`'s `CacheMode` offer: a client that wraps this
//! cache picks one per call (a pull-to-refresh reloads, an offline screen
//! asks for the cache only). Request `Cache-Control` directives say much of
//! the same, but they travel upstream, where intermediaries and the origin
//! act on them too; an extension stays between the caller and this cache.
//! Pure logic: knows nothing of tower.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, RequestCacheMode};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let cache = Cache::builder().build()?;
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(cache.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .body(Full::new(Bytes::from_static(b"news")))
//!             .unwrap())
//!     });
//! let get = |mode: RequestCacheMode| {
//!     let mut req = Request::get("http://api.test/news").body(Full::default()).unwrap();
//!     req.extensions_mut().insert(mode);
//!     req
//! };
//! // Nothing stored yet: the cache alone cannot answer.
//! let res = client.ready().await?.call(get(RequestCacheMode::OnlyIfCached)).await?;
//! assert_eq!(res.status(), 504);
//! client.ready().await?.call(get(RequestCacheMode::Default)).await?;
//! let res = client.ready().await?.call(get(RequestCacheMode::OnlyIfCached)).await?;
//! assert!(res.extensions().get::<CacheStatus>().unwrap().hit);
//! // A reload goes upstream although a fresh copy is stored, and stores its answer.
//! let res = client.ready().await?.call(get(RequestCacheMode::Reload)).await?;
//! assert!(!res.extensions().get::<CacheStatus>().unwrap().hit);
//! // Three misses: the 504, the first fetch and the reload.
//! assert_eq!(cache.stats().misses, 3);
//! # Ok(())
//! # }
//! ```

use http::Extensions;

use super::directives::{CacheControl, MaxStale};

/// How a request may use the cache. Put it in the request's extensions
/// (`request.extensions_mut().insert(RequestCacheMode::Reload)`); a request
/// without one is [`RequestCacheMode::Default`]. It adds to the request's
/// own `Cache-Control` directives and is never sent upstream.
///
/// Where a mode lets a stale response answer, the response's own
/// `must-revalidate` (or `no-cache`) still sends it upstream first: RFC
/// 9111 §4.2.4 lets a client accept staleness, not overrule an origin
/// that forbids it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RequestCacheMode {
    /// HTTP caching as RFC 9111 says: a fresh stored response answers,
    /// a stale one is revalidated, a miss is fetched and stored if it may be.
    #[default]
    Default,
    /// As if there were no cache: the request goes upstream unchanged and
    /// its answer is not stored (`Cache-Status: fwd=bypass;
    /// detail=request-mode`). Nothing stored is read, changed or removed.
    NoStore,
    /// Upstream for a whole new response, whatever is stored (no
    /// validators of the cache's copy are sent), and store it if it may be
    /// stored: the stored copy is replaced (`fwd=request`). A failing
    /// upstream gets no stale stand-in: the caller asked for the network.
    /// It joins no fetch of the same URI already in flight (that answer
    /// was asked for before the reload), and such a fetch's answer is not
    /// stored over the reload's; requests made after the reload join it.
    Reload,
    /// A stored response answers only once upstream confirms it (a
    /// conditional request with its validators, `fwd=request`), as for a
    /// request `Cache-Control: no-cache`, which is not sent. As for the
    /// directive (RFC 9111 §5.2.1.4 states a preference), an upstream
    /// failure may still be answered stale where `stale-if-error` allows.
    NoCache,
    /// Any stored response answers, fresh or stale, as for `max-stale`
    /// with no limit (`detail=max-stale` when stale); without one the
    /// request goes upstream and its answer is stored.
    ForceCache,
    /// A stored response, fresh or stale (as [`ForceCache`](Self::ForceCache)),
    /// or a `504 Gateway Timeout` from the cache: never upstream, as for
    /// `only-if-cached` (RFC 9111 §5.2.1.7).
    OnlyIfCached,
}

impl RequestCacheMode {
    /// The mode a request's extensions carry.
    pub(crate) fn of(extensions: &Extensions) -> Self {
        // An empty `Extensions` is a null pointer: no lookup on the common path.
        extensions.get::<RequestCacheMode>().copied().unwrap_or_default()
    }

    /// Adds the directives the mode stands for to the request's own
    /// (`NoStore` and `Reload` are not directives: the service steps
    /// around the store for them).
    pub(crate) fn apply(self, request_cc: &mut CacheControl) {
        match self {
            RequestCacheMode::Default | RequestCacheMode::NoStore | RequestCacheMode::Reload => {}
            RequestCacheMode::NoCache => request_cc.no_cache = true,
            RequestCacheMode::ForceCache => request_cc.max_stale = Some(MaxStale::Any),
            RequestCacheMode::OnlyIfCached => {
                request_cc.max_stale = Some(MaxStale::Any);
                request_cc.only_if_cached = true;
            }
        }
    }

    /// Whether a stored response may stand in for an upstream failure of
    /// this request (stale-if-error, failover to the cache).
    pub(crate) fn may_use_stored(self) -> bool {
        !matches!(self, RequestCacheMode::NoStore | RequestCacheMode::Reload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_add_the_directives_they_stand_for() {
        let applied = |mode: RequestCacheMode| {
            let mut cc = CacheControl::default();
            mode.apply(&mut cc);
            cc
        };
        assert_eq!(applied(RequestCacheMode::Default), CacheControl::default());
        assert_eq!(applied(RequestCacheMode::NoStore), CacheControl::default());
        assert_eq!(applied(RequestCacheMode::Reload), CacheControl::default());
        assert!(applied(RequestCacheMode::NoCache).no_cache);
        assert_eq!(applied(RequestCacheMode::ForceCache).max_stale, Some(MaxStale::Any));
        let only = applied(RequestCacheMode::OnlyIfCached);
        assert!(only.only_if_cached && only.max_stale == Some(MaxStale::Any));
        // A directive the request already carries stays.
        let mut cc = CacheControl {
            no_store: true,
            ..CacheControl::default()
        };
        RequestCacheMode::ForceCache.apply(&mut cc);
        assert!(cc.no_store);
    }

    #[test]
    fn a_request_without_a_mode_has_the_default() {
        let mut extensions = Extensions::new();
        assert_eq!(RequestCacheMode::of(&extensions), RequestCacheMode::Default);
        extensions.insert(RequestCacheMode::Reload);
        assert_eq!(RequestCacheMode::of(&extensions), RequestCacheMode::Reload);
        assert!(!RequestCacheMode::Reload.may_use_stored());
        assert!(!RequestCacheMode::NoStore.may_use_stored());
        assert!(RequestCacheMode::ForceCache.may_use_stored());
    }
}
