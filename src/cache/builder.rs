//! `CacheBuilder`: every setting, its default and why, validated in `build()`.

use std::sync::Arc;
use std::time::Duration;

use super::EntryMeta;
use super::error::BuildError;
use super::freshness::Lifetimes;
use super::handle::Cache;
use super::policy::{AuthorizationPolicy, CacheMode, CachePredicate, Rules, SetCookiePolicy};
use super::pressure::MemoryPressure;
use super::query::QueryKey;
use super::status::StatusExtension;
use super::store::{EvictionListener, RemovalCause};
use super::ttl::TtlPolicy;

/// Default budget: 64 MiB holds tens of thousands of typical API responses
/// and goes unnoticed in a 1 GiB container.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Default largest cached body: 1 MiB. Larger bodies are rarely hot, and
/// each one stored pushes many small ones out of the budget.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
/// Default length above which a stored miss reaches its caller as it
/// arrives, not once it is whole: 64 KiB, HTTP/2's initial flow-control
/// window. A body up to that comes in a few frames without waiting on the
/// reader, so buffering it delays the caller little and keeps `stored` in
/// its `Cache-Status` exact and stale-if-error open to a body that fails;
/// past it, the caller would wait for the whole transfer before its first
/// byte.
pub const DEFAULT_STREAM_ABOVE: usize = 64 << 10;
/// Default wait for another request's upstream call: 5 s, nginx's
/// `proxy_cache_lock_timeout`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a key whose answer was not storable (`no-store`, `private`,
/// no freshness, too large ...) is left out of coalescing: 120 s, Varnish's
/// hit-for-miss default. Requests queued behind a leader whose answer they
/// cannot share wait a whole upstream call for nothing; a storable answer
/// ends the window at once, so a key that turns cacheable loses nothing.
pub const DEFAULT_REMEMBER_UNCACHEABLE: Duration = Duration::from_secs(120);
/// Default sweep period for expired entries: 30 s keeps dead entries from
/// holding budget for long while costing one pass per shard per period.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Default variants per URI: `Vary` on encoding or language gives a
/// handful; more points at a high-cardinality `Vary` that would flood a slot.
pub const DEFAULT_MAX_VARIANTS: usize = 8;
/// Default time a stale entry is kept after its freshness and stale windows
/// end: ten minutes lets a warm entry be revalidated with a 304 (or serve a
/// `max-stale` request) instead of refetched, and it is the least recently
/// used, so first to go, when room is needed.
pub const DEFAULT_STALE_RETENTION: Duration = Duration::from_secs(600);
/// Default cap of heuristic freshness: one day, as browsers cap it.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);
/// Most shards: past 16, lock contention on 2-16 cores no longer improves.
const MAX_SHARDS: usize = 16;

/// Builds a [`Cache`]. Every setting has a documented default.
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    pub(crate) max_bytes: usize,
    pub(crate) max_entry_bytes: usize,
    pub(crate) max_inflight_bytes: Option<usize>,
    pub(crate) stream_above: usize,
    pub(crate) shards: Option<usize>,
    pub(crate) max_variants: usize,
    pub(crate) mode: CacheMode,
    pub(crate) authorization: Option<AuthorizationPolicy>,
    pub(crate) set_cookie: SetCookiePolicy,
    pub(crate) exclude: Vec<String>,
    pub(crate) vary_on: Vec<String>,
    pub(crate) query_key: QueryKey,
    pub(crate) predicate: Option<Arc<dyn CachePredicate>>,
    pub(crate) ttl: Option<Arc<dyn TtlPolicy>>,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) lock_timeout: Duration,
    pub(crate) remember_uncacheable: Option<Duration>,
    pub(crate) status_extension: StatusExtension,
    pub(crate) stale_retention: Duration,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) audit_interval: Option<Duration>,
    pub(crate) pressure: Option<MemoryPressure>,
    pub(crate) listener: Option<EvictionListener>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("mode", &self.mode)
            .field("lifetimes", &self.lifetimes)
            .field("exclude", &self.exclude)
            .field("vary_on", &self.vary_on)
            .field("query_key", &self.query_key)
            .field("ttl_with", &self.ttl.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_inflight_bytes: None,
            stream_above: DEFAULT_STREAM_ABOVE,
            shards: None,
            max_variants: DEFAULT_MAX_VARIANTS,
            mode: CacheMode::Private,
            authorization: None,
            set_cookie: SetCookiePolicy::DoNotStore,
            exclude: Vec::new(),
            vary_on: Vec::new(),
            query_key: QueryKey::as_sent(),
            predicate: None,
            ttl: None,
            lifetimes: Lifetimes {
                heuristic_percent: None,
                heuristic_max: DEFAULT_HEURISTIC_MAX,
                default_ttl: None,
                max_ttl: None,
            },
            stale_if_error: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            remember_uncacheable: Some(DEFAULT_REMEMBER_UNCACHEABLE),
            status_extension: StatusExtension::Insert,
            stale_retention: DEFAULT_STALE_RETENTION,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            audit_interval: None,
            pressure: None,
            listener: None,
        }
    }
}

