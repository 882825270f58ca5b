//! The metrics layer: OpenTelemetry names, units and bounded labels, checked
//! with metrics-util's debugging recorder (a local recorder per test).
#![cfg(all(feature = "monitor", feature = "cache", feature = "circuit-breaker"))]

#[path = "support/debugging.rs"]
mod debugging;
#[path = "support/logs.rs"]
mod logs;
mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use debugging::{Row, recorded};
use http::{Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use support::{Req, Res, Upstream};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use tower_optimizer::monitor::{
    ACTIVE_REQUESTS, BodySizes, MetricsLayer, OTHER_SERVER_ADDRESS, REQUEST_DURATION, RESPONSE_BODY_SIZE,
    RouteTemplates, Stats,
};

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    let mut out: Vec<_> = key
        .key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    out.sort();
    out
}

fn find<'a>(rows: &'a [Row], kind: MetricKind, name: &str, with: &[(&str, &str)]) -> Vec<&'a Row> {
    rows.iter()
        .filter(|(k, ..)| k.kind() == kind && k.key().name() == name)
        .filter(|(k, ..)| {
            with.iter()
                .all(|(lk, lv)| labels(k).iter().any(|(a, b)| a == lk && b == lv))
        })
        .collect()
}

fn seconds(value: &DebugValue) -> Vec<f64> {
    match value {
        DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
        other => panic!("not a histogram: {other:?}"),
    }
}

async fn call<S>(svc: &mut S, req: Req) -> Result<u16, BoxError>
where
    S: Service<Req, Error = BoxError>,
    S::Response: Into<Response<tower_optimizer::monitor::MetricsBody<Pinned>>>,
{
    let res: Response<_> = svc.ready().await?.call(req).await?.into();
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// A boxed body so every stack below the metrics layer has one body type.
type Pinned = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

#[test]
fn duration_histogram_names_units_and_labels() {
    let rows = recorded(async {
        let upstream = Upstream::new(|req: Req, _| async move {
            Ok::<Res, BoxError>(
                Response::builder()
                    .status(if req.uri().path() == "/fail" { 503 } else { 200 })
                    .body(Full::new(Bytes::from_static(b"12345")))
                    .unwrap(),
            )
        });
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().body_sizes(BodySizes::Record))
            .map_response(|r: Res| r.map(|b| b.map_err(|e| -> BoxError { match e {} }).boxed_unsync()))
            .service(upstream);
        call(
            &mut svc,
            Request::get("http://api.test:8080/x").body(Full::default()).unwrap(),
        )
        .await
        .unwrap();
        call(
            &mut svc,
            Request::get("http://api.test:8080/fail").body(Full::default()).unwrap(),
        )
        .await
        .unwrap();
        let odd = Request::builder()
            .method(Method::from_bytes(b"PURGE").unwrap())
            .uri("http://api.test:8080/x")
            .body(Full::default())
            .unwrap();
        call(&mut svc, odd).await.unwrap();
        // One service, hosts and schemes in turn: each request is labelled
        // with its own endpoint (the service remembers only the last one).
        for uri in ["https://other.test/y", "http://other.test/y", "http://api.test:8080/x"] {
            call(&mut svc, Request::get(uri).body(Full::default()).unwrap())
                .await
                .unwrap();
        }
    });
    for (port, want) in [("443", 1), ("80", 1)] {
        let rows = find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("server.address", "other.test"), ("server.port", port)],
        );
        assert_eq!(rows.len(), want, "other.test:{port}");
    }
    let ok = find(
        &rows,
        MetricKind::Histogram,
        REQUEST_DURATION,
        &[
            ("http.response.status_code", "200"),
            ("http.request.method", "GET"),
            ("server.address", "api.test"),
        ],
    );
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].1, Some(metrics::Unit::Seconds));
    assert_eq!(
        labels(&ok[0].0),
        [
            ("http.request.method".to_owned(), "GET".to_owned()),
            ("http.response.status_code".to_owned(), "200".to_owned()),
            ("network.protocol.version".to_owned(), "1.1".to_owned()),
            ("server.address".to_owned(), "api.test".to_owned()),
            ("server.port".to_owned(), "8080".to_owned()),
        ]
    );
    let failed = find(
        &rows,
        MetricKind::Histogram,
        REQUEST_DURATION,
        &[("http.response.status_code", "503")],
    );
    assert_eq!(
        labels(&failed[0].0).iter().find(|(k, _)| k == "error.type").unwrap().1,
        "503"
    );
    assert_eq!(
        find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("http.request.method", "_OTHER")]
        )
        .len(),
        1,
        "unknown methods are _OTHER"
    );
    let sizes = find(
        &rows,
        MetricKind::Histogram,
        RESPONSE_BODY_SIZE,
        &[
            ("http.response.status_code", "200"),
            ("http.request.method", "GET"),
            ("server.address", "api.test"),
        ],
    );
    assert_eq!(
        seconds(&sizes[0].3),
        [5.0, 5.0],
        "both GETs of api.test, before and after other.test"
    );
    assert!(
        rows.iter().all(|(k, ..)| labels(k)
            .iter()
            .all(|(name, _)| name != "url.path" && name != "url.template")),
        "no raw paths, and no template unless templates are given"
    );
    let active = find(
        &rows,
        MetricKind::Gauge,
        ACTIVE_REQUESTS,
        &[("http.request.method", "GET")],
    );
    assert_eq!(
        active[0].3,
        DebugValue::Gauge(0.0.into()),
        "back to zero once bodies ended"
    );
}

