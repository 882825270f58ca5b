//! [`CacheService`]: answers from the cache, coalesces misses, stores what
//! RFC 9111 allows.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::time::Instant;
use tower_service::Service;

use super::coalesce::Join;
use super::conditional;
use super::directives::CacheControl;
use super::entry::{Entry, SharedEntry};
use super::fetch::{self, Fetch};
use super::freshness::{Usability, usability_at_age};
use super::future::{Pending, ResponseFuture};
use super::handle::{Cache, Inner};
use super::key;
use super::mode::RequestCacheMode;
use super::policy::{Bypass, CallerValidators};
use super::stats::bump;
use super::status::{CacheStatus, Forward, Outcome};
use super::write::{self, Write};
use crate::BoxError;
use crate::body::OptimizerBody;

/// How long a background refresh (stale-while-revalidate) may run. Nobody
/// waits on it, so without a limit an upstream that never answers would
/// hold the key's flight for good: no refresh of the key again, and its
/// misses no longer coalesced. A minute is ample for any answer worth
/// storing; a stack's `.timeout()` cuts it shorter.
const BACKGROUND_REFRESH_LIMIT: Duration = Duration::from_secs(60);

/// Middleware that answers requests from a [`Cache`]. Built by
/// [`CacheLayer`](super::CacheLayer).
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
}

impl<S> CacheService<S> {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: S, cache: Cache) -> Self {
        CacheService { inner, cache }
    }

    inner_service_accessors!();

    /// The cache this service uses.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<OptimizerBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.cache.ensure_background();
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return self.pass_method(request);
        }
        let head = method == Method::HEAD;
        let (request_cc, mode) = directives(&request);
        let now = Instant::now();
        let mut hit = None;
        let looked = self
            .cache
            .lookup(&request, (&request_cc, mode), (now, head), Wanted::Any, &mut hit);
        match looked {
            Lookup::Hit(_) => match hit {
                Some(response) => ResponseFuture::ready(response),
                None => unreachable!("a hit writes its response"),
            },
            Lookup::Fetch { key, fwd, stale } => {
                self.fetch(request, Upstream { key, fwd, stale }, (request_cc, mode), (now, head))
            }
            other => self.answer_otherwise(other, request, request_cc, (now, head)),
        }
    }
}

impl<S> CacheService<S> {
    /// A method the cache does not answer: passed on, and an unsafe one's
    /// answer invalidates what it names. Out of line, as each path but a
    /// hit's (see [`CacheService::fetch`]).
    #[inline(never)]
    fn pass_method<ReqBody, ResBody>(&mut self, request: Request<ReqBody>) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        bump(&self.cache.inner.counters.bypassed);
        let write = (!write::is_safe(request.method()))
            .then(|| Write::new(&self.cache.inner, request.uri(), request.headers()))
            .flatten();
        let status = (CacheStatus::forward(Forward::Method), self.cache.inner.status_extension);
        ResponseFuture::passing(self.inner.call(request), status, write)
    }

    /// A bypass, or a stale answer given while it is refreshed behind.
    #[inline(never)]
    fn answer_otherwise<ReqBody, ResBody>(
        &mut self,
        looked: Lookup,
        request: Request<ReqBody>,
        request_cc: CacheControl,
        (now, head): (Instant, bool),
    ) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        match looked {
            // `only-if-cached` asks for a stored response or a 504
            // (§5.2.1.7), whatever keeps this request from the store.
            Lookup::Bypass(_) if request_cc.only_if_cached => {
                bump(&self.cache.inner.counters.bypassed);
                ResponseFuture::ready(fetch::gateway_timeout(
                    Forward::Bypass,
                    self.cache.inner.status_extension,
                ))
            }
            Lookup::Bypass(reason) => self.bypass(reason, request),
            Lookup::StaleWhileRevalidate(entry, key, validators) => {
                bump(&self.cache.inner.counters.stale);
                let freshness = entry.freshness();
                let status = CacheStatus {
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::hit(freshness.ttl_secs(now))
                };
                let asked = (validators == CallerValidators::Present).then(|| request.headers());
                let inner = &self.cache.inner;
                let status = (status, inner.status_extension);
                let response = fetch::from_entry_to(&inner.counters, asked, &entry, freshness.age(now), head, status);
                if !head {
                    self.refresh_in_background(key, entry, request, request_cc);
                }
                ResponseFuture::ready(response)
            }
            Lookup::Hit(_) | Lookup::Fetch { .. } => unreachable!("answered by `call`"),
            Lookup::Elsewhere => unreachable!("only asked of `Wanted::AtOnce`"),
        }
    }
}

