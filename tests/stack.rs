//! The whole stack end to end over real h2c servers on 127.0.0.1.
#![cfg(feature = "stack")]

#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/server.rs"]
mod server;
#[path = "support/stack_helpers.rs"]
mod stack_helpers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use server::{Protocol, serve};
use stack_helpers::*;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_optimizer::cache::{Cache, RequestCacheMode};
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack, Overload, ShuttingDown, WhenOpen};

// Real sockets on the real clock (a paused clock would fire the coalescing
// lock timeout while the runtime waits on sockets); nothing here sleeps.
#[tokio::test]
async fn caching_coalescing_invalidation_warm_up_and_draining_shutdown() {
    let release = Arc::new(Notify::new());
    let handler: Handler = Arc::new(|req, n| {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, _) => Response::builder()
                .header("cache-control", "max-age=600")
                .header("cache-groups", "\"team\"")
                .body(Full::new(Bytes::from(format!("{path} #{n}"))))
                .unwrap(),
            (_, "/groups") => Response::builder()
                .status(204)
                .header("cache-group-invalidation", "\"team\"")
                .body(Full::default())
                .unwrap(),
            _ => respond(204, "no-store", ""),
        }
    });
    let (addr, hits) = server(handler, release.clone()).await;
    let base = format!("http://{addr}");
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(CircuitBreakerConfig::default())
        .timeout(Duration::from_secs(30))
        .warm_up([format!("{base}/warm"), format!("{base}/also-warm")])
        .build_http2_client()
        .unwrap();
    let started = optimizer.start().await.unwrap();
    assert_eq!((started.warmed, started.warm_up_failures.len()), (2, 0));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let (_, status, _) = send(&client, Method::GET, &format!("{base}/warm")).await.unwrap();
    assert!(status.unwrap().hit, "warmed into the cache");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "a hit makes no upstream call");

    // 32 concurrent misses: one upstream request.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/hot"));
            tokio::spawn(async move { send(&client, Method::GET, &url).await.unwrap().2 })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // An unsafe method invalidates its target; a Cache-Group-Invalidation
    // response invalidates the group on the same origin.
    send(&client, Method::PUT, &format!("{base}/hot")).await.unwrap();
    let (_, status, _) = send(&client, Method::GET, &format!("{base}/hot")).await.unwrap();
    assert!(!status.unwrap().hit, "PUT invalidated it");
    send(&client, Method::GET, &format!("{base}/warm")).await.unwrap();
    send(&client, Method::POST, &format!("{base}/groups")).await.unwrap();
    let (_, status, _) = send(&client, Method::GET, &format!("{base}/warm")).await.unwrap();
    assert!(!status.unwrap().hit, "the group was invalidated");

    // Shutdown drains: a held request completes, new ones are refused.
    let held = {
        let (client, url) = (client.clone(), format!("{base}/hold"));
        tokio::spawn(async move { send(&client, Method::GET, &url).await })
    };
    while optimizer.stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    let shutdown = {
        let optimizer = optimizer.clone();
        tokio::spawn(async move { optimizer.shutdown(Duration::from_secs(30)).await })
    };
    while !shutdown.is_finished()
        && send(&client, Method::GET, &format!("{base}/after"))
            .await
            .map_or_else(|e| !e.is::<ShuttingDown>(), |_| true)
    {
        tokio::task::yield_now().await;
    }
    assert!(!shutdown.is_finished(), "shutdown waits for the held request");
    release.notify_waiters();
    assert_eq!(held.await.unwrap().unwrap().0, 200, "the in-flight request completed");
    let last = shutdown.await.unwrap();
    assert_eq!(last.in_flight, 0);
    let cache = last.cache.unwrap();
    assert_eq!(cache.coalesced, 31, "31 of the 32 waited for the first");
}

