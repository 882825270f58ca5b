//! The circuit breaker layer: readiness, fail-fast, half-open admission
//! under concurrency, windows under threads, classification, fallback,
//! events and metrics, and the cache serving stale while a circuit is open.
#![cfg(all(feature = "circuit-breaker", feature = "cache"))]

#[path = "support/logs.rs"]
mod logs;
#[path = "support/recorder.rs"]
mod recorder;
mod support;

use logs::Logs;
use recorder::Recorder;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use support::{Req, Res, Upstream};
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerService, Event, KeyBy, OTHER_KEY, OpenCause, State,
    WindowKind, error::Open,
};

fn layer(config: CircuitBreakerConfig) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(config)
}

fn status(code: u16) -> Res {
    Response::builder().status(code).body(Full::default()).unwrap()
}

async fn send<S>(svc: &mut S, uri: &str) -> Result<u16, BoxError>
where
    S: Service<Req, Response = Response<tower_optimizer::circuit_breaker::BreakerBody<Full<Bytes>>>, Error = BoxError>,
{
    let res = svc
        .ready()
        .await?
        .call(Request::get(uri).body(Full::default()).unwrap())
        .await?;
    let code = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(code)
}

fn trips_after(n: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .consecutive_failures(Some(n))
        .jitter(0.0)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_in_call_with_a_downcastable_error_and_recovers() {
    let upstream = Upstream::new(|_, n| async move { Ok(status(if n < 3 { 503 } else { 200 })) });
    let layer = layer(trips_after(3));
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, upstream.clone());
    for _ in 0..3 {
        assert_eq!(send(&mut svc, "http://a.test/x").await.unwrap(), 503);
    }
    let err = send(&mut svc, "http://a.test/y").await.unwrap_err();
    let open = err.downcast_ref::<Open>().expect("error::Open");
    assert_eq!(
        (open.key(), open.retry_after()),
        ("http://a.test", Duration::from_secs(10))
    );
    assert_eq!(err.to_string(), "circuit open for http://a.test, retry in 10.0s");
    assert_eq!(upstream.calls(), 3, "the open circuit never reached the inner service");
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        assert_eq!(send(&mut svc, "http://a.test/x").await.unwrap(), 200);
    }
    assert_eq!(breakers.state("http://a.test"), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_only_delegates() {
    let (mock, mut handle) = tower_test::mock::pair::<Req, Res>();
    let layer = layer(trips_after(1));
    let breakers = layer.breakers();
    let mut svc = tower_test::mock::Spawn::new(tower::Layer::layer(&layer, mock));
    handle.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "not ready while the inner service is not"
    );
    breakers.force_open("http://a.test");
    assert!(
        svc.poll_ready().is_pending(),
        "an open circuit does not make it ready either: it only delegates"
    );
    handle.allow(1);
    assert!(
        matches!(svc.poll_ready(), std::task::Poll::Ready(Ok(()))),
        "ready even though the circuit is open"
    );
    let err = svc
        .call(Request::get("http://a.test/").body(Full::default()).unwrap())
        .await
        .unwrap_err();
    assert!(err.is::<Open>());
    assert!(handle.poll_request().is_pending(), "nothing reached the inner service");
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_calls_against_half_open_let_exactly_the_permitted_through() {
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let seen = inner_calls.clone();
    let upstream = Upstream::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(status(200))
        }
    });
    let layer = layer(trips_after(1));
    let breakers = layer.breakers();
    breakers.force_open("http://a.test");
    breakers.force_closed("http://a.test");
    // Trip it for real, then wait for half-open.
    let failing = Upstream::new(|_, _| async { Ok(status(500)) });
    send(&mut tower::Layer::layer(&layer, failing), "http://a.test/")
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(breakers.state("http://a.test"), Some(State::HalfOpen));
    inner_calls.store(0, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let mut svc = tower::Layer::layer(&layer, upstream.clone());
        tasks.push(tokio::spawn(async move { send(&mut svc, "http://a.test/").await }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(200) => ok += 1,
            Err(e) if e.is::<Open>() => rejected += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, rejected), (3, 997));
    assert_eq!(inner_calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        breakers.state("http://a.test"),
        Some(State::Closed),
        "three successful probes closed it"
    );
}

