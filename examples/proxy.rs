//! A reverse proxy through the stack: listens with HTTP/1.1 and h2c, forwards
//! every method to one upstream, streams bodies both ways, removes
//! hop-by-hop headers, adds `Via`, and answers 502 or 504 with a short
//! reason when the upstream fails, or 503 with `Retry-After` while the
//! upstream's circuit is open.
//!
//! `cargo run --release --example proxy -- --listen 127.0.0.1:8080
//!  --upstream http://127.0.0.1:9000 [--http1] [--shared] [--config FILE]
//!  [--admin 127.0.0.1:9464] [--admin-token TOKEN]`
#![allow(dead_code, unreachable_pub)] // `tests/proxy.rs` includes this file for its functions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderName, HeaderValue, RETRY_AFTER, TE, VIA};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheMode};
use tower_optimizer::circuit_breaker::error::Open;
use tower_optimizer::stack::{ClientConfig, OptimizedService, OptimizerConfig, OptimizerStack, Protocol, http_client};

/// Request bodies stream from the listener to the upstream.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn short(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(format!("{reason}\n")))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

/// Forwards one request to `upstream` through `client`.
pub async fn forward(
    client: OptimizedService<ProxyBody>,
    upstream: Uri,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", upstream.to_string().trim_end_matches('/')).parse::<Uri>() else {
        return short(StatusCode::BAD_REQUEST, "bad request target");
    };
    let via = format!("{} tower-optimizer", version_text(parts.version));
    // `TE: trailers` says the client reads trailers (gRPC's always does);
    // it is the one hop-by-hop field HTTP/2 keeps (RFC 9113 §8.2.2), so it
    // goes on, with the `Connection: te` an HTTP/1.1 hop needs beside it
    // (RFC 9110 §10.1.4; the HTTP/2 client drops that line itself).
    let wants_trailers = parts
        .headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            coding
                .split(';')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers"))
        });
    strip_hop_by_hop(&mut parts.headers);
    if wants_trailers {
        parts.headers.insert(TE, HeaderValue::from_static("trailers"));
        parts.headers.insert(CONNECTION, HeaderValue::from_static("te"));
    }
    // Every proxy that forwards a message says so, in both directions
    // (RFC 9110 §7.6.3).
    if let Ok(value) = HeaderValue::from_str(&via) {
        parts.headers.append(VIA, value);
    }
    // The client names the upstream itself (`Host` or `:authority`).
    parts.headers.remove(HOST);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let request: Request<ProxyBody> = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
    // Boxed with its type spelled out: the compiler otherwise fails to see
    // that the future is `Send` for every lifetime of the boxed error.
    let call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>> =
        Box::pin(client.oneshot(request));
    match call.await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // The protocol this answer came in with, from the upstream.
            let via = format!("{} tower-optimizer", version_text(parts.version));
            if let Ok(value) = HeaderValue::from_str(&via) {
                parts.headers.append(VIA, value);
            }
            Response::from_parts(parts, body)
        }
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
            short(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
        }
        Err(error) => {
            // The upstream is known to be down, and for how long: say so,
            // so the proxy's own clients back off instead of retrying at once.
            if let Some(open) = error.downcast_ref::<Open>() {
                let mut res = short(StatusCode::SERVICE_UNAVAILABLE, &open.to_string());
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(open.retry_after_secs()));
                return res;
            }
            // The error and its sources: `client error (Connect)` alone
            // would not say that the connection was refused.
            let mut reason = format!("upstream failed: {error}");
            let mut source = error.source();
            while let Some(e) = source {
                reason = format!("{reason}: {e}");
                source = e.source();
            }
            short(StatusCode::BAD_GATEWAY, &reason)
        }
    }
}

fn version_text(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

/// Accepts connections on `listener` (HTTP/1.1 and h2c) until the task is aborted.
pub fn serve(listener: TcpListener, client: OptimizedService<ProxyBody>, upstream: Uri) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // A failed accept (a peer gone, descriptors run out) must
                // not end the proxy: wait a moment, then accept again.
                Err(error) => {
                    eprintln!("proxy: accept failed: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move { Ok::<_, Infallible>(forward(client, upstream, req).await) }
                });
                // A client that never finishes its request's head is cut
                // off, and an HTTP/2 client that stops answering pings is
                // gone, with the admin server's limits (hyper needs the
                // timer for both).
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(tower_optimizer::monitor::HEADER_READ_TIMEOUT);
                builder
                    .http2()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive_interval(tower_optimizer::monitor::KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(tower_optimizer::monitor::KEEP_ALIVE_TIMEOUT);
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// The stack a proxy uses: a shared cache (the proxy serves many users),
/// the breaker and a timeout, over a client with streaming request bodies.
pub fn proxy_stack(
    protocol: Protocol,
    mode: CacheMode,
    timeout: Duration,
) -> Result<OptimizedService<ProxyBody>, BoxError> {
    let (layer, optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().mode(mode).build()?)
        .circuit_breaker(tower_optimizer::circuit_breaker::CircuitBreakerConfig::default())
        .timeout(timeout)
        .build::<ProxyBody>()?;
    // Never started, so it holds no task; the layer keeps what it needs.
    drop(optimizer);
    let client = http_client::<ProxyBody>(&ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    Ok(layer.layer(client))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut upstream: Option<Uri> = None;
    let (mut http1, mut shared, mut config, mut admin, mut token) = (false, false, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| BoxError::from(format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--upstream" => upstream = Some(value()?.parse()?),
            "--http1" => http1 = true,
            "--shared" => shared = true,
            "--config" => config = Some(value()?),
            "--admin" => admin = Some(value()?),
            "--admin-token" => token = Some(value()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let upstream = upstream.ok_or("--upstream URL is required")?;
    let protocol = if http1 { Protocol::Http1 } else { Protocol::Http2 };
    let mut builder = match &config {
        Some(path) => OptimizerConfig::from_file(path)?.into_builder()?,
        None => OptimizerStack::builder()
            .cache(
                Cache::builder()
                    .mode(if shared { CacheMode::Shared } else { CacheMode::Private })
                    .build()?,
            )
            .circuit_breaker(tower_optimizer::circuit_breaker::CircuitBreakerConfig::default())
            .timeout(Duration::from_secs(30)),
    };
    builder = builder.client(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    if let Some(addr) = &admin {
        builder = builder
            .monitor(tower_optimizer::stack::MonitorSettings {
                prometheus: true,
                ..Default::default()
            })
            .admin(addr, token.as_deref());
    }
    let (layer, optimizer) = builder.build::<ProxyBody>()?;
    let client = layer.layer(http_client::<ProxyBody>(&ClientConfig {
        protocol,
        ..ClientConfig::default()
    }));
    let started = optimizer.start().await?;
    let listener = TcpListener::bind(listen).await?;
    println!("proxy on http://{} -> {upstream}", listener.local_addr()?);
    if let Some(addr) = started.admin {
        println!("admin on http://{addr}/dashboard");
    }
    let server = serve(listener, client, upstream);
    tokio::signal::ctrl_c().await?;
    server.abort();
    let last = optimizer.shutdown(Duration::from_secs(10)).await;
    // One JSON line a log collector can keep: what the proxy did.
    println!("final stats: {}", serde_json::to_string(&last)?);
    Ok(())
}