// Paused clock with real sockets: open periods pass while the runtime idles.
#[tokio::test(start_paused = true)]
async fn storm_opens_the_breaker_stale_and_secondary_failover_then_recovery() {
    let failing = Arc::new(AtomicUsize::new(0));
    let mode = failing.clone();
    let primary: Handler = Arc::new(move |req, _| {
        if mode.load(Ordering::SeqCst) == 1 {
            return respond(503, "no-store", "down");
        }
        match req.uri().path() {
            "/stale-ok" => respond(200, "max-age=1, stale-if-error=3600", "cached"),
            _ => respond(200, "no-store", "primary"),
        }
    });
    let (primary_addr, _) = server(primary, Arc::new(Notify::new())).await;
    let (secondary_addr, secondary_hits) = server(
        Arc::new(|_, _| respond(200, "no-store", "secondary")),
        Arc::new(Notify::new()),
    )
    .await;
    let base = format!("http://{primary_addr}");
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(opens_on_third_failure())
        .secondary_upstream(&format!("http://{secondary_addr}"))
        .build_http2_client()
        .unwrap();
    optimizer.start().await.unwrap();
    assert_eq!(
        send(&client, Method::GET, &format!("{base}/stale-ok")).await.unwrap().2,
        "cached"
    );
    tokio::time::advance(Duration::from_secs(5)).await;

    // A 503 storm: the stale entry answers, the breaker opens.
    failing.store(1, Ordering::SeqCst);
    for _ in 0..3 {
        let (code, status, body) = send(&client, Method::GET, &format!("{base}/stale-ok")).await.unwrap();
        assert_eq!((code, body.as_ref()), (200, b"cached".as_ref()));
        assert_eq!(status.unwrap().detail, Some("stale-if-error"));
    }
    let breakers = optimizer.breakers().unwrap();
    assert_eq!(
        breakers.state(&base),
        Some(tower_optimizer::circuit_breaker::State::Open)
    );
    // Open: stale where the entry allows it, the secondary otherwise.
    let (_, status, body) = send(&client, Method::GET, &format!("{base}/stale-ok")).await.unwrap();
    assert_eq!(
        (status.unwrap().detail, body.as_ref()),
        (Some("stale-if-error"), b"cached".as_ref())
    );
    let (code, _, body) = send(&client, Method::GET, &format!("{base}/fresh-only")).await.unwrap();
    assert_eq!((code, body.as_ref()), (200, b"secondary".as_ref()));
    assert_eq!(secondary_hits.load(Ordering::SeqCst), 1);
    // A reload asks for the network, not for the stale copy: the secondary
    // answers it.
    let mut reload = Request::get(format!("{base}/stale-ok")).body(Full::default()).unwrap();
    reload.extensions_mut().insert(RequestCacheMode::Reload);
    let res = client.clone().oneshot(reload).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "secondary");
    assert_eq!(secondary_hits.load(Ordering::SeqCst), 2);

    // The upstream heals: after the open period, probes close the circuit.
    failing.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    for _ in 0..3 {
        assert_eq!(
            send(&client, Method::GET, &format!("{base}/x")).await.unwrap().2,
            "primary"
        );
    }
    assert_eq!(
        breakers.state(&base),
        Some(tower_optimizer::circuit_breaker::State::Closed)
    );
    drop(optimizer);
    let err = OptimizerStack::builder()
        .secondary_upstream("http://x")
        .build::<Full<Bytes>>()
        .unwrap_err();
    assert_eq!(err.field(), "secondary_upstream");
}

// Real sockets on the real clock; the circuit opens on the third failure
// and stays open for its 10 s first period, far longer than the test.
#[tokio::test]
async fn with_respond_503_an_open_circuit_is_a_503_with_retry_after() {
    let (addr, hits) = server(
        Arc::new(|_, _| respond(503, "no-store", "down")),
        Arc::new(Notify::new()),
    )
    .await;
    let url = format!("http://{addr}/x");
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(opens_on_third_failure())
        .when_open(WhenOpen::Respond503)
        .build_http2_client()
        .unwrap();
    for _ in 0..3 {
        let (code, _, body) = send(&client, Method::GET, &url).await.unwrap();
        assert_eq!((code, body.as_ref()), (503, b"down".as_ref()), "the upstream's own 503");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let res = client
        .clone()
        .oneshot(Request::get(&url).body(Full::default()).unwrap())
        .await
        .expect("a response, not error::Open");
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    assert!(res.into_body().collect().await.unwrap().to_bytes().is_empty());
    assert_eq!(hits.load(Ordering::SeqCst), 3, "answered without the upstream");
    drop(optimizer);
}

#[tokio::test]
async fn configuration_errors_name_the_field() {
    let cases = [
        (
            OptimizerStack::builder()
                .when_open(WhenOpen::Respond503)
                .build::<Full<Bytes>>()
                .unwrap_err(),
            "when_open",
        ),
        (
            OptimizerStack::builder()
                .concurrency_limit(0, Overload::Shed)
                .build::<Full<Bytes>>()
                .unwrap_err(),
            "concurrency_limit",
        ),
        (
            OptimizerStack::builder()
                .warm_up(["/relative"])
                .build::<Full<Bytes>>()
                .unwrap_err(),
            "warm_up[0]",
        ),
        (
            OptimizerStack::builder()
                .admin("nope", None)
                .build::<Full<Bytes>>()
                .unwrap_err(),
            "admin",
        ),
        (
            OptimizerStack::builder()
                .timeout(Duration::ZERO)
                .build::<Full<Bytes>>()
                .unwrap_err(),
            "timeout",
        ),
    ];
    for (err, field) in cases {
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field));
    }
}

