//! One long body read from upstream once and by every request for its key
//! as it arrives: the request that fetched it, the flight's waiters, and
//! those that join while it streams. Knows nothing of tower.
//!
//! A task of its own reads the upstream body (see [`drive`]), so no reader
//! holds the others up, and one that stops reading leaves the rest and the
//! store their copy. Only a body whose `Content-Length` was declared, and
//! reserved in the in-flight budget, is broadcast: every chunk stays here
//! until the last reader is done, since one may join late and read from the
//! start.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};

use super::freshness::Freshness;
use super::handle::Reservation;
use super::key::Secondary;
use super::status::CacheStatus;
use crate::BoxError;
use crate::body::{OptimizerBody, Tee};

/// A response head and its body as it arrives.
pub(crate) struct Broadcast {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// The `Vary` key the stored entry will have: a request that joins
    /// must match it, as it would the entry.
    secondary: Secondary,
    /// The declared length: the body may not be longer.
    length: u64,
    /// The response's freshness, for each reader's `Cache-Status` TTL.
    freshness: Freshness,
    state: Mutex<State>,
}

struct State {
    chunks: Vec<Bytes>,
    received: u64,
    end: Option<End>,
    wakers: Vec<(u64, Waker)>,
    next_reader: u64,
    /// Readers alive.
    readers: usize,
    /// The body's room in the in-flight budget: given back once it has
    /// ended and its last reader is gone, whoever of the two is last.
    held: Option<Reservation>,
}

impl State {
    /// Gives the room back if nothing can read the chunks any more.
    fn release_if_done(&mut self) {
        if self.readers == 0 && self.end.is_some() {
            self.held = None;
        }
    }
}

/// How the body ended.
#[derive(Clone)]
enum End {
    /// Whole, with the trailers it had.
    Done(Option<HeaderMap>),
    /// Failed upstream; every reader gets the error after what came.
    Failed(Arc<str>),
}

impl fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("status", &self.status)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Broadcast {
    pub(crate) fn new(
        head: &http::response::Parts,
        secondary: Secondary,
        length: u64,
        freshness: Freshness,
        held: Reservation,
    ) -> Arc<Self> {
        Arc::new(Broadcast {
            status: head.status,
            version: head.version,
            headers: head.headers.clone(),
            secondary,
            length,
            freshness,
            state: Mutex::new(State {
                chunks: Vec::new(),
                received: 0,
                end: None,
                wakers: Vec::new(),
                next_reader: 0,
                readers: 0,
                held: Some(held),
            }),
        })
    }

    /// The `Cache-Status` of a reader whose request went as `forward` says:
    /// its TTL now, and `streamed`, since the copy is not stored yet.
    pub(crate) fn status(&self, forward: CacheStatus) -> CacheStatus {
        CacheStatus {
            fwd_status: Some(self.status.as_u16()),
            ttl: Some(self.freshness.ttl_secs(tokio::time::Instant::now())),
            detail: Some("streamed"),
            ..forward
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn secondary(&self) -> &Secondary {
        &self.secondary
    }

    /// Whether the body failed: a request that has not started reading it
    /// is better off going upstream itself.
    pub(crate) fn failed(&self) -> bool {
        matches!(self.lock().end, Some(End::Failed(_)))
    }

    /// A chunk came; `false` if it makes the body longer than declared.
    fn push(&self, data: Bytes) -> bool {
        let wakers = {
            let mut state = self.lock();
            state.received += data.len() as u64;
            if state.received > self.length {
                return false;
            }
            state.chunks.push(data);
            std::mem::take(&mut state.wakers)
        };
        wake(wakers);
        true
    }

    fn finish(&self, end: End) {
        let wakers = {
            let mut state = self.lock();
            state.end.get_or_insert(end);
            state.release_if_done();
            std::mem::take(&mut state.wakers)
        };
        wake(wakers);
    }

    /// A response for one more reader, from the first byte, stamped with
    /// `status`.
    pub(crate) fn response<R>(self: &Arc<Self>, status: CacheStatus) -> Response<OptimizerBody<R>> {
        let mut response = Response::new(OptimizerBody::boxed(Box::pin(self.reader())));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        super::fetch::stamp(&mut response, status);
        response
    }

    /// A reader from the first byte.
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        let id = {
            let mut state = self.lock();
            state.next_reader += 1;
            state.readers += 1;
            state.next_reader
        };
        Reader {
            broadcast: self.clone(),
            next: 0,
            read: 0,
            id,
            finished: false,
        }
    }
}

fn wake(wakers: Vec<(u64, Waker)>) {
    for (_, waker) in wakers {
        waker.wake();
    }
}

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
        if let Some(chunk) = state.chunks.get(this.next) {
            let chunk = chunk.clone();
            drop(state);
            this.next += 1;
            this.read += chunk.len() as u64;
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
        self.next == state.chunks.len() && matches!(state.end, Some(End::Done(None)))
    }

    fn size_hint(&self) -> SizeHint {
        // Never longer than declared (`push`); shorter only if it failed.
        let mut hint = SizeHint::new();
        hint.set_upper(self.broadcast.length.saturating_sub(self.read));
        hint
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let id = self.id;
        let mut state = self.broadcast.lock();
        state.wakers.retain(|(r, _)| *r != id);
        state.readers -= 1;
        state.release_if_done();
    }
}

