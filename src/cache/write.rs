//! RFC 9111 §4.4 in the cache itself: a response to an unsafe request
//! invalidates what the request may have changed, and a write whose outcome
//! is never known marks its target stale.
//!
//! The cache does this alone, so a `CacheLayer` without an
//! `InvalidationLayer` never serves what a `PUT` through it replaced. The
//! invalidation layer, inside it, adds tags, rules and dependents on top.

use std::sync::Arc;

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::handle::Inner;
use super::key::{primary_key, with_primary_key};
use super::query::QueryKey;
use super::stats::InvalidationKind;
use super::store::{Purge, RemovalCause};
use crate::BoxError;

/// Safe methods (RFC 9110 §9.2.1): they never invalidate.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// A key split into its origin (`scheme://authority`) and the rest (path and
/// query, `/` when there is none).
pub(crate) fn split_origin(key: &str) -> (&str, &str) {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    match key[after_scheme..].find('/') {
        Some(i) => key.split_at(after_scheme + i),
        None => (key, "/"),
    }
}

/// Resolves a `Location`/`Content-Location` value to a cache key on the same
/// origin (RFC 9111 §4.4: other origins are never invalidated).
pub(crate) fn same_origin_key(origin: &str, value: &HeaderValue, query: &QueryKey) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let uri: Uri = if text.starts_with('/') && !text.starts_with("//") {
        format!("{origin}{text}").parse().ok()?
    } else {
        let uri: Uri = text.parse().ok()?;
        uri.scheme()?;
        uri
    };
    let key = primary_key(&uri, &HeaderMap::new(), query)?;
    (split_origin(&key).0 == origin).then_some(key)
}

/// An unsafe request on its way upstream, seen from the cache. Settled by
/// its response or error; dropped unsettled (the caller gave up first), it
/// soft-purges its target, since the upstream may have applied it.
pub(crate) struct Write {
    inner: Arc<Inner>,
    /// The target URI's key.
    key: Box<str>,
    settled: bool,
}

impl Write {
    /// `None` for a request whose target has no key (no host to name it).
    pub(crate) fn new(inner: &Arc<Inner>, uri: &Uri, headers: &HeaderMap) -> Option<Box<Write>> {
        let key = with_primary_key(uri, headers, &inner.query_key, |key| key.map(Box::<str>::from))?;
        Some(Box::new(Write {
            inner: inner.clone(),
            key,
            settled: false,
        }))
    }

    /// The response arrived. A non-error status (2xx, 3xx) removes the
    /// target and the same-origin `Location` and `Content-Location`
    /// (§4.4); an error status says the write did not happen.
    pub(crate) fn answered(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.settled = true;
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        self.remove(&self.key);
        let origin = split_origin(&self.key).0;
        for name in [LOCATION, CONTENT_LOCATION] {
            for value in headers.get_all(name) {
                if let Some(key) = same_origin_key(origin, value, &self.inner.query_key) {
                    if key != *self.key {
                        self.remove(&key);
                    }
                }
            }
        }
    }

    /// The upstream call failed. Unless the request never left, the write
    /// may have happened: the target is soft-purged (on drop).
    pub(crate) fn failed(&mut self, error: &BoxError) {
        self.settled = crate::util::never_sent(&**error);
    }

    fn remove(&self, key: &str) {
        // Also outdates a read of `key` in flight: it may carry what the
        // write replaced.
        self.inner.flights.epochs().invalidate(key);
        let removed = self.inner.store.remove_key(key, RemovalCause::Invalidated);
        // An invalidation layer inside has usually removed it already, and
        // counted it: only what this removes counts here.
        self.inner.counters.invalidated(InvalidationKind::Http, removed.entries);
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Stale, not removed: revalidation tells (a 304 if nothing changed)
        // and `stale-if-error` can still answer while the upstream is down.
        self.inner.flights.epochs().invalidate(&self.key);
        let marked = self.inner.store.purge_keys(&[Arc::from(&*self.key)], Purge::Soft);
        self.inner.counters.invalidated(InvalidationKind::Http, marked.entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods_and_origins() {
        assert!(is_safe(&Method::OPTIONS));
        assert!(!is_safe(&Method::PATCH));
        assert!(!is_safe(&Method::from_bytes(b"PURGE").unwrap()));
        assert_eq!(split_origin("http://a.test"), ("http://a.test", "/"));
        assert_eq!(split_origin("http://a.test/x?y"), ("http://a.test", "/x?y"));
    }

    #[test]
    fn locations_resolve_on_the_same_origin_only() {
        let origin = "http://a.test";
        let query = QueryKey::as_sent();
        let key = |v: &'static str| same_origin_key(origin, &HeaderValue::from_static(v), &query);
        assert_eq!(key("/users/7").as_deref(), Some("http://a.test/users/7"));
        assert_eq!(key("http://A.test:80/x").as_deref(), Some("http://a.test/x"));
        assert_eq!(key("http://b.test/x"), None, "another origin");
        assert_eq!(key("//b.test/x"), None, "scheme-relative: another origin");
        assert_eq!(key("users/7"), None, "relative without a slash: not resolved");
        assert_eq!(
            same_origin_key(origin, &HeaderValue::from_bytes(b"/\xff").unwrap(), &query),
            None
        );
    }

    #[test]
    fn refusals_before_sending_are_told_apart() {
        let never_sent = |error: &BoxError| crate::util::never_sent(&**error);
        let plain: BoxError = "reset".into();
        assert!(!never_sent(&plain));
        #[cfg(feature = "circuit-breaker")]
        {
            let open = crate::circuit_breaker::error::Open::new("http://a.test".into(), std::time::Duration::ZERO);
            let wrapped: BoxError = Box::new(crate::util::Wrapped(Box::new(open)));
            assert!(never_sent(&wrapped));
        }
        #[cfg(feature = "stack")]
        {
            let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
            assert!(never_sent(&shed));
        }
        // Whatever the client: a refused connection carried as a source.
        let refused: BoxError = Box::new(crate::util::Wrapped(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert!(never_sent(&refused));
    }
}
