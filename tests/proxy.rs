//! The proxy example passes requests through intact: methods, large and
//! streamed bodies, headers, status codes; and answers 502 or 504 when the
//! upstream fails, 503 with `Retry-After` once its circuit is open.
#![cfg(feature = "stack")]

#[path = "support/server.rs"]
mod server;

#[path = "../examples/proxy.rs"]
mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_optimizer::cache::CacheMode;
use tower_optimizer::stack::Protocol;

/// Calls of `/cached`, the one cacheable path.
static CACHED_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Calls of `/flaky-once`, which answers 503 the first time.
static FLAKY_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Echoes the method, path, a custom header and the body back, with a
/// hop-by-hop header the proxy must drop; `?status=N` picks the status.
/// `/cached` answers `v1`, fresh for a minute, with `ETag: "e1"`.
async fn echo_upstream() -> SocketAddr {
    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut status: u16 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("status="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        if req.uri().path() == "/flaky-once" && FLAKY_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            status = 503;
        }
        let method = req.method().to_string();
        let custom = req.headers().get("x-custom").cloned();
        let saw_hop = req.headers().contains_key("x-hop-request");
        let via = req.headers().get("via").cloned();
        let te = req.headers().get("te").cloned();
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body = if path == "/big" {
            Bytes::from(vec![b'z'; 1 << 20])
        } else {
            body
        };
        if path == "/cached" {
            CACHED_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let res = Response::builder()
                .header("cache-control", "max-age=60")
                .header("etag", "\"e1\"")
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(b"v1")))
                .unwrap();
            return Ok::<_, Infallible>(res);
        }
        let mut res = Response::builder()
            .status(status)
            .header("x-method", method)
            .header("x-saw-hop", saw_hop.to_string())
            .header("connection", "x-hop-response")
            .header("x-hop-response", "1");
        if let Some(custom) = custom {
            res = res.header("x-custom-echo", custom);
        }
        if let Some(via) = via {
            res = res.header("x-via-echo", via);
        }
        if let Some(te) = te {
            res = res.header("x-te-echo", te);
        }
        Ok::<_, Infallible>(res.body(Full::new(body)).unwrap())
    });
    server::serve(server::Protocol::Auto, svc).await
}

async fn start_proxy(upstream: &str, timeout: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = proxy::proxy_stack(Protocol::Http1, CacheMode::Shared, timeout).unwrap();
    proxy::serve(listener, client, upstream.parse().unwrap());
    addr
}

async fn call(proxy: SocketAddr, method: Method, path: &str, body: Bytes, headers: &[(&str, &str)]) -> Response<Bytes> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(format!("http://{proxy}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = client.request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn requests_pass_through_intact() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_secs(30)).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "PURGE"] {
        let res = call(
            proxy,
            Method::from_bytes(method.as_bytes()).unwrap(),
            "/m",
            Bytes::new(),
            &[],
        )
        .await;
        assert_eq!(res.headers()["x-method"], method);
    }
    let upload = Bytes::from((0..2_000_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let res = call(
        proxy,
        Method::POST,
        "/upload",
        upload.clone(),
        &[
            ("x-custom", "kept"),
            ("connection", "x-hop-request"),
            ("x-hop-request", "1"),
        ],
    )
    .await;
    assert_eq!(res.body(), &upload, "a 2 MB request body streamed through and back");
    assert_eq!(res.headers()["x-custom-echo"], "kept");
    assert_eq!(
        res.headers()["x-saw-hop"],
        "false",
        "hop-by-hop request headers are dropped"
    );
    assert!(
        res.headers().get("x-hop-response").is_none(),
        "hop-by-hop response headers are dropped"
    );
    assert!(res.headers()["via"].to_str().unwrap().ends_with("tower-optimizer"));
    assert_eq!(
        res.headers()["x-via-echo"],
        "1.1 tower-optimizer",
        "the forwarded request says so too"
    );
    assert!(res.headers().get("x-te-echo").is_none());
    // `TE: trailers` (a gRPC client's) goes on, other codings do not.
    let te = call(
        proxy,
        Method::GET,
        "/m",
        Bytes::new(),
        &[("te", "gzip, trailers;q=1"), ("connection", "te")],
    )
    .await;
    assert_eq!(te.headers()["x-te-echo"], "trailers");
    let te = call(
        proxy,
        Method::GET,
        "/m",
        Bytes::new(),
        &[("te", "gzip"), ("connection", "te")],
    )
    .await;
    assert!(te.headers().get("x-te-echo").is_none());
    let big = call(proxy, Method::GET, "/big", Bytes::new(), &[]).await;
    assert_eq!(big.body().len(), 1 << 20);
    for status in [201, 304, 404, 418, 503] {
        let res = call(proxy, Method::GET, &format!("/s?status={status}"), Bytes::new(), &[]).await;
        assert_eq!(res.status().as_u16(), status);
    }
}

#[tokio::test]
async fn a_browser_revalidating_its_copy_gets_a_304_from_the_cache() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_secs(30)).await;
    let first = call(proxy, Method::GET, "/cached", Bytes::new(), &[]).await;
    assert_eq!((first.status().as_u16(), first.body().as_ref()), (200, &b"v1"[..]));
    let again = call(
        proxy,
        Method::GET,
        "/cached",
        Bytes::new(),
        &[("if-none-match", "\"e1\"")],
    )
    .await;
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.body().is_empty());
    assert_eq!(again.headers()["etag"], "\"e1\"");
    let status = again.headers()["cache-status"].to_str().unwrap();
    assert!(
        status.starts_with("tower-optimizer; hit;") && status.ends_with("detail=not-modified"),
        "{status}"
    );
    let changed = call(
        proxy,
        Method::GET,
        "/cached",
        Bytes::new(),
        &[("if-none-match", "\"e0\"")],
    )
    .await;
    assert_eq!((changed.status().as_u16(), changed.body().as_ref()), (200, &b"v1"[..]));
    assert_eq!(
        CACHED_CALLS.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream call for the three"
    );
}

