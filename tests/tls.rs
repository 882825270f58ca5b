//! The stack over TLS: a real hyper server behind rustls on 127.0.0.1 with a
//! self-signed certificate made for the test; HTTP/2 negotiated by ALPN,
//! HTTP/1.1 when asked, and an untrusted certificate refused with an error.
#![cfg(feature = "tls")]

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_optimizer::cache::{Cache, CacheStatus, Outcome};
use tower_optimizer::stack::{OptimizedService, OptimizerStack};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for 127.0.0.1.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()));
    (der, private)
}

/// A TLS server offering h2 and HTTP/1.1 by ALPN; counts requests and
/// answers with the protocol it spoke.
async fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> (SocketAddr, Arc<AtomicUsize>) {
    tls_server_with(cert, key, &[b"h2", b"http/1.1"]).await
}

/// A TLS server offering `alpn`.
async fn tls_server_with(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A failed handshake (the untrusting client) just ends here.
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let body = format!("{:?}", req.version());
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("cache-control", "max-age=60")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                // Serve what ALPN chose, as real servers do.
                let builder = auto::Builder::new(TokioExecutor::new());
                let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (addr, hits)
}

fn trusting(cert: &CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

async fn get(
    client: &OptimizedService<Full<Bytes>>,
    url: &str,
) -> Result<(Version, Option<Outcome>, String), tower_optimizer::BoxError> {
    let res = client.clone().oneshot(Request::get(url).body(Full::default())?).await?;
    let version = res.version();
    let outcome = CacheStatus::from_headers(res.headers())
        .as_ref()
        .map(CacheStatus::outcome);
    let body = res.into_body().collect().await?.to_bytes();
    Ok((version, outcome, String::from_utf8(body.to_vec())?))
}

// Real sockets on the real clock; nothing here sleeps.
#[tokio::test]
async fn http2_over_tls_with_the_cache() {
    let (cert, key) = certificate();
    let (addr, hits) = tls_server(cert.clone(), key).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .cache(Cache::builder().build().unwrap())
        .build_https_client(trusting(&cert))
        .unwrap();
    let url = format!("https://{addr}/users/1");

    let (version, outcome, body) = get(&client, &url).await.unwrap();
    assert_eq!(version, Version::HTTP_2, "h2 by ALPN");
    assert_eq!(body, "HTTP/2.0", "the server spoke HTTP/2");
    assert_eq!(outcome, Some(Outcome::Miss));
    let (_, outcome, body) = get(&client, &url).await.unwrap();
    assert_eq!((outcome, body.as_str()), (Some(Outcome::Hit), "HTTP/2.0"));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the second answer came from the cache");
}

#[tokio::test]
async fn http1_over_tls_when_asked() {
    let (cert, key) = certificate();
    let (addr, hits) = tls_server(cert.clone(), key).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .http1()
        .build_https_client(trusting(&cert))
        .unwrap();
    let (version, _, body) = get(&client, &format!("https://{addr}/")).await.unwrap();
    assert_eq!((version, body.as_str()), (Version::HTTP_11, "HTTP/1.1"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_is_an_error() {
    let (cert, key) = certificate();
    let (addr, hits) = tls_server(cert, key).await;
    let (stranger, _) = certificate();
    let (client, _optimizer) = OptimizerStack::builder()
        .build_https_client(trusting(&stranger))
        .unwrap();
    let error = get(&client, &format!("https://{addr}/")).await.unwrap_err();
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    assert!(
        chain.iter().any(|e| e.contains("certificate")),
        "the error says why: {chain:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");
}

#[tokio::test]
async fn an_http1_only_server_gets_http1_by_alpn() {
    let (cert, key) = certificate();
    let (addr, _) = tls_server_with(cert.clone(), key, &[b"http/1.1"]).await;
    let (client, _optimizer) = OptimizerStack::builder().build_https_client(trusting(&cert)).unwrap();
    let (version, _, body) = get(&client, &format!("https://{addr}/")).await.unwrap();
    assert_eq!((version, body.as_str()), (Version::HTTP_11, "HTTP/1.1"));
}

#[tokio::test]
async fn the_tls_client_speaks_h2c_to_http_urls() {
    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{:?}", req.version())))))
    });
    // HTTP/2 only: an HTTP/1.1 request would fail here.
    let addr = server::serve(server::Protocol::H2c, svc).await;
    let (cert, _) = certificate();
    let (client, _optimizer) = OptimizerStack::builder().build_https_client(trusting(&cert)).unwrap();
    let (version, _, body) = get(&client, &format!("http://{addr}/")).await.unwrap();
    assert_eq!((version, body.as_str()), (Version::HTTP_2, "HTTP/2.0"));
}

#[tokio::test]
async fn a_custom_ca_and_the_development_bypass() {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = key.cert.pem();
    let der = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()));
    let (addr, hits) = tls_server(der, private).await;
    let url = format!("https://{addr}/");

    let (client, _) = OptimizerStack::builder()
        .build_https_client(tower_optimizer::stack::custom_ca(pem.as_bytes()).unwrap())
        .unwrap();
    assert_eq!(get(&client, &url).await.unwrap().0, Version::HTTP_2);

    let (client, _) = OptimizerStack::builder()
        .build_https_client(tower_optimizer::stack::danger_accept_invalid_certs())
        .unwrap();
    assert_eq!(
        get(&client, &url).await.unwrap().0,
        Version::HTTP_2,
        "accepted unverified"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    for bad in [
        "",
        "not a pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let error = tower_optimizer::stack::custom_ca(bad.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{bad:?}: {error}");
    }
}

#[test]
fn system_roots_load() {
    // Debian's ca-certificates: .ci/run installs it when it is missing.
    let config = tower_optimizer::stack::native_roots().expect("system roots");
    assert!(config.alpn_protocols.is_empty(), "the client sets ALPN itself");
}

#[tokio::test]
async fn webpki_roots_do_not_trust_a_self_signed_certificate() {
    let (cert, key) = certificate();
    let (addr, _) = tls_server(cert, key).await;
    let (client, _optimizer) = OptimizerStack::builder()
        .build_https_client(tower_optimizer::stack::webpki_roots())
        .unwrap();
    let error = get(&client, &format!("https://{addr}/")).await.unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
}