#[test]
fn windows_stay_exact_under_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    // Metrics-only, and closed below its minimum of calls: in both,
    // successes are counted without the lock and failures under it, from
    // four threads.
    for metrics_only in [true, false] {
        rt.block_on(async {
            let config = CircuitBreakerConfig::builder()
                .window(WindowKind::Count(100_000))
                .minimum_calls(100_000)
                .build()
                .unwrap();
            let layer = layer(config);
            let breakers = layer.breakers();
            if metrics_only {
                breakers.metrics_only("http://a.test");
            }
            let upstream =
                Upstream::new(
                    |req: Req, _| async move { Ok(status(if req.uri().path() == "/fail" { 500 } else { 200 })) },
                );
            let mut tasks = Vec::new();
            for t in 0..8 {
                let mut svc = tower::Layer::layer(&layer, upstream.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..500 {
                        let path = if (t + i) % 4 == 0 { "/fail" } else { "/ok" };
                        send(&mut svc, &format!("http://a.test{path}")).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let snap = breakers.snapshot();
            // The sequential model: every call recorded once, 1 in 4 failing.
            assert_eq!(snap[0].figures.calls, 4000, "metrics only: {metrics_only}");
            assert_eq!(snap[0].figures.failures, 1000, "metrics only: {metrics_only}");
            let want = if metrics_only {
                State::MetricsOnly
            } else {
                State::Closed
            };
            assert_eq!(snap[0].state, want);
        });
    }
}

/// A body that fails after its first frame.
struct Broken(u8);

impl http_body::Body for Broken {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0 += 1;
        std::task::Poll::Ready(Some(if self.0 == 1 {
            Ok(http_body::Frame::data(Bytes::from_static(b"part")))
        } else {
            Err("reset".into())
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn failing_bodies_fail_cancelled_calls_count_as_neither_other_4xx_succeed() {
    let layer = layer(trips_after(2));
    let breakers = layer.breakers();
    let mut broken = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: Req| async { Ok::<_, BoxError>(Response::new(Broken(0))) }),
    );
    for _ in 0..2 {
        let res = broken
            .ready()
            .await
            .unwrap()
            .call(Request::get("http://b.test/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert!(res.into_body().collect().await.is_err());
    }
    assert_eq!(
        breakers.state("http://b.test"),
        Some(State::Open),
        "two bodies failed mid-stream"
    );

    let mut not_found = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(404)) }));
    for _ in 0..5 {
        assert_eq!(send(&mut not_found, "http://c.test/").await.unwrap(), 404);
    }
    assert_eq!(
        breakers.state("http://c.test"),
        Some(State::Closed),
        "404 is the host answering correctly"
    );

    let slow = Upstream::new(|_, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(status(500))
    });
    let mut svc = tower::Layer::layer(&layer, slow);
    for _ in 0..5 {
        let call = send(&mut svc, "http://d.test/");
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call).await.is_err(),
            "cancelled"
        );
    }
    let snap = breakers
        .snapshot()
        .into_iter()
        .find(|s| &*s.key == "http://d.test")
        .unwrap();
    assert_eq!(
        (snap.state, snap.figures.calls),
        (State::Closed, 0),
        "dropped calls count as neither"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_open_period() {
    let upstream = Upstream::new(|_, _| async {
        Ok(Response::builder()
            .status(503)
            .header("retry-after", "120")
            .body(Full::default())
            .unwrap())
    });
    let mut svc = tower::Layer::layer(&layer(trips_after(1)), upstream);
    send(&mut svc, "http://a.test/").await.unwrap();
    let err = send(&mut svc, "http://a.test/").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Open>().unwrap().retry_after(),
        Duration::from_secs(120)
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_serves_requests_whose_circuit_is_open() {
    let primary = Upstream::new(|_, _| async { Ok(status(503)) });
    let secondary = Upstream::new(|_, _| async { Ok(status(203)) });
    let layer = layer(trips_after(1)).with_fallback(secondary.clone());
    let mut svc: CircuitBreakerService<Upstream, _> = tower::Layer::layer(&layer, primary.clone());
    assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 503);
    assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 203);
    assert_eq!((primary.calls(), secondary.calls()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn registry_is_bounded_keys_are_per_host_or_global() {
    let config = CircuitBreakerConfig::builder()
        .registry(2, Duration::from_secs(1))
        .consecutive_failures(Some(1))
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(200)) }));
    send(&mut svc, "http://a.test/").await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    send(&mut svc, "http://b.test/").await.unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    send(&mut svc, "http://c.test/").await.unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers.state("http://a.test"), None, "the idle one went");
    assert!(breakers.state("http://b.test").is_some() && breakers.state("http://c.test").is_some());
    // With nothing idle, the least recently used goes.
    send(&mut svc, "http://d.test/").await.unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers.state("http://b.test"), None);
    let global = CircuitBreakerConfig::builder()
        .key_by(KeyBy::Global)
        .consecutive_failures(Some(1))
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(global);
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(500)) }));
    send(&mut svc, "http://a.test/").await.unwrap();
    assert!(
        send(&mut svc, "http://b.test/").await.unwrap_err().is::<Open>(),
        "one breaker for all hosts"
    );
}

