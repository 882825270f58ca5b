//! A storable response's body on its way in: read whole before the caller
//! sees it, or, when long, streamed to the caller (and to the flight's
//! waiters) while a copy is kept and stored at its end.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{Response, response};
use http_body::Frame;
use tokio::time::Instant;

use super::broadcast::{self, Broadcast};
use super::entry::{Entry, EntryBody, Labels, SharedEntry};
use super::fetch::{Fetch, Next, declared_length, shared, stamp};
use super::freshness::Freshness;
use super::handle::Reservation;
use super::key::{self, Secondary};
use super::labels::{Dependencies, Tags, Versions};
use super::policy::NotStorable;
use super::stats::bump;
use super::status::CacheStatus;
use crate::BoxError;
use crate::body::{OptimizerBody, Tee};

type Pin<R> = std::pin::Pin<Box<R>>;

/// A storable response being read into memory.
#[derive(Debug)]
pub(crate) struct Buffer {
    /// Kept in its box from the future's state: moved by pointer, not copied.
    fetch: Box<Fetch>,
    parts: response::Parts,
    freshness: Freshness,
    frames: VecDeque<Frame<Bytes>>,
    size: usize,
    reservation: Reservation,
    /// Bytes reserved up front (a broadcast body's declared length).
    prepaid: usize,
}

impl Buffer {
    pub(crate) fn new(
        fetch: Box<Fetch>,
        parts: response::Parts,
        freshness: Freshness,
        reservation: Reservation,
    ) -> Box<Self> {
        Box::new(Buffer {
            fetch,
            parts,
            freshness,
            frames: VecDeque::new(),
            size: 0,
            reservation,
            prepaid: 0,
        })
    }

    /// What to do with the body: a long one (by `Content-Length`) is
    /// shared as it arrives where it can be, or streamed to the caller;
    /// any other is read in first.
    pub(crate) fn start<R>(mut self: Box<Self>, body: Pin<R>, declared: Option<u64>) -> Next<R>
    where
        R: http_body::Body<Data = Bytes> + Send + 'static,
        R::Error: Into<BoxError>,
    {
        match declared {
            Some(len) if len > self.fetch.cache.stream_above as u64 && self.fetch.may_stream() => {
                Next::Respond(match self.can_broadcast(len) {
                    Some(held) => self.broadcast(body, Some(len), held, Vec::new()),
                    None => self.stream(body),
                })
            }
            _ => Next::Buffer(self, body),
        }
    }
}

/// What buffering does after a frame (see [`Buffer::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read on.
    More,
    /// Stop keeping it: the response goes through uncached (too large,
    /// over the in-flight budget, or trailers, which the cache does not
    /// store).
    Stop,
    /// Long enough that the caller should read it as it comes (see
    /// `CacheBuilder::stream_above`), while the cache keeps a copy.
    Stream,
}

impl Buffer {
    /// Takes one frame of the body.
    pub(crate) fn push(&mut self, frame: Frame<Bytes>) -> Step {
        let kept = self.keep(&frame);
        self.frames.push_back(frame);
        match kept {
            false => Step::Stop,
            true if self.size > self.fetch.cache.stream_above && self.fetch.may_stream() => Step::Stream,
            true => Step::More,
        }
    }

