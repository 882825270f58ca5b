//! The cache in front of a real hyper-util HTTP/2 client talking to a real
//! hyper HTTP/2 server on 127.0.0.1 (h2c prior knowledge).
#![cfg(feature = "cache")]

#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus};

/// Server body: `/big` streams 200 kB in 16 kB frames, `/reset` sends half
/// a body then fails (hyper resets the stream), others answer small.
enum ServerBody {
    Chunks(Vec<Bytes>),
    ResetAfter(Option<Bytes>),
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ServerBody::Chunks(chunks) => Poll::Ready(if chunks.is_empty() {
                None
            } else {
                Some(Ok(Frame::data(chunks.remove(0))))
            }),
            ServerBody::ResetAfter(first) => Poll::Ready(Some(match first.take() {
                Some(data) => Ok(Frame::data(data)),
                None => Err("server gave up".into()),
            })),
        }
    }
}

async fn serve(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::builder()
                .header("cache-control", "max-age=3600")
                .header("etag", "\"v1\"");
            if req.uri().path().starts_with("/big-declared") {
                res = res.header("content-length", "200000");
            }
            let body = match req.uri().path() {
                path if path == "/big" || path.starts_with("/big/") || path.starts_with("/big-declared") => {
                    ServerBody::Chunks(
                        (0..200_000u32)
                            .map(|i| i as u8)
                            .collect::<Vec<u8>>()
                            .chunks(16_384)
                            .map(Bytes::copy_from_slice)
                            .collect(),
                    )
                }
                "/reset" => ServerBody::ResetAfter(Some(Bytes::from_static(b"partial"))),
                path => ServerBody::Chunks(vec![Bytes::from(format!("hello from {path}"))]),
            };
            Ok::<_, Infallible>(res.body(body).unwrap())
        }
    });
    server::serve(server::Protocol::H2c, service).await
}

type H2Client = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn h2_client() -> H2Client {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

async fn get(
    svc: &mut tower_optimizer::cache::CacheService<H2Client>,
    url: &str,
) -> Result<(CacheStatus, Bytes), BoxError> {
    let res = svc
        .ready()
        .await?
        .call(Request::get(url).body(Full::default())?)
        .await?;
    let status = CacheStatus::from_headers(res.headers()).unwrap();
    Ok((status, res.into_body().collect().await?.to_bytes()))
}

// Real sockets run on the real clock: a paused clock auto-advances to the
// next timer whenever the runtime waits on a socket, which would fire the
// coalescing lock timeout at once. Nothing here sleeps or depends on timing.
#[tokio::test]
async fn cache_over_real_http2() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(hits.clone()).await;
    let cache = Cache::builder().max_entry_bytes(64 << 10).build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), h2_client());
    let base = format!("http://{addr}");

    let (miss, body) = get(&mut svc, &format!("{base}/a")).await.unwrap();
    assert!(miss.stored);
    assert_eq!(body, "hello from /a");
    let (hit, body) = get(&mut svc, &format!("{base}/a")).await.unwrap();
    assert!(hit.hit);
    assert_eq!(body, "hello from /a");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Concurrent misses over one HTTP/2 connection coalesce into one stream.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut svc = svc.clone();
        let url = format!("{base}/b");
        tasks.push(tokio::spawn(async move { get(&mut svc, &url).await.unwrap().1 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "hello from /b");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // 200 kB over a 64 kB entry limit: streamed through, byte for byte.
    let (big, body) = get(&mut svc, &format!("{base}/big")).await.unwrap();
    assert!(!big.stored);
    assert_eq!(body.len(), 200_000);
    assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8));

    // A stream the server resets: the caller gets an error, nothing is stored.
    assert!(get(&mut svc, &format!("{base}/reset")).await.is_err());
    assert!(get(&mut svc, &format!("{base}/reset")).await.is_err());
    assert_eq!(cache.stats().entries, 2);
    assert!(cache.audit().is_clean());

    // With room for it, 200 kB is past the default `stream_above` (64 kB):
    // the caller reads it as it comes, and the cache stores its copy at the
    // end of the real HTTP/2 stream.
    let roomy = Cache::builder().max_entry_bytes(256 << 10).build().unwrap();
    let mut streaming = tower::Layer::layer(&CacheLayer::new(roomy.clone()), h2_client());
    let before = hits.load(Ordering::SeqCst);
    let (streamed, body) = get(&mut streaming, &format!("{base}/big")).await.unwrap();
    assert_eq!((streamed.stored, streamed.detail), (false, Some("streamed")));
    assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8) && body.len() == 200_000);
    let (hit, body) = get(&mut streaming, &format!("{base}/big")).await.unwrap();
    assert!(hit.hit, "stored at the end of the stream");
    assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8) && body.len() == 200_000);
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    assert!(roomy.audit().is_clean());

    // Declared, it is read once and shared as it arrives: eight requests at
    // once, one upstream stream, every byte to each.
    let before = hits.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut svc = streaming.clone();
        let url = format!("{base}/big-declared");
        tasks.push(tokio::spawn(async move { get(&mut svc, &url).await.unwrap() }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status.detail, Some("streamed"));
        assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8) && body.len() == 200_000);
    }
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    let (hit, body) = get(&mut streaming, &format!("{base}/big-declared")).await.unwrap();
    assert!(hit.hit && body.len() == 200_000);
    assert!(roomy.audit().is_clean());

    // A refused connection is an error from the client, passed through.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = get(&mut svc, &format!("http://{closed}/x")).await.unwrap_err();
    assert!(
        err.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    );
}

