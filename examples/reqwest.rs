//! A `reqwest::Client` with the optimizer stack around it: the cache,
//! coalescing and the circuit breaker in front of a client you configured
//! yourself (TLS, proxies, pool), and `ReqwestService` as a plain tower
//! `Service` for stacks of your own.
//!
//! `cargo run --release --example reqwest --features reqwest`
//!
//! It starts a local HTTP/2 upstream on 127.0.0.1, sends requests through
//! both, prints what it saw and exits 0 (1 if the cache did not answer).

#[path = "support/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{CACHE_STATUS, Cache, CacheLayer};
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::stack::{OptimizerStack, ReqwestService};

/// Sends `GET url` through `client` and prints the answer and its
/// `Cache-Status`.
async fn get<S, B>(client: S, url: &str) -> Result<(), BoxError>
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let response = client
        .oneshot(Request::get(url).body(Full::default())?)
        .await
        .map_err(Into::into)?;
    let status = response.status();
    let cache = response
        .headers()
        .get(CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.into_body().collect().await.map_err(Into::into)?.to_bytes();
    println!("  GET {url} -> {status} {} | {cache}", String::from_utf8_lossy(&body));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = format!("http://{}", upstream::json_upstream("/items/", calls.clone()).await);

    // The reqwest client, configured as you would anyway; this upstream
    // speaks HTTP/2 without TLS, so prior knowledge.
    let reqwest = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5))
        .build()?;

    // 1. The whole stack around it.
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().max_bytes(16 * 1024 * 1024).build()?)
        .circuit_breaker(CircuitBreakerConfig::default())
        .build_reqwest_client(reqwest.clone())?;
    optimizer.start().await?;
    println!("the stack around a reqwest client:");
    for id in [1, 1, 2, 1] {
        get(client.clone(), &format!("{origin}/items/{id}")).await?;
    }
    let stats = optimizer.shutdown(Duration::from_secs(5)).await;
    let through_stack = calls.load(Ordering::Relaxed);
    println!(
        "  {} hits, {} misses; the upstream saw {through_stack} requests",
        stats.cache.as_ref().map_or(0, |c| c.hits),
        stats.cache.as_ref().map_or(0, |c| c.misses),
    );

    // 2. `ReqwestService` in a stack of your own: here the cache alone.
    let cache = Cache::builder().build()?;
    let own = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(ReqwestService::new(reqwest));
    println!("ReqwestService under a CacheLayer of your own:");
    for _ in 0..3 {
        get(own.clone(), &format!("{origin}/items/3")).await?;
    }
    let total = calls.load(Ordering::Relaxed);
    println!("  the upstream saw {} more request(s)", total - through_stack);

    // Two distinct items through the stack, one through the cache alone.
    if through_stack != 2 || total != 3 {
        return Err(format!("expected 3 upstream requests in all, saw {total}").into());
    }
    Ok(())
}
