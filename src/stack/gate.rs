//! The lifecycle gate: counts requests in flight and refuses new ones once
//! shutdown has begun, so `Optimizer::shutdown` can drain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower_service::Service;

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

struct InFlight(Arc<GateState>);

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

impl<S, Req> Service<Req> for Gate<S>
where
    S: Service<Req, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if self.state.closed.load(Ordering::SeqCst) {
            return GateFuture {
                inner: None,
                guard: None,
            };
        }
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.state.clone());
        GateFuture {
            inner: Some(self.inner.call(request)),
            guard: Some(guard),
        }
    }
}

impl<F, T> Future for GateFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            None => Poll::Ready(Err(Box::new(ShuttingDown::new()))),
            Some(inner) => {
                let out = std::task::ready!(inner.poll(cx));
                this.guard.take();
                Poll::Ready(out)
            }
        }
    }
}
