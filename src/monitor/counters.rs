//! Names of the cache counters each sample publishes through the `metrics`
//! facade, so Prometheus sees what [`CacheStats`](crate::cache::CacheStats)
//! counts: requests by result, evictions and evicted bytes by cause, and
//! the events that say how the cache is doing (coalesced waits, stale
//! answers hiding errors, revalidations, answers it could not store).
//!
//! The cache counts with striped atomics on its hot path; the facade is
//! called once per sample (every 5 s by default), never per request, with
//! each counter set to the cache's running total (`Counter::absolute`).
//! Exporters render them as counters (`..._total` in Prometheus text).
//!
//! ```
//! use tower_optimizer::monitor::counters;
//!
//! assert_eq!(counters::CACHE_EVICTIONS, "tower_optimizer.cache.evictions");
//! assert_eq!(counters::CACHE_REQUESTS_RESULTS, ["hit", "stale", "miss", "bypass"]);
//! ```

/// Requests the cache looked up, by `result` label (see
/// [`CACHE_REQUESTS_RESULTS`]), as `CacheStats` counts them: `hit`
/// (`hits`), `stale` (`stale`), `miss` (`misses`), `bypass` (`bypassed`).
pub const CACHE_REQUESTS: &str = "tower_optimizer.cache.requests";
/// The values of [`CACHE_REQUESTS`]' `result` label.
pub const CACHE_REQUESTS_RESULTS: [&str; 4] = ["hit", "stale", "miss", "bypass"];
/// Entries that left the cache, by `cause` label
/// ([`RemovalCause::as_str`](crate::cache::RemovalCause::as_str)).
pub const CACHE_EVICTIONS: &str = "tower_optimizer.cache.evictions";
/// Bytes charged to the entries that left the cache, by `cause` label.
pub const CACHE_EVICTED_BYTES: &str = "tower_optimizer.cache.evicted_bytes";
/// Stale entries validated upstream with a 304.
pub const CACHE_REVALIDATED: &str = "tower_optimizer.cache.revalidated";
/// 304s given to callers whose own validators matched.
pub const CACHE_NOT_MODIFIED: &str = "tower_optimizer.cache.not_modified";
/// Stale answers that stood in for an upstream error: each one an outage
/// a caller did not see.
pub const CACHE_STALE_ON_ERROR: &str = "tower_optimizer.cache.stale_on_error";
/// Requests that waited on another request's upstream call.
pub const CACHE_COALESCED: &str = "tower_optimizer.cache.coalesced";
/// Waiters that gave up on a slow leader and went upstream themselves.
pub const CACHE_COALESCE_TIMEOUTS: &str = "tower_optimizer.cache.coalesce_timeouts";
/// Responses the cache could not store.
pub const CACHE_NOT_STORED: &str = "tower_optimizer.cache.not_stored";
/// Storable misses that reached their caller as they arrived.
pub const CACHE_STREAMED: &str = "tower_optimizer.cache.streamed";
/// Background refreshes started (stale-while-revalidate).
pub const CACHE_BACKGROUND_REFRESHES: &str = "tower_optimizer.cache.background_refreshes";

/// Describes the counters to the current recorder (units and help text).
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(CACHE_REQUESTS, "Requests the cache looked up, by result.");
    describe_counter!(CACHE_EVICTIONS, "Entries that left the cache, by cause.");
    describe_counter!(
        CACHE_EVICTED_BYTES,
        Unit::Bytes,
        "Bytes charged to the entries that left the cache, by cause."
    );
    describe_counter!(CACHE_REVALIDATED, "Stale entries validated upstream with a 304.");
    describe_counter!(
        CACHE_NOT_MODIFIED,
        "304s given to callers whose own validators matched."
    );
    describe_counter!(
        CACHE_STALE_ON_ERROR,
        "Stale answers that stood in for an upstream error."
    );
    describe_counter!(
        CACHE_COALESCED,
        "Requests that waited on another request's upstream call."
    );
    describe_counter!(CACHE_COALESCE_TIMEOUTS, "Waiters that gave up on a slow leader.");
    describe_counter!(CACHE_NOT_STORED, "Responses the cache could not store.");
    describe_counter!(
        CACHE_STREAMED,
        "Storable misses that reached their caller as they arrived."
    );
    describe_counter!(CACHE_BACKGROUND_REFRESHES, "Background refreshes started.");
}

/// Sets every cache counter to the cache's running total.
#[cfg(feature = "cache")]
pub(crate) fn export(stats: &crate::cache::CacheStats) {
    use crate::cache::RemovalCause;
    use metrics::counter;
    let results = [stats.hits, stats.stale, stats.misses, stats.bypassed];
    for (result, value) in CACHE_REQUESTS_RESULTS.into_iter().zip(results) {
        counter!(CACHE_REQUESTS, "result" => result).absolute(value);
    }
    for cause in RemovalCause::ALL {
        counter!(CACHE_EVICTIONS, "cause" => cause.as_str()).absolute(stats.evictions(cause));
        counter!(CACHE_EVICTED_BYTES, "cause" => cause.as_str()).absolute(stats.evicted_bytes(cause));
    }
    counter!(CACHE_REVALIDATED).absolute(stats.revalidated);
    counter!(CACHE_NOT_MODIFIED).absolute(stats.not_modified);
    counter!(CACHE_STALE_ON_ERROR).absolute(stats.stale_on_error);
    counter!(CACHE_COALESCED).absolute(stats.coalesced);
    counter!(CACHE_COALESCE_TIMEOUTS).absolute(stats.coalesce_timeouts);
    counter!(CACHE_NOT_STORED).absolute(stats.not_storable);
    counter!(CACHE_STREAMED).absolute(stats.streamed);
    counter!(CACHE_BACKGROUND_REFRESHES).absolute(stats.background_refreshes);
}
