//! Unit tests of `OptimizerConfig`: TOML in, settings or a named error out.
use super::*;
use crate::circuit_breaker::{KeyBy, WindowKind};
use crate::monitor::{AlertRule, Severity};

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
    let pressure = config.cache.as_ref().unwrap().memory_pressure.as_ref().unwrap();
    assert_eq!((pressure.high_mb, pressure.low_mb), (Some(1024), Some(896)));
    assert_eq!(
        config.circuit_breaker.as_ref().unwrap().key.as_deref(),
        Some("authority")
    );
    let monitor = config.monitor.as_ref().unwrap();
    assert_eq!(monitor.max_server_addresses, Some(256));
    assert!(monitor.route_templates.as_ref().is_some_and(|t| !t.is_empty()));
    assert_eq!(config.warm_up_parallelism, Some(8));
    assert_eq!(monitor.alerts.as_ref().map(Vec::len), Some(4));
    assert_eq!(monitor.readiness.as_ref().map(Vec::len), Some(1));
    assert_eq!(monitor.inhibit.as_ref().map(Vec::len), Some(2));
    let builder = config.into_builder().unwrap();
    // Over the stack's own client, which its recovery probe needs.
    let (_client, optimizer) = builder.build_http2_client().unwrap();
    assert!(optimizer.breakers().unwrap().inner.config.probe.is_some());
    assert!(optimizer.health().contains("api"));
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
        ("warm_up_parallelism = 0", "warm_up_parallelism"),
        ("[cache]\nmode = \"public\"", "cache.mode"),
        ("[cache]\nexclude = [\"(\"]", "cache.exclude"),
        ("[cache]\nvary_on = [\"x tenant\"]", "cache.vary_on"),
        ("[cache]\nmax_memory_mb = 0", "cache.max_memory_mb"),
        ("[cache]\nmax_memory_mb = \"64\"", "cache.max_memory_mb"),
        ("timeout = 10", "timeout"),
        ("[client]\npool_max_idle_per_host = -1", "client.pool_max_idle_per_host"),
        ("[cache\n", "config"),
        // TOML's own errors name the key on their line.
        ("[cache]\nmax_memory_mb = 99999999999999999999", "cache.max_memory_mb"),
        ("timeout = \"10s", "timeout"),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 1\n[[monitor.alerts]]\nname = \"B\"\nabove = 1e99999x",
            "monitor.alerts[1].above",
        ),
        ("[cache]\n= 1", "config"),
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
        ("[retry]\nbackoff = \"30s\"", "retry.backoff"),
        ("[circuit_breaker]\nopen = \"1h\"", "circuit_breaker.open"),
        ("[retry]\nbudget_window = \"1ms\"", "retry.budget_window"),
        ("[retry]\nbudget_ratio = -1.0", "retry.budget_ratio"),
        ("[client]\nconnect_timeout = \"x\"", "client.connect_timeout"),
        ("[client]\nhttp2_keep_alive = \"often\"", "client.http2_keep_alive"),
        (
            "[client]\nhttp2_keep_alive_timeout = \"soon\"",
            "client.http2_keep_alive_timeout",
        ),
        ("concurrency_limit = 0", "concurrency_limit"),
        ("concurrency_limit = 9223372036854775807", "concurrency_limit"),
        ("per_host_limit = 9223372036854775807", "per_host_limit"),
        (
            "[circuit_breaker]\nwindow_calls = 9223372036854775807",
            "circuit_breaker.window_calls",
        ),
        (
            "[circuit_breaker]\nwindow = \"60s\"\nwindow_buckets = 4294967296",
            "circuit_breaker.window",
        ),
        ("per_host_limit = 0", "per_host_limit"),
        ("max_wait = \"a while\"", "max_wait"),
        ("load_shed = true\nmax_wait = \"100ms\"", "max_wait"),
        (
            "[monitor]\nroute_templates = [\"users/{id}\"]",
            "monitor.route_templates",
        ),
        ("[cache]\nmax_memry_mb = 1", "cache.max_memry_mb"),
        ("[cache]\nmax_inflight_mb = \"a lot\"", "cache.max_inflight_mb"),
        ("[cache]\nmax_variants = 0", "cache.max_variants"),
        ("[cache]\nauthorization = \"sometimes\"", "cache.authorization"),
        ("[cache]\nset_cookie = \"yes\"", "cache.set_cookie"),
        ("[cache]\nheuristic_freshness = 150", "cache.heuristic_freshness"),
        ("[cache]\nheuristic_freshness = 300", "cache.heuristic_freshness"),
        ("[cache]\nlock_timeout = \"soon\"", "cache.lock_timeout"),
        (
            "[cache]\nremember_uncacheable = \"never\"",
            "cache.remember_uncacheable",
        ),
        ("[cache]\nstale_retention = \"a while\"", "cache.stale_retention"),
        ("[cache]\nsweep_interval = \"0s\"", "cache.sweep_interval"),
        ("[cache]\npersist = \"\"", "cache.persist"),
        ("[cache]\nsave_every = \"1m\"", "cache.save_every"),
        (
            "[cache]\npersist = \"c.bin\"\nsave_every = \"often\"",
            "cache.save_every",
        ),
        ("[cache]\npersist = \"c.bin\"\nsave_every = \"0s\"", "cache.save_every"),
        ("[cache.memory_pressure]\n", "cache.memory_pressure"),
        ("[cache.memory_pressure]\nhigh_mb = 100", "cache.memory_pressure.low_mb"),
        (
            "[cache.memory_pressure]\nlow_fraction = 0.5",
            "cache.memory_pressure.high_fraction",
        ),
        (
            "[cache.memory_pressure]\nhigh_mb = 100\nlow_mb = 200",
            "cache.memory_pressure",
        ),
        (
            "[cache.memory_pressure]\nhigh_mb = 2\nlow_mb = 1\nhigh_fraction = 0.9\nlow_fraction = 0.8",
            "cache.memory_pressure",
        ),
        (
            "[cache.memory_pressure]\nsource = \"swap\"\nhigh_mb = 2\nlow_mb = 1",
            "cache.memory_pressure.source",
        ),
        (
            "[cache.memory_pressure]\nsource = \"process\"\nhigh_fraction = 0.9\nlow_fraction = 0.8",
            "cache.memory_pressure.source",
        ),
        (
            "[cache.memory_pressure]\nhigh_fraction = 1.5\nlow_fraction = 0.8",
            "cache.memory_pressure.high_fraction",
        ),
        (
            "[cache.memory_pressure]\nhigh_mb = 2\nlow_mb = 1\ninterval = \"0s\"",
            "cache.memory_pressure.interval",
        ),
        (
            "[cache.memory_pressure]\nhigh_mb = 2\nlow_mb = 1\nhigh_watermark = 3",
            "cache.memory_pressure.high_watermark",
        ),
        (
            "[circuit_breaker]\nwindow = \"60s\"\nwindow_calls = 20",
            "circuit_breaker.window",
        ),
        ("[circuit_breaker]\nwindow = \"0s\"", "circuit_breaker.window"),
        ("[circuit_breaker]\nwindow = \"1 year\"", "circuit_breaker.window"),
        (
            "[circuit_breaker]\nwindow = \"60s\"\nwindow_buckets = 0",
            "circuit_breaker.window_buckets",
        ),
        (
            "[circuit_breaker]\nwindow_buckets = 6",
            "circuit_breaker.window_buckets",
        ),
        (
            "[circuit_breaker]\nslow_call_duration = \"1s\"",
            "circuit_breaker.slow_call_rate",
        ),
        (
            "[circuit_breaker]\nslow_call_rate = 0.0",
            "circuit_breaker.slow_call_rate",
        ),
        (
            "[circuit_breaker]\nslow_call_rate = 50.0\nslow_call_duration = \"x\"",
            "circuit_breaker.slow_call_duration",
        ),
        ("[circuit_breaker]\nopen_backoff = 0.5", "circuit_breaker.open_backoff"),
        ("[circuit_breaker]\njitter = 1.0", "circuit_breaker.jitter"),
        (
            "[circuit_breaker]\nmax_half_open = \"0s\"",
            "circuit_breaker.max_half_open",
        ),
        ("[circuit_breaker]\nkey = \"path\"", "circuit_breaker.key"),
        ("[circuit_breaker]\nmax_keys = 0", "circuit_breaker.max_keys"),
        ("[circuit_breaker]\nidle = \"x\"", "circuit_breaker.idle"),
        ("[monitor]\nhistory = \"0s\"", "monitor.history"),
        ("[monitor]\nhistory = \"a while\"", "monitor.history"),
        (
            "[[monitor.inhibit]]\nsource = \"CircuitOpn\"\ntargets = [\"HighErrorRate\"]",
            "monitor.inhibit[0].source",
        ),
        (
            "[[monitor.inhibit]]\nsource = \"CircuitOpen\"\ntargets = [\"HighErrorRate\", \"Slow\"]",
            "monitor.inhibit[0].targets",
        ),
        (
            "[[monitor.inhibit]]\nsource = \"CircuitOpen\"\ntargets = []",
            "monitor.inhibit[0].targets",
        ),
        (
            "[[monitor.inhibit]]\nsource = \"CircuitOpen\"\ntargets = [\"HighErrorRate\"]\nequal = [\"server.address\"]",
            "monitor.inhibit[0].equal",
        ),
        ("[circuit_breaker.share]\npeers = []", "circuit_breaker.share"),
        (
            "[circuit_breaker.share]\npeers = [\"http://10.0.0.2:9464\", \"10.0.0.3:9464\"]",
            "circuit_breaker.share.peers",
        ),
        (
            "[circuit_breaker.share]\npeers = [\"http://peer.test\"]\ntoken_env = \"TOWER_OPTIMIZER_TEST_UNSET\"",
            "circuit_breaker.share.token_env",
        ),
        (
            "[circuit_breaker.share]\npeers = [\"http://peer.test\"]\ntimeout = \"0s\"",
            "circuit_breaker.share.timeout",
        ),
        (
            "[circuit_breaker.share]\npeers = [\"http://peer.test\"]\ntimeout = \"soon\"",
            "circuit_breaker.share.timeout",
        ),
        (
            "[circuit_breaker.share]\npeers = [\"http://peer.test\"]\nretries = 3",
            "circuit_breaker.share.retries",
        ),
        (
            "[monitor.alertmanager]\nurl = \"am.test:9093\"",
            "monitor.alertmanager.url",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\ntoken_env = \"TOWER_OPTIMIZER_TEST_UNSET\"",
            "monitor.alertmanager.token_env",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\ntoken_env = \"CARGO_PKG_NAME\"\nauthorization_env = \"CARGO_PKG_NAME\"",
            "monitor.alertmanager.authorization_env",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\nlabels = { \"team-name\" = \"x\" }",
            "monitor.alertmanager.labels",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\nresend = \"0s\"",
            "monitor.alertmanager.resend",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\ntimeout = \"0s\"",
            "monitor.alertmanager.timeout",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\ngenerator_url = \"dashboard\"",
            "monitor.alertmanager.generator_url",
        ),
        (
            "[monitor.alertmanager]\nurl = \"http://am.test\"\ntimeout = \"soon\"",
            "monitor.alertmanager.timeout",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"cache.hit_ratio\"\nbelow = 0.5\nscope = \"per_host\"",
            "monitor.alerts[0].figure",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 0.5\nscope = \"host\"",
            "monitor.alerts[0].scope",
        ),
        (
            "[[monitor.readiness]]\nname = \"api\"\nurl = \"http://api.test/health\"\ntimeout = \"soon\"",
            "monitor.readiness[0].timeout",
        ),
        (
            "[[monitor.readiness]]\nname = \"api\"\nurl = \"http://api.test/health\"",
            "readiness_check",
        ),
        (
            "[[monitor.readiness]]\nname = \"api\"\nuri = \"http://api.test/health\"",
            "monitor.readiness[0].uri",
        ),
        (
            "[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\ntoken_env = \"CARGO_PKG_NAME\"",
            "admin.token_env",
        ),
        (
            "[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"TOWER_OPTIMIZER_NO_SUCH_VARIABLE\"",
            "admin.token_env",
        ),
        (
            "[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\nliveness = \"open\"",
            "admin.liveness",
        ),
        (
            "[circuit_breaker]\nprobe_path = \"health\"",
            "circuit_breaker.probe_path",
        ),
        (
            "[circuit_breaker]\nprobe_timeout = \"2s\"",
            "circuit_breaker.probe_path",
        ),
        (
            "[circuit_breaker]\nprobe_path = \"/health\"\nprobe_timeout = \"0s\"",
            "circuit_breaker.probe_timeout",
        ),
        (
            "[circuit_breaker]\nprobe_path = \"/health\"\nprobe_success = \"open\"",
            "circuit_breaker.probe_success",
        ),
        (
            "[circuit_breaker]\nprobe_path = \"/health\"\nkey = \"global\"",
            "circuit_breaker.probe_path",
        ),
        ("[circuit_breaker]\nprobe_path = \"/health\"", "recovery_probe"),
        (
            "[[monitor.alerts]]\nname = \"\"\nfigure = \"http.p99\"\nabove = 1.0",
            "monitor.alerts[0].name",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 1.0\n[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p50\"\nabove = 1.0",
            "monitor.alerts[1].name",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"cache.hitratio\"\nbelow = 0.5",
            "monitor.alerts[0].figure",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"\"\nbelow = 0.5",
            "monitor.alerts[0].figure",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 1.0\nbelow = 0.5",
            "monitor.alerts[0].below",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"",
            "monitor.alerts[0].above",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nbelow = nan",
            "monitor.alerts[0].below",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 1.0\nfor = \"a bit\"",
            "monitor.alerts[0].for",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nabove = 1.0\nseverity = \"page\"",
            "monitor.alerts[0].severity",
        ),
        (
            "[[monitor.alerts]]\nname = \"A\"\nfigure = \"http.p99\"\nthreshold = 1.0",
            "monitor.alerts[0].threshold",
        ),
    ];
    for (text, field) in cases {
        let built = OptimizerConfig::from_toml(text)
            .and_then(OptimizerConfig::into_builder)
            .and_then(OptimizerStackBuilder::build::<()>);
        let Err(err) = built.map(|_| ()) else {
            panic!("{text}: accepted");
        };
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

#[test]
fn a_choice_names_every_word_it_takes() {
    let err = OptimizerConfig::from_toml("[cache]\nauthorization = \"sometimes\"")
        .and_then(OptimizerConfig::into_builder)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#""sometimes": use "bypass", "rfc" or "store""#),
        "{err}"
    );
    let err = OptimizerConfig::from_toml("[cache]\nmode = \"public\"")
        .and_then(OptimizerConfig::into_builder)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains(r#""public": use "private" or "shared""#),
        "{err}"
    );
}

/// The optimizer a TOML text builds (its layer dropped).
fn built(text: &str) -> crate::Optimizer {
    let (_layer, optimizer) = OptimizerConfig::from_toml(text)
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build::<()>)
        .unwrap();
    optimizer
}

