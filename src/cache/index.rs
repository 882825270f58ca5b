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
use super::store::UriKey;

#[derive(Default)]
pub(crate) struct ShardIndex {
    /// Tag -> keys with at least one variant carrying it, with the count.
    tags: HashMap<Arc<str>, TagKeys>,
    /// Dependency -> keys (URI groups) in this shard that depend on it.
    deps: HashMap<Node, HashSet<UriKey>>,
}

/// The keys carrying one tag, each with the number of its variants that
/// carry it. Most tags name one URI (`product:42`), so that case is held
/// inline: such a tag costs one slot of the tag map and no map of its own
/// (a map of one key took 116 bytes more). Keys are the store's own
/// (`UriKey`): the index shares the LRU node's copy of the text.
#[derive(Debug)]
enum TagKeys {
    One(UriKey, u32),
    // Boxed so this enum, and so every slot of the tag map, stays 16 bytes
    // (a map inline would double it for the common one-key tag).
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<UriKey, u32>>),
}

impl TagKeys {
    fn add(&mut self, key: &UriKey) {
        match self {
            TagKeys::One(held, count) if held == key => *count += 1,
            TagKeys::One(held, count) => {
                let mut keys = Box::<HashMap<UriKey, u32>>::default();
                keys.insert(held.clone(), *count);
                keys.insert(key.clone(), 1);
                *self = TagKeys::Many(keys);
            }
            TagKeys::Many(keys) => *keys.entry(key.clone()).or_default() += 1,
        }
    }

    /// Takes one variant of `key` off; whether no key is left.
    fn remove(&mut self, key: &str) -> bool {
        match self {
            TagKeys::One(held, count) => {
                if held.as_bytes() == key.as_bytes() {
                    *count = count.saturating_sub(1);
                }
                *count == 0
            }
            TagKeys::Many(keys) => {
                if let Some(count) = keys.get_mut(key.as_bytes()) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        keys.remove(key.as_bytes());
                    }
                }
                if keys.len() == 1 {
                    // Back to the inline form, freeing the map.
                    let last = keys.drain().next();
                    if let Some((held, count)) = last {
                        *self = TagKeys::One(held, count);
                    }
                    return false;
                }
                keys.is_empty()
            }
        }
    }

    fn keys(&self) -> Vec<UriKey> {
        match self {
            TagKeys::One(held, _) => vec![held.clone()],
            TagKeys::Many(keys) => keys.keys().cloned().collect(),
        }
    }

    fn count(&self, key: &str) -> Option<u32> {
        match self {
            TagKeys::One(held, count) => (held.as_bytes() == key.as_bytes()).then_some(*count),
            TagKeys::Many(keys) => keys.get(key.as_bytes()).copied(),
        }
    }

    fn len(&self) -> usize {
        match self {
            TagKeys::One(..) => 1,
            TagKeys::Many(keys) => keys.len(),
        }
    }
}

/// The same keys with the same counts, whichever form holds them.
impl PartialEq for TagKeys {
    fn eq(&self, other: &TagKeys) -> bool {
        self.len() == other.len()
            && self
                .keys()
                .iter()
                .all(|key| self.count(key.as_str()) == other.count(key.as_str()))
    }
}

impl ShardIndex {
    pub(crate) fn add_entry(&mut self, key: &UriKey, entry: &Entry) {
        for tag in entry.tags() {
            match self.tags.get_mut(&**tag) {
                Some(keys) => keys.add(key),
                None => {
                    self.tags.insert(tag.clone(), TagKeys::One(key.clone(), 1));
                }
            }
        }
    }

    pub(crate) fn remove_entry(&mut self, key: &str, entry: &Entry) {
        for tag in entry.tags() {
            let Some(keys) = self.tags.get_mut(&**tag) else {
                continue;
            };
            if keys.remove(key) {
                self.tags.remove(&**tag);
            }
        }
    }

    /// Records that the URI group `key` depends on `node`; `false` if known.
    pub(crate) fn add_dependency(&mut self, key: &UriKey, node: Node) -> bool {
        self.deps.entry(node).or_default().insert(key.clone())
    }

    /// Forgets the dependencies of a URI group that left the shard.
    pub(crate) fn remove_group(&mut self, key: &str, deps: &[Node]) {
        for node in deps {
            if let Some(keys) = self.deps.get_mut(node) {
                keys.remove(key.as_bytes());
                if keys.is_empty() {
                    self.deps.remove(node);
                }
            }
        }
    }

    pub(crate) fn keys_with_tag(&self, tag: &str) -> Vec<UriKey> {
        self.tags.get(tag).map(TagKeys::keys).unwrap_or_default()
    }

    pub(crate) fn dependents(&self, node: &Node) -> Vec<UriKey> {
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
    pub(crate) fn mismatches<'a, V>(&self, groups: impl Iterator<Item = (&'a UriKey, V, &'a [Node])>) -> usize
    where
        V: IntoIterator,
        V::Item: std::ops::Deref<Target = Entry>,
    {
        let mut expected = ShardIndex::default();
        for (key, variants, deps) in groups {
            for entry in variants {
                expected.add_entry(key, &entry);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_move_between_inline_and_map_forms_keeping_counts() {
        let (a, b) = (UriKey::new("a"), UriKey::new("b"));
        let mut keys = TagKeys::One(a.clone(), 1);
        keys.add(&a);
        assert!(matches!(keys, TagKeys::One(_, 2)));
        keys.add(&b);
        assert!(matches!(keys, TagKeys::Many(_)));
        assert_eq!((keys.count("a"), keys.count("b"), keys.len()), (Some(2), Some(1), 2));
        // A key that is not there changes nothing.
        assert!(!keys.remove("c"));
        assert!(!keys.remove("a"));
        assert_eq!(keys.count("a"), Some(1));
        // Down to one key: back inline, with that key's count.
        assert!(!keys.remove("b"));
        assert!(matches!(&keys, TagKeys::One(held, 1) if held.as_str() == "a"));
        assert!(keys.remove("a"));
    }

    #[test]
    fn tag_keys_compare_by_keys_and_counts_not_by_form() {
        let a = UriKey::new("a");
        let mut many = Box::<HashMap<UriKey, u32>>::default();
        many.insert(a.clone(), 3);
        assert!(TagKeys::One(a.clone(), 3) == TagKeys::Many(many));
        assert!(TagKeys::One(a.clone(), 3) != TagKeys::One(a.clone(), 2));
        assert!(TagKeys::One(a, 1) != TagKeys::One(UriKey::new("b"), 1));
    }
}