/// `OptimizerStats` as JSON: what a caller logs from `stats()` or
/// `shutdown()`, with durations in seconds and per-cause counters keyed
/// by name.
#[tokio::test]
async fn the_stats_serialise_to_readable_json() {
    let cache = Cache::builder().build().unwrap();
    let (layer, optimizer) = OptimizerStack::builder()
        .cache(cache.clone())
        .circuit_breaker(CircuitBreakerConfig::default())
        .monitor(MonitorSettings::default())
        .build::<Full<Bytes>>()
        .unwrap();
    let upstream = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(respond(200, "max-age=60", "hello"))
    });
    let client = tower::Layer::layer(&layer, upstream);
    for _ in 0..2 {
        let request = Request::get("http://api.test/a").body(Full::default()).unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let report = optimizer.invalidator().unwrap().key("http://api.test/a");
    assert_eq!(report.entries, 1);
    optimizer.breakers().unwrap().force_open("http://down.test");

    let json = serde_json::to_value(optimizer.stats()).unwrap();
    let cache_json = &json["cache"];
    assert_eq!(
        (cache_json["hits"].as_u64(), cache_json["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(cache_json["evictions"]["invalidated"], 1, "{cache_json}");
    assert_eq!(cache_json["evictions"]["capacity"], 0);
    assert_eq!(cache_json["invalidations"]["key"], 1, "{cache_json}");
    let breakers = json["breakers"].as_array().unwrap();
    let breaker = |key: &str| {
        breakers
            .iter()
            .find(|b| b["key"] == key)
            .unwrap_or_else(|| panic!("{json}"))
    };
    let up = breaker("http://api.test");
    assert_eq!(up["state"], "closed");
    assert_eq!(up["figures"]["calls"], 1);
    assert!(up["retry_after_seconds"].is_null());
    let down = breaker("http://down.test");
    assert_eq!(down["state"], "forced_open");
    assert_eq!(json["requests"]["overall"]["requests"], 2, "{json}");
    assert_eq!(json["in_flight"], 0);
}

#[tokio::test]
async fn dropping_the_optimizer_stops_its_tasks() {
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .monitor(tower_optimizer::stack::MonitorSettings {
            interval: Duration::from_millis(50),
            ..Default::default()
        })
        .admin("127.0.0.1:0", Some("t"))
        .build_http2_client()
        .unwrap();
    let admin = optimizer.start().await.unwrap().admin.expect("admin bound");
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_ok(),
        "the admin server answers"
    );
    assert!(optimizer.monitor().unwrap().is_running());
    let monitor = optimizer.monitor().unwrap().clone();
    drop(client);
    drop(optimizer);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(admin).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin server stopped with its optimizer"
    );
    // The monitor handle kept here keeps sampling; it stops with its last handle.
    assert!(monitor.is_running());
    drop(monitor);
}

/// A response body fed from a channel: frames as they are sent, its end
/// when the sender is dropped. Without a channel, an empty body.
struct ChannelBody(Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match &mut self.0 {
            Some(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c)))),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Senders of the bodies the streaming server has begun, in request order.
type Tails = Arc<std::sync::Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>>>;

// Real sockets on the real clock, like the first test; nothing sleeps.
#[tokio::test]
async fn shutdown_waits_for_response_bodies_still_streaming() {
    let tails: Tails = Arc::default();
    let senders = tails.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = if req.uri().path() == "/empty" {
            Response::builder().status(204).body(ChannelBody(None))
        } else {
            // The first bytes at once, the rest when the test sends them.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tx.send(Bytes::from_static(b"head-")).unwrap();
            senders.lock().unwrap().push(tx);
            Response::builder()
                .header("cache-control", "no-store")
                .body(ChannelBody(Some(rx)))
        };
        async move { response }
    });
    let addr = serve(Protocol::H2c, svc).await;
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .build_http2_client()
        .unwrap();
    let get = |path: &str| {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        client.clone().oneshot(req)
    };

    // An empty body is over with its head.
    let empty = get("/empty").await.unwrap();
    assert_eq!(empty.status(), 204);
    assert_eq!(optimizer.stats().in_flight, 0, "nothing left to stream");
    // A body dropped unread ends its request.
    let dropped = get("/stream").await.unwrap();
    assert_eq!(optimizer.stats().in_flight, 1, "its body is still streaming");
    drop(dropped);
    assert_eq!(optimizer.stats().in_flight, 0, "dropping the body ends it");

    // A body still streaming holds the shutdown until it ends.
    let mut streaming = get("/stream").await.unwrap();
    let first = streaming.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "head-");
    assert_eq!(optimizer.stats().in_flight, 1);
    let tail = tails.lock().unwrap().pop().unwrap();
    let shutdown = {
        let optimizer = optimizer.clone();
        tokio::spawn(async move { optimizer.shutdown(Duration::from_secs(30)).await })
    };
    // Once new requests are refused, the shutdown is under way.
    while !shutdown.is_finished() && get("/stream").await.map_or_else(|e| !e.is::<ShuttingDown>(), |_| true) {
        tokio::task::yield_now().await;
    }
    assert!(!shutdown.is_finished(), "shutdown waits for the body in flight");
    tail.send(Bytes::from_static(b"tail")).unwrap();
    drop(tail);
    // Bounded: a lost frame fails the test instead of hanging it.
    let bound = Duration::from_secs(10);
    let rest = tokio::time::timeout(bound, streaming.into_body().collect()).await;
    assert_eq!(rest.unwrap().unwrap().to_bytes(), "tail", "the body arrived whole");
    let last = tokio::time::timeout(bound, shutdown)
        .await
        .expect("the drain ended with the body");
    assert_eq!(last.unwrap().in_flight, 0);
}

