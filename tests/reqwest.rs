//! The stack around a reqwest client, over a real h2c server on 127.0.0.1:
//! the cache answers repeats, bodies stream through, and requests reqwest
//! cannot send or reach are errors, never panics.
#![cfg(feature = "reqwest")]

#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use server::{Protocol, serve};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_optimizer::cache::{Cache, CacheStatus, Outcome};
use tower_optimizer::stack::{OptimizerStack, ReqwestService};

/// An h2c server echoing the request body's length and the protocol.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let version = req.version();
            let sent = req.into_body().collect().await.map_or(0, |b| b.to_bytes().len());
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from(format!("{version:?} {sent}"))))
                    .unwrap(),
            )
        }
    });
    (serve(Protocol::H2c, svc).await, hits)
}

fn reqwest_h2c() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

// Real sockets on the real clock; nothing here sleeps.
#[tokio::test]
async fn the_stack_caches_around_reqwest() {
    let (addr, hits) = server().await;
    let (client, _optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .build_reqwest_client(reqwest_h2c())
        .unwrap();
    let url = format!("http://{addr}/items/1");
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let res = client
            .clone()
            .oneshot(Request::get(&url).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.version(), Version::HTTP_2);
        outcomes.push(
            CacheStatus::from_headers(res.headers())
                .as_ref()
                .map(CacheStatus::outcome),
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/2.0 0");
    }
    assert_eq!(outcomes, [Some(Outcome::Miss), Some(Outcome::Hit)]);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the repeat came from the cache");
}

#[tokio::test]
async fn request_bodies_reach_the_server() {
    let (addr, _) = server().await;
    let res = ReqwestService::new(reqwest_h2c())
        .oneshot(
            Request::post(format!("http://{addr}/upload"))
                .body(Full::new(Bytes::from(vec![7u8; 100_000])))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "HTTP/2.0 100000");
}

#[tokio::test]
async fn unsendable_and_unreachable_requests_are_errors() {
    let service = ReqwestService::new(reqwest_h2c());
    let relative = service
        .clone()
        .oneshot(Request::get("/no-host").body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap_err();
    assert!(relative.to_string().contains("builder"), "{relative}");

    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = service
        .oneshot(
            Request::get(format!("http://127.0.0.1:{port}/"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let reqwest_error = refused.downcast_ref::<reqwest::Error>().expect("a reqwest error");
    assert!(reqwest_error.is_connect(), "{refused:?}");
}