/// Yields one frame now and the last after two seconds.
struct Slow(u8);

impl Body for Slow {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0 += 1;
        match self.0 {
            1 => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a"))))),
            2 => {
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    waker.wake();
                });
                Poll::Pending
            }
            _ => Poll::Ready(None),
        }
    }
}

#[test]
fn duration_runs_until_the_body_ends() {
    let rows = recorded(async {
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .map_response(|r: Response<Slow>| r.map(BodyExt::boxed_unsync))
            .service_fn(|_req: Req| async { Ok::<_, BoxError>(Response::new(Slow(0))) });
        call(
            &mut svc,
            Request::get("http://api.test/").body(Full::default()).unwrap(),
        )
        .await
        .unwrap();
    });
    let rows = find(&rows, MetricKind::Histogram, REQUEST_DURATION, &[]);
    let recorded = seconds(&rows[0].3);
    assert!(
        recorded[0] >= 2.0,
        "headers came at once, the body 2 s later: {recorded:?}"
    );
}

#[test]
fn cache_status_breaker_outcome_and_errors_are_labels() {
    let stats = Stats::default();
    let stats_in = stats.clone();
    let rows = recorded(async move {
        let cache = Cache::builder().build().unwrap();
        let breaker = CircuitBreakerLayer::new(
            CircuitBreakerConfig::builder()
                .consecutive_failures(Some(1))
                .build()
                .unwrap(),
        );
        let breakers = breaker.breakers();
        let upstream = Upstream::new(|req: Req, _| async move {
            if req.uri().host() == Some("down.test") {
                return Err::<Res, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
            }
            Ok(Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap())
        });
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().stats(stats_in))
            .map_response(|r: Response<_>| r.map(|b: tower_optimizer::body::OptimizerBody<_>| b.boxed_unsync()))
            .layer(CacheLayer::new(cache))
            .layer(breaker)
            .service(upstream);
        for _ in 0..2 {
            call(
                &mut svc,
                Request::get("http://api.test/a").body(Full::default()).unwrap(),
            )
            .await
            .unwrap();
        }
        assert!(
            call(
                &mut svc,
                Request::get("http://down.test/").body(Full::default()).unwrap()
            )
            .await
            .is_err()
        );
        assert!(breakers.state("http://down.test").is_some());
        assert!(
            call(
                &mut svc,
                Request::get("http://down.test/").body(Full::default()).unwrap()
            )
            .await
            .is_err()
        );
    });
    assert_eq!(
        find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("tower_optimizer.cache.status", "miss")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("tower_optimizer.cache.status", "hit")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("error.type", "connection_refused")]
        )
        .len(),
        1
    );
    let rejected = find(
        &rows,
        MetricKind::Histogram,
        REQUEST_DURATION,
        &[
            ("error.type", "circuit_open"),
            ("tower_optimizer.circuit_breaker.outcome", "rejected"),
        ],
    );
    assert_eq!(rejected.len(), 1);
    let snap = stats.snapshot(tokio::time::Instant::now());
    assert_eq!((snap.overall.requests, snap.overall.errors), (4, 2));
}

