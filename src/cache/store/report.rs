//! What the store reports and takes from its callers: why an entry left,
//! what a removal freed, an audit of the accounting, and how to purge.

use std::sync::Arc;

use super::super::entry::EntryMeta;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its freshness and stale windows ran out.
    Expired,
    /// Evicted to make room under `max_bytes` or the variant limit.
    Capacity,
    /// Removed by an invalidation.
    Invalidated,
    /// Replaced by a newer response for the same key and variant.
    Replaced,
    /// Evicted by the memory-pressure watcher.
    Pressure,
}

impl RemovalCause {
    /// Every cause, in the order of [`RemovalCause::index`].
    pub const ALL: [RemovalCause; 5] = [
        RemovalCause::Expired,
        RemovalCause::Capacity,
        RemovalCause::Invalidated,
        RemovalCause::Replaced,
        RemovalCause::Pressure,
    ];

    /// A stable index into per-cause counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Expired => "expired",
            RemovalCause::Capacity => "capacity",
            RemovalCause::Invalidated => "invalidated",
            RemovalCause::Replaced => "replaced",
            RemovalCause::Pressure => "pressure",
        }
    }
}

/// Called for every entry that leaves the cache, outside any lock.
pub type EvictionListener = Arc<dyn Fn(&EntryMeta, RemovalCause) + Send + Sync>;

/// What an operation removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Entries removed.
    pub entries: usize,
    /// Bytes released from the budget (the entries and the dependency
    /// edges of URIs that left with them).
    pub bytes: usize,
}

/// Result of [`Cache::audit`](crate::cache::Cache::audit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audit {
    /// Entries found by walking the live entries.
    pub entries: usize,
    /// Bytes found by walking the live entries and their URIs' dependency edges.
    pub bytes: usize,
    /// Counted bytes minus walked bytes (zero when the accounting is right).
    pub byte_drift: i64,
    /// Counted entries minus walked entries.
    pub entry_drift: i64,
    /// Index keys that hold no entry (empty variant groups, stale flights).
    pub orphaned_keys: usize,
}

impl Audit {
    /// Whether the accounting matched the live entries exactly.
    pub fn is_clean(&self) -> bool {
        self.byte_drift == 0 && self.entry_drift == 0 && self.orphaned_keys == 0
    }
}

/// Soft purge marks entries stale (kept for revalidation and stale serving
/// where allowed); hard purge removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purge {
    /// Mark stale.
    Soft,
    /// Remove.
    #[default]
    Hard,
}
