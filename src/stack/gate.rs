//! The lifecycle gate: counts requests in flight (until their response
//! body ends or is dropped) and refuses new ones once shutdown has begun,
//! so `Optimizer::shutdown` can drain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower_service::Service;

use super::held::hold;
use super::layer::{ResponseBody, boxed};
use crate::BoxError;

/// The stack is shutting down and takes no new requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShuttingDown(());

impl ShuttingDown {
    /// The error.
    pub const fn new() -> Self {
        ShuttingDown(())
    }
}

impl fmt::Display for ShuttingDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("the optimizer is shutting down")
    }
}

impl std::error::Error for ShuttingDown {}

#[derive(Debug, Default)]
pub(crate) struct GateState {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    drained: Notify,
}

impl GateState {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// A new request counted in flight, or `None` once shutdown has begun.
    #[inline]
    pub(crate) fn enter(self: &Arc<Self>) -> Option<InFlight> {
        if self.is_closed() {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight(self.clone()))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves when nothing is in flight.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    state: Arc<GateState>,
}

impl<S> Gate<S> {
    pub(crate) fn new(inner: S, state: Arc<GateState>) -> Self {
        Gate { inner, state }
    }
}

/// A request counted in flight, until dropped.
pub(crate) struct InFlight(Arc<GateState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only a shutdown waits for the drain, and it closes the gate before
        // it looks: while open, the last request out need not wake anyone
        // (`notify_waiters` takes a lock).
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.closed.load(Ordering::SeqCst) {
            self.0.drained.notify_waiters();
        }
    }
}

pin_project! {
    pub(crate) struct GateFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<InFlight>,
    }
}

impl<S, Req, B> Service<Req> for Gate<S>
where
    S: Service<Req, Response = Response<B>, Error = BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let guard = self.state.enter();
        GateFuture {
            inner: guard.is_some().then(|| self.inner.call(request)),
            guard,
        }
    }
}

impl<F, B> Future for GateFuture<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            None => Poll::Ready(Err(Box::new(ShuttingDown::new()))),
            Some(inner) => {
                let result = ready!(inner.poll(cx));
                let guard = this.guard.take();
                // The request stays in flight while its body streams: a
                // drain waits for the bytes, not only for the head. Boxed
                // into the stack's one body type here, in the same step, so
                // the response is not moved through one more future.
                Poll::Ready(result.map(|response| boxed(hold(response, guard))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_is_done() {
        let state = Arc::new(GateState::default());
        let answer = |fail: bool| async move {
            if fail {
                return Err::<Response<Full<Bytes>>, BoxError>("upstream failed".into());
            }
            Ok(Response::new(Full::new(Bytes::from_static(b"body"))))
        };
        let gate = Gate::new(service_fn(answer), state.clone());
        let mut response = gate.clone().oneshot(false).await.unwrap();
        assert_eq!(state.in_flight(), 1, "the body is not read yet");
        let frame = response.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "body");
        assert_eq!(state.in_flight(), 0, "its last frame ends it, unpolled end or not");
        assert!(gate.clone().oneshot(true).await.is_err());
        assert_eq!(state.in_flight(), 0, "a failed call is over");
        let unread = gate.clone().oneshot(false).await.unwrap();
        assert_eq!(state.in_flight(), 1);
        drop(unread);
        assert_eq!(state.in_flight(), 0, "a dropped body ends it");
        state.close();
        let refused = gate.oneshot(false).await.unwrap_err();
        assert!(refused.is::<ShuttingDown>());
    }
}
