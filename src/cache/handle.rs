//! `Cache`: the cheap-to-clone handle over the store, shared by every
//! `CacheLayer` built from it and by the invalidation handle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::request;
use tokio::time::Instant;

use super::builder::CacheBuilder;
use super::coalesce::Flights;
use super::entry::{EntryMeta, Keep};
use super::freshness::Lifetimes;
use super::key;
use super::labels::Node;
use super::mode::RequestCacheMode;
use super::policy::Rules;
use super::pressure::MemoryPressure;
use super::query::QueryKey;
use super::stats::{CacheStats, Counters};
use super::status::StatusExtension;
use super::store::{Audit, RemovalCause, Removed, Store};
use super::ttl::TtlPolicy;

/// A memory-bounded HTTP cache. Clone it freely: clones share one store.
///
/// ```
/// use std::time::Duration;
/// use tower_optimizer::cache::Cache;
///
/// let cache = Cache::builder().max_bytes(1 << 20).default_ttl(Duration::from_secs(30)).build().unwrap();
/// assert_eq!(cache.stats().entries, 0);
/// assert!(Cache::builder().exclude("(").build().is_err(), "a bad pattern is a build error");
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) flights: Arc<Flights>,
    pub(crate) counters: Counters,
    pub(crate) rules: Rules,
    /// Request headers every entry is keyed by, as if named in `Vary`.
    pub(crate) vary_on: Box<[http::HeaderName]>,
    /// Which query parameters keys keep.
    pub(crate) query_key: QueryKey,
    pub(crate) lifetimes: Lifetimes,
    /// See [`CacheBuilder::ttl_with`](super::CacheBuilder::ttl_with).
    pub(crate) ttl: Option<Arc<dyn TtlPolicy>>,
    pub(crate) max_bytes: usize,
    pub(crate) max_entry_bytes: usize,
    pub(crate) max_inflight_bytes: usize,
    /// See [`CacheBuilder::stream_above`](super::CacheBuilder::stream_above).
    pub(crate) stream_above: usize,
    pub(crate) inflight_bytes: AtomicUsize,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) lock_timeout: Duration,
    /// See [`CacheBuilder::remember_uncacheable`](super::CacheBuilder::remember_uncacheable).
    pub(crate) remember_uncacheable: Option<Duration>,
    /// See [`CacheBuilder::status_extension`](super::CacheBuilder::status_extension).
    pub(crate) status_extension: StatusExtension,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) audit_interval: Option<Duration>,
    pub(crate) pressure: Option<MemoryPressure>,
    background_started: AtomicBool,
    /// Which request URIs may have a stored response (`seen.rs`).
    pub(crate) seen: super::seen::Seen,
    /// Namespace version counters (see `VersionStamp`), shared by every
    /// `Invalidator` over this cache.
    #[cfg_attr(not(feature = "invalidation"), allow(dead_code))]
    pub(crate) namespaces: Mutex<HashMap<Arc<str>, Arc<AtomicU64>>>,
    /// Tag -> dependent tags, declared with `Invalidator::depends_on`.
    #[cfg_attr(not(feature = "invalidation"), allow(dead_code))]
    pub(crate) tag_dependents: Mutex<HashMap<Node, HashSet<Arc<str>>>>,
    /// Held by each background task, so tests can see them stop.
    pub(crate) task_token: Arc<()>,
}

