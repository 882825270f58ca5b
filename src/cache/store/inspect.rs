//! Read-only views of the store: its keys shard by shard (for chunked
//! scans), entry metadata, index sizes, and the audit that recomputes the
//! accounting from the live entries.

use std::sync::Arc;

use super::super::entry::{EntryMeta, Keep, SharedEntry};
use super::super::labels::Node;
use super::{Audit, Store, UriKey, deps_cost, read, write};

impl Store {
    /// Number of shards, for chunked scans.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The keys stored in one shard (a snapshot), for chunked scans.
    pub(crate) fn shard_keys(&self, shard: usize) -> Vec<UriKey> {
        read(&self.shards[shard]).map.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Metadata of the variants stored under `key`.
    pub(crate) fn key_metadata(&self, key: &str) -> Vec<EntryMeta> {
        let shard = read(&self.shards[self.index(key)]);
        let key: Arc<str> = key.into();
        shard
            .map
            .peek(&key)
            .map(|g| g.variants().map(|e| e.meta(key.clone(), self.keep)).collect())
            .unwrap_or_default()
    }

    /// Distinct tags and dependency nodes indexed, over all shards.
    pub(crate) fn index_sizes(&self) -> (usize, usize) {
        self.shards
            .iter()
            .map(|s| read(s).index.sizes())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// How long entries are kept past their usable life.
    pub(crate) fn keep(&self) -> Keep {
        self.keep
    }

    /// Metadata of every stored entry (a snapshot; takes each shard lock in turn).
    pub(crate) fn metadata(&self) -> Vec<EntryMeta> {
        let mut out = Vec::with_capacity(self.entries());
        for shard in &*self.shards {
            let shard = read(shard);
            out.extend(
                shard
                    .map
                    .iter()
                    .flat_map(|(k, g)| g.variants().map(|e| e.meta(k.to_arc(), self.keep))),
            );
        }
        out
    }

    /// Every stored URI with its variants and dependency edges, least
    /// recently used first within each shard (a snapshot of shared
    /// references; takes each shard lock in turn), for `Cache::save`.
    pub(crate) fn groups(&self) -> Vec<(UriKey, Vec<SharedEntry>, Vec<Node>)> {
        let mut out = Vec::with_capacity(self.entries());
        for shard in &*self.shards {
            let shard = read(shard);
            let start = out.len();
            out.extend(shard.map.iter().map(|(k, g)| {
                let variants = g.variants().map(|e| triomphe::ArcBorrow::clone_arc(&e)).collect();
                (k.clone(), variants, g.deps().to_vec())
            }));
            out[start..].reverse();
        }
        out
    }

    /// Recomputes the accounting from the live entries, with every shard
    /// locked at once (in index order) so the snapshot is consistent.
    pub(crate) fn audit(&self) -> Audit {
        let guards: Vec<_> = self.shards.iter().map(write).collect();
        let mut audit = Audit::default();
        let (mut counted_bytes, mut counted_entries) = (0usize, 0usize);
        for shard in &guards {
            let (mut bytes, mut entries) = (0usize, 0usize);
            audit.orphaned_keys += shard
                .index
                .mismatches(shard.map.iter().map(|(k, g)| (k, g.variants(), g.deps())));
            for (_, group) in shard.map.iter() {
                if group.is_empty() {
                    audit.orphaned_keys += 1;
                }
                bytes += group.variants().map(|e| e.size()).sum::<usize>() + deps_cost(group);
                entries += group.variants().len();
            }
            audit.bytes += bytes;
            audit.entries += entries;
            counted_bytes += shard.bytes;
            counted_entries += shard.entries;
        }
        // Shard counters and the global atomics are both checked.
        audit.byte_drift = counted_bytes as i64 - audit.bytes as i64 + (self.bytes() as i64 - counted_bytes as i64);
        audit.entry_drift =
            counted_entries as i64 - audit.entries as i64 + (self.entries() as i64 - counted_entries as i64);
        audit
    }
}
