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

/// A request body that sends `part` (a few bytes) and then, if `fail`,
/// fails: a caller's upload whose source broke, a proxy's client hanging
/// up mid-upload. Cloned for retries, each copy fails alike.
#[derive(Clone)]
pub struct Upload {
    pub fail: bool,
    sent: bool,
}

impl Upload {
    pub fn new(fail: bool) -> Self {
        Upload { fail, sent: false }
    }
}

impl http_body::Body for Upload {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let sent = std::mem::replace(&mut self.sent, true);
        std::task::Poll::Ready(match (sent, self.fail) {
            (false, _) => Some(Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'u'; 16 * 1024])))),
            (true, true) => Some(Err(std::io::Error::other("the upload's source failed"))),
            (true, false) => None,
        })
    }
}

/// Connects to `addr`, sends `head` (a request head never finished) and
/// reads until the server closes the connection, which must happen after
/// `timeout` and well before twice that (paused clock); the bytes the
/// server sent before closing.
pub async fn slow_head_is_cut_off(addr: SocketAddr, head: &[u8], timeout: std::time::Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(head).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(timeout * 6, slow.read_to_end(&mut answer))
        .await
        .expect("closed by the server")
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < timeout * 2, "{waited:?}");
    answer
}

/// What an HTTP/2 client that says hello and then falls silent sends: the
/// preface and an empty SETTINGS frame.
pub const SILENT_H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The types of the HTTP/2 frames in `bytes`, as a server wrote them:
/// 9-byte headers, the length in the first three bytes, the type in the
/// fourth.
pub fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16 | usize::from(bytes[at + 1]) << 8 | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    types
}

/// An HTTP/2 client that says hello ([`SILENT_H2_HELLO`]), then only
/// answers the server's pings, until the server closes the connection (at
/// most `limit`): the types of the frames it got, and how long it was kept.
pub async fn answer_pings_until_closed(addr: SocketAddr, limit: std::time::Duration) -> (Vec<u8>, std::time::Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(SILENT_H2_HELLO).await.unwrap();
    let started = tokio::time::Instant::now();
    let run = async move {
        let (mut types, mut pending, mut chunk) = (Vec::new(), Vec::new(), [0u8; 4096]);
        // A reset or a refused write is the server closing too.
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            pending.extend_from_slice(&chunk[..n]);
            while pending.len() >= 9 {
                let len = usize::from(pending[0]) << 16 | usize::from(pending[1]) << 8 | usize::from(pending[2]);
                if pending.len() < 9 + len {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..9 + len).collect();
                types.push(frame[3]);
                // A PING without the ACK flag gets its payload back, ACKed.
                if frame[3] == 6 && frame[4] & 1 == 0 {
                    let mut ack = frame;
                    ack[4] = 1;
                    if stream.write_all(&ack).await.is_err() {
                        return types;
                    }
                }
            }
        }
        types
    };
    let types = tokio::time::timeout(limit, run).await.expect("closed by the server");
    (types, started.elapsed())
}
