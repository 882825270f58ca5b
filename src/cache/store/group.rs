//! What the store keeps per URI: its variants and the nodes it depends on,
//! in 8 bytes of LRU node.
//!
//! Almost every URI has one variant and no dependencies; that case is one
//! shared entry, with no allocation of its own. The rest (several `Vary`
//! variants, or dependency edges) moves to one shared record. Both are
//! `triomphe` `Arc`s, told apart by the low bit of one pointer
//! (`ArcUnion`): an enum of the two would take 16 bytes.

use smallvec::SmallVec;
use triomphe::{ArcBorrow, ArcUnion, ArcUnionBorrow};

use super::{RemovalCause, Removals, UriKey};
use crate::cache::entry::{Entry, SharedEntry};
use crate::cache::labels::Node;

/// A URI's variants (least recently stored first) and dependencies (kept
/// while any variant is stored). Empty while being built, or emptied on
/// its way out of the map.
#[derive(Default)]
pub(super) struct Group(Option<ArcUnion<Entry, Rich>>);

/// The uncommon case; one variant is still held inline. Shared only in
/// form: a group is its record's one owner, so it can always change it.
#[derive(Default, Clone)]
pub(super) struct Rich {
    variants: SmallVec<[SharedEntry; 1]>,
    deps: Vec<Node>,
}

/// A group's variants, oldest first, borrowed.
pub(super) enum Variants<'a> {
    /// The common group's one variant, until taken.
    One(Option<ArcBorrow<'a, Entry>>),
    /// A record's variants.
    Many(std::slice::Iter<'a, SharedEntry>),
}

impl<'a> Iterator for Variants<'a> {
    type Item = ArcBorrow<'a, Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Variants::One(one) => one.take(),
            Variants::Many(many) => many.next().map(SharedEntry::borrow_arc),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Variants::One(one) => usize::from(one.is_some()),
            Variants::Many(many) => many.len(),
        };
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Variants<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Variants::One(one) => one.take(),
            Variants::Many(many) => many.next_back().map(SharedEntry::borrow_arc),
        }
    }
}

impl ExactSizeIterator for Variants<'_> {}

impl Group {
    pub(super) fn variants(&self) -> Variants<'_> {
        match self.0.as_ref().map(ArcUnion::borrow) {
            None => Variants::One(None),
            Some(ArcUnionBorrow::First(entry)) => Variants::One(Some(entry)),
            Some(ArcUnionBorrow::Second(rich)) => Variants::Many(rich.get().variants.iter()),
        }
    }

    /// How many variants it holds.
    pub(super) fn len(&self) -> usize {
        self.variants().len()
    }

    pub(super) fn deps(&self) -> &[Node] {
        match self.0.as_ref().map(ArcUnion::borrow) {
            Some(ArcUnionBorrow::Second(rich)) => &rich.get().deps,
            _ => &[],
        }
    }

    /// Whether it holds no variant (its dependencies go with the last).
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record, made if the group is not one yet, for `change`; then
    /// back to the smallest form that holds the same.
    fn change_rich<R>(&mut self, change: impl FnOnce(&mut Rich) -> R) -> R {
        let mut rich = match self.0.take().as_ref().map(ArcUnion::borrow) {
            None => triomphe::Arc::new(Rich::default()),
            Some(ArcUnionBorrow::First(entry)) => triomphe::Arc::new(Rich {
                variants: smallvec::smallvec![entry.clone_arc()],
                deps: Vec::new(),
            }),
            Some(ArcUnionBorrow::Second(rich)) => rich.clone_arc(),
        };
        // The union taken out is dropped by now, so this is the record's
        // one handle; were it not, the change goes to a copy of it.
        let out = change(triomphe::Arc::make_mut(&mut rich));
        self.0 = if rich.deps.is_empty() && rich.variants.len() <= 1 {
            rich.variants.first().cloned().map(ArcUnion::from_first)
        } else {
            Some(ArcUnion::from_second(rich))
        };
        out
    }

    /// Adds the newest variant.
    pub(super) fn push(&mut self, entry: SharedEntry) {
        if self.0.is_none() {
            self.0 = Some(ArcUnion::from_first(entry));
        } else {
            self.change_rich(|rich| rich.variants.push(entry));
        }
    }

    /// Takes out the variant at `index` (which must exist).
    pub(super) fn remove(&mut self, index: usize) -> SharedEntry {
        match self.0.as_ref().map(ArcUnion::borrow) {
            Some(ArcUnionBorrow::First(entry)) if index == 0 => {
                let entry = entry.clone_arc();
                self.0 = None;
                entry
            }
            Some(ArcUnionBorrow::Second(_)) => self.change_rich(|rich| rich.variants.remove(index)),
            _ => panic!("no variant {index} in this group"),
        }
    }

    /// Takes out the variants `pick` names a cause for, as removals of the
    /// group's `key`.
    pub(super) fn extract(&mut self, key: &UriKey, mut pick: impl FnMut(&Entry) -> Option<RemovalCause>) -> Removals {
        let mut out = Removals::new();
        let mut i = 0;
        while let Some(entry) = self.variants().nth(i) {
            match pick(&entry) {
                Some(cause) => out.push((key.clone(), self.remove(i), cause)),
                None => i += 1,
            }
        }
        out
    }

    /// All the variants, leaving the group empty of them.
    pub(super) fn into_variants(mut self) -> SmallVec<[SharedEntry; 1]> {
        match self.0.as_ref().map(ArcUnion::borrow) {
            None => SmallVec::new(),
            Some(ArcUnionBorrow::First(entry)) => smallvec::smallvec![entry.clone_arc()],
            Some(ArcUnionBorrow::Second(_)) => self.change_rich(|rich| std::mem::take(&mut rich.variants)),
        }
    }

    pub(super) fn has_dep(&self, node: &Node) -> bool {
        self.deps().contains(node)
    }

    pub(super) fn push_dep(&mut self, node: Node) {
        self.change_rich(|rich| rich.deps.push(node));
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
    fn a_group_is_eight_bytes() {
        assert_eq!(size_of::<Group>(), 8);
    }
}
