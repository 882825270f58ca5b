//! The least-recently-used map each store shard keeps: URI key -> value.
//!
//! Nodes live in a slab of fixed-size chunks and link to each other by
//! 32-bit index; the hash table holds those indices. The `lru` crate this
//! replaces allocates each node on its own (key, value and two pointers, 40
//! bytes for the store's 8-byte values and `Arc<str>` keys) and its table
//! holds two pointers per slot (16 bytes); here a node is 24 bytes inside
//! a chunk (with a thin key, `UriKey`) and a table slot is 4 bytes, about
//! 28 bytes less per stored URI. Nodes never move
//! while in use except when the slab shrinks after mass removals, which
//! the `lru` crate's table never does.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::uri::UriKey;

/// No node: the end of a list.
const NIL: u32 = u32::MAX;

/// Nodes per chunk. The slab grows a chunk at a time, so existing nodes
/// never move as it grows and at most one chunk per shard is unused
/// (64 × 24 bytes); small enough that a near-empty shard costs little.
const CHUNK: usize = 64;

struct Node<V> {
    key: UriKey,
    value: V,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

enum Slot<V> {
    Used(Node<V>),
    /// Unused; the next slot of the free list.
    Free(u32),
}

/// A map from keys to values that remembers their order of use.
pub(crate) struct Lru<V> {
    /// Indices of the used slots, hashed by their keys.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    chunks: Vec<Box<[Slot<V>; CHUNK]>>,
    /// First slot of the free list.
    free: u32,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    len: usize,
}

fn slot<V>(chunks: &[Box<[Slot<V>; CHUNK]>], i: u32) -> &Slot<V> {
    let i = i as usize;
    &chunks[i / CHUNK][i % CHUNK]
}

fn slot_mut<V>(chunks: &mut [Box<[Slot<V>; CHUNK]>], i: u32) -> &mut Slot<V> {
    let i = i as usize;
    &mut chunks[i / CHUNK][i % CHUNK]
}

fn node<V>(chunks: &[Box<[Slot<V>; CHUNK]>], i: u32) -> &Node<V> {
    match slot(chunks, i) {
        Slot::Used(node) => node,
        // Only used slots are in the table or linked into the list.
        Slot::Free(_) => unreachable!("slot {i} is linked but free"),
    }
}

fn node_mut<V>(chunks: &mut [Box<[Slot<V>; CHUNK]>], i: u32) -> &mut Node<V> {
    match slot_mut(chunks, i) {
        Slot::Used(node) => node,
        Slot::Free(_) => unreachable!("slot {i} is linked but free"),
    }
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Lru {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            chunks: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl<V> Lru<V> {
    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots in the slab, used or not.
    fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn find(&self, key: &str) -> Option<u32> {
        let key = key.as_bytes();
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table
            .find(hash, |&i| node(&self.chunks, i).key.as_bytes() == key)
            .copied()
    }

    /// The value of `key`, leaving its place in the order alone.
    pub(crate) fn peek(&self, key: &str) -> Option<&V> {
        self.find(key).map(|i| &node(&self.chunks, i).value)
    }

    /// The value of `key`, mutable, leaving its place in the order alone.
    pub(crate) fn peek_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.find(key)?;
        Some(&mut node_mut(&mut self.chunks, i).value)
    }

    /// Makes `key` the most recently used, if present.
    pub(crate) fn promote(&mut self, key: &str) {
        if let Some(i) = self.find(key) {
            self.move_to_front(i);
        }
    }

    fn move_to_front(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    /// Stores `value` under `key` as the most recently used; the value it
    /// replaces, if any.
    pub(crate) fn push(&mut self, key: UriKey, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(key.as_bytes());
        if let Some(i) = self.find_hashed(hash, key.as_bytes()) {
            let old = std::mem::replace(&mut node_mut(&mut self.chunks, i).value, value);
            self.move_to_front(i);
            return Some(old);
        }
        let i = self.take_free();
        *slot_mut(&mut self.chunks, i) = Slot::Used(Node {
            key,
            value,
            prev: NIL,
            next: NIL,
        });
        self.link_front(i);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(node(chunks, j).key.as_bytes()));
        self.len += 1;
        None
    }

    /// Removes `key`, returning the key as stored and its value.
    pub(crate) fn pop_entry(&mut self, key: &str) -> Option<(UriKey, V)> {
        let key = key.as_bytes();
        let hash = self.hasher.hash_one(key);
        let chunks = &self.chunks;
        let found = self
            .table
            .find_entry(hash, |&i| node(chunks, i).key.as_bytes() == key)
            .ok()?;
        let (i, _) = found.remove();
        Some(self.release(i))
    }

    /// Removes `key`, returning its value.
    #[cfg(test)]
    pub(crate) fn pop(&mut self, key: &str) -> Option<V> {
        self.pop_entry(key).map(|(_, value)| value)
    }

    /// Removes the least recently used key.
    pub(crate) fn pop_lru(&mut self) -> Option<(UriKey, V)> {
        let i = self.tail;
        if i == NIL {
            return None;
        }
        let hash = self.hasher.hash_one(node(&self.chunks, i).key.as_bytes());
        if let Ok(found) = self.table.find_entry(hash, |&j| j == i) {
            found.remove();
        }
        Some(self.release(i))
    }

    /// Keys and values, most recently used first.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        Iter {
            chunks: &self.chunks,
            at: self.head,
        }
    }