/// Shared bodies on two worker threads: 64 requests over 8 keys at once
/// (4 declaring their length, 4 not), each body read once upstream and
/// whole by every reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_long_bodies_across_threads() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(hits.clone()).await;
    let cache = Cache::builder().max_entry_bytes(256 << 10).build().unwrap();
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), h2_client());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut svc = svc.clone();
        let path = if i % 2 == 0 { "big-declared" } else { "big" };
        let url = format!("http://{addr}/{path}/{}", i % 8);
        tasks.push(tokio::spawn(async move { get(&mut svc, &url).await.unwrap() }));
    }
    for task in tasks {
        let (_, body) = task.await.unwrap();
        assert!(body.len() == 200_000 && body.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 8, "one upstream stream per key");
    assert_eq!(cache.stats().entries, 8);
    assert_eq!(cache.stats().inflight_bytes, 0);
    assert!(cache.audit().is_clean());
}

/// Bodies that declare no length and outgrow `max_entry_bytes` while
/// shared, on two worker threads: each reader gets every byte (those that
/// joined at the pace of the slowest, the rest upstream on their own),
/// nothing is stored and no room stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_bodies_that_overflow_reach_every_reader_whole() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(hits.clone()).await;
    let cache = Cache::builder()
        .stream_above(16 << 10)
        .max_entry_bytes(64 << 10)
        .build()
        .unwrap();
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), h2_client());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut svc = svc.clone();
        let url = format!("http://{addr}/big/{}", i % 2);
        tasks.push(tokio::spawn(async move { get(&mut svc, &url).await.unwrap() }));
    }
    for task in tasks {
        let (_, body) = task.await.unwrap();
        assert!(body.len() == 200_000 && body.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
    let hits = hits.load(Ordering::SeqCst);
    assert!((2..=32).contains(&hits), "{hits} upstream streams");
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.inflight_bytes), (0, 0));
    assert!(stats.coalesced > 0 || hits == 32);
    assert!(cache.audit().is_clean());
}

/// A server whose answers carry the `Cache-Control` the path names:
/// `/must-understand/<status>` says `max-age=3600, must-understand,
/// no-store` with that status, `/immutable` adds `immutable` to an hour's
/// freshness, `/mutable` has the hour alone.
async fn serve_directives(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let path = req.uri().path();
            let (status, cache_control) = match path.strip_prefix("/must-understand/") {
                Some(status) => (status.parse().unwrap(), "max-age=3600, must-understand, no-store"),
                None if path == "/immutable" => (200, "max-age=3600, immutable"),
                None => (200, "max-age=3600"),
            };
            let response = Response::builder()
                .status(status)
                .header("cache-control", cache_control)
                .body(Full::new(Bytes::from(format!("{path} #{n}"))))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    server::serve(server::Protocol::H2c, service).await
}

/// `must-understand` (RFC 9111 §5.2.2.3) and `immutable` (RFC 8246) as a
/// real server sends them.
#[tokio::test]
async fn must_understand_and_immutable_over_real_http2() {
    let hits = Arc::new(AtomicUsize::new(0));
    let base = format!("http://{}", serve_directives(hits.clone()).await);
    let cache = Cache::builder().build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), h2_client());
    let with = |path: &str, cache_control: &str| {
        Request::get(format!("{base}{path}"))
            .header("cache-control", cache_control)
            .body(Full::default())
            .unwrap()
    };

    // A status this cache knows: stored, the `no-store` beside
    // `must-understand` being for caches that do not.
    let (first, body) = get(&mut svc, &format!("{base}/must-understand/200")).await.unwrap();
    assert!(first.stored, "{first}");
    let (hit, again) = get(&mut svc, &format!("{base}/must-understand/200")).await.unwrap();
    assert!(hit.hit && again == body, "{hit}");
    // One it does not know (299 has no meaning in RFC 9110): never stored.
    for _ in 0..2 {
        let (unknown, _) = get(&mut svc, &format!("{base}/must-understand/299")).await.unwrap();
        assert_eq!((unknown.stored, unknown.detail), (false, Some("status")), "{unknown}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // A reload (`max-age=0`) of a fresh immutable response is answered
    // from the cache; of an ordinary one, it goes upstream.
    for path in ["/immutable", "/mutable"] {
        assert!(get(&mut svc, &format!("{base}{path}")).await.unwrap().0.stored);
    }
    let before = hits.load(Ordering::SeqCst);
    let reload = svc
        .ready()
        .await
        .unwrap()
        .call(with("/immutable", "max-age=0"))
        .await
        .unwrap();
    assert!(CacheStatus::of(reload.extensions(), reload.headers()).unwrap().hit);
    assert_eq!(hits.load(Ordering::SeqCst), before, "not revalidated");
    let reload = svc
        .ready()
        .await
        .unwrap()
        .call(with("/mutable", "max-age=0"))
        .await
        .unwrap();
    assert!(!CacheStatus::of(reload.extensions(), reload.headers()).unwrap().hit);
    assert_eq!(hits.load(Ordering::SeqCst), before + 1, "revalidated");
    // A forced reload (`no-cache`) goes upstream, immutable or not.
    let forced = svc
        .ready()
        .await
        .unwrap()
        .call(with("/immutable", "no-cache"))
        .await
        .unwrap();
    let status = CacheStatus::of(forced.extensions(), forced.headers()).unwrap();
    assert_eq!(status.fwd, Some(tower_optimizer::cache::Forward::Request), "{status}");
    assert_eq!(hits.load(Ordering::SeqCst), before + 2);
    assert!(cache.audit().is_clean());
}