#[test]
fn every_cache_setting_reaches_the_cache() {
    let optimizer = built(
        r#"
        [cache]
        max_memory_mb = 64
        max_inflight_mb = 3
        max_variants = 3
        heuristic_freshness = 10
        lock_timeout = "750ms"
        remember_uncacheable = "off"
        stale_retention = "90s"
        sweep_interval = "off"
        persist = "/var/cache/app/optimizer.cache"
        save_every = "10m"
        [cache.memory_pressure]
        high_mb = 512
        low_mb = 384
        interval = "2s"
        "#,
    );
    let inner = &optimizer.cache().unwrap().inner;
    assert_eq!(inner.max_inflight_bytes, 3 << 20);
    assert_eq!(inner.lifetimes.heuristic_percent, Some(10));
    assert_eq!(inner.lock_timeout, Duration::from_millis(750));
    assert_eq!(inner.remember_uncacheable, None);
    assert_eq!(inner.sweep_interval, None);
    let pressure = inner.pressure.as_ref().unwrap();
    assert!(matches!(pressure.source, crate::cache::MemorySource::ProcessRss));
    assert_eq!((pressure.high, pressure.low), (512 << 20, 384 << 20));
    assert_eq!(pressure.interval, Duration::from_secs(2));
    let store = format!("{:?}", inner.store);
    assert!(store.contains("max_variants: 3"), "{store}");
    assert!(
        store.contains("retention: 90000000000,"),
        "90 s, in nanoseconds: {store}"
    );
    let file = optimizer.inner.cache_file.as_ref().unwrap();
    assert_eq!(file.path, std::path::Path::new("/var/cache/app/optimizer.cache"));
    assert_eq!(file.every, Some(Duration::from_secs(600)));

    let defaults = built("[cache]\nmax_memory_mb = 64");
    let inner = &defaults.cache().unwrap().inner;
    assert_eq!(inner.max_inflight_bytes, 16 << 20, "a quarter of the budget");
    assert_eq!(inner.lifetimes.heuristic_percent, None);
    assert_eq!(inner.lock_timeout, crate::cache::DEFAULT_LOCK_TIMEOUT);
    assert_eq!(
        inner.remember_uncacheable,
        Some(crate::cache::DEFAULT_REMEMBER_UNCACHEABLE)
    );
    assert_eq!(inner.sweep_interval, Some(crate::cache::DEFAULT_SWEEP_INTERVAL));
    assert!(inner.pressure.is_none());
    assert!(defaults.inner.cache_file.is_none());
}

