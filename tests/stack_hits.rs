//! The stack's edge answers a hit itself (`stack::hit_first`): what the
//! stages between would have done to it is done all the same (measured
//! from the call to the body's end, counted in flight, refused after
//! shutdown, counted once by the cache), and whatever is not a hit to give
//! at once goes the whole way. On paused time, so durations are exact.
#![cfg(feature = "stack")]

#[path = "support/debugging.rs"]
mod debugging;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use debugging::recorded;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::MetricKind;
use metrics_util::debugging::DebugValue;
use tower::{Layer, ServiceExt, service_fn};
use tower_optimizer::cache::{Cache, CacheStatus};
use tower_optimizer::monitor::{ACTIVE_REQUESTS, REQUEST_DURATION};
use tower_optimizer::stack::{MonitorSettings, OptimizedService, Optimizer, OptimizerStack, ShuttingDown};

/// A stack with a cache and the monitor's metrics over an in-process
/// upstream answering `cache_control`, counting its calls.
fn stack(cache_control: &'static str) -> (OptimizedService<Full<Bytes>>, Optimizer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let upstream = service_fn(move |_: Request<Full<Bytes>>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", cache_control)
                    .body(Full::new(Bytes::from(format!("answer #{n}"))))
                    .unwrap(),
            )
        }
    });
    let (layer, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .monitor(MonitorSettings::default())
        .build::<Full<Bytes>>()
        .unwrap();
    (layer.layer(upstream), optimizer, calls)
}

fn get(uri: &str, cache_control: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(uri);
    if let Some(cc) = cache_control {
        request = request.header("cache-control", cc);
    }
    request.body(Full::default()).unwrap()
}

async fn text(client: &OptimizedService<Full<Bytes>>, request: Request<Full<Bytes>>) -> (CacheStatus, Bytes) {
    let response = client.clone().oneshot(request).await.unwrap();
    let status = CacheStatus::from_headers(response.headers()).unwrap();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

#[test]
fn a_hit_at_the_edge_is_measured_held_in_flight_and_refused_after_shutdown() {
    let rows = recorded(async {
        let (client, optimizer, calls) = stack("max-age=600");
        let uri = "http://api.test/item";
        let (status, body) = text(&client, get(uri, None)).await;
        assert!(!status.hit);
        assert_eq!(body, "answer #0");

        let response = client.clone().oneshot(get(uri, None)).await.unwrap();
        assert!(CacheStatus::from_headers(response.headers()).unwrap().hit);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a hit makes no upstream call");
        assert_eq!(optimizer.stats().in_flight, 1, "in flight until its body is read");
        // Measured until the body ends, not at the head.
        tokio::time::advance(Duration::from_millis(250)).await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "answer #0");
        assert_eq!(optimizer.stats().in_flight, 0);

        let stats = optimizer.stats();
        assert_eq!(
            stats.cache.as_ref().map(|c| (c.hits, c.misses)),
            Some((1, 1)),
            "counted once"
        );
        assert_eq!(stats.requests.map(|r| r.overall.requests), Some(2));

        // A HEAD is answered from the stored GET, with no body.
        let head = Request::head(uri).body(Full::default()).unwrap();
        let response = client.clone().oneshot(head).await.unwrap();
        assert!(CacheStatus::from_headers(response.headers()).unwrap().hit);
        assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        optimizer.shutdown(Duration::from_secs(1)).await;
        let refused = client.clone().oneshot(get(uri, None)).await.unwrap_err();
        assert!(refused.is::<ShuttingDown>(), "{refused}");
        assert_eq!(
            optimizer.stats().cache.map(|c| c.hits),
            Some(2),
            "a refused request is no hit"
        );
    });
    let durations = |status: &str| -> Vec<f64> {
        rows.iter()
            .filter(|(k, ..)| k.kind() == MetricKind::Histogram && k.key().name() == REQUEST_DURATION)
            .filter(|(k, ..)| {
                k.key()
                    .labels()
                    .any(|l| l.key() == "tower_optimizer.cache.status" && l.value() == status)
            })
            .flat_map(|(.., value)| match value {
                DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect::<Vec<_>>(),
                other => panic!("not a histogram: {other:?}"),
            })
            .collect()
    };
    let mut hits = durations("hit");
    hits.sort_by(f64::total_cmp);
    assert_eq!(
        hits,
        [0.0, 0.25],
        "from the call to the body's end (the HEAD's is empty)"
    );
    let heads = rows
        .iter()
        .filter(|(k, ..)| k.key().name() == REQUEST_DURATION)
        .filter(|(k, ..)| {
            k.key()
                .labels()
                .any(|l| l.key() == "http.request.method" && l.value() == "HEAD")
        })
        .count();
    assert_eq!(heads, 1, "the HEAD measured as one");
    assert_eq!(durations("miss").len(), 1);
    let active: Vec<_> = rows
        .iter()
        .filter(|(k, ..)| k.kind() == MetricKind::Gauge && k.key().name() == ACTIVE_REQUESTS)
        .map(|(.., value)| value)
        .collect();
    assert!(!active.is_empty());
    assert!(
        active
            .iter()
            .all(|v| matches!(v, DebugValue::Gauge(g) if g.into_inner() == 0.0)),
        "nothing left active: {active:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn what_is_not_a_hit_to_give_at_once_goes_the_whole_way_counted_once() {
    let (client, optimizer, calls) = stack("max-age=1, stale-while-revalidate=60");
    let uri = "http://api.test/swr";
    text(&client, get(uri, None)).await;
    let (status, _) = text(&client, get(uri, None)).await;
    assert!(status.hit);

    // Stale within its stale-while-revalidate window: answered stale, once
    // counted, and refreshed once behind.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (status, body) = text(&client, get(uri, None)).await;
    assert_eq!((status.hit, status.detail), (true, Some("stale-while-revalidate")));
    assert_eq!(body, "answer #0");
    // Paused: the sleep ends once every task is idle, the refresh stored.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let cache = optimizer.stats().cache.unwrap();
    assert_eq!((cache.hits, cache.stale, cache.background_refreshes), (1, 1, 1));

    // The request's own directives are the cache's to judge.
    let (status, body) = text(&client, get(uri, Some("no-cache"))).await;
    assert!(!status.hit, "no-cache validates");
    assert_eq!(body, "answer #2");
    let (status, body) = text(&client, get(uri, Some("max-stale=0, min-fresh=3600"))).await;
    assert!(!status.hit, "not fresh enough for this request");
    assert_eq!(body, "answer #3");
    let (status, body) = text(&client, get(uri, None)).await;
    assert!(status.hit);
    assert_eq!(body, "answer #3");
    let cache = optimizer.stats().cache.unwrap();
    assert_eq!((cache.hits, cache.stale), (2, 1), "each request counted once");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// What each path of the differential test's upstream answers with.
const PATHS: [&str; 4] = [
    "max-age=10",
    "max-age=1, stale-while-revalidate=5",
    "no-store",
    "max-age=3, must-revalidate",
];

/// Request directives the differential test sends.
const ASKS: [Option<&str>; 5] = [
    None,
    Some("no-cache"),
    Some("max-age=0"),
    Some("max-stale=5"),
    Some("min-fresh=2"),
];

/// An upstream answering each path with its directives and a body that
/// counts its calls, so that two sides answer alike only while they call
/// upstream alike.
fn counting_upstream()
-> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let calls = Arc::new(AtomicUsize::new(0));
    service_fn(move |request: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let path: usize = request.uri().path()[1..].parse().unwrap();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", PATHS[path])
                    .header("etag", format!("\"{n}\""))
                    .body(Full::new(Bytes::from(format!("call #{n}"))))
                    .unwrap(),
            )
        }
    })
}

