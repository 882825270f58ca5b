//! Invalidation inside the store: purging keys and tagged entries (soft,
//! marking them stale, or hard, removing them) and the dependency edges
//! that name what to purge next.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::entry::Entry;
use super::super::labels::Node;
use super::{Purge, RemovalCause, Removals, Removed, Store, UriKey, deps_cost, edge_cost, leaving, read, write};

impl Store {
    /// Purges every variant of the given keys.
    pub(crate) fn purge_keys(&self, keys: &[Arc<str>], mode: Purge) -> Removed {
        let mut total = Removed::default();
        for key in keys {
            let removed = match mode {
                Purge::Hard => self.remove_key(key, RemovalCause::Invalidated),
                Purge::Soft => {
                    let shard = read(&self.shards[self.index(key)]);
                    shard
                        .map
                        .peek(key)
                        .map_or_else(Removed::default, |g| mark(g.variants()))
                }
            };
            total.entries += removed.entries;
            total.bytes += removed.bytes;
        }
        total
    }

    /// Purges the variants carrying `tag`; returns what was purged and the
    /// keys it touched. Costs O(shards + entries with the tag).
    pub(crate) fn purge_tag(&self, tag: &str, mode: Purge) -> (Removed, Vec<Arc<str>>) {
        let mut total = Removed::default();
        let mut touched = Vec::new();
        for shard in &*self.shards {
            let (removed, keys) = {
                let mut shard = write(shard);
                let keys = shard.index.keys_with_tag(tag);
                if keys.is_empty() {
                    continue;
                }
                let mut removals = Removals::new();
                let mut marked = Removed::default();
                for key in &keys {
                    let Some(group) = shard.map.peek_mut(key.as_str()) else {
                        continue;
                    };
                    let has_tag = |e: &Entry| e.tags().iter().any(|t| &**t == tag);
                    match mode {
                        Purge::Soft => {
                            let m = mark(group.variants().filter(|e| has_tag(e)));
                            marked.entries += m.entries;
                            marked.bytes += m.bytes;
                        }
                        Purge::Hard => {
                            removals.extend(group.extract(key, |e| has_tag(e).then_some(RemovalCause::Invalidated)));
                            if group.is_empty() {
                                shard.pop_group(key.as_str());
                            }
                        }
                    }
                }
                let freed = self.debit(&mut shard, &removals);
                drop(shard);
                let mut removed = self.finish(removals, freed);
                removed.entries += marked.entries;
                removed.bytes += marked.bytes;
                (removed, keys)
            };
            total.entries += removed.entries;
            total.bytes += removed.bytes;
            touched.extend(keys.iter().map(UriKey::to_arc));
        }
        (total, touched)
    }

    /// Keys whose URI group depends on any of `nodes`: one read lock per
    /// shard, skipped quickly where no dependency is indexed.
    pub(crate) fn dependents_of(&self, nodes: &[Node]) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        for shard in &*self.shards {
            let shard = read(shard);
            if shard.index.has_dependencies() {
                for node in nodes {
                    out.extend(shard.index.dependents(node).iter().map(UriKey::to_arc));
                }
            }
        }
        out
    }

    /// Keys whose URI group depends on `node`.
    #[cfg(test)]
    pub(crate) fn dependents(&self, node: &Node) -> Vec<Arc<str>> {
        self.dependents_of(std::slice::from_ref(node))
    }

    /// Records that the stored URI `key` depends on `node`; `false` when
    /// nothing is stored under `key` (the index only holds live entries).
    /// The edge is charged to the budget, evicting least recently used URIs
    /// to make room. A URI that cannot fit with the edge at all is removed
    /// rather than kept without it, so an invalidation of `node` can never
    /// miss it.
    pub(crate) fn add_dependency(&self, key: &str, node: Node) -> bool {
        let mut removals = Removals::new();
        let mut freed = 0;
        {
            let mut shard = self.shard(key);
            let Some(group) = shard.map.peek(key) else {
                return false;
            };
            if group.is_empty() {
                return false;
            }
            if group.has_dep(&node) {
                return true;
            }
            let cost = edge_cost(&node);
            let group_bytes = deps_cost(group) + group.variants().map(|e| e.size()).sum::<usize>();
            let Some((key, mut group)) = shard.map.pop_entry(key) else {
                return false;
            };
            if group_bytes + cost > self.shard_budget {
                shard.forget(key.as_str(), &group);
                removals.extend(leaving(&key, group.into_variants(), RemovalCause::Capacity));
                freed += self.debit(&mut shard, &removals);
            } else {
                freed += self.make_room(&mut shard, cost, None, &mut removals);
                shard.bytes += cost;
                self.bytes.fetch_add(cost, Ordering::Relaxed);
                shard.index.add_dependency(&key, node.clone());
                group.push_dep(node);
                shard.map.push(key, group);
            }
        }
        self.finish(removals, freed);
        true
    }
}

/// Soft-purges entries: marks them stale; counts those not marked before.
fn mark(entries: impl Iterator<Item = impl std::ops::Deref<Target = Entry>>) -> Removed {
    let mut marked = Removed::default();
    for entry in entries {
        if entry.purge() {
            marked.entries += 1;
            marked.bytes += entry.size();
        }
    }
    marked
}
