//! [`GrpcRefusalsLayer`]: a gRPC call this crate's layers refused, answered
//! with the status a gRPC client expects instead of an error it cannot read.
//!
//! Pure mapping in [`Refusal`]; the service only reads the call's
//! `content-type` and, for a gRPC call, turns a refusal into its answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, Version};
use pin_project_lite::pin_project;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower_layer::Layer;
use tower_service::Service;

use super::gate::ShuttingDown;
use crate::BoxError;
use crate::circuit_breaker::error::Open;
use crate::grpc::GrpcCode;

/// Answers gRPC calls refused by this crate's layers with their gRPC
/// status.
///
/// A gRPC client turns an error from its transport into a status by what
/// it recognises (tonic: its own errors, hyper's and h2's); anything else,
/// a passed deadline or an open circuit included, reads as `UNKNOWN`, a
/// code no retry policy acts on and no dashboard tells apart. Here a call
/// whose `content-type` is gRPC's gets a Trailers-Only answer instead
/// (gRPC's `PROTOCOL-HTTP2.md`: `200`, `grpc-status` and `grpc-message` in
/// the head, no body), with the codes gRPC's `statuscodes.md` gives for
/// what happened on the client's side:
///
/// | refusal | `grpc-status` |
/// |---|---|
/// | tower's `Elapsed`: a deadline passed (the call's `grpc-timeout`, the stack's timeout) | 4 `DEADLINE_EXCEEDED` |
/// | [`Open`]: the host's circuit is open | 14 `UNAVAILABLE`, with `grpc-retry-pushback-ms` (gRPC's retry pushback) until it lets calls through |
/// | tower's `Overloaded`: a concurrency limit shed the call | 14 `UNAVAILABLE` |
/// | [`ShuttingDown`](super::ShuttingDown): the stack no longer takes calls | 14 `UNAVAILABLE` |
/// | no connection: hyper-util's connect error (refused, unresolved, timed out), a refused `io::Error` | 14 `UNAVAILABLE` (tonic reads hyper-util's as `UNKNOWN`) |
///
/// Every other error (a stream reset, a connection lost mid-call: tonic
/// reads hyper's and h2's errors itself), every response and every request
/// that is not gRPC passes through untouched. The [`OptimizerStack`](crate::OptimizerStack)
/// puts it outermost, so its metrics still record the refusal as such.
///
/// ```
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_optimizer::BoxError;
/// use tower_optimizer::stack::GrpcRefusalsLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let mut client = ServiceBuilder::new()
///     .layer(GrpcRefusalsLayer::new())
///     .timeout(Duration::from_millis(10))
///     .service_fn(|_req: http::Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(1)).await;
///         Ok::<_, BoxError>(http::Response::new(String::new()))
///     });
/// let call = http::Request::post("http://api.test/items.Items/Get")
///     .header("content-type", "application/grpc")
///     .body(())?;
/// let answer = client.ready().await?.call(call).await?;
/// assert_eq!(answer.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED
/// // Not a gRPC call: the error, as it was.
/// let plain = http::Request::get("http://api.test/items/7").body(())?;
/// assert!(client.ready().await?.call(plain).await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRefusalsLayer {
    _private: (),
}

impl GrpcRefusalsLayer {
    /// The layer; it has no settings.
    pub const fn new() -> Self {
        GrpcRefusalsLayer { _private: () }
    }
}

impl<S> Layer<S> for GrpcRefusalsLayer {
    type Service = GrpcRefusals<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcRefusals { inner }
    }
}

/// The service of [`GrpcRefusalsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcRefusals<S> {
    inner: S,
}

