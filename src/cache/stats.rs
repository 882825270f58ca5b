//! Cache counters: striped relaxed atomics, so threads hitting the cache at
//! once do not fight over one cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::store::{RemovalCause, Store};

/// A snapshot of the cache's counters and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CacheStats {
    /// Requests answered fresh from cache.
    pub hits: u64,
    /// Requests that went upstream for lack of a usable entry.
    pub misses: u64,
    /// Requests answered with a stale entry (max-stale, SWR, stale-if-error).
    pub stale: u64,
    /// Of `stale`, the answers that stood in for an upstream error or
    /// timeout (stale-if-error): each one is an upstream failure the caller
    /// did not see, so a steady count means an outage is being hidden.
    pub stale_on_error: u64,
    /// Stale entries validated upstream with a 304.
    pub revalidated: u64,
    /// 304s the cache gave callers whose own `If-None-Match` or
    /// `If-Modified-Since` matched the stored response it answered from
    /// (RFC 9111 §4.3.2), each also counted where it came from (`hits`,
    /// `stale`, `misses`).
    pub not_modified: u64,
    /// Requests that waited on another request's upstream call.
    pub coalesced: u64,
    /// Waiters that gave up on a slow leader and went upstream themselves.
    pub coalesce_timeouts: u64,
    /// Responses that could not be stored.
    pub not_storable: u64,
    /// Storable misses that reached their caller as they arrived (see
    /// `CacheBuilder::stream_above`), instead of once whole.
    pub streamed: u64,
    /// Requests the cache stepped aside for (method, exclusions, ...).
    pub bypassed: u64,
    /// Background refreshes started (stale-while-revalidate).
    pub background_refreshes: u64,
    /// Evictions by cause, indexed by [`RemovalCause::index`] (serialised
    /// as an object keyed by [`RemovalCause::as_str`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "by_cause"))]
    pub evictions: [u64; 5],
    /// Bytes the evicted entries were charged, by cause, indexed by
    /// [`RemovalCause::index`] (serialised as `evictions` is).
    #[cfg_attr(feature = "serde", serde(serialize_with = "by_cause"))]
    pub evicted_bytes: [u64; 5],
    /// Entries invalidated (removed or marked), by strategy, indexed by
    /// [`InvalidationKind::index`] (serialised as an object keyed by
    /// [`InvalidationKind::as_str`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "by_kind"))]
    pub invalidations: [u64; InvalidationKind::ALL.len()],
    /// Audits that found drift (should stay zero).
    pub audit_drift: u64,
    /// Bytes currently charged to the budget: the entries and the
    /// dependency edges declared between them.
    pub bytes: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Entries currently stored.
    pub entries: u64,
    /// Distinct tags in the tag index.
    pub indexed_tags: u64,
    /// Distinct dependency nodes in the dependency index.
    pub indexed_dependencies: u64,
    /// Bytes currently held by in-flight misses: bodies being read in to be
    /// stored, and bodies shared as they arrive, until their last reader
    /// is done.
    pub inflight_bytes: u64,
}

/// Counts per removal cause as one JSON object keyed by cause.
#[cfg(feature = "serde")]
fn by_cause<S: serde::Serializer>(counts: &[u64; 5], serializer: S) -> Result<S::Ok, S::Error> {
    crate::json::named(&RemovalCause::ALL.map(RemovalCause::as_str), counts, serializer)
}

/// Counts per invalidation strategy as one JSON object keyed by strategy.
#[cfg(feature = "serde")]
fn by_kind<S: serde::Serializer>(
    counts: &[u64; InvalidationKind::ALL.len()],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    crate::json::named(&InvalidationKind::ALL.map(InvalidationKind::as_str), counts, serializer)
}

/// The ways entries get invalidated, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidationKind {
    /// By key or URI.
    Key,
    /// By tag (including RFC 9875 groups).
    Tag,
    /// By regex pattern.
    Pattern,
    /// By cascading through dependencies.
    Dependency,
    /// By a namespace version bump (counted when the stale entry is dropped).
    Version,
    /// By a predicate over entry metadata.
    Conditional,
    /// By age.
    Time,
    /// By a user strategy.
    Custom,
    /// By HTTP semantics: unsafe methods (RFC 9111 §4.4, counted by the
    /// cache layer alone too), `Cache-Group-Invalidation` (RFC 9875), and
    /// stored responses an answer showed out of date (a HEAD whose
    /// validators differ, §4.3.5; a 304 naming another validator, §4.3.4).
    Http,
}

