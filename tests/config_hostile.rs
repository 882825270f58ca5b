//! Hostile configuration files: TOML over every key the stack reads, each
//! given values from the edges of its type (zero, one, 2^32, `i64::MAX`,
//! negative, NaN, infinite, durations of a millisecond and of a hundred
//! billion days, `"off"`, junk words, regexes that do not compile) and now
//! and then a value of another type. Nothing panics, neither loading the
//! file, nor building the stack, nor serving requests through it on paused
//! time; a file that is refused names a key it holds (or `config` when the
//! TOML itself is wrong) in its error.
#![cfg(feature = "stack")]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};
use tower_optimizer::stack::{OptimizerConfig, OptimizerStackBuilder, StackError};

/// What kind of value a key takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Float,
    Bool,
    Duration,
    /// A duration, or `"off"`.
    DurationOrOff,
    /// One of these words (or junk).
    Word(&'static [&'static str]),
    /// A list of strings: regexes, header names, parameter names.
    Strings,
    /// A list of these URLs (or junk).
    Urls(&'static [&'static str]),
}

use Kind::{Bool, Duration as Dur, DurationOrOff, Float, Int, Strings, Urls, Word};

/// Every key the file reads, by section (`""` is the top level).
const KEYS: &[(&str, &str, Kind)] = &[
    ("", "timeout", Dur),
    ("", "concurrency_limit", Int),
    ("", "per_host_limit", Int),
    ("", "load_shed", Bool),
    ("", "max_wait", Dur),
    ("", "warm_up_timeout", Dur),
    ("", "warm_up_parallelism", Int),
    ("cache", "max_memory_mb", Int),
    ("cache", "max_entry_kb", Int),
    ("cache", "stream_above_kb", Int),
    ("cache", "max_inflight_mb", Int),
    ("cache", "max_variants", Int),
    ("cache", "default_ttl", Dur),
    ("cache", "max_ttl", Dur),
    ("cache", "stale_if_error", Dur),
    ("cache", "lock_timeout", Dur),
    ("cache", "stale_retention", Dur),
    ("cache", "remember_uncacheable", DurationOrOff),
    ("cache", "sweep_interval", DurationOrOff),
    ("cache", "heuristic_freshness", Int),
    ("cache", "mode", Word(&["private", "shared"])),
    ("cache", "authorization", Word(&["bypass", "rfc", "store"])),
    ("cache", "set_cookie", Word(&["do-not-store", "store"])),
    ("cache", "status_extension", Word(&["insert", "omit"])),
    ("cache", "query_order", Word(&["as-sent", "sorted"])),
    ("cache", "ignore_query", Strings),
    ("cache", "vary_on", Strings),
    ("cache", "exclude", Strings),
    ("circuit_breaker", "window_calls", Int),
    ("circuit_breaker", "window", Dur),
    ("circuit_breaker", "window_buckets", Int),
    ("circuit_breaker", "failure_rate", Float),
    ("circuit_breaker", "slow_call_rate", Float),
    ("circuit_breaker", "slow_call_duration", Dur),
    ("circuit_breaker", "minimum_calls", Int),
    ("circuit_breaker", "consecutive_failures", Int),
    ("circuit_breaker", "open", Dur),
    ("circuit_breaker", "max_open", Dur),
    ("circuit_breaker", "open_backoff", Float),
    ("circuit_breaker", "jitter", Float),
    ("circuit_breaker", "half_open_calls", Int),
    ("circuit_breaker", "max_half_open", Dur),
    ("circuit_breaker", "key", Word(&["authority", "global"])),
    ("circuit_breaker", "max_keys", Int),
    ("circuit_breaker", "idle", Dur),
    ("circuit_breaker", "when_open", Word(&["error", "respond_503"])),
    ("circuit_breaker", "classifier", Word(&["http", "grpc"])),
    (
        "circuit_breaker.share",
        "peers",
        Urls(&[
            "http://127.0.0.1:9464",
            "https://127.0.0.1:9465/admin",
            "127.0.0.1:9466",
            "ftp://127.0.0.1",
        ]),
    ),
    (
        "circuit_breaker.share",
        "resolve",
        Urls(&["http://localhost:9464", "https://localhost:9465"]),
    ),
    ("circuit_breaker.share", "timeout", Dur),
    (
        "circuit_breaker.share",
        "token_env",
        Word(&["CARGO_PKG_NAME", "TOWER_OPTIMIZER_TEST_UNSET"]),
    ),
    ("retry", "max_attempts", Int),
    ("retry", "backoff", Dur),
    ("retry", "max_backoff", Dur),
    ("retry", "max_retry_after", Dur),
    ("retry", "deadline", Dur),
    ("retry", "methods", Word(&["idempotent", "all"])),
    ("retry", "budget_ratio", Float),
    ("retry", "budget_min_per_second", Int),
    ("retry", "budget_window", Dur),
    ("monitor", "interval", Dur),
    ("monitor", "max_server_addresses", Int),
    ("monitor", "default_alerts", Bool),
    ("monitor", "route_templates", Strings),
    (
        "monitor.alertmanager",
        "url",
        Word(&[
            "http://127.0.0.1:9093",
            "https://127.0.0.1:9093/prefix",
            "127.0.0.1:9093",
        ]),
    ),
    (
        "monitor.alertmanager",
        "generator_url",
        Word(&["http://127.0.0.1:9464/dashboard", "/dashboard"]),
    ),
    ("monitor.alertmanager", "resend", Dur),
    ("monitor.alertmanager", "timeout", Dur),
    (
        "monitor.alertmanager",
        "token_env",
        Word(&["CARGO_PKG_NAME", "TOWER_OPTIMIZER_TEST_UNSET"]),
    ),
];