#[test]
fn events_reach_listeners_the_metrics_facade_and_the_log() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(2))
        .on_event(move |e: &Event| log.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let recorder = Recorder::default();
    let counts = recorder.counts.clone();
    let (logs, guard) = Logs::capture();
    let layer = layer(config);
    let breakers = layer.breakers();
    metrics::with_local_recorder(&recorder, || {
        support::on_paused_runtime(async {
            let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(502)) }));
            send(&mut svc, "http://a.test/").await.unwrap();
            send(&mut svc, "http://a.test/").await.unwrap();
            assert!(send(&mut svc, "http://a.test/").await.is_err());
        });
    });
    breakers.force_closed("http://a.test");
    drop(guard);
    // An opening is a warning in the log, the way back a note.
    let logged = logs.text();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 2, "{logged}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("circuit opened") && lines[0].contains("key=http://a.test"),
        "{logged}"
    );
    assert!(
        lines[0].contains("from=\"closed\"") && lines[0].contains("to=\"open\""),
        "{logged}"
    );
    assert!(
        lines[1].contains("INFO") && lines[1].contains("from=\"open\" to=\"closed\""),
        "{logged}"
    );
    let events = events.lock().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Failure { .. } => "failure",
            Event::StateChanged { to: State::Open, .. } => "opened",
            Event::StateChanged { to: State::Closed, .. } => "closed",
            Event::Opened {
                cause: OpenCause::Calls,
                open_for,
                ..
                // The first period, 10 s, less the default jitter's 10 %.
            } if (Duration::from_secs(9)..=Duration::from_secs(10)).contains(open_for) => "for 10 s",
            Event::Rejected { .. } => "rejected",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["failure", "failure", "opened", "for 10 s", "rejected", "closed"]
    );
    let counts = counts.lock().unwrap();
    assert!(
        counts
            .iter()
            .any(|(n, l, v)| n == "tower_optimizer.circuit_breaker.calls" && l.contains("failure") && *v == 1)
    );
    assert!(
        counts
            .iter()
            .any(|(n, l, _)| n == "tower_optimizer.circuit_breaker.transitions" && l.contains("open"))
    );
    assert!(
        counts
            .iter()
            .any(|(n, l, v)| n == "tower_optimizer.circuit_breaker.state" && l.contains("a.test") && *v == 1)
    );
}