#[test]
fn memory_pressure_as_fractions_of_the_cgroup_limit() {
    let text = "[cache.memory_pressure]\nhigh_fraction = 0.9\nlow_fraction = 0.8";
    let built = OptimizerConfig::from_toml(text)
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build::<()>);
    // Either way the machine is, the answer is checked: a limit gives
    // watermarks under it, no limit a clear error.
    if let Some(limit) = crate::cache::pressure::cgroup_limit() {
        let (_layer, optimizer) = built.unwrap();
        let pressure = optimizer.cache().unwrap().inner.pressure.clone().unwrap();
        assert!(matches!(pressure.source, crate::cache::MemorySource::Cgroup));
        assert!(
            pressure.low < pressure.high && pressure.high < limit,
            "{pressure:?} under {limit}"
        );
    } else {
        let err = built.map(|_| ()).unwrap_err();
        assert_eq!(err.field(), "cache.memory_pressure.high_fraction");
        assert!(err.to_string().contains("no cgroup memory limit"), "{err}");
    }
}

#[tokio::test]
async fn authorization_and_set_cookie_policies_reach_the_cache() {
    use tower::{Layer as _, ServiceExt as _};
    type Full = http_body_util::Full<bytes::Bytes>;
    // Two requests to one URI; whether the second is answered from the
    // store says what the first's answer was allowed.
    let second_is_a_hit = |text: &'static str, authorization: bool, set_cookie: bool| async move {
        let (layer, _optimizer) = OptimizerConfig::from_toml(text)
            .and_then(OptimizerConfig::into_builder)
            .and_then(OptimizerStackBuilder::build::<Full>)
            .unwrap();
        let upstream = tower::service_fn(move |_req: http::Request<Full>| async move {
            let mut response = http::Response::builder().header("cache-control", "public, max-age=60");
            if set_cookie {
                response = response.header("set-cookie", "session=1");
            }
            Ok::<_, std::convert::Infallible>(response.body(Full::new(bytes::Bytes::from_static(b"x"))).unwrap())
        });
        let svc = layer.layer(upstream);
        let mut last = None;
        for _ in 0..2 {
            let mut request = http::Request::get("http://api.test/a");
            if authorization {
                request = request.header("authorization", "Bearer t");
            }
            let response = svc
                .clone()
                .oneshot(request.body(Full::default()).unwrap())
                .await
                .unwrap();
            last = Some(crate::cache::CacheStatus::from_headers(response.headers()).unwrap());
        }
        last.unwrap().hit
    };
    assert!(!second_is_a_hit("[cache]\n", true, false).await, "private: bypassed");
    assert!(second_is_a_hit("[cache]\nauthorization = \"store\"", true, false).await);
    assert!(
        second_is_a_hit("[cache]\nmode = \"shared\"\nauthorization = \"rfc\"", true, false).await,
        "shared, and the answer says public (RFC 9111 §3.5)"
    );
    assert!(!second_is_a_hit("[cache]\nauthorization = \"bypass\"", true, false).await);
    assert!(
        !second_is_a_hit("[cache]\n", false, true).await,
        "Set-Cookie: not stored"
    );
    assert!(second_is_a_hit("[cache]\nset_cookie = \"store\"", false, true).await);
}

