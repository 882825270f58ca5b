//! [`Seen`]: which request URIs, as spelled, may have a stored response: a
//! fixed set of bits indexed by a hash of the URI, so that the stack's edge
//! (`stack::hit_first`) skips looking up a request that cannot be a hit.
//!
//! It may say yes wrongly (two URIs on one bit; an entry since evicted or
//! invalidated): the lookup that follows then finds nothing and costs what
//! it did before. It may say no wrongly (a response stored under another
//! spelling of the same key, or put in by hand): the request goes the whole
//! way and the cache's own call answers the hit. Either way the answer is
//! the same; only its cost differs. Bits are never cleared.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Uri;

/// The set's size: 2^16 bits (8 KiB a cache). A set with a few thousand
/// URIs marked turns few misses into lookups; past tens of thousands most
/// bits are set and nearly every request looks first, as with no set.
const BITS: usize = 1 << 16;

/// See the module's docs.
pub(crate) struct Seen {
    words: Box<[AtomicU64]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            words: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen").finish_non_exhaustive()
    }
}

impl Seen {
    /// The word and bit of `uri`: its authority and path with query, as
    /// spelled (a scheme alone telling two URIs apart is rare, and costs
    /// no more than a lookup).
    fn bit(&self, uri: &Uri) -> (usize, u64) {
        let authority = uri.authority().map_or("", http::uri::Authority::as_str);
        let path = uri.path_and_query().map_or("", http::uri::PathAndQuery::as_str);
        let hash = self.hasher.hash_one((authority, path));
        // `BITS` fits in a `u64` and the index is below it.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash % BITS as u64) as usize;
        (index / 64, 1 << (index % 64))
    }

    /// Notes that a response to `uri` was stored.
    pub(crate) fn mark(&self, uri: &Uri) {
        let (word, bit) = self.bit(uri);
        let word = &self.words[word];
        // Read first: a hot URI is marked already, and a read of a shared
        // line does not take it from the other cores as a write would.
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Whether a response to `uri` may be stored.
    #[cfg_attr(not(feature = "stack"), allow(dead_code))]
    pub(crate) fn may_hold(&self, uri: &Uri) -> bool {
        let (word, bit) = self.bit(uri);
        self.words[word].load(Ordering::Relaxed) & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_uri_may_be_held_and_most_others_not() {
        let seen = Seen::default();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(!seen.may_hold(&uri("http://a.test/x?y=1")));
        seen.mark(&uri("http://a.test/x?y=1"));
        seen.mark(&uri("http://a.test/x?y=1"));
        assert!(seen.may_hold(&uri("http://a.test/x?y=1")));
        assert!(seen.may_hold(&uri("https://a.test/x?y=1")), "the scheme is not hashed");
        // Another spelling is another bit (the whole way answers it).
        let others = [
            "http://A.test/x?y=1",
            "http://a.test/x?y=2",
            "http://a.test/x",
            "/x?y=1",
        ];
        let held = others.iter().filter(|o| seen.may_hold(&uri(o))).count();
        assert!(held <= 1, "{held} of {} others share the bit", others.len());
        let ones: u32 = seen.words.iter().map(|w| w.load(Ordering::Relaxed).count_ones()).sum();
        assert_eq!(ones, 1);
    }
}
