//! `[cache]` of an [`OptimizerConfig`](super::OptimizerConfig): the
//! section as a built [`Cache`], each error naming its key.

use std::time::Duration;

use super::{CacheSection, PressureSection, StackError, TtlRoute, choice, duration, duration_or_off, mib};
use crate::cache::{
    AuthorizationPolicy, Cache, CacheBuilder, CacheMode, DEFAULT_REMEMBER_UNCACHEABLE, DEFAULT_SWEEP_INTERVAL,
    MemoryPressure, MemorySource, QueryKey, QueryOrder, SetCookiePolicy, StatusExtension,
};

/// `[cache]` as a built [`Cache`].
pub(super) fn build(c: CacheSection) -> Result<Cache, StackError> {
    let mut cache = Cache::builder();
    if let Some(mb) = c.max_memory_mb {
        cache = cache.max_bytes(mib(mb));
    }
    if let Some(kb) = c.max_entry_kb {
        cache = cache.max_entry_bytes(usize::try_from(kb.saturating_mul(1 << 10)).unwrap_or(usize::MAX));
    }
    if let Some(kb) = c.stream_above_kb {
        cache = cache.stream_above(usize::try_from(kb.saturating_mul(1 << 10)).unwrap_or(usize::MAX));
    }
    if let Some(mb) = c.max_inflight_mb {
        cache = cache.max_inflight_bytes(mib(mb));
    }
    if let Some(n) = c.max_variants {
        cache = cache.max_variants(n);
    }
    if let Some(d) = duration("cache.default_ttl", c.default_ttl.as_ref())? {
        cache = cache.default_ttl(d);
    }
    if let Some(d) = duration("cache.max_ttl", c.max_ttl.as_ref())? {
        cache = cache.max_ttl(d);
    }
    if let Some(d) = duration("cache.stale_if_error", c.stale_if_error.as_ref())? {
        cache = cache.stale_if_error(d);
    }
    if let Some(percent) = c.heuristic_freshness {
        cache = cache.heuristic_freshness(percent);
    }
    if let Some(d) = duration("cache.lock_timeout", c.lock_timeout.as_ref())? {
        cache = cache.lock_timeout(d);
    }
    cache = cache.remember_uncacheable(duration_or_off(
        "cache.remember_uncacheable",
        c.remember_uncacheable.as_ref(),
        Some(DEFAULT_REMEMBER_UNCACHEABLE),
    )?);
    if let Some(d) = duration("cache.stale_retention", c.stale_retention.as_ref())? {
        cache = cache.stale_retention(d);
    }
    cache = cache.sweep_interval(duration_or_off(
        "cache.sweep_interval",
        c.sweep_interval.as_ref(),
        Some(DEFAULT_SWEEP_INTERVAL),
    )?);
    if let Some(p) = &c.memory_pressure {
        cache = cache.memory_pressure(memory_pressure(p)?);
    }
    cache = cache.mode(choice(
        "cache.mode",
        c.mode.as_deref(),
        [("private", CacheMode::Private), ("shared", CacheMode::Shared)],
    )?);
    if let Some(word) = c.authorization.as_deref() {
        // No default here: the cache's depends on the mode.
        cache = cache.authorization(choice(
            "cache.authorization",
            Some(word),
            [
                ("bypass", AuthorizationPolicy::Bypass),
                ("rfc", AuthorizationPolicy::Rfc),
                ("store", AuthorizationPolicy::Store),
            ],
        )?);
    }
    cache = cache.set_cookie(choice(
        "cache.set_cookie",
        c.set_cookie.as_deref(),
        [
            ("do-not-store", SetCookiePolicy::DoNotStore),
            ("store", SetCookiePolicy::Store),
        ],
    )?);
    cache = cache.status_extension(choice(
        "cache.status_extension",
        c.status_extension.as_deref(),
        [("insert", StatusExtension::Insert), ("omit", StatusExtension::Omit)],
    )?);
    for pattern in c.exclude.unwrap_or_default() {
        cache = cache.exclude(pattern);
    }
    cache = cache.vary_on(c.vary_on.unwrap_or_default());
    let order = choice(
        "cache.query_order",
        c.query_order.as_deref(),
        [("as-sent", QueryOrder::AsSent), ("sorted", QueryOrder::Sorted)],
    )?;
    let query = QueryKey::as_sent()
        .ignoring(c.ignore_query.unwrap_or_default())
        .order(order);
    query.check().map_err(|e| StackError::new("cache.ignore_query", e))?;
    cache = cache.query_key(query);
    if let Some(routes) = c.ttl_for {
        cache = cache.ttl_with(ttl_routes(&routes)?);
    }
    build_cache(cache)
}

