//! Response body of [`MetricsService`](super::MetricsService): the request
//! is measured when it ends, fails, or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Guard;
use crate::BoxError;
use crate::util::{Seen, watch};

pin_project! {
    /// Response body of [`MetricsService`](super::MetricsService).
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        // `None` only for a body made in place of a call (`Default`).
        guard: Option<Guard>,
        bytes: u64,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let bytes = *this.bytes;
            if let Some(guard) = this.guard {
                guard.finish(bytes, false);
            }
        }
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<B> MetricsBody<B> {
    pub(crate) fn new(inner: B, guard: Guard) -> Self {
        MetricsBody {
            inner,
            guard: Some(guard),
            bytes: 0,
        }
    }
}

/// An empty body no request is measured by: the body of an answer made in
/// place of a call, such as the circuit breaker's `RespondOpen` `503`.
impl<B: Default> Default for MetricsBody<B> {
    fn default() -> Self {
        MetricsBody {
            inner: B::default(),
            guard: None,
            bytes: 0,
        }
    }
}

impl<B> Body for MetricsBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        watch(this.inner.poll_frame(cx), |seen| match seen {
            Seen::Data(len) => *this.bytes += len as u64,
            // gRPC's status; the request ends with the body, which the
            // next poll shows.
            Seen::Trailers(trailers) => {
                if let Some(guard) = this.guard {
                    guard.note_trailers(trailers);
                }
            }
            Seen::End | Seen::Failed(_) => {
                if let Some(guard) = this.guard {
                    guard.finish(*this.bytes, matches!(seen, Seen::Failed(_)));
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
