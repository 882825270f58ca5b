//! The monitoring artifacts shipped in `examples/` (Prometheus alerting
//! rules with their unit tests, the Grafana dashboard) against what the
//! crate really exports: a full stack sends real traffic to an h2c server
//! on 127.0.0.1, its admin server's `/metrics` is scraped, and every metric
//! the artifacts query, and every label they select or group by, must be in
//! that scrape. `promtool` (Debian's `prometheus` package, which `.ci/run`
//! installs) then lints the scrape, checks the rules and the dashboard's
//! queries, and runs the rules' unit tests; it is required when `CI` is set.
#![cfg(all(feature = "stack", feature = "monitor"))]

#[path = "support/gone_peer.rs"]
mod gone_peer;
#[path = "support/server.rs"]
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use server::{Protocol, serve};
use tower::{Service, ServiceExt};
use tower_optimizer::cache::Cache;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, State};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::retry::{RetryConfig, RetryPolicy};
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack};

const TOKEN: &str = "contrib-test";

const RULES: &str = "examples/prometheus-rules.yml";
const RULE_TESTS: &str = "examples/prometheus-rules.test.yml";
const DASHBOARD: &str = "examples/grafana-dashboard.json";

fn file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Labels every series gets from Prometheus itself at scrape time.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// An h2c upstream: `/items/N` cacheable and tagged, `/flaky` always 503.
async fn upstream() -> std::net::SocketAddr {
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let response = if req.uri().path() == "/flaky" {
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(b"down")))
        } else {
            Response::builder()
                .header("cache-control", "max-age=60, stale-if-error=600")
                .header("surrogate-key", "items")
                .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        };
        Ok::<_, std::convert::Infallible>(response.unwrap())
    });
    serve(Protocol::H2c, service).await
}

async fn send(client: &mut OptimizedService<Full<Bytes>>, uri: &str) -> u16 {
    let request = Request::get(uri).body(Full::default()).unwrap();
    match client.ready().await.unwrap().call(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            status
        }
        // An open circuit with no stale copy: the caller's error.
        Err(_) => 0,
    }
}

/// The admin server's `/metrics` after traffic that touches every part of
/// the stack: misses, hits, retries, an opened circuit, an invalidation.
async fn scrape() -> String {
    let upstream = upstream().await;
    let cache = Cache::builder().max_bytes(8 << 20).build().unwrap();
    let invalidator = Invalidator::new(cache.clone());
    let quick = RetryConfig::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    // A peer that is gone (its port closed): the opening sent to it fails.
    let share = gone_peer::sender();
    let (mut client, optimizer) = OptimizerStack::builder()
        .cache(cache)
        .invalidation(InvalidationLayer::new(invalidator.clone()))
        .circuit_breaker(CircuitBreakerConfig::default())
        .share_openings(share.clone())
        .retry(RetryPolicy::new(quick))
        .monitor(MonitorSettings {
            prometheus: true,
            ..MonitorSettings::default()
        })
        .admin("127.0.0.1:0", Some(TOKEN))
        .build_http2_client()
        .unwrap();
    let started = optimizer.start().await.unwrap();
    let admin = started.admin.expect("the admin server listens");
    for i in 0..40 {
        let status = send(&mut client, &format!("http://{upstream}/items/{}", i % 4)).await;
        assert_eq!(status, 200);
    }
    let flaky = format!("http://{upstream}/flaky");
    for _ in 0..30 {
        send(&mut client, &flaky).await;
    }
    let breakers = optimizer.breakers().unwrap();
    assert!(
        breakers.snapshot().iter().any(|b| b.state == State::Open),
        "a host answering only 503 has its circuit opened"
    );
    assert!(invalidator.tag("items").entries > 0, "stored items are tagged");
    // The send of that opening ends (refused, or at its timeout) before
    // the scrape, so the scrape carries its counter.
    gone_peer::until_failed(&share).await;
    let monitor = optimizer.monitor().unwrap();
    // Two samples: CPU use is a difference between readings.
    monitor.sample_now();
    monitor.sample_now();
    let http =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{admin}/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::default())
        .unwrap();
    let response = http.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    optimizer.shutdown(Duration::from_secs(5)).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// The scrape's series: each name (histograms by their `_bucket`, `_count`