impl InvalidationKind {
    /// Every kind, in index order.
    pub const ALL: [InvalidationKind; 9] = [
        InvalidationKind::Key,
        InvalidationKind::Tag,
        InvalidationKind::Pattern,
        InvalidationKind::Dependency,
        InvalidationKind::Version,
        InvalidationKind::Conditional,
        InvalidationKind::Time,
        InvalidationKind::Custom,
        InvalidationKind::Http,
    ];

    /// A stable index into per-kind counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A lowercase name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvalidationKind::Key => "key",
            InvalidationKind::Tag => "tag",
            InvalidationKind::Pattern => "pattern",
            InvalidationKind::Dependency => "dependency",
            InvalidationKind::Version => "version",
            InvalidationKind::Conditional => "conditional",
            InvalidationKind::Time => "time",
            InvalidationKind::Custom => "custom",
            InvalidationKind::Http => "http",
        }
    }
}

impl CacheStats {
    /// Entries invalidated by one strategy.
    pub fn invalidations(&self, kind: InvalidationKind) -> u64 {
        self.invalidations[kind.index()]
    }

    /// Evictions for one cause.
    pub fn evictions(&self, cause: RemovalCause) -> u64 {
        self.evictions[cause.index()]
    }

    /// Bytes the entries evicted for one cause were charged.
    pub fn evicted_bytes(&self, cause: RemovalCause) -> u64 {
        self.evicted_bytes[cause.index()]
    }

    /// Hits (fresh and stale) over all requests that could use the cache.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.stale + self.revalidated;
        let total = served + self.misses;
        if total == 0 { 0.0 } else { served as f64 / total as f64 }
    }
}

/// Stripes per counter: enough that a few worker threads rarely share one.
const STRIPES: usize = 8;

/// A counter one cache line per stripe; each thread adds to its own stripe.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    stripes: [Stripe; STRIPES],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        if index.get() == usize::MAX {
            index.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        index.get()
    })
}

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.stripes[stripe_index()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.stripes.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) stale: Counter,
    pub(crate) stale_on_error: Counter,
    pub(crate) revalidated: Counter,
    pub(crate) not_modified: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) coalesce_timeouts: Counter,
    pub(crate) not_storable: Counter,
    pub(crate) streamed: Counter,
    pub(crate) bypassed: Counter,
    pub(crate) background_refreshes: Counter,
    pub(crate) audit_drift: Counter,
    pub(crate) invalidations: [Counter; InvalidationKind::ALL.len()],
}

pub(crate) fn bump(counter: &Counter) {
    counter.add(1);
}

impl Counters {
    /// Counts `entries` invalidated (removed, or newly marked stale) by
    /// `kind`: in the stats and, where the `metrics` facade is built in, as
    /// `tower_optimizer.cache.invalidations`.
    pub(crate) fn invalidated(&self, kind: InvalidationKind, entries: usize) {
        if entries == 0 {
            return;
        }
        self.invalidations[kind.index()].add(entries as u64);
        #[cfg(feature = "invalidation")]
        {
            const INVALIDATIONS: &str = "tower_optimizer.cache.invalidations";
            // Help text for exporters, given as it is counted: a recorder
            // installed after the cache was built still gets it.
            metrics::describe_counter!(INVALIDATIONS, "Entries invalidated, by strategy.");
            metrics::counter!(INVALIDATIONS, "strategy" => kind.as_str()).increment(entries as u64);
        }
    }

    pub(crate) fn snapshot(&self, store: &Store, max_bytes: usize, inflight: usize) -> CacheStats {
        let get = Counter::get;
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            stale_on_error: get(&self.stale_on_error),
            revalidated: get(&self.revalidated),
            not_modified: get(&self.not_modified),
            coalesced: get(&self.coalesced),
            coalesce_timeouts: get(&self.coalesce_timeouts),
            not_storable: get(&self.not_storable),
            streamed: get(&self.streamed),
            bypassed: get(&self.bypassed),
            background_refreshes: get(&self.background_refreshes),
            evictions: RemovalCause::ALL.map(|c| store.evictions(c)),
            evicted_bytes: RemovalCause::ALL.map(|c| store.evicted_bytes(c)),
            audit_drift: get(&self.audit_drift),
            invalidations: std::array::from_fn(|i| {
                let extra = if i == InvalidationKind::Version.index() {
                    store.version_drops()
                } else {
                    0
                };
                self.invalidations[i].get() + extra
            }),
            bytes: store.bytes() as u64,
            max_bytes: max_bytes as u64,
            entries: store.entries() as u64,
            indexed_tags: store.index_sizes().0 as u64,
            indexed_dependencies: store.index_sizes().1 as u64,
            inflight_bytes: inflight as u64,
        }
    }
}
