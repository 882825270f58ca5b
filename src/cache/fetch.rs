//! What happens around an upstream call: deciding to store (the body itself
//! is `buffer.rs`'s), 304 freshening, stale-if-error, and building every
//! response the cache returns with its `Cache-Status`. Knows nothing of
//! tower.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderMap, Request, Response, StatusCode, request, response};
use tokio::time::Instant;

use super::buffer::Buffer;
use super::coalesce::Leader;
use super::conditional;
use super::directives::CacheControl;
use super::entry::{Entry, SharedEntry};
use super::epochs::Stamp;
use super::freshness::{self, Freshness, heuristically_cacheable};
use super::handle::{Inner, Reservation};
use super::labels::Node;
use super::policy::{CacheMode, NotStorable};
use super::stats::{Counters, bump};
use super::status::{CACHE_STATUS, CacheStatus, Forward, StatusExtension};
use super::store::RemovalCause;
use crate::BoxError;
use crate::body::OptimizerBody;

/// Everything the cache remembers about a request while it is upstream.
#[derive(Debug)]
pub(crate) struct Fetch {
    pub(crate) cache: Arc<Inner>,
    pub(crate) key: Arc<str>,
    pub(crate) leader: Option<Leader>,
    /// The request as the caller sent it (before conditional headers),
    /// or `None` when the cache only passes the exchange through.
    pub(crate) request: Option<request::Parts>,
    pub(crate) request_cc: CacheControl,
    pub(crate) stale: Option<SharedEntry>,
    pub(crate) status: CacheStatus,
    pub(crate) request_time: Instant,
    /// The key's invalidation stripe when the request started: the answer
    /// is stored only if no invalidation moved it since.
    pub(crate) stamp: Stamp,
    /// The caller's own `If-None-Match` / `If-Modified-Since`, kept off the
    /// request upstream (see `conditional::take`) and judged against the
    /// entry the caller is answered from.
    pub(crate) asked: HeaderMap,
}

/// What the future does next with an upstream response.
pub(crate) enum Next<R> {
    Respond(Response<OptimizerBody<R>>),
    Buffer(Box<Buffer>, Pin<R>),
    Fail(BoxError),
}

type Pin<R> = std::pin::Pin<Box<R>>;

/// Adds the `Cache-Status` header to a response, and the extension unless
/// `extension` omits it.
pub(crate) fn stamp<B>(response: &mut Response<B>, status: CacheStatus, extension: StatusExtension) {
    response.headers_mut().append(CACHE_STATUS, status.to_header_value());
    extension.apply(response, status);
}

/// A response served from `entry`, whose age is `age` now.
pub(crate) fn from_entry<R>(
    entry: &Entry,
    age: Duration,
    head: bool,
    (status, extension): (CacheStatus, StatusExtension),
) -> Response<OptimizerBody<R>> {
    let mut response = entry
        .to_response(age, head, status.to_header_value())
        .map(OptimizerBody::full);
    extension.apply(&mut response, status);
    response
}

/// A response served from `entry` to a caller that brought validators of
/// its own (`asked`: headers holding them) or not (`None`): a 304 where
/// they match the entry (RFC 9111 §4.3.2), its `Cache-Status` saying
/// `detail=not-modified` unless it already says how a stale entry came to
/// answer; otherwise the entry's response.
pub(crate) fn from_entry_to<R>(
    counters: &Counters,
    asked: Option<&HeaderMap>,
    entry: &Entry,
    age: Duration,
    head: bool,
    (status, extension): (CacheStatus, StatusExtension),
) -> Response<OptimizerBody<R>> {
    if !asked.is_some_and(|asked| conditional::not_modified(asked, &entry.headers)) {
        return from_entry(entry, age, head, (status, extension));
    }
    bump(&counters.not_modified);
    let status = CacheStatus {
        detail: status.detail.or(Some("not-modified")),
        ..status
    };
    let (mut parts, _) = entry.to_response(age, true, status.to_header_value()).into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers = conditional::not_modified_headers(&parts.headers);
    let mut response = Response::from_parts(parts, OptimizerBody::full(Bytes::new()));
    extension.apply(&mut response, status);
    response
}

