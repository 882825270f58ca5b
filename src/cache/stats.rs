//! Cache counters: striped relaxed atomics, so threads hitting the cache at
//! once do not fight over one cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::store::{RemovalCause, Store};

/// A snapshot of the cache's counters and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered fresh from cache.
    pub hits: u64,
    /// Requests that went upstream for lack of a usable entry.
    pub misses: u64,
    /// Requests answered with a stale entry (max-stale, SWR, stale-if-error).
    pub stale: u64,
    /// Stale entries validated upstream with a 304.
    pub revalidated: u64,
    /// Requests that waited on another request's upstream call.
    pub coalesced: u64,
    /// Waiters that gave up on a slow leader and went upstream themselves.
    pub coalesce_timeouts: u64,
    /// Responses that could not be stored.
    pub not_storable: u64,
    /// Requests the cache stepped aside for (method, exclusions, ...).
    pub bypassed: u64,
    /// Background refreshes started (stale-while-revalidate).
    pub background_refreshes: u64,
    /// Evictions by cause, indexed by [`RemovalCause::index`].
    pub evictions: [u64; 5],
    /// Audits that found drift (should stay zero).
    pub audit_drift: u64,
    /// Bytes currently charged to the budget.
    pub bytes: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Entries currently stored.
    pub entries: u64,
    /// Bytes currently held by in-flight misses being buffered.
    pub inflight_bytes: u64,
}

impl CacheStats {
    /// Evictions for one cause.
    pub fn evictions(&self, cause: RemovalCause) -> u64 {
        self.evictions[cause.index()]
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
    pub(crate) revalidated: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) coalesce_timeouts: Counter,
    pub(crate) not_storable: Counter,
    pub(crate) bypassed: Counter,
    pub(crate) background_refreshes: Counter,
    pub(crate) audit_drift: Counter,
}

pub(crate) fn bump(counter: &Counter) {
    counter.add(1);
}

impl Counters {
    pub(crate) fn snapshot(&self, store: &Store, max_bytes: usize, inflight: usize) -> CacheStats {
        let get = Counter::get;
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            revalidated: get(&self.revalidated),
            coalesced: get(&self.coalesced),
            coalesce_timeouts: get(&self.coalesce_timeouts),
            not_storable: get(&self.not_storable),
            bypassed: get(&self.bypassed),
            background_refreshes: get(&self.background_refreshes),
            evictions: RemovalCause::ALL.map(|c| store.evictions(c)),
            audit_drift: get(&self.audit_drift),
            bytes: store.bytes() as u64,
            max_bytes: max_bytes as u64,
            entries: store.entries() as u64,
            inflight_bytes: inflight as u64,
        }
    }
}
