//! Two instances of one client sharing their circuit openings through their
//! admin servers: when instance A finds a host down, instance B stops
//! calling it too, without spending a request on it.
//!
//! `cargo run --release --example shared_openings`
//!
//! It starts a local HTTP/2 upstream on 127.0.0.1 that answers 503, then
//! two stacks (each with its admin server on 127.0.0.1), A sharing with B
//! as `[circuit_breaker.share]` would. A sends three requests, its circuit
//! opens, B's opens on A's word. It prints what each saw and exits 0, or
//! exits 1 if B did not open or still reached the upstream.

#[path = "support/accept.rs"]
mod accept;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, State, error::Open};
use tower_optimizer::monitor::SharedOpenings;
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack};

/// The admin token both instances share (use a secret of your own).
const TOKEN: &str = "example-token";

/// A host that is down: every request gets a 503. `calls` counts them.
async fn down_upstream(calls: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(accept::accept_forever(listener, move |stream| {
        let calls = calls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_: Request<Incoming>| {
                calls.fetch_add(1, Ordering::Relaxed);
                async {
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(503)
                            .body(Full::new(Bytes::from_static(b"down")))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }));
    addr
}

/// A breaker that opens after three failures in a row.
fn breaker() -> Result<CircuitBreakerConfig, BoxError> {
    Ok(CircuitBreakerConfig::builder().consecutive_failures(Some(3)).build()?)
}

async fn get(client: &OptimizedService<Full<Bytes>>, url: &str) -> Result<u16, BoxError> {
    let response = client.clone().oneshot(Request::get(url).body(Full::default())?).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = down_upstream(calls.clone()).await;
    let key = format!("http://{upstream}");
    let url = format!("{key}/orders");

    // B: a stack with its admin server, which takes trips.
    let (client_b, b) = OptimizerStack::builder()
        .circuit_breaker(breaker()?)
        .monitor(MonitorSettings::default())
        .admin("127.0.0.1:0", Some(TOKEN))
        .build_http2_client()?;
    let admin_b = b.start().await?.admin.expect("B's admin server");

    // A: shares its openings with B (in TOML, `[circuit_breaker.share]
    // peers = ["http://<B's admin>"]`).
    let share = SharedOpenings::builder()
        .peer(&format!("http://{admin_b}"))
        .token(TOKEN)
        .build(tower_optimizer::stack::http_client::<Full<Bytes>>(
            &tower_optimizer::stack::ClientConfig {
                protocol: tower_optimizer::stack::Protocol::Http1,
                ..Default::default()
            },
        ))?;
    let (client_a, a) = OptimizerStack::builder()
        .circuit_breaker(breaker()?)
        .share_openings(share)
        .build_http2_client()?;

    for i in 1..=3 {
        println!("A, request {i}: {}", get(&client_a, &url).await?);
    }
    println!(
        "A's circuit for {key}: {:?}",
        a.breakers().and_then(|br| br.state(&key))
    );

    // The post to B's admin is under way: wait for it (bounded).
    let b_breakers = b.breakers().expect("B has breakers");
    for _ in 0..100 {
        if b_breakers.state(&key) == Some(State::Open) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = calls.load(Ordering::Relaxed);
    let answer = get(&client_b, &url).await;
    let refused = answer.as_ref().err().and_then(|e| Open::find(e.as_ref()).cloned());
    let opened_by = b_breakers
        .snapshot()
        .into_iter()
        .find(|s| *s.key == *key)
        .and_then(|s| s.opened_by);
    println!(
        "B's circuit for {key}: {:?}, opened by {opened_by:?}",
        b_breakers.state(&key)
    );
    match &refused {
        Some(open) => println!("B, request 1: refused at once, retry after {:?}", open.retry_after()),
        None => println!("B, request 1: {answer:?}"),
    }
    let reached = calls.load(Ordering::Relaxed) - seen;
    let shared = a.stats().shared_openings.expect("A shares");
    println!(
        "A's posts: {} delivered, {} failed; the upstream saw {} requests from B",
        shared.delivered, shared.failed, reached
    );
    b.shutdown(Duration::from_secs(1)).await;
    if refused.is_none() || reached != 0 {
        eprintln!("B did not stop calling the host that A found down");
        std::process::exit(1);
    }
    Ok(())
}