#[test]
fn route_templates_label_the_route_not_the_path() {
    let rows = recorded(async {
        let upstream = Upstream::new(|_req: Req, _| async move {
            Ok::<Res, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let routes = RouteTemplates::new(["/users/me", "/users/{id}"]).unwrap();
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().route_templates(routes))
            .map_response(|r: Res| r.map(|b| b.map_err(|e| -> BoxError { match e {} }).boxed_unsync()))
            .service(upstream);
        for path in ["/users/1", "/users/2?x=1", "/users/me", "/elsewhere/3"] {
            let uri = format!("http://api.test{path}");
            call(&mut svc, Request::get(uri).body(Full::default()).unwrap())
                .await
                .unwrap();
        }
    });
    let count = |template: &str| {
        find(
            &rows,
            MetricKind::Histogram,
            REQUEST_DURATION,
            &[("url.template", template)],
        )
        .iter()
        .map(|row| seconds(&row.3).len())
        .sum::<usize>()
    };
    assert_eq!(count("/users/{id}"), 2, "both ids under one label set");
    assert_eq!(count("/users/me"), 1);
    let untemplated: Vec<_> = find(&rows, MetricKind::Histogram, REQUEST_DURATION, &[])
        .into_iter()
        .filter(|row| labels(&row.0).iter().all(|(k, _)| k != "url.template"))
        .collect();
    assert_eq!(untemplated.len(), 1, "an unmatched path gets no url.template");
    assert_eq!(seconds(&untemplated[0].3).len(), 1);
    assert!(
        rows.iter().all(|(k, ..)| labels(k)
            .iter()
            .all(|(_, v)| !v.contains("elsewhere") && !v.contains("/users/1"))),
        "no raw path in any label"
    );
}

/// A client sent to endless hosts adds no endless series: past the cap,
/// hosts are labelled `_OTHER` (their requests still counted, their port
/// kept), while the hosts admitted before keep their own label, however
/// the requests interleave.
#[test]
fn server_addresses_past_the_cap_are_labelled_other() {
    let rows = recorded(async {
        let upstream = Upstream::new(|_req: Req, _| async move {
            Ok::<Res, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().max_server_addresses(2))
            .map_response(|r: Res| r.map(|b| b.map_err(|e| -> BoxError { match e {} }).boxed_unsync()))
            .service(upstream);
        for host in [
            "a.test",
            "b.test",
            "c.test",
            "a.test",
            "d.test:8443",
            "b.test",
            "c.test",
        ] {
            let uri = format!("http://{host}/x");
            call(&mut svc, Request::get(uri).body(Full::default()).unwrap())
                .await
                .unwrap();
        }
    });
    let count = |with: &[(&str, &str)]| {
        find(&rows, MetricKind::Histogram, REQUEST_DURATION, with)
            .iter()
            .map(|row| seconds(&row.3).len())
            .sum::<usize>()
    };
    assert_eq!(count(&[("server.address", "a.test")]), 2);
    assert_eq!(count(&[("server.address", "b.test")]), 2);
    assert_eq!(
        count(&[("server.address", OTHER_SERVER_ADDRESS), ("server.port", "80")]),
        2,
        "c.test twice"
    );
    assert_eq!(
        count(&[("server.address", OTHER_SERVER_ADDRESS), ("server.port", "8443")]),
        1,
        "d.test"
    );
    assert!(
        rows.iter().all(|(k, ..)| labels(k)
            .iter()
            .all(|(_, v)| !v.contains("c.test") && !v.contains("d.test"))),
        "no label names a host past the cap"
    );
    let gauges: Vec<String> = find(&rows, MetricKind::Gauge, ACTIVE_REQUESTS, &[])
        .iter()
        .filter_map(|row| {
            labels(&row.0)
                .into_iter()
                .find(|(k, _)| k == "server.address")
                .map(|(_, v)| v)
        })
        .collect();
    assert!(
        gauges
            .iter()
            .all(|v| ["a.test", "b.test", OTHER_SERVER_ADDRESS].contains(&v.as_str())),
        "{gauges:?}"
    );
}

/// GETs one URI through `svc`; the status, after reading the body.
async fn get<S, B>(svc: &mut S) -> u16
where
    S: Service<Req, Response = Response<B>, Error = BoxError>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = Request::get("http://up.test/x").body(Full::default()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test(start_paused = true)]
async fn stale_answers_hiding_upstream_errors_raise_an_alert_and_log_it() {
    use tower_optimizer::monitor::{AlertManager, AlertState, Monitor};
    let (logs, _guard) = logs::Logs::capture();
    // Fresh for a second, then allowed to stand in for errors for ten
    // minutes; after the first answer the upstream only fails.
    let upstream = Upstream::new(|_, n| async move {
        Ok(if n == 0 {
            support::ok("max-age=1, stale-if-error=600", "kept")
        } else {
            Response::builder().status(503).body(Full::default()).unwrap()
        })
    });
    let cache = Cache::builder().build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let monitor = Monitor::builder()
        .interval(Duration::from_secs(5))
        .cache(cache.clone())
        .alerts(AlertManager::with_default_rules(f64::MAX))
        .build();
    assert_eq!(get(&mut svc).await, 200);
    let figure = |monitor: &Monitor| {
        let cache = monitor.sample_now().cache.unwrap();
        (cache.stale_on_error, cache.stale_on_error_ratio)
    };
    assert_eq!(figure(&monitor), (0, 0.0), "one miss, nothing hidden");
    tokio::time::advance(Duration::from_secs(2)).await;
    // Four failures, each hidden behind the stale answer.
    for _ in 0..4 {
        assert_eq!(get(&mut svc).await, 200, "the caller sees success");
    }
    assert_eq!(
        figure(&monitor),
        (4, 1.0),
        "every answer since the last sample hid an error"
    );
    assert_eq!(figure(&monitor), (4, 0.0), "none since");

    // Kept up for a minute, the hiding raises `ServingStaleOnError`.
    let firing = |monitor: &Monitor| {
        monitor
            .snapshot()
            .alerts
            .iter()
            .find(|a| a.rule.name == "ServingStaleOnError")
            .map(|a| a.state)
    };
    for _ in 0..13 {
        assert_eq!(get(&mut svc).await, 200);
        monitor.sample_now();
        tokio::time::advance(Duration::from_secs(5)).await;
    }
    assert_eq!(firing(&monitor), Some(AlertState::Firing));
    assert_eq!(cache.stats().stale_on_error, 17);
    // Logged as a warning too, with no handler set: stale answers must not
    // hide an outage from whoever reads the logs.
    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("WARN") && l.contains("ServingStaleOnError is firing")),
        "{logged}"
    );
}

