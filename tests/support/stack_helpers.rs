//! Helpers of the whole-stack tests (`tests/stack*.rs`): an h2c upstream
//! that counts and can hold requests, canned answers, a breaker that
//! opens on the third failure, and one GET through the stack.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::cache::CacheStatus;
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::stack::OptimizedService;

use super::server::{Protocol, serve};

pub type Handler = Arc<dyn Fn(&Request<Incoming>, usize) -> Response<Full<Bytes>> + Send + Sync>;

/// An h2c server answering with `handler`; counts the requests it sees.
/// Requests to `/hold` wait until `release` is notified.
pub async fn server(handler: Handler, release: Arc<Notify>) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let response = handler(&req, n);
        let release = release.clone();
        let hold = req.uri().path() == "/hold";
        async move {
            if hold {
                release.notified().await;
            }
            Ok::<_, Infallible>(response)
        }
    });
    (serve(Protocol::H2c, svc).await, hits)
}

pub fn respond(status: u16, cache_control: &str, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("cache-control", cache_control)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// A breaker that opens on three failures in a row, with an exact first
/// open period of 10 s (no jitter).
pub fn opens_on_third_failure() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .jitter(0.0)
        .build()
        .unwrap()
}

pub async fn send(
    client: &OptimizedService<Full<Bytes>>,
    method: Method,
    url: &str,
) -> Result<(u16, Option<CacheStatus>, Bytes), BoxError> {
    let req = Request::builder().method(method).uri(url).body(Full::default())?;
    let res = client.clone().oneshot(req).await?;
    let status = CacheStatus::from_headers(res.headers());
    let code = res.status().as_u16();
    Ok((code, status, res.into_body().collect().await?.to_bytes()))
}
