//! Retries over real HTTP/2: a hyper server on 127.0.0.1 that fails a
//! scripted number of times, the retry policy outside the circuit breaker
//! as the `retry` module documents, on the paused clock (backoff and
//! `Retry-After` waits pass at once; nothing here has a timeout that an
//! early timer could break).
#![cfg(feature = "retry")]

#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{BreakerBody, CircuitBreakerConfig, CircuitBreakerLayer, error::Open};
use tower_optimizer::retry::{BudgetConfig, Methods, RequestRetry, Resent, RetryConfig, RetryPolicy};

use server::{Protocol, serve};

type Client2 = BoxCloneService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// An HTTP/2 server on 127.0.0.1 answering each request with `answer`,
/// given the number of calls before it; counts the calls.
async fn counting_server<F, Fut>(answer: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = answer(seen.fetch_add(1, Ordering::SeqCst), req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    (serve(Protocol::H2c, service).await, calls)
}

/// A server whose first `failures` answers are `status` (with the given
/// `Retry-After`, if any), then 200s carrying the call's number.
async fn failing_server(
    failures: usize,
    status: u16,
    retry_after: Option<&'static str>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    counting_server(move |n, req: Request<Incoming>| async move {
        // The body arrives on every attempt: read it back in the 200.
        let body = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let mut response = Response::builder();
        if n < failures {
            response = response.status(status);
            if let Some(after) = retry_after {
                response = response.header("retry-after", after);
            }
            return response.body(Full::new(Bytes::from_static(b"try later"))).unwrap();
        }
        let text = format!("call {n}: {}", String::from_utf8_lossy(&body));
        response.body(Full::new(Bytes::from(text))).unwrap()
    })
    .await
}

fn h2_client() -> Client2 {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    BoxCloneService::new(client.map_err(BoxError::from))
}

/// The retry policy outside a default breaker, over the HTTP/2 client.
fn stack(
    policy: &RetryPolicy,
    breaker: CircuitBreakerLayer,
) -> BoxCloneService<Request<Full<Bytes>>, Response<BreakerBody<Incoming>>, BoxError> {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(policy.layer())
            .layer(breaker)
            .service(h2_client()),
    )
}

