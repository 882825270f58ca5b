//! The dashboard in real headless Chromium: the admin service runs on
//! 127.0.0.1 with traffic recorded, Chromium loads the page (which fetches
//! `/stats` with the bearer token from its URL), and the figures in the
//! rendered DOM must match `/stats`. A screenshot is saved under
//! `target/tmp/dashboard.png`.
#![cfg(all(feature = "monitor", feature = "cache", feature = "circuit-breaker"))]

#[path = "support/gone_peer.rs"]
mod gone_peer;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_optimizer::cache::{Cache, CacheLayer};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, Event, OpenCause};
use tower_optimizer::monitor::{AdminService, AlertManager, MetricsLayer, Monitor, Stats};

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Runs Chromium headless on `url` with `extra` flags; bounded in time.
async fn run_chromium(binary: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempdir();
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        &format!("--user-data-dir={}", profile.display()),
    ])
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tower-optimizer-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The text of the element with `id` in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\">");
    let start = dom.find(&marker).unwrap_or_else(|| panic!("no #{id} in the DOM")) + marker.len();
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_what_stats_says() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium: .ci/run installs Debian's package"
        );
        eprintln!("NOTE: chromium is not installed here; this check runs on CI (.ci/run installs it)");
        return;
    };
    // Traffic: 30 requests over 3 URLs through metrics, cache and breaker.
    let stats = Stats::default();
    let cache = Cache::builder().build().unwrap();
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let breakers = breaker.breakers();
    let mut client = ServiceBuilder::new()
        .layer(MetricsLayer::new().stats(stats.clone()))
        .layer(CacheLayer::new(cache.clone()))
        .layer(breaker)
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=600")
                    .body(Full::new(Bytes::from(vec![b'x'; 2048])))
                    .unwrap(),
            )
        });
    for i in 0..30 {
        let req = Request::get(format!("http://api.test/items/{}", i % 3))
            .body(Full::default())
            .unwrap();
        let res = client.ready().await.unwrap().call(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    breakers.force_open("http://flaky.test");
    // Another instance's opening, shared.
    breakers.trip("http://shared.test", std::time::Duration::from_secs(600));
    // An opening sent to a peer instance that is gone: the send fails.
    let share = gone_peer::sender();
    share.listener()(&Event::Opened {
        key: "http://flaky.test".into(),
        open_for: Duration::from_secs(10),
        cause: OpenCause::Calls,
    });
    gone_peer::until_failed(&share).await;
    let monitor = Monitor::builder()
        .stats(stats)
        .cache(cache)
        .breakers(breakers)
        .shared_openings(share)
        .alerts({
            // A second rule on the open breaker, held back while
            // CircuitOpen fires: the page says so.
            let mut alerts = AlertManager::with_default_rules(4.0 * 1024.0 * 1024.0 * 1024.0);
            alerts.add_rule(tower_optimizer::monitor::AlertRule::above(
                "AlsoOpen",
                "circuit_breaker.open",
                0.0,
            ));
            alerts.inhibit("CircuitOpen", ["AlsoOpen"]);
            // One alert per host: the open breaker's host fires, named.
            alerts.add_rule(
                tower_optimizer::monitor::AlertRule::above("HostOpen", "circuit_breaker.open", 0.0).per_host(),
            );
            // Quiet on every host: one row, not one per host.
            alerts.add_rule(tower_optimizer::monitor::AlertRule::above("HostSlow", "http.p99", 100.0).per_host());
            alerts
        })
        .build();
    // A user figure that grows by 1,000 a sample, as a counter does.
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reads.clone();
    monitor.register_gauge("retry.retries", move || {
        (counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) as f64 * 1000.0
    });
    for _ in 0..3 {
        monitor.sample_now();
    }
    // A base64 token: its `+` must reach `/stats` as a `+` (a form
    // decoder, such as `URLSearchParams`, would make it a space).
    let token = "t0k+en/x=";
    let admin = AdminService::builder().token(token).monitor(monitor).build();
    let (addr, server) = admin.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{addr}/dashboard?token={token}");

    let dom = run_chromium(&binary, &url, &["--dump-dom"]).await;
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page loaded /stats and rendered:\n{dom}"
    );

    // What /stats says, fetched the same way.
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client
        .request(
            Request::get(format!("http://{addr}/stats"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let latest = &stats["latest"];
    assert_eq!(
        text_of(&dom, "requests"),
        latest["requests"]["overall"]["requests"].to_string()
    );
    assert_eq!(text_of(&dom, "requests"), "30");
    let hit_ratio = latest["cache"]["hit_ratio"].as_f64().unwrap();
    assert_eq!(text_of(&dom, "hit-ratio"), format!("{:.1}%", hit_ratio * 100.0));
    assert_eq!(text_of(&dom, "hit-ratio"), "90.0%");
    assert_eq!(text_of(&dom, "cache-bytes").split_whitespace().last(), Some("KiB"));
    // The cache-memory chart is scaled to the unit that fits its figures
    // (about 10 KiB here, not 0.01 MiB).
    assert_eq!(text_of(&dom, "unit-bytes"), "KiB");
    assert_eq!(text_of(&dom, "alerts-firing"), latest["alerts_firing"].to_string());
    assert!(dom.contains("http://flaky.test"), "the open breaker is listed");
    assert!(dom.contains("class=\"pill forced_open\""), "with its state");
    assert!(
        dom.contains("class=\"pill open\">open (trip)<"),
        "a shared opening says so:\n{dom}"
    );
    // Alerts: the open breaker's one fires; each value and threshold is
    // shown in its figure's unit.
    assert!(
        dom.contains("class=\"pill firing\">firing<"),
        "CircuitOpen fires:\n{dom}"
    );
    let row = |name: &str| {
        let start = dom
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| panic!("no {name} row"));
        let end = start + dom[start..].find("</tr>").unwrap();
        dom[start..end].to_owned()
    };
    assert!(
        row("AlsoOpen").contains("firing</span><span class=\"note\"> (held back by CircuitOpen)</span>"),
        "{}",
        row("AlsoOpen")
    );
    assert!(!row("CircuitOpen").contains("held back"), "{}", row("CircuitOpen"));
    assert!(
        row("HostOpen (flaky.test:80)").contains("class=\"pill firing\">firing<"),
        "{}",
        row("HostOpen (flaky.test:80)")
    );
    // A per-host rule's quiet hosts are not listed one by one.
    assert!(!dom.contains("HostOpen (api.test:80)"), "{dom}");
    assert!(
        row("HostSlow (3 hosts)").contains("class=\"pill inactive\">inactive<"),
        "{}",
        row("HostSlow (3 hosts)")
    );
    // In `/stats`: one alert per host, the open one's host firing alone.
    let mut host_alerts: Vec<(String, String)> = stats["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"]["name"] == "HostOpen")
        .map(|a| {
            assert_eq!(a["rule"]["scope"], "per_host");
            (
                a["host"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    host_alerts.sort();
    assert_eq!(
        host_alerts,
        [
            ("api.test:80".to_owned(), "inactive".to_owned()),
            ("flaky.test:80".to_owned(), "firing".to_owned()),
            ("shared.test:80".to_owned(), "firing".to_owned())
        ]
    );
    assert!(
        row("ProcessMemoryHigh").contains("<td>4.0 GiB</td>"),
        "{}",
        row("ProcessMemoryHigh")
    );
    assert!(row("ProcessMemoryHigh").contains(" MiB</td>"), "resident memory in MiB");
    assert!(
        row("CacheNearBudget").contains("<td>90.0%</td>"),
        "{}",
        row("CacheNearBudget")
    );
    assert!(
        row("HighErrorRate").contains("<td>0.0%</td><td>5.0%</td>"),
        "{}",
        row("HighErrorRate")
    );
    assert!(
        row("SlowRequests").contains("<td>1.00 s</td>"),
        "{}",
        row("SlowRequests")
    );

    // The openings sent to peers, beside the user figures, and the alert
    // on the one that did not reach its peer.
    assert_eq!(latest["shared_openings"]["failed"], 1);
    // Unchanged since the sample before: 0 a second, or "–" when the
    // two samples fell in the same millisecond (no time to divide by).
    let failed = row("openings shared: failed");
    assert!(
        ["0", "–"].iter().any(|per_second| failed.starts_with(&format!(
            "<td>openings shared: failed</td><td>1</td><td>{per_second}</td>"
        ))),
        "{failed}"
    );
    assert!(
        row("openings shared: delivered").starts_with("<td>openings shared: delivered</td><td>0</td>"),
        "{}",
        row("openings shared: delivered")
    );
    assert!(
        row("OpeningsNotShared").contains("class=\"pill firing\">firing<"),
        "{}",
        row("OpeningsNotShared")
    );
    assert_eq!(latest["gauges"]["retry.retries"], 3000.0);
    assert!(
        row("retry.retries").starts_with("<td>retry.retries</td><td>3,000</td>"),
        "{}",
        row("retry.retries")
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &binary,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
            "--hide-scrollbars",
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture: {} bytes",
        png.len()
    );
    server.abort();
}
