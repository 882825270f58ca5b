//! Failover: the service a request goes to when its circuit is open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// Where requests go when their circuit is open. Implemented by
/// [`NoFallback`] (fail fast with `error::Open`) and [`WithFallback`].
pub trait Fallback<Req, Res>: Clone {
    /// The fallback's future.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Sends `request` to the fallback, or gives it back if there is none.
    fn try_call(&mut self, request: Req) -> Result<Self::Future, Req>;
}

/// No fallback: open circuits fail fast.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl<Req, Res> Fallback<Req, Res> for NoFallback {
    type Future = std::future::Pending<Result<Res, BoxError>>;

    fn try_call(&mut self, request: Req) -> Result<Self::Future, Req> {
        Err(request)
    }
}

/// A secondary service (e.g. another upstream) for requests whose circuit
/// is open.
#[derive(Debug, Clone)]
pub struct WithFallback<T>(pub T);

impl<T, Req> Fallback<Req, T::Response> for WithFallback<T>
where
    T: Service<Req> + Clone,
    T::Error: Into<BoxError>,
{
    type Future = FallbackFuture<T, Req>;

    fn try_call(&mut self, request: Req) -> Result<Self::Future, Req> {
        // A clone is made ready and called inside the future, so the
        // readiness of the stored fallback is never assumed.
        Ok(FallbackFuture {
            state: State::Ready {
                service: self.0.clone(),
                request: Some(request),
            },
        })
    }
}

pin_project! {
    /// Readies a fallback clone, then calls it.
    pub struct FallbackFuture<T: Service<Req>, Req> {
        #[pin]
        state: State<T, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<T: Service<Req>, Req> {
        Ready { service: T, request: Option<Req> },
        Called { #[pin] future: T::Future },
    }
}

impl<T: Service<Req>, Req> std::fmt::Debug for FallbackFuture<T, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<T, Req> Future for FallbackFuture<T, Req>
where
    T: Service<Req>,
    T::Error: Into<BoxError>,
{
    type Output = Result<T::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let request = request.take().expect("fallback polled after completion");
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
            }
        }
    }
}