impl<S> GrpcRefusals<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        GrpcRefusals { inner }
    }

    inner_service_accessors!();
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for GrpcRefusals<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = GrpcRefusalsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness errors pass through: the layers refuse calls in `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // gRPC calls are `POST`s: other requests (every cache hit among
        // them) cost one comparison here.
        let grpc = (request.method() == Method::POST)
            .then(|| request.headers().get(CONTENT_TYPE))
            .flatten()
            .filter(|value| is_grpc(value.as_bytes()))
            .map(|value| Box::new(value.clone()));
        GrpcRefusalsFuture {
            inner: self.inner.call(request),
            grpc,
        }
    }
}

/// `application/grpc`, alone, with a message format (`+proto`, `+json`),
/// or as gRPC-Web's `application/grpc-web` (and `-web-text`); parameters
/// after `;` allowed. Not another type that happens to start alike.
fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    if content_type.len() < GRPC.len() || !content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    let rest = &content_type[GRPC.len()..];
    let web = rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"-web");
    let rest = if web { &rest[4..] } else { rest };
    let rest = if web && rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"-text") {
        &rest[5..]
    } else {
        rest
    };
    matches!(rest.first(), None | Some(b'+' | b';' | b' '))
}

pin_project! {
    /// Response future of [`GrpcRefusals`].
    #[must_use = "futures do nothing unless polled"]
    pub struct GrpcRefusalsFuture<F> {
        #[pin]
        inner: F,
        // The call's content type, for a gRPC call: its answer's. Boxed:
        // every call's future is moved whole into the stack's box, and
        // nearly all are not gRPC.
        grpc: Option<Box<HeaderValue>>,
    }
}

impl<F> std::fmt::Debug for GrpcRefusalsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRefusalsFuture")
            .field("grpc", &self.grpc.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for GrpcRefusalsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response),
            Err(error) => {
                let error: BoxError = error.into();
                match (this.grpc.take(), Refusal::of(&*error)) {
                    (Some(content_type), Some(refusal)) => Ok(refusal.answer(*content_type)),
                    _ => Err(error),
                }
            }
        })
    }
}

/// A refusal by one of this crate's layers, as gRPC reports it.
#[derive(Debug, PartialEq)]
struct Refusal {
    code: GrpcCode,
    message: String,
    /// How long the client should wait before trying again.
    pushback: Option<Duration>,
}

impl Refusal {
    /// The refusal `error` (or one of its sources) is, if it is one.
    fn of(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| {
            let (code, pushback) = if let Some(open) = e.downcast_ref::<Open>() {
                (GrpcCode::Unavailable, Some(open.retry_after()))
            } else if e.is::<Elapsed>() {
                (GrpcCode::DeadlineExceeded, None)
            } else if e.is::<Overloaded>() || e.is::<ShuttingDown>() || no_connection(e) {
                (GrpcCode::Unavailable, None)
            } else {
                return None;
            };
            Some(Refusal {
                code,
                // With its sources: a connect error's own text is only
                // `client error (Connect)`.
                message: crate::util::with_sources(e),
                pushback,
            })
        })
    }

    /// The Trailers-Only answer: `200`, the call's content type, the status
    /// and its message in the head, and no body.
    fn answer<B: Default>(&self, content_type: HeaderValue) -> Response<B> {
        let mut response = Response::new(B::default());
        // gRPC runs over HTTP/2 only.
        *response.version_mut() = Version::HTTP_2;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert("grpc-status", HeaderValue::from(u16::from(self.code as u8)));
        // Percent-encoded as gRPC asks, so always a valid header value.
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&self.message)) {
            headers.insert("grpc-message", message);
        }
        if let Some(pushback) = self.pushback {
            let ms = u64::try_from(pushback.as_millis()).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
        response
    }
}

/// Whether `error` is a connection that could not be made: hyper-util's
/// connect error (a refused connection, a name that did not resolve, a
/// connect timeout), or a refused connection as any client reports it.
fn no_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect)
        || error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as
/// `%XX` (gRPC's `PROTOCOL-HTTP2.md`).
fn percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::util::Wrapped;

    fn failing(
        error: fn() -> BoxError,
    ) -> GrpcRefusals<impl Service<Request<()>, Response = Response<String>, Error = BoxError>> {
        GrpcRefusals::new(tower::service_fn(move |_: Request<()>| async move {
            Err::<Response<String>, _>(error())
        }))
    }

    fn grpc_call(content_type: &str) -> Request<()> {
        Request::post("http://api.test/items.Items/Get")
            .header(CONTENT_TYPE, content_type)
            .body(())
            .unwrap()
    }

    fn refused() -> BoxError {
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    fn open() -> BoxError {
        Box::new(Open::new("http://api.test".into(), Duration::from_millis(1500)))
    }

    #[tokio::test]
    async fn each_refusal_gets_its_status_wrapped_or_not() {
        type MakeError = fn() -> BoxError;
        // (the error, the refusal in it, its status, its pushback)
        let cases: [(MakeError, MakeError, &str, Option<&str>); 6] = [
            (|| Box::new(Elapsed::new()), || Box::new(Elapsed::new()), "4", None),
            (open, open, "14", Some("1500")),
            (|| Box::new(Wrapped(open())), open, "14", Some("1500")),
            (
                || Box::new(Overloaded::new()),
                || Box::new(Overloaded::new()),
                "14",
                None,
            ),
            (
                || Box::new(ShuttingDown::new()),
                || Box::new(ShuttingDown::new()),
                "14",
                None,
            ),
            (refused, refused, "14", None),
        ];
        for (error, refusal, status, pushback) in cases {
            let answer = failing(error)
                .oneshot(grpc_call("application/grpc+proto"))
                .await
                .unwrap();
            let headers = answer.headers();
            assert_eq!(answer.status(), 200);
            assert_eq!(headers[CONTENT_TYPE], "application/grpc+proto", "the call's own");
            assert_eq!(headers["grpc-status"], status);
            assert_eq!(
                headers.get("grpc-retry-pushback-ms").map(|v| v.to_str().unwrap()),
                pushback
            );
            // The refusal's own words, not a wrapper's.
            let message = crate::util::with_sources(&*refusal());
            assert_eq!(headers["grpc-message"], percent_encode(&message).as_str());
            assert!(answer.body().is_empty(), "Trailers-Only: no messages");
        }
        let open = failing(open).oneshot(grpc_call("application/grpc")).await.unwrap();
        assert!(open.headers()["grpc-message"].to_str().unwrap().contains("api.test"));
    }

    #[tokio::test]
    async fn other_errors_and_other_calls_pass_through() {
        let error = failing(|| "connection reset".into())
            .oneshot(grpc_call("application/grpc"))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "connection reset");
        for content_type in ["application/json", "text/plain", "application/grp"] {
            let error = failing(|| Box::new(Elapsed::new()))
                .oneshot(grpc_call(content_type))
                .await
                .unwrap_err();
            assert!(error.is::<Elapsed>(), "{content_type}");
        }
        let get = Request::get("http://api.test/")
            .header(CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap();
        assert!(
            failing(open).oneshot(get).await.unwrap_err().is::<Open>(),
            "gRPC calls are POSTs"
        );
        let plain = Request::get("http://api.test/").body(()).unwrap();
        assert!(failing(open).oneshot(plain).await.unwrap_err().is::<Open>());
        assert!(is_grpc(b"APPLICATION/GRPC-web"), "media types are case-insensitive");
        for yes in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"application/grpc-web-text+proto",
            b"application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"application/grpcx"[..],
            b"application/grpc-webby",
            b"application/json",
            b"application/grp",
        ] {
            assert!(!is_grpc(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn messages_are_percent_encoded_as_grpc_asks() {
        assert_eq!(
            percent_encode("circuit open for http://a.test"),
            "circuit open for http://a.test"
        );
        assert_eq!(percent_encode("100% \u{e9}\n"), "100%25 %C3%A9%0A");
    }
}