impl CacheBuilder {
    /// Hard budget in bytes over keys, headers, bodies and per-entry
    /// overhead. `bytes_used <= max_bytes` holds after every operation.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Largest body stored; larger ones stream through uncached and intact.
    /// An entry is never larger than 4 GiB, whatever this says (its size is
    /// kept in 32 bits).
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Cap on bytes buffered by all in-flight misses together (default: a
    /// quarter of `max_bytes`). Past it, responses stream through uncached.
    pub fn max_inflight_bytes(mut self, bytes: usize) -> Self {
        self.max_inflight_bytes = Some(bytes);
        self
    }

    /// Length above which a storable miss reaches its caller as it arrives
    /// (known from `Content-Length`, or once that much was read), while the
    /// cache keeps a copy and stores it when the body ends (default
    /// [`DEFAULT_STREAM_ABOVE`]). Its `Cache-Status` says `streamed`, not
    /// `stored`, since the end is still to come. The body is read by a
    /// task of its own and shared as it arrives with the requests waiting
    /// for the same key, and those that join while it streams; it is read
    /// to its end, and stored, even if every reader stops. One that
    /// declared no length and outgrows [`CacheBuilder::max_entry_bytes`]
    /// is not stored: its readers read on at the pace of the slowest, and
    /// one left unread for [`CacheBuilder::lock_timeout`] stops holding the
    /// others back. A streamed body that fails
    /// reaches the caller as an error, so while a stale entry could stand
    /// in for it (stale-if-error) the body is buffered whole instead.
    /// `usize::MAX` buffers every storable body whole.
    pub fn stream_above(mut self, bytes: usize) -> Self {
        self.stream_above = bytes;
        self
    }

    /// Number of store shards (default: up to 16, fewer for small budgets so
    /// each shard can still hold four of the largest entries).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Most variants (`Vary`) kept per URI.
    pub fn max_variants(mut self, variants: usize) -> Self {
        self.max_variants = variants;
        self
    }

    /// Private (default) or shared cache semantics.
    pub fn mode(mut self, mode: CacheMode) -> Self {
        self.mode = mode;
        self
    }

    /// Treatment of requests with `Authorization` (default: bypass in
    /// private mode, RFC 9111 §3.5 in shared mode).
    pub fn authorization(mut self, policy: AuthorizationPolicy) -> Self {
        self.authorization = Some(policy);
        self
    }

    /// Treatment of responses with `Set-Cookie` (default: not stored).
    pub fn set_cookie(mut self, policy: SetCookiePolicy) -> Self {
        self.set_cookie = policy;
        self
    }

    /// Never cache URIs matching this regex, matched against the key (the
    /// normalised absolute URI, its query as [`query_key`](Self::query_key)
    /// keeps it). An invalid pattern makes `build()` fail.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.exclude.push(pattern.into());
        self
    }