fn request(method: Method, url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn text<B>(response: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Sends `request` once `client` is ready.
async fn send<S>(client: &mut S, request: Request<Full<Bytes>>) -> Result<S::Response, BoxError>
where
    S: Service<Request<Full<Bytes>>, Error = BoxError>,
{
    client.ready().await?.call(request).await
}

/// One GET through `policy`'s retries over an in-process `upstream` (so
/// only the waits move the paused clock): its status and how long it took.
async fn one_get<S>(policy: &RetryPolicy, upstream: S) -> (u16, Duration)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError> + Clone,
{
    let mut client = policy.layer().layer(upstream);
    let start = Instant::now();
    let response = send(&mut client, request(Method::GET, "http://api.test/", ""))
        .await
        .unwrap();
    (response.status().as_u16(), start.elapsed())
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(CircuitBreakerConfig::default())
}

#[tokio::test(start_paused = true)]
async fn unavailable_twice_then_answered_with_the_body_sent_each_time() {
    let (addr, calls) = failing_server(2, 503, None).await;
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut client = stack(&policy, breaker());
    let response = send(
        &mut client,
        request(Method::PUT, &format!("http://{addr}/item"), "payload"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(Resent::of(&response), 2, "sent twice again");
    assert_eq!(text(response).await, "call 2: payload", "the third call, with the body");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = policy.stats();
    assert_eq!((stats.requests, stats.retries, stats.attempts_exhausted), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn the_last_failure_is_passed_on_after_max_attempts() {
    let (addr, calls) = failing_server(10, 502, None).await;
    let policy = RetryPolicy::new(RetryConfig::builder().max_attempts(4).build().unwrap());
    let mut client = stack(&policy, breaker());
    let response = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(Resent::of(&response), 3, "the last failure says how often it was tried");
    assert_eq!(text(response).await, "try later");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(policy.stats().attempts_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_repeated_unless_every_method_is_allowed() {
    let (addr, calls) = failing_server(1, 503, None).await;
    let url = format!("http://{addr}/orders");
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut client = stack(&policy, breaker());
    let response = send(&mut client, request(Method::POST, &url, "order")).await.unwrap();
    assert_eq!(
        response.status(),
        503,
        "a POST that reached the server is not sent twice"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (addr, calls) = failing_server(1, 503, None).await;
    let policy = RetryPolicy::new(RetryConfig::builder().methods(Methods::All).build().unwrap());
    let mut client = stack(&policy, breaker());
    let url = format!("http://{addr}/orders");
    let response = send(&mut client, request(Method::POST, &url, "order")).await.unwrap();
    assert_eq!(text(response).await, "call 1: order");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_caller_decides_per_request() {
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut client = stack(&policy, breaker());
    // A POST with an idempotency key is repeated: the server answers a
    // repeat with its first answer.
    let (addr, calls) = failing_server(1, 503, None).await;
    let mut keyed = request(Method::POST, &format!("http://{addr}/payments"), "pay");
    keyed.headers_mut().insert("idempotency-key", "\"a1\"".parse().unwrap());
    let response = send(&mut client, keyed).await.unwrap();
    assert_eq!(text(response).await, "call 1: pay");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // So is one the caller marks.
    let (addr, calls) = failing_server(1, 503, None).await;
    let mut marked = request(Method::PATCH, &format!("http://{addr}/items/1"), "patch");
    marked.extensions_mut().insert(RequestRetry::Idempotent);
    let response = send(&mut client, marked).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A GET marked `Never` is sent once.
    let (addr, calls) = failing_server(1, 503, None).await;
    let mut once = request(Method::GET, &format!("http://{addr}/"), "");
    once.extensions_mut().insert(RequestRetry::Never);
    let response = send(&mut client, once).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(policy.stats().requests, 2, "the request sent once was not one to retry");
}

/// A server's `Retry-After` beyond any point in time, under a cap set with
/// no bound: the retry would start past the deadline, so the answer is
/// passed on at once (adding the wait to the clock overflowed before).
#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_any_time_is_past_the_deadline() {
    let upstream = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .status(503)
                .header("retry-after", u64::MAX.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    });
    let config = RetryConfig::builder()
        .max_retry_after(Duration::MAX)
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let policy = RetryPolicy::new(config);
    let (status, took) = one_get(&policy, upstream).await;
    assert_eq!(status, 503);
    assert_eq!(took, Duration::ZERO);
    assert_eq!(policy.stats().deadline_exceeded, 1);
}

// Needs the stack (hyper-util's client, the builder).
#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_whatever_the_method() {
    // A port that was just bound and let go: connections to it are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let policy = RetryPolicy::new(RetryConfig::default());
    // No breaker here: three refusals in a row are what this test counts.
    // And hyper-util's client as it is: the policy takes its error type.
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut client = ServiceBuilder::new().layer(policy.layer()).service(client);
    let request = request(Method::POST, &format!("http://{addr}/orders"), "order");
    let error: hyper_util::client::legacy::Error = client.ready().await.unwrap().call(request).await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(tower_optimizer_sources(&error).contains("onnection refused"), "{error}");
    let stats = policy.stats();
    assert_eq!(
        (stats.retries, stats.attempts_exhausted),
        (2, 1),
        "three attempts: {stats:?}"
    );
}

#[cfg(feature = "stack")]
fn tower_optimizer_sources(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A raw HTTP/2 server that resets its first `refusals` streams with
/// `REFUSED_STREAM` (what a server at its stream limit does) and answers
/// the others; counts the streams.
async fn refusing_server(refusals: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                // Accepting drives the connection: the answers go out while
                // it waits for the next stream.
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    if n < refusals {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let head = Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_data(Bytes::from(format!("stream {n}")), true);
                    }
                }
            });
        }
    });
    (addr, streams)
}

#[tokio::test(start_paused = true)]
async fn a_refused_stream_is_retried_whatever_the_method() {
    let (addr, streams) = refusing_server(1).await;
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut client = stack(&policy, breaker());
    let response = send(
        &mut client,
        request(Method::POST, &format!("http://{addr}/orders"), "order"),
    )
    .await
    .unwrap();
    assert_eq!(
        text(response).await,
        "stream 1",
        "the server processed nothing the first time"
    );
    assert_eq!(streams.load(Ordering::SeqCst), 2);
    assert_eq!(policy.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_for_and_a_long_one_is_passed_on() {
    let (addr, calls) = failing_server(1, 503, Some("3")).await;
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut client = stack(&policy, breaker());
    let start = Instant::now();
    let response = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (addr, calls) = failing_server(1, 429, Some("60")).await;
    let response = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        429,
        "60 s is past max_retry_after: the caller decides"
    );
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_ends_the_retries() {
    let (addr, calls) = failing_server(100, 503, None).await;
    let policy = RetryPolicy::new(RetryConfig::builder().max_attempts(6).build().unwrap());
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(2))
        .build()
        .unwrap();
    let mut client = stack(&policy, CircuitBreakerLayer::new(config));
    let error = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
        .await
        .unwrap_err();
    let open = error.downcast_ref::<Open>().expect("the breaker's error");
    assert_eq!(open.key(), format!("http://{addr}"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "two 503s opened the circuit; nothing more was sent"
    );
    let stats = policy.stats();
    assert_eq!(
        (
            stats.requests,
            stats.retries,
            stats.attempts_exhausted,
            stats.budget_exhausted
        ),
        (1, 2, 0, 0)
    );

    // While it is open, requests fail at once, unretried, and do not count
    // towards the budget: they never reached the host.
    for _ in 0..10 {
        let error = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
            .await
            .unwrap_err();
        assert!(error.downcast_ref::<Open>().is_some(), "{error}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(policy.stats(), stats);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_requests() {
    let (addr, calls) = failing_server(1_000, 503, None).await;
    // One retry per ten requests, no reserve.
    let budget = BudgetConfig {
        ratio: 0.1,
        min_per_second: 0,
        window: Duration::from_secs(10),
    };
    let policy = RetryPolicy::new(RetryConfig::builder().budget(budget).build().unwrap());
    // A breaker that never opens, so that only the budget limits.
    let config = CircuitBreakerConfig::builder()
        .failure_rate(None)
        .consecutive_failures(Some(u32::MAX))
        .build()
        .unwrap();
    let mut client = stack(&policy, CircuitBreakerLayer::new(config));
    // The test's runtime polls on this thread: the metrics land here.
    let recorder = recorder::Recorder::default();
    let counts = recorder.counts.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    for _ in 0..20 {
        let response = send(&mut client, request(Method::GET, &format!("http://{addr}/"), ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }
    let stats = policy.stats();
    assert_eq!(stats.requests, 20);
    assert_eq!(stats.retries, 2, "10 % of 20 requests: {stats:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 22);
    assert!(stats.budget_exhausted >= 17, "{stats:?}");
    let counted = |name: &str, labels: &str| -> u64 {
        let counts = counts.lock().unwrap();
        counts
            .iter()
            .filter(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| v)
            .sum()
    };
    assert_eq!(counted("tower_optimizer.retry.retries", ""), stats.retries);
    assert_eq!(
        counted("tower_optimizer.retry.given_up", "why=budget"),
        stats.budget_exhausted
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_of_an_unknown_type_is_sent_once_unless_registered() {
    #[derive(Clone)]
    struct Payload(Bytes);
    impl http_body::Body for Payload {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            let data = std::mem::take(&mut self.0);
            std::task::Poll::Ready((!data.is_empty()).then(|| Ok(http_body::Frame::data(data))))
        }
    }
    let run = |policy: RetryPolicy| async move {
        let (addr, calls) = failing_server(1, 503, None).await;
        let client: Client<HttpConnector, Payload> =
            Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        let mut client = policy.layer().layer(client.map_err(BoxError::from));
        let request = Request::get(format!("http://{addr}/"))
            .body(Payload(Bytes::from_static(b"mine")))
            .unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        (response.status(), calls.load(Ordering::SeqCst))
    };
    let unknown = RetryPolicy::new(RetryConfig::default());
    assert_eq!(run(unknown).await, (http::StatusCode::SERVICE_UNAVAILABLE, 1));
    let registered = RetryPolicy::new(RetryConfig::builder().replay_body::<Payload>().build().unwrap());
    assert_eq!(run(registered).await, (http::StatusCode::OK, 2));
}

// Needs the stack (hyper-util's client, the builder).
#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn in_the_stack_between_the_cache_and_the_breaker() {
    use tower_optimizer::cache::{Cache, CacheStatus};
    use tower_optimizer::stack::{MonitorSettings, OptimizerStack, RETRIES_GAUGE, RETRY_BUDGET_EXHAUSTED_GAUGE};

    // The first answer is a 503, then a cacheable 200.
    let (addr, calls) = counting_server(|n, _| async move {
        Response::builder()
            .status(if n == 0 { 503 } else { 200 })
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!("call {n}"))))
            .unwrap()
    })
    .await;
    let policy = RetryPolicy::new(RetryConfig::default());
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .retry(policy.clone())
        .circuit_breaker(CircuitBreakerConfig::default())
        .monitor(MonitorSettings::default())
        .build_http2_client()
        .unwrap();
    for expected in ["miss", "hit"] {
        let request = Request::get(format!("http://{addr}/a")).body(Full::default()).unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let status = CacheStatus::from_headers(response.headers()).unwrap();
        assert_eq!(status.hit, expected == "hit", "{expected}: {status:?}");
        // The miss came after one retry; the hit was sent nowhere.
        assert_eq!(Resent::of(&response), u32::from(expected == "miss"), "{expected}");
        assert_eq!(text(response).await, "call 1", "the retried answer, stored");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the 503 and its retry; the hit went nowhere"
    );
    let stats = optimizer.stats();
    let retry = stats.retry.expect("retries are configured");
    assert_eq!((retry.requests, retry.retries), (1, 1), "the hit is not counted");
    assert_eq!(retry, policy.stats());
    let breaker = &stats.breakers[0];
    assert_eq!(breaker.figures.calls, 2, "each attempt passed the breaker");
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["retry"]["retries"], 1, "{json}");
    // The monitor samples them too, for `/stats` and alert rules.
    let sample = optimizer.monitor().unwrap().sample_now();
    assert_eq!(sample.gauges.get(RETRIES_GAUGE), Some(&1.0), "{:?}", sample.gauges);
    assert_eq!(sample.gauges.get(RETRY_BUDGET_EXHAUSTED_GAUGE), Some(&0.0));
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_the_deadline() {
    // In process, so that only the waits move the clock: a 503 asking for
    // a second each time, for ever.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(503)
                    .header("retry-after", "1")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    });
    let config = RetryConfig::builder()
        .max_attempts(10)
        .deadline(Duration::from_millis(2_500))
        .build()
        .unwrap();
    let policy = RetryPolicy::new(config);
    let (status, took) = one_get(&policy, upstream).await;
    assert_eq!(status, 503);
    // Tries at 0 s, 1 s and 2 s; one more would start at 3 s.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(took, Duration::from_secs(2));
    let stats = policy.stats();
    assert_eq!(
        (stats.retries, stats.deadline_exceeded, stats.attempts_exhausted),
        (2, 1, 0)
    );
}

// Needs the stack (hyper-util's client, the builder).
#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn a_retry_under_a_concurrency_limit_of_one_gets_the_slot_back() {
    use tower_optimizer::stack::{OptimizerStack, Overload};

    let (addr, calls) = failing_server(1, 503, None).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .retry(RetryPolicy::default())
        .concurrency_limit(1, Overload::Wait)
        .build_http2_client()
        .unwrap();
    // The 503's body holds the one slot until it is dropped: the retry
    // waits for it, so a response kept alive would deadlock here.
    let request = Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client.oneshot(request))
        .await
        .expect("the retry got the slot")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// Needs the stack (the builder, its cache).
#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn in_the_stack_a_stale_answer_is_not_kept_waiting_for_retries() {
    use tower_optimizer::cache::{Cache, CacheStatus};
    use tower_optimizer::stack::OptimizerStack;

    // Fresh for a second, then only 503s asking for a 4 s wait.
    let (addr, calls) = counting_server(|n, _| async move {
        let response = if n == 0 {
            Response::builder().header("cache-control", "max-age=1")
        } else {
            Response::builder().status(503).header("retry-after", "4")
        };
        response.body(Full::new(Bytes::from(format!("call {n}")))).unwrap()
    })
    .await;
    let policy = RetryPolicy::default();
    let (client, _optimizer) = OptimizerStack::builder()
        .cache(
            Cache::builder()
                .stale_if_error(Duration::from_secs(300))
                .build()
                .unwrap(),
        )
        .retry(policy.clone())
        .circuit_breaker(CircuitBreakerConfig::default())
        .build_http2_client()
        .unwrap();
    let get = || Request::get(format!("http://{addr}/a")).body(Full::default()).unwrap();
    let first = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(text(first).await, "call 0");
    tokio::time::advance(Duration::from_secs(2)).await;

    // Stale now, and the upstream fails: the cache answers with its copy
    // at once instead of after a 4 s retry.
    let start = Instant::now();
    let stale = client.clone().oneshot(get()).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(stale.status(), 200);
    let status = CacheStatus::from_headers(stale.headers()).unwrap();
    assert_eq!(status.detail, Some("stale-if-error"), "{status:?}");
    assert_eq!(text(stale).await, "call 0");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one try, no retry");
    let stats = policy.stats();
    assert_eq!((stats.retries, stats.answered_otherwise), (0, 1), "{stats:?}");

    // A URI with nothing stored is retried as before.
    let other = Request::get(format!("http://{addr}/b")).body(Full::default()).unwrap();
    let response = client.clone().oneshot(other).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(policy.stats().retries, 2);
}

/// An idempotent request whose own body fails is sent once: a retry would
/// fail the same way, and the host is not at fault.
#[tokio::test(start_paused = true)]
async fn the_callers_own_failure_is_not_retried() {
    let (addr, calls) = counting_server(|_, req: Request<Incoming>| async move {
        let status = if req.into_body().collect().await.is_ok() {
            200
        } else {
            400
        };
        Response::builder().status(status).body(Full::default()).unwrap()
    })
    .await;
    let config = RetryConfig::builder().replay_body::<server::Upload>().build().unwrap();
    let policy = RetryPolicy::new(config);
    let client: Client<HttpConnector, server::Upload> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut svc = ServiceBuilder::new()
        .layer(policy.layer())
        .layer(breaker())
        .service(client.map_err(BoxError::from));
    let request = Request::put(format!("http://{addr}/file"))
        .body(server::Upload::new(true))
        .unwrap();
    let error = svc.ready().await.unwrap().call(request).await.unwrap_err();
    assert!(error.downcast_ref::<Open>().is_none(), "{error}");
    // The server may see the stream or not, as the reset overtakes it;
    // the policy says whether it was sent again.
    assert!(calls.load(Ordering::SeqCst) <= 1, "sent once: {error}");
    let stats = policy.stats();
    assert_eq!((stats.retries, stats.attempts_exhausted), (0, 0), "{stats:?}");
}
