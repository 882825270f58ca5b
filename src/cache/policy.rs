//! Which requests may be answered from the cache and which responses may be stored.
//!
//! Pure logic over `http` types: RFC 9111 §3 (storing), §3.5 (`Authorization`),
//! and the crate's own safety rules (`Set-Cookie`, exclusions, size).

use std::fmt;
use std::sync::Arc;

use http::header::{
    AUTHORIZATION, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, SET_COOKIE, VARY,
};
use http::{HeaderMap, Method, StatusCode, request, response};

use super::directives::CacheControl;

/// Whether the cache is private to one user (a client's cache, the default)
/// or shared between users (a proxy), which changes how RFC 9111 reads
/// `private`, `s-maxage`, `proxy-revalidate` and `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// A private cache: stores `private` responses, ignores `s-maxage`.
    #[default]
    Private,
    /// A shared cache: never stores `private`, prefers `s-maxage`, never
    /// serves stale a response with `proxy-revalidate` or `s-maxage`
    /// (§5.2.2.10), and applies §3.5 to `Authorization`.
    Shared,
}

/// What to do with requests that carry `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationPolicy {
    /// Never store or serve them from cache (the default in private mode:
    /// one client may carry several users' credentials).
    Bypass,
    /// RFC 9111 §3.5: store only when the response says `public`,
    /// `s-maxage` or `must-revalidate` (the default in shared mode).
    Rfc,
    /// Store them like any other request. Only safe when every request
    /// through this cache carries the same credentials.
    Store,
}

/// What to do with responses that carry `Set-Cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCookiePolicy {
    /// Do not store them (the default: cookies are per user).
    #[default]
    DoNotStore,
    /// Store them, cookies included.
    Store,
}

/// A user rule that can veto storing a response, implemented for closures.
///
/// ```
/// use tower_optimizer::cache::Cache;
/// let cache = Cache::builder()
///     .cache_if(|req: &http::request::Parts, _res: &http::response::Parts| req.uri.path() != "/live")
///     .build()
///     .unwrap();
/// # let _ = cache;
/// ```
pub trait CachePredicate: Send + Sync + 'static {
    /// Returns `false` to keep this response out of the cache.
    fn should_cache(&self, request: &request::Parts, response: &response::Parts) -> bool;
}

impl<F> CachePredicate for F
where
    F: Fn(&request::Parts, &response::Parts) -> bool + Send + Sync + 'static,
{
    fn should_cache(&self, request: &request::Parts, response: &response::Parts) -> bool {
        self(request, response)
    }
}

/// Why a request went around the cache entirely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The method is neither GET nor HEAD.
    Method,
    /// The request carries `Authorization` and the policy says bypass.
    Authorization,
    /// The URI matches a configured exclusion pattern.
    Excluded,
    /// The request carries a precondition only the origin can evaluate
    /// (`If-Match`, `If-Unmodified-Since`, `If-Range`) or a `Range`.
    Conditional,
    /// The URI has no authority and no `Host` header to key it by.
    NoKey,
    /// The request's [`RequestCacheMode`](super::RequestCacheMode) is
    /// `NoStore`.
    RequestMode,
}

/// Whether a request brings its own `If-None-Match` or `If-Modified-Since`
/// (RFC 9111 §4.3.2): answered from a stored response with a 304 where
/// they match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallerValidators {
    Absent,
    Present,
}

impl Bypass {
    /// A short token for `Cache-Status` `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::Method => "method",
            Bypass::Authorization => "authorization",
            Bypass::Excluded => "excluded",
            Bypass::Conditional => "conditional",
            Bypass::NoKey => "no-key",
            Bypass::RequestMode => "request-mode",
        }
    }
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// `no-store` on the request or the response.
    NoStore,
    /// `private` in a shared cache.
    Private,
    /// `Authorization` on the request, not allowed by §3.5 or the policy.
    Authorization,
    /// `Set-Cookie` on the response.
    SetCookie,
    /// A status the cache does not store (1xx, 206, 304, or no freshness).
    Status,
    /// No freshness information, no default TTL and no validators.
    NoFreshness,
    /// `Vary: *`: no request can ever match it.
    VaryStar,
    /// The body is larger than `max_entry_bytes` or the in-flight budget.
    TooLarge,
    /// The body failed or carried trailers.
    Body,
    /// The user's `cache_if` predicate said no.
    Predicate,
    /// A HEAD request: answered from stored GETs, never stored itself.
    Head,
    /// An invalidation covering the response landed while it was in
    /// flight: it answers the requests made before, and is not stored.
    Invalidated,
}

impl NotStorable {
    /// Whether the reason may be the response's own and would hold for the
    /// next answer too: what lets the key skip coalescing for a while.
    /// Reasons of this request (`Authorization`, HEAD), of a failed body, of
    /// an invalidation or of the user's predicate do not. `NoStore` counts
    /// only when the request itself did not ask for it (the caller checks).
    pub(crate) fn is_lasting(self) -> bool {
        matches!(
            self,
            NotStorable::NoStore
                | NotStorable::Private
                | NotStorable::SetCookie
                | NotStorable::Status
                | NotStorable::NoFreshness
                | NotStorable::VaryStar
                | NotStorable::TooLarge
        )
    }