/// Builds `cache`, an error naming the key of the setting at fault.
fn build_cache(cache: CacheBuilder) -> Result<Cache, StackError> {
    cache.build().map_err(|e| {
        // The builder's setting, as this file spells it.
        let field = match e.setting() {
            "max_bytes" => "cache.max_memory_mb",
            "max_entry_bytes" => "cache.max_entry_kb",
            "max_variants" => "cache.max_variants",
            "heuristic_freshness" => "cache.heuristic_freshness",
            "sweep_interval" => "cache.sweep_interval",
            "memory_pressure" => "cache.memory_pressure",
            "exclude" => "cache.exclude",
            "vary_on" => "cache.vary_on",
            "query_key" => "cache.ignore_query",
            _ => "cache",
        };
        // With the regex's own reason, which says what is wrong and where.
        StackError::new(field, crate::util::with_sources(&e))
    })
}

/// `[cache.memory_pressure]` as a [`MemoryPressure`].
fn memory_pressure(p: &PressureSection) -> Result<MemoryPressure, StackError> {
    const FIELD: &str = "cache.memory_pressure";
    fn need<T>(field: &str, value: Option<T>) -> Result<T, StackError> {
        value.ok_or_else(|| StackError::new(format!("{FIELD}.{field}"), "missing: give both watermarks"))
    }
    let fractions = p.high_fraction.is_some() || p.low_fraction.is_some();
    let sizes = p.high_mb.is_some() || p.low_mb.is_some();
    let source = choice(
        &format!("{FIELD}.source"),
        p.source.as_deref(),
        if fractions {
            [("cgroup", MemorySource::Cgroup), ("process", MemorySource::ProcessRss)]
        } else {
            [("process", MemorySource::ProcessRss), ("cgroup", MemorySource::Cgroup)]
        },
    )?;
    let pressure = match (sizes, fractions) {
        (true, true) => {
            return Err(StackError::new(
                FIELD,
                "watermarks in MiB (high_mb, low_mb) or as fractions (high_fraction, low_fraction), not both",
            ));
        }
        (false, false) => {
            return Err(StackError::new(
                FIELD,
                "no watermarks: give high_mb and low_mb, or high_fraction and low_fraction",
            ));
        }
        (true, false) => {
            let (high, low) = (need("high_mb", p.high_mb)?, need("low_mb", p.low_mb)?);
            MemoryPressure::new(source, high.saturating_mul(1 << 20), low.saturating_mul(1 << 20))
        }
        (false, true) => {
            let (high, low) = (
                need("high_fraction", p.high_fraction)?,
                need("low_fraction", p.low_fraction)?,
            );
            if !matches!(source, MemorySource::Cgroup) {
                return Err(StackError::new(
                    format!("{FIELD}.source"),
                    "fractions are of the cgroup's limit: use source = \"cgroup\" or watermarks in MiB",
                ));
            }
            for (field, value) in [("high_fraction", high), ("low_fraction", low)] {
                if !(value > 0.0 && value <= 1.0) {
                    return Err(StackError::new(
                        format!("{FIELD}.{field}"),
                        format!("{value} is not a fraction in (0, 1]"),
                    ));
                }
            }
            MemoryPressure::cgroup_fraction(high, low).ok_or_else(|| {
                StackError::new(
                    format!("{FIELD}.high_fraction"),
                    "this process has no cgroup memory limit to take fractions of; give watermarks in MiB",
                )
            })?
        }
    };
    Ok(match duration(&format!("{FIELD}.interval"), p.interval.as_ref())? {
        Some(interval) if interval.is_zero() => {
            return Err(StackError::new(format!("{FIELD}.interval"), "must be longer than zero"));
        }
        Some(interval) => pressure.interval(interval),
        None => pressure,
    })
}

/// `[cache] ttl_for` as a [`TtlPolicy`](crate::cache::TtlPolicy): the
/// first route whose path regex matches, for a 2xx answer.
pub(super) fn ttl_routes(
    routes: &[TtlRoute],
) -> Result<
    impl Fn(&http::request::Parts, &http::response::Parts) -> Option<Duration> + Send + Sync + 'static,
    StackError,
> {
    const FIELD: &str = "cache.ttl_for";
    let paths = regex::RegexSet::new(routes.iter().map(|r| r.path.as_str()))
        .map_err(|e| StackError::new(FIELD, e.to_string()))?;
    let ttls = routes
        .iter()
        .map(|r| duration(FIELD, Some(&r.ttl)).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(move |req: &http::request::Parts, res: &http::response::Parts| {
        if !res.status.is_success() {
            return None;
        }
        let first = paths.matches(req.uri.path()).into_iter().next()?;
        ttls.get(first).copied()
    })
}
