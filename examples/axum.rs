//! An axum application that calls an upstream API through the optimizer
//! stack (cache, circuit breaker, metrics with route templates) and mounts
//! the admin routes under `/admin` with `Router::nest_service`.
//!
//! `cargo run --release --example axum [-- --serve]`
//!
//! It starts a local HTTP/2 upstream and the application on 127.0.0.1, sends
//! a few requests to itself, prints what it saw and exits; with `--serve` it
//! keeps serving (the address is printed) until Ctrl-C.

#[path = "support/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheStatus};
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::monitor::RouteTemplates;
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack, WhenOpen};

/// The admin token of this example (use a secret of your own).
const TOKEN: &str = "example-token";

/// What the handlers share: the optimized client and the upstream origin.
#[derive(Clone)]
struct App {
    client: OptimizedService<Full<Bytes>>,
    upstream: String,
}

/// `GET /users/{id}`: the user from the upstream, with `x-cache` saying
/// whether the stack answered it from the cache.
async fn user(State(app): State<App>, Path(id): Path<u32>) -> Response {
    let request = Request::get(format!("{}/users/{id}", app.upstream))
        .body(Full::default())
        .expect("a valid request");
    match app.client.oneshot(request).await {
        Ok(response) => {
            let cache = CacheStatus::from_headers(response.headers())
                .map(|s| format!("{:?}", s.outcome()))
                .unwrap_or_default();
            let (mut parts, body) = response.into_parts();
            if let Ok(value) = cache.parse() {
                parts.headers.insert("x-cache", value);
            }
            // The upstream body streams through to the caller.
            Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(error) => (StatusCode::BAD_GATEWAY, format!("upstream failed: {error}")).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = std::env::args().any(|a| a == "--serve");
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = upstream::json_upstream("/users/", calls.clone()).await;

    let monitor = MonitorSettings {
        route_templates: Some(RouteTemplates::new(["/users/{id}"])?),
        ..MonitorSettings::default()
    };
    let (client, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().max_bytes(16 * 1024 * 1024).build()?)
        .circuit_breaker(CircuitBreakerConfig::default())
        // A host whose circuit is open is answered 503 + Retry-After, which
        // the handler passes on as is, rather than an error it maps to 502.
        .when_open(WhenOpen::Respond503)
        .timeout(Duration::from_secs(5))
        .monitor(monitor)
        .build_http2_client()?;
    optimizer.start().await?;

    let app = Router::new()
        .route("/users/{id}", get(user))
        .with_state(App {
            client,
            upstream: format!("http://{origin}"),
        })
        .nest_service("/admin", optimizer.admin_service(Some(TOKEN)));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("axum app on http://{addr} (dashboard: http://{addr}/admin/dashboard?token={TOKEN})");

    // Talk to ourselves: the same user twice (the second from the cache),
    // another user, then the admin statistics.
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for path in ["/users/1", "/users/1", "/users/2"] {
        let response = http.get(format!("http://{addr}{path}").parse()?).await?;
        let status = response.status();
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET {path:<10} -> {status} x-cache={cache:<6} {}",
            String::from_utf8_lossy(&body)
        );
    }
    optimizer.monitor().expect("monitor configured").sample_now();
    let stats = Request::get(format!("http://{addr}/admin/stats"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::default())?;
    let response = http.request(stats).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let stats: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "GET /admin/stats -> {status}: {} requests, {} cache hits; the upstream saw {}",
        stats["latest"]["requests"]["overall"]["requests"],
        stats["latest"]["cache"]["hits"],
        calls.load(Ordering::Relaxed),
    );
    if status != StatusCode::OK || calls.load(Ordering::Relaxed) != 2 {
        return Err("expected the second /users/1 to come from the cache".into());
    }

    if serve {
        println!("serving; Ctrl-C stops");
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    optimizer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
