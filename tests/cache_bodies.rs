//! Bodies through the cache: oversized and failing bodies stream through
//! intact, the in-flight budget holds, and a long churn leaves no drift.
#![cfg(feature = "cache")]

#[path = "support/chunks.rs"]
mod chunks;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceExt, service_fn};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, RemovalCause};

use chunks::{Chunks, pattern};

#[derive(Clone, Copy)]
struct Plan {
    len: usize,
    chunk: usize,
    declare_length: bool,
    fail_at_end: bool,
    trailers: bool,
}

fn upstream(
    plan: Plan,
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Chunks>, Error = Infallible, Future = impl Send> + Clone {
    service_fn(move |_req: Request<Empty<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::builder().header("cache-control", "max-age=60");
            if plan.declare_length {
                res = res.header("content-length", plan.len);
            }
            Ok(res
                .body(
                    Chunks::pattern(plan.len, plan.chunk)
                        .failing(plan.fail_at_end)
                        .with_trailers(plan.trailers),
                )
                .unwrap())
        }
    })
}

async fn fetch(
    cache: &Cache,
    plan: Plan,
    calls: &Arc<AtomicUsize>,
) -> (CacheStatus, Result<Bytes, BoxError>, Option<http::HeaderMap>) {
    fetch_with(cache, plan, calls, None).await
}

/// [`fetch`] with an optional request `Cache-Control`.
async fn fetch_with(
    cache: &Cache,
    plan: Plan,
    calls: &Arc<AtomicUsize>,
    request_cc: Option<&str>,
) -> (CacheStatus, Result<Bytes, BoxError>, Option<http::HeaderMap>) {
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream(plan, calls.clone()));
    let mut request = Request::get("http://api.test/big");
    if let Some(cc) = request_cc {
        request = request.header("cache-control", cc);
    }
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = CacheStatus::from_headers(res.headers()).unwrap();
    let mut body = res.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(e) => return (status, Err(e), trailers),
        }
    }
    (status, Ok(data.into()), trailers)
}

const PLAN: Plan = Plan {
    len: 10_000,
    chunk: 1000,
    declare_length: false,
    fail_at_end: false,
    trailers: false,
};

