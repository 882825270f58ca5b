//! What an invalidation did.

use std::time::Duration;

use crate::cache::{InvalidationKind, Purge};

/// The outcome of one invalidation call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidationReport {
    /// The strategy that started it.
    pub kind: InvalidationKind,
    /// Hard (removed) or soft (marked stale).
    pub mode: Purge,
    /// Entries removed or marked.
    pub entries: usize,
    /// Bytes of those entries.
    pub bytes: usize,
    /// Deepest dependency level reached (0: no cascade).
    pub depth: usize,
    /// Keys and tags visited (each once, so cycles end).
    pub nodes: usize,
    /// Keys examined by a pattern or predicate scan.
    pub scanned: usize,
    /// The new version, for a namespace bump (its entries go lazily).
    pub version: Option<u64>,
    /// Wall time taken.
    pub elapsed: Duration,
}

impl InvalidationReport {
    pub(crate) fn new(kind: InvalidationKind, mode: Purge) -> Self {
        InvalidationReport {
            kind,
            mode,
            entries: 0,
            bytes: 0,
            depth: 0,
            nodes: 0,
            scanned: 0,
            version: None,
            elapsed: Duration::ZERO,
        }
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &InvalidationReport) {
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.depth = self.depth.max(other.depth);
        self.nodes += other.nodes;
        self.scanned += other.scanned;
        self.version = other.version.or(self.version);
        self.elapsed += other.elapsed;
    }
}
