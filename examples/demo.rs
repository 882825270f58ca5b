//! The quick demo: a local HTTP/2 upstream on 127.0.0.1, the same workload
//! sent once straight to it and once through the cache, and a summary.
//!
//! `cargo run --release --example demo [-- --requests N]`
//!
//! The full demo (circuit breaker, monitoring, admin server) arrives with
//! `OptimizerStack`; this one shows the cache layer on its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer};

/// Upstream think time per request: what the cache saves on a hit.
const UPSTREAM_DELAY: Duration = Duration::from_millis(5);
const CONCURRENCY: usize = 32;

async fn upstream(calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            // Small HTTP/2 frames must not wait on Nagle and delayed ACKs.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(UPSTREAM_DELAY).await;
                        let body = format!(
                            "{{\"item\":\"{}\",\"payload\":\"{}\"}}",
                            req.uri().path(),
                            "x".repeat(900)
                        );
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .header("cache-control", "max-age=30")
                                .body(Full::new(Bytes::from(body)))
                                .expect("valid response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Runs `total` requests over `keys` with `CONCURRENCY` workers; returns
/// sorted latencies.
async fn workload<S>(svc: S, base: &str, total: usize) -> Result<Vec<Duration>, BoxError>
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Response: Into<Response<tower_optimizer::body::OptimizerBody<Incoming>>>,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mut svc, next, base) = (svc.clone(), next.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BoxError>(latencies);
                }
                // A skewed key mix: a few hot items, a long tail.
                let key = (i * i + 7 * i) % 97 % (1 + i % 40);
                let req = Request::get(format!("{base}/items/{key}")).body(Full::default())?;
                let start = Instant::now();
                let res: Response<_> = svc
                    .ready()
                    .await
                    .map_err(Into::into)?
                    .call(req)
                    .await
                    .map_err(Into::into)?
                    .into();
                res.into_body().collect().await?;
                latencies.push(start.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await??);
    }
    all.sort();
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let total = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(3000), |n| n.parse())?;

    let calls = Arc::new(AtomicUsize::new(0));
    let addr = upstream(calls.clone()).await;
    let base = format!("http://{addr}");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
    println!("tower-optimizer demo: HTTP/2 upstream on {base}, {total} requests, {CONCURRENCY} concurrent\n");

    let bare = tower::ServiceBuilder::new()
        .map_response(|r: Response<Incoming>| r.map(tower_optimizer::body::OptimizerBody::inner))
        .service(client.clone());
    let without = workload(bare, &base, total).await?;
    let upstream_without = calls.swap(0, Ordering::Relaxed);

    let cache = Cache::builder().max_bytes(16 << 20).build()?;
    let cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), client);
    let started = Instant::now();
    let with = workload(cached, &base, total).await?;
    let elapsed = started.elapsed();
    let upstream_with = calls.load(Ordering::Relaxed);
    let stats = cache.stats();

    println!("{:<24}{:>14}{:>14}", "", "without cache", "with cache");
    println!("{:<24}{:>14}{:>14}", "upstream calls", upstream_without, upstream_with);
    println!(
        "{:<24}{:>14.2?}{:>14.2?}",
        "p50 latency",
        percentile(&without, 0.5),
        percentile(&with, 0.5)
    );
    println!(
        "{:<24}{:>14.2?}{:>14.2?}",
        "p99 latency",
        percentile(&without, 0.99),
        percentile(&with, 0.99)
    );
    println!();
    println!(
        "hit ratio {:.1}%, {} hits, {} misses, {} coalesced waits",
        stats.hit_ratio() * 100.0,
        stats.hits,
        stats.misses,
        stats.coalesced
    );
    println!(
        "cache holds {} entries in {} of {} bytes; cached run took {elapsed:.2?}",
        stats.entries, stats.bytes, stats.max_bytes
    );
    println!(
        "upstream calls saved: {}",
        upstream_without.saturating_sub(upstream_with)
    );
    println!("\nThe full stack demo (circuit breaker, monitoring, admin dashboard) is coming with OptimizerStack.");
    assert!(cache.audit().is_clean(), "cache accounting drifted");
    Ok(())
}