/// An h2c server whose every answer streams: `head-` at once, the rest
/// when the test sends it through the sender left in `Tails`.
async fn streaming_upstream(tails: &Tails) -> SocketAddr {
    let senders = tails.clone();
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Bytes::from_static(b"head-")).unwrap();
        senders.lock().unwrap().push(tx);
        async move {
            Response::builder()
                .header("cache-control", "no-store")
                .body(ChannelBody(Some(rx)))
        }
    });
    serve(Protocol::H2c, svc).await
}

// Real sockets on the real clock; nothing sleeps.
#[tokio::test]
async fn the_concurrency_limit_holds_a_slot_until_the_body_ends() {
    let tails: Tails = Arc::default();
    let addr = streaming_upstream(&tails).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .concurrency_limit(1, Overload::Shed)
        .build_http2_client()
        .unwrap();
    let get = || {
        let req = Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
        client.clone().oneshot(req)
    };
    let bound = Duration::from_secs(10);

    let mut first = get().await.unwrap();
    let head = first.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(head.into_data().unwrap(), "head-");
    // The first body still streams: it holds the only slot.
    let refused = get().await.unwrap_err();
    assert!(refused.is::<tower::load_shed::error::Overloaded>(), "{refused}");
    let tail = tails.lock().unwrap().pop().unwrap();
    tail.send(Bytes::from_static(b"tail")).unwrap();
    drop(tail);
    let rest = tokio::time::timeout(bound, first.into_body().collect()).await;
    assert_eq!(rest.unwrap().unwrap().to_bytes(), "tail", "the body arrived whole");

    // Its end freed the slot; a body dropped unread frees it too.
    let second = get().await.unwrap();
    assert!(get().await.unwrap_err().is::<tower::load_shed::error::Overloaded>());
    drop(second);
    let third = get().await.expect("the dropped body gave its slot back");
    drop(third);
}

/// A warm-up URL whose host refuses the connection is reported with the
/// reason, not only `client error (Connect)`.
#[tokio::test]
async fn a_refused_warm_up_says_why() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (_client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .warm_up([format!("http://{closed}/a")])
        .build_http2_client()
        .unwrap();
    let report = optimizer.start().await.unwrap();
    assert_eq!(report.warmed, 0);
    let [(url, reason)] = &report.warm_up_failures[..] else {
        panic!("one failure: {:?}", report.warm_up_failures);
    };
    assert_eq!(url, &format!("http://{closed}/a"));
    assert!(reason.to_lowercase().contains("connection refused"), "{reason}");
}

// In process on the paused clock: a warm-up URL that never answers is
// reported as failed after `warm_up_timeout` instead of holding `start()`
// for good, and the others keep their slots busy meanwhile (a new fetch
// starts as soon as one ends, not batch by batch).
#[tokio::test(start_paused = true)]
async fn warm_up_is_bounded_in_time_and_keeps_its_slots_busy() {
    let upstream = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        if req.uri().path() == "/hang" {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(respond(200, "max-age=600", "warm"))
    });
    let cache = Cache::builder().build().unwrap();
    let urls = ["/a", "/hang", "/b", "/c"].map(|p| format!("http://api.test{p}"));
    let (layer, optimizer) = OptimizerStack::builder()
        .cache(cache.clone())
        .warm_up(urls)
        .warm_up_parallelism(2)
        .warm_up_timeout(Duration::from_secs(5))
        .build::<Full<Bytes>>()
        .unwrap();
    optimizer.warm_up_through(tower::Layer::layer(&layer, upstream));
    let started = tokio::time::Instant::now();
    let report = optimizer.start().await.unwrap();
    assert_eq!(report.warmed, 3);
    assert_eq!(
        report.warm_up_failures,
        [("http://api.test/hang".to_owned(), "no answer within 5s".to_owned())]
    );
    assert_eq!(cache.stats().entries, 3);
    // /a, /b and /c one after another in the slot /hang leaves free (3 s),
    // all within /hang's 5 s; batches of two would take 5 + 1 s.
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

