//! [`ConcurrencyLimit`]: at most N requests at once, each holding its slot
//! until its response body is done; [`Shed`]: refusing calls the limit has
//! kept waiting too long.
//!
//! tower's `ConcurrencyLimit` gives the slot back when the response head
//! arrives, so bodies still streaming from a slow upstream are not counted
//! and can pile up without bound. Here the slot rides in the body (see
//! `held.rs`). Readiness works as tower's does, so `LoadShed` composes with
//! it: `poll_ready` is pending while every slot is taken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::PollSemaphore;
use tower::load_shed::error::Overloaded;
use tower_service::Service;

use super::held::{HeldBody, hold};
use crate::BoxError;

/// The limit over `S`. Clones share the slots; each holds at most one
/// slot, taken by `poll_ready` and spent by the next `call`.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimit<S> {
    inner: S,
    slots: PollSemaphore,
    slot: Option<OwnedSemaphorePermit>,
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn new(inner: S, max: usize) -> Self {
        ConcurrencyLimit {
            inner,
            slots: PollSemaphore::new(Arc::new(Semaphore::new(max))),
            slot: None,
        }
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        // A clone shares the slots but not the one this service holds.
        ConcurrencyLimit {
            inner: self.inner.clone(),
            slots: self.slots.clone(),
            slot: None,
        }
    }
}

impl<S, Req, B> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req, Response = Response<B>>,
    B: Body,
{
    type Response = Response<HeldBody<B, OwnedSemaphorePermit>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.slot.is_none() {
            // The semaphore is never closed, so this yields a slot.
            self.slot = ready!(self.slots.poll_acquire(cx));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // As tower's limit: calling without readiness breaks the contract
        // of `Service`, and would let a call past the limit.
        let slot = self
            .slot
            .take()
            .expect("ConcurrencyLimit called without poll_ready returning Ready first");
        ResponseFuture {
            inner: self.inner.call(request),
            slot: Some(slot),
        }
    }
}

pin_project! {
    /// Response future of [`ConcurrencyLimit`]: hands its slot to the body.
    #[derive(Debug)]
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        slot: Option<OwnedSemaphorePermit>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<HeldBody<B, OwnedSemaphorePermit>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        // A failed call gives its slot back here; a response passes it on.
        let slot = this.slot.take();
        Poll::Ready(result.map(|response| hold(response, slot)))
    }
}

/// Refuses calls once its service has not been ready for `max_wait`:
/// tower's `LoadShed` with a grace period (none: refuse at once, as
/// `LoadShed` does). The refusal is tower's
/// [`Overloaded`](tower::load_shed::error::Overloaded), so everything that
/// knows shed load (the retry rules, the metrics, the reqwest adapters)
/// knows it.
#[derive(Debug)]
pub(crate) struct Shed<S> {
    inner: S,
    max_wait: Duration,
    /// Started when readiness first went pending, cleared when it comes.
    waiting: Option<Pin<Box<Sleep>>>,
    /// The next call is refused: the wait ran out.
    refuse: bool,
}

impl<S> Shed<S> {
    pub(crate) fn new(inner: S, max_wait: Duration) -> Self {
        Shed {
            inner,
            max_wait,
            waiting: None,
            refuse: false,
        }
    }
}

impl<S: Clone> Clone for Shed<S> {
    fn clone(&self) -> Self {
        // A clone starts its own wait.
        Shed::new(self.inner.clone(), self.max_wait)
    }
}

impl<S, Req> Service<Req> for Shed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Poll::Ready(ready) = self.inner.poll_ready(cx) {
            self.waiting = None;
            self.refuse = false;
            return Poll::Ready(ready.map_err(Into::into));
        }
        if !self.max_wait.is_zero() {
            let max_wait = self.max_wait;
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(max_wait)));
            if waiting.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // Ready to refuse the next call; the wait starts again after it.
        self.waiting = None;
        self.refuse = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if std::mem::take(&mut self.refuse) {
            return ShedFuture::Refused;
        }
        ShedFuture::Called {
            future: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`Shed`].
    #[project = ShedProj]
    #[derive(Debug)]
    pub(crate) enum ShedFuture<F> {
        Called { #[pin] future: F },
        Refused,
    }
}

