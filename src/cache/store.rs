//! The sharded, byte-bounded LRU store.
//!
//! Each shard is an `RwLock` over an [`Lru`] keyed by the primary key, holding the
//! variants stored for that URI. The budget is split evenly between shards,
//! so each shard enforcing its share enforces `bytes_used <= max_bytes` for
//! the whole store after every operation, with no global lock. Every
//! removal goes through [`Store::finish`], which updates the counters and
//! tells the listener, so no path can skip the accounting.
// The invalidation entry points are called only with the `invalidation` feature.
#![cfg_attr(not(feature = "invalidation"), allow(dead_code))]

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::time::Instant;

use super::entry::{Entry, Keep, SharedEntry, Stamp};
use super::index::ShardIndex;
use super::labels::Node;
use super::status::Forward;
use group::Group;
use lru::Lru;
pub use report::{Audit, EvictionListener, Purge, RemovalCause, Removed};
pub(crate) use uri::UriKey;

/// Bytes one dependency edge (a URI group depending on a node) costs beyond
/// the node's name, in the worst case: the group's first edge (its shared
/// record, 56 B, and a 4-slot buffer, 128 B) on a node new to the shard (a
/// set table of the store's thin keys, 64 B, and a 72 B index slot, up to
/// 165 B just after the index grew). `cargo bench --bench overhead`
/// measures it with a counting allocator (324 B at 20,000 edges) and fails
/// if this under-counts.
pub(crate) const DEPENDENCY_OVERHEAD: usize = 400;

/// What one dependency edge costs the byte budget.
fn edge_cost(node: &Node) -> usize {
    let (Node::Key(name) | Node::Tag(name)) = node;
    name.len() + DEPENDENCY_OVERHEAD
}

/// What a group's dependency edges cost the byte budget.
fn deps_cost(group: &Group) -> usize {
    group.deps().iter().map(edge_cost).sum()
}

struct Shard {
    map: Lru<Group>,
    /// Bytes charged: the live entries and the groups' dependency edges.
    bytes: usize,
    entries: usize,
    index: ShardIndex,
    /// Dependency bytes released by groups taken out since the last
    /// [`Store::debit`], which passes them on to the store's total.
    freed: usize,
}

impl Shard {
    /// Takes a URI group out of the shard, forgetting its dependencies.
    fn pop_group(&mut self, key: &str) -> Option<(UriKey, Group)> {
        let (key, group) = self.map.pop_entry(key)?;
        self.forget(key.as_str(), &group);
        Some((key, group))
    }

    fn pop_lru_group(&mut self) -> Option<(UriKey, Group)> {
        let (key, group) = self.map.pop_lru()?;
        self.forget(key.as_str(), &group);
        Some((key, group))
    }

    fn forget(&mut self, key: &str, group: &Group) {
        self.index.remove_group(key, group.deps());
        let bytes = deps_cost(group);
        self.bytes -= bytes;
        self.freed += bytes;
    }
}

pub(crate) struct Store {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
    max_variants: usize,
    /// How long entries are kept past their usable life.
    keep: Keep,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    evictions: [AtomicU64; 5],
    /// Bytes charged to the entries removed, by cause.
    evicted_bytes: [AtomicU64; 5],
    /// Entries dropped because a namespace they were stamped with was bumped.
    version_drops: AtomicU64,
    listener: Option<EvictionListener>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .field("shard_budget", &self.shard_budget)
            .field("max_variants", &self.max_variants)
            .field("keep", &self.keep)
            .field("bytes", &self.bytes())
            .field("entries", &self.entries())
            .finish_non_exhaustive()
    }
}

/// Entries on their way out: the key each was stored under, the entry and
/// why it goes.
type Removals = Vec<(UriKey, SharedEntry, RemovalCause)>;

/// `entries` of `key`, all leaving for `cause`.
fn leaving(
    key: &UriKey,
    entries: impl IntoIterator<Item = SharedEntry>,
    cause: RemovalCause,
) -> impl Iterator<Item = (UriKey, SharedEntry, RemovalCause)> {
    entries.into_iter().map(move |e| (key.clone(), e, cause))
}