    /// Whether a whole answer not stored for this reason still shows the
    /// stored response for its request to be out of date. Not when the
    /// answer is one caller's own (`private` in a shared cache,
    /// `Set-Cookie`, `Authorization`), nor when the reason is this
    /// request's method, body or an invalidation (which removes on its
    /// own).
    pub(crate) fn outdates_stored(self) -> bool {
        matches!(
            self,
            NotStorable::NoStore
                | NotStorable::Status
                | NotStorable::NoFreshness
                | NotStorable::VaryStar
                | NotStorable::Predicate
        )
    }

    /// A short token for `Cache-Status` `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::Status => "status",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::VaryStar => "vary-star",
            NotStorable::TooLarge => "too-large",
            NotStorable::Body => "body",
            NotStorable::Predicate => "predicate",
            NotStorable::Head => "head",
            NotStorable::Invalidated => "invalidated",
        }
    }
}

impl fmt::Display for NotStorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The settings that decide storability, resolved from the builder.
#[derive(Clone)]
pub(crate) struct Rules {
    pub(crate) mode: CacheMode,
    pub(crate) authorization: AuthorizationPolicy,
    pub(crate) set_cookie: SetCookiePolicy,
    pub(crate) exclude: Option<regex::RegexSet>,
    pub(crate) predicate: Option<Arc<dyn CachePredicate>>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("mode", &self.mode)
            .field("authorization", &self.authorization)
            .field("set_cookie", &self.set_cookie)
            .field("exclude", &self.exclude.as_ref().map(regex::RegexSet::patterns))
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl Rules {
    /// Decides whether a request may use the cache at all, and whether it
    /// brings validators of its own.
    pub(crate) fn check_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        key: &str,
    ) -> Result<CallerValidators, Bypass> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Bypass::Method);
        }
        let mut validators = CallerValidators::Absent;
        // One pass over the (few) request headers instead of seven lookups.
        for name in headers.keys() {
            if name == AUTHORIZATION {
                if self.authorization == AuthorizationPolicy::Bypass {
                    return Err(Bypass::Authorization);
                }
            } else if name == IF_NONE_MATCH || name == IF_MODIFIED_SINCE {
                validators = CallerValidators::Present;
            } else if name == IF_MATCH || name == IF_UNMODIFIED_SINCE || name == IF_RANGE || name == RANGE {
                // Preconditions for the origin (RFC 9111 §4.3.2) and ranges
                // ask what the stored full response cannot answer.
                return Err(Bypass::Conditional);
            }
        }
        if self.exclude.as_ref().is_some_and(|set| set.is_match(key)) {
            return Err(Bypass::Excluded);
        }
        Ok(validators)
    }

    /// Decides whether a response may be stored (RFC 9111 §3), given the
    /// request's and response's directives. Freshness is checked by the
    /// caller, and so is the method: a HEAD's own answer is never stored,
    /// but it may update the stored GET it revalidated, by these rules.
    pub(crate) fn check_response(
        &self,
        request: &request::Parts,
        request_cc: &CacheControl,
        response: &response::Parts,
        response_cc: &CacheControl,
    ) -> Result<(), NotStorable> {
        let status = response.status;
        if request_cc.no_store {
            return Err(NotStorable::NoStore);
        }
        // `must-understand` (§5.2.2.3) limits storing to a cache that knows
        // the status's rules, and such a cache ignores the `no-store` sent
        // beside it for the older caches that do not.
        if response_cc.must_understand {
            if !understood(status) {
                return Err(NotStorable::Status);
            }
        } else if response_cc.no_store {
            return Err(NotStorable::NoStore);
        }
        if status.is_informational() || status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Err(NotStorable::Status);
        }
        if self.mode == CacheMode::Shared && response_cc.private {
            return Err(NotStorable::Private);
        }
        if request.headers.contains_key(AUTHORIZATION) {
            let allowed = match self.authorization {
                AuthorizationPolicy::Bypass => false,
                AuthorizationPolicy::Store => true,
                AuthorizationPolicy::Rfc => {
                    response_cc.public || response_cc.must_revalidate || response_cc.s_maxage.is_some()
                }
            };
            if !allowed {
                return Err(NotStorable::Authorization);
            }
        }
        if self.set_cookie == SetCookiePolicy::DoNotStore && response.headers.contains_key(SET_COOKIE) {
            return Err(NotStorable::SetCookie);
        }
        if vary_names(&response.headers).is_none() {
            return Err(NotStorable::VaryStar);
        }
        if let Some(predicate) = &self.predicate {
            if !predicate.should_cache(request, response) {
                return Err(NotStorable::Predicate);
            }
        }
        Ok(())
    }
}

/// Whether this cache implements the caching rules of `status`, as
/// `must-understand` asks (RFC 9111 §3): the final statuses RFC 9110
/// defines, but for 206 (no range support) and 304 (a validation answer,
/// never stored itself).
pub(crate) fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// The header names listed in `Vary`, lowercased and deduplicated, or `None`
/// for `Vary: *`. Names that are not valid header names are kept out; a
/// request can never carry them, so they would match "absent" anyway.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<http::HeaderName>> {
    let mut names: Vec<http::HeaderName> = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(text) = value.to_str() else {
            // Unreadable Vary: we cannot tell what it varies on, so treat it
            // as varying on everything.
            return None;
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests;