/// A value of `kind` as TOML text: one a setting takes `sane` times in
/// `sane + 2`, else from the edges of the kind.
fn value(kind: Kind, sane: u32) -> BoxedStrategy<String> {
    let ints = prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("2".to_owned()),
        Just("7".to_owned()),
        Just("100".to_owned()),
        Just("65536".to_owned()),
        Just("4294967296".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("-1".to_owned()),
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    let floats = prop_oneof![
        Just("0.0".to_owned()),
        Just("0.5".to_owned()),
        Just("1.0".to_owned()),
        Just("50.0".to_owned()),
        Just("100.0".to_owned()),
        Just("101.0".to_owned()),
        Just("-1.0".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("1e300".to_owned()),
    ];
    let durations = prop_oneof![
        Just("0s"),
        Just("1ms"),
        Just("250ms"),
        Just("1s"),
        Just("30s"),
        Just("5m"),
        Just("1h"),
        Just("2d"),
        Just("1.5s"),
        Just("100000000000d"),
        Just("soon"),
        Just(""),
        Just("-1s"),
    ]
    .prop_map(|d| format!("{d:?}"));
    // Mostly values a setting takes, so that many files build and serve;
    // the edges the rest of the time.
    let sane_durations = prop_oneof![Just("1s"), Just("30s"), Just("5m"), Just("250ms")].prop_map(|d| format!("{d:?}"));
    let typed = match kind {
        Int => prop_oneof![sane => (1u32..200).prop_map(|n| n.to_string()), 2 => ints].boxed(),
        Float => prop_oneof![sane => (1u32..100).prop_map(|n| format!("{n}.0")), 2 => floats].boxed(),
        Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        Dur => prop_oneof![sane => sane_durations, 2 => durations].boxed(),
        DurationOrOff => prop_oneof![sane => sane_durations, 2 => durations, 1 => Just("\"off\"".to_owned())].boxed(),
        Word(words) => prop_oneof![
            sane => proptest::sample::select(words).prop_map(|w| format!("{w:?}")),
            1 => Just("\"sometimes\"".to_owned()),
            1 => Just("\"\"".to_owned()),
        ]
        .boxed(),
        Strings => proptest::collection::vec(
            prop_oneof![
                Just("utm_*"),
                Just("x-tenant"),
                Just("bad header"),
                Just("^/users/\\\\d+$"),
                Just("(unclosed"),
                Just("/users/{id}"),
                Just("a=b"),
                Just(""),
            ],
            0..3,
        )
        .prop_map(|items| format!("{items:?}"))
        .boxed(),
        Urls(urls) => proptest::collection::vec(proptest::sample::select(urls), 0..3)
            .prop_map(|items| format!("{items:?}"))
            .boxed(),
    };
    // Now and then a value of another type altogether.
    prop_oneof![20 * sane => typed, 1 => Just("\"42\"".to_owned()), 1 => Just("[1, 2]".to_owned())].boxed()
}

/// A file setting a random subset of the keys, values as [`value`] picks
/// them.
fn config_text(sane: u32) -> impl Strategy<Value = (String, Vec<String>)> {
    let keys: Vec<BoxedStrategy<Option<(usize, String)>>> = KEYS
        .iter()
        .enumerate()
        .map(|(i, &(_, _, kind))| proptest::option::weighted(0.08, value(kind, sane).prop_map(move |v| (i, v))).boxed())
        .collect();
    keys.prop_map(|chosen| {
        let chosen: Vec<(usize, String)> = chosen.into_iter().flatten().collect();
        let mut text = String::new();
        let mut paths = Vec::new();
        for section in [
            "",
            "cache",
            "circuit_breaker",
            "circuit_breaker.share",
            "retry",
            "monitor",
            "monitor.alertmanager",
        ] {
            let lines: Vec<&(usize, String)> = chosen.iter().filter(|(i, _)| KEYS[*i].0 == section).collect();
            if lines.is_empty() {
                continue;
            }
            if !section.is_empty() {
                let _ = writeln!(text, "[{section}]");
            }
            for (i, value) in lines {
                let key = KEYS[*i].1;
                let _ = writeln!(text, "{key} = {value}");
                paths.push(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
        (text, paths)
    })
}

/// A refusal names a key of the file (or an item of one, `cache.exclude[0]`),
/// or the key one of them needs beside it, or a section it set (or a table
/// missing a key it needs), or `config` for the TOML as a whole, or a builder
/// setting of the same name.
fn names_a_key(err: &StackError, paths: &[String]) -> bool {
    let field = err.field();
    let within = |p: &String| {
        field
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
    };
    // A key that needs another names the one missing.
    let partner = |p: &String| p == "circuit_breaker.slow_call_duration" && field == "circuit_breaker.slow_call_rate";
    // A table missing a key it needs (`url`) is named as the table.
    let table = |p: &String| p.strip_prefix(field).is_some_and(|rest| rest.starts_with('.'));
    field == "config"
        || paths.iter().any(within)
        || paths.iter().any(table)
        || paths.iter().any(partner)
        || paths.iter().any(|p| p.split('.').next() == Some(field))
        || [
            "timeout",
            "concurrency_limit",
            "per_host_limit",
            "max_wait",
            "warm_up_timeout",
            "warm_up_parallelism",
        ]
        .contains(&field)
}

/// An upstream that answers in turn: cacheable, a 503, uncacheable, a 500.
fn upstream()
-> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ Sync {
    let turn = Arc::new(AtomicUsize::new(0));
    service_fn(move |_req: Request<Full<Bytes>>| {
        let n = turn.fetch_add(1, Ordering::SeqCst);
        async move {
            let (status, cache_control) = match n % 4 {
                0 => (200, "max-age=60, stale-if-error=600"),
                1 => (503, "no-store"),
                2 => (200, "no-store"),
                _ => (500, "max-age=1"),
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .header("cache-control", cache_control)
                    .header("retry-after", "1")
                    .body(Full::new(Bytes::from_static(b"body")))
                    .unwrap(),
            )
        }
    })
}

/// Loads `text`, builds the stack and serves a few requests through it;
/// a refusal must name a key of `paths`.
fn load_build_serve(text: &str, paths: &[String]) -> Result<(), TestCaseError> {
    count_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let built = OptimizerConfig::from_toml(text)
            .and_then(OptimizerConfig::into_builder)
            .and_then(OptimizerStackBuilder::build::<Full<Bytes>>);
        let (layer, optimizer) = match built {
            Ok(built) => built,
            Err(err) => {
                prop_assert!(!err.field().is_empty());
                prop_assert!(err.to_string().contains(err.field()), "{err}");
                prop_assert!(names_a_key(&err, paths), "{err} names no key of\n{text}");
                return Ok(());
            }
        };
        // Every background task starts: the monitor's sampler, the
        // cache's sweep and memory-pressure watcher run on the file's
        // periods, however long.
        let _ = optimizer.start().await;
        let svc = layer.layer(upstream());
        for i in 0..6 {
            let uri = format!("http://api{}.test/items/{}", i % 2, i % 3);
            let request = Request::get(uri).body(Full::default()).unwrap();
            if let Ok(response) = svc.clone().oneshot(request).await {
                let _ = response.into_body().collect().await;
            }
            tokio::time::advance(Duration::from_secs(20)).await;
        }
        let stats = optimizer.shutdown(Duration::from_secs(1)).await;
        prop_assert_eq!(stats.in_flight, 0);
        Ok(())
    })?;
    // A background task's panic ends the task, not the test: count them.
    prop_assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a background task panicked on\n{}",
        text
    );
    Ok(())
}

/// Panics seen anywhere in this test binary.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic (then reports it as before).
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            report(info);
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Values from the edges as often as not: most files are refused.
    #[test]
    fn no_file_panics_and_each_refusal_names_its_key((text, paths) in config_text(2)) {
        load_build_serve(&text, &paths)?;
    }

    /// Mostly values the settings take: most files build, and serve.
    #[test]
    fn files_that_build_serve_without_panic((text, paths) in config_text(30)) {
        load_build_serve(&text, &paths)?;
    }
}
