//! Freshness and age (RFC 9111 §4.2), and what a stored response may be used for.
//!
//! Pure logic: every function takes `now` instead of reading a clock.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::directives::{CacheControl, MaxStale, parse_delta};
use super::policy::CacheMode;

/// How long a response without explicit freshness may be kept, when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// `Some(percent)` enables heuristic freshness from `Last-Modified`.
    pub(crate) heuristic_percent: Option<u8>,
    /// Cap of a heuristic lifetime.
    pub(crate) heuristic_max: Duration,
    /// Lifetime of a response that carries no freshness at all.
    pub(crate) default_ttl: Option<Duration>,
    /// Upper bound on any lifetime.
    pub(crate) max_ttl: Option<Duration>,
}

/// What the cache remembers about a stored response's freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the response arrived (monotonic).
    pub response_time: Instant,
    /// The age it already had on arrival (§4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// Its freshness lifetime (§4.2.1), after `max_ttl`.
    pub lifetime: Duration,
    /// `no-cache`: validate on every use.
    pub no_cache: bool,
    /// `must-revalidate` (or `proxy-revalidate` in a shared cache): never serve stale.
    pub must_revalidate: bool,
    /// `immutable` (RFC 8246): while fresh, it answers a caller's reload
    /// (`max-age=0`) too; only `no-cache` sends it for validation.
    pub immutable: bool,
    /// `stale-while-revalidate` window (zero when absent).
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` window, if the response named one.
    pub stale_if_error: Option<Duration>,
}

impl Freshness {
    /// Current age (§4.2.3): the initial age plus the time resident here.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.response_time)
    }

    /// Whether the response is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }

    /// Remaining freshness in whole seconds; negative once stale (RFC 9211 `ttl`).
    pub fn ttl_secs(&self, now: Instant) -> i64 {
        self.ttl_secs_at_age(self.age(now))
    }

    /// [`Freshness::ttl_secs`] for a response whose current age is `age`:
    /// a hit reads its age once and derives the rest from it (each reading
    /// of the clock's difference costs as much as a header lookup).
    pub(crate) fn ttl_secs_at_age(&self, age: Duration) -> i64 {
        if let Some(left) = self.lifetime.checked_sub(age) {
            left.as_secs() as i64
        } else {
            // floor of a negative number: round the magnitude up.
            let past = age.saturating_sub(self.lifetime);
            -(past.as_secs() as i64 + i64::from(past.subsec_nanos() > 0))
        }
    }

    /// How long past its lifetime the response is at `now` (zero while fresh).
    pub fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// The instant after which no rule lets this entry be served or
    /// revalidated usefully: end of freshness plus the widest stale window.
    /// Entries that carry validators are kept longer by the caller.
    pub fn usable_until(&self, default_stale_if_error: Option<Duration>) -> Instant {
        let window = if self.must_revalidate {
            Duration::ZERO
        } else {
            self.stale_while_revalidate
                .max(self.stale_if_error.or(default_stale_if_error).unwrap_or_default())
        };
        let fresh_left = self.lifetime.saturating_sub(self.initial_age);
        self.response_time + fresh_left.saturating_add(window).min(MAX_INSTANT_OFFSET)
    }

    /// Whether a stale (or validation-failed) entry may stand in for an
    /// upstream error at `now` (RFC 5861 `stale-if-error`, or the configured
    /// default window for responses that carry none).
    pub fn may_serve_on_error(&self, now: Instant, default_window: Option<Duration>) -> bool {
        if self.no_cache || self.must_revalidate {
            return false;
        }
        match self.stale_if_error.or(default_window) {
            Some(window) => self.staleness(now) <= window,
            None => self.is_fresh(now),
        }
    }
}

/// Cap for instants computed from header values, so huge lifetimes cannot
/// overflow `Instant` arithmetic (about 68 years, more than 2^31 seconds).
pub(crate) const MAX_INSTANT_OFFSET: Duration = Duration::from_secs(1 << 31);

/// What a request may do with a stored response (§4.2, §4.2.4, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usability {
    /// Fresh and acceptable to the request: answer from cache.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: answer now, refresh behind.
    StaleWhileRevalidate,
    /// Must be validated (or refetched) before use.
    Validate,
}

/// Decides how a stored response with `freshness` may answer a request
/// carrying `request` directives at `now`.
#[cfg(test)]
pub(crate) fn usability(freshness: &Freshness, request: &CacheControl, now: Instant) -> Usability {
    usability_at_age(freshness, request, freshness.age(now))
}

/// [`usability`] for a stored response whose current age is `age`.
pub(crate) fn usability_at_age(freshness: &Freshness, request: &CacheControl, age: Duration) -> Usability {
    if freshness.no_cache || request.no_cache {
        return Usability::Validate;
    }
    if let Some(max_age) = request.max_age {
        // `max-age=0` is how clients ask for an end-to-end check; honour it
        // even when the stored age rounds to zero. Not for a fresh
        // `immutable` response (RFC 8246 §2): it cannot have changed, so a
        // reload is answered from it, and a forced one sends `no-cache`.
        let unchanged = freshness.immutable && age < freshness.lifetime;
        if !unchanged && (max_age == 0 || age > Duration::from_secs(max_age)) {
            return Usability::Validate;
        }
    }
    if age < freshness.lifetime {
        let remaining = freshness.lifetime.saturating_sub(age);
        return match request.min_fresh {
            Some(min_fresh) if remaining < Duration::from_secs(min_fresh) => Usability::Validate,
            _ => Usability::Fresh,
        };
    }
    if freshness.must_revalidate {
        return Usability::Validate;
    }
    let staleness = age.saturating_sub(freshness.lifetime);
    match request.max_stale {
        Some(MaxStale::Any) => return Usability::StaleAccepted,
        Some(MaxStale::Seconds(s)) if staleness <= Duration::from_secs(s) => {
            return Usability::StaleAccepted;
        }
        _ => {}
    }
    if staleness <= freshness.stale_while_revalidate && !freshness.stale_while_revalidate.is_zero() {
        return Usability::StaleWhileRevalidate;
    }
    Usability::Validate
}

/// Parses one HTTP-date header; several lines or an invalid value give `Err`.
fn single_date(headers: &HeaderMap, name: &http::HeaderName) -> Option<Result<SystemTime, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(()));
    }
    Some(
        first
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .ok_or(()),
    )
}

/// `corrected_initial_age` of §4.2.3, from the response headers, the wall
/// clock when the response arrived and how long the request took.
pub(crate) fn initial_age(headers: &HeaderMap, response_wall: SystemTime, response_delay: Duration) -> Duration {
    let apparent_age = match single_date(headers, &DATE) {
        Some(Ok(date)) => response_wall.duration_since(date).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    // Several Age lines or garbage: §5.1 says use the first valid one; an
    // unusable value is ignored (the apparent age still applies).
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_delta)
        .map_or(Duration::ZERO, Duration::from_secs);
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(MAX_INSTANT_OFFSET)
}

/// Whether a response without explicit freshness is heuristically
/// cacheable: its status is one RFC 9110 §15.1 lists, or it says `public`,
/// which makes any other status so (RFC 9111 §5.2.2.9). Any but a server
/// error: a heuristic is a MAY, and a configured `default_ttl` must not
/// keep an outage's answers after the upstream has recovered.
pub(crate) fn heuristically_cacheable(status: StatusCode, cc: &CacheControl) -> bool {
    (cc.public && !status.is_server_error())
        || matches!(
            status.as_u16(),
            200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
        )
}

/// Freshness lifetime (§4.2.1): `s-maxage` (shared only), `max-age`,
/// `Expires - Date`, then heuristic or default lifetimes when configured.
/// `None` means the response carries no freshness at all.
pub(crate) fn lifetime(
    status: StatusCode,
    cc: &CacheControl,
    headers: &HeaderMap,
    mode: CacheMode,
    response_wall: SystemTime,
    config: &Lifetimes,
) -> Option<Duration> {
    let explicit = if cc.malformed_freshness {
        Some(Duration::ZERO)
    } else if let (CacheMode::Shared, Some(s)) = (mode, cc.s_maxage) {
        Some(Duration::from_secs(s))
    } else if let Some(max_age) = cc.max_age {
        Some(Duration::from_secs(max_age))
    } else {
        // An invalid Expires (including "0") means already expired.
        single_date(headers, &EXPIRES).map(|expires| match expires {
            Ok(expires) => {
                let date = match single_date(headers, &DATE) {
                    Some(Ok(date)) => date,
                    _ => response_wall,
                };
                expires.duration_since(date).unwrap_or_default()
            }
            Err(()) => Duration::ZERO,
        })
    };
    let lifetime = explicit.or_else(|| {
        if !heuristically_cacheable(status, cc) {
            return None;
        }
        heuristic(headers, response_wall, config).or(config.default_ttl)
    })?;
    Some(match config.max_ttl {
        Some(max) => lifetime.min(max),
        None => lifetime,
    })
}

/// A fraction of the time since `Last-Modified` (§4.2.2), when enabled.
fn heuristic(headers: &HeaderMap, response_wall: SystemTime, config: &Lifetimes) -> Option<Duration> {
    let percent = config.heuristic_percent?;
    let Some(Ok(last_modified)) = single_date(headers, &LAST_MODIFIED) else {
        return None;
    };
    let date = match single_date(headers, &DATE) {
        Some(Ok(date)) => date,
        _ => response_wall,
    };
    let since = date.duration_since(last_modified).ok()?;
    Some((since * u32::from(percent) / 100).min(config.heuristic_max))
}

#[cfg(test)]
mod tests;
