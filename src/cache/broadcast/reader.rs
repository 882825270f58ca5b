//! One request's reading of a [`Broadcast`]: from the first byte, at its
//! own pace, and, once the body overflowed, holding back only what it has
//! yet to read.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Broadcast, End};
use crate::BoxError;

/// One request's view of a [`Broadcast`].
pub(crate) struct Reader {
    broadcast: Arc<Broadcast>,
    /// The next chunk to hand out.
    next: usize,
    /// Bytes handed out.
    read: u64,
    id: u64,
    /// The end (trailers or error) was handed out.
    finished: bool,
}

impl Reader {
    /// Reader `id` of `broadcast`, from its chunk `next`.
    pub(super) fn new(broadcast: Arc<Broadcast>, id: u64, next: usize) -> Self {
        Reader {
            broadcast,
            next,
            read: 0,
            id,
            finished: false,
        }
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut state = this.broadcast.lock();
        // A reader is never behind what is held (see `State::trim`).
        let held = this.next.checked_sub(state.base);
        if let Some(chunk) = held.and_then(|i| state.chunks.get(i)) {
            let chunk = chunk.clone();
            this.next += 1;
            this.read += chunk.len() as u64;
            let driver = state.moved(this.id, this.next);
            drop(state);
            if let Some(driver) = driver {
                driver.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let Some(end) = state.end.clone() else {
            let id = this.id;
            match state.wakers.iter_mut().find(|(r, _)| *r == id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => state.wakers.push((id, cx.waker().clone())),
            }
            return Poll::Pending;
        };
        drop(state);
        this.finished = true;
        Poll::Ready(match end {
            End::Done(trailers) => trailers.map(|t| Ok(Frame::trailers(t))),
            End::Failed(reason) => Some(Err(reason.to_string().into())),
        })
    }

    fn is_end_stream(&self) -> bool {
        if self.finished {
            return true;
        }
        let state = self.broadcast.lock();
        self.next == state.base + state.chunks.len() && matches!(state.end, Some(End::Done(None)))
    }

    fn size_hint(&self) -> SizeHint {
        // Never longer than declared (`push`); shorter only if it failed.
        let mut hint = SizeHint::new();
        if let Some(length) = self.broadcast.length {
            hint.set_upper(length.saturating_sub(self.read));
        }
        hint
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let id = self.id;
        let driver = {
            let mut state = self.broadcast.lock();
            state.wakers.retain(|(r, _)| *r != id);
            state.positions.retain(|(r, _)| *r != id);
            state.release_if_done();
            state.trim()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}