#[tokio::test(start_paused = true)]
async fn oversized_bodies_stream_through_intact_and_uncached() {
    for declare_length in [false, true] {
        let cache = Cache::builder().max_entry_bytes(4096).build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan { declare_length, ..PLAN };
        for _ in 0..2 {
            let (status, body, _) = fetch(&cache, plan, &calls).await;
            assert_eq!(body.unwrap(), pattern(10_000), "every byte, in order");
            assert!(!status.stored);
            assert_eq!(status.detail, Some("too-large"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats().inflight_bytes, 0, "reservations released");
    }
}

#[tokio::test(start_paused = true)]
async fn a_newer_response_too_large_to_store_removes_the_variant_it_outdates() {
    for declare_length in [false, true] {
        let cache = Cache::builder().max_entry_bytes(4096).build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let small = Plan {
            len: 1000,
            declare_length,
            ..PLAN
        };
        let (status, ..) = fetch(&cache, small, &calls).await;
        assert!(status.stored);
        let (status, ..) = fetch(&cache, small, &calls).await;
        assert!(status.hit, "the small response is served from cache");
        // The client asks past the cache; the upstream's answer has grown
        // beyond what may be stored.
        let big = Plan { declare_length, ..PLAN };
        let (status, body, _) = fetch_with(&cache, big, &calls, Some("no-cache")).await;
        assert_eq!(body.unwrap(), pattern(10_000));
        assert_eq!(status.detail, Some("too-large"));
        assert_eq!(cache.stats().entries, 0, "the outdated variant is gone");
        let (status, body, _) = fetch(&cache, big, &calls).await;
        assert!(!status.hit, "the older response is never served again");
        assert_eq!(body.unwrap().len(), 10_000);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(cache.audit().is_clean());
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_midway_reaches_the_caller_with_its_error() {
    let cache = Cache::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (status, body, _) = fetch(
        &cache,
        Plan {
            fail_at_end: true,
            ..PLAN
        },
        &calls,
    )
    .await;
    assert_eq!(body.unwrap_err().to_string(), "upstream reset the stream");
    assert_eq!(status.detail, Some("body"));
    assert_eq!(cache.stats().entries, 0);
    let (_, again, _) = fetch(
        &cache,
        Plan {
            fail_at_end: true,
            ..PLAN
        },
        &calls,
    )
    .await;
    assert!(again.is_err(), "nothing was stored from the broken body");
}

#[tokio::test(start_paused = true)]
async fn trailers_pass_through_and_are_not_stored() {
    let cache = Cache::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (status, body, trailers) = fetch(&cache, Plan { trailers: true, ..PLAN }, &calls).await;
    assert_eq!(body.unwrap(), pattern(10_000));
    assert_eq!(trailers.unwrap().get("x-checksum").unwrap(), "abc");
    assert!(!status.stored);
}

#[tokio::test(start_paused = true)]
async fn in_flight_budget_sends_extra_misses_through_uncached() {
    let cache = Cache::builder().max_inflight_bytes(3000).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (status, body, _) = fetch(&cache, PLAN, &calls).await;
    assert_eq!(body.unwrap(), pattern(10_000));
    assert!(!status.stored, "10 kB does not fit a 3 kB in-flight budget");
    let (small, body, _) = fetch(&cache, Plan { len: 2000, ..PLAN }, &calls).await;
    assert_eq!(body.unwrap().len(), 2000);
    assert!(small.stored);
}

/// Hundreds of thousands of mixed operations through the layer and the
/// handle; the accounting must match the live entries exactly at the end
/// and at checkpoints, and never exceed the budget.
/// Mixed operations in the churn test.
const CHURN_OPS: usize = 300_000;

#[tokio::test(start_paused = true)]
async fn churn_leaves_zero_drift() {
    let evicted = Arc::new(AtomicUsize::new(0));
    let counter = evicted.clone();
    let cache = Cache::builder()
        .max_bytes(256 << 10)
        .max_entry_bytes(8 << 10)
        .max_variants(3)
        .stale_retention(Duration::from_secs(5))
        .eviction_listener(move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let svc = service_fn(|req: Request<Empty<Bytes>>| async move {
        let path = req.uri().path();
        let n: usize = path[1..].parse().unwrap_or(0);
        let cc = match n % 7 {
            0 => "no-store",
            1 => "max-age=1, stale-while-revalidate=2",
            2 => "max-age=3, stale-if-error=5",
            _ => "max-age=10",
        };
        let mut res = Response::builder()
            .header("cache-control", cc)
            .header("etag", format!("\"{n}\""));
        if n % 5 == 0 {
            res = res.header("vary", "x-v");
        }
        if req.headers().contains_key("if-none-match") && n % 3 == 0 {
            return Ok::<_, Infallible>(res.status(304).body(http_body_util::Full::new(Bytes::new())).unwrap());
        }
        Ok(res
            .body(http_body_util::Full::new(Bytes::from(vec![b'x'; (n * 37) % 6000])))
            .unwrap())
    });
    let mut client = tower::Layer::layer(&CacheLayer::new(cache.clone()), svc);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for op in 0..CHURN_OPS {
        let r = rand();
        let key = (r >> 8) % 1500;
        match r % 100 {
            0 => {
                cache.remove_key(&format!("http://api.test/{key}"));
            }
            1 => tokio::time::advance(Duration::from_millis(700)).await,
            2 if op % 50 == 0 => {
                cache.sweep();
            }
            3 if op % 1000 == 0 => {
                cache.remove_where(|m| m.size % 2 == 0, RemovalCause::Invalidated);
            }
            4 if op % 5000 == 0 => {
                cache.evict_bytes(64 << 10, RemovalCause::Pressure);
            }
            _ => {
                let req = Request::get(format!("http://api.test/{key}"))
                    .header("x-v", (r >> 40) % 4)
                    .body(Empty::new())
                    .unwrap();
                let res = client.ready().await.unwrap().call(req).await.unwrap();
                let _ = res.into_body().collect().await.unwrap();
            }
        }
        assert!(cache.stats().bytes <= 256 << 10);
        if op % 25_000 == 0 {
            let audit = cache.audit();
            assert!(audit.is_clean(), "drift at op {op}: {audit:?}");
        }
    }
    let audit = cache.audit();
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!(audit.bytes as u64, cache.stats().bytes);
    let stats = cache.stats();
    assert!(
        stats.hits > 5_000 && stats.misses > 10_000,
        "the churn exercised both paths: {stats:?}"
    );
    assert!(evicted.load(Ordering::Relaxed) > 1000);
    assert_eq!(stats.inflight_bytes, 0);
    assert_eq!(cache.in_flight(), 0);
}