#[test]
fn every_breaker_setting_reaches_the_breakers() {
    let optimizer = built(
        r#"
        [circuit_breaker]
        window = "60s"
        window_buckets = 6
        slow_call_rate = 80.0
        slow_call_duration = "2s"
        open_backoff = 1.5
        jitter = 0.2
        max_half_open = "5s"
        key = "global"
        max_keys = 64
        idle = "1m"
        "#,
    );
    let config = &optimizer.breakers().unwrap().inner.config;
    assert!(
        matches!(config.window, WindowKind::Time { length, buckets: 6 } if length == Duration::from_secs(60)),
        "{:?}",
        config.window
    );
    assert_eq!(config.slow_rate, Some(80.0));
    assert_eq!(config.slow_call, Duration::from_secs(2));
    assert!((config.backoff - 1.5).abs() < f64::EPSILON);
    assert!((config.jitter - 0.2).abs() < f64::EPSILON);
    assert_eq!(config.half_open_calls, crate::circuit_breaker::DEFAULT_HALF_OPEN_CALLS);
    assert_eq!(config.max_half_open, Duration::from_secs(5));
    assert!(matches!(config.key, KeyBy::Global));
    assert_eq!((config.max_keys, config.idle), (64, Duration::from_secs(60)));

    let buckets = built("[circuit_breaker]\nwindow = \"30s\"");
    let config = &buckets.breakers().unwrap().inner.config;
    assert!(matches!(
        config.window,
        WindowKind::Time {
            buckets: crate::circuit_breaker::DEFAULT_WINDOW_BUCKETS,
            ..
        }
    ));
    let slow = built("[circuit_breaker]\nslow_call_rate = 50.0");
    let config = &slow.breakers().unwrap().inner.config;
    assert_eq!(config.slow_call, crate::circuit_breaker::DEFAULT_SLOW_CALL);
    assert!(matches!(config.key, KeyBy::Authority), "the default key");
}

