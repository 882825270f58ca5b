//! Per-shard invalidation indexes: tag -> keys and dependency -> dependent
//! keys. They live inside each shard and change under its write lock, in the
//! same critical section as the entries, so they can never disagree with
//! the store (every removal path goes through `Store::debit`).
// The invalidation entry points are called only with the `invalidation` feature.
#![cfg_attr(not(feature = "invalidation"), allow(dead_code))]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::entry::Entry;
use super::labels::Node;

#[derive(Default)]
pub(crate) struct ShardIndex {
    /// Tag -> keys with at least one variant carrying it, with the count.
    tags: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    /// Dependency -> keys (URI groups) in this shard that depend on it.
    deps: HashMap<Node, HashSet<Arc<str>>>,
}

impl ShardIndex {
    pub(crate) fn add_entry(&mut self, key: &Arc<str>, entry: &Entry) {
        for tag in entry.tags() {
            *self
                .tags
                .entry(tag.clone())
                .or_default()
                .entry(key.clone())
                .or_default() += 1;
        }
    }

    pub(crate) fn remove_entry(&mut self, key: &str, entry: &Entry) {
        for tag in entry.tags() {
            let Some(keys) = self.tags.get_mut(tag) else { continue };
            if let Some(count) = keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(key);
                }
            }
            if keys.is_empty() {
                self.tags.remove(tag);
            }
        }
    }

    /// Records that the URI group `key` depends on `node`; `false` if known.
    pub(crate) fn add_dependency(&mut self, key: &Arc<str>, node: Node) -> bool {
        self.deps.entry(node).or_default().insert(key.clone())
    }

    /// Forgets the dependencies of a URI group that left the shard.
    pub(crate) fn remove_group(&mut self, key: &str, deps: &[Node]) {
        for node in deps {
            if let Some(keys) = self.deps.get_mut(node) {
                keys.remove(key);
                if keys.is_empty() {
                    self.deps.remove(node);
                }
            }
        }
    }

    pub(crate) fn keys_with_tag(&self, tag: &str) -> Vec<Arc<str>> {
        self.tags
            .get(tag)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn dependents(&self, node: &Node) -> Vec<Arc<str>> {
        self.deps
            .get(node)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn has_dependencies(&self) -> bool {
        !self.deps.is_empty()
    }

    /// Tags and dependency nodes indexed (for stats and tests).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.tags.len(), self.deps.len())
    }

    /// Compares the index with what the live groups say it should hold;
    /// returns the number of disagreeing index slots.
    pub(crate) fn mismatches<'a>(
        &self,
        groups: impl Iterator<Item = (&'a Arc<str>, &'a [Arc<Entry>], &'a [Node])>,
    ) -> usize {
        let mut expected = ShardIndex::default();
        for (key, variants, deps) in groups {
            for entry in variants {
                expected.add_entry(key, entry);
            }
            for node in deps {
                expected.add_dependency(key, node.clone());
            }
        }
        let tag_diff = symmetric_count(&self.tags, &expected.tags);
        let dep_diff = symmetric_count(&self.deps, &expected.deps);
        tag_diff + dep_diff
    }
}

fn symmetric_count<K: Eq + std::hash::Hash, V: PartialEq>(a: &HashMap<K, V>, b: &HashMap<K, V>) -> usize {
    a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count() + b.keys().filter(|k| !a.contains_key(*k)).count()
}