/// Where a request that goes upstream stands: its key, why it goes, and
/// the stored response it may revalidate.
struct Upstream {
    key: Arc<str>,
    fwd: Forward,
    stale: Option<SharedEntry>,
}

impl<S> CacheService<S> {
    /// Sends `request` upstream, alone, as its key's leader or as a waiter
    /// on another's flight. Out of line: a hit, the path to keep short,
    /// runs none of it, and inlined it would spread a hit's instructions
    /// over several times the code (the instruction cache holds 32 KiB).
    #[inline(never)]
    fn fetch<ReqBody, ResBody>(
        &mut self,
        mut request: Request<ReqBody>,
        Upstream { key, fwd, stale }: Upstream,
        (request_cc, mode): (CacheControl, RequestCacheMode),
        (now, head): (Instant, bool),
    ) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let cache = self.cache.inner.clone();
        bump(&cache.counters.misses);
        if request_cc.only_if_cached {
            return ResponseFuture::ready(fetch::gateway_timeout(fwd, cache.status_extension));
        }
        if head && stale.is_none() {
            // HEAD is answered from stored GETs but never stored itself.
            let status = (CacheStatus::forward(fwd), cache.status_extension);
            return ResponseFuture::passing(self.inner.call(request), status, None);
        }
        // The cache asks for itself (the whole response, or a check of its
        // own copy) and judges the caller's validators against its answer.
        let asked = conditional::take(request.headers_mut());
        let snapshot = crate::util::request_head(&request);
        if mode == RequestCacheMode::Reload {
            // A reload asks for an answer fetched after it was made: a fetch
            // already in flight is outdated for it, as after an
            // invalidation, so this one leads a new flight and the older
            // answer, when it comes, is not stored over the newer.
            cache.flights.epochs().invalidate(&key);
        }
        let stamp = cache.flights.epochs().stamp(&key);
        let mut fetch = Fetch {
            cache: cache.clone(),
            key: key.clone(),
            leader: None,
            request: Some(snapshot),
            request_cc,
            stale,
            status: CacheStatus::forward(fwd),
            request_time: now,
            stamp,
            asked,
        };
        if head {
            // A HEAD revalidates the stored GET it would be answered from
            // (a 304 or a matching 200 freshens it, §4.3.5), but leads no
            // flight: its answer has no body for GETs to share.
            if let Some(stale) = &fetch.stale {
                fetch::add_validators(&mut request, stale);
            }
            return ResponseFuture::calling(self.inner.call(request), fetch);
        }
        // A lock timeout may be set without bound ("wait for the leader").
        let give_up = crate::util::instant_after(now, cache.lock_timeout);
        match cache.flights.join(&key, now, give_up, stamp) {
            join @ (Join::Leader(_) | Join::Alone) => {
                if let Join::Leader(leader) = join {
                    // Another request's flight may have stored its answer
                    // after this one's lookup and ended before its join:
                    // the answer is in the store, and this request is what
                    // a waiter of that flight would have been.
                    if let Some(entry) = stored_since_lookup(&cache, &fetch, &request, mode) {
                        leader.complete(Some(entry.clone()));
                        return ResponseFuture::ready(fetch.collapsed(&entry));
                    }
                    fetch.leader = Some(leader);
                }
                if let Some(stale) = &fetch.stale {
                    fetch::add_validators(&mut request, stale);
                }
                ResponseFuture::calling(self.inner.call(request), fetch)
            }
            Join::Waiter(waiter) => {
                // A waiter may go upstream later: it takes the service that
                // `poll_ready` made ready and leaves a clone that the next
                // `poll_ready` will prepare.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(
                    waiter,
                    Pending {
                        service,
                        request,
                        fetch,
                    },
                )
            }
        }
    }
}

/// The variant of `fetch`'s key for `request` that was stored after the
/// request's lookup (which saw `fetch.stale` or nothing), if any. Checked
/// by a request that became its key's leader: the lookup and the join are
/// two steps, and a flight that stored its answer and ended between them
/// left no flight to wait for. Without this, concurrent misses made a
/// second upstream call now and then (seen on two worker threads under
/// load). It costs a leader one more store lookup. A reload wants an
/// answer fetched after it, not one that was already on its way.
fn stored_since_lookup<B>(
    cache: &Inner,
    fetch: &Fetch,
    request: &Request<B>,
    mode: RequestCacheMode,
) -> Option<SharedEntry> {
    if mode == RequestCacheMode::Reload {
        return None;
    }
    let headers = request.headers();
    let entry = cache
        .store
        .get(&fetch.key, |e| key::matches(e.secondary(), headers), Instant::now())
        .ok()?;
    let seen = fetch
        .stale
        .as_ref()
        .is_some_and(|stale| SharedEntry::ptr_eq(stale, &entry));
    // Soft-purged since it was stored: it is to be revalidated, not shared.
    let purged = entry.is_purged();
    (!seen && !purged).then_some(entry)
}