#[test]
fn alert_rules_reach_the_monitor() {
    let optimizer = built(
        r#"
        [monitor]
        [[monitor.alerts]]
        name = "HighErrorRate"
        figure = "http.error_rate"
        above = 0.2
        for = "2m"
        severity = "critical"
        min_requests = 30
        [[monitor.alerts]]
        name = "QueueDrained"
        figure = "queue.depth"
        below = 1.0
        keep_firing_for = "30s"
        repeat_interval = "1h"
        "#,
    );
    let rules: Vec<AlertRule> = optimizer
        .monitor()
        .unwrap()
        .snapshot()
        .alerts
        .into_iter()
        .map(|status| status.rule)
        .collect();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        rules.len(),
        8,
        "seven built-in rules, one replaced, and one more: {names:?}"
    );
    let replaced = rules.iter().find(|r| r.name == "HighErrorRate").unwrap();
    assert_eq!(
        *replaced,
        AlertRule::above("HighErrorRate", "http.error_rate", 0.2)
            .for_duration(Duration::from_secs(120))
            .severity(Severity::Critical)
            .min_requests(30)
    );
    let added = rules.iter().find(|r| r.name == "QueueDrained").unwrap();
    assert_eq!(
        *added,
        AlertRule::below("QueueDrained", "queue.depth", 1.0)
            .keep_firing_for(Duration::from_secs(30))
            .repeat_interval(Duration::from_secs(3600))
    );

    let only = built(
        "[monitor]\ndefault_alerts = false\n[[monitor.alerts]]\nname = \"Busy\"\nfigure = \"process.cpu_percent\"\nabove = 90.0",
    );
    let rules = only.monitor().unwrap().snapshot().alerts;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].rule, AlertRule::above("Busy", "process.cpu_percent", 90.0));
    let none = built("[monitor]\ndefault_alerts = false");
    assert!(none.monitor().unwrap().snapshot().alerts.is_empty());
}