impl<F, T, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProj::Called { future } => future.poll(cx).map_err(Into::into),
            ShedProj::Refused => Poll::Ready(Err(Box::new(Overloaded::new()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower_test::mock::{self, Spawn};

    use super::*;

    type Mock = mock::Mock<(), Response<Full<Bytes>>>;

    fn ready(svc: &mut Spawn<ConcurrencyLimit<Mock>>) -> bool {
        match svc.poll_ready() {
            Poll::Ready(result) => {
                result.unwrap();
                true
            }
            Poll::Pending => false,
        }
    }

    #[tokio::test]
    async fn a_slot_is_held_until_the_body_is_done() {
        let (service, mut handle) = mock::pair::<(), Response<Full<Bytes>>>();
        let limit = ConcurrencyLimit::new(service, 1);
        let mut first = Spawn::new(limit.clone());
        let mut second = Spawn::new(limit);
        handle.allow(10);
        let answer = |body: &'static str| Response::new(Full::new(Bytes::from_static(body.as_bytes())));

        assert!(ready(&mut first));
        let call = first.call(());
        assert!(!ready(&mut second), "the only slot is taken");
        let ((), send) = handle.next_request().await.unwrap();
        send.send_response(answer("body"));
        let mut response = call.await.unwrap();
        assert!(
            !ready(&mut second),
            "the head is in but the body is not read: the slot is still taken"
        );
        let frame = response.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "body");
        assert!(second.is_woken(), "the body's last frame gave the slot back");
        assert!(ready(&mut second));

        // A failed call gives its slot back, and so does a dropped body.
        let call = second.call(());
        let ((), send) = handle.next_request().await.unwrap();
        send.send_error("upstream failed");
        assert!(call.await.is_err());
        assert!(ready(&mut first));
        let call = first.call(());
        let ((), send) = handle.next_request().await.unwrap();
        send.send_response(answer("unread"));
        let unread = call.await.unwrap();
        assert!(!ready(&mut second));
        drop(unread);
        assert!(ready(&mut second), "the dropped body gave its slot back");
    }

    type Limited = Shed<ConcurrencyLimit<Mock>>;

    fn shed_ready(svc: &mut Spawn<Limited>) -> bool {
        match svc.poll_ready() {
            Poll::Ready(result) => {
                result.unwrap();
                true
            }
            Poll::Pending => false,
        }
    }

    /// Under a full limit a call waits at most `max_wait` for a slot, then
    /// is refused with `Overloaded`; a slot that frees within the wait is
    /// taken; with no wait the call is refused at once, as `LoadShed` does.
    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_takes_a_slot_that_frees_in_time_and_refuses_after() {
        let (service, mut handle) = mock::pair::<(), Response<Full<Bytes>>>();
        handle.allow(10);
        let limited = Shed::new(ConcurrencyLimit::new(service, 1), Duration::from_millis(100));
        let mut holder = Spawn::new(limited.clone());
        let mut waiter = Spawn::new(limited.clone());
        assert!(shed_ready(&mut holder));
        let held = holder.call(());
        let ((), send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::new(Bytes::from_static(b"held"))));
        let held = held.await.unwrap();

        // The slot stays taken: after 100 ms the waiter is ready to refuse.
        assert!(!shed_ready(&mut waiter));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!shed_ready(&mut waiter), "still within the wait");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(waiter.is_woken(), "the wait's end wakes the caller");
        assert!(shed_ready(&mut waiter));
        let refused = waiter.call(()).await.unwrap_err();
        assert!(refused.is::<Overloaded>(), "{refused}");

        // A new wait starts; the slot frees 50 ms into it and is taken.
        assert!(!shed_ready(&mut waiter));
        tokio::time::advance(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.is_woken());
        assert!(shed_ready(&mut waiter), "the freed slot, within the wait");
        let call = waiter.call(());
        let ((), send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::new(Bytes::from_static(b"served"))));
        let served = call.await.unwrap();

        // No wait at all: refused at once.
        let mut at_once = Spawn::new(Shed::new(limited.inner.clone(), Duration::ZERO));
        assert!(shed_ready(&mut at_once), "ready to refuse, without waiting");
        assert!(at_once.call(()).await.unwrap_err().is::<Overloaded>());
        drop(served);
        assert!(shed_ready(&mut at_once));
    }
}
