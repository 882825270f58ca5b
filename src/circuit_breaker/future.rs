//! Response futures of [`CircuitBreakerService`](super::CircuitBreakerService)
//! and [`RespondOpen`](super::RespondOpen).
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, error::Open};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
//! let upstream = service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
//! let mut svc = layer.layer(upstream);
//! layer.breakers().force_open("http://down.example");
//! let future = svc.ready().await.unwrap().call(http::Request::get("http://down.example/x").body(()).unwrap());
//! let error = future.await.unwrap_err();
//! assert_eq!(error.downcast_ref::<Open>().unwrap().key(), "http://down.example");
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::body::{BreakerBody, Guard};
use super::classify::{CallResult, Outcome, retry_after};
use super::error::Open;
use crate::BoxError;

pin_project! {
    /// Response future of [`CircuitBreakerService`](super::CircuitBreakerService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, FF> {
        #[pin]
        kind: Kind<F, FF>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, FF> {
        Called { #[pin] future: F, guard: Option<Guard> },
        Fallback { #[pin] future: FF },
        Rejected { error: Option<Open> },
    }
}

impl<F, FF> std::fmt::Debug for ResponseFuture<F, FF> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, FF> ResponseFuture<F, FF> {
    pub(crate) fn called(future: F, guard: Guard) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn fallback(future: FF) -> Self {
        ResponseFuture {
            kind: Kind::Fallback { future },
        }
    }

    pub(crate) fn rejected(error: Open) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, FF, B, E> Future for ResponseFuture<F, FF>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    FF: Future<Output = Result<Response<B>, BoxError>>,
{
    type Output = Result<Response<BreakerBody<B>>, BoxError>;

    // Inlined into its caller's poll (with the call and the body's
    // poll): the response moves once less on its way out; 101 fewer
    // instructions a call by callgrind.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, guard } => {
                let result = ready!(future.poll(cx));
                let mut guard = guard
                    .take()
                    .expect("circuit breaker ResponseFuture polled after completion");
                match result {
                    Ok(response) => {
                        let status = response.status();
                        let call = CallResult::Response {
                            status,
                            headers: response.headers(),
                        };
                        let outcome = guard.cell.config.classifier.classify(&call);
                        if outcome == Outcome::Success {
                            // Decided when the body ends: it may still fail.
                            guard.on_drop = Some(Outcome::Success);
                            return Poll::Ready(Ok(response.map(|b| BreakerBody::new(b, Some(guard)))));
                        }
                        guard.finish(outcome, retry_after(status, response.headers()));
                        Poll::Ready(Ok(response.map(|b| BreakerBody::new(b, None))))
                    }
                    Err(error) => {
                        let error: BoxError = error.into();
                        let outcome = guard.cell.config.classifier.classify(&CallResult::Error(&*error));
                        guard.finish(outcome, None);
                        Poll::Ready(Err(error))
                    }
                }
            }
            KindProj::Fallback { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(|b| BreakerBody::new(b, None))))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(
                error
                    .take()
                    .expect("circuit breaker ResponseFuture polled after completion"),
            ))),
        }
    }
}

pin_project! {
    /// Response future of [`RespondOpen`](super::RespondOpen): an
    /// [`Open`] error (or one wrapping it) becomes its `503` response.
    #[must_use = "futures do nothing unless polled"]
    pub struct RespondOpenFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F> RespondOpenFuture<F> {
    pub(crate) fn new(future: F) -> Self {
        RespondOpenFuture { future }
    }
}

impl<F> std::fmt::Debug for RespondOpenFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespondOpenFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RespondOpenFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().future.poll(cx)) {
            Ok(response) => Ok(response),
            Err(error) => {
                let error: BoxError = error.into();
                match Open::find(&*error) {
                    Some(open) => Ok(open.to_response()),
                    None => Err(error),
                }
            }
        })
    }
}