/// Two streaming upstreams, two hosts to the per-host limit; the first's
/// senders are kept.
async fn two_streaming_hosts() -> (SocketAddr, Tails, SocketAddr) {
    let slow_tails: Tails = Arc::default();
    let slow = streaming_upstream(&slow_tails).await;
    let other = streaming_upstream(&Arc::default()).await;
    (slow, slow_tails, other)
}

/// `GET /` on `addr` through a clone of `client`.
fn get_root(
    client: &OptimizedService<Full<Bytes>>,
    addr: SocketAddr,
) -> tower::util::Oneshot<OptimizedService<Full<Bytes>>, Request<Full<Bytes>>> {
    let req = Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
    client.clone().oneshot(req)
}

// Real sockets on the real clock; nothing sleeps.
#[tokio::test]
async fn the_per_host_limit_keeps_a_slow_host_from_the_others() {
    let (slow, slow_tails, other) = two_streaming_hosts().await;
    // The test's runtime polls on this thread: the metrics land here.
    let recorder = recorder::Recorder::default();
    let counts = recorder.counts.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (client, _optimizer) = OptimizerStack::builder()
        .per_host_limit(1, Overload::Shed)
        .monitor(MonitorSettings::default())
        .build_http2_client()
        .unwrap();
    let get = |addr: SocketAddr| get_root(&client, addr);
    let bound = Duration::from_secs(10);

    // The slow host's one slot is taken while its body streams.
    let streaming = get(slow).await.unwrap();
    let refused = get(slow).await.unwrap_err();
    assert!(refused.is::<tower::load_shed::error::Overloaded>(), "{refused}");
    // The metrics say which host refused it.
    let port = format!("server.port={}", slow.port());
    let shed = counts.lock().unwrap().iter().any(|(name, labels, _)| {
        name == "http.client.request.duration" && labels.contains("error.type=overloaded") && labels.contains(&port)
    });
    assert!(shed, "{:#?}", counts.lock().unwrap());
    // The other host has slots of its own.
    let answered = get(other).await.unwrap();
    drop(answered);
    // The body's end gives the slot back.
    let tail = slow_tails.lock().unwrap().pop().unwrap();
    tail.send(Bytes::from_static(b"tail")).unwrap();
    drop(tail);
    let body = tokio::time::timeout(bound, streaming.into_body().collect()).await;
    assert_eq!(body.unwrap().unwrap().to_bytes(), "head-tail");
    drop(get(slow).await.expect("the slot is free again"));
}

// Real sockets on the real clock; nothing sleeps.
#[tokio::test]
async fn a_call_waiting_for_its_host_holds_no_global_slot() {
    let (slow, _tails, other) = two_streaming_hosts().await;
    // Two slots in all, one per host, and callers wait for them.
    let (client, optimizer) = OptimizerStack::builder()
        .concurrency_limit(2, Overload::Wait)
        .per_host_limit(1, Overload::Wait)
        .build_http2_client()
        .unwrap();
    let get = |addr: SocketAddr| get_root(&client, addr);
    let bound = Duration::from_secs(10);

    let first = get(slow).await.unwrap();
    let waiting = tokio::spawn(get(slow));
    // Once it is in flight, it is waiting for its host's slot (the stack
    // calls down to that point in one go).
    while optimizer.stats().in_flight < 2 {
        tokio::task::yield_now().await;
    }
    // Were the waiting call holding the second global slot, this one would
    // wait for it, and the test would end at the bound.
    let answered = tokio::time::timeout(bound, get(other)).await;
    let answered = answered.expect("the other host was not kept waiting").unwrap();
    drop(answered);
    assert!(!waiting.is_finished(), "the slow host's slot is still taken");
    drop(first);
    let second = tokio::time::timeout(bound, waiting)
        .await
        .expect("the dropped body freed the slot");
    assert_eq!(second.unwrap().unwrap().status(), 200);
}