    /// Runs `f` on every key and value, most recently used first.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&UriKey, &mut V)) {
        let mut at = self.head;
        while at != NIL {
            let node = node_mut(&mut self.chunks, at);
            f(&node.key, &mut node.value);
            at = node.next;
        }
    }

    /// A free slot, the slab grown by a chunk if it has none.
    fn take_free(&mut self) -> u32 {
        if self.free == NIL {
            let start = self.capacity();
            // 2^32 - 1 nodes would be over 160 GiB of slab alone.
            let end = u32::try_from(start + CHUNK).expect("fewer than 2^32 keys per shard");
            // Each slot points at the next; the chunk's last ends the list.
            self.chunks.push(Box::new(std::array::from_fn(|k| {
                let next = start as u32 + k as u32 + 1;
                Slot::Free(if next == end { NIL } else { next })
            })));
            self.free = start as u32;
        }
        let i = self.free;
        self.free = match slot(&self.chunks, i) {
            Slot::Free(next) => *next,
            Slot::Used(_) => unreachable!("slot {i} is on the free list but used"),
        };
        i
    }

    /// Takes slot `i` (already out of the table) out of the list and frees
    /// it; shrinks the slab once three quarters of it are unused.
    fn release(&mut self, i: u32) -> (UriKey, V) {
        self.unlink(i);
        let Slot::Used(node) = std::mem::replace(slot_mut(&mut self.chunks, i), Slot::Free(self.free)) else {
            unreachable!("slot {i} was released twice")
        };
        self.free = i;
        self.len -= 1;
        if self.capacity() > CHUNK && self.len * 4 <= self.capacity() {
            self.shrink();
        }
        (node.key, node.value)
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = *node(&self.chunks, i);
        self.point_neighbours(prev, next, next, prev);
    }

    /// Points the node (or the list end) before a place at `after_prev`,
    /// and the one after it at `before_next`.
    fn point_neighbours(&mut self, prev: u32, next: u32, after_prev: u32, before_next: u32) {
        match prev {
            NIL => self.head = after_prev,
            p => node_mut(&mut self.chunks, p).next = after_prev,
        }
        match next {
            NIL => self.tail = before_next,
            n => node_mut(&mut self.chunks, n).prev = before_next,
        }
    }

    fn link_front(&mut self, i: u32) {
        let head = self.head;
        let node = node_mut(&mut self.chunks, i);
        node.prev = NIL;
        node.next = head;
        match head {
            NIL => self.tail = i,
            h => node_mut(&mut self.chunks, h).prev = i,
        }
        self.head = i;
    }

    /// Moves the nodes of the slab's upper part into holes of the lower
    /// part and drops the chunks left empty, keeping room for twice the
    /// keys; the table shrinks alike. Amortised: the slab is only this
    /// sparse again after as many removals as it keeps keys.
    fn shrink(&mut self) {
        let keep = (self.len * 2).div_ceil(CHUNK).max(1) * CHUNK;
        let mut holes: Vec<u32> = (0..keep as u32)
            .filter(|&i| matches!(slot(&self.chunks, i), Slot::Free(_)))
            .collect();
        for from in keep as u32..self.capacity() as u32 {
            if matches!(slot(&self.chunks, from), Slot::Used(_)) {
                let to = holes.pop().expect("the kept part has a hole for every node above it");
                self.relocate(from, to);
            }
        }
        self.chunks.truncate(keep / CHUNK);
        // The free list is rebuilt from the holes left.
        self.free = NIL;
        for i in (0..keep as u32).rev() {
            if let Slot::Free(next) = slot_mut(&mut self.chunks, i) {
                *next = self.free;
                self.free = i;
            }
        }
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table
            .shrink_to(self.len, |&j| hasher.hash_one(node(chunks, j).key.as_bytes()));
    }

    /// Moves the node in slot `from` to the free slot `to`, relinking its
    /// neighbours and its table slot.
    fn relocate(&mut self, from: u32, to: u32) {
        let moved = std::mem::replace(slot_mut(&mut self.chunks, from), Slot::Free(NIL));
        let Slot::Used(Node { prev, next, .. }) = moved else {
            unreachable!("slot {from} is free")
        };
        let hash = self.hasher.hash_one(node_of(&moved).key.as_bytes());
        *slot_mut(&mut self.chunks, to) = moved;
        self.point_neighbours(prev, next, to, to);
        if let Some(index) = self.table.find_mut(hash, |&j| j == from) {
            *index = to;
        }
    }
}