/// `scope = "per_host"` and `equal = ["host"]` from the file: a host's
/// open circuit holds back that host's error-rate alert, not another's.
#[tokio::test(start_paused = true)]
async fn per_host_rules_and_same_host_inhibitions_from_the_file() {
    use crate::monitor::{AlertManager, FigureSet, Scope};
    let config = OptimizerConfig::from_toml(
        r#"
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
        [[monitor.inhibit]]
        source = "HostCircuitOpen"
        targets = ["HostErrors"]
        equal = ["host"]
        "#,
    )
    .unwrap();
    let monitor = config.monitor.unwrap();
    let rules = super::alerts::rules(monitor.alerts.as_deref().unwrap()).unwrap();
    assert!(rules.iter().all(|r| r.scope == Scope::PerHost));
    let mut alerts = AlertManager::new();
    for rule in rules {
        alerts.add_rule(rule);
    }
    super::alerts::inhibit(&mut alerts, monitor.inhibit.as_deref().unwrap()).unwrap();
    let figures = FigureSet::new()
        .with_host("a.test:443", "circuit_breaker.open", 1.0)
        .with_host("a.test:443", "http.error_rate", 1.0)
        .with_host("b.test:443", "http.error_rate", 1.0);
    let mut told: Vec<(String, Option<String>)> = alerts
        .evaluate_figures(&figures, tokio::time::Instant::now())
        .into_iter()
        .map(|a| (a.name, a.host))
        .collect();
    told.sort();
    assert_eq!(
        told,
        [
            ("HostCircuitOpen".to_owned(), Some("a.test:443".to_owned())),
            ("HostErrors".to_owned(), Some("b.test:443".to_owned())),
        ]
    );
}

