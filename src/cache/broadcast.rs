//! One long body read from upstream once and by every request for its key
//! as it arrives: the request that fetched it, the flight's waiters, and
//! those that join while it streams. Knows nothing of tower.
//!
//! A task of its own reads the upstream body (see [`drive`]), so no reader
//! holds the others up, and one that stops reading leaves the rest and the
//! store their copy. Every chunk stays here, counted in the in-flight
//! budget, until the last reader is done, since one may join late and read
//! from the start.
//!
//! A body whose `Content-Length` was declared has its whole length
//! reserved before it is shared. One that declared none is shared once it
//! has run past `stream_above`, its room reserved chunk by chunk; should it
//! then outgrow `max_entry_bytes` or the in-flight budget, it *overflows*:
//! it will not be stored, nobody joins it any more, the chunks every reader
//! has passed are dropped, and the task reads on only while what is held
//! fits the room already reserved: its readers go at the pace of the
//! slowest. A reader that is dropped stops holding the others, and once
//! none is left the upstream body is dropped too. A reader that is kept but
//! not read (a caller that holds two responses for one URL and reads one to
//! its end before the other) would hold the others forever; after
//! `lock_timeout` of such a wait the task reads on regardless, and the
//! chunks the laggard has yet to read are kept for it, counted in the
//! in-flight figure even past its budget: more memory, for a while, rather
//! than a deadlock.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::Body;

use super::freshness::Freshness;
use super::handle::Reservation;
use super::key::{Logged, Secondary};
use super::status::{CacheStatus, StatusExtension};
use crate::BoxError;
use crate::body::{OptimizerBody, Tee};

mod reader;
pub(crate) use reader::Reader;

/// A response head and its body as it arrives.
pub(crate) struct Broadcast {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// The `Vary` key the stored entry will have: a request that joins
    /// must match it, as it would the entry.
    secondary: Secondary,
    /// The declared length, if any: the body may not be longer.
    length: Option<u64>,
    /// The longest body kept whole (`max_entry_bytes`): past it, one that
    /// declared no length overflows.
    limit: u64,
    /// How long an overflowed body's task waits for a lagging reader
    /// before it reads on regardless (`lock_timeout`).
    patience: Duration,
    /// The response's freshness, for each reader's `Cache-Status` TTL.
    freshness: Freshness,
    state: Mutex<State>,
}

struct State {
    /// The chunks still held: the body's chunk `base + i` is `chunks[i]`.
    chunks: VecDeque<Bytes>,
    /// Chunks dropped from the front (only once overflowed).
    base: usize,
    /// Bytes in `chunks`.
    held_bytes: usize,
    received: u64,
    end: Option<End>,
    wakers: Vec<(u64, Waker)>,
    /// Each live reader's next chunk, by reader id.
    positions: Vec<(u64, usize)>,
    next_reader: u64,
    /// No longer kept whole (see the module docs).
    overflowed: bool,
    /// Overflowed, and a lagging reader outwaited its patience: the task
    /// no longer waits for readers.
    unpaced: bool,
    /// The reading task, waiting for the readers to make room.
    driver: Option<Waker>,
    /// The body's room in the in-flight budget: given back once it has
    /// ended and its last reader is gone, whoever of the two is last.
    held: Option<Reservation>,
}

impl State {
    /// Gives the room back if nothing can read the chunks any more.
    fn release_if_done(&mut self) {
        if self.positions.is_empty() && self.end.is_some() {
            self.held = None;
        }
    }

    /// Whether the task may read one more chunk of an overflowed body:
    /// what is held fits the room reserved, or nothing is held.
    fn has_room(&self) -> bool {
        self.unpaced || self.held_bytes == 0 || self.held_bytes < self.reserved()
    }

    fn reserved(&self) -> usize {
        self.held.as_ref().map_or(0, Reservation::bytes)
    }

    /// Once overflowed, drops the chunks every reader has passed, and
    /// hands back the task's waker if that made room.
    #[must_use]
    fn trim(&mut self) -> Option<Waker> {
        if !self.overflowed {
            return None;
        }
        let end = self.base + self.chunks.len();
        let slowest = self.positions.iter().map(|&(_, next)| next).min().unwrap_or(end);
        while self.base < slowest {
            let Some(chunk) = self.chunks.pop_front() else { break };
            self.held_bytes -= chunk.len();
            self.base += 1;
        }
        if self.has_room() || self.positions.is_empty() {
            self.driver.take()
        } else {
            None
        }
    }