fn node_of<V>(slot: &Slot<V>) -> &Node<V> {
    match slot {
        Slot::Used(node) => node,
        Slot::Free(_) => unreachable!("the slot is free"),
    }
}

/// Keys and values of an [`Lru`], most recently used first.
pub(crate) struct Iter<'a, V> {
    chunks: &'a [Box<[Slot<V>; CHUNK]>],
    at: u32,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a UriKey, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == NIL {
            return None;
        }
        let node = node(self.chunks, self.at);
        self.at = node.next;
        Some((&node.key, &node.value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn keys<V>(lru: &Lru<V>) -> Vec<String> {
        lru.iter().map(|(k, _)| k.to_string()).collect()
    }

    #[test]
    fn a_node_is_twenty_four_bytes_for_the_stores_eight_byte_values() {
        // The memory figure in the module docs rests on this.
        assert_eq!(std::mem::size_of::<Slot<super::super::Group>>(), 24);
    }

    #[test]
    fn order_follows_pushes_promotions_and_removals() {
        let mut lru = Lru::default();
        for k in ["a", "b", "c", "d"] {
            assert_eq!(lru.push(k.into(), k.len()), None);
        }
        assert_eq!(keys(&lru), ["d", "c", "b", "a"]);
        lru.promote("b");
        assert_eq!(keys(&lru), ["b", "d", "c", "a"]);
        assert_eq!(lru.pop_lru().map(|(k, _)| k.to_string()), Some("a".into()));
        assert_eq!(lru.pop("d"), Some(1));
        assert_eq!(lru.pop("d"), None);
        assert_eq!(lru.push("c".into(), 7), Some(1));
        assert_eq!(keys(&lru), ["c", "b"]);
        assert_eq!(lru.peek("c"), Some(&7));
        *lru.peek_mut("b").unwrap() = 9;
        assert_eq!(
            lru.pop_entry("b").map(|(k, v)| (k.to_string(), v)),
            Some(("b".into(), 9))
        );
        assert_eq!(lru.len(), 1);
        lru.for_each_mut(|_, v| *v += 1);
        assert_eq!(lru.peek("c"), Some(&8));
    }

    #[test]
    fn the_slab_grows_and_shrinks_back_keeping_every_key_and_the_order() {
        let mut lru = Lru::default();
        for i in 0..1_000 {
            lru.push(i.to_string().as_str().into(), i);
        }
        assert!(lru.capacity() >= 1_000);
        // Remove from the front (the slab's low slots) so the shrink has to
        // move nodes down.
        for i in 0..950 {
            assert_eq!(lru.pop(&i.to_string()), Some(i));
        }
        assert!(
            lru.capacity() <= 4 * CHUNK,
            "capacity {} after shrinking",
            lru.capacity()
        );
        let expected: Vec<String> = (950..1_000).rev().map(|i: i32| i.to_string()).collect();
        assert_eq!(keys(&lru), expected);
        for i in 950..1_000 {
            assert_eq!(lru.peek(&i.to_string()), Some(&i));
        }
        while lru.pop_lru().is_some() {}
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.capacity(), CHUNK);
        lru.push("again".into(), 1);
        assert_eq!(keys(&lru), ["again"]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8, u32),
        Pop(u8),
        Promote(u8),
        PopLru,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Push(k, v)),
            2 => any::<u8>().prop_map(Op::Pop),
            2 => any::<u8>().prop_map(Op::Promote),
            1 => Just(Op::PopLru),
        ]
    }

    proptest! {
        /// Against a naive model: a list of (key, value), most recent first.
        #[test]
        fn matches_a_list_model(ops in proptest::collection::vec(op(), 1..600)) {
            let mut lru = Lru::default();
            let mut model: VecDeque<(String, u32)> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(k, v) => {
                        let k = k.to_string();
                        let old = model.iter().position(|(m, _)| *m == k).map(|p| model.remove(p).unwrap().1);
                        model.push_front((k.clone(), v));
                        prop_assert_eq!(lru.push(k.as_str().into(), v), old);
                    }
                    Op::Pop(k) => {
                        let k = k.to_string();
                        let old = model.iter().position(|(m, _)| *m == k).map(|p| model.remove(p).unwrap().1);
                        prop_assert_eq!(lru.pop(&k), old);
                    }
                    Op::Promote(k) => {
                        let k = k.to_string();
                        if let Some(p) = model.iter().position(|(m, _)| *m == k) {
                            let item = model.remove(p).unwrap();
                            model.push_front(item);
                        }
                        lru.promote(&k);
                    }
                    Op::PopLru => {
                        let got = lru.pop_lru().map(|(k, v)| (k.to_string(), v));
                        prop_assert_eq!(got, model.pop_back());
                    }
                }
                prop_assert_eq!(lru.len(), model.len());
                let got: Vec<(String, u32)> = lru.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                prop_assert_eq!(got, model.iter().cloned().collect::<Vec<_>>());
                for (k, v) in &model {
                    prop_assert_eq!(lru.peek(k), Some(v));
                }
            }
        }
    }
}
