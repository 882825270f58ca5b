//! TLS for the built-in client (feature `tls`): root sets, a custom CA, the
//! development-only certificate bypass, and the connector that lets one
//! client speak h2c to `http://` and negotiate `h2` or HTTP/1.1 by ALPN for
//! `https://`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tower_service::Service;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn with_roots(roots: RootCertStore) -> io::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A rustls client configuration trusting the system's root certificates
/// (read by rustls-native-certs, e.g. `/etc/ssl/certs`), with the ring
/// provider and rustls' safe default protocol versions.
///
/// # Errors
///
/// When no usable root certificate is found.
pub fn native_roots() -> io::Result<rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_native_roots()?
        .with_no_client_auth();
    Ok(config)
}

/// A rustls client configuration trusting Mozilla's root certificates as
/// compiled into the webpki-roots crate: the same set on every machine,
/// with no system store needed (containers built from scratch).
pub fn webpki_roots() -> rustls::ClientConfig {
    use hyper_rustls::ConfigBuilderExt;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_webpki_roots()
        .with_no_client_auth()
}

/// A rustls client configuration trusting only the CA certificates in
/// `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks): for upstreams
/// behind a private CA.
///
/// ```
/// use tower_optimizer::stack::{OptimizerStack, custom_ca};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_optimizer::BoxError> {
/// let error = custom_ca(b"not a certificate").unwrap_err();
/// assert_eq!(error.to_string(), "no certificate in the CA PEM");
/// # let pem = rcgen::generate_simple_self_signed(vec!["api.internal".to_owned()])?.cert.pem();
/// // `pem` is your CA's certificate.
/// let (client, _optimizer) = OptimizerStack::builder().build_https_client(custom_ca(pem.as_bytes())?)?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// When `pem` holds no certificate, or one that does not parse.
pub fn custom_ca(pem: &[u8]) -> io::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no certificate in the CA PEM",
        ));
    }
    with_roots(roots)
}

/// **Development only**: a configuration that accepts any server
/// certificate — expired, self-signed, for another name. Anyone on the path
/// can read and change the traffic. Handshake signatures are still checked,
/// so the connection is at least to the holder of the presented key.
pub fn danger_accept_invalid_certs() -> rustls::ClientConfig {
    let provider = provider();
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TCP connector under TLS: connections to `http://` URIs are marked as
/// HTTP/2 by prior knowledge (h2c), so the client needs no `http2_only`
/// and `https://` connections can still fall back to HTTP/1.1 by ALPN.
#[derive(Debug, Clone)]
pub struct PriorKnowledge {
    tcp: HttpConnector,
    h2c: bool,
}

impl PriorKnowledge {
    pub(crate) fn new(tcp: HttpConnector, h2c: bool) -> Self {
        PriorKnowledge { tcp, h2c }
    }
}

impl Service<Uri> for PriorKnowledge {
    type Response = MaybeH2c;
    type Error = <HttpConnector as Service<Uri>>::Error;
    // Boxed: connecting is rare next to requests, and hyper-util does not
    // export its connecting future's type.
    type Future = Pin<Box<dyn Future<Output = Result<MaybeH2c, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let h2c = self.h2c && uri.scheme_str() == Some("http");
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            Ok(MaybeH2c {
                io: connecting.await?,
                h2c,
            })
        })
    }
}

pin_project! {
    /// A TCP connection that reports HTTP/2 by prior knowledge when it
    /// carries `http://` traffic on an HTTP/2 client.
    #[derive(Debug)]
    pub struct MaybeH2c {
        #[pin]
        io: TokioIo<TcpStream>,
        h2c: bool,
    }
}

impl Connection for MaybeH2c {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        if self.h2c { connected.negotiated_h2() } else { connected }
    }
}

impl hyper::rt::Read for MaybeH2c {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MaybeH2c {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}