    /// Counts one frame in; `false` if it cannot be kept.
    fn keep(&mut self, frame: &Frame<Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return false;
        };
        let len = data.len();
        self.size += len;
        self.size <= self.fetch.cache.max_entry_bytes && (self.size <= self.prepaid || self.reservation.grow(len))
    }

    /// The response head as the caller gets it: without what only the
    /// store reads.
    fn caller_head(&self) -> response::Parts {
        let mut parts = self.parts.clone();
        parts.extensions.remove::<Tags>();
        parts.extensions.remove::<Versions>();
        parts.extensions.remove::<Dependencies>();
        parts
    }

    /// The `Vary` key the entry will be stored under.
    fn secondary(&self) -> Secondary {
        let mut names = super::policy::vary_names(&self.parts.headers).unwrap_or_default();
        for name in &self.fetch.cache.vary_on {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        match &self.fetch.request {
            Some(request) => key::secondary_key(&names, &request.headers),
            None => key::secondary_key(&names, &http::HeaderMap::new()),
        }
    }

    /// Whether a long body can be shared as it arrives (see
    /// `broadcast.rs`): a flight to share it with, and a runtime to read it
    /// in.
    fn can_share(&self) -> bool {
        self.fetch.leader.is_some() && tokio::runtime::Handle::try_current().is_ok()
    }

    /// Whether a long body of `declared` length can be shared as it
    /// arrives, with room in the in-flight budget for the whole body, which
    /// a broadcast holds until its last reader is done. That room,
    /// reserved, when it can.
    fn can_broadcast(&mut self, declared: u64) -> Option<Reservation> {
        let length = usize::try_from(declared).unwrap_or(usize::MAX);
        if !self.can_share() {
            return None;
        }
        let mut held = Reservation::new(self.fetch.cache.clone());
        if !held.grow(length) {
            return None;
        }
        // The copy kept for the store is made of the same chunks.
        self.prepaid = length;
        Some(held)
    }

    /// A body that declared no length has run past `stream_above`: shared
    /// from here on with the flight's waiters and whoever joins it, the
    /// chunks read so far and their room in the in-flight budget handed to
    /// the broadcast, which reserves the rest chunk by chunk; or, with no
    /// flight to share it with, streamed to the caller alone.
    pub(crate) fn share_or_stream<R>(mut self: Box<Self>, rest: Pin<R>) -> Response<OptimizerBody<R>>
    where
        R: http_body::Body<Data = Bytes> + Send + 'static,
        R::Error: Into<BoxError>,
    {
        if !self.can_share() {
            return self.stream(rest);
        }
        let held = std::mem::replace(&mut self.reservation, Reservation::new(self.fetch.cache.clone()));
        // The broadcast's room covers the copy's chunks too (the same ones).
        self.prepaid = usize::MAX;
        let read = self.frames.iter().filter_map(|f| f.data_ref().cloned()).collect();
        self.broadcast(rest, None, held, read)
    }

    /// Shares a long body (of `declared` length, if it said) as it arrives
    /// with the flight's waiters and whoever joins it (see
    /// `broadcast.rs`), read by a task of its own; the caller gets a reader
    /// too. `read`: the chunks already read; `held`: their room, or the
    /// whole declared length's, in the in-flight budget, given back when
    /// the last reader is done.
    pub(crate) fn broadcast<R>(
        self: Box<Self>,
        rest: Pin<R>,
        declared: Option<u64>,
        held: Reservation,
        read: Vec<Bytes>,
    ) -> Response<OptimizerBody<R>>
    where
        R: http_body::Body<Data = Bytes> + Send + 'static,
        R::Error: Into<BoxError>,
    {
        bump(&self.fetch.cache.counters.streamed);
        let limits = (self.fetch.cache.max_entry_bytes as u64, self.fetch.cache.lock_timeout);
        let broadcast = Broadcast::new(
            &self.parts,
            self.secondary(),
            declared,
            limits,
            self.freshness,
            held,
            read,
        );
        let status = broadcast.status(self.fetch.status);
        let extension = self.fetch.cache.status_extension;
        let parts = self.caller_head();
        let reader = broadcast.first_reader();
        if let Some(leader) = &self.fetch.leader {
            leader.publish(broadcast.clone());
        }
        let key = self.fetch.key.clone();
        tokio::spawn(broadcast::drive(broadcast, rest, self, key));
        let mut response = Response::from_parts(parts, OptimizerBody::boxed(Box::pin(reader)));
        stamp(&mut response, status, extension);
        response
    }

    /// The caller gets the response now, its body as it comes (what was
    /// read first, then `rest`), while this buffer keeps a copy and stores
    /// it when the body ends (see `Tee`). Its `Cache-Status` cannot say
    /// `stored` yet: it says `streamed`.
    pub(crate) fn stream<R>(self: Box<Self>, rest: Pin<R>) -> Response<OptimizerBody<R>>
    where
        R: http_body::Body<Data = Bytes>,
    {
        bump(&self.fetch.cache.counters.streamed);
        let now = Instant::now();
        let parts = self.caller_head();
        let status = CacheStatus {
            fwd_status: Some(parts.status.as_u16()),
            ttl: Some(self.freshness.ttl_secs(now)),
            detail: Some("streamed"),
            ..self.fetch.status
        };
        let extension = self.fetch.cache.status_extension;
        // Only data frames are kept (`keep`), and frames are not `Clone`.
        let prefix = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| Frame::data(d.clone())))
            .collect();
        let mut response = Response::from_parts(parts, OptimizerBody::tee(prefix, rest, self));
        stamp(&mut response, status, extension);
        response
    }

    /// Buffering stopped early: replay what was read, then the rest.
    pub(crate) fn pass_through<R>(
        mut self: Box<Self>,
        rest: Option<Pin<R>>,
        error: Option<BoxError>,
    ) -> Response<OptimizerBody<R>>
    where
        R: http_body::Body<Data = Bytes>,
    {
        // A whole new answer (too large, or with trailers) outdates the
        // stored one; a failed one leaves it for stale-if-error.
        if error.is_none() {
            self.fetch.outdate_stale();
        }
        let reason = if error.is_some() || self.frames.back().is_some_and(|f| !f.is_data()) {
            NotStorable::Body
        } else {
            NotStorable::TooLarge
        };
        // Over `max_entry_bytes` it will be again; out of in-flight room is
        // the moment's load.
        let lasting = self.fetch.lasting(reason, self.parts.status) && self.size > self.fetch.cache.max_entry_bytes;
        let detail = self.fetch.not_storable(reason, lasting);
        let frames = std::mem::take(&mut self.frames);
        let parts = self.parts;
        let body = OptimizerBody::replay(frames, rest, error);
        let mut response = Response::from_parts(parts, body);
        let status = CacheStatus {
            fwd_status: Some(response.status().as_u16()),
            detail: Some(detail),
            ..self.fetch.status
        };
        stamp(&mut response, status, self.fetch.cache.status_extension);
        response
    }

    /// The body failed: serve stale if allowed, otherwise pass on what was
    /// read and the error.
    pub(crate) fn failed<R>(mut self: Box<Self>, error: BoxError) -> Response<OptimizerBody<R>>
    where
        R: http_body::Body<Data = Bytes>,
    {
        if let Some(stale) = self.fetch.stale_on_error(Some(self.parts.status.as_u16())) {
            return stale;
        }
        self.pass_through(None, Some(error))
    }

    /// The whole body is in: store it and answer from the new entry.
    pub(crate) fn finish<R>(self: Box<Self>) -> Response<OptimizerBody<R>> {
        let (entry, stored, fetch, extensions, now) = self.store_whole();
        let freshness = entry.freshness();
        let status = CacheStatus {
            fwd_status: Some(entry.status.as_u16()),
            ttl: Some(freshness.ttl_secs(now)),
            stored: stored.is_ok(),
            detail: match stored {
                Ok(()) => fetch.status.detail,
                Err(reason) => Some(reason.as_str()),
            },
            ..fetch.status
        };
        let mut response = fetch.answer(&entry, freshness.age(now), false, status);
        // Keep what inner layers put in the extensions (tags, timings ...).
        let mut extensions = extensions;
        extensions.extend(std::mem::take(response.extensions_mut()));
        *response.extensions_mut() = extensions;
        response
    }

    /// Builds the entry from the whole body, stores it and completes the
    /// flight; the entry, whether it was stored, the fetch, the response's
    /// extensions and when.
    fn store_whole(
        self: Box<Self>,
    ) -> (
        SharedEntry,
        Result<(), NotStorable>,
        Box<Fetch>,
        http::Extensions,
        Instant,
    ) {
        let secondary = self.secondary();
        let Buffer {
            mut fetch,
            parts,
            freshness,
            frames,
            size,
            reservation,
            prepaid: _,
        } = *self;
        // RFC 9111 §3.4: a body shorter (or longer) than it said it would be
        // is incomplete, and is not stored as if whole.
        let whole = declared_length(&parts.headers).is_none_or(|len| len == size as u64);
        // `Entry::new` copies the chunks into the entry's own buffer: it
        // must not pin the connection's buffers, or the byte accounting
        // would be a lie.
        let chunks: Vec<Bytes> = frames.into_iter().filter_map(|f| f.into_data().ok()).collect();
        let body = EntryBody::Chunks(chunks);
        drop(reservation);
        let labels = Labels {
            tags: parts
                .extensions
                .get::<Tags>()
                .map(|t| t.0.clone().into_boxed_slice())
                .unwrap_or_default(),
            versions: parts
                .extensions
                .get::<Versions>()
                .map(|v| v.0.clone().into_boxed_slice())
                .unwrap_or_default(),
        };
        let deps = parts
            .extensions
            .get::<Dependencies>()
            .map(|d| d.0.as_slice())
            .unwrap_or_default();
        let now = Instant::now();
        let entry = SharedEntry::new(Entry::new(&fetch.key, secondary, &parts, body, freshness, labels, now));
        let stored = if whole {
            fetch.store(&entry, deps)
        } else {
            Err(NotStorable::Body)
        };
        if stored.is_err() {
            bump(&fetch.cache.counters.not_storable);
        }
        if let Some(leader) = fetch.leader.take() {
            leader.complete(shared(&entry, stored));
        }
        (entry, stored, fetch, parts.extensions, now)
    }
}