#[cfg(test)]
impl Broadcast {
    /// An empty `200` of `length` bytes, fresh for a minute, holding no
    /// room in any budget.
    pub(crate) fn for_test(length: u64) -> Arc<Broadcast> {
        let head = Response::new(()).into_parts().0;
        let freshness = Freshness {
            response_time: tokio::time::Instant::now(),
            initial_age: std::time::Duration::ZERO,
            lifetime: std::time::Duration::from_secs(60),
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: std::time::Duration::ZERO,
            stale_if_error: None,
        };
        let cache = crate::cache::Cache::builder().build().expect("defaults build");
        Broadcast::new(
            &head,
            Secondary::NONE,
            length,
            freshness,
            Reservation::new(cache.inner.clone()),
        )
    }

    /// The same, holding `held`.
    fn held_for_test(length: u64, held: Reservation) -> Arc<Broadcast> {
        let fresh = Broadcast::for_test(length);
        let head = Response::new(()).into_parts().0;
        Broadcast::new(&head, Secondary::NONE, length, fresh.freshness, held)
    }

    /// Ends it as failed upstream.
    pub(crate) fn fail(&self, reason: &str) {
        self.finish(End::Failed(reason.into()));
    }
}

/// Fails its broadcast when dropped, unless it ended already.
struct Ends(Arc<Broadcast>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.finish(End::Failed("the upstream body was abandoned".into()));
    }
}

/// Reads `body` to its end into `broadcast`, showing each frame to `tee`
/// (the cache's copy, stored at the end). The store comes before the end is
/// told, so a reader that finishes and asks again finds the entry.
pub(crate) async fn drive<R>(broadcast: Arc<Broadcast>, mut body: Pin<Box<R>>, tee: Box<dyn Tee>)
where
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    // Ends the broadcast however this task ends: dropped with its runtime,
    // or unwinding, its readers get an error instead of waiting forever.
    let _ends = Ends(broadcast.clone());
    let mut tee = Some(tee);
    let trailers = loop {
        let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await else {
            break None;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                if let Some(tee) = tee.take() {
                    tee.abandon(true);
                }
                let error: BoxError = error.into();
                broadcast.finish(End::Failed(error.to_string().into()));
                return;
            }
        };
        if let Some(mut watcher) = tee.take() {
            if watcher.record(&frame) {
                tee = Some(watcher);
            } else {
                watcher.abandon(false);
            }
        }
        match frame.into_data() {
            Ok(data) => {
                if !broadcast.push(data) {
                    if let Some(tee) = tee.take() {
                        tee.abandon(true);
                    }
                    broadcast.finish(End::Failed(
                        "the upstream body is longer than its Content-Length".into(),
                    ));
                    return;
                }
            }
            // Trailers end the body (and the copy: `record` refused them).
            Err(frame) => break frame.into_trailers().ok(),
        }
        if body.is_end_stream() {
            break None;
        }
    };
    if broadcast.lock().received < broadcast.length {
        // Incomplete: readers see it fail rather than end short, and the
        // copy is not stored as if whole.
        if let Some(tee) = tee {
            tee.abandon(true);
        }
        broadcast.finish(End::Failed(
            "the upstream body is shorter than its Content-Length".into(),
        ));
        return;
    }
    if let Some(tee) = tee {
        tee.end();
    }
    broadcast.finish(End::Done(trailers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn broadcast(length: u64) -> Arc<Broadcast> {
        Broadcast::for_test(length)
    }

    #[tokio::test]
    async fn readers_get_every_chunk_from_the_start_and_the_end() {
        let b = broadcast(6);
        let mut early = b.reader();
        assert!(b.push(Bytes::from_static(b"abc")));
        let late = b.reader();
        assert!(b.push(Bytes::from_static(b"def")));
        let first = early.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        assert!(!early.is_end_stream(), "not ended yet");
        b.finish(End::Done(None));
        assert_eq!(early.collect().await.unwrap().to_bytes(), "def");
        assert_eq!(
            late.collect().await.unwrap().to_bytes(),
            "abcdef",
            "a late reader starts at the first byte"
        );
        assert!(!b.push(Bytes::from_static(b"g")), "longer than declared");
    }

    #[tokio::test]
    async fn a_failure_reaches_every_reader_after_what_came() {
        let b = broadcast(100);
        let mut reader = b.reader();
        b.push(Bytes::from_static(b"part"));
        b.finish(End::Failed("reset".into()));
        assert_eq!(reader.frame().await.unwrap().unwrap().into_data().unwrap(), "part");
        assert_eq!(reader.frame().await.unwrap().unwrap_err().to_string(), "reset");
        assert!(reader.frame().await.is_none());
        assert!(reader.is_end_stream());
    }

    #[tokio::test]
    async fn readers_of_a_body_whose_task_is_dropped_get_an_error() {
        let b = broadcast(10);
        let mut reader = b.reader();
        drop(Ends(b.clone()));
        let error = reader.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "the upstream body was abandoned");
        b.finish(End::Done(None));
        assert!(reader.frame().await.is_none(), "the first end stands");
    }

    #[tokio::test]
    async fn its_room_is_held_until_it_ended_and_its_last_reader_is_gone() {
        let cache = crate::cache::Cache::builder().build().unwrap();
        let inflight = || cache.stats().inflight_bytes;
        for readers_first in [false, true] {
            let mut held = Reservation::new(cache.inner.clone());
            assert!(held.grow(10));
            let b = Broadcast::held_for_test(10, held);
            let (one, two) = (b.reader(), b.reader());
            drop(one);
            if readers_first {
                drop(two);
                assert_eq!(inflight(), 10, "not ended: a reader may still join");
                b.finish(End::Done(None));
            } else {
                b.finish(End::Done(None));
                assert_eq!(inflight(), 10, "a reader may still read it");
                drop(two);
            }
            assert_eq!(inflight(), 0);
            assert_eq!(
                Arc::strong_count(&b),
                1,
                "given back while the broadcast itself lives on"
            );
        }
    }
}