#[test]
fn a_recorder_installed_after_the_first_requests_gets_the_next_ones() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let upstream =
        Upstream::new(|_, _| async { Ok::<Res, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok")))) });
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .map_response(|r: Res| r.map(|b| b.map_err(|e| -> BoxError { match e {} }).boxed_unsync()))
        .service(upstream);
    let get = || Request::get("http://api.test/x").body(Full::default()).unwrap();
    // No recorder yet: the layer's handles for this endpoint are no-ops.
    rt.block_on(call(&mut svc, get())).unwrap();
    // The application installs its recorder afterwards.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            call(&mut svc, get()).await.unwrap();
            call(&mut svc, get()).await.unwrap();
        });
    });
    let rows = snapshotter.snapshot().into_vec();
    let durations = find(
        &rows,
        MetricKind::Histogram,
        REQUEST_DURATION,
        &[("server.address", "api.test")],
    );
    assert_eq!(durations.len(), 1, "{rows:?}");
    assert_eq!(seconds(&durations[0].3).len(), 2, "both requests after it are recorded");
    assert_eq!(durations[0].1, Some(metrics::Unit::Seconds), "and described to it");
}

// A gauge or an alert handler that panics is the user's bug, but it must
// not stop the sampler for good: the dashboard and the alerts would freeze
// with nothing said.
#[tokio::test(start_paused = true)]
async fn a_panicking_gauge_or_alert_handler_does_not_stop_the_sampler() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_optimizer::monitor::{AlertManager, AlertRule, Monitor};
    let (logs, _guard) = logs::Logs::capture();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Depth", "queue.depth", 1.0));
    let heard = Arc::new(AtomicUsize::new(0));
    alerts.on_alert(|_| panic!("handler bug"));
    let count = heard.clone();
    alerts.on_alert(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let monitor = Monitor::builder()
        .interval(Duration::from_secs(5))
        .alerts(alerts)
        .build();
    monitor.register_gauge("queue.depth", || 3.0);
    monitor.register_gauge("broken", || panic!("gauge bug"));
    monitor.start();
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(monitor.is_running(), "the sampler goes on");
    let snapshot = monitor.snapshot();
    assert!(snapshot.history.len() >= 4, "{} samples", snapshot.history.len());
    let latest = snapshot.latest.unwrap();
    assert_eq!(latest.gauges.get("queue.depth"), Some(&3.0));
    assert!(!latest.gauges.contains_key("broken"), "a panicking gauge is left out");
    assert_eq!(
        heard.load(Ordering::SeqCst),
        1,
        "the other handler still hears the alert"
    );
    let logged = logs.text();
    assert!(
        logged.contains("callback=\"gauge\"") && logged.contains("gauge bug"),
        "{logged}"
    );
    assert!(
        logged.contains("callback=\"alert handler\"") && logged.contains("handler bug"),
        "{logged}"
    );
    monitor.stop();
}