/// Keys past the registry's first `max_keys` are labelled `_OTHER` in the
/// metrics (their calls and transitions counted there, no state gauge,
/// which several breakers would share), while listeners and the log still
/// see the real key; the first keys keep their labels when they come back.
#[test]
fn keys_past_the_labelled_ones_are_other_in_the_metrics() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .registry(2, Duration::from_secs(60))
        .on_event(move |e: &Event| log.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let recorder = Recorder::default();
    let counts = recorder.counts.clone();
    let layer = layer(config);
    metrics::with_local_recorder(&recorder, || {
        support::on_paused_runtime(async {
            let mut svc = tower::Layer::layer(
                &layer,
                Upstream::new(|req: Req, _| async move {
                    let failing = req.uri().host() == Some("c.test");
                    Ok(status(if failing { 503 } else { 200 }))
                }),
            );
            for host in ["a.test", "b.test", "c.test", "a.test", "d.test"] {
                send(&mut svc, &format!("http://{host}/")).await.unwrap();
            }
        });
    });
    let counts = counts.lock().unwrap();
    let calls = |key: &str, outcome: &str| -> u64 {
        counts
            .iter()
            .filter(|(n, l, _)| {
                n == "tower_optimizer.circuit_breaker.calls"
                    && l.contains(&format!("key={key}"))
                    && l.contains(&format!("outcome={outcome}"))
            })
            .map(|(.., v)| v)
            .sum()
    };
    assert_eq!(calls("http://a.test", "success"), 2);
    assert_eq!(calls("http://b.test", "success"), 1);
    assert_eq!(calls(OTHER_KEY, "success"), 1, "d.test");
    assert_eq!(calls(OTHER_KEY, "failure"), 1, "c.test");
    assert!(
        counts
            .iter()
            .any(|(n, l, _)| n == "tower_optimizer.circuit_breaker.transitions"
                && l.contains(&format!("key={OTHER_KEY}"))
                && l.contains("to=open")),
        "c.test's opening, counted as _OTHER: {counts:?}"
    );
    assert!(
        !counts
            .iter()
            .any(|(n, l, _)| n == "tower_optimizer.circuit_breaker.state" && l.contains(OTHER_KEY)),
        "no state gauge for _OTHER"
    );
    assert!(
        counts
            .iter()
            .all(|(_, l, _)| !l.contains("c.test") && !l.contains("d.test")),
        "{counts:?}"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::StateChanged { key, to: State::Open, .. } if &**key == "http://c.test")),
        "listeners see the real key"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cache_outside_serves_stale_while_the_circuit_is_open() {
    use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus};
    let cache = Cache::builder().build().unwrap();
    let upstream = Upstream::new(|_, n| async move {
        Ok(if n == 0 {
            Response::builder()
                .header("cache-control", "max-age=1, stale-if-error=600")
                .body(Full::new(Bytes::from_static(b"cached")))
                .unwrap()
        } else {
            status(503)
        })
    });
    let breaker = layer(trips_after(1));
    let breakers = breaker.breakers();
    let mut client = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(cache))
        .layer(breaker)
        .service(upstream.clone());
    let get = || Request::get("http://a.test/item").body(Full::default()).unwrap();
    client.ready().await.unwrap().call(get()).await.unwrap();
    breakers.force_open("http://a.test");
    tokio::time::advance(Duration::from_secs(5)).await;
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    let status = CacheStatus::from_headers(res.headers()).unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "cached");
    assert_eq!(
        status.detail,
        Some("stale-if-error"),
        "the open circuit became a stale hit"
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn successes_counted_without_the_lock_weigh_in_the_window_and_can_trip_it() {
    let config = |minimum| {
        CircuitBreakerConfig::builder()
            .window(WindowKind::Count(20))
            .minimum_calls(minimum)
            .failure_rate(Some(50.0))
            .consecutive_failures(None)
            .jitter(0.0)
            .build()
            .unwrap()
    };
    let upstream =
        Upstream::new(|req: Req, _| async move { Ok(status(if req.uri().path() == "/fail" { 500 } else { 200 })) });
    let figures = |breakers: &tower_optimizer::circuit_breaker::CircuitBreakers| {
        let snap = breakers.snapshot();
        (snap[0].state, snap[0].figures.calls, snap[0].figures.failures)
    };

    // Fifteen quick successes, then failures: the successes hold the rate
    // down, so it takes ten failures (10 of the last 20), not five.
    let first = layer(config(5));
    let breakers = first.breakers();
    let mut svc = tower::Layer::layer(&first, upstream.clone());
    for _ in 0..15 {
        send(&mut svc, "http://a.test/ok").await.unwrap();
    }
    assert_eq!(figures(&breakers), (State::Closed, 15, 0));
    for _ in 0..9 {
        send(&mut svc, "http://a.test/fail").await.unwrap();
    }
    assert_eq!(figures(&breakers), (State::Closed, 20, 9));
    send(&mut svc, "http://a.test/fail").await.unwrap();
    assert_eq!(breakers.state("http://a.test"), Some(State::Open));

    // The call that reaches the minimum trips it even when it succeeds:
    // five failures and four successes are below the minimum of ten, the
    // fifth success makes ten calls at 50 %.
    let second = layer(config(10));
    let breakers = second.breakers();
    let mut svc = tower::Layer::layer(&second, upstream.clone());
    for _ in 0..5 {
        send(&mut svc, "http://a.test/fail").await.unwrap();
    }
    for _ in 0..4 {
        send(&mut svc, "http://a.test/ok").await.unwrap();
    }
    assert_eq!(figures(&breakers), (State::Closed, 9, 5));
    send(&mut svc, "http://a.test/ok").await.unwrap();
    assert_eq!(breakers.state("http://a.test"), Some(State::Open));
}

/// Answers 200 after `secs` of (paused) time.
fn answers_after(secs: u64) -> Upstream {
    Upstream::new(move |_, _| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok(status(200))
    })
}

