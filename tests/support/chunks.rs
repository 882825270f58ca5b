//! A test body that yields given chunks, each after one `Pending` if paced
//! (so concurrent readers interleave), then fails or sends trailers if
//! asked.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tower_optimizer::BoxError;

/// `len` bytes that show any loss or reordering: byte `i` is `i % 251`.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// See the module docs.
pub struct Chunks {
    frames: VecDeque<Bytes>,
    fail_at_end: bool,
    trailers: bool,
    /// `Some(paused)` when paced: whether this frame's `Pending` was given.
    pace: Option<bool>,
}

impl Chunks {
    /// Yields `frames`, then ends.
    pub fn new(frames: impl IntoIterator<Item = Bytes>) -> Self {
        Chunks {
            frames: frames.into_iter().collect(),
            fail_at_end: false,
            trailers: false,
            pace: None,
        }
    }

    /// `len` bytes of [`pattern`], in chunks of `chunk` bytes.
    pub fn pattern(len: usize, chunk: usize) -> Self {
        let data = pattern(len);
        Chunks::new((0..len).step_by(chunk).map(|s| data.slice(s..(s + chunk).min(len))))
    }

    /// Fails ("upstream reset the stream") after the chunks, if `fail`.
    pub fn failing(mut self, fail: bool) -> Self {
        self.fail_at_end = fail;
        self
    }

    /// Sends an `x-checksum` trailer after the chunks, if `trailers`.
    pub fn with_trailers(mut self, trailers: bool) -> Self {
        self.trailers = trailers;
        self
    }

    /// Returns `Pending` once before each frame (waking itself at once).
    pub fn paced(mut self) -> Self {
        self.pace = Some(false);
        self
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(paused) = self.pace.as_mut() {
            *paused = !*paused;
            if *paused {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if let Some(chunk) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.fail_at_end {
            self.fail_at_end = false;
            return Poll::Ready(Some(Err("upstream reset the stream".into())));
        }
        if self.trailers {
            self.trailers = false;
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", http::HeaderValue::from_static("abc"));
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }
}
