//! Unit tests of `OptimizerConfig`: TOML in, settings or a named error out.
use super::*;

#[test]
fn durations() {
    for (text, ms) in [
        ("250ms", 250),
        ("30s", 30_000),
        ("1.5s", 1500),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
    ] {
        assert_eq!(parse_duration(text), Some(Duration::from_millis(ms)), "{text}");
    }
    for bad in ["", "30", "s", "5 years", "-1s", "1e3s", "99999999999999999999999d"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn the_shipped_example_file_builds() {
    let config = OptimizerConfig::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/optimizer.toml")).unwrap();
    assert_eq!(config.cache.as_ref().unwrap().max_memory_mb, Some(64));
    assert_eq!(config.cache.as_ref().unwrap().stream_above_kb, Some(64));
    assert_eq!(config.cache.as_ref().unwrap().ttl_for.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        config.cache.as_ref().unwrap().ignore_query.as_deref(),
        Some(&["utm_*".to_owned()][..])
    );
    let retry = retry_config(config.retry.as_ref().unwrap()).unwrap();
    assert_eq!(retry.max_attempts(), 3);
    assert!(format!("{retry:?}").contains("deadline: Some(8s)"), "{retry:?}");
    assert_eq!(
        retry.budget(),
        crate::retry::BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10)
        }
    );
    let monitor = config.monitor.as_ref().unwrap();
    assert_eq!(monitor.max_server_addresses, Some(256));
    assert!(monitor.route_templates.as_ref().is_some_and(|t| !t.is_empty()));
    let builder = config.into_builder().unwrap();
    builder.build::<()>().unwrap();
}

#[tokio::test]
async fn status_extension_omit_reaches_the_cache() {
    use tower::{Layer as _, ServiceExt as _};
    let answer = |text: &str| {
        let (layer, _optimizer) = OptimizerConfig::from_toml(text)
            .unwrap()
            .into_builder()
            .unwrap()
            .build::<http_body_util::Full<bytes::Bytes>>()
            .unwrap();
        let upstream = tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
                    .unwrap(),
            )
        });
        let request = http::Request::get("http://api.test/a")
            .body(http_body_util::Full::default())
            .unwrap();
        async move { layer.layer(upstream).oneshot(request).await.unwrap() }
    };
    for (text, carried) in [
        ("[cache]\n", true),
        ("[cache]\nstatus_extension = \"insert\"", true),
        ("[cache]\nstatus_extension = \"omit\"", false),
    ] {
        let response = answer(text).await;
        let extension = response.extensions().get::<crate::cache::CacheStatus>();
        assert_eq!(extension.is_some(), carried, "{text}");
        assert!(response.headers().contains_key("cache-status"), "{text}");
    }
}

#[test]
fn client_keep_alive_settings() {
    let client = |text: &str| {
        OptimizerConfig::from_toml(text)
            .and_then(OptimizerConfig::into_builder)
            .unwrap()
            .client_settings()
            .clone()
    };
    let set = client("[client]\nhttp2_keep_alive = \"5s\"\nhttp2_keep_alive_timeout = \"2s\"");
    assert_eq!(set.http2_keep_alive, Some(Duration::from_secs(5)));
    assert_eq!(set.http2_keep_alive_timeout, Duration::from_secs(2));
    assert_eq!(client("[client]\nhttp2_keep_alive = \"off\"").http2_keep_alive, None);
    let default = client("[client]\nhttp1 = false");
    assert_eq!(default.http2_keep_alive, ClientConfig::default().http2_keep_alive);
}