// Paused clock: the proxy's 200 ms upstream timeout fires while the
// runtime waits on the silent upstream, with no real waiting.
#[tokio::test(start_paused = true)]
async fn upstream_failures_become_502_and_504() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_millis(200)).await;
    let res = call(proxy, Method::GET, "/slow", Bytes::new(), &[]).await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.body(), "upstream timed out\n");
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = start_proxy(&format!("http://{closed}"), Duration::from_secs(30)).await;
    let res = call(proxy, Method::GET, "/", Bytes::new(), &[]).await;
    assert_eq!(res.status(), 502);
    let reason = std::str::from_utf8(res.body()).unwrap();
    assert!(reason.starts_with("upstream failed"), "{reason}");
    // The error's sources too: what actually went wrong.
    assert!(reason.to_lowercase().contains("connection refused"), "{reason}");
}

/// An upstream that answers only 503 opens its circuit; from then on the
/// proxy answers 503 itself, with `Retry-After`, and the upstream hears no
/// more. (Real time: nothing here waits, and the circuit stays open for
/// 10 s, far longer than the test.)
#[tokio::test]
async fn an_open_circuit_becomes_503_with_retry_after() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_secs(30)).await;
    let mut passed = 0;
    let mut refused = Vec::new();
    for _ in 0..40 {
        let res = call(proxy, Method::GET, "/down?status=503", Bytes::new(), &[]).await;
        assert_eq!(res.status(), 503);
        match res.headers().get("retry-after") {
            // The upstream's own 503, passed through before the circuit opened.
            None => {
                assert!(refused.is_empty(), "the upstream was reached after the circuit opened");
                assert_eq!(res.headers()["x-method"], "GET");
                passed += 1;
            }
            Some(retry) => refused.push((retry.to_str().unwrap().parse::<u64>().unwrap(), res)),
        }
    }
    assert!(
        (1..=20).contains(&passed),
        "a host answering only failures is cut off within 20 calls ({passed})"
    );
    let (secs, res) = &refused[0];
    assert!((1..=10).contains(secs), "the first open period is 10 s: {secs}");
    let text = std::str::from_utf8(res.body()).unwrap();
    assert!(text.starts_with("circuit open for http://127.0.0.1:"), "{text}");
    assert!(!res.headers().contains_key("x-method"), "the proxy answered itself");
}

/// With retries in its stack (`[retry]` in a `--config` file), the proxy
/// resends a bodiless request that met a 503: the streamed body of a
/// forwarded `GET` is empty, and is replayed as empty. A `PUT` with content
/// cannot be replayed from a stream, and is passed on as it came back.
#[tokio::test(start_paused = true)]
async fn with_retries_a_bodiless_request_is_resent() {
    use tower::Layer as _;
    use tower_optimizer::retry::RetryPolicy;
    use tower_optimizer::stack::{ClientConfig, OptimizerStack, http_client};

    let upstream = echo_upstream().await;
    let policy = RetryPolicy::default();
    let (layer, _optimizer) = OptimizerStack::builder()
        .circuit_breaker(tower_optimizer::circuit_breaker::CircuitBreakerConfig::default())
        .retry(policy.clone())
        .build::<proxy::ProxyBody>()
        .unwrap();
    let client = layer.layer(http_client::<proxy::ProxyBody>(&ClientConfig {
        protocol: Protocol::Http1,
        ..ClientConfig::default()
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    proxy::serve(listener, client, format!("http://{upstream}").parse().unwrap());

    let res = call(proxy, Method::GET, "/flaky-once", Bytes::new(), &[]).await;
    assert_eq!(res.status(), 200, "retried past the first 503");
    assert_eq!(res.headers()["x-method"], "GET");
    assert_eq!(FLAKY_CALLS.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(policy.stats().retries, 1);

    let res = call(
        proxy,
        Method::PUT,
        "/put?status=503",
        Bytes::from_static(b"content"),
        &[],
    )
    .await;
    assert_eq!(res.status(), 503, "a streamed body with content is sent once");
    assert_eq!(res.body().as_ref(), b"content");
    assert_eq!(policy.stats().retries, 1);
}

/// A client that never finishes its request's head is cut off after
/// `HEADER_READ_TIMEOUT`, and nothing reaches the upstream.
#[tokio::test(start_paused = true)]
async fn a_request_head_never_finished_is_cut_off() {
    use tower_optimizer::monitor::HEADER_READ_TIMEOUT;

    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_secs(30)).await;
    let answer = server::slow_head_is_cut_off(proxy, b"POST /m HTTP/1.1\r\nHost: proxy\r\n", HEADER_READ_TIMEOUT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("x-method"), "{answer}");
}

/// An HTTP/2 client that goes silent (the preface and its SETTINGS, then
/// nothing: no answer to pings) is pinged after `KEEP_ALIVE_INTERVAL` and
/// its connection closed once `KEEP_ALIVE_TIMEOUT` more has passed.
#[tokio::test(start_paused = true)]
async fn a_silent_http2_client_is_pinged_then_closed() {
    use tower_optimizer::monitor::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};

    let upstream = echo_upstream().await;
    let proxy = start_proxy(&format!("http://{upstream}"), Duration::from_secs(30)).await;
    let silence = KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT;
    let bytes = server::slow_head_is_cut_off(proxy, server::SILENT_H2_HELLO, silence).await;
    let types = server::frame_types(&bytes);
    assert!(types.contains(&6), "a PING before closing: frame types {types:?}");
}