/// and `_sum` series) with the label names it carries.
fn series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
        let labels = found.entry(name.to_owned()).or_default();
        if let Some(inner) = rest.strip_prefix('{') {
            let inner = &inner[..inner.rfind('}').unwrap()];
            // Label values here are hosts, states and numbers: no quoted
            // commas or `=`.
            for pair in inner.split(',') {
                labels.insert(pair.split('=').next().unwrap().to_owned());
            }
        }
    }
    found
}

/// Every `name{matchers}` and `by (labels)` in `query` checked against the
/// scrape: names exported, selected labels carried by the metric they
/// select, grouping labels carried by one of the query's metrics. Returns
/// how many metric names the query used.
fn check_query(query: &str, exported: &BTreeMap<String, BTreeSet<String>>, context: &str) -> usize {
    let bytes = query.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // The end of the quoted string opening at `i`.
    let skip_quoted = |mut i: usize| {
        i += 1;
        while bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    let mut used = Vec::new();
    let mut grouped = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            i = skip_quoted(i);
            continue;
        }
        if !bytes[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && word(bytes[i]) {
            i += 1;
        }
        let name = &query[start..i];
        let rest = query[i..].trim_start();
        if (name == "by" || name == "without") && rest.starts_with('(') {
            let close = rest.find(')').unwrap();
            grouped.extend(rest[1..close].split(',').map(|l| l.trim().to_owned()));
            i = query.len() - rest.len() + close + 1;
            continue;
        }
        if !["http_client_", "tower_optimizer_", "process_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let labels = exported.get(name).unwrap_or_else(|| {
            panic!(
                "{context}: {name} is not exported; the scrape has {:?}",
                exported.keys()
            )
        });
        used.push(name.to_owned());
        if bytes.get(i) == Some(&b'{') {
            i += 1;
            while bytes[i] != b'}' {
                let label_start = i;
                while word(bytes[i]) {
                    i += 1;
                }
                let label = query[label_start..i].trim();
                assert!(
                    labels.contains(label) || TARGET_LABELS.contains(&label),
                    "{context}: {name} has no label {label:?} (it has {labels:?})"
                );
                i = skip_quoted(i + query[i..].find('"').unwrap());
                while bytes[i] == b',' || bytes[i] == b' ' {
                    i += 1;
                }
            }
            i += 1;
        }
    }
    for label in grouped {
        let carried = used.iter().any(|name| exported[name].contains(&label));
        assert!(
            carried || TARGET_LABELS.contains(&label.as_str()),
            "{context}: grouping by {label}, which none of {used:?} carries"
        );
    }
    used.len()
}

/// The queries of the rules file: each `expr:`, inline or as a block.
fn rule_queries(rules: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if expr.trim() == "|" {
            let indent = |l: &str| l.len() - l.trim_start().len();
            let base = indent(line);
            let mut block = String::new();
            while let Some(next) = lines.next_if(|l| l.trim().is_empty() || indent(l) > base) {
                block.push_str(next.trim());
                block.push(' ');
            }
            queries.push(block);
        } else {
            queries.push(expr.trim().to_owned());
        }
    }
    queries
}

/// `promtool`, if installed; required when `CI` is set.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have promtool: .ci/run installs Debian's prometheus package"
        );
        eprintln!("NOTE: promtool is not installed here; these checks run on CI (.ci/run installs it)");
    }
    found
}