/// What a caller sees of one answer: status, body, and whether it was a
/// hit and went forward.
async fn seen<S>(svc: &mut S, request: Request<Full<Bytes>>) -> (u16, Bytes, bool, bool)
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = Response<tower_optimizer::stack::ResponseBody>,
            Error = tower_optimizer::BoxError,
        >,
{
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let status = CacheStatus::from_headers(response.headers()).unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, body, status.hit, status.fwd.is_some())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// The stack, whose edge answers hits, answers every request as the
    /// cache layer alone does over the same upstream, at the same times,
    /// and counts alike.
    #[test]
    fn the_edge_answers_as_the_cache_layer_does(
        steps in proptest::collection::vec((0..PATHS.len(), proptest::bool::ANY, 0..ASKS.len(), 0u64..4), 1..24)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (layer, optimizer) = OptimizerStack::builder()
                .cache(Cache::builder().build().unwrap())
                .monitor(MonitorSettings::default())
                .build::<Full<Bytes>>()
                .unwrap();
            let mut stack = layer.layer(counting_upstream());
            let cache = Cache::builder().build().unwrap();
            let mut alone = tower::ServiceBuilder::new()
                .map_response(|r: Response<_>| r.map(|b: tower_optimizer::body::OptimizerBody<Full<Bytes>>| b.boxed_unsync()))
                .layer(tower_optimizer::cache::CacheLayer::new(cache.clone()))
                .service(counting_upstream());
            for (i, (path, head, ask, wait)) in steps.into_iter().enumerate() {
                let request = || {
                    let mut r = Request::builder().uri(format!("http://api.test/{path}"));
                    if head {
                        r = r.method(http::Method::HEAD);
                    }
                    if let Some(cc) = ASKS[ask] {
                        r = r.header("cache-control", cc);
                    }
                    r.body(Full::default()).unwrap()
                };
                let ours = seen(&mut stack, request()).await;
                let theirs = seen(&mut alone, request()).await;
                assert_eq!(ours, theirs, "step {i}: path {path}, head {head}, {:?}", ASKS[ask]);
                // Background refreshes finish, and time moves on alike.
                tokio::time::sleep(Duration::from_millis(1)).await;
                tokio::time::advance(Duration::from_secs(wait)).await;
            }
            let (ours, theirs) = (optimizer.stats().cache.unwrap(), cache.stats());
            assert_eq!(
                (ours.hits, ours.misses, ours.stale, ours.revalidated, ours.background_refreshes),
                (theirs.hits, theirs.misses, theirs.stale, theirs.revalidated, theirs.background_refreshes)
            );
        });
    }
}