// Each sample sets the cache's counters to its running totals, so
// Prometheus sees evictions by cause, requests by result and the events
// that say how the cache is doing, without a facade call per request.
#[test]
fn each_sample_publishes_the_cache_counters() {
    use tower_optimizer::cache::RemovalCause;
    use tower_optimizer::monitor::{Monitor, counters};
    let (rows, stats) = {
        let stats = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = stats.clone();
        let rows = recorded(async move {
            static BODY: [u8; 1500] = [b'x'; 1500];
            let upstream = Upstream::new(|_, _| async {
                Ok(Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from_static(&BODY)))
                    .unwrap())
            });
            // One shard with room for one entry: each new URI evicts the last.
            let cache = Cache::builder()
                .max_bytes(4000)
                .max_inflight_bytes(4000)
                .shards(1)
                .build()
                .unwrap();
            let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
            for path in ["/a", "/a", "/b", "/a"] {
                let req = Request::get(format!("http://api.test{path}"))
                    .body(Full::default())
                    .unwrap();
                let res = svc.ready().await.unwrap().call(req).await.unwrap();
                res.into_body().collect().await.unwrap();
            }
            let monitor = Monitor::builder().cache(cache.clone()).build();
            monitor.sample_now();
            *out.lock().unwrap() = Some(cache.stats());
        });
        let stats = stats.lock().unwrap().take().unwrap();
        (rows, stats)
    };
    let counter = |name: &str, with: &[(&str, &str)]| {
        let found = find(&rows, MetricKind::Counter, name, with);
        assert_eq!(found.len(), 1, "{name} {with:?}: {rows:?}");
        match found[0].3 {
            DebugValue::Counter(n) => n,
            ref other => panic!("{name} is not a counter: {other:?}"),
        }
    };
    assert_eq!((stats.hits, stats.misses), (1, 3), "{stats:?}");
    assert_eq!(stats.evictions(RemovalCause::Capacity), 2, "b evicted a, a evicted b");
    assert_eq!(counter(counters::CACHE_REQUESTS, &[("result", "hit")]), 1);
    assert_eq!(counter(counters::CACHE_REQUESTS, &[("result", "miss")]), 3);
    assert_eq!(counter(counters::CACHE_REQUESTS, &[("result", "bypass")]), 0);
    assert_eq!(counter(counters::CACHE_EVICTIONS, &[("cause", "capacity")]), 2);
    assert_eq!(counter(counters::CACHE_EVICTIONS, &[("cause", "expired")]), 0);
    let evicted = counter(counters::CACHE_EVICTED_BYTES, &[("cause", "capacity")]);
    assert_eq!(evicted, stats.evicted_bytes(RemovalCause::Capacity));
    assert!(evicted > 2 * 1500, "two entries' bodies and more: {evicted}");
    assert_eq!(counter(counters::CACHE_NOT_STORED, &[]), stats.not_storable);
    let described = find(&rows, MetricKind::Counter, counters::CACHE_EVICTED_BYTES, &[]);
    assert_eq!(described[0].1, Some(metrics::Unit::Bytes));
}