    /// Keys entries by these request headers too, as if every response
    /// listed them in `Vary` (RFC 9111 §4.1): a request whose value differs
    /// from the stored one's (or that lacks a value the stored one had) is
    /// a miss, and its answer is stored as another variant of the URI. For
    /// a client that sends per-tenant, per-locale or per-API-version headers
    /// through one cache while its upstream does not say `Vary`. A URI keeps
    /// at most [`max_variants`](Self::max_variants) of them (the oldest
    /// goes first); invalidating a URI removes them all. A name that is not
    /// a valid header name makes `build()` fail.
    ///
    /// ```
    /// use tower_optimizer::cache::Cache;
    ///
    /// let cache = Cache::builder().vary_on(["X-Tenant", "accept-language"]).build().unwrap();
    /// # drop(cache);
    /// assert!(Cache::builder().vary_on(["bad header"]).build().is_err());
    /// ```
    pub fn vary_on<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.vary_on.extend(names.into_iter().map(Into::into));
        self
    }

    /// Which query parameters the cache key keeps, and in what order
    /// (default: all of them, as sent; see [`QueryKey`]). For parameters
    /// that select nothing and change on every request (a presigned URL's
    /// signature, a cache buster), which would make every request a miss.
    /// A name that cannot be a parameter name makes `build()` fail.
    ///
    /// ```
    /// use tower_optimizer::cache::{Cache, QueryKey};
    ///
    /// let cache = Cache::builder().query_key(QueryKey::as_sent().ignoring(["_"])).build().unwrap();
    /// let key = cache.key_for_uri(&"http://api.test/list?page=2&_=1764201600".parse().unwrap());
    /// assert_eq!(key.as_deref(), Some("http://api.test/list?page=2"));
    /// assert!(Cache::builder().query_key(QueryKey::as_sent().ignoring(["a=b"])).build().is_err());
    /// ```
    pub fn query_key(mut self, query_key: QueryKey) -> Self {
        self.query_key = query_key;
        self
    }

    /// A rule that can veto storing a response.
    pub fn cache_if(mut self, predicate: impl CachePredicate) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Lifetimes route by route where the caller knows better than the
    /// upstream's headers (see [`TtlPolicy`]): `Some(ttl)` is taken as if
    /// the response said `max-age`; `None` leaves the headers to decide.
    pub fn ttl_with(mut self, policy: impl TtlPolicy) -> Self {
        self.ttl = Some(Arc::new(policy));
        self
    }

    /// Lifetime for cacheable responses that carry no freshness (off by
    /// default): those whose status is heuristically cacheable (RFC 9110
    /// §15.1: 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501) or
    /// that say `public` (RFC 9111 §5.2.2.9) and are not a 5xx.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.default_ttl = Some(ttl);
        self
    }

    /// Cap on any freshness lifetime.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.max_ttl = Some(ttl);
        self
    }

    /// Enables heuristic freshness (RFC 9111 §4.2.2): `percent` of the time
    /// since `Last-Modified`, capped at one day. Off by default.
    pub fn heuristic_freshness(mut self, percent: u8) -> Self {
        self.lifetimes.heuristic_percent = Some(percent);
        self
    }

    /// Stale-if-error window for responses that name none (off by default).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// How long requests wait for another's upstream call for the same key
    /// before going upstream themselves, counted from when the first of them
    /// began waiting: past it, the call is taken to be stuck, and every
    /// waiter, and any request that joins it later, goes upstream alone.
    /// It also bounds how long the readers of a shared body that outgrew
    /// `max_entry_bytes` wait for one that does not read (see
    /// [`stream_above`](Self::stream_above)). Default
    /// [`DEFAULT_LOCK_TIMEOUT`].
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long a key whose answer was not storable for a reason of the
    /// response's own (`no-store`, `private`, `Set-Cookie`, no freshness,
    /// `Vary: *`, too large) is left out of coalescing: its requests go
    /// upstream at once instead of waiting for a leader's answer they could
    /// not share. A storable answer for the key ends it early; `None`
    /// coalesces every miss (default [`DEFAULT_REMEMBER_UNCACHEABLE`]).
    pub fn remember_uncacheable(mut self, window: Option<Duration>) -> Self {
        self.remember_uncacheable = window;
        self
    }

    /// Whether each response also carries its [`CacheStatus`](super::CacheStatus) in its
    /// extensions (default [`StatusExtension::Insert`]); the `Cache-Status`
    /// header is set either way. [`StatusExtension::Omit`] saves three
    /// small allocations per response where nothing reads the extension.
    pub fn status_extension(mut self, extension: StatusExtension) -> Self {
        self.status_extension = extension;
        self
    }

    /// How long a stale entry is kept, for revalidation and `max-stale`
    /// requests, after its freshness and stale windows end (zero: drop it
    /// as soon as nothing allows serving it).
    pub fn stale_retention(mut self, retention: Duration) -> Self {
        self.stale_retention = retention;
        self
    }

    /// Period of the background sweep of expired entries (`None`: no sweep,
    /// entries expire on access only).
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Runs [`Cache::audit`] this often in the sweeper and counts drift in
    /// the stats (off by default).
    pub fn audit_interval(mut self, interval: Duration) -> Self {
        self.audit_interval = Some(interval);
        self
    }

    /// Enables the memory-pressure watcher.
    pub fn memory_pressure(mut self, pressure: MemoryPressure) -> Self {
        self.pressure = Some(pressure);
        self
    }

    /// Called for every entry that leaves the cache, with the cause.
    pub fn eviction_listener(mut self, listener: impl Fn(&EntryMeta, RemovalCause) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Checks the settings and builds the cache. Background tasks start
    /// now if called inside a Tokio runtime, otherwise on first use.
    pub fn build(self) -> Result<Cache, BuildError> {
        if self.max_bytes == 0 {
            return Err(BuildError::new("max_bytes", "max_bytes must be greater than zero"));
        }
        if self.max_entry_bytes == 0 {
            return Err(BuildError::new(
                "max_entry_bytes",
                "max_entry_bytes must be greater than zero",
            ));
        }
        if self.max_variants == 0 {
            return Err(BuildError::new("max_variants", "max_variants must be at least 1"));
        }
        if self.lifetimes.heuristic_percent.is_some_and(|p| p > 100) {
            return Err(BuildError::new(
                "heuristic_freshness",
                "heuristic_freshness percent must be at most 100",
            ));
        }
        if self.sweep_interval.is_some_and(|i| i.is_zero()) {
            return Err(BuildError::new("sweep_interval", "the sweep interval must be non-zero"));
        }
        if self.audit_interval.is_some_and(|i| i.is_zero()) {
            return Err(BuildError::new("audit_interval", "the audit interval must be non-zero"));
        }
        if let Some(p) = &self.pressure {
            if p.low > p.high {
                return Err(BuildError::new(
                    "memory_pressure",
                    "memory pressure low watermark is above the high one",
                ));
            }
            if p.interval.is_zero() {
                return Err(BuildError::new(
                    "memory_pressure",
                    "memory pressure interval must be non-zero",
                ));
            }
        }
        let shards = match self.shards {
            Some(0) => return Err(BuildError::new("shards", "shards must be at least 1")),
            Some(n) => n,
            None => (self.max_bytes / self.max_entry_bytes.saturating_mul(4).max(1)).clamp(1, MAX_SHARDS),
        };
        if self.max_bytes / shards < self.max_entry_bytes.min(self.max_bytes) / 2 {
            return Err(BuildError::new(
                "shards",
                format!(
                    "{shards} shards leave {} bytes each, too little for entries of up to {} bytes; use fewer shards",
                    self.max_bytes / shards,
                    self.max_entry_bytes
                ),
            ));
        }
        self.query_key.check().map_err(|e| BuildError::new("query_key", e))?;
        let mut vary_on: Vec<http::HeaderName> = Vec::with_capacity(self.vary_on.len());
        for name in &self.vary_on {
            let parsed = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::new("vary_on", format!("vary_on: {name:?} is not a header name")))?;
            if !vary_on.contains(&parsed) {
                vary_on.push(parsed);
            }
        }
        let exclude = if self.exclude.is_empty() {
            None
        } else {
            Some(regex::RegexSet::new(&self.exclude).map_err(BuildError::regex)?)
        };
        let rules = Rules {
            mode: self.mode,
            authorization: self.authorization.unwrap_or(match self.mode {
                CacheMode::Private => AuthorizationPolicy::Bypass,
                CacheMode::Shared => AuthorizationPolicy::Rfc,
            }),
            set_cookie: self.set_cookie,
            exclude,
            predicate: self.predicate.clone(),
        };
        Ok(Cache::from_builder(self, rules, shards, vary_on.into_boxed_slice()))
    }
}