fn figures(breakers: &tower_optimizer::circuit_breaker::CircuitBreakers, key: &str) -> (State, u32, u32) {
    let snap = breakers.snapshot().into_iter().find(|s| &*s.key == key).unwrap();
    (snap.state, snap.figures.calls, snap.figures.slow)
}

#[tokio::test(start_paused = true)]
async fn calls_are_timed_where_a_slow_call_rule_or_a_listener_asks() {
    // A slow-call rule: two 3 s answers against a 1 s threshold trip it.
    let rule = CircuitBreakerConfig::builder()
        .failure_rate(None)
        .slow_calls(Some(50.0), Duration::from_secs(1))
        .minimum_calls(2)
        .build()
        .unwrap();
    let timed = layer(rule);
    let mut svc = tower::Layer::layer(&timed, answers_after(3));
    for _ in 0..2 {
        assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 200);
    }
    assert_eq!(figures(&timed.breakers(), "http://a.test"), (State::Open, 2, 2));
    assert!(send(&mut svc, "http://a.test/").await.unwrap_err().is::<Open>());

    // A listener, with no rule: each event carries the call's duration.
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let listened = CircuitBreakerConfig::builder()
        .slow_calls(None, Duration::from_secs(1))
        .on_event(move |e: &Event| log.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let listened = layer(listened);
    let mut svc = tower::Layer::layer(&listened, answers_after(3));
    // Several calls: after the first, the breaker counts successes
    // without its lock, and a timed call must still reach the listener.
    for _ in 0..3 {
        send(&mut svc, "http://b.test/").await.unwrap();
    }
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 6, "{events:?}");
    for pair in events.chunks(2) {
        assert!(
            matches!(pair, [Event::Success { elapsed: a, .. }, Event::SlowCall { elapsed: b, .. }]
                if *a == Duration::from_secs(3) && b == a),
            "{events:?}"
        );
    }
    assert_eq!(figures(&listened.breakers(), "http://b.test"), (State::Closed, 3, 3));

    // Neither: the call is not timed, so it is not slow.
    let plain = layer(
        CircuitBreakerConfig::builder()
            .slow_calls(None, Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut svc = tower::Layer::layer(&plain, answers_after(3));
    send(&mut svc, "http://c.test/").await.unwrap();
    assert_eq!(figures(&plain.breakers(), "http://c.test"), (State::Closed, 1, 0));

    // A listener of state events only: no call is timed for it.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let states = layer(
        CircuitBreakerConfig::builder()
            .slow_calls(None, Duration::from_secs(1))
            .on_state_change(move |e: &Event| log.lock().unwrap().push(e.clone()))
            .build()
            .unwrap(),
    );
    let mut svc = tower::Layer::layer(&states, answers_after(3));
    send(&mut svc, "http://d.test/").await.unwrap();
    assert_eq!(figures(&states.breakers(), "http://d.test"), (State::Closed, 1, 0));
    assert!(seen.lock().unwrap().is_empty(), "no per-call event");
}

