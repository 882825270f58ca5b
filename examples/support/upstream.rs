//! The local upstream of the axum and reqwest examples: h2c on 127.0.0.1,
//! answering `{prefix}{id}` with `{"id":"<id>"}` as JSON, cacheable for a
//! minute, and counting the requests that reach it.

#[path = "accept.rs"]
mod accept;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Starts the upstream; its address. `calls` counts its requests.
pub(crate) async fn json_upstream(prefix: &'static str, calls: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        accept::accept_forever(listener, move |stream| {
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let id = req.uri().path().trim_start_matches(prefix).to_owned();
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .header("cache-control", "max-age=60")
                                .body(Full::new(Bytes::from(format!("{{\"id\":{id:?}}}"))))
                                .expect("a valid response"),
                        )
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
