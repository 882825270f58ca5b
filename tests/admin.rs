//! The admin service over a real hyper server on 127.0.0.1: access control,
//! health JSON, Prometheus text, statistics and the invalidation route.
#![cfg(all(feature = "monitor", feature = "invalidation", feature = "retry"))]

#[path = "support/server.rs"]
mod server;
mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use support::Upstream;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_optimizer::cache::{Cache, CacheLayer};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::monitor::{
    AdminService, AlertManager, CheckResult, HealthRegistry, LivenessAuth, MetricsLayer, Monitor, Probe, Stats,
    install_prometheus,
};
use tower_optimizer::retry::{BudgetConfig, RetryConfig, RetryPolicy};

/// The Prometheus recorder is process-global: installed once per test binary.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| install_prometheus().expect("install the recorder"))
        .clone()
}

struct Admin {
    addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (parts.status, parts.headers, text)
    }
}

/// A base64 token (`+`, `/`, `=`) in the query, as typed or
/// percent-encoded: both forms are the token, as the dashboard's page reads
/// it too; a `+` is never a space.
#[tokio::test]
async fn query_tokens_are_read_as_typed_or_percent_encoded() {
    let service = AdminService::builder().token("aB+c/d=").build();
    let (addr, server) = service.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let admin = Admin {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    for (query, status) in [
        ("aB+c/d=", 200),
        ("aB%2Bc%2Fd%3D", 200),
        ("aB%2bc/d%3d", 200),
        ("aB%20c/d=", 401),
        ("aB+c/d", 401),
        ("aB%2Bc%2Fd%3", 401),
    ] {
        let (got, _, _) = admin
            .send(Method::GET, &format!("/health/live?token={query}"), None, "")
            .await;
        assert_eq!(got, status, "{query}");
    }
    server.abort();
}

#[tokio::test]
async fn admin_routes() {
    let handle = prometheus();
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let stats = Stats::default();
    // Traffic through the stack, with the metrics layer built after the
    // recorder was installed.
    let upstream = Upstream::new(|_, _| async {
        Ok(http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "users")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap())
    });
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let breakers = breaker.breakers();
    let mut client = ServiceBuilder::new()
        .layer(MetricsLayer::new().stats(stats.clone()))
        .layer(CacheLayer::new(cache.clone()))
        .layer(InvalidationLayer::new(inv.clone()))
        .layer(breaker)
        .service(upstream);
    for i in 0..5 {
        let res = client
            .ready()
            .await
            .unwrap()
            .call(
                Request::get(format!("http://api.test/users/{}", i % 2))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    // Retries: one sent, one the budget refuses (no wait: the clock is real).
    let quick = || RetryConfig::builder().backoff(Duration::ZERO, Duration::ZERO);
    let unavailable_once = |_, n: usize| async move {
        Ok(http::Response::builder()
            .status(if n == 0 { 503 } else { 200 })
            .body(Full::new(Bytes::new()))
            .unwrap())
    };
    let no_budget = BudgetConfig {
        ratio: 0.0,
        min_per_second: 0,
        window: Duration::from_secs(10),
    };
    for (config, expected) in [(quick(), 200), (quick().budget(no_budget), 503)] {
        let mut retrying = RetryPolicy::new(config.build().unwrap())
            .layer()
            .layer(Upstream::new(unavailable_once));
        let request = Request::get("http://api.test/r").body(Full::default()).unwrap();
        let res = retrying.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(res.status(), expected);
    }
    breakers.force_open("http://flaky.test");
    let monitor = Monitor::builder()
        .stats(stats)
        .cache(cache.clone())
        .breakers(breakers)
        .alerts(AlertManager::with_default_rules(4.0 * 1024.0 * 1024.0 * 1024.0))
        .build();
    // Two samples: CPU use is a difference between readings.
    monitor.sample_now();
    monitor.sample_now();
    let health = HealthRegistry::new();
    health.register("process", Probe::Liveness, Duration::from_secs(1), || async {
        CheckResult::pass()
    });
    health.register("upstream", Probe::Readiness, Duration::from_secs(1), || async {
        CheckResult::fail("upstream down")
    });
    let service = AdminService::builder()
        .token("s3cret")
        .liveness(LivenessAuth::Exempt)
        .prometheus(handle)
        .monitor(monitor)
        .health(health)
        .invalidator(inv)
        .build();
    let (addr, server) = service.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let admin = Admin {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };

    // Access control.
    let (status, headers, _) = admin.send(Method::GET, "/stats", None, "").await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(admin.send(Method::GET, "/stats", Some("wrong"), "").await.0, 401);
    assert_eq!(admin.send(Method::GET, "/stats", Some("s3cret"), "").await.0, 200);
    assert_eq!(
        admin.send(Method::GET, "/stats?token=s3cret", None, "").await.0,
        200,
        "the dashboard's query token"
    );
    assert_eq!(
        admin
            .send(Method::POST, "/cache/invalidate?token=s3cret", None, "{}")
            .await
            .0,
        401,
        "query tokens are for GET only"
    );
    assert_eq!(
        admin.send(Method::GET, "/health/live", None, "").await.0,
        200,
        "liveness is exempt by setting"
    );

    // Health in application/health+json.
    let (status, headers, body) = admin.send(Method::GET, "/health/ready", Some("s3cret"), "").await;
    assert_eq!(status, 503);
    assert_eq!(headers["content-type"], "application/health+json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "fail");
    assert_eq!(json["checks"]["upstream"][0]["output"], "upstream down");

    // Prometheus text that parses, with our histogram in it.
    let (status, _, text) = admin.send(Method::GET, "/metrics", Some("s3cret"), "").await;
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line}"
        );
    }
    assert!(text.contains("http_client_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("le=\"0.005\""), "explicit OpenTelemetry buckets");

    // Statistics and alerts as JSON.
    let (_, _, body) = admin.send(Method::GET, "/stats", Some("s3cret"), "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["latest"]["requests"]["overall"]["requests"], 5);
    assert_eq!(stats["latest"]["cache"]["hits"], 3);
    // The wall-clock time of the sample (after 2020, before 2100).
    let unix_ms = stats["latest"]["unix_ms"].as_u64().unwrap();
    assert!((1_577_836_800_000..4_102_444_800_000).contains(&unix_ms), "{unix_ms}");
    // Hosts as one object keyed by host, CPU time in seconds.
    assert_eq!(
        stats["latest"]["requests"]["hosts"]["api.test:80"]["requests"], 5,
        "{body}"
    );
    let process = &stats["latest"]["process"];
    assert!(process.get("cpu_time").is_none(), "{process}");
    if cfg!(target_os = "linux") {
        // A number (whole ticks of 10 ms: a young test process may read 0).
        assert!(process["cpu_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{process}");
    }
    // Alerts: states, severities and comparisons in snake case, durations
    // in seconds; the forced-open breaker fires `CircuitOpen`.
    let (_, _, body) = admin.send(Method::GET, "/alerts", Some("s3cret"), "").await;
    let alerts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rule = |name: &str| {
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .clone()
    };
    let open = rule("CircuitOpen");
    assert_eq!(
        (open["state"].as_str(), open["value"].as_f64()),
        (Some("firing"), Some(1.0))
    );
    assert_eq!(open["rule"]["severity"], "critical");
    assert_eq!(open["rule"]["comparison"], "above");
    let errors = rule("HighErrorRate");
    assert_eq!(errors["state"], "inactive");
    assert_eq!(errors["rule"]["for_seconds"].as_f64(), Some(60.0));
    assert_eq!(errors["rule"]["repeat_interval_seconds"].as_f64(), Some(4.0 * 3600.0));
    assert_eq!(errors["rule"]["keep_firing_for_seconds"].as_f64(), Some(60.0));
    assert!(errors["rule"].get("for_").is_none(), "{body}");

    // Invalidation: a pattern anchored at a path matches paths.
    let (status, _, body) = admin
        .send(
            Method::POST,
            "/cache/invalidate",
            Some("s3cret"),
            r#"{"pattern": "^/users/1$"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (report["kind"].as_str(), report["entries"].as_u64()),
        (Some("pattern"), Some(1))
    );
    assert_eq!(cache.stats().entries, 1);
    let (status, _, body) = admin
        .send(Method::POST, "/cache/invalidate", Some("s3cret"), r#"{"tag": "users"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (report["kind"].as_str(), report["entries"].as_u64()),
        (Some("tag"), Some(1))
    );
    assert_eq!(cache.stats().entries, 0);
    let (status, _, body) = admin
        .send(
            Method::POST,
            "/cache/invalidate",
            Some("s3cret"),
            r#"{"pattern": "(["}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid pattern"), "{body}");
    // With the regex parser's own reason, not only that it failed.
    assert!(body.contains("unclosed"), "{body}");
    let (status, _, body) = admin
        .send(Method::POST, "/cache/invalidate", Some("s3cret"), "not json")
        .await;
    assert_eq!(status, 400);
    // serde's reason says where the text went wrong.
    assert!(body.contains("line 1 column"), "{body}");
    let (status, _, body) = admin
        .send(Method::POST, "/cache/invalidate", Some("s3cret"), "[1, 2]")
        .await;
    assert_eq!(
        (status, body.contains("expected one JSON object")),
        (StatusCode::BAD_REQUEST, true),
        "{body}"
    );
    assert_eq!(
        admin
            .send(Method::POST, "/cache/invalidate", Some("s3cret"), r#"{"nothing": 1}"#)
            .await
            .0,
        400
    );
    let (status, _, body) = admin
        .send(
            Method::POST,
            "/cache/invalidate",
            Some("s3cret"),
            r#"{"version": "users", "soft": true}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"version\":1"), "{body}");
    // A 405 names the methods the route answers (RFC 9110 §15.5.6).
    let (status, headers, _) = admin.send(Method::GET, "/cache/invalidate", Some("s3cret"), "").await;
    assert_eq!(
        (status, headers["allow"].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "POST")
    );
    let (status, headers, _) = admin.send(Method::DELETE, "/stats", Some("s3cret"), "").await;
    assert_eq!(
        (status, headers["allow"].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD")
    );
    assert_eq!(admin.send(Method::GET, "/nope", Some("s3cret"), "").await.0, 404);
    // A HEAD is the GET without its content: what uptime checkers send,
    // with the query token as a GET takes it.
    let (status, headers, body) = admin.send(Method::HEAD, "/stats?token=s3cret", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(body.is_empty(), "{body}");
    assert_eq!(admin.send(Method::HEAD, "/health/ready", None, "").await.0, 401);
    let (status, headers, page) = admin.send(Method::GET, "/dashboard", Some("s3cret"), "").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the dashboard fetches nothing external"
    );
    server.abort();
}

/// Operators read and set breakers over HTTP: `GET /breakers` and
/// `POST /breakers {"key", "action"}`.
#[tokio::test]
async fn breakers_are_read_and_forced_over_http() {
    let upstream = Upstream::new(|_, _| async { Ok(http::Response::new(Full::new(Bytes::from_static(b"ok")))) });
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let breakers = breaker.breakers();
    let client = ServiceBuilder::new().layer(breaker).service(upstream);
    let call = || {
        let request = Request::get("http://api.test/a").body(Full::default()).unwrap();
        client.clone().oneshot(request)
    };
    call().await.unwrap();
    let service = AdminService::builder()
        .token("s3cret")
        .breakers(breakers.clone())
        .build();
    let (addr, server) = service.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let admin = Admin {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let act = |body: &'static str| admin.send(Method::POST, "/breakers", Some("s3cret"), body);

    let (status, _, body) = admin.send(Method::GET, "/breakers?token=s3cret", None, "").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["key"], "http://api.test", "{list}");
    assert_eq!(list[0]["state"], "closed", "{list}");
    assert_eq!(list[0]["figures"]["calls"], 1, "{list}");

    let (status, _, body) = act(r#"{"key": "http://api.test", "action": "force_open"}"#).await;
    assert_eq!(status, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["state"], "forced_open", "{one}");
    let refused = call().await.unwrap_err();
    assert!(
        refused.is::<tower_optimizer::circuit_breaker::error::Open>(),
        "{refused}"
    );
    let (status, _, body) = act(r#"{"key": "http://api.test", "action": "reset"}"#).await;
    assert_eq!(
        (status, body.contains(r#""state":"closed""#)),
        (StatusCode::OK, true),
        "{body}"
    );
    call().await.expect("closed again");

    // A mistyped key changes nothing and makes no breaker; only
    // `force_open` may name a host before its first request.
    let (status, _, body) = act(r#"{"key": "http://api.tset", "action": "disable"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(breakers.len(), 1);
    let (status, _, _) = act(r#"{"key": "http://later.test", "action": "force_open"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        breakers.state("http://later.test"),
        Some(tower_optimizer::circuit_breaker::State::ForcedOpen)
    );

    // Another instance's opening, for a host not called here yet either.
    let (status, _, body) = act(r#"{"key": "http://shared.test", "action": "trip", "open_for_ms": 30000}"#).await;
    assert_eq!(status, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    let left = one["retry_after_seconds"].as_f64().unwrap_or_default();
    assert!(one["state"] == "open" && (29.0..=30.0).contains(&left), "{one}");
    assert_eq!(one["opened_by"], "trip", "{one}");
    for bad in [
        r#"{"key": "http://shared.test", "action": "trip"}"#,
        r#"{"key": "http://shared.test", "action": "trip", "open_for_ms": -1}"#,
        r#"{"key": "http://shared.test", "action": "trip", "open_for_ms": "30s"}"#,
    ] {
        let (status, _, body) = act(bad).await;
        assert_eq!(
            (status, body.contains("open_for_ms")),
            (StatusCode::BAD_REQUEST, true),
            "{bad}: {body}"
        );
    }

    // Bad requests say what is wrong.
    let (status, _, body) = act(r#"{"key": "http://api.test", "action": "explode"}"#).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("force_open, force_closed, reset, disable, metrics_only, trip"),
        "{body}"
    );
    let (status, _, body) = act(r#"{"action": "reset"}"#).await;
    assert_eq!(
        (status, body.contains("key")),
        (StatusCode::BAD_REQUEST, true),
        "{body}"
    );
    let (status, _, body) = act("not json").await;
    assert_eq!(
        (status, body.contains("line 1 column")),
        (StatusCode::BAD_REQUEST, true),
        "{body}"
    );
    // A POST needs the token in its header; a PUT is no route's.
    let (status, _, _) = admin
        .send(
            Method::POST,
            "/breakers?token=s3cret",
            None,
            r#"{"key": "http://api.test", "action": "force_open"}"#,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        breakers.state("http://api.test"),
        Some(tower_optimizer::circuit_breaker::State::Closed)
    );
    let (status, headers, _) = admin.send(Method::PUT, "/breakers", Some("s3cret"), "").await;
    assert_eq!(
        (status, headers["allow"].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD, POST")
    );
    server.abort();

    // Without breakers the route says so.
    let bare = AdminService::builder().build();
    let (addr, server) = bare.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let admin = Admin {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let (status, _, body) = admin.send(Method::GET, "/breakers", None, "").await;
    assert_eq!(
        (status, body.contains("no circuit breaker")),
        (StatusCode::NOT_FOUND, true),
        "{body}"
    );
    server.abort();
}

/// A connection that never finishes its request's head is closed after
/// `HEADER_READ_TIMEOUT` (a slow-headers attack holds nothing for long),
/// and the server goes on answering others.
#[tokio::test(start_paused = true)]
async fn a_request_head_never_finished_is_cut_off() {
    use tower_optimizer::monitor::HEADER_READ_TIMEOUT;

    let (addr, server) = AdminService::builder()
        .build()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let head = b"GET /health/live HTTP/1.1\r\nHost: admin\r\n";
    let answer = server::slow_head_is_cut_off(addr, head, HEADER_READ_TIMEOUT).await;
    let answer = String::from_utf8_lossy(&answer);
    // Whatever it said before closing, it answered nothing to the request.
    assert!(!answer.contains("200 OK"), "{answer}");

    let admin = Admin {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let (status, _, _) = admin.send(Method::GET, "/health/live", None, "").await;
    assert_eq!(status, StatusCode::OK);
    server.abort();
}

/// An HTTP/2 connection has no request head to time out between requests:
/// one left idle, its client still there (answering pings), is asked to go
/// (`GOAWAY`) and closed after `MAX_CONNECTION_AGE`, so idle connections
/// cannot pile up.
#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_after_its_age() {
    use tower_optimizer::monitor::MAX_CONNECTION_AGE;

    let (addr, server) = AdminService::builder()
        .build()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (types, kept) = server::answer_pings_until_closed(addr, MAX_CONNECTION_AGE * 3).await;
    assert!(types.contains(&6), "pinged meanwhile: frame types {types:?}");
    assert!(types.contains(&7), "a GOAWAY before closing: frame types {types:?}");
    assert!(kept >= MAX_CONNECTION_AGE && kept < MAX_CONNECTION_AGE * 2, "{kept:?}");
    server.abort();
}

/// An HTTP/2 client that vanished answers no ping: its connection is
/// closed once `KEEP_ALIVE_INTERVAL` and `KEEP_ALIVE_TIMEOUT` have passed,
/// long before its age would end it.
#[tokio::test(start_paused = true)]
async fn a_silent_http2_client_is_pinged_then_closed() {
    use tower_optimizer::monitor::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};

    let (addr, server) = AdminService::builder()
        .build()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let silence = KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT;
    let bytes = server::slow_head_is_cut_off(addr, server::SILENT_H2_HELLO, silence).await;
    let types = server::frame_types(&bytes);
    assert!(types.contains(&6), "a PING before closing: frame types {types:?}");
    server.abort();
}
