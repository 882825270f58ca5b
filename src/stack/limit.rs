//! [`ConcurrencyLimit`]: at most N requests at once, each holding its slot
//! until its response body is done.
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

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::held::{HeldBody, hold};

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
}
