//! [`RespondOpenLayer`]: an open circuit as a `503` response instead of an
//! error, for services whose callers want responses (a proxy, an axum
//! handler that forwards, a gateway).
//!
//! It sits anywhere outside the breaker (outside the whole
//! [`OptimizerStack`](crate::OptimizerStack) too). An error that is, or
//! wraps, [`error::Open`](super::error::Open) becomes
//! [`Open::to_response`](super::error::Open::to_response): `503 Service
//! Unavailable` with `Retry-After` in whole seconds, so the caller's own
//! clients back off for as long as the circuit stays open. Every other
//! error, and every response, passes through untouched.

use std::task::{Context, Poll};

use http::Response;
use tower_layer::Layer;
use tower_service::Service;

use super::future::RespondOpenFuture;
use crate::BoxError;

/// Turns [`error::Open`](super::error::Open) errors from the service it
/// wraps into `503` responses with `Retry-After`.
///
/// ```
/// use std::convert::Infallible;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, RespondOpenLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_optimizer::BoxError> {
/// let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
/// let breakers = breaker.breakers();
/// let mut client = ServiceBuilder::new()
///     .layer(RespondOpenLayer::new())
///     .layer(breaker)
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::from("hi"))) });
/// breakers.force_open("http://down.test");
/// let response = client.ready().await?.call(http::Request::get("http://down.test/").body(())?).await?;
/// assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
/// assert!(response.headers().contains_key(http::header::RETRY_AFTER));
/// // Other hosts are answered as usual.
/// let response = client.ready().await?.call(http::Request::get("http://up.test/").body(())?).await?;
/// assert_eq!(response.status(), http::StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondOpenLayer {
    _private: (),
}

impl RespondOpenLayer {
    /// The layer; it has no settings.
    pub const fn new() -> Self {
        RespondOpenLayer { _private: () }
    }
}

impl<S> Layer<S> for RespondOpenLayer {
    type Service = RespondOpen<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RespondOpen { inner }
    }
}

/// The service of [`RespondOpenLayer`].
#[derive(Debug, Clone)]
pub struct RespondOpen<S> {
    inner: S,
}

impl<S> RespondOpen<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        RespondOpen { inner }
    }

    inner_service_accessors!();
}

impl<S, Req, B> Service<Req> for RespondOpen<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = RespondOpenFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness errors pass through: the breaker never fails readiness
        // with `Open` (it refuses in `call`), so there is nothing to turn
        // into a response here.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        RespondOpenFuture::new(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::circuit_breaker::error::Open;
    use crate::util::Wrapped;

    fn failing(
        error: fn() -> BoxError,
    ) -> RespondOpen<impl Service<(), Response = Response<String>, Error = BoxError>> {
        RespondOpen::new(tower::service_fn(move |()| async move {
            Err::<Response<String>, _>(error())
        }))
    }

    fn open() -> BoxError {
        Box::new(Open::new("http://a.test".into(), Duration::from_millis(1500)))
    }

    #[tokio::test]
    async fn open_errors_become_503_with_retry_after_wrapped_or_not() {
        for make in [open, || Box::new(Wrapped(open())) as BoxError] {
            let response = failing(make).oneshot(()).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
            assert_eq!(response.body(), "");
        }
    }

    #[tokio::test]
    async fn other_errors_and_responses_pass_through() {
        let error = failing(|| "upstream reset".into()).oneshot(()).await.unwrap_err();
        assert_eq!(error.to_string(), "upstream reset");
        let ok = RespondOpen::new(tower::service_fn(|()| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("body")))
        }));
        let response = ok.oneshot(()).await.unwrap();
        assert_eq!(
            (response.status(), response.body().as_str()),
            (http::StatusCode::OK, "body")
        );
    }
}
