//! The crate's own HTTP client: hyper-util's legacy `Client`, HTTP/2 by
//! prior knowledge (h2c) unless told to speak HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Request body of the built-in client.
pub type ClientBody = Full<Bytes>;

/// The built-in client before layering.
pub type HttpClient = Client<HttpConnector, ClientBody>;

/// Which HTTP version the client speaks to upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/2 with prior knowledge (h2c) — the default.
    #[default]
    Http2,
    /// HTTP/1.1, for upstreams that only speak it.
    Http1,
}

/// Client settings, with defaults for a service-to-service client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Connect timeout: 5 s fails a dead host fast without failing slow networks.
    pub connect_timeout: Duration,
    /// Idle pooled connections close after this (90 s, hyper-util's default).
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 keep-alive ping interval (20 s keeps NATs and load balancers from
    /// dropping quiet connections).
    pub http2_keep_alive: Option<Duration>,
    /// With keep-alive on, a connection whose ping goes unanswered this long
    /// is closed, and the calls on it fail instead of hanging on a peer that
    /// is gone (20 s, hyper's default).
    pub http2_keep_alive_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            protocol: Protocol::Http2,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
            http2_keep_alive: Some(Duration::from_secs(20)),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// Builds the hyper-util client for request bodies `B` (for example
/// [`ClientBody`], or a boxed streaming body in a proxy). TCP_NODELAY is
/// set: small HTTP/2 frames must not wait on Nagle and delayed ACKs (about
/// 40 ms otherwise).
pub fn http_client<B>(config: &ClientConfig) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = client_builder(config);
    if config.protocol == Protocol::Http2 {
        builder.http2_only(true);
    }
    builder.build(connector(config))
}

/// The TCP connector every client uses.
fn connector(config: &ClientConfig) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector
}

/// Pool, timers and HTTP/2 keep-alive, shared by the plain and the TLS
/// client (which differ in how they choose HTTP/2).
fn client_builder(config: &ClientConfig) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host);
    if config.protocol == Protocol::Http2 {
        if let Some(interval) = config.http2_keep_alive {
            builder
                .http2_keep_alive_interval(interval)
                .http2_keep_alive_timeout(config.http2_keep_alive_timeout)
                .http2_keep_alive_while_idle(true);
        }
    }
    builder
}

/// The built-in HTTPS client before layering (feature `tls`).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub type HttpsClient<B = ClientBody> = Client<hyper_rustls::HttpsConnector<super::tls::PriorKnowledge>, B>;

/// Builds the hyper-util client over rustls (feature `tls`) with the roots
/// and settings in `tls` (see [`native_roots`](super::native_roots),
/// [`custom_ca`](super::custom_ca)). `https` URIs go over TLS, `http` ones in
/// the clear. With [`Protocol::Http2`], TLS offers `h2` then `http/1.1` in
/// ALPN (an HTTP/1.1-only server still works) and the clear side speaks h2c;
/// with [`Protocol::Http1`], HTTP/1.1 everywhere. Any ALPN list already in
/// `tls` is replaced accordingly.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub fn https_client<B>(config: &ClientConfig, tls: rustls::ClientConfig) -> HttpsClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut tcp = connector(config);
    // The TLS connector hands `https` URIs to the TCP connector, which
    // refuses them unless told not to.
    tcp.enforce_http(false);
    let http2 = config.protocol == Protocol::Http2;
    let tcp = super::tls::PriorKnowledge::new(tcp, http2);
    let schemes = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let https = if http2 {
        schemes.enable_http2().wrap_connector(tcp)
    } else {
        schemes.wrap_connector(tcp)
    };
    client_builder(config).build(https)
}
