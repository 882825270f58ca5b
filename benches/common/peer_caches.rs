//! The cache layer and its peers, each with its in-memory store and room
//! for every key, in front of one inner service and boxed alike, for the
//! side-by-side bench (`benches/peers.rs`) and the side-by-side
//! conformance run (`examples/conformance.rs`).
// Each user takes what it needs.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt as _};
use tower_optimizer::cache::{Cache, CacheLayer};

/// A boxed, cloneable service with a boxed body, so the contestants have
/// one type; each pays the same two boxes.
pub type Boxed = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<http_body_util::combinators::UnsyncBoxBody<Bytes, tower::BoxError>>,
    tower::BoxError,
>;

pub fn boxed<S, B>(svc: S) -> Boxed
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    use http_body_util::BodyExt as _;
    tower::util::BoxCloneSyncService::new(
        svc.map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// The peers' names, ours first, in report order.
pub const NAMES: [&str; 4] = [
    "tower-optimizer",
    "tower-http-cache",
    "http-cache-tower",
    "tower-resilience-cache",
];

/// `name`'s cache (one of [`NAMES`]), with room for `max_entries`, in
/// front of `inner`: ours with its defaults (a private cache); the peers
/// as their docs set them up for HTTP: `tower-http-cache` (moka) honouring
/// `Cache-Control` with a TTL for responses without one, `http-cache-tower`
/// with `http-cache`'s `MokaManager`, and `tower-resilience-cache`, a
/// memoizing LRU keyed by URI with no HTTP semantics.
pub fn layered<S>(name: &str, max_entries: u64, inner: S) -> Boxed
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    match name {
        "tower-optimizer" => {
            let cache = Cache::builder()
                .max_bytes(512 << 20)
                .sweep_interval(None)
                .build()
                .unwrap();
            boxed(CacheLayer::new(cache).layer(inner))
        }
        "tower-http-cache" => boxed(
            tower_http_cache::prelude::CacheLayer::builder(tower_http_cache::prelude::InMemoryBackend::new(
                max_entries,
            ))
            .ttl(Duration::from_secs(3600))
            .respect_cache_control(true)
            .build()
            .layer(inner),
        ),
        "http-cache-tower" => boxed(
            http_cache_tower::HttpCacheLayer::new(http_cache::MokaManager::new(http_cache::MokaCache::new(
                max_entries,
            )))
            .layer(inner),
        ),
        "tower-resilience-cache" => boxed(
            tower_resilience_cache::CacheLayer::builder()
                .max_size(usize::try_from(max_entries).unwrap())
                .ttl(Duration::from_secs(3600))
                .key_extractor(|req: &Request<Full<Bytes>>| req.uri().to_string())
                .build()
                .unwrap()
                .layer(inner),
        ),
        _ => boxed(inner),
    }
}