/// What the store says about a request.
#[cfg_attr(not(feature = "stack"), allow(dead_code))] // `Hit`'s outcome: the stack's
enum Lookup {
    Bypass(Bypass),
    /// Answer now with the response the lookup wrote, built from a stored
    /// entry in place: returned through the lookup's closures, it would be
    /// copied at each of them. A fresh hit, or a stale one the request
    /// accepts.
    Hit(Outcome),
    /// Answer now with this stale entry and refresh it behind.
    StaleWhileRevalidate(SharedEntry, Arc<str>, CallerValidators),
    /// Go upstream (validating `stale` if there is one).
    Fetch {
        key: Arc<str>,
        fwd: Forward,
        stale: Option<SharedEntry>,
    },
    /// Not a hit, under `Wanted::AtOnce`: the request is to go the whole
    /// way, which looks again.
    Elsewhere,
}

/// What a lookup is for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "stack"), allow(dead_code))] // `AtOnce`: the stack's
enum Wanted {
    /// Whatever the store says: the cache's own call.
    Any,
    /// A hit only: anything else is `Lookup::Elsewhere`, with no key copied
    /// out, no entry kept and no counter moved, since the request goes on
    /// to the cache's call, which looks again and counts.
    AtOnce,
}

/// The request's cache directives, with its [`RequestCacheMode`] applied.
fn directives<B>(request: &Request<B>) -> (CacheControl, RequestCacheMode) {
    let mut request_cc = CacheControl::from_headers(request.headers());
    let mode = RequestCacheMode::of(request.extensions());
    mode.apply(&mut request_cc);
    (request_cc, mode)
}

impl Cache {
    /// The answer to `request` if the store has one to give at once (fresh,
    /// or stale as far as the request accepts), counted as a hit; `None`
    /// otherwise, with nothing counted: the request is then to go through
    /// [`CacheService`], which looks again. For the stack, which answers
    /// such a hit at its edge rather than through each stage between
    /// (`stack::hit_first`). With the answer, the time it was looked up
    /// at (read only once the request may be one) and whether it is fresh.
    #[cfg(feature = "stack")]
    pub(crate) fn answer_at_once<B, R>(
        &self,
        request: &Request<B>,
    ) -> Option<(Response<OptimizerBody<R>>, Instant, Outcome)> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD || !self.inner.seen.may_hold(request.uri()) {
            return None;
        }
        self.ensure_background();
        let now = Instant::now();
        let (request_cc, mode) = directives(request);
        let head = method == Method::HEAD;
        let mut hit = None;
        match self.lookup(request, (&request_cc, mode), (now, head), Wanted::AtOnce, &mut hit) {
            Lookup::Hit(outcome) => hit.map(|response| (response, now, outcome)),
            _ => None,
        }
    }

    /// Keys the request and consults the store. The key is built in a
    /// reused buffer and only copied out when the request goes upstream.
    fn lookup<B, ResBody>(
        &self,
        request: &Request<B>,
        (request_cc, mode): (&CacheControl, RequestCacheMode),
        (now, head): (Instant, bool),
        wanted: Wanted,
        hit: &mut Option<Response<OptimizerBody<ResBody>>>,
    ) -> Lookup {
        let inner = &self.inner;
        let headers = request.headers();
        key::with_primary_key(request.uri(), headers, &inner.query_key, |key| {
            let Some(key) = key else {
                return Lookup::Bypass(Bypass::NoKey);
            };
            let validators = match inner.rules.check_request(request.method(), headers, key) {
                Ok(validators) => validators,
                Err(reason) => return Lookup::Bypass(reason),
            };
            match mode {
                RequestCacheMode::NoStore => return Lookup::Bypass(Bypass::RequestMode),
                // Whatever is stored: upstream for a new response, without
                // the cache's validators.
                RequestCacheMode::Reload if wanted == Wanted::AtOnce => return Lookup::Elsewhere,
                RequestCacheMode::Reload => {
                    return Lookup::Fetch {
                        key: key.into(),
                        fwd: Forward::Request,
                        stale: None,
                    };
                }
                _ => {}
            }
            // A hit answers the caller's own validators itself (§4.3.2).
            let asked = (validators == CallerValidators::Present).then_some(headers);
            let answer = |entry: &Entry, age: Duration, status: CacheStatus| {
                fetch::from_entry_to(
                    &inner.counters,
                    asked,
                    entry,
                    age,
                    head,
                    (status, inner.status_extension),
                )
            };
            let matches = |e: &Entry| key::matches(e.secondary(), headers);
            // Runs under the shard's read lock: a hit is answered from the
            // borrowed entry without cloning its `Arc`.
            let found = inner.store.get_with(key, matches, now, |entry, at| {
                let freshness = entry.freshness_at(at, now);
                let age = freshness.initial_age;
                let ttl = freshness.ttl_secs_at_age(age);
                match usability_at_age(&freshness, request_cc, age) {
                    Usability::Fresh => {
                        bump(&inner.counters.hits);
                        *hit = Some(answer(entry, age, CacheStatus::hit(ttl)));
                        Lookup::Hit(Outcome::Hit)
                    }
                    Usability::StaleAccepted => {
                        bump(&inner.counters.stale);
                        let status = CacheStatus {
                            detail: Some("max-stale"),
                            ..CacheStatus::hit(ttl)
                        };
                        *hit = Some(answer(entry, age, status));
                        Lookup::Hit(Outcome::StaleHit)
                    }
                    _ if wanted == Wanted::AtOnce => Lookup::Elsewhere,
                    Usability::StaleWhileRevalidate => {
                        Lookup::StaleWhileRevalidate(entry.clone(), key.into(), validators)
                    }
                    Usability::Validate => {
                        let forced =
                            request_cc.no_cache || request_cc.max_age.is_some() || request_cc.min_fresh.is_some();
                        let fwd = if forced { Forward::Request } else { Forward::Stale };
                        Lookup::Fetch {
                            key: key.into(),
                            fwd,
                            stale: Some(entry.clone()),
                        }
                    }
                }
            });
            match found {
                Ok(lookup) => lookup,
                Err(_) if wanted == Wanted::AtOnce => Lookup::Elsewhere,
                Err(fwd) => Lookup::Fetch {
                    key: key.into(),
                    fwd,
                    stale: None,
                },
            }
        })
    }
}