/// A listener of state events hears changes and openings, and no call.
#[tokio::test(start_paused = true)]
async fn a_state_listener_hears_changes_and_openings_only() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(2))
        .jitter(0.0)
        .on_state_change(move |e: &Event| log.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let layer = layer(config);
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(503)) }));
    for _ in 0..2 {
        assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 503);
    }
    assert!(send(&mut svc, "http://a.test/").await.unwrap_err().is::<Open>());
    let key: std::sync::Arc<str> = "http://a.test".into();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Event::StateChanged {
                key: key.clone(),
                from: State::Closed,
                to: State::Open
            },
            Event::Opened {
                key,
                open_for: Duration::from_secs(10),
                cause: OpenCause::Calls
            },
        ],
        "no failure, no rejection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_registry_evicts_closed_breakers_before_an_open_one() {
    let config = CircuitBreakerConfig::builder()
        .registry(2, Duration::from_secs(600))
        .consecutive_failures(Some(1))
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let upstream = Upstream::new(|req, _| async move {
        Ok(status(if req.uri().host() == Some("down.test") {
            503
        } else {
            200
        }))
    });
    // One client keeps calling a host that is down: its breaker opens and
    // then rejects, without a registry lookup per call.
    let mut stuck = tower::Layer::layer(&layer, upstream.clone());
    send(&mut stuck, "http://down.test/").await.unwrap();
    // Another client moves on to new hosts, filling the registry.
    let mut roaming = tower::Layer::layer(&layer, upstream.clone());
    for host in ["a", "b", "c"] {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(send(&mut stuck, "http://down.test/").await.unwrap_err().is::<Open>());
        send(&mut roaming, &format!("http://{host}.test/")).await.unwrap();
    }
    assert_eq!(breakers.len(), 2);
    assert_eq!(
        breakers.state("http://down.test"),
        Some(State::Open),
        "an open breaker is kept while closed ones can go"
    );
    let calls = upstream.calls();
    assert!(send(&mut stuck, "http://down.test/").await.unwrap_err().is::<Open>());
    assert_eq!(upstream.calls(), calls, "the host that is down is still cut off");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_in_steady_use_is_not_evicted_as_idle() {
    let config = CircuitBreakerConfig::builder()
        .registry(2, Duration::from_secs(1))
        .consecutive_failures(Some(3))
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let upstream = Upstream::new(|_, _| async { Ok(status(200)) });
    // One client calls its host every 200 ms for 2 s, through the breaker
    // it remembers from its last call (no registry lookup per call).
    let mut busy = tower::Layer::layer(&layer, upstream.clone());
    for _ in 0..10 {
        send(&mut busy, "http://busy.test/").await.unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
    }
    // Another client moves between hosts and fills the registry.
    let mut roaming = tower::Layer::layer(&layer, upstream.clone());
    send(&mut roaming, "http://a.test/").await.unwrap();
    send(&mut busy, "http://busy.test/").await.unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    send(&mut roaming, "http://b.test/").await.unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers.state("http://a.test"), None, "the least recently used went");
    assert_eq!(
        figures(&breakers, "http://busy.test"),
        (State::Closed, 11, 0),
        "the busy host's breaker stayed, window and all"
    );
}

/// A full registry evicts even an open breaker, last of all; the next
/// request for its host starts a closed one, and the state gauge says so at
/// once, or an exporter would show (and alert on) the open state for good.
#[tokio::test(start_paused = true)]
async fn an_evicted_open_breaker_leaves_its_gauge_closed() {
    let recorder = Recorder::default();
    let counts = recorder.counts.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let config = CircuitBreakerConfig::builder()
        .registry(1, Duration::from_secs(1))
        .consecutive_failures(Some(1))
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(503)) }));
    send(&mut svc, "http://down.test/").await.unwrap();
    assert_eq!(breakers.state("http://down.test"), Some(State::Open));
    let state = |counts: &[(String, String, u64)]| {
        counts
            .iter()
            .filter(|(n, l, _)| n == "tower_optimizer.circuit_breaker.state" && l.contains("down.test"))
            .map(|&(_, _, v)| v)
            .next_back()
    };
    assert_eq!(state(&counts.lock().unwrap()), Some(1), "open");
    let mut other = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(200)) }));
    send(&mut other, "http://up.test/").await.unwrap();
    assert_eq!(breakers.state("http://down.test"), None, "evicted for the new host");
    assert_eq!(
        state(&counts.lock().unwrap()),
        Some(0),
        "closed, as the next breaker starts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_after_the_first_calls_counts_the_next_ones() {
    let layer = layer(CircuitBreakerConfig::default());
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(200)) }));
    // No recorder yet: the breaker of this host is made with no-op counters.
    send(&mut svc, "http://a.test/").await.unwrap();
    let recorder = Recorder::default();
    let counts = recorder.counts.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    send(&mut svc, "http://a.test/").await.unwrap();
    send(&mut svc, "http://a.test/").await.unwrap();
    let successes = counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, labels, _)| {
            name == "tower_optimizer.circuit_breaker.calls" && labels.contains("outcome=success")
        })
        .map(|(_, _, n)| n)
        .sum::<u64>();
    assert_eq!(successes, 2, "both calls after it are counted");
}

