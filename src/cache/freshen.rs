//! Updating a stored response from an answer without a body: a 304 to the
//! cache's conditional request (RFC 9111 §4.3.4), or a 200 to a HEAD
//! (§4.3.5). Knows nothing of tower.

use std::time::SystemTime;

use http::header::{ETAG, LAST_MODIFIED};
use http::{HeaderMap, Response, request};
use tokio::time::Instant;

use super::conditional::opaque_tag;
use super::directives::CacheControl;
use super::entry::{Entry, EntryBody, SharedEntry};
use super::fetch::{Fetch, declared_length, shared};
use super::policy::NotStorable;
use super::stats::{InvalidationKind, bump};
use super::status::CacheStatus;
use crate::body::OptimizerBody;

impl Fetch {
    /// A 304 (its headers `not_modified`) for our conditional request:
    /// freshen the stored headers (§4.3.4), store the result and serve the
    /// stored body.
    ///
    /// A 304 whose `ETag` or `Last-Modified` contradicts the stored one's
    /// does not describe it, and §4.3.4 forbids updating it from such a
    /// 304. The stored response answers this once, as it was, marked stale
    /// so the next use asks again.
    pub(super) fn freshen<R>(
        &mut self,
        request: &request::Parts,
        stale: &SharedEntry,
        not_modified: &HeaderMap,
    ) -> Response<OptimizerBody<R>> {
        let head = request.method == http::Method::HEAD;
        bump(&self.cache.counters.revalidated);
        if contradicts(not_modified, stale) {
            self.outdated(stale);
            self.leader.take();
            let now = Instant::now();
            let freshness = stale.freshness();
            let status = CacheStatus {
                fwd_status: Some(304),
                ttl: Some(freshness.ttl_secs(now)),
                detail: Some("validator-mismatch"),
                ..self.status
            };
            return self.answer(stale, freshness.age(now), head, status);
        }
        let (entry, stored, now) = self.freshened(request, stale, not_modified);
        let freshness = entry.freshness();
        let mut status = CacheStatus {
            fwd_status: Some(304),
            ttl: Some(freshness.ttl_secs(now)),
            stored: stored.is_ok(),
            ..self.status
        };
        if stored == Err(NotStorable::Invalidated) {
            status.detail = Some(NotStorable::Invalidated.as_str());
        }
        self.answer(&entry, freshness.age(now), head, status)
    }

    /// A 200 to a HEAD that revalidated `stale` (§4.3.5): where the
    /// validators it carries (at least one) are the stored response's, and
    /// its `Content-Length`, if any, is the stored body's, it freshens the
    /// stored response as a 304 would; otherwise the stored response is
    /// out of date, and is marked stale (it stays for revalidation).
    pub(super) fn update_from_head(&mut self, request: &request::Parts, stale: &SharedEntry, head: &HeaderMap) {
        let same = |name: &http::HeaderName| {
            head.get(name)
                .is_none_or(|value| stale.headers.get(name) == Some(value))
        };
        let validated = head.contains_key(ETAG) || head.contains_key(LAST_MODIFIED);
        let same_length = declared_length(head).is_none_or(|len| len == stale.body.len() as u64);
        if validated && same(&ETAG) && same(&LAST_MODIFIED) && same_length {
            // Stored or not as the rules say: the caller gets the HEAD's
            // own answer either way.
            let _ = self.freshened(request, stale, head);
        } else {
            self.outdated(stale);
        }
    }

    /// Marks `stale` stale for good (a soft purge): HTTP says it is out of
    /// date. Counted as an HTTP invalidation the first time.
    fn outdated(&self, stale: &Entry) {
        if stale.purge() {
            self.cache.counters.invalidated(InvalidationKind::Http, 1);
        }
    }

    /// `stale` with the fields of `update` (a 304's or a HEAD's), stored
    /// in its place if it may be. One that may no longer be stored (it now
    /// says `no-store`, say) outdates the stored one; one this caller alone
    /// may not store (its `Authorization` in a shared cache) leaves it for
    /// the others. The entry, whether it was stored, and when.
    fn freshened(
        &mut self,
        request: &request::Parts,
        stale: &SharedEntry,
        update: &HeaderMap,
    ) -> (SharedEntry, Result<(), NotStorable>, Instant) {
        let wall = SystemTime::now();
        let mut parts = Response::new(()).into_parts().0;
        parts.headers = stale.freshened_headers(update, wall);
        parts.status = stale.status;
        parts.version = stale.version();
        let cc = CacheControl::from_headers(&parts.headers);
        let now = Instant::now();
        let verdict = self
            .cache
            .rules
            .check_response(request, &self.request_cc, &parts, &cc)
            .and_then(|()| self.lifetime(request, &parts, &cc, wall));
        let freshness = self.freshness_with(&parts, &cc, verdict.unwrap_or_default(), wall);
        let entry = SharedEntry::new(Entry::new(
            &self.key,
            stale.secondary().clone(),
            &parts,
            EntryBody::Shared(stale.body.clone()),
            freshness,
            stale.labels(),
            now,
        ));
        let stored = match verdict {
            Ok(_) => self.store(&entry, &[]),
            Err(reason) => {
                if reason.outdates_stored() {
                    self.outdate_stale();
                }
                Err(reason)
            }
        };
        if let Some(leader) = self.leader.take() {
            leader.complete(shared(&entry, stored));
        }
        (entry, stored, now)
    }
}

/// Whether a 304 names another representation than `stored`: an `ETag` that
/// differs by weak comparison (RFC 9110 §8.8.3.2), or a `Last-Modified` at
/// another time, where both carry one (and it can be read).
fn contradicts(not_modified: &HeaderMap, stored: &Entry) -> bool {
    fn opaque(v: &http::HeaderValue) -> &[u8] {
        opaque_tag(v.as_bytes())
    }
    let both = |name: &http::HeaderName| Some((not_modified.get(name)?, stored.headers.get(name)?));
    let date = |v: &http::HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    let etag_differs = both(&ETAG).is_some_and(|(new, old)| opaque(new) != opaque(old));
    let date_differs = both(&LAST_MODIFIED)
        .and_then(|(new, old)| Some((date(new)?, date(old)?)))
        .is_some_and(|(new, old)| new != old);
    etag_differs || date_differs
}
