//! The response body every layer of this crate returns: a stored body, the
//! inner service's body streamed through, a buffered prefix replayed in
//! front of the rest of a stream, or a reader of a body several requests
//! share as it arrives.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::BodyExt;
//! use tower_optimizer::body::OptimizerBody;
//!
//! # tokio_test_block_on(async {
//! let body: OptimizerBody<http_body_util::Empty<Bytes>> = OptimizerBody::full(Bytes::from_static(b"hi"));
//! assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A response body: stored bytes, a streamed inner body, a replayed
    /// prefix followed by the rest of the inner body, or a reader of a
    /// shared body.
    #[derive(Debug)]
    pub struct OptimizerBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Inner { #[pin] body: B },
        // Boxed: it is rare (a body too large to store, streamed on after
        // its prefix), and inline it would triple the size of every body,
        // which moves with its response through each layer outside.
        Replay { replay: Box<Replay<B>> },
        // A body of the crate's own making (a reader of a body several
        // requests share), behind one pointer.
        Boxed { body: DynBody },
    }
}

/// A boxed body, with the `Debug` a trait object lacks.
struct DynBody(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>);

impl std::fmt::Debug for DynBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynBody")
    }
}

#[derive(Debug)]
struct Replay<B> {
    prefix: VecDeque<Frame<Bytes>>,
    error: Option<BoxError>,
    // Boxed so a body that is not `Unpin` can move here from the buffering
    // state after some of it was read.
    rest: Option<Pin<Box<B>>>,
    /// Shown every frame of `rest` as it passes (the cache keeping a copy
    /// of a body it streams to the caller); dropped unfinished if the body
    /// fails, or the caller stops reading.
    tee: Option<Box<dyn Tee>>,
}

/// What watches a streamed body go by (see [`OptimizerBody::tee`]).
pub(crate) trait Tee: std::fmt::Debug + Send + Sync {
    /// A frame passed on. `false`: stop watching (too large, or a trailers
    /// frame, which the cache does not keep); [`Tee::abandon`] is called.
    fn record(&mut self, frame: &Frame<Bytes>) -> bool;
    /// The body ended: everything passed was recorded.
    fn end(self: Box<Self>);
    /// The body will not be recorded whole; `failed` if it failed.
    fn abandon(self: Box<Self>, failed: bool);
}

impl<B> OptimizerBody<B> {
    /// A body of known bytes (a cache hit, or a fully buffered miss).
    pub fn full(data: Bytes) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        OptimizerBody {
            kind: Kind::Full { data },
        }
    }

    /// The inner service's body, streamed through untouched.
    pub fn inner(body: B) -> Self {
        OptimizerBody {
            kind: Kind::Inner { body },
        }
    }

    /// A body of the crate's own making.
    pub(crate) fn boxed(body: Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>) -> Self {
        OptimizerBody {
            kind: Kind::Boxed { body: DynBody(body) },
        }
    }

    /// Frames already read from `rest`, replayed before it continues; then
    /// `error` if reading stopped on one, or the remainder of `rest`.
    pub(crate) fn replay(prefix: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>>, error: Option<BoxError>) -> Self {
        OptimizerBody {
            kind: Kind::Replay {
                replay: Box::new(Replay {
                    prefix,
                    error,
                    rest,
                    tee: None,
                }),
            },
        }
    }

    /// `prefix` (frames already read from `rest`, and already shown to
    /// `tee`), then the rest of `rest`, each frame shown to `tee` as it
    /// passes.
    pub(crate) fn tee(prefix: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>>, tee: Box<dyn Tee>) -> Self {
        OptimizerBody {
            kind: Kind::Replay {
                replay: Box::new(Replay {
                    prefix,
                    error: None,
                    rest: Some(rest),
                    tee: Some(tee),
                }),
            },
        }
    }
}

impl<B> Default for OptimizerBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> Body for OptimizerBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Boxed { body } => body.0.as_mut().poll_frame(cx),
            KindProj::Replay { replay } => {
                let Replay {
                    prefix,
                    error,
                    rest,
                    tee,
                } = &mut **replay;
                if let Some(frame) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                let Some(rest) = rest.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = ready!(rest.as_mut().poll_frame(cx)).map(|r| r.map_err(Into::into));
                if let Some(mut watcher) = tee.take() {
                    match &polled {
                        Some(Ok(frame)) if watcher.record(frame) => {
                            // A reader may stop at `is_end_stream` without
                            // polling for the end (hyper does), so the end is
                            // told as soon as the body says so.
                            if rest.is_end_stream() {
                                watcher.end();
                            } else {
                                *tee = Some(watcher);
                            }
                        }
                        Some(Ok(_)) => watcher.abandon(false),
                        Some(Err(_)) => watcher.abandon(true),
                        None => watcher.end(),
                    }
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Boxed { body } => body.0.is_end_stream(),
            Kind::Replay { replay } => {
                let Replay {
                    prefix, error, rest, ..
                } = &**replay;
                prefix.is_empty() && error.is_none() && rest.as_ref().is_none_or(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Inner { body } => body.size_hint(),
            Kind::Boxed { body } => body.0.size_hint(),
            Kind::Replay { replay } => {
                let Replay { prefix, rest, .. } = &**replay;
                let buffered: u64 = prefix.iter().filter_map(Frame::data_ref).map(|d| d.len() as u64).sum();
                let rest = rest.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(buffered + upper);
                }
                hint
            }
        }
    }
}