impl Cache {
    /// Starts a builder with the documented defaults.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) fn from_builder(
        b: CacheBuilder,
        rules: Rules,
        shards: usize,
        vary_on: Box<[http::HeaderName]>,
    ) -> Cache {
        let cache = Cache {
            inner: Arc::new(Inner {
                store: Store::new(
                    b.max_bytes,
                    shards,
                    b.max_variants,
                    Keep::new(b.stale_retention, b.stale_if_error),
                    b.listener,
                ),
                flights: Arc::default(),
                counters: Counters::default(),
                rules,
                vary_on,
                query_key: b.query_key,
                lifetimes: b.lifetimes,
                ttl: b.ttl,
                max_bytes: b.max_bytes,
                max_entry_bytes: b.max_entry_bytes,
                max_inflight_bytes: b.max_inflight_bytes.unwrap_or(b.max_bytes / 4),
                stream_above: b.stream_above,
                inflight_bytes: AtomicUsize::new(0),
                stale_if_error: b.stale_if_error,
                lock_timeout: b.lock_timeout,
                remember_uncacheable: b.remember_uncacheable,
                status_extension: b.status_extension,
                sweep_interval: b.sweep_interval,
                audit_interval: b.audit_interval,
                pressure: b.pressure,
                background_started: AtomicBool::new(false),
                seen: super::seen::Seen::default(),
                namespaces: Mutex::default(),
                tag_dependents: Mutex::default(),
                task_token: Arc::new(()),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            cache.ensure_background();
        }
        cache
    }

    /// Starts the sweeper and pressure watcher once, inside a runtime.
    pub(crate) fn ensure_background(&self) {
        if self.inner.background_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.background_started.swap(true, Ordering::AcqRel) {
            return;
        }
        super::background::spawn(&handle, Arc::downgrade(&self.inner), &self.inner);
    }

    /// Counters and size right now.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        inner.counters.snapshot(
            &inner.store,
            inner.max_bytes,
            inner.inflight_bytes.load(Ordering::Relaxed),
        )
    }

    /// Recomputes the byte and entry accounting from the live entries and
    /// indexes and reports any drift. Clean after any sequence of operations
    /// once in-flight requests have finished.
    pub fn audit(&self) -> Audit {
        let mut audit = self.inner.store.audit();
        audit.orphaned_keys += self.inner.flights.orphans();
        audit
    }

    /// The primary key the cache uses for a request: its normalised
    /// absolute URI, its query as [`CacheBuilder::query_key`] keeps it.
    /// `None` for a request that names no host.
    ///
    /// [`CacheBuilder::query_key`]: super::CacheBuilder::query_key
    pub fn key_for(&self, parts: &request::Parts) -> Option<String> {
        key::primary_key(&parts.uri, &parts.headers, &self.inner.query_key)
    }

    /// The primary key for an absolute URI (see [`Cache::key_for`]).
    pub fn key_for_uri(&self, uri: &http::Uri) -> Option<String> {
        key::primary_key(uri, &http::HeaderMap::new(), &self.inner.query_key)
    }

    /// Which query parameters this cache's keys keep.
    #[cfg(feature = "invalidation")]
    pub(crate) fn query_key(&self) -> &QueryKey {
        &self.inner.query_key
    }

    /// Whether a stored response would answer `request` if its upstream
    /// failed now (fresh, or stale within `stale-if-error`): failover uses it
    /// to leave such requests to the cache. Never for a request whose
    /// [`RequestCacheMode`] is `NoStore` or `Reload`.
    pub fn can_serve_on_error<B>(&self, request: &http::Request<B>) -> bool {
        if !RequestCacheMode::of(request.extensions()).may_use_stored() {
            return false;
        }
        let inner = &self.inner;
        let headers = request.headers();
        let Some(key) = key::primary_key(request.uri(), headers, &inner.query_key) else {
            return false;
        };
        if inner.rules.check_request(request.method(), headers, &key).is_err() {
            return false;
        }
        let now = Instant::now();
        inner
            .store
            .get_with(
                &key,
                |e| key::matches(e.secondary(), headers),
                now,
                |e, at| e.freshness_at(at, now).may_serve_on_error(now, inner.stale_if_error),
            )
            .unwrap_or(false)
    }

    /// Removes every variant stored under `key` (see [`Cache::key_for`]).
    /// A response for `key` in flight now is not stored when it arrives.
    pub fn remove_key(&self, key: &str) -> Removed {
        self.inner.flights.epochs().invalidate(key);
        self.inner.store.remove_key(key, RemovalCause::Invalidated)
    }

    /// Removes every entry whose metadata matches `predicate`, shard by
    /// shard. With cause [`RemovalCause::Invalidated`], no response in
    /// flight now is stored when it arrives (its metadata is not known yet).
    pub fn remove_where(&self, mut predicate: impl FnMut(&EntryMeta) -> bool, cause: RemovalCause) -> Removed {
        if cause == RemovalCause::Invalidated {
            self.inner.flights.epochs().invalidate_all();
        }
        let keep = self.inner.store.keep();
        self.inner
            .store
            .remove_where(|key, e| predicate(&e.meta(key.to_arc(), keep)).then_some(cause))
    }

    /// Removes everything; no response in flight now is stored when it
    /// arrives.
    pub fn clear(&self) -> Removed {
        self.inner.flights.epochs().invalidate_all();
        self.inner.store.remove_where(|_, _| Some(RemovalCause::Invalidated))
    }

    /// Drops expired entries now (the background sweep does this periodically).
    pub fn sweep(&self) -> Removed {
        self.inner.store.sweep(Instant::now())
    }

    /// Evicts least recently used entries until `bytes` are freed.
    pub fn evict_bytes(&self, bytes: usize, cause: RemovalCause) -> Removed {
        self.inner.store.evict_bytes(bytes, cause)
    }

    /// Metadata of every stored entry (a snapshot).
    pub fn entries(&self) -> Vec<EntryMeta> {
        self.inner.store.metadata()
    }

    /// Whether `other` is a handle to the same cache.
    pub fn same_as(&self, other: &Cache) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Keys with a request in flight (coalescing table size).
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// A weak token held by each background task while it runs.
    #[doc(hidden)]
    pub fn background_token(&self) -> Weak<()> {
        Arc::downgrade(&self.inner.task_token)
    }
}

/// Bytes reserved from the in-flight budget while a miss is buffered,
/// released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    bytes: usize,
}

impl Reservation {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Reservation { inner, bytes: 0 }
    }

    /// Reserves `more` bytes; `false` if the budget would be exceeded.
    pub(crate) fn grow(&mut self, more: usize) -> bool {
        let counter = &self.inner.inflight_bytes;
        let limit = self.inner.max_inflight_bytes;
        let result = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(more).filter(|&total| total <= limit)
        });
        if result.is_ok() {
            self.bytes += more;
        }
        result.is_ok()
    }

    /// Reserves `more` bytes even past the budget: memory held already,
    /// which the in-flight figure must not hide.
    pub(crate) fn force_grow(&mut self, more: usize) {
        self.inner.inflight_bytes.fetch_add(more, Ordering::AcqRel);
        self.bytes += more;
    }

    /// Bytes reserved.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.inflight_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