/// `admin_liveness(Exempt)` (TOML `[admin] liveness = "exempt"`) lets an
/// orchestrator's liveness probe reach the stack's admin server without
/// the token; every other route, readiness included, still asks for it.
#[tokio::test]
async fn the_admin_servers_liveness_can_go_without_the_token() {
    use tower_optimizer::monitor::LivenessAuth;
    let status_of = |admin: SocketAddr, path: &'static str, token: Option<&'static str>| async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let mut request = Request::get(format!("http://{admin}{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        client
            .request(request.body(Full::<Bytes>::default()).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for (liveness, open) in [
        (None, false),
        (Some(LivenessAuth::Required), false),
        (Some(LivenessAuth::Exempt), true),
    ] {
        let mut builder = OptimizerStack::builder()
            .cache(Cache::builder().build().unwrap())
            .monitor(MonitorSettings::default())
            .admin("127.0.0.1:0", Some("t0ken"));
        if let Some(liveness) = liveness {
            builder = builder.admin_liveness(liveness);
        }
        let (_client, optimizer) = builder.build_http2_client().unwrap();
        let admin = optimizer.start().await.unwrap().admin.expect("admin bound");
        let live = status_of(admin, "/health/live", None).await;
        assert_eq!(live, if open { 200 } else { 401 }, "{liveness:?}");
        assert_eq!(status_of(admin, "/health/live", Some("t0ken")).await, 200);
        assert_eq!(status_of(admin, "/health/ready", None).await, 401, "{liveness:?}");
        assert_eq!(status_of(admin, "/stats", None).await, 401, "{liveness:?}");
        // The admin service the optimizer gives for mounting elsewhere, alike.
        let request = Request::get("/health/live").body(Full::<Bytes>::default()).unwrap();
        let mounted = optimizer.admin_service(Some("t0ken")).oneshot(request).await.unwrap();
        assert_eq!(mounted.status().as_u16(), if open { 200 } else { 401 }, "{liveness:?}");
        optimizer.shutdown(Duration::from_secs(1)).await;
    }
}

/// `recovery_probe` sends the breaker's health request over the stack's
/// own client, past its layers: an open circuit closes again once the
/// host answers its probe, with no user request spent on finding out.
#[tokio::test(start_paused = true)]
async fn the_stacks_recovery_probe_closes_the_circuit_when_the_host_is_back() {
    use tower_optimizer::circuit_breaker::{ProbeSuccess, State, error::Open};
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (user_calls, probes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler: Handler = {
        let (failing, user_calls, probes) = (failing.clone(), user_calls.clone(), probes.clone());
        Arc::new(move |req, _| {
            let counter = if req.uri().path() == "/health" {
                &probes
            } else {
                &user_calls
            };
            counter.fetch_add(1, Ordering::SeqCst);
            respond(if failing.load(Ordering::SeqCst) { 503 } else { 200 }, "no-store", "")
        })
    };
    let (addr, _) = server(handler, Arc::new(Notify::new())).await;
    let breaker = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .open_period(Duration::from_secs(2), Duration::from_secs(8), 2.0)
        .jitter(0.0)
        .build()
        .unwrap();
    let (client, optimizer) = OptimizerStack::builder()
        .circuit_breaker(breaker)
        .recovery_probe("/health", Duration::from_secs(5), ProbeSuccess::Closed)
        .build_http2_client()
        .unwrap();
    let (url, key) = (format!("http://{addr}/api"), format!("http://{addr}"));
    let call = |client: OptimizedService<Full<Bytes>>| {
        let url = url.clone();
        async move {
            let response = client.oneshot(Request::get(url).body(Full::default()).unwrap()).await?;
            Ok::<u16, tower_optimizer::BoxError>(response.status().as_u16())
        }
    };
    for _ in 0..3 {
        assert_eq!(call(client.clone()).await.unwrap(), 503);
    }
    let breakers = optimizer.breakers().unwrap().clone();
    assert_eq!(breakers.state(&key), Some(State::Open));
    assert!(call(client.clone()).await.unwrap_err().is::<Open>());
    // Still failing: the probe at the end of the open period finds it so,
    // and the circuit stays open (for longer).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(probes.load(Ordering::SeqCst) >= 1, "the probe went out");
    assert_eq!(breakers.state(&key), Some(State::Open));
    // Healed: the next probe closes it.
    failing.store(false, Ordering::SeqCst);
    let user_calls_before = user_calls.load(Ordering::SeqCst);
    for _ in 0..100 {
        if breakers.state(&key) == Some(State::Closed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(breakers.state(&key), Some(State::Closed));
    assert_eq!(
        user_calls.load(Ordering::SeqCst),
        user_calls_before,
        "recovery cost no user request"
    );
    assert_eq!(call(client.clone()).await.unwrap(), 200);
}

/// The probe needs the stack's own client, a breaker keyed by host and a
/// path; each lack is an error naming `recovery_probe`.
#[test]
fn a_recovery_probe_it_cannot_send_is_an_error() {
    use tower_optimizer::circuit_breaker::{KeyBy, ProbeSuccess};
    let probe = |builder: tower_optimizer::stack::OptimizerStackBuilder, path: &str| {
        builder.recovery_probe(path, Duration::from_secs(1), ProbeSuccess::HalfOpen)
    };
    let breaker = || CircuitBreakerConfig::default();
    let cases = [
        (probe(OptimizerStack::builder(), "/health"), "a circuit breaker"),
        (
            probe(OptimizerStack::builder().circuit_breaker(breaker()), "health"),
            "not a path",
        ),
        (
            probe(
                OptimizerStack::builder()
                    .circuit_breaker(CircuitBreakerConfig::builder().key_by(KeyBy::Global).build().unwrap()),
                "/health",
            ),
            "keyed by scheme and authority",
        ),
    ];
    for (builder, reason) in cases {
        let err = builder.build_http2_client().map(|_| ()).unwrap_err();
        assert_eq!(err.field(), "recovery_probe");
        assert!(err.to_string().contains(reason), "{err}");
    }
    let err = probe(OptimizerStack::builder().circuit_breaker(breaker()), "/health")
        .build::<Full<Bytes>>()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.field(), "recovery_probe");
    assert!(err.to_string().contains("build_*_client"), "{err}");
}

/// The stack's admin serves the checks of the registry it was given, its
/// own (`breakers`, `cache`, unless the registry has one of that name)
/// and each `readiness_check`, which asks the upstream itself over the
/// stack's own client.
#[tokio::test]
async fn readiness_serves_the_users_checks_the_stacks_and_the_upstreams() {
    use tower_optimizer::monitor::{CheckResult, HealthRegistry, Probe};
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handler: Handler = {
        let healthy = healthy.clone();
        Arc::new(move |req, _| {
            let up = req.uri().path() == "/health" && healthy.load(Ordering::SeqCst);
            respond(if up { 200 } else { 503 }, "no-store", "")
        })
    };
    let (addr, _) = server(handler, Arc::new(Notify::new())).await;
    let health = HealthRegistry::new();
    health.register("disk", Probe::Readiness, Duration::from_secs(1), || async {
        CheckResult::warn("80 % full")
    });
    health.register("cache", Probe::Readiness, Duration::from_secs(1), || async {
        CheckResult::pass().observed(1.0, "mine")
    });
    let (_client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(CircuitBreakerConfig::default())
        .health(health)
        .readiness_check(
            "api",
            &format!("http://{addr}/health?key=s3cret"),
            Duration::from_secs(1),
        )
        .build_http2_client()
        .unwrap();
    let ready = || async {
        let request = Request::get("/health/ready").body(Full::<Bytes>::default()).unwrap();
        let response = optimizer.admin_service(None).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    };
    let (status, report) = ready().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "warn", "the disk warns: {report}");
    let checks = &report["checks"];
    assert_eq!(checks["api"][0]["status"], "pass", "{report}");
    assert_eq!(checks["breakers"][0]["status"], "pass", "{report}");
    assert_eq!(
        checks["cache"][0]["observedUnit"], "mine",
        "the user's cache check kept: {report}"
    );
    // A check added to the optimizer's registry later is served too.
    optimizer
        .health()
        .register("late", Probe::Readiness, Duration::from_secs(1), || async {
            CheckResult::pass()
        });
    // The upstream falls ill: readiness fails, naming it (not its query).
    healthy.store(false, Ordering::SeqCst);
    let (status, report) = ready().await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["status"], "fail");
    assert_eq!(report["checks"]["late"][0]["status"], "pass", "{report}");
    let output = report["checks"]["api"][0]["output"].as_str().unwrap();
    assert!(output.contains("/health") && output.contains("503"), "{output}");
    assert!(!output.contains("s3cret"), "{output}");
}

#[test]
fn a_readiness_check_it_cannot_run_is_an_error() {
    let check =
        |url: &str, timeout: u64| OptimizerStack::builder().readiness_check("api", url, Duration::from_secs(timeout));
    for (builder, field) in [
        (check("/health", 1), "readiness_check[0]"),
        (check("http://api.test/health", 0), "readiness_check[0]"),
        (
            OptimizerStack::builder().readiness_check(" ", "http://api.test/", Duration::from_secs(1)),
            "readiness_check[0]",
        ),
    ] {
        let err = builder.build_http2_client().map(|_| ()).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
    let err = check("http://api.test/health", 1)
        .build::<Full<Bytes>>()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.field(), "readiness_check");
    assert!(err.to_string().contains("http_check"), "{err}");
}

/// Per-host alerts from the configuration file, over two real hosts: the
/// failing one's circuit opens and fires its own alert, which holds back
/// that host's error-rate alert (`equal = ["host"]`); the healthy host's
/// stays quiet although the whole client's error rate is high. The hosts
/// the statistics name and the hosts the breakers' keys name meet.
// Real sockets on the real clock; nothing sleeps.
#[tokio::test]
async fn per_host_alerts_from_the_file_fire_for_the_failing_host_alone() {
    use tower_optimizer::monitor::AlertState;
    use tower_optimizer::stack::OptimizerConfig;
    let (good, _) = server(Arc::new(|_, _| respond(200, "no-store", "ok")), Arc::new(Notify::new())).await;
    let (bad, _) = server(
        Arc::new(|_, _| respond(500, "no-store", "down")),
        Arc::new(Notify::new()),
    )
    .await;
    let (client, optimizer) = OptimizerConfig::from_toml(
        r#"
        [circuit_breaker]
        consecutive_failures = 3
        [monitor]
        default_alerts = false
        [[monitor.alerts]]
        name = "HostCircuitOpen"
        figure = "circuit_breaker.open"
        above = 0.0
        scope = "per_host"
        [[monitor.alerts]]
        name = "HostErrors"
        figure = "http.error_rate"
        above = 0.5
        scope = "per_host"
        [[monitor.alerts]]
        name = "Errors"
        figure = "http.error_rate"
        above = 0.3
        [[monitor.inhibit]]
        source = "HostCircuitOpen"
        targets = ["HostErrors"]
        equal = ["host"]
        "#,
    )
    .and_then(OptimizerConfig::into_builder)
    .and_then(tower_optimizer::stack::OptimizerStackBuilder::build_http2_client)
    .unwrap();
    for _ in 0..5 {
        let (code, ..) = send(&client, Method::GET, &format!("http://{good}/")).await.unwrap();
        assert_eq!(code, 200);
        // 500s, then refusals once the circuit is open: failures all.
        let _ = send(&client, Method::GET, &format!("http://{bad}/")).await;
    }
    let monitor = optimizer.monitor().unwrap();
    monitor.sample_now();
    let mut alerts: Vec<(String, Option<String>, AlertState, Option<String>)> = monitor
        .snapshot()
        .alerts
        .into_iter()
        .map(|a| (a.rule.name, a.host, a.state, a.inhibited_by))
        .collect();
    alerts.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let (good, bad) = (Some(good.to_string()), Some(bad.to_string()));
    let open = Some("HostCircuitOpen".to_owned());
    let expected = [
        ("Errors".to_owned(), None, AlertState::Firing, None),
        ("HostCircuitOpen".to_owned(), good.clone(), AlertState::Inactive, None),
        ("HostCircuitOpen".to_owned(), bad.clone(), AlertState::Firing, None),
        ("HostErrors".to_owned(), good, AlertState::Inactive, None),
        ("HostErrors".to_owned(), bad, AlertState::Firing, open),
    ];
    let mut expected = expected.to_vec();
    expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(alerts, expected);
    // The stack's stats carry those not inactive.
    let mut active: Vec<(String, Option<String>)> = optimizer
        .stats()
        .alerts
        .into_iter()
        .map(|a| (a.rule.name, a.host))
        .collect();
    active.sort();
    let mut firing: Vec<(String, Option<String>)> = expected
        .into_iter()
        .filter(|e| e.2 != AlertState::Inactive)
        .map(|e| (e.0, e.1))
        .collect();
    firing.sort();
    assert_eq!(active, firing);
}

/// `[monitor.alertmanager]`: a firing alert reaches a real Alertmanager-like
/// server over HTTP/1.1 at `/api/v2/alerts`, as JSON with the file's labels.
// Real sockets on the real clock; nothing sleeps.
#[tokio::test]
async fn alerts_reach_the_alertmanager_named_in_the_file() {
    use tower_optimizer::stack::OptimizerConfig;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let alertmanager = hyper::service::service_fn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let _ = tx.send((parts, body));
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }
    });
    let alertmanager = serve(Protocol::Auto, alertmanager).await;
    let (bad, _) = server(
        Arc::new(|_, _| respond(500, "no-store", "down")),
        Arc::new(Notify::new()),
    )
    .await;
    let (client, optimizer) = OptimizerConfig::from_toml(&format!(
        r#"
        [monitor]
        default_alerts = false
        [[monitor.alerts]]
        name = "Errors"
        figure = "http.error_rate"
        above = 0.3
        severity = "critical"
        [monitor.alertmanager]
        url = "http://{alertmanager}"
        labels = {{ instance = "checkout-1" }}
        generator_url = "http://127.0.0.1:9464/dashboard"
        token_env = "CARGO_PKG_NAME"
        "#
    ))
    .and_then(OptimizerConfig::into_builder)
    .and_then(tower_optimizer::stack::OptimizerStackBuilder::build_http2_client)
    .unwrap();
    for _ in 0..3 {
        let (code, ..) = send(&client, Method::GET, &format!("http://{bad}/")).await.unwrap();
        assert_eq!(code, 500);
    }
    optimizer.monitor().unwrap().sample_now();
    let (parts, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("pushed within 10 s")
        .unwrap();
    assert_eq!((parts.method, parts.uri.path()), (Method::POST, "/api/v2/alerts"));
    assert_eq!(
        parts.version,
        http::Version::HTTP_11,
        "a stock Alertmanager speaks no h2c"
    );
    assert_eq!(parts.headers["content-type"], "application/json");
    // The token from the variable the file names (cargo sets this one).
    assert_eq!(parts.headers["authorization"], "Bearer tower-optimizer");
    let alerts: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["alertname"], "Errors");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["instance"], "checkout-1");
    assert!(alert["labels"].get("host").is_none(), "a rule over the whole client");
    assert_eq!(alert["annotations"]["value"], "1.0000");
    assert_eq!(alert["generatorURL"], "http://127.0.0.1:9464/dashboard");
}