#[tokio::test]
async fn admin_liveness_reaches_the_admin_service() {
    use tower::ServiceExt as _;
    for (text, status) in [
        ("[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"", 401),
        (
            "[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\nliveness = \"exempt\"",
            200,
        ),
    ] {
        let optimizer = built(text);
        let request = http::Request::get("/health/live")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        let response = optimizer.admin_service(Some("t")).oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{text}");
    }
}

#[tokio::test]
async fn a_recovery_probe_reaches_the_breakers() {
    let text = "[circuit_breaker]\nprobe_path = \"/health\"\nprobe_success = \"closed\"";
    let (_client, optimizer) = OptimizerConfig::from_toml(text)
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build_http2_client)
        .unwrap();
    let config = &optimizer.breakers().unwrap().inner.config;
    assert!(config.probe.is_some());
    assert_eq!(config.probe_success, crate::circuit_breaker::ProbeSuccess::Closed);
    let (_client, optimizer) = OptimizerConfig::from_toml("[circuit_breaker]\n")
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build_http2_client)
        .unwrap();
    assert!(optimizer.breakers().unwrap().inner.config.probe.is_none());
}

/// `token_env` reads the token from the environment: here
/// `CARGO_PKG_NAME`, which cargo sets for every test it runs (a test
/// cannot set a variable of its own: `set_var` is unsafe in this edition,
/// and the crate forbids unsafe code).
#[tokio::test]
async fn the_admin_token_can_come_from_the_environment() {
    use tower::ServiceExt as _;
    let optimizer = built("[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"CARGO_PKG_NAME\"");
    let (_, token) = optimizer.inner.admin.clone().unwrap();
    assert_eq!(token.as_deref(), Some(env!("CARGO_PKG_NAME")));
    let ask = |token: &str| {
        http::Request::get("/stats")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap()
    };
    let admin = optimizer.admin_service(token.as_deref());
    assert_eq!(
        admin.clone().oneshot(ask("tower-optimizer")).await.unwrap().status(),
        200
    );
    assert_eq!(admin.oneshot(ask("guess")).await.unwrap().status(), 401);
}

