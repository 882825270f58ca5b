//! The stack's own HTTP/2 client against real loopback sockets: its
//! connect timeout, pool idle timeout and HTTP/2 keep-alive. Real sockets
//! on the real clock: these timers are the client's own and run on
//! tokio's clock, which a paused test would advance whenever the runtime
//! waits on a socket. Nothing sleeps: each test waits, bounded, for the
//! event it expects.
#![cfg(feature = "stack")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_optimizer::BoxError;
use tower_optimizer::stack::{ClientConfig, OptimizedService, OptimizerStack, Protocol};

fn ok() -> Response<Full<Bytes>> {
    Response::builder()
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}

async fn get(client: &OptimizedService<Full<Bytes>>, url: &str) -> Result<Bytes, BoxError> {
    let req = Request::get(url).body(Full::default())?;
    let res = client.clone().oneshot(req).await?;
    Ok(res.into_body().collect().await?.to_bytes())
}

/// A loopback server counting the connections it accepts and reporting
/// each one's number when it closes. It speaks h2c, or HTTP/1.1 with
/// `http1`. Its first `together` requests are answered only once all of
/// them have arrived (none wait when it is 0 or 1).
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: tokio::sync::mpsc::UnboundedReceiver<usize>,
}

async fn server(http1: bool, together: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let gate = Arc::new(tokio::sync::Barrier::new(together));
    let requests = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let (closed_tx, gate, requests) = (closed_tx.clone(), gate.clone(), requests.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let gate = gate.clone();
                    let held = requests.fetch_add(1, Ordering::SeqCst) < together;
                    async move {
                        if held {
                            gate.wait().await;
                        }
                        Ok::<_, Infallible>(ok())
                    }
                });
                let io = TokioIo::new(stream);
                let _ = if http1 {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                };
                let _ = closed_tx.send(n);
            });
        }
    });
    Server { addr, accepted, closed }
}

/// The next connection the server saw close, waiting at most 10 s.
async fn next_close(server: &mut Server) -> usize {
    tokio::time::timeout(Duration::from_secs(10), server.closed.recv())
        .await
        .expect("a connection closed")
        .unwrap()
}

/// A TCP relay to `upstream` that can be frozen: once `frozen` is set it
/// forwards nothing more in either direction, as a peer that vanished
/// without closing its connections (a crashed host, a dropped NAT entry).
async fn freezable_relay(upstream: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, frozen.clone()));
            tokio::spawn(pump(server_read, client_write, frozen.clone()));
        }
    });
    addr
}

/// Copies `from` to `to` until either ends; once `frozen`, holds the
/// connection open and forwards nothing.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn keep_alive_pings_find_a_peer_that_vanished_and_the_next_call_reconnects() {
    let upstream = server(false, 0).await.addr;
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(upstream, frozen.clone()).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .client(ClientConfig {
            http2_keep_alive: Some(Duration::from_millis(100)),
            http2_keep_alive_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        })
        .build_http2_client()
        .unwrap();
    let url = format!("http://{relay}/");
    assert_eq!(get(&client, &url).await.unwrap(), "ok");
    // The peer goes silent: a call on its connection would wait forever
    // (the stack has no request timeout here). The unanswered ping closes
    // the connection and fails the call instead.
    frozen.store(true, Ordering::SeqCst);
    let stuck = tokio::time::timeout(Duration::from_secs(10), get(&client, &url))
        .await
        .expect("the keep-alive timeout ended the call");
    assert!(stuck.is_err(), "the call failed with its connection: {stuck:?}");
    // A new connection through the relay works again.
    frozen.store(false, Ordering::SeqCst);
    let again = tokio::time::timeout(Duration::from_secs(10), get(&client, &url))
        .await
        .expect("the next call did not hang");
    assert_eq!(again.unwrap(), "ok", "a fresh connection");
}

// Real sockets on the real clock: the timeout under test is the client's
// own, on a connect that cannot complete.
#[tokio::test]
async fn the_client_gives_up_on_a_connect_after_its_connect_timeout() {
    // A listener that never accepts, its accept queue filled: Linux drops
    // further SYNs, so a new connect hangs until someone gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        let probe = tokio::net::TcpSocket::new_v4().unwrap().connect(addr);
        match tokio::time::timeout(Duration::from_millis(200), probe).await {
            Ok(stream) => queued.push(stream.unwrap()),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    let (client, _optimizer) = OptimizerStack::builder()
        .client(ClientConfig {
            connect_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        })
        .build_http2_client()
        .unwrap();
    let req = Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), client.oneshot(req))
        .await
        .expect("the client gave up by itself")
        .unwrap_err();
    let elapsed = started.elapsed();
    let connect = err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .unwrap_or_else(|| panic!("not a client error: {err:?}"));
    assert!(connect.is_connect(), "{err:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "gave up after {elapsed:?}, not at its 100 ms"
    );
    drop(listener);
}

// Real sockets on the real clock: the pool's idle timer is the client's own
// and it runs on tokio's clock, which a paused test would advance whenever
// the runtime waits on a socket. Nothing sleeps: the test waits for the
// server to see the connection close.
#[tokio::test]
async fn the_client_closes_connections_idle_past_its_pool_idle_timeout() {
    let mut server = server(false, 0).await;
    let idle = Duration::from_millis(200);
    let (client, _optimizer) = OptimizerStack::builder()
        .client(ClientConfig {
            pool_idle_timeout: idle,
            ..ClientConfig::default()
        })
        .build_http2_client()
        .unwrap();
    let url = format!("http://{}/", server.addr);
    let started = std::time::Instant::now();
    assert_eq!(get(&client, &url).await.unwrap(), "ok");
    assert_eq!(get(&client, &url).await.unwrap(), "ok");
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "one pooled connection serves both"
    );
    assert_eq!(
        next_close(&mut server).await,
        1,
        "the client closed the idle connection"
    );
    assert!(started.elapsed() >= idle, "not before it was idle that long");
    assert_eq!(get(&client, &url).await.unwrap(), "ok");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2, "a new connection after that");
}

#[tokio::test]
async fn the_pool_keeps_at_most_its_idle_connections_per_host() {
    // Two calls at once over HTTP/1.1 take two connections: the server
    // answers neither until both have arrived.
    let mut server = server(true, 2).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .client(ClientConfig {
            protocol: Protocol::Http1,
            pool_max_idle_per_host: 1,
            ..ClientConfig::default()
        })
        .build_http2_client()
        .unwrap();
    let url = format!("http://{}/", server.addr);
    let (a, b) = tokio::join!(get(&client, &url), get(&client, &url));
    assert_eq!((a.unwrap(), b.unwrap()), (Bytes::from("ok"), Bytes::from("ok")));
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    // Room for one idle connection: the client closes the other, and the
    // one it kept serves the next call.
    next_close(&mut server).await;
    assert_eq!(get(&client, &url).await.unwrap(), "ok");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2, "no new connection");
}
