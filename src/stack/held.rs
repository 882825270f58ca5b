//! [`HeldBody`]: a response body that holds something (a request's
//! in-flight count, a concurrency slot) until the body is done, because a
//! request is not over when its head arrives: its body may still stream.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that drops what it holds when it ends, fails or is
    /// dropped.
    pub(crate) struct HeldBody<B, T> {
        #[pin]
        body: B,
        held: Option<T>,
    }
}

/// `response` with `held` kept until its body is done; a body already done
/// with its head (empty) lets go at once.
pub(crate) fn hold<B: Body, T>(response: Response<B>, held: Option<T>) -> Response<HeldBody<B, T>> {
    let held = held.filter(|_| !response.body().is_end_stream());
    response.map(|body| HeldBody { body, held })
}

impl<B, T> fmt::Debug for HeldBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldBody")
            .field("holding", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, T> Body for HeldBody<B, T>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        // Done at its end or error, or with its last frame when the body
        // says so (a reader may stop there without polling for the end).
        if !matches!(frame, Some(Ok(_))) || this.body.is_end_stream() {
            this.held.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
