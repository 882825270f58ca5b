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
        // even when the stored age rounds to zero.
        if max_age == 0 || age > Duration::from_secs(max_age) {
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

/// Statuses that are heuristically cacheable (RFC 9110 §15.1).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
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
        if !heuristically_cacheable(status) {
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
mod tests {
    use super::*;
    use http::HeaderValue;

    const NO_EXTRA: Lifetimes = Lifetimes {
        heuristic_percent: None,
        heuristic_max: Duration::from_secs(86_400),
        default_ttl: None,
        max_ttl: None,
    };

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn wall(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(wall(secs))
    }

    fn life(pairs: &[(&'static str, &str)], mode: CacheMode, config: &Lifetimes) -> Option<u64> {
        let h = headers(pairs);
        let cc = CacheControl::from_headers(&h);
        lifetime(StatusCode::OK, &cc, &h, mode, wall(1_000_000), config).map(|d| d.as_secs())
    }

    #[test]
    fn lifetime_table() {
        let d = date(1_000_000);
        let e = date(1_000_100);
        let lm = date(0);
        let heur = Lifetimes {
            heuristic_percent: Some(10),
            ..NO_EXTRA
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Vec<(&'static str, &str)>, CacheMode, &Lifetimes, Option<u64>)> = vec![
            (
                vec![("cache-control", "max-age=60")],
                CacheMode::Private,
                &NO_EXTRA,
                Some(60),
            ),
            (
                vec![("cache-control", "max-age=60, s-maxage=5")],
                CacheMode::Private,
                &NO_EXTRA,
                Some(60),
            ),
            (
                vec![("cache-control", "max-age=60, s-maxage=5")],
                CacheMode::Shared,
                &NO_EXTRA,
                Some(5),
            ),
            (
                vec![("date", &d), ("expires", &e)],
                CacheMode::Private,
                &NO_EXTRA,
                Some(100),
            ),
            (vec![("expires", &e)], CacheMode::Private, &NO_EXTRA, Some(100)),
            (
                vec![("date", &d), ("expires", "0")],
                CacheMode::Private,
                &NO_EXTRA,
                Some(0),
            ),
            (
                vec![("date", &d), ("expires", &e), ("expires", &e)],
                CacheMode::Private,
                &NO_EXTRA,
                Some(0),
            ),
            (
                vec![("date", &e), ("expires", &d)],
                CacheMode::Private,
                &NO_EXTRA,
                Some(0),
            ),
            (
                vec![("cache-control", "max-age=7"), ("expires", &e)],
                CacheMode::Private,
                &NO_EXTRA,
                Some(7),
            ),
            (
                vec![("cache-control", "max-age=oops"), ("expires", &e)],
                CacheMode::Private,
                &NO_EXTRA,
                Some(0),
            ),
            (vec![], CacheMode::Private, &NO_EXTRA, None),
            (
                vec![("last-modified", &lm), ("date", &d)],
                CacheMode::Private,
                &NO_EXTRA,
                None,
            ),
            (
                vec![("last-modified", &lm), ("date", &d)],
                CacheMode::Private,
                &heur,
                Some(86_400),
            ),
            (vec![("last-modified", "garbage")], CacheMode::Private, &heur, None),
        ];
        for (i, (pairs, mode, config, want)) in cases.iter().enumerate() {
            assert_eq!(life(pairs, *mode, config), *want, "case {i}");
        }
        let small = Lifetimes {
            heuristic_percent: Some(10),
            ..NO_EXTRA
        };
        let lm_recent = date(999_000);
        assert_eq!(
            life(
                &[("last-modified", &lm_recent), ("date", &d)],
                CacheMode::Private,
                &small
            ),
            Some(100)
        );
        let dflt = Lifetimes {
            default_ttl: Some(Duration::from_secs(30)),
            max_ttl: Some(Duration::from_secs(20)),
            ..NO_EXTRA
        };
        assert_eq!(life(&[], CacheMode::Private, &dflt), Some(20));
        assert_eq!(
            life(&[("cache-control", "max-age=3600")], CacheMode::Private, &dflt),
            Some(20)
        );
    }

    #[test]
    fn default_ttl_only_for_heuristically_cacheable_statuses() {
        let config = Lifetimes {
            default_ttl: Some(Duration::from_secs(30)),
            ..NO_EXTRA
        };
        let h = HeaderMap::new();
        let cc = CacheControl::default();
        let got = lifetime(
            StatusCode::INTERNAL_SERVER_ERROR,
            &cc,
            &h,
            CacheMode::Private,
            wall(0),
            &config,
        );
        assert_eq!(got, None);
        let got = lifetime(StatusCode::NOT_FOUND, &cc, &h, CacheMode::Private, wall(0), &config);
        assert_eq!(got, Some(Duration::from_secs(30)));
    }

    #[test]
    fn age_table() {
        let response_wall = wall(1_000_000);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Vec<(&'static str, String)>, u64, u64)> = vec![
            (vec![], 0, 0),
            (vec![], 2, 2),
            (vec![("date", date(999_990))], 0, 10),
            (vec![("date", date(999_990)), ("age", "30".into())], 1, 31),
            (vec![("date", date(1_000_050))], 0, 0),
            (vec![("age", "junk".into())], 0, 0),
            (vec![("age", "99999999999999999999".into())], 0, 1 << 31),
        ];
        for (i, (pairs, delay, want)) in cases.iter().enumerate() {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                map.append(*n, HeaderValue::from_str(v).unwrap());
            }
            let got = initial_age(&map, response_wall, Duration::from_secs(*delay));
            assert_eq!(got.as_secs(), *want, "case {i}");
        }
    }

    fn fresh(lifetime: u64) -> Freshness {
        Freshness {
            response_time: Instant::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(lifetime),
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: None,
        }
    }

    fn req(line: &'static str) -> CacheControl {
        CacheControl::from_headers(&headers(&[("cache-control", line)]))
    }

    #[tokio::test(start_paused = true)]
    async fn usability_table() {
        let f = fresh(60);
        let t0 = f.response_time;
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(usability(&f, &CacheControl::default(), at(10)), Usability::Fresh);
        assert_eq!(f.ttl_secs(at(10)), 50);
        assert_eq!(usability(&f, &req("no-cache"), at(10)), Usability::Validate);
        assert_eq!(usability(&f, &req("max-age=0"), at(0)), Usability::Validate);
        assert_eq!(usability(&f, &req("max-age=5"), at(10)), Usability::Validate);
        assert_eq!(usability(&f, &req("max-age=20"), at(10)), Usability::Fresh);
        assert_eq!(usability(&f, &req("min-fresh=55"), at(10)), Usability::Validate);
        assert_eq!(usability(&f, &CacheControl::default(), at(60)), Usability::Validate);
        assert_eq!(f.ttl_secs(at(70)), -10);
        assert_eq!(usability(&f, &req("max-stale=10"), at(70)), Usability::StaleAccepted);
        assert_eq!(usability(&f, &req("max-stale=9"), at(70)), Usability::Validate);
        assert_eq!(usability(&f, &req("max-stale"), at(10_000)), Usability::StaleAccepted);
        let swr = Freshness {
            stale_while_revalidate: Duration::from_secs(30),
            ..f
        };
        assert_eq!(
            usability(&swr, &CacheControl::default(), at(80)),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(usability(&swr, &CacheControl::default(), at(91)), Usability::Validate);
        let must = Freshness {
            must_revalidate: true,
            ..swr
        };
        assert_eq!(usability(&must, &req("max-stale"), at(70)), Usability::Validate);
        let no_cache = Freshness { no_cache: true, ..f };
        assert_eq!(
            usability(&no_cache, &CacheControl::default(), at(1)),
            Usability::Validate
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_windows() {
        let f = Freshness {
            stale_if_error: Some(Duration::from_secs(100)),
            ..fresh(60)
        };
        let t0 = f.response_time;
        assert!(f.may_serve_on_error(t0 + Duration::from_secs(150), None));
        assert!(!f.may_serve_on_error(t0 + Duration::from_secs(161), None));
        let plain = fresh(60);
        assert!(plain.may_serve_on_error(t0 + Duration::from_secs(30), None));
        assert!(!plain.may_serve_on_error(t0 + Duration::from_secs(61), None));
        assert!(plain.may_serve_on_error(t0 + Duration::from_secs(61), Some(Duration::from_secs(5))));
        let must = Freshness {
            must_revalidate: true,
            ..f
        };
        assert!(!must.may_serve_on_error(t0 + Duration::from_secs(61), Some(Duration::from_secs(5))));
    }
}
