//! The quick demo: a local HTTP/2 upstream on 127.0.0.1 (cacheable, slow,
//! tagged and flaky endpoints), the same workload sent once straight to it
//! and once through the full stack (cache, invalidation, retries, circuit
//! breaker, timeout, monitoring and the admin dashboard), an invalidation by tag
//! midway, a failing endpoint that opens the breaker and is answered stale,
//! and a summary.
//!
//! `cargo run --release --example demo [-- --duration SECS] [--keep-serving]`

#[path = "support/accept.rs"]
mod accept;

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::bench::{self, BenchReport, Stop, Workload};
use tower_optimizer::cache::Cache;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, Event, State};
use tower_optimizer::monitor::AlertState;
use tower_optimizer::retry::{RetryConfig, RetryPolicy};
use tower_optimizer::stack::{ClientConfig, MonitorSettings, OptimizedService, OptimizerStack, http_client};

const CONCURRENCY: usize = 16;

struct Upstream {
    calls: AtomicUsize,
    flaky_down: AtomicBool,
}

async fn upstream(state: Arc<Upstream>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        accept::accept_forever(listener, move |stream| {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    state.calls.fetch_add(1, Ordering::Relaxed);
                    let state = state.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let res = if path == "/flaky" {
                            if state.flaky_down.load(Ordering::Relaxed) {
                                Response::builder()
                                    .status(503)
                                    .body(Full::new(Bytes::from_static(b"down")))
                            } else {
                                Response::builder()
                                    .header("cache-control", "max-age=1, stale-if-error=600")
                                    .body(Full::new(Bytes::from_static(b"{\"flaky\":\"ok\"}")))
                            }
                        } else {
                            let slow = path.starts_with("/slow/");
                            tokio::time::sleep(Duration::from_millis(if slow { 50 } else { 5 })).await;
                            let id = path.rsplit('/').next().unwrap_or("0").to_owned();
                            Response::builder()
                                .header("content-type", "application/json")
                                .header("cache-control", "max-age=30")
                                .header("surrogate-key", format!("items item:{id}"))
                                .body(Full::new(Bytes::from(format!(
                                    "{{\"path\":\"{path}\",\"data\":\"{}\"}}",
                                    "x".repeat(900)
                                ))))
                        };
                        Ok::<_, Infallible>(res.expect("valid response"))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        })
        .await;
    });
    addr
}

fn path_for(i: usize) -> String {
    // Mostly a few hot items, some slow ones, some to the flaky endpoint.
    match i % 10 {
        0 => "/flaky".to_owned(),
        1 | 2 => format!("/slow/{}", i % 7),
        _ => format!("/items/{}", (i * 7 + i / 3) % 40 % (1 + i % 25)),
    }
}

/// The demo's workload for `time`, through `bench::run` (the engine behind
/// `examples/bench.rs`).
async fn run(client: OptimizedService<Full<Bytes>>, base: &str, time: Duration) -> BenchReport {
    let base = base.to_owned();
    let workload = Workload::generator(move |i| format!("{base}{}", path_for(i)).parse().expect("a valid URI"))
        .concurrency(CONCURRENCY)
        .stop(Stop::Duration(time));
    bench::run(client, &workload).await
}

/// Runs `run` for `time` in the background, drawing a progress bar.
async fn with_progress(
    label: &str,
    client: OptimizedService<Full<Bytes>>,
    base: &str,
    time: Duration,
) -> Result<BenchReport, BoxError> {
    let base = base.to_owned();
    let handle = tokio::spawn(async move { run(client, &base, time).await });
    let start = Instant::now();
    while !handle.is_finished() {
        progress(label, start.elapsed().as_secs_f64() / time.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress(label, 1.0);
    println!();
    Ok(handle.await?)
}

/// A latency quantile, in the unit that shows it.
fn ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1e-3 => format!("{:.1} µs", s * 1e6),
        Some(s) => format!("{:.2} ms", s * 1e3),
    }
}

/// A count with its thousands grouped: `1,917,391`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A byte count in the unit that shows it: `75.1 KiB`.
fn bytes(n: u64) -> String {
    let mut value = n as f64;
    for unit in ["B", "KiB", "MiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} GiB")
}

