//! What the store keeps per URI: its variants and the nodes it depends on,
//! in 16 bytes of LRU node.
//!
//! Almost every URI has one variant and no dependencies; that case is one
//! `Arc`, with no allocation of its own. The rest (several `Vary` variants,
//! or dependency edges) moves to one boxed record.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{RemovalCause, Removals};
use crate::cache::entry::SharedEntry;
use crate::cache::labels::Node;

/// A URI's variants (least recently stored first) and dependencies (kept
/// while any variant is stored).
#[derive(Default)]
pub(super) enum Group {
    /// Being built, or emptied on its way out of the map.
    #[default]
    Empty,
    /// One variant, no dependencies.
    One(SharedEntry),
    /// Anything else.
    Rich(Box<Rich>),
}

/// The uncommon case; one variant is still held inline.
#[derive(Default)]
pub(super) struct Rich {
    variants: SmallVec<[SharedEntry; 1]>,
    deps: Vec<Node>,
}

impl Group {
    pub(super) fn variants(&self) -> &[SharedEntry] {
        match self {
            Group::Empty => &[],
            Group::One(entry) => std::slice::from_ref(entry),
            Group::Rich(rich) => &rich.variants,
        }
    }

    pub(super) fn deps(&self) -> &[Node] {
        match self {
            Group::Rich(rich) => &rich.deps,
            _ => &[],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.variants().is_empty()
    }

    /// The record, made if the group is not one yet.
    fn rich(&mut self) -> &mut Rich {
        if !matches!(self, Group::Rich(_)) {
            let mut rich = Box::<Rich>::default();
            if let Group::One(entry) = std::mem::take(self) {
                rich.variants.push(entry);
            }
            *self = Group::Rich(rich);
        }
        match self {
            Group::Rich(rich) => rich,
            // Made just above.
            Group::Empty | Group::One(_) => unreachable!("the group was made rich"),
        }
    }

    /// Back to the smallest form that holds the same.
    fn compact(&mut self) {
        if let Group::Rich(rich) = self {
            if rich.deps.is_empty() && rich.variants.len() <= 1 {
                *self = rich.variants.pop().map_or(Group::Empty, Group::One);
            }
        }
    }

    /// Adds the newest variant.
    pub(super) fn push(&mut self, entry: SharedEntry) {
        if let Group::Empty = self {
            *self = Group::One(entry);
        } else {
            self.rich().variants.push(entry);
        }
    }

    /// Takes out the variant at `index` (which must exist).
    pub(super) fn remove(&mut self, index: usize) -> SharedEntry {
        let entry = match self {
            Group::Rich(rich) => rich.variants.remove(index),
            _ => match std::mem::take(self) {
                Group::One(entry) if index == 0 => entry,
                _ => panic!("no variant {index} in this group"),
            },
        };
        self.compact();
        entry
    }

    /// Takes out the variants `pick` names a cause for, as removals of the
    /// group's `key`.
    pub(super) fn extract(
        &mut self,
        key: &Arc<str>,
        mut pick: impl FnMut(&SharedEntry) -> Option<RemovalCause>,
    ) -> Removals {
        let mut out = Removals::new();
        let mut i = 0;
        while i < self.variants().len() {
            match pick(&self.variants()[i]) {
                Some(cause) => out.push((key.clone(), self.remove(i), cause)),
                None => i += 1,
            }
        }
        out
    }

    /// All the variants, leaving the group empty of them.
    pub(super) fn into_variants(self) -> SmallVec<[SharedEntry; 1]> {
        match self {
            Group::Empty => SmallVec::new(),
            Group::One(entry) => smallvec::smallvec![entry],
            Group::Rich(rich) => rich.variants,
        }
    }

    pub(super) fn has_dep(&self, node: &Node) -> bool {
        self.deps().contains(node)
    }

    pub(super) fn push_dep(&mut self, node: Node) {
        self.rich().deps.push(node);
    }

    /// The nodes of `deps` not held yet, each once.
    pub(super) fn fresh_deps(&self, deps: &[Node]) -> Vec<Node> {
        let mut fresh: Vec<Node> = Vec::new();
        for node in deps {
            if !self.has_dep(node) && !fresh.contains(node) {
                fresh.push(node.clone());
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_sixteen_bytes() {
        assert_eq!(size_of::<Group>(), 16);
    }
}