#[test]
fn ttl_routes_give_the_first_matching_path_a_lifetime_for_successes() {
    let route = |path: &str, ttl: &str| TtlRoute {
        path: path.into(),
        ttl: ttl.into(),
    };
    let policy = ttl_routes(&[route("^/rates$", "60s"), route("^/", "1h")]).unwrap();
    let req = |path: &str| http::Request::get(path).body(()).unwrap().into_parts().0;
    let res = |status: u16| {
        http::Response::builder()
            .status(status)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    assert_eq!(policy(&req("/rates"), &res(200)), Some(Duration::from_secs(60)));
    assert_eq!(policy(&req("/rates/eur"), &res(200)), Some(Duration::from_secs(3600)));
    assert_eq!(policy(&req("/rates"), &res(503)), None, "errors: the headers decide");
    let none = ttl_routes(&[route("^/a$", "1s")]).unwrap();
    assert_eq!(none(&req("/b"), &res(200)), None);
}

#[test]
fn max_wait_bounds_the_wait_of_both_limits() {
    let text = "concurrency_limit = 8\nper_host_limit = 2\nmax_wait = \"100ms\"";
    let builder = OptimizerConfig::from_toml(text).unwrap().into_builder().unwrap();
    let debug = format!("{builder:?}");
    let wait = "WaitAtMost(100ms)";
    assert_eq!(debug.matches(wait).count(), 2, "{debug}");
    let shed = OptimizerConfig::from_toml("concurrency_limit = 8\nload_shed = true").unwrap();
    assert!(format!("{:?}", shed.into_builder().unwrap()).contains("Shed"));
}

#[test]
fn errors_name_the_field() {
    let cases = [
        ("timeout = \"10 parsecs\"", "timeout"),
        ("warm_up_timeout = \"0s\"", "warm_up_timeout"),
        ("[cache]\nmode = \"public\"", "cache.mode"),
        ("[cache]\nexclude = [\"(\"]", "cache.exclude"),
        ("[cache]\nvary_on = [\"x tenant\"]", "cache.vary_on"),
        ("[cache]\nmax_memory_mb = 0", "cache.max_memory_mb"),
        ("[cache]\nmax_memory_mb = \"64\"", "cache.max_memory_mb"),
        ("timeout = 10", "timeout"),
        ("[client]\npool_max_idle_per_host = -1", "client.pool_max_idle_per_host"),
        ("[cache\n", "config"),
        ("[admin]\ntoken = \"t\"", "admin"),
        ("[monitor]\ninterval = \"0s\"", "monitor.interval"),
        ("[cache]\nignore_query = [\"a=b\"]", "cache.ignore_query"),
        ("[cache]\nquery_order = \"random\"", "cache.query_order"),
        ("[cache]\nstatus_extension = \"sometimes\"", "cache.status_extension"),
        ("[cache]\nttl_for = [{ path = \"(\", ttl = \"1s\" }]", "cache.ttl_for"),
        (
            "[cache]\nttl_for = [{ path = \"^/a\", ttl = \"soon\" }]",
            "cache.ttl_for",
        ),
        (
            "[circuit_breaker]\nfailure_rate = 250.0",
            "circuit_breaker.failure_rate",
        ),
        ("[circuit_breaker]\nwindow_calls = 0", "circuit_breaker.window_calls"),
        (
            "[circuit_breaker]\nconsecutive_failures = 0",
            "circuit_breaker.consecutive_failures",
        ),
        (
            "[circuit_breaker]\nhalf_open_calls = 0",
            "circuit_breaker.half_open_calls",
        ),
        ("[circuit_breaker]\nopen = \"0s\"", "circuit_breaker.open"),
        (
            "[circuit_breaker]\nopen = \"10s\"\nmax_open = \"1s\"",
            "circuit_breaker.max_open",
        ),
        ("[circuit_breaker]\nwhen_open = \"panic\"", "circuit_breaker.when_open"),
        (
            "[circuit_breaker]\nclassifier = \"protobuf\"",
            "circuit_breaker.classifier",
        ),
        ("[retry]\nmethods = \"some\"", "retry.methods"),
        ("[retry]\nbackoff = \"soon\"", "retry.backoff"),
        ("[retry]\ndeadline = \"later\"", "retry.deadline"),
        ("[retry]\nbudget_window = \"1 week\"", "retry.budget_window"),
        ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
        ("[retry]\nbackoff = \"2s\"\nmax_backoff = \"1s\"", "retry.max_backoff"),
        ("[retry]\nbudget_window = \"1ms\"", "retry.budget_window"),
        ("[retry]\nbudget_ratio = -1.0", "retry.budget_ratio"),
        ("[client]\nconnect_timeout = \"x\"", "client.connect_timeout"),
        ("[client]\nhttp2_keep_alive = \"often\"", "client.http2_keep_alive"),
        (
            "[client]\nhttp2_keep_alive_timeout = \"soon\"",
            "client.http2_keep_alive_timeout",
        ),
        ("concurrency_limit = 0", "concurrency_limit"),
        ("per_host_limit = 0", "per_host_limit"),
        ("max_wait = \"a while\"", "max_wait"),
        ("load_shed = true\nmax_wait = \"100ms\"", "max_wait"),
        (
            "[monitor]\nroute_templates = [\"users/{id}\"]",
            "monitor.route_templates",
        ),
        ("[cache]\nmax_memry_mb = 1", "cache.max_memry_mb"),
    ];
    for (text, field) in cases {
        let built = OptimizerConfig::from_toml(text)
            .and_then(OptimizerConfig::into_builder)
            .and_then(OptimizerStackBuilder::build::<()>);
        let err = built.map(|_| ()).unwrap_err();
        assert_eq!(err.field(), field, "{text}: {err}");
    }
}

#[test]
fn errors_say_where_and_why() {
    let err = OptimizerConfig::from_toml("timeout = \"1s\"\n[cache]\nmax_memory_mb = \"64\"\n").unwrap_err();
    assert!(err.to_string().contains("(line 3, column 17)"), "{err}");
    assert!(err.to_string().contains("expected u64"), "{err}");
    let err = OptimizerConfig::from_toml("[cache]\nexclude = [\"^/ok$\", \"/private/(\"]")
        .and_then(OptimizerConfig::into_builder)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("unclosed group"), "the regex's reason: {err}");
    assert_eq!(
        super::line_and_column("ab\ncé\nx", 6),
        (2, 3),
        "columns count characters"
    );
    assert_eq!(super::line_and_column("abc", 0), (1, 1));
}