/// A body streamed to its caller while the cache keeps a copy: stored when
/// it ends. Dropped unfinished (the caller stopped reading), the flight's
/// waiters are released (`Leader`'s drop) and go upstream themselves.
impl Tee for Buffer {
    fn record(&mut self, frame: &Frame<Bytes>) -> bool {
        let kept = self.keep(frame);
        if let (true, Some(data)) = (kept, frame.data_ref()) {
            self.frames.push_back(Frame::data(data.clone()));
        }
        kept
    }

    fn end(self: Box<Self>) {
        // Stored or not, as `store_whole` counted; the caller has the body.
        let _ = self.store_whole();
    }

    fn abandon(mut self: Box<Self>, failed: bool) {
        // A whole new answer (too large, trailers, a full in-flight budget)
        // outdates the stored one; a failed one leaves it for
        // stale-if-error.
        if !failed {
            self.fetch.outdate_stale();
        }
        let too_large = self.size > self.fetch.cache.max_entry_bytes;
        let reason = if too_large {
            NotStorable::TooLarge
        } else {
            NotStorable::Body
        };
        // Over `max_entry_bytes` it will be again; the rest is the moment's.
        let lasting = too_large && self.fetch.lasting(reason, self.parts.status);
        self.fetch.not_storable(reason, lasting);
    }
}
