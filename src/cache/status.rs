//! RFC 9211 `Cache-Status`: what the cache did with each response.

use std::fmt::{self, Write as _};
use std::hash::Hasher;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// Whether the cache also puts a [`CacheStatus`] in each response's
/// extensions. The `Cache-Status` header is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusExtension {
    /// Insert it, for callers and layers that read it without parsing the
    /// header (the metrics layer, `OptimizerStack`'s reports). The default.
    #[default]
    Insert,
    /// Leave it out. Inserting costs three small allocations per response
    /// (`http::Extensions` boxes its map, the map's table and the value),
    /// about a sixth of what a hit adds over the bare service; the metrics
    /// layer then reads the `Cache-Status` header instead.
    Omit,
}

impl StatusExtension {
    /// Puts `status` in `response`'s extensions, unless omitted.
    pub(crate) fn apply<B>(self, response: &mut http::Response<B>, status: CacheStatus) {
        if self == StatusExtension::Insert {
            response.extensions_mut().insert(status);
        }
    }
}

/// The `Cache-Status` header name (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache's name in `Cache-Status` members.
pub const CACHE_NAME: &str = "tower-optimizer";

/// Why the request went forward (RFC 9211 §2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The request's method is not cacheable.
    Method,
    /// No stored response for this URI.
    UriMiss,
    /// Stored responses exist for this URI, but none for these `Vary` values.
    VaryMiss,
    /// A stored response was stale (validation or refetch).
    Stale,
    /// The request's own directives asked to go forward (`no-cache`, `max-age`).
    Request,
}

impl Forward {
    fn from_token(token: &str) -> Option<Forward> {
        [
            Forward::Bypass,
            Forward::Method,
            Forward::UriMiss,
            Forward::VaryMiss,
            Forward::Stale,
            Forward::Request,
        ]
        .into_iter()
        .find(|f| f.as_str() == token)
    }

    fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
        }
    }
}

/// What the cache did with one response; also placed in the response's
/// extensions so a metrics layer can read it without parsing the header.
/// Where the extensions did not come through (a layer that rebuilt the
/// response, a client that kept only the head), [`CacheStatus::from_headers`]
/// reads the same value back from the `Cache-Status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// Answered from cache without waiting on upstream (fresh, or stale
    /// where allowed).
    pub hit: bool,
    /// Why the request went forward, if it did.
    pub fwd: Option<Forward>,
    /// Status upstream answered with, when forwarded.
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds of the response served (negative: stale).
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The response came from another request's upstream call (coalesced).
    pub collapsed: bool,
    /// A short reason: how a stale response came to be served
    /// (`stale-while-revalidate`, `stale-if-error`, `max-stale`), why an
    /// answer was not stored (a [`NotStorable`](super::NotStorable) token),
    /// `streamed`, `only-if-cached`, `validator-mismatch` (a 304 that
    /// named another representation than the stored one, which answered
    /// unchanged), or `not-modified` (a 304 the cache gave a caller whose
    /// own `If-None-Match` or `If-Modified-Since` matched the stored
    /// response; a stale one keeps its own reason, and the status code
    /// tells the 304).
    pub detail: Option<&'static str>,
}

/// The broad outcome, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh from cache.
    Hit,
    /// Stale from cache (max-stale, stale-while-revalidate, stale-if-error).
    StaleHit,
    /// Validated upstream with a 304 and served from cache.
    Revalidated,
    /// Fetched from upstream.
    Miss,
    /// The cache stepped aside.
    Bypass,
}

