//! The admin service mounted in an axum application with
//! `Router::nest_service`, served by axum on 127.0.0.1: its routes answer
//! under the prefix, with access control, beside the application's own.
#![cfg(feature = "stack")]

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_optimizer::cache::Cache;
use tower_optimizer::invalidation::Invalidator;
use tower_optimizer::monitor::{AdminService, Monitor, Stats};

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &'static str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = client
        .request(req.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn admin_service_nests_in_an_axum_router() {
    let cache = Cache::builder().build().unwrap();
    let monitor = Monitor::builder().stats(Stats::default()).cache(cache.clone()).build();
    monitor.sample_now();
    let admin = AdminService::builder()
        .token("s3cret")
        .monitor(monitor)
        .invalidator(Invalidator::new(cache))
        .build();
    let app = Router::new()
        .route("/", get(|| async { "the application" }))
        .nest_service("/admin", admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder(TokioExecutor::new()).build_http();

    let (status, body) = send(&client, addr, Method::GET, "/", None, "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "the application"));

    assert_eq!(
        send(&client, addr, Method::GET, "/admin/stats", None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = send(&client, addr, Method::GET, "/admin/stats", Some("s3cret"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["latest"]["cache"]["entries"], 0);

    let (status, page) = send(&client, addr, Method::GET, "/admin/dashboard?token=s3cret", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<html"), "the dashboard page");

    let (status, body) = send(
        &client,
        addr,
        Method::POST,
        "/admin/cache/invalidate",
        Some("s3cret"),
        r#"{"pattern": "("}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an invalid regex is refused: {body}");
    let (status, body) = send(
        &client,
        addr,
        Method::POST,
        "/admin/cache/invalidate",
        Some("s3cret"),
        r#"{"tag": "users"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["kind"], "tag");

    server.abort();
}

#[tokio::test]
async fn the_optimizers_admin_service_nests_too() {
    let (_layer, optimizer) = tower_optimizer::stack::OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .circuit_breaker(tower_optimizer::circuit_breaker::CircuitBreakerConfig::default())
        .build::<Full<Bytes>>()
        .unwrap();
    let app = Router::new().nest_service("/ops", optimizer.admin_service(Some("t0ken")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder(TokioExecutor::new()).build_http();

    assert_eq!(
        send(&client, addr, Method::GET, "/ops/health/ready", None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = send(&client, addr, Method::GET, "/ops/health/ready", Some("t0ken"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "pass");
    assert!(health["checks"]["breakers"].is_array(), "{health}");
    assert!(health["checks"]["cache"].is_array(), "{health}");
    // The stack's breakers are the admin's too.
    let action = r#"{"key": "http://api.test", "action": "force_open"}"#;
    let (status, body) = send(&client, addr, Method::POST, "/ops/breakers", Some("t0ken"), action).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = optimizer.stats();
    assert_eq!(stats.breakers[0].key.as_ref(), "http://api.test");
    assert_eq!(stats.breakers[0].state.as_str(), "forced_open");
    server.abort();
}
