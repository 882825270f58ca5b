//! The stack as a reqwest-middleware `Middleware`: keep reqwest's API
//! (`client.get(url).send()`), add the cache, coalescing and the circuit
//! breaker to a `ClientWithMiddleware`, and let the middleware after it
//! (here a logger) run only for the requests that reach the network.
//!
//! `cargo run --release --example reqwest_middleware --features reqwest-middleware`
//!
//! It starts a local HTTP/2 upstream on 127.0.0.1, sends requests, prints
//! what it saw and exits 0 (1 if the cache did not answer).

#[path = "support/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Extensions;
use reqwest_middleware::{ClientBuilder, Middleware, Next};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{CACHE_STATUS, Cache, RequestCacheMode};
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::stack::OptimizerStack;

/// Prints each request that goes on down the chain, to the network.
struct LogUpstream;

#[async_trait::async_trait]
impl Middleware for LogUpstream {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        println!("    (upstream: {} {})", req.method(), req.url().path());
        next.run(req, extensions).await
    }
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
    let (optimizer_middleware, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().max_bytes(16 * 1024 * 1024).build()?)
        .circuit_breaker(CircuitBreakerConfig::default())
        .build_reqwest_middleware(reqwest.clone())?;
    let client = ClientBuilder::new(reqwest)
        .with(optimizer_middleware)
        .with(LogUpstream)
        .build();
    optimizer.start().await?;

    println!("reqwest-middleware with the stack, then a logger:");
    for (id, mode) in [
        (1, RequestCacheMode::Default),
        (1, RequestCacheMode::Default),
        (2, RequestCacheMode::Default),
        (1, RequestCacheMode::Reload),
    ] {
        let url = format!("{origin}/items/{id}");
        let response = client.get(&url).with_extension(mode).send().await?;
        let cache = response
            .headers()
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let status = response.status();
        let body = response.text().await?;
        println!("  GET {url} ({mode:?}) -> {status} {body} | {cache}");
    }
    let stats = optimizer.shutdown(Duration::from_secs(5)).await;
    let upstream = calls.load(Ordering::Relaxed);
    println!(
        "  {} hits, {} misses; the upstream saw {upstream} requests",
        stats.cache.as_ref().map_or(0, |c| c.hits),
        stats.cache.as_ref().map_or(0, |c| c.misses),
    );
    // Items 1 and 2, then the reload of item 1; the repeat was a hit.
    if upstream != 3 {
        return Err(format!("expected 3 upstream requests, saw {upstream}").into());
    }
    Ok(())
}