impl<S> CacheService<S> {
    fn bypass<ReqBody, ResBody>(
        &mut self,
        reason: Bypass,
        request: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        bump(&self.cache.inner.counters.bypassed);
        let status = CacheStatus {
            detail: Some(reason.as_str()),
            ..CacheStatus::forward(Forward::Bypass)
        };
        let status = (status, self.cache.inner.status_extension);
        ResponseFuture::passing(self.inner.call(request), status, None)
    }

    /// Starts one background revalidation of `entry` (stale-while-revalidate)
    /// unless one is already running for `key`.
    fn refresh_in_background<ReqBody, ResBody>(
        &mut self,
        key: Arc<str>,
        entry: SharedEntry,
        mut request: Request<ReqBody>,
        request_cc: CacheControl,
    ) where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let cache = self.cache.inner.clone();
        let stamp = cache.flights.epochs().stamp(&key);
        let Some(leader) = cache.flights.try_lead(&key, stamp) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        bump(&cache.counters.background_refreshes);
        // The refresh revalidates the stored response, not the caller's
        // copy: a 304 to the caller's validators says nothing of ours.
        conditional::take(request.headers_mut());
        let snapshot = crate::util::request_head(&request);
        fetch::add_validators(&mut request, &entry);
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let fetch = Fetch {
            cache,
            key,
            leader: Some(leader),
            request: Some(snapshot),
            request_cc,
            stale: Some(entry),
            status: CacheStatus::forward(Forward::Stale),
            request_time: Instant::now(),
            stamp,
            asked: http::HeaderMap::new(),
        };
        let future: ResponseFuture<S, ReqBody, ResBody> = ResponseFuture::calling(service.call(request), fetch);
        runtime.spawn(async move {
            // The refreshed entry is stored by the future itself, or, for a
            // long body that streams, once the body has been read to its
            // end; the bytes and any error only matter to nobody here.
            let refresh = async {
                let body = future.await?.into_body();
                let mut body = std::pin::pin!(body);
                while let Some(frame) = body.frame().await {
                    frame?;
                }
                Ok::<_, BoxError>(())
            };
            match tokio::time::timeout(BACKGROUND_REFRESH_LIMIT, refresh).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    let error = crate::util::with_sources(&*error);
                    tracing::debug!(%error, "background revalidation failed");
                }
                // Dropping the future gives up the key's flight.
                Err(_) => tracing::warn!(limit = ?BACKGROUND_REFRESH_LIMIT, "background revalidation gave up"),
            }
        });
    }
}