// A listener that panics is the user's bug; the breaker still counts,
// opens and refuses, and the panic is logged, not passed to the caller.
#[tokio::test(start_paused = true)]
async fn a_panicking_listener_does_not_break_the_breaker() {
    let (logs, guard) = Logs::capture();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(2))
        .on_event(|_: &Event| panic!("listener bug"))
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(502)) }));
    assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 502);
    assert_eq!(send(&mut svc, "http://a.test/").await.unwrap(), 502);
    assert_eq!(breakers.state("http://a.test"), Some(State::Open));
    let refused = send(&mut svc, "http://a.test/").await.unwrap_err();
    assert!(refused.is::<Open>());
    drop(guard);
    let logged = logs.text();
    assert!(
        logged.contains("callback=\"circuit breaker listener\"") && logged.contains("listener bug"),
        "{logged}"
    );
}

// A recovery probe that panics, then one that never answers, count as
// unhealthy; the probe loop goes on and the third probe closes the
// circuit. Its transitions are logged like a call's.
#[tokio::test(start_paused = true)]
async fn a_panicking_or_hung_probe_counts_as_unhealthy_and_probing_goes_on() {
    use tower_optimizer::circuit_breaker::ProbeSuccess;
    let (logs, guard) = Logs::capture();
    let probes = Arc::new(AtomicUsize::new(0));
    let count = probes.clone();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .jitter(0.0)
        .open_period(Duration::from_secs(10), Duration::from_secs(60), 2.0)
        .half_open(1, Duration::from_secs(5))
        .probe(
            move |_key| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => panic!("probe bug"),
                        1 => std::future::pending().await,
                        _ => true,
                    }
                }
            },
            ProbeSuccess::Closed,
        )
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, Upstream::new(|_, _| async { Ok(status(503)) }));
    send(&mut svc, "http://a.test/").await.unwrap();
    assert_eq!(breakers.state("http://a.test"), Some(State::Open));
    // Open 10 s, probe panics; open 20 s, probe hangs 5 s; open 40 s, probe heals.
    tokio::time::sleep(Duration::from_secs(10 + 20 + 5 + 40 + 1)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 3);
    assert_eq!(breakers.state("http://a.test"), Some(State::Closed));
    drop(guard);
    let logged = logs.text();
    assert!(
        logged.contains("recovery probe failed") && logged.contains("panicked"),
        "{logged}"
    );
    assert!(logged.contains("recovery probe did not answer in time"), "{logged}");
    assert!(
        logged.contains("circuit state changed") && logged.contains("to=\"closed\""),
        "{logged}"
    );
}

/// A `Retry-After` beyond any point in time, under a cap set as high (no
/// cap at all): the circuit opens for "never" without overflowing the
/// clock, and the breaker reports a wait it can say.
#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_any_time_opens_without_overflow() {
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .open_period(Duration::from_secs(1), Duration::MAX, 2.0)
        .build()
        .unwrap();
    let layer = layer(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(
        &layer,
        Upstream::new(|_, _| async {
            Ok(Response::builder()
                .status(503)
                .header("retry-after", u64::MAX.to_string())
                .body(Full::default())
                .unwrap())
        }),
    );
    assert_eq!(send(&mut svc, "http://far.test/").await.unwrap(), 503);
    assert_eq!(breakers.state("http://far.test"), Some(State::Open));
    let refused = send(&mut svc, "http://far.test/").await.unwrap_err();
    let open = refused.downcast_ref::<Open>().unwrap();
    assert!(open.retry_after() > Duration::from_secs(50 * 365 * 86_400), "{open:?}");
}

/// A half-open time set without bound: a call arriving while the probe is
/// out is refused with a wait it can say, not an overflow of the clock.
#[tokio::test(start_paused = true)]
async fn an_unbounded_half_open_time_refuses_without_overflow() {
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .open_period(Duration::from_secs(1), Duration::from_secs(10), 2.0)
        .jitter(0.0)
        .half_open(1, Duration::MAX)
        .build()
        .unwrap();
    let layer = layer(config);
    let upstream = Upstream::new(|_, n| async move {
        if n == 0 {
            return Ok(status(503));
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(status(200))
    });
    let mut svc = tower::Layer::layer(&layer, upstream);
    assert_eq!(send(&mut svc, "http://slow.test/").await.unwrap(), 503);
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut probe = tower::Layer::layer(
        &layer,
        Upstream::new(|_, _| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(status(200))
        }),
    );
    let probing = tokio::spawn(async move { send(&mut probe, "http://slow.test/").await });
    tokio::task::yield_now().await;
    let refused = send(&mut svc, "http://slow.test/").await.unwrap_err();
    assert!(refused.downcast_ref::<Open>().is_some(), "{refused}");
    assert_eq!(probing.await.unwrap().unwrap(), 200);
}
