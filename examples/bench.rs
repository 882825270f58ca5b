//! Benchmarks any HTTP server with and without the stack, in one run.
//!
//! `cargo run --release --example bench -- --url URL [--url URL ...]
//!  [--concurrency N] [--requests N | --duration SECS] [--rate PER_SEC]
//!  [--validate N] [--http1]`
//!
//! With no `--url`, it starts a local HTTP/2 upstream on 127.0.0.1 and
//! benchmarks that.

#[path = "support/accept.rs"]
mod accept;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::bench::{BenchReport, Stop, Workload, run, validate};
use tower_optimizer::cache::Cache;
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::stack::{ClientConfig, OptimizedService, OptimizerStack, Protocol, http_client};

struct Args {
    urls: Vec<Uri>,
    concurrency: usize,
    stop: Stop,
    rate: Option<f64>,
    validate: usize,
    http1: bool,
}

fn parse() -> Result<Args, BoxError> {
    let mut args = Args {
        urls: Vec::new(),
        concurrency: 16,
        stop: Stop::Requests(5000),
        rate: None,
        validate: 20,
        http1: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| BoxError::from(format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => args.urls.push(value()?.parse()?),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--requests" => args.stop = Stop::Requests(value()?.parse()?),
            "--duration" => args.stop = Stop::Duration(Duration::from_secs_f64(value()?.parse()?)),
            "--rate" => args.rate = Some(value()?.parse()?),
            "--validate" => args.validate = value()?.parse()?,
            "--http1" => args.http1 = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// A local upstream when no URL is given: cacheable JSON, 2 ms of work.
async fn local_upstream() -> Vec<Uri> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        accept::accept_forever(listener, move |stream| {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("cache-control", "max-age=60")
                            .body(Full::new(Bytes::from(format!("{{\"path\":\"{}\"}}", req.uri().path()))))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        })
        .await;
    });
    (0..50)
        .map(|i| format!("http://{addr}/items/{i}").parse().expect("url"))
        .collect()
}

/// A latency quantile in the unit that shows it.
fn ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "–".to_owned(),
        // A cache hit takes microseconds: `0.001 ms` would hide them.
        Some(s) if s < 1e-4 => format!("{:.1} µs", s * 1e6),
        Some(s) => format!("{:.3} ms", s * 1000.0),
    }
}

fn row(name: &str, f: impl Fn(&BenchReport) -> String, a: &BenchReport, b: &BenchReport) {
    println!("{name:<16}{:>18}{:>18}", f(a), f(b));
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = parse()?;
    if args.urls.is_empty() {
        args.urls = local_upstream().await;
        println!("no --url given: benchmarking a local HTTP/2 upstream");
    }
    let protocol = if args.http1 { Protocol::Http1 } else { Protocol::Http2 };
    let config = ClientConfig {
        protocol,
        ..ClientConfig::default()
    };
    let bare: OptimizedService<Full<Bytes>> = tower::util::BoxCloneSyncService::new(
        http_client(&config)
            .map_response(|r: Response<Incoming>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    );
    let mut workload = Workload::urls(args.urls.clone())
        .concurrency(args.concurrency)
        .stop(args.stop);
    if let Some(rate) = args.rate {
        workload = workload.rate(rate);
    }
    let without = run(bare.clone(), &workload).await;
    let (stack, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build()?)
        .circuit_breaker(CircuitBreakerConfig::default())
        .client(config)
        .build_http2_client()?;
    let with = run(stack.clone(), &workload).await;
    let validation = validate(stack, bare, &args.urls, args.validate).await;

    println!("\n{:<16}{:>18}{:>18}", "", "without stack", "with stack");
    row("requests", |r| r.requests.to_string(), &without, &with);
    row("errors", |r| r.errors.to_string(), &without, &with);
    row("throughput", |r| format!("{:.0}/s", r.throughput), &without, &with);
    row(
        "2xx / 4xx / 5xx",
        |r| {
            format!(
                "{}/{}/{}",
                r.status_classes[2], r.status_classes[4], r.status_classes[5]
            )
        },
        &without,
        &with,
    );
    row("cache hits", |r| r.cache_hits.to_string(), &without, &with);
    row("p50", |r| ms(r.p50), &without, &with);
    row("p90", |r| ms(r.p90), &without, &with);
    row("p99", |r| ms(r.p99), &without, &with);
    row("p99.9", |r| ms(r.p999), &without, &with);
    println!(
        "\nvalidation: {} cache hits re-fetched from the upstream, {} differ",
        validation.checked,
        validation.mismatches.len()
    );
    for m in &validation.mismatches {
        println!("  {}: {}", m.url, m.what);
    }
    optimizer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