fn progress(label: &str, done: f64) {
    let width = 30;
    let filled = (done.clamp(0.0, 1.0) * width as f64) as usize;
    print!(
        "\r  {label:<28} [{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        done.min(1.0) * 100.0
    );
    let _ = std::io::stdout().flush();
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let duration = args
        .iter()
        .position(|a| a == "--duration")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(20.0), |s| s.parse::<f64>())?;
    let keep_serving = args.iter().any(|a| a == "--keep-serving");
    let total = Duration::from_secs_f64(duration.max(2.0));

    let state = Arc::new(Upstream {
        calls: AtomicUsize::new(0),
        flaky_down: AtomicBool::new(false),
    });
    let addr = upstream(state.clone()).await;
    let base = format!("http://{addr}");
    println!("tower-optimizer demo: HTTP/2 upstream on {base}, {CONCURRENCY} concurrent workers\n");

    // 1. Without the stack.
    let bare = http_client(&ClientConfig::default());
    let bare: OptimizedService<Full<Bytes>> = tower::util::BoxCloneSyncService::new(
        bare.map_response(|r: Response<Incoming>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    );
    let baseline_time = total / 4;
    let without = with_progress("without the stack", bare, &base, baseline_time).await?;
    let upstream_without = state.calls.swap(0, Ordering::Relaxed);

    // 2. The full stack, with the admin dashboard on 127.0.0.1.
    let transitions = Arc::new(AtomicUsize::new(0));
    let seen = transitions.clone();
    let token = format!("demo-{:x}", u64::from(std::process::id()) * 0x9E37_79B9);
    let cache = Cache::builder().max_bytes(16 << 20).build()?;
    let (client, optimizer) = OptimizerStack::builder()
        .cache(cache.clone())
        .circuit_breaker(
            CircuitBreakerConfig::builder()
                .consecutive_failures(Some(5))
                .on_state_change(move |e| {
                    if matches!(e, Event::StateChanged { .. }) {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()?,
        )
        .retry(RetryPolicy::new(RetryConfig::default()))
        .timeout(Duration::from_secs(5))
        .monitor(MonitorSettings {
            interval: Duration::from_secs(1),
            ..MonitorSettings::default()
        })
        .admin("127.0.0.1:0", Some(&token))
        .warm_up((0..5).map(|i| format!("{base}/items/{i}")))
        .build_http2_client()?;
    let started = optimizer.start().await?;
    if let Some(admin) = started.admin {
        println!("  admin:     http://{admin}/dashboard?token={token}");
        println!("  metrics:   curl -H 'Authorization: Bearer {token}' http://{admin}/stats");
    }
    println!("  warm-up:   {} URLs fetched into the cache", started.warmed);

    let with_time = total.saturating_sub(baseline_time);
    let phases = [
        ("through the stack", 0.4),
        ("after invalidating 'items'", 0.3),
        ("with /flaky failing", 0.3),
    ];
    let mut reports = Vec::new();
    for (n, (label, share)) in phases.iter().enumerate() {
        if n == 1 {
            let report = optimizer.invalidator().expect("cache configured").tag("items");
            println!(
                "  invalidated tag 'items': {} entries, {} bytes in {:?}",
                report.entries, report.bytes, report.elapsed
            );
        }
        if n == 2 {
            state.flaky_down.store(true, Ordering::Relaxed);
            println!("  /flaky now answers 503: the breaker opens and its cached answer is served stale");
        }
        let report = with_progress(label, client.clone(), &base, with_time.mul_f64(*share)).await?;
        reports.push((*label, report));
    }
    let upstream_with = state.calls.load(Ordering::Relaxed);
    let stats = optimizer.stats();
    let cache_stats = stats.cache.expect("cache configured");
    let flaky_state = optimizer
        .breakers()
        .and_then(|b| b.state(&base))
        .unwrap_or(State::Closed);
    let alerts_fired = optimizer.monitor().map_or(0, |m| {
        m.snapshot()
            .alerts
            .iter()
            .filter(|a| a.state != AlertState::Inactive)
            .count()
    });

    println!();
    println!(
        "{:<28}{:>12}{:>10}{:>12}{:>12}{:>10}{:>8}",
        "", "requests", "req/s", "p50", "p99", "cached", "errors"
    );
    let row = |label: &str, r: &BenchReport| {
        println!(
            "{label:<28}{:>12}{:>10}{:>12}{:>12}{:>9.1}%{:>8}",
            grouped(r.requests + r.errors),
            // Whole requests per second: the cast only drops the fraction.
            grouped(r.throughput.max(0.0).round() as u64),
            ms(r.p50),
            ms(r.p99),
            r.cache_hits as f64 * 100.0 / r.requests.max(1) as f64,
            r.errors
        );
    };
    row("without the stack", &without);
    for (label, report) in &reports {
        row(label, report);
    }
    println!();
    let sent: u64 = reports.iter().map(|(_, r)| r.requests + r.errors).sum();
    println!(
        "upstream calls: {} without the stack, {} with it for {} requests ({:.1}% saved); stale answers {}",
        grouped(upstream_without as u64),
        grouped(upstream_with as u64),
        grouped(sent),
        100.0 - upstream_with as f64 * 100.0 / sent.max(1) as f64,
        grouped(cache_stats.stale)
    );
    println!(
        "breaker transitions: {}, state of {base} now: {}",
        transitions.load(Ordering::Relaxed),
        flaky_state.as_str()
    );
    let retries = stats.retry.expect("retries configured");
    println!(
        "retries: {} sent for {} requests that went upstream, {} refused by the budget, {} left to stale answers",
        grouped(retries.retries),
        grouped(retries.requests),
        grouped(retries.budget_exhausted),
        grouped(retries.answered_otherwise)
    );
    println!(
        "alerts fired: {alerts_fired}; cache holds {} entries in {} of {}",
        grouped(cache_stats.entries),
        bytes(cache_stats.bytes),
        bytes(cache_stats.max_bytes)
    );
    assert!(cache.audit().is_clean(), "cache accounting drifted");

    if keep_serving {
        println!("\nserving the dashboard until Ctrl-C …");
        tokio::signal::ctrl_c().await?;
    }
    let last = optimizer.shutdown(Duration::from_secs(5)).await;
    println!("shut down cleanly with {} requests in flight", last.in_flight);
    Ok(())
}
