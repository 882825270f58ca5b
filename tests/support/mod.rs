//! Shared helpers for the integration tests: a counting upstream service
//! and request helpers.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus};

pub type Req = Request<Full<Bytes>>;
pub type Res = Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(Req, usize) -> Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>> + Send + Sync>;

/// An upstream whose behaviour is a closure of the request and the call
/// number (0-based), counting its calls.
#[derive(Clone)]
pub struct Upstream {
    pub calls: Arc<AtomicUsize>,
    handler: Handler,
}

impl Upstream {
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(Req, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, BoxError>> + Send + 'static,
    {
        Upstream {
            calls: Arc::default(),
            handler: Arc::new(move |req, n| Box::pin(handler(req, n))),
        }
    }

    /// Always answers `body` with the given `Cache-Control`.
    pub fn fixed(cache_control: &'static str, body: &'static str) -> Self {
        Upstream::new(move |_, _| async move { Ok(ok(cache_control, body)) })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Req> for Upstream {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.handler)(req, n)
    }
}

pub fn ok(cache_control: &str, body: &'static str) -> Res {
    Response::builder()
        .header("cache-control", cache_control)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A response with `status`, the given header lines and `body`.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &'static str) -> Res {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
}

/// An upstream answering `first`, then `then` to every later call.
pub fn first_then(first: fn() -> Res, then: fn() -> Res) -> Upstream {
    Upstream::new(move |_, n| async move { Ok(if n == 0 { first() } else { then() }) })
}

pub fn cache() -> Cache {
    Cache::builder()
        .max_bytes(4 << 20)
        .max_entry_bytes(64 << 10)
        .build()
        .unwrap()
}

pub type Client = tower_optimizer::cache::CacheService<Upstream>;

pub fn client(cache: &Cache, upstream: &Upstream) -> Client {
    tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream.clone())
}

/// What a test reads from a response.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub cache: CacheStatus,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// Sends `req` through `client` (any cache over any upstream) and reads the
/// whole answer.
pub async fn send<S, B>(client: &mut S, req: Req) -> Result<Got, BoxError>
where
    S: Service<Req, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let res = client.ready().await?.call(req).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(Got {
        status: parts.status.as_u16(),
        cache: {
            let extension = *parts
                .extensions
                .get::<CacheStatus>()
                .expect("every response carries a CacheStatus");
            // The header says the same, read back.
            assert_eq!(CacheStatus::from_headers(&parts.headers), Some(extension));
            extension
        },
        headers: parts.headers,
        body,
    })
}

pub async fn get(client: &mut Client, uri: &str) -> Got {
    send(client, Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap()
}

pub fn req(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

pub fn empty() -> Full<Bytes> {
    Full::default()
}

/// Runs `script` to its end on a fresh current-thread runtime with a paused
/// clock: what each case of a property test needs.
pub fn on_paused_runtime<F: std::future::Future>(script: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
        .block_on(script)
}