    /// Notes that reader `id` reads chunk `next` next.
    fn moved(&mut self, id: u64, next: usize) -> Option<Waker> {
        if let Some(position) = self.positions.iter_mut().find(|(r, _)| *r == id) {
            position.1 = next;
        }
        self.trim()
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

/// What became of a chunk the task pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    /// Kept, as everything before it.
    Kept,
    /// Passed on, but it made the body overflow (this chunk or before).
    Overflowed,
    /// It made the body longer than it declared.
    TooLong,
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
    /// A body of `length` (if declared), kept whole up to `limit`, of which
    /// `chunks` were read already; `held` is its room in the in-flight
    /// budget (the whole declared length, or what `chunks` took).
    pub(crate) fn new(
        head: &http::response::Parts,
        secondary: Secondary,
        length: Option<u64>,
        limits: (u64, Duration),
        freshness: Freshness,
        held: Reservation,
        chunks: Vec<Bytes>,
    ) -> Arc<Self> {
        let (limit, patience) = limits;
        let held_bytes = chunks.iter().map(Bytes::len).sum::<usize>();
        Arc::new(Broadcast {
            status: head.status,
            version: head.version,
            headers: head.headers.clone(),
            secondary,
            length,
            limit,
            patience,
            freshness,
            state: Mutex::new(State {
                chunks: chunks.into(),
                base: 0,
                held_bytes,
                received: held_bytes as u64,
                end: None,
                wakers: Vec::new(),
                positions: Vec::new(),
                next_reader: 0,
                overflowed: false,
                unpaced: false,
                driver: None,
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

    /// Whether a request may still join and read it from the first byte:
    /// not once it failed (a request that has not started reading it is
    /// better off going upstream itself) or overflowed.
    pub(crate) fn joinable(&self) -> bool {
        let state = self.lock();
        !state.overflowed && !matches!(state.end, Some(End::Failed(_)))
    }

    /// A chunk came: kept for every reader, as long as the body may be.
    fn push(&self, data: Bytes) -> Pushed {
        let len = data.len();
        let (wakers, driver, pushed) = {
            let mut state = self.lock();
            state.received += len as u64;
            if self.length.is_some_and(|length| state.received > length) {
                return Pushed::TooLong;
            }
            if !state.overflowed {
                // A declared length was reserved whole up front.
                let room = self.length.is_some() || state.held.as_mut().is_some_and(|held| held.grow(len));
                state.overflowed = state.received > self.limit || !room;
            }
            state.chunks.push_back(data);
            state.held_bytes += len;
            // Past its room (by the chunk read last, or for a laggard once
            // unpaced): counted all the same.
            let over = state.held_bytes.saturating_sub(state.reserved());
            if over > 0 {
                if let Some(held) = state.held.as_mut() {
                    held.force_grow(over);
                }
            }
            let pushed = if state.overflowed {
                Pushed::Overflowed
            } else {
                Pushed::Kept
            };
            let driver = state.trim();
            (std::mem::take(&mut state.wakers), driver, pushed)
        };
        wake(wakers);
        if let Some(driver) = driver {
            driver.wake();
        }
        pushed
    }

    /// Ready with `true` once the task may read another chunk, or with
    /// `false` if nobody is left to read an overflowed body.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if !state.overflowed {
            return Poll::Ready(true);
        }
        if state.positions.is_empty() {
            return Poll::Ready(false);
        }
        if state.has_room() {
            return Poll::Ready(true);
        }
        state.driver = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for room to read another chunk, as [`Broadcast::poll_room`]
    /// says, but no longer than `patience` at a time: then the task stops
    /// waiting for readers for good (and says so, naming `key`). `false`
    /// if nobody is left to read.
    async fn room(&self, key: &str) -> bool {
        let mut patience = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(room) = self.poll_room(cx) {
                return Poll::Ready(room);
            }
            let timer = patience.get_or_insert_with(|| Box::pin(tokio::time::sleep(self.patience)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.lock().unpaced = true;
            // Memory past the budget from now on: worth a word.
            tracing::warn!(
                key = %Logged(key),
                patience = ?self.patience,
                "a reader left a shared body unread for the lock timeout; reading on, its chunks kept for it"
            );
            Poll::Ready(true)
        })
        .await
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
    /// `status`; `None` if it may no longer be joined (see
    /// [`Broadcast::joinable`]).
    pub(crate) fn response<R>(
        self: &Arc<Self>,
        status: CacheStatus,
        extension: StatusExtension,
    ) -> Option<Response<OptimizerBody<R>>> {
        let reader = self.join()?;
        let mut response = Response::new(OptimizerBody::boxed(Box::pin(reader)));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        super::fetch::stamp(&mut response, status, extension);
        Some(response)
    }

    /// A reader from the first byte, if it may still be joined.
    fn join(self: &Arc<Self>) -> Option<Reader> {
        let mut state = self.lock();
        if state.overflowed || matches!(state.end, Some(End::Failed(_))) {
            return None;
        }
        Some(self.add_reader(&mut state))
    }

    /// The first reader, the caller's who fetched it: made before the
    /// task starts, when nothing can have failed or overflowed yet.
    pub(crate) fn first_reader(self: &Arc<Self>) -> Reader {
        let mut state = self.lock();
        self.add_reader(&mut state)
    }

    fn add_reader(self: &Arc<Self>, state: &mut State) -> Reader {
        state.next_reader += 1;
        let id = state.next_reader;
        state.positions.push((id, state.base));
        Reader::new(self.clone(), id, state.base)
    }
}

fn wake(wakers: Vec<(u64, Waker)>) {
    for (_, waker) in wakers {
        waker.wake();
    }
}
#[cfg(test)]
impl Broadcast {
    /// An empty `200` of `length` bytes, fresh for a minute, holding no
    /// room in any budget.
    pub(crate) fn for_test(length: u64) -> Arc<Broadcast> {
        let cache = crate::cache::Cache::builder().build().expect("defaults build");
        Broadcast::held_for_test(Some(length), u64::MAX, Reservation::new(cache.inner.clone()))
    }

    /// A `200` of `length` bytes (if declared), kept whole up to `limit`,
    /// holding `held`.
    fn held_for_test(length: Option<u64>, limit: u64, held: Reservation) -> Arc<Broadcast> {
        let head = Response::new(()).into_parts().0;
        let freshness = Freshness {
            response_time: tokio::time::Instant::now(),
            initial_age: std::time::Duration::ZERO,
            lifetime: std::time::Duration::from_secs(60),
            no_cache: false,
            must_revalidate: false,
            immutable: false,
            stale_while_revalidate: std::time::Duration::ZERO,
            stale_if_error: None,
        };
        let limits = (limit, std::time::Duration::from_secs(5));
        Broadcast::new(&head, Secondary::NONE, length, limits, freshness, held, Vec::new())
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
pub(crate) async fn drive<R>(broadcast: Arc<Broadcast>, mut body: Pin<Box<R>>, tee: Box<dyn Tee>, key: Arc<str>)
where
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    // Ends the broadcast however this task ends: dropped with its runtime,
    // or unwinding, its readers get an error instead of waiting forever.
    let _ends = Ends(broadcast.clone());
    let mut tee = Some(tee);
    let trailers = loop {
        if !broadcast.room(&key).await {
            // Overflowed, and its last reader is gone: the rest would be
            // read for nobody (the copy was given up when it overflowed).
            broadcast.finish(End::Failed("every reader left".into()));
            return;
        }
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
                // The readers get text: keep the sources' part of it (what
                // the connection said), which the error's own text omits.
                broadcast.finish(End::Failed(crate::util::with_sources(&*error).into()));
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
            Ok(data) => match broadcast.push(data) {
                Pushed::Kept => {}
                Pushed::Overflowed => {
                    // Too long, or out of room, to be kept whole: not stored.
                    if let Some(tee) = tee.take() {
                        tracing::debug!(key = %Logged(&key), "a shared body outgrew max_entry_bytes or the in-flight budget: not stored");
                        tee.abandon(false);
                    }
                }
                Pushed::TooLong => {
                    if let Some(tee) = tee.take() {
                        tee.abandon(true);
                    }
                    broadcast.finish(End::Failed(
                        "the upstream body is longer than its Content-Length".into(),
                    ));
                    return;
                }
            },
            // Trailers end the body (and the copy: `record` refused them).
            Err(frame) => break frame.into_trailers().ok(),
        }
        if body.is_end_stream() {
            break None;
        }
    };
    let received = broadcast.lock().received;
    if broadcast.length.is_some_and(|length| received < length) {
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
mod tests;
