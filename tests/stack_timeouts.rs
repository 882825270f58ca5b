//! A caller's own time limit through the whole stack (`RequestTimeout`):
//! shorter or longer than the stack's, with retries, and over real
//! HTTP/2, and what the breaker makes of a call it cut.
#![cfg(feature = "stack")]

#[path = "support/server.rs"]
mod server;
#[path = "support/stack_helpers.rs"]
mod stack_helpers;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use stack_helpers::*;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::cache::Cache;
use tower_optimizer::retry::{RetryConfig, RetryPolicy};
use tower_optimizer::stack::{OptimizerStack, RequestTimeout};

/// An in-process upstream (no sockets, so the paused clock is exact) that
/// answers each call after `delay`, `no-store`, counting its calls.
fn slow_upstream(
    delay: Duration,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(respond(200, "no-store", "slow"))
        }
    })
}

fn with_timeout(limit: Duration) -> Request<Full<Bytes>> {
    let mut request = Request::get("http://api.test/slow").body(Full::default()).unwrap();
    request.extensions_mut().insert(RequestTimeout(limit));
    request
}

fn is_elapsed(error: &BoxError) -> bool {
    std::iter::successors(Some(&**error as &(dyn std::error::Error + 'static)), |e| e.source())
        .any(<dyn std::error::Error>::is::<tower::timeout::error::Elapsed>)
}

/// A caller's limit shorter than the stack's ends the request when it
/// passes, with tower's `Elapsed`, and the breaker counts the cut call as
/// cancelled: five of them in a row leave a breaker that opens on three
/// failures closed. The stack's own limit still counts as the host's.
#[tokio::test(start_paused = true)]
async fn a_callers_shorter_limit_ends_the_request_and_the_breaker_ignores_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, optimizer) = OptimizerStack::builder()
        .circuit_breaker(opens_on_third_failure())
        .timeout(Duration::from_secs(10))
        .build::<Full<Bytes>>()
        .unwrap();
    let client = tower::Layer::layer(&layer, slow_upstream(Duration::from_secs(2), calls.clone()));
    for _ in 0..5 {
        let start = tokio::time::Instant::now();
        let error = client
            .clone()
            .oneshot(with_timeout(Duration::from_millis(100)))
            .await
            .unwrap_err();
        assert!(is_elapsed(&error), "{error}");
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5, "each call went upstream");
    let breakers = optimizer.breakers().unwrap().snapshot();
    assert_eq!(breakers[0].figures.failures, 0, "{breakers:?}");
    assert_eq!(breakers[0].state, tower_optimizer::circuit_breaker::State::Closed);
    // Without a limit of its own the call takes its 2 s and succeeds.
    let answer = client
        .clone()
        .oneshot(Request::get("http://api.test/slow").body(Full::default()).unwrap());
    assert_eq!(answer.await.unwrap().status(), 200);
    // The stack's limit passing is the host's failure.
    let (layer, optimizer) = OptimizerStack::builder()
        .circuit_breaker(opens_on_third_failure())
        .timeout(Duration::from_secs(1))
        .build::<Full<Bytes>>()
        .unwrap();
    let client = tower::Layer::layer(&layer, slow_upstream(Duration::from_secs(2), calls.clone()));
    let error = client.oneshot(Request::get("http://api.test/slow").body(Full::default()).unwrap());
    assert!(is_elapsed(&error.await.unwrap_err()));
    assert_eq!(optimizer.breakers().unwrap().snapshot()[0].figures.failures, 1);
}

/// A caller's limit longer than the stack's lengthens it for that request;
/// passing it still counts as the host's failure.
#[tokio::test(start_paused = true)]
async fn a_callers_longer_limit_lengthens_the_stacks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, optimizer) = OptimizerStack::builder()
        .circuit_breaker(opens_on_third_failure())
        .timeout(Duration::from_secs(1))
        .build::<Full<Bytes>>()
        .unwrap();
    let client = tower::Layer::layer(&layer, slow_upstream(Duration::from_secs(2), calls));
    let answer = client
        .clone()
        .oneshot(with_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "2 s is within the caller's 5 s");
    // Its success counts once its body is done with.
    drop(answer);
    let start = tokio::time::Instant::now();
    let error = client
        .oneshot(with_timeout(Duration::from_millis(1500)))
        .await
        .unwrap_err();
    assert!(
        is_elapsed(&error) && start.elapsed() == Duration::from_millis(1500),
        "{error}"
    );
    let figures = optimizer.breakers().unwrap().snapshot()[0].figures;
    assert_eq!((figures.calls, figures.failures), (2, 1), "{figures:?}");
}

/// With retries, a caller's limit bounds the request as a whole: the
/// attempts and the waits between them.
#[tokio::test(start_paused = true)]
async fn a_callers_limit_bounds_every_attempt_together() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let failing = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, Infallible>(respond(503, "no-store", "busy"))
        }
    });
    let (layer, _optimizer) = OptimizerStack::builder()
        .retry(RetryPolicy::new(
            RetryConfig::builder().max_attempts(5).build().unwrap(),
        ))
        .build::<Full<Bytes>>()
        .unwrap();
    let client = tower::Layer::layer(&layer, failing);
    let start = tokio::time::Instant::now();
    let error = client
        .clone()
        .oneshot(with_timeout(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(is_elapsed(&error), "{error}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let tried = calls.load(Ordering::SeqCst);
    assert!((2..5).contains(&tried), "cut short after {tried} attempts");
    // Without it, every attempt runs and the last 503 is the answer.
    let answer = client.oneshot(Request::get("http://api.test/slow").body(Full::default()).unwrap());
    assert_eq!(answer.await.unwrap().status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), tried + 5);
}

/// Over real HTTP/2: a caller's limit that passes before the server
/// answers fails the request at once and leaves the breaker as it was;
/// the held request's stream is reset, and the next one is answered.
#[tokio::test]
async fn a_callers_limit_over_real_http2() {
    let release = Arc::new(Notify::new());
    let (addr, hits) = server(Arc::new(|_, _| respond(200, "no-store", "ok")), release.clone()).await;
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(opens_on_third_failure())
        .timeout(Duration::from_secs(30))
        .build_http2_client()
        .unwrap();
    for _ in 0..3 {
        let mut request = Request::get(format!("http://{addr}/hold"))
            .body(Full::default())
            .unwrap();
        request.extensions_mut().insert(RequestTimeout(Duration::ZERO));
        let error = client.clone().oneshot(request).await.unwrap_err();
        assert!(is_elapsed(&error), "{error}");
    }
    let breakers = optimizer.breakers().unwrap().snapshot();
    assert_eq!(
        (breakers[0].figures.failures, breakers[0].state),
        (0, tower_optimizer::circuit_breaker::State::Closed)
    );
    let (status, _, body) = send(&client, Method::GET, &format!("http://{addr}/")).await.unwrap();
    assert_eq!((status, body.as_ref()), (200, b"ok".as_ref()));
    assert!(hits.load(Ordering::SeqCst) >= 1);
    release.notify_waiters();
}
