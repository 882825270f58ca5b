//! Invalidation counters for work in flight: a response fetched before an
//! invalidation must not be stored after it, nor shared with a request made
//! after it.
//!
//! Each key falls in one of [`STRIPES`] counters. Invalidating a key bumps
//! its stripe; an invalidation whose keys cannot be known in advance (a tag,
//! a pattern, a version, a predicate: the response in flight has not said
//! its tags yet) bumps them all. A fetch takes a [`Stamp`] of its key's
//! stripe when it starts and stores its response only if the stripe still
//! reads the same afterwards. A bump of a stripe-mate costs a needless
//! refetch, never a stale answer.
//!
//! The order makes it exact: an invalidation bumps first and removes stored
//! entries second; a fetch inserts first and checks its stamp second, taking
//! back what it inserted if the stamp moved. Either the fetch sees the bump,
//! or the removal sees the inserted entry.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters per cache: enough that unrelated keys rarely share one, few
/// enough that bumping them all (a tag invalidation) is a few microseconds.
pub(crate) const STRIPES: usize = 256;

/// A key's stripe, and its count as a fetch found it when it started (the
/// stripe is kept so a check hashes the key no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    stripe: usize,
    seen: u64,
}

/// The invalidation counters of one cache.
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }
}

impl std::fmt::Debug for Epochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epochs").field("stripes", &self.stripes.len()).finish()
    }
}

impl Epochs {
    fn index(&self, key: &str) -> usize {
        let hash = self.hasher.hash_one(key);
        // In range: the remainder of a division by the length.
        (hash % self.stripes.len() as u64) as usize
    }

    /// The stamp a fetch of `key` starting now carries.
    pub(crate) fn stamp(&self, key: &str) -> Stamp {
        let stripe = self.index(key);
        Stamp {
            stripe,
            seen: self.stripes[stripe].load(Ordering::SeqCst),
        }
    }

    /// Every stripe's count now, for work whose keys come later (a load
    /// from a file): see [`Epochs::stamp_at`].
    pub(crate) fn counts(&self) -> Box<[u64]> {
        self.stripes.iter().map(|s| s.load(Ordering::SeqCst)).collect()
    }

    /// The stamp `key` had when `counts` were taken.
    pub(crate) fn stamp_at(&self, counts: &[u64], key: &str) -> Stamp {
        let stripe = self.index(key);
        Stamp {
            stripe,
            seen: counts.get(stripe).copied().unwrap_or(u64::MAX),
        }
    }

    /// Whether no invalidation that could cover the stamped key happened
    /// since `stamp` was taken.
    pub(crate) fn is_current(&self, stamp: Stamp) -> bool {
        self.stripes[stamp.stripe].load(Ordering::SeqCst) == stamp.seen
    }

    /// `key` is being invalidated: fetches of it in flight are outdated.
    pub(crate) fn invalidate(&self, key: &str) {
        self.stripes[self.index(key)].fetch_add(1, Ordering::SeqCst);
    }

    /// Keys unknown in advance are being invalidated: every fetch in flight
    /// is outdated.
    pub(crate) fn invalidate_all(&self) {
        for stripe in &*self.stripes {
            stripe.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_outlives_only_unrelated_invalidations() {
        let epochs = Epochs::default();
        let a = epochs.stamp("http://a.test/x");
        assert!(epochs.is_current(a));
        // A key in another stripe leaves it current.
        // 1,000 keys over 256 stripes: one is elsewhere.
        let other = (0..1000)
            .map(|i| format!("http://b.test/{i}"))
            .find(|k| epochs.index(k) != epochs.index("http://a.test/x"))
            .unwrap();
        epochs.invalidate(&other);
        assert!(epochs.is_current(a));
        epochs.invalidate("http://a.test/x");
        assert!(!epochs.is_current(a), "its own key");
        let b = epochs.stamp("http://a.test/x");
        epochs.invalidate_all();
        assert!(!epochs.is_current(b), "everything");
        assert!(epochs.is_current(epochs.stamp("http://a.test/x")));
    }
}
