//! Loopback HTTP servers for the integration tests: a real hyper server on
//! 127.0.0.1, port 0, serving a clone of one service per connection until
//! the test's runtime ends.
#![allow(dead_code, unreachable_pub)]

use std::error::Error;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the server speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// HTTP/2 with prior knowledge only.
    H2c,
    /// HTTP/1.1 or h2c, whichever the client opens with.
    Auto,
}

/// Serves `service` on a fresh loopback port; its address.
pub async fn serve<S, B>(protocol: Protocol, service: S) -> SocketAddr
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                // A connection ends with the test or a client reset; either
                // way the test itself reports what went wrong.
                match protocol {
                    Protocol::H2c => {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    }
                    Protocol::Auto => {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    }
                }
            });
        }
    });
    addr
}