/// Runs promtool with `args`, feeding it `stdin`; its output, or a panic
/// with it when it fails.
fn run_promtool(promtool: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every query of the dashboard, with the panel it is in.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_owned();
            queries.push((title, target["expr"].as_str().unwrap().to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            // `label_values(selector, label)`: the selector is a query.
            let query = variable["query"].as_str().unwrap();
            let inner = query.strip_prefix("label_values(").unwrap().strip_suffix(')').unwrap();
            let (selector, label) = inner.rsplit_once(',').unwrap();
            queries.push((
                format!("variable {}", variable["name"]),
                format!("sum by ({}) ({selector})", label.trim()),
            ));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifacts_query_what_the_crate_exports() {
    let text = scrape().await;
    let exported = series(&text);
    // Every family has its help text and type: what exporters and linters
    // expect, and what the checks below read names from.
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let helped: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(families, helped, "families without help text");
    assert!(families.len() >= 20, "the traffic reached every part: {families:?}");

    let rules = read(RULES);
    let queries = rule_queries(&rules);
    assert_eq!(queries.len(), rules.matches("- alert:").count(), "one query per alert");
    for query in &queries {
        assert!(check_query(query, &exported, RULES) > 0, "{query}");
    }
    let dashboard = dashboard();
    for (panel, query) in dashboard_queries(&dashboard) {
        assert!(check_query(&query, &exported, &panel) > 0, "{panel}: {query}");
    }

    let Some(promtool) = promtool() else {
        return;
    };
    // The exposition as Prometheus' own linter reads it (help text, names,
    // units, counters' `_total`).
    run_promtool(&promtool, &["check", "metrics"], Some(&text));
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    let rules = read(RULES);
    // Each alert has a unit test.
    let tests = read(RULE_TESTS);
    let alerts: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert_eq!(alerts.len(), 10);
    for alert in alerts {
        let name = alert.lines().next().unwrap().trim();
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{RULE_TESTS} has no test for {name}"
        );
        // As the built-in rules: a minute of `keep_firing_for`, so a
        // half-open circuit or a quiet minute does not resolve and re-fire.
        assert!(alert.contains("keep_firing_for: 1m"), "{name}");
    }
    let Some(promtool) = promtool() else {
        return;
    };
    let checked = run_promtool(&promtool, &["check", "rules", RULES], None);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    let tested = run_promtool(&promtool, &["test", "rules", RULE_TESTS], None);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_dashboard_imports_anywhere_and_filters_by_target() {
    let dashboard = dashboard();
    assert_eq!(
        dashboard["uid"], "tower-optimizer",
        "a stable uid, for links and re-imports"
    );
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let requires: Vec<&str> = dashboard["__requires"]
        .as_array()
        .expect("__requires, as Grafana's exports carry")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        requires.contains(&"grafana") && requires.contains(&"prometheus"),
        "{requires:?}"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance", "server_address"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: duplicate id");
        // The data source is the variable, so a provisioned file and an
        // import through the UI both work (an `__inputs` placeholder is
        // left unreplaced by file provisioning).
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let grid = &panel["gridPos"];
        let (x, y, w, h) = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap()).into();
        assert!(x + w <= 24, "{title}: wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at ({cx}, {cy})");
            }
        }
        for target in panel["targets"].as_array().unwrap() {
            let query = target["expr"].as_str().unwrap();
            // Each selector narrows to the chosen targets, so one dashboard
            // serves a fleet.
            let selectors = query.matches('{').count();
            assert!(selectors > 0, "{title}: {query}");
            assert_eq!(query.matches("job=~\"$job\"").count(), selectors, "{title}: {query}");
            assert_eq!(
                query.matches("instance=~\"$instance\"").count(),
                selectors,
                "{title}: {query}"
            );
            if query.contains("http_client_") {
                assert!(
                    query.contains("server_address=~\"$server_address\""),
                    "{title}: {query}"
                );
            }
        }
    }
    let Some(promtool) = promtool() else {
        return;
    };
    // promtool has no query linter of its own; the dashboard's queries as
    // recording rules get the same parser the rules get.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, query)) in dashboard_queries(&dashboard).iter().enumerate() {
        let escaped = query.replace('\\', "\\\\").replace('"', "\\\"");
        writeln!(
            rules,
            "      - record: dashboard:query_{i}\n        expr: \"{escaped}\""
        )
        .unwrap();
    }
    let path = std::env::temp_dir().join(format!("tower-optimizer-dashboard-{}.rules.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let checked = run_promtool(&promtool, &["check", "rules", path.to_str().unwrap()], None);
    std::fs::remove_file(&path).unwrap();
    assert!(checked.contains("SUCCESS"), "{checked}");
}