#[tokio::test]
async fn readiness_checks_reach_the_health_registry() {
    // A port just bound and let go: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text =
        format!("[[monitor.readiness]]\nname = \"api\"\nurl = \"http://127.0.0.1:{port}/health\"\ntimeout = \"2s\"");
    let (_client, optimizer) = OptimizerConfig::from_toml(&text)
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build_http2_client)
        .unwrap();
    assert!(optimizer.health().contains("api"));
    let report = optimizer.health().report(crate::monitor::Probe::Readiness).await;
    let api = &report.checks["api"][0];
    assert_eq!(api.status, crate::monitor::HealthStatus::Fail, "{api:?}");
}

#[tokio::test]
async fn inhibitions_reach_the_alert_manager() {
    let optimizer = built(
        r#"
        [circuit_breaker]
        [monitor]
        default_alerts = false
        [[monitor.alerts]]
        name = "UpstreamDown"
        figure = "circuit_breaker.open"
        above = 0.0
        [[monitor.alerts]]
        name = "AlsoOpen"
        figure = "circuit_breaker.open"
        above = 0.0
        [[monitor.inhibit]]
        source = "UpstreamDown"
        targets = ["AlsoOpen"]
        "#,
    );
    optimizer.breakers().unwrap().force_open("http://api.test");
    let monitor = optimizer.monitor().unwrap();
    monitor.sample_now();
    let statuses = monitor.snapshot().alerts;
    let status = |name: &str| statuses.iter().find(|s| s.rule.name == name).unwrap();
    assert_eq!(status("UpstreamDown").state, crate::monitor::AlertState::Firing);
    assert_eq!(status("AlsoOpen").state, crate::monitor::AlertState::Firing);
    assert_eq!(status("AlsoOpen").inhibited_by.as_deref(), Some("UpstreamDown"));
    assert_eq!(status("UpstreamDown").inhibited_by, None);
}

#[tokio::test]
async fn the_monitor_keeps_the_history_the_file_asks_for() {
    let optimizer = built("[monitor]\ninterval = \"1s\"\nhistory = \"1m\"");
    let monitor = optimizer.monitor().unwrap();
    for _ in 0..70 {
        monitor.sample_now();
    }
    assert_eq!(
        monitor.snapshot().history.len(),
        60,
        "a minute of samples a second apart"
    );
}

/// `examples/optimizer.toml` shows every key each section takes (set, or
/// in a comment): the keys come from the sections' own "expected one of"
/// lists, so a key added to a section and not to the example fails here.
#[test]
fn the_shipped_example_shows_every_key() {
    let example = include_str!("../../../examples/optimizer.toml");
    let mut missing = Vec::new();
    let sections = [
        "",
        "[cache]\n",
        "[cache.memory_pressure]\n",
        "[circuit_breaker]\n",
        "[circuit_breaker.share]\npeers = []\n",
        "[retry]\n",
        "[monitor]\n",
        "[[monitor.alerts]]\n",
        "[[monitor.inhibit]]\n",
        "[[monitor.readiness]]\n",
        "[monitor.alertmanager]\nurl = \"http://127.0.0.1:9093\"\n",
        "[admin]\n",
        "[client]\n",
        "[cache]\nttl_for = [{ unknown_key = 1 }]\n",
    ];
    for section in sections {
        let text = if section.contains("unknown_key") {
            section.to_owned()
        } else {
            format!("{section}unknown_key = 1\n")
        };
        let err = OptimizerConfig::from_toml(&text).unwrap_err().to_string();
        // "expected one of `a`, `b`" or, for two, "expected `a` or `b`".
        let expected = err
            .split("unknown field `unknown_key`, expected ")
            .nth(1)
            .unwrap_or_else(|| panic!("{section}: {err}"));
        let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(!keys.is_empty(), "{err}");
        for key in keys {
            let shown = example.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                // A table (`[cache]`, `[[monitor.alerts]]`) or a key.
                let table =
                    line.starts_with('[') && line.trim_end().trim_matches(['[', ']']).rsplit('.').next() == Some(key);
                table
                    || line.starts_with(&format!("{key} ="))
                    || line.contains(&format!("{{ {key} ="))
                    || line.contains(&format!(", {key} ="))
            });
            if !shown {
                missing.push(format!("{} {key}", section.lines().next().unwrap_or("")));
            }
        }
    }
    assert!(missing.is_empty(), "not in examples/optimizer.toml: {missing:?}");
}