impl CacheStatus {
    pub(crate) const fn forward(fwd: Forward) -> Self {
        CacheStatus {
            hit: false,
            fwd: Some(fwd),
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    pub(crate) const fn hit(ttl: i64) -> Self {
        CacheStatus {
            hit: true,
            fwd: None,
            fwd_status: None,
            ttl: Some(ttl),
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    /// The broad outcome of this status.
    pub fn outcome(&self) -> Outcome {
        match (self.hit, self.fwd, self.ttl) {
            (true, _, Some(ttl)) if ttl < 0 => Outcome::StaleHit,
            (true, _, _) => Outcome::Hit,
            (false, Some(Forward::Bypass | Forward::Method), _) => Outcome::Bypass,
            // A 304 that freshened the stored response served (which has a
            // TTL); a 304 passed on as it came (unsolicited, or for a HEAD
            // forwarded plainly) is not a revalidation.
            (false, _, Some(_)) if self.fwd_status == Some(304) => Outcome::Revalidated,
            (false, Some(Forward::Stale), Some(_)) if self.detail == Some("stale-if-error") => Outcome::StaleHit,
            _ => Outcome::Miss,
        }
    }

    /// The status of a response, from its extension when the cache put one
    /// there, else parsed from its `Cache-Status` header (a cache built with
    /// [`StatusExtension::Omit`], or a layer between that rebuilt the
    /// response without extensions).
    ///
    /// ```
    /// use tower_optimizer::cache::CacheStatus;
    ///
    /// let (mut parts, ()) = http::Response::builder()
    ///     .header("cache-status", "tower-optimizer; hit; ttl=42")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let read = CacheStatus::of(&parts.extensions, &parts.headers).unwrap();
    /// assert!(read.hit);
    /// parts.extensions.insert(CacheStatus { ttl: Some(7), ..read });
    /// assert_eq!(CacheStatus::of(&parts.extensions, &parts.headers).unwrap().ttl, Some(7));
    /// ```
    pub fn of(extensions: &http::Extensions, headers: &HeaderMap) -> Option<CacheStatus> {
        extensions
            .get::<CacheStatus>()
            .copied()
            .or_else(|| CacheStatus::from_headers(headers))
    }

    /// This cache's status of a response, read from its `Cache-Status`
    /// field: the last member named [`CACHE_NAME`] (RFC 9211 lists the
    /// caches a response passed in order, the one nearest the client last).
    /// `None` if there is none or it does not parse. It equals the
    /// response's `CacheStatus` extension, and works where that did not come
    /// through (pass a `reqwest::Response`'s `headers()` as well).
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_optimizer::cache::{CacheStatus, Outcome};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.append("cache-status", "ExampleCDN; fwd=uri-miss".parse().unwrap());
    /// headers.append("cache-status", "tower-optimizer; hit; ttl=42".parse().unwrap());
    /// let status = CacheStatus::from_headers(&headers).unwrap();
    /// assert_eq!((status.outcome(), status.ttl), (Outcome::Hit, Some(42)));
    /// assert!(CacheStatus::from_headers(&HeaderMap::new()).is_none());
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<CacheStatus> {
        // Most responses that pass here have no `Cache-Status` (a request
        // the cache never saw, or one whose status came as the extension).
        if crate::util::has_none_of(headers, &[&CACHE_STATUS]) {
            return None;
        }
        let mut found = None;
        for line in headers.get_all(CACHE_STATUS) {
            let Ok(text) = line.to_str() else { continue };
            // Our members hold no quoted strings, so a comma ends a member.
            for member in text.split(',') {
                if let Some(status) = parse_member(member) {
                    found = Some(status);
                }
            }
        }
        found
    }

    /// The header value: `tower-optimizer; hit; ttl=42`.
    pub fn to_header_value(&self) -> HeaderValue {
        // Hits are the hot path: their value depends on the TTL alone, so
        // it is built once per TTL and thread and shared after that.
        if self.hit && self.fwd.is_none() && !self.stored && !self.collapsed && self.detail.is_none() {
            if let Some(ttl) = self.ttl {
                return memoised(Memo::HitTtl, ttl, |ttl| {
                    let mut buf = [0u8; 48];
                    let prefix = b"tower-optimizer; hit; ttl=";
                    buf[..prefix.len()].copy_from_slice(prefix);
                    let len = prefix.len() + write_int(&mut buf[prefix.len()..], ttl);
                    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
                });
            }
        }
        memoised_status(self)
    }

    // Out of line: values are memoised, so rendering is rare, and its
    // formatting machinery would otherwise sit amid every hit's code.
    #[cold]
    #[inline(never)]
    fn render(&self) -> HeaderValue {
        let mut text = String::with_capacity(64);
        let _ = write!(text, "{self}");
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

/// Every `detail` token the cache writes, so a parsed status holds the
/// same static text (see `details_cover_every_token_written`).
const DETAILS: [&str; 24] = [
    "stale-while-revalidate",
    "stale-if-error",
    "max-stale",
    "not-modified",
    "only-if-cached",
    "streamed",
    "validator-mismatch",
    // `Bypass` tokens.
    "method",
    "authorization",
    "excluded",
    "conditional",
    "no-key",
    "request-mode",
    // `NotStorable` tokens (`authorization` is above).
    "no-store",
    "private",
    "set-cookie",
    "status",
    "no-freshness",
    "vary-star",
    "too-large",
    "body",
    "predicate",
    "head",
    "invalidated",
];

/// One `Cache-Status` member, if it is this cache's and parses. Parameters
/// it does not know are skipped (a later version may add some); a known
/// one with a malformed value fails the member.
fn parse_member(member: &str) -> Option<CacheStatus> {
    let mut params = member.split(';').map(str::trim);
    if params.next()? != CACHE_NAME {
        return None;
    }
    let mut status = CacheStatus {
        hit: false,
        fwd: None,
        fwd_status: None,
        ttl: None,
        stored: false,
        collapsed: false,
        detail: None,
    };
    for param in params {
        match param.split_once('=') {
            None if param == "hit" => status.hit = true,
            None if param == "stored" => status.stored = true,
            None if param == "collapsed" => status.collapsed = true,
            Some(("fwd", value)) => status.fwd = Some(Forward::from_token(value)?),
            Some(("fwd-status", value)) => status.fwd_status = Some(value.parse().ok()?),
            Some(("ttl", value)) => status.ttl = Some(value.parse().ok()?),
            Some(("detail", value)) => status.detail = DETAILS.iter().copied().find(|d| *d == value),
            _ => {}
        }
    }
    Some(status)
}

/// Slots of the per-thread memo of other statuses.
const STATUS_SLOTS: usize = 32;

thread_local! {
    static STATUSES: std::cell::RefCell<[Option<(CacheStatus, HeaderValue)>; STATUS_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; STATUS_SLOTS]) };
}

/// The header value of a status other than a plain hit, from a small
/// per-thread memo keyed by the whole status: misses, bypasses and stale
/// answers recur (the same reason, upstream status and lifetime), and
/// formatting one costs a string and a validation per response.
fn memoised_status(status: &CacheStatus) -> HeaderValue {
    let mut hasher = crate::util::Fx::default();
    hasher.write_u64(u64::from(status.hit) | u64::from(status.stored) << 1 | u64::from(status.collapsed) << 2);
    hasher.write_u64(status.fwd.map_or(0, |f| f as u64 + 1));
    hasher.write_u64(status.fwd_status.map_or(u64::MAX, u64::from));
    #[allow(clippy::cast_sign_loss)] // only mixed into a hash
    hasher.write_u64(status.ttl.map_or(u64::MAX, |t| t as u64));
    hasher.write(status.detail.unwrap_or("").as_bytes());
    #[allow(clippy::cast_possible_truncation)] // a slot index
    let slot = (hasher.finish() >> 32) as usize % STATUS_SLOTS;
    STATUSES
        .try_with(|memo| {
            let Ok(mut memo) = memo.try_borrow_mut() else {
                return status.render();
            };
            if let Some((held, value)) = &memo[slot] {
                if held == status {
                    return value.clone();
                }
            }
            let value = status.render();
            memo[slot] = Some((*status, value.clone()));
            value
        })
        .unwrap_or_else(|_| status.render())
}

/// Which header value a [`memoised`] one is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Memo {
    /// `Age: n`.
    Age = 0,
    /// `Cache-Status: tower-optimizer; hit; ttl=n`.
    HitTtl = 1,
}

/// Slots per kind in the per-thread memo: ages and TTLs of the entries hit
/// in one second spread over them by value.
const MEMO_SLOTS: usize = 64;

type MemoSlots = [[Option<(i64, HeaderValue)>; MEMO_SLOTS]; 2];

thread_local! {
    static MEMO: std::cell::RefCell<MemoSlots> = const {
        std::cell::RefCell::new([const { [const { None }; MEMO_SLOTS] }; 2])
    };
}

/// The header value of `kind` for `n`, from a small per-thread memo: a hit
/// then clones a shared value instead of allocating a new one (the value
/// is a function of `n` alone, so any slot holding `n` is right).
pub(crate) fn memoised(kind: Memo, n: i64, make: fn(i64) -> HeaderValue) -> HeaderValue {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let slot = (n as usize) % MEMO_SLOTS;
    MEMO.try_with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return make(n);
        };
        let entry = &mut memo[kind as usize][slot];
        if let Some((held, value)) = entry {
            if *held == n {
                return value.clone();
            }
        }
        let value = make(n);
        *entry = Some((n, value.clone()));
        value
    })
    .unwrap_or_else(|_| make(n))
}

/// Writes `n` in decimal into `out` (which has room for any i64); returns the length.
pub(crate) fn write_int(out: &mut [u8], n: i64) -> usize {
    let mut digits = [0u8; 20];
    let mut v = n.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut len = 0;
    if n < 0 {
        out[0] = b'-';
        len = 1;
    }
    let d = &digits[i..];
    out[len..len + d.len()].copy_from_slice(d);
    len + d.len()
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CACHE_NAME)?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