/// The 504 RFC 9111 §5.2.1.7 asks for when `only-if-cached` cannot be met.
pub(crate) fn gateway_timeout<R>(fwd: Forward, extension: StatusExtension) -> Response<OptimizerBody<R>> {
    let mut response = Response::new(OptimizerBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    response.headers_mut().insert(CONTENT_LENGTH, 0.into());
    stamp(
        &mut response,
        CacheStatus {
            detail: Some("only-if-cached"),
            ..CacheStatus::forward(fwd)
        },
        extension,
    );
    response
}

/// Adds the stored validators of `stale` to an outgoing request (§4.3.1).
pub(crate) fn add_validators<B>(request: &mut Request<B>, stale: &Entry) {
    if let Some(etag) = stale.headers.get(ETAG) {
        request.headers_mut().insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(last_modified) = stale.headers.get(LAST_MODIFIED) {
        request.headers_mut().insert(IF_MODIFIED_SINCE, last_modified.clone());
    }
}

/// What a flight's waiters get: the entry if it was stored, or if only an
/// invalidation kept it out (they asked before it landed: later requests
/// start a flight of their own); otherwise nothing, and each goes upstream.
pub(super) fn shared(entry: &SharedEntry, stored: Result<(), NotStorable>) -> Option<SharedEntry> {
    matches!(stored, Ok(()) | Err(NotStorable::Invalidated)).then(|| entry.clone())
}

/// The body length a response declares in `Content-Length`, if it does so
/// readably.
pub(super) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether a status is one RFC 5861 lets stale-if-error stand in for.
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl Fetch {
    /// The caller's answer from `entry`, whose age is `age` now: a 304 if
    /// it brought validators that match it.
    pub(crate) fn answer<R>(
        &self,
        entry: &Entry,
        age: Duration,
        head: bool,
        status: CacheStatus,
    ) -> Response<OptimizerBody<R>> {
        let asked = (!self.asked.is_empty()).then_some(&self.asked);
        from_entry_to(
            &self.cache.counters,
            asked,
            entry,
            age,
            head,
            (status, self.cache.status_extension),
        )
    }

    /// The answer of a request that shares another's upstream call: `entry`,
    /// stored by it, marked collapsed and counted as coalesced.
    pub(crate) fn collapsed<R>(&self, entry: &Entry) -> Response<OptimizerBody<R>> {
        bump(&self.cache.counters.coalesced);
        let now = Instant::now();
        let freshness = entry.freshness();
        let status = CacheStatus {
            collapsed: true,
            ..CacheStatus::hit(freshness.ttl_secs(now))
        };
        self.answer(entry, freshness.age(now), false, status)
    }

    /// Serves the stale entry instead of an upstream failure, if allowed.
    pub(super) fn stale_on_error<R>(&mut self, fwd_status: Option<u16>) -> Option<Response<OptimizerBody<R>>> {
        let stale = self.stale.as_ref()?;
        let now = Instant::now();
        let freshness = stale.freshness();
        if !freshness.may_serve_on_error(now, self.cache.stale_if_error) {
            return None;
        }
        bump(&self.cache.counters.stale);
        bump(&self.cache.counters.stale_on_error);
        let status = CacheStatus {
            fwd_status,
            ttl: Some(freshness.ttl_secs(now)),
            detail: Some("stale-if-error"),
            ..CacheStatus::forward(Forward::Stale)
        };
        let head = self.is_head();
        Some(self.answer(stale, freshness.age(now), head, status))
    }

    /// Whether a long body may reach the caller as it arrives: not while a
    /// stale entry could stand in for it should it fail (stale-if-error),
    /// since a streamed body that fails can only fail.
    pub(super) fn may_stream(&self) -> bool {
        self.stale.as_ref().is_none_or(|stale| {
            !stale
                .freshness()
                .may_serve_on_error(Instant::now(), self.cache.stale_if_error)
        })
    }

    fn is_head(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.method == http::Method::HEAD)
    }

    /// A response passed through uncached, stamped with why.
    fn pass<R>(&mut self, response: Response<R>, detail: Option<&'static str>) -> Response<OptimizerBody<R>> {
        let fwd_status = Some(response.status().as_u16());
        let mut response = response.map(OptimizerBody::inner);
        stamp(
            &mut response,
            CacheStatus {
                fwd_status,
                detail: detail.or(self.status.detail),
                ..self.status
            },
            self.cache.status_extension,
        );
        response
    }

    /// Whether `reason`, for an answer with `status`, is the response's own
    /// and likely to hold for the next answer too (see
    /// [`NotStorable::is_lasting`]): a 5xx is taken as passing, and a
    /// `no-store` this request asked for is its own.
    pub(super) fn lasting(&self, reason: NotStorable, status: StatusCode) -> bool {
        reason.is_lasting()
            && !status.is_server_error()
            && !(reason == NotStorable::NoStore && self.request_cc.no_store)
    }

    /// Counts an answer that will not be stored and ends this request's
    /// flight; a `lasting` reason leaves the key out of coalescing for a
    /// while. The reason's `Cache-Status` token.
    pub(super) fn not_storable(&mut self, reason: NotStorable, lasting: bool) -> &'static str {
        bump(&self.cache.counters.not_storable);
        let until = self
            .cache
            .remember_uncacheable
            .filter(|_| lasting)
            .map(|window| crate::util::instant_after(Instant::now(), window));
        match (self.leader.take(), until) {
            (Some(leader), Some(until)) => leader.complete_uncacheable(until),
            (None, Some(until)) => self.cache.flights.mark_uncacheable(&self.key, until),
            (leader, None) => drop(leader),
        }
        reason.as_str()
    }

    /// Stores `entry` (with the dependency edges `deps`) unless an
    /// invalidation covering it landed since the request started: checked
    /// before inserting, and again after, taking the entry back out if one
    /// landed in between (`epochs.rs` says why that order is exact).
    ///
    /// The stored response this request nominated is replaced even when
    /// the new one has another `Vary` key (the upstream now varies, or no
    /// longer does): kept, it would answer other requests with the content
    /// this answer replaced.
    pub(super) fn store(&self, entry: &SharedEntry, deps: &[Node]) -> Result<(), NotStorable> {
        if self
            .stale
            .as_ref()
            .is_some_and(|stale| stale.secondary() != entry.secondary())
        {
            self.outdate_stale();
        }
        insert_stamped(&self.cache, &self.key, entry, deps, self.stamp, || {
            // Storable after all: the key is coalesced again.
            self.cache.flights.clear_uncacheable(&self.key);
            if let Some(request) = &self.request {
                self.cache.seen.mark(&request.uri);
            }
        })
    }

    /// Drops the stored response this request nominated (the one it would
    /// have revalidated), now that a whole new answer the cache does not
    /// store has come instead (too large, or not storable): kept, it would
    /// answer later requests with content older than what the upstream
    /// already sent. Only that entry: one stored meanwhile by another
    /// request may be newer than this answer.
    pub(super) fn outdate_stale(&self) {
        if let Some(stale) = &self.stale {
            self.cache.store.remove_variants(
                &self.key,
                |e| std::ptr::eq(e, SharedEntry::as_ptr(stale)),
                RemovalCause::Replaced,
            );
        }
    }

    /// Handles the upstream result.
    pub(crate) fn on_response<R>(mut self: Box<Self>, result: Result<Response<R>, BoxError>) -> Next<R>
    where
        R: http_body::Body<Data = Bytes> + Send + 'static,
        R::Error: Into<BoxError>,
    {
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return match self.stale_on_error(None) {
                    Some(stale) => Next::Respond(stale),
                    None => Next::Fail(error),
                };
            }
        };
        let status = response.status();
        // Before the request is taken: a stand-in for a HEAD has no body.
        if is_error_status(status) && self.request.is_some() {
            if let Some(stale) = self.stale_on_error(Some(status.as_u16())) {
                return Next::Respond(stale);
            }
        }
        let Some(request) = self.request.take() else {
            return Next::Respond(self.pass(response, None));
        };
        if status == StatusCode::NOT_MODIFIED {
            if let Some(stale) = self.stale.clone() {
                return Next::Respond(self.freshen(&request, &stale, response.headers()));
            }
        }
        if request.method == http::Method::HEAD {
            // Never stored; a 200 updates or outdates the stored GET it
            // revalidated (§4.3.5).
            if let (StatusCode::OK, Some(stale)) = (status, self.stale.clone()) {
                self.update_from_head(&request, &stale, response.headers());
            }
            self.request = Some(request);
            return Next::Respond(self.pass(response, None));
        }
        let (parts, body) = response.into_parts();
        let response_cc = CacheControl::from_headers(&parts.headers);
        let verdict = self
            .cache
            .rules
            .check_response(&request, &self.request_cc, &parts, &response_cc)
            .and_then(|()| self.freshness(&request, &parts, &response_cc));
        let freshness = match verdict {
            Ok(freshness) => freshness,
            Err(reason) => {
                if reason.outdates_stored() && !parts.status.is_server_error() {
                    self.outdate_stale();
                }
                let detail = self.not_storable(reason, self.lasting(reason, parts.status));
                self.request = Some(request);
                return Next::Respond(self.pass(Response::from_parts(parts, body), Some(detail)));
            }
        };
        let declared = declared_length(&parts.headers);
        if declared.is_some_and(|len| len > self.cache.max_entry_bytes as u64) {
            self.outdate_stale();
            let detail = self.not_storable(NotStorable::TooLarge, self.lasting(NotStorable::TooLarge, parts.status));
            return Next::Respond(self.pass(Response::from_parts(parts, body), Some(detail)));
        }
        self.request = Some(request);
        let reservation = Reservation::new(self.cache.clone());
        Buffer::new(self, parts, freshness, reservation).start(Box::pin(body), declared)
    }

    fn freshness(
        &self,
        request: &request::Parts,
        parts: &response::Parts,
        cc: &CacheControl,
    ) -> Result<Freshness, NotStorable> {
        let wall = SystemTime::now();
        let lifetime = self.lifetime(request, parts, cc, wall)?;
        Ok(self.freshness_with(parts, cc, lifetime, wall))
    }

    /// The answer's freshness lifetime, or why it cannot be stored for
    /// want of one; `wall` is when it arrived, by the system clock. The
    /// caller's [`TtlPolicy`](super::TtlPolicy), if it names one, before
    /// the headers.
    pub(super) fn lifetime(
        &self,
        request: &request::Parts,
        parts: &response::Parts,
        cc: &CacheControl,
        wall: SystemTime,
    ) -> Result<std::time::Duration, NotStorable> {
        let mode = self.cache.rules.mode;
        let lifetimes = &self.cache.lifetimes;
        let lifetime = match self.cache.ttl.as_ref().and_then(|policy| policy.ttl(request, parts)) {
            Some(ttl) => Some(lifetimes.max_ttl.map_or(ttl, |max| ttl.min(max))),
            None => freshness::lifetime(parts.status, cc, &parts.headers, mode, wall, lifetimes),
        };
        let has_validators = parts.headers.contains_key(ETAG) || parts.headers.contains_key(LAST_MODIFIED);
        let lifetime = match lifetime {
            Some(lifetime) => lifetime,
            None if has_validators && heuristically_cacheable(parts.status, cc) => std::time::Duration::ZERO,
            None => {
                return Err(if heuristically_cacheable(parts.status, cc) {
                    NotStorable::NoFreshness
                } else {
                    NotStorable::Status
                });
            }
        };
        if cc.no_cache && !has_validators {
            // Stored, it could only ever be refetched in full: pointless.
            return Err(NotStorable::NoFreshness);
        }
        Ok(lifetime)
    }

    /// The answer's freshness, arrived now (`wall` by the system clock),
    /// with `lifetime`.
    pub(super) fn freshness_with(
        &self,
        parts: &response::Parts,
        cc: &CacheControl,
        lifetime: std::time::Duration,
        wall: SystemTime,
    ) -> Freshness {
        let now = Instant::now();
        let delay = now.saturating_duration_since(self.request_time);
        let mode = self.cache.rules.mode;
        Freshness {
            response_time: now,
            initial_age: freshness::initial_age(&parts.headers, wall, delay),
            lifetime,
            no_cache: cc.no_cache,
            // In a shared cache, `s-maxage` carries `proxy-revalidate`'s
            // rule too (§5.2.2.10), and both forbid serving it stale
            // (§4.2.4), stale-while-revalidate and stale-if-error included.
            must_revalidate: cc.must_revalidate
                || (mode == CacheMode::Shared && (cc.proxy_revalidate || cc.s_maxage.is_some())),
            immutable: cc.immutable,
            stale_while_revalidate: std::time::Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0)),
            stale_if_error: cc.stale_if_error.map(std::time::Duration::from_secs),
        }
    }
}

/// Stores `entry` (with the dependency edges `deps`) under `key` unless an
/// invalidation covering it landed since `stamp` was taken: checked before
/// inserting, and again after, taking the entry back out if one landed in
/// between (`epochs.rs` says why that order is exact). `inserted` runs
/// between the insert and the second check. For a fetch's response and
/// for one loaded from a file alike.
pub(super) fn insert_stamped(
    cache: &Inner,
    key: &str,
    entry: &SharedEntry,
    deps: &[Node],
    stamp: Stamp,
    inserted: impl FnOnce(),
) -> Result<(), NotStorable> {
    let epochs = cache.flights.epochs();
    if !epochs.is_current(stamp) {
        return Err(NotStorable::Invalidated);
    }
    if !cache.store.insert(key, entry.clone(), deps) {
        return Err(NotStorable::TooLarge);
    }
    inserted();
    if !epochs.is_current(stamp) {
        cache.store.remove_variants(
            key,
            |e| std::ptr::eq(e, SharedEntry::as_ptr(entry)),
            RemovalCause::Invalidated,
        );
        return Err(NotStorable::Invalidated);
    }
    Ok(())
}