impl Store {
    pub(crate) fn new(
        max_bytes: usize,
        shards: usize,
        max_variants: usize,
        keep: Keep,
        listener: Option<EvictionListener>,
    ) -> Store {
        let shards = shards.max(1);
        Store {
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        map: Lru::default(),
                        bytes: 0,
                        entries: 0,
                        index: ShardIndex::default(),
                        freed: 0,
                    })
                })
                .collect(),
            shard_budget: max_bytes / shards,
            max_variants: max_variants.max(1),
            keep,
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            evictions: Default::default(),
            evicted_bytes: Default::default(),
            version_drops: AtomicU64::new(0),
            listener,
        }
    }

    /// The largest entry that can be stored at all.
    #[cfg(test)]
    pub(crate) fn shard_budget(&self) -> usize {
        self.shard_budget
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub(crate) fn version_drops(&self) -> u64 {
        self.version_drops.load(Ordering::Relaxed)
    }

    pub(crate) fn evictions(&self, cause: RemovalCause) -> u64 {
        self.evictions[cause.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn evicted_bytes(&self, cause: RemovalCause) -> u64 {
        self.evicted_bytes[cause.index()].load(Ordering::Relaxed)
    }

    fn index(&self, key: &str) -> usize {
        (shard_hash(key) % self.shards.len() as u64) as usize
    }

    fn shard(&self, key: &str) -> RwLockWriteGuard<'_, Shard> {
        write(&self.shards[self.index(key)])
    }

    /// Finds the variant of `key` that `matches` accepts and runs `on_hit`
    /// on it under the shard's read lock (so a hit clones nothing it does not
    /// return). Recency is tracked to the second: a URI is moved to the
    /// front of its shard's LRU at most once a second, which keeps hits on
    /// hot keys from serialising on the write lock. An expired match is
    /// removed and not returned. A miss says why: no entry for the URI,
    /// none for these `Vary` values, or the match had expired.
    pub(crate) fn get_with<R>(
        &self,
        key: &str,
        matches: impl Fn(&Entry) -> bool,
        now: Instant,
        on_hit: impl FnOnce(&SharedEntry, Stamp) -> R,
    ) -> Result<R, Forward> {
        let shard = &self.shards[self.index(key)];
        let at = Stamp::of(now);
        let tick = at.tick();
        {
            let guard = read(shard);
            let Some(group) = guard.map.peek(key) else {
                return Err(Forward::UriMiss);
            };
            let Some(entry) = group.variants().rev().find(|e| matches(e)) else {
                return Err(Forward::VaryMiss);
            };
            if !entry.expired_by(at, self.keep) && entry.is_current() {
                let promote = entry.touch(tick);
                // A borrowed handle: the hit clones the entry only if it keeps it.
                let result = entry.with_arc(|entry| on_hit(entry, at));
                drop(guard);
                if promote {
                    write(shard).map.promote(key);
                }
                return Ok(result);
            }
        }
        self.remove_gone(shard, key, &matches, at);
        Err(Forward::Stale)
    }

    /// Removes the variant of `key` that `matches` accepts if it expired or
    /// its namespace was bumped (found so under the read lock; looked up
    /// again under the write lock). Out of line: a hit, the path to keep
    /// short, never gets here.
    #[inline(never)]
    fn remove_gone(&self, shard: &RwLock<Shard>, key: &str, matches: &dyn Fn(&Entry) -> bool, at: Stamp) {
        let mut removals = Removals::new();
        let mut freed = 0;
        {
            let mut guard = write(shard);
            if let Some(group) = guard.map.peek_mut(key) {
                let gone = |e: &Entry| e.expired_by(at, self.keep) || !e.is_current();
                if let Some(pos) = group.variants().rposition(|e| matches(&e) && gone(&e)) {
                    let entry = group.remove(pos);
                    // A bumped namespace is an invalidation, not an expiry.
                    let cause = if entry.is_current() {
                        RemovalCause::Expired
                    } else {
                        self.version_drops.fetch_add(1, Ordering::Relaxed);
                        RemovalCause::Invalidated
                    };
                    // A cold path: the key's own `Arc` is not at hand.
                    removals.push((UriKey::new(key), entry, cause));
                    if group.is_empty() {
                        guard.pop_group(key);
                    }
                    freed = self.debit(&mut guard, &removals);
                }
            }
        }
        self.finish(removals, freed);
    }

    /// [`Store::get_with`] returning the entry itself.
    pub(crate) fn get(
        &self,
        key: &str,
        matches: impl Fn(&Entry) -> bool,
        now: Instant,
    ) -> Result<SharedEntry, Forward> {
        self.get_with(key, matches, now, |entry, _| SharedEntry::clone(entry))
    }

    /// Stores `entry` and the dependency edges `deps` its URI gains,
    /// evicting least recently used URIs (then older variants of its own URI)
    /// until both fit. Returns `false` if they can never fit (more than a
    /// shard's share of the budget); the variant `entry` would have replaced
    /// is removed all the same, since it is now known to be outdated.
    pub(crate) fn insert(&self, key: &str, entry: SharedEntry, deps: &[Node]) -> bool {
        let mut removals = Removals::new();
        let mut freed = 0;
        let stored = {
            let mut shard = self.shard(key);
            // Most URIs have one variant, held inline (see `Group`).
            let (stored_key, mut group) = shard
                .map
                .pop_entry(key)
                .unwrap_or_else(|| (UriKey::new(key), Group::default()));
            let held = deps_cost(&group);
            let fresh = group.fresh_deps(deps);
            let size = entry.size();
            let added: usize = fresh.iter().map(edge_cost).sum();
            if let Some(pos) = group.variants().position(|e| e.secondary() == entry.secondary()) {
                removals.push((stored_key.clone(), group.remove(pos), RemovalCause::Replaced));
            }
            let fits = !entry.too_large() && size + held + added <= self.shard_budget;
            if fits {
                while group.len() >= self.max_variants {
                    removals.push((stored_key.clone(), group.remove(0), RemovalCause::Capacity));
                }
            }
            freed += self.debit(&mut shard, &removals);
            if fits {
                freed += self.make_room(&mut shard, size + added, Some((&stored_key, &mut group)), &mut removals);
                shard.bytes += size + added;
                shard.entries += 1;
                self.bytes.fetch_add(size + added, Ordering::Relaxed);
                self.entries.fetch_add(1, Ordering::Relaxed);
                for node in fresh {
                    shard.index.add_dependency(&stored_key, node.clone());
                    group.push_dep(node);
                }
                shard.index.add_entry(&stored_key, &entry);
                group.push(entry);
            }
            if !group.is_empty() {
                shard.map.push(stored_key, group);
            } else if !group.deps().is_empty() {
                // The refused entry's URI has no variant left: its edges go.
                shard.forget(key, &group);
                freed += self.debit(&mut shard, &[]);
            }
            fits
        };
        self.finish(removals, freed);
        stored
    }

    /// Evicts least recently used URI groups, then the oldest variants of
    /// `own` (a group taken out of the map while it changes), until `needed`
    /// more bytes fit in the shard's share; the dependency bytes released.
    fn make_room(
        &self,
        shard: &mut Shard,
        needed: usize,
        mut own: Option<(&UriKey, &mut Group)>,
        removals: &mut Removals,
    ) -> usize {
        let mut freed = 0;
        while shard.bytes + needed > self.shard_budget {
            let before = removals.len();
            if let Some((key, victim)) = shard.pop_lru_group() {
                removals.extend(leaving(&key, victim.into_variants(), RemovalCause::Capacity));
            } else if let Some((key, group)) = own.as_mut().filter(|(_, g)| !g.is_empty()) {
                removals.push(((*key).clone(), group.remove(0), RemovalCause::Capacity));
            } else {
                break;
            }
            freed += self.debit(shard, &removals[before..]);
        }
        freed
    }

    /// Removes every variant of `key`.
    pub(crate) fn remove_key(&self, key: &str, cause: RemovalCause) -> Removed {
        let removals = {
            let mut shard = self.shard(key);
            let Some((key, group)) = shard.pop_group(key) else {
                return Removed::default();
            };
            let removals: Removals = leaving(&key, group.into_variants(), cause).collect();
            let freed = self.debit(&mut shard, &removals);
            (removals, freed)
        };
        self.finish(removals.0, removals.1)
    }

    /// Removes the variants of `key` for which `which` is true (e.g. the one
    /// a newer response that could not be stored has outdated).
    pub(crate) fn remove_variants(&self, key: &str, which: impl Fn(&Entry) -> bool, cause: RemovalCause) -> Removed {
        let removals = {
            let mut shard = self.shard(key);
            let Some((key, mut group)) = shard.map.pop_entry(key) else {
                return Removed::default();
            };
            let removals = group.extract(&key, |e| which(e).then_some(cause));
            if group.is_empty() {
                shard.forget(key.as_str(), &group);
            } else {
                shard.map.push(key, group);
            }
            let freed = self.debit(&mut shard, &removals);
            (removals, freed)
        };
        self.finish(removals.0, removals.1)
    }

    /// Removes the entries for which `remove` is true, one shard at a time
    /// so no lock is held for the whole walk.
    pub(crate) fn remove_where(&self, mut remove: impl FnMut(&UriKey, &Entry) -> Option<RemovalCause>) -> Removed {
        let mut total = Removed::default();
        for shard in &*self.shards {
            let removals = {
                let mut shard = write(shard);
                let mut removals = Removals::new();
                let mut emptied = Vec::new();
                shard.map.for_each_mut(|key, group| {
                    removals.extend(group.extract(key, |e| remove(key, e)));
                    if group.is_empty() {
                        emptied.push(key.clone());
                    }
                });
                for key in emptied {
                    shard.pop_group(key.as_str());
                }
                let freed = self.debit(&mut shard, &removals);
                (removals, freed)
            };
            let removed = self.finish(removals.0, removals.1);
            total.entries += removed.entries;
            total.bytes += removed.bytes;
        }
        total
    }

    /// Drops entries whose time ran out.
    pub(crate) fn sweep(&self, now: Instant) -> Removed {
        let at = Stamp::of(now);
        self.remove_where(|_, e| {
            if !e.is_current() {
                self.version_drops.fetch_add(1, Ordering::Relaxed);
                Some(RemovalCause::Invalidated)
            } else if e.expired_by(at, self.keep) {
                Some(RemovalCause::Expired)
            } else {
                None
            }
        })
    }

    /// Evicts least recently used URIs, taking turns between shards, until
    /// `target` bytes are freed or the store is empty.
    pub(crate) fn evict_bytes(&self, target: usize, cause: RemovalCause) -> Removed {
        let mut total = Removed::default();
        while total.bytes < target && self.entries() > 0 {
            let mut progressed = false;
            for shard in &*self.shards {
                if total.bytes >= target {
                    break;
                }
                let (removals, freed) = {
                    let mut shard = write(shard);
                    let Some((key, group)) = shard.pop_lru_group() else {
                        continue;
                    };
                    let removals: Removals = leaving(&key, group.into_variants(), cause).collect();
                    let freed = self.debit(&mut shard, &removals);
                    (removals, freed)
                };
                progressed = true;
                let removed = self.finish(removals, freed);
                total.entries += removed.entries;
                total.bytes += removed.bytes;
            }
            if !progressed {
                break;
            }
        }
        total
    }

    /// Takes `removals` and the dependency bytes of groups taken out since
    /// the last call off the shard's and the store's counts; returns those
    /// dependency bytes, for [`Store::finish`].
    fn debit(&self, shard: &mut Shard, removals: &[(UriKey, SharedEntry, RemovalCause)]) -> usize {
        for (key, entry, _) in removals {
            shard.index.remove_entry(key.as_str(), entry);
        }
        let bytes: usize = removals.iter().map(|(_, e, _)| e.size()).sum();
        let freed = std::mem::take(&mut shard.freed);
        shard.bytes -= bytes;
        shard.entries -= removals.len();
        self.bytes.fetch_sub(bytes + freed, Ordering::Relaxed);
        self.entries.fetch_sub(removals.len(), Ordering::Relaxed);
        freed
    }

    /// Counts and reports removals (with `freed` dependency bytes released
    /// alongside); runs with no lock held, and the entries (bodies included)
    /// are freed here rather than under a shard lock.
    fn finish(&self, removals: Removals, freed: usize) -> Removed {
        let mut removed = Removed {
            bytes: freed,
            ..Removed::default()
        };
        for (key, entry, cause) in removals {
            removed.entries += 1;
            removed.bytes += entry.size();
            self.evictions[cause.index()].fetch_add(1, Ordering::Relaxed);
            self.evicted_bytes[cause.index()].fetch_add(entry.size() as u64, Ordering::Relaxed);
            if let Some(listener) = &self.listener {
                crate::util::guarded("cache eviction listener", || {
                    listener(&entry.meta(key.to_arc(), self.keep), cause);
                });
            }
        }
        removed
    }
}

/// The key's shard: a fast hash of its last 64 bytes (where URIs differ)
/// and its length; it only spreads keys over shards, and each shard's map
/// uses its own hasher.
fn shard_hash(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let mut hasher = crate::util::Fx::default();
    hasher.write_u64(bytes.len() as u64);
    hasher.write(&bytes[bytes.len().saturating_sub(64)..]);
    let hash = hasher.finish();
    hash ^ (hash >> 29)
}

/// Locks a shard for writing. A poisoned lock is still usable: every
/// mutation leaves the shard consistent before anything can unwind, and
/// listeners run with no lock held.
fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod group;
mod inspect;
mod lru;
mod purge;
mod report;
#[cfg(test)]
mod tests;
mod uri;
