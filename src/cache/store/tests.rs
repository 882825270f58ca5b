use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::cache::entry::{Entry, EntryBody, Keep, Labels};
use crate::cache::freshness::Freshness;
use crate::cache::key::Secondary;
use crate::cache::labels::Node;

/// An entry and the key it is to be stored under.
type Keyed = (Arc<str>, SharedEntry);

pub(crate) fn entry(key: &str, variant: u8, body_len: usize, now: Instant, ttl: u64) -> Keyed {
    tagged(key, variant, body_len, now, ttl, &[])
}

pub(crate) fn tagged(key: &str, variant: u8, body_len: usize, now: Instant, ttl: u64, tags: &[&str]) -> Keyed {
    let (parts, ()) = Response::builder()
        .header("cache-control", "max-age=1")
        .body(())
        .unwrap()
        .into_parts();
    let secondary = Secondary::new(vec![(
        HeaderName::from_static("x-v"),
        Some(HeaderValue::from(u16::from(variant))),
    )]);
    let freshness = Freshness {
        response_time: now,
        initial_age: Duration::ZERO,
        lifetime: Duration::from_secs(ttl),
        no_cache: false,
        must_revalidate: false,
        immutable: false,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: None,
    };
    let entry = SharedEntry::new(Entry::new(
        key,
        secondary,
        &parts,
        EntryBody::Shared(Bytes::from(vec![7u8; body_len])),
        freshness,
        Labels {
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            versions: Box::default(),
        },
        now,
    ));
    (key.into(), entry)
}

/// Stores a keyed entry.
fn put(store: &Store, (key, entry): Keyed, deps: &[Node]) -> bool {
    store.insert(&key, entry, deps)
}

fn is_variant(v: u8) -> impl Fn(&Entry) -> bool {
    move |e: &Entry| e.secondary()[0].1.as_ref() == Some(&HeaderValue::from(u16::from(v)))
}

#[tokio::test(start_paused = true)]
async fn evicts_lru_to_stay_under_budget() {
    let now = Instant::now();
    let size = entry("k0", 0, 1000, now, 60).1.size();
    let store = Store::new(size * 3, 1, 4, Keep::NONE, None);
    for i in 0..3 {
        assert!(put(&store, entry(&format!("k{i}"), 0, 1000, now, 60), &[]));
    }
    assert!(store.get("k0", |_| true, now).is_ok(), "touch k0 so k1 is least recent");
    assert!(put(&store, entry("k3", 0, 1000, now, 60), &[]));
    assert!(store.get("k1", |_| true, now).is_err());
    assert!(store.get("k0", |_| true, now).is_ok());
    assert_eq!(store.entries(), 3);
    assert!(store.bytes() <= size * 3);
    assert_eq!(store.evictions(RemovalCause::Capacity), 1);
    assert!(store.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn mass_removals_shrink_the_lru_and_leave_the_rest_whole() {
    let now = Instant::now();
    let store = Store::new(64 << 20, 1, 4, Keep::NONE, None);
    for i in 0..1_000 {
        assert!(put(&store, entry(&format!("k{i}"), 0, 10, now, 60), &[]));
    }
    // Most keys go at once (the LRU's slab shrinks and moves the kept
    // nodes); the kept ones are found, in LRU order, with clean accounting.
    let removed = store.remove_where(|key, _| {
        let i: usize = key.as_str()[1..].parse().unwrap();
        (i % 50 != 0).then_some(RemovalCause::Invalidated)
    });
    assert_eq!(removed.entries, 980);
    assert!(store.audit().is_clean());
    for i in (0..1_000).step_by(50) {
        assert!(store.get(&format!("k{i}"), |_| true, now).is_ok(), "k{i} kept");
    }
    // The oldest kept key is the first evicted once the budget is tight.
    let evicted = store.evict_bytes(1, RemovalCause::Pressure);
    assert_eq!(evicted.entries, 1);
    assert!(store.get("k0", |_| true, now).is_err());
    assert!(store.get("k50", |_| true, now).is_ok());
    // And the store takes new keys as before.
    for i in 1_000..1_100 {
        assert!(put(&store, entry(&format!("k{i}"), 0, 10, now, 60), &[]));
    }
    assert_eq!(store.entries(), 19 + 100);
    assert!(store.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn variants_replace_and_cap() {
    let now = Instant::now();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let listener: EvictionListener = Arc::new(move |_, cause| {
        if cause == RemovalCause::Replaced {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let store = Store::new(1 << 20, 1, 2, Keep::NONE, Some(listener));
    put(&store, entry("k", 1, 10, now, 60), &[]);
    put(&store, entry("k", 2, 10, now, 60), &[]);
    assert!(store.get("k", is_variant(1), now).is_ok());
    assert!(store.get("k", is_variant(2), now).is_ok());
    put(&store, entry("k", 2, 20, now, 60), &[]);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(store.entries(), 2);
    put(&store, entry("k", 3, 10, now, 60), &[]);
    assert_eq!(store.entries(), 2, "max two variants per URI");
    assert!(store.get("k", is_variant(1), now).is_err(), "oldest variant went first");
    assert_eq!(
        store.get("k", is_variant(9), now).err(),
        Some(Forward::VaryMiss),
        "told apart from a URI miss"
    );
    assert_eq!(store.get("nope", is_variant(9), now).err(), Some(Forward::UriMiss));
    assert!(store.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn too_large_is_refused_and_expired_dropped_on_access() {
    let now = Instant::now();
    let store = Store::new(2000, 1, 4, Keep::NONE, None);
    assert!(!put(&store, entry("big", 0, 5000, now, 60), &[]));
    assert!(put(&store, entry("k", 0, 10, now, 5), &[]));
    // A newer response too large to store still displaces the one it replaces.
    assert!(!put(&store, entry("k", 0, 5000, now, 60), &[]));
    assert_eq!(store.get("k", |_| true, now).err(), Some(Forward::UriMiss));
    assert_eq!(store.evictions(RemovalCause::Replaced), 1);
    assert!(put(&store, entry("k", 0, 10, now, 5), &[]));
    let later = now + Duration::from_secs(6);
    assert_eq!(store.get("k", |_| true, later).err(), Some(Forward::Stale));
    assert_eq!(store.entries(), 0);
    assert_eq!(store.evictions(RemovalCause::Expired), 1);
}

#[tokio::test(start_paused = true)]
async fn dependency_edges_are_charged_to_the_budget() {
    let now = Instant::now();
    let size = entry("k0", 0, 1000, now, 60).1.size();
    let tag = |i: usize| Node::Tag(format!("tag-{i}").into());
    let edge = DEPENDENCY_OVERHEAD + "tag-0".len();
    let store = Store::new(size * 2 + edge, 1, 4, Keep::NONE, None);
    assert!(put(&store, entry("k0", 0, 1000, now, 60), &[tag(0), tag(0)]));
    assert_eq!(store.bytes(), size + edge, "one edge, however often it is named");
    assert!(put(&store, entry("k1", 0, 1000, now, 60), &[]));
    // A second edge does not fit beside two entries and one edge: the least
    // recently used URI goes to make room, not the budget.
    assert!(store.get("k1", |_| true, now).is_ok());
    assert!(store.add_dependency("k1", tag(1)));
    assert!(store.get("k0", |_| true, now).is_err(), "k0 evicted for the edge");
    assert_eq!(store.bytes(), size + edge);
    assert_eq!(
        store.dependents(&tag(0)),
        Vec::<Arc<str>>::new(),
        "k0's edge went with it"
    );
    assert_eq!(store.dependents(&tag(1)), vec![Arc::<str>::from("k1")]);
    // Removing the URI releases its edges too, and says so.
    let removed = store.remove_key("k1", RemovalCause::Invalidated);
    assert_eq!(removed.bytes, size + edge);
    assert_eq!(store.bytes(), 0);
    assert!(store.audit().is_clean());
    // A URI that cannot fit beside its edge is dropped, never kept without it.
    let tight = Store::new(size + edge - 1, 1, 4, Keep::NONE, None);
    assert!(put(&tight, entry("kk", 0, 1000, now, 60), &[]));
    assert!(tight.add_dependency("kk", tag(0)));
    assert!(tight.get("kk", |_| true, now).is_err());
    assert_eq!((tight.bytes(), tight.entries()), (0, 0));
    assert!(
        !put(&tight, entry("kk", 0, 1000, now, 60), &[tag(0)]),
        "nor stored without it"
    );
    assert!(tight.audit().is_clean());
}

#[derive(Debug, Clone)]
enum Op {
    PurgeTag {
        tag: u8,
        soft: bool,
    },
    Depend {
        key: u8,
        on: u8,
    },
    Insert {
        key: u8,
        variant: u8,
        body: usize,
        ttl: u64,
        deps: Vec<u8>,
    },
    Get {
        key: u8,
        variant: u8,
    },
    Remove {
        key: u8,
    },
    Advance {
        secs: u64,
    },
    Sweep,
    Evict {
        bytes: usize,
    },
}

/// A dependency node of the model: a tag or another key.
fn node(on: u8) -> Node {
    if on % 2 == 0 {
        Node::Tag(format!("t{}", on % 4).into())
    } else {
        Node::Key(format!("k{on}").into())
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0u8..3, 0usize..3000, 1u64..50, proptest::collection::vec(0u8..30, 0..4))
            .prop_map(|(key, variant, body, ttl, deps)| Op::Insert { key, variant, body, ttl, deps }),
        1 => (0u8..4, any::<bool>()).prop_map(|(tag, soft)| Op::PurgeTag { tag, soft }),
        1 => (0u8..24, 0u8..30).prop_map(|(key, on)| Op::Depend { key, on }),
        3 => (0u8..24, 0u8..3).prop_map(|(key, variant)| Op::Get { key, variant }),
        1 => (0u8..24).prop_map(|key| Op::Remove { key }),
        1 => (0u64..20).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Sweep),
        1 => (0usize..8000).prop_map(|bytes| Op::Evict { bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The store never exceeds its budget, its counters always equal the sum
    /// of the live entries, and what was just inserted or removed is visible.
    #[test]
    fn accounting_model(ops in proptest::collection::vec(op(), 1..200), shards in 1usize..4, budget in 4_000usize..30_000) {
        let start = Instant::now();
        let mut now = start;
        let store = Store::new(budget, shards, 2, Keep::NONE, None);
        for op in ops {
            match op {
                Op::Insert { key, variant, body, ttl, deps } => {
                    let tags = ["t0", "t1", "t2", "t3"];
                    let mine: Vec<&str> = tags.iter().copied().filter(|t| (key as usize + t.len() + variant as usize) % 3 != 0 || t.ends_with(&(key % 4).to_string())).collect();
                    let e = tagged(&format!("k{key}"), variant, body, now, ttl, &mine);
                    let deps: Vec<Node> = deps.into_iter().map(node).collect();
                    let fits = e.1.size() <= store.shard_budget();
                    let name = format!("k{key}");
                    let had = store.metadata().iter().any(|m| *m.key == *name);
                    let stored = put(&store, e, &deps);
                    if !had && deps.is_empty() {
                        prop_assert_eq!(stored, fits);
                    }
                    prop_assert!(fits || !stored);
                    // A refused response still displaces the variant it would have replaced.
                    let found = store.get(&name, is_variant(variant), now).is_ok();
                    prop_assert_eq!(found, stored);
                    if stored {
                        for dep in &deps {
                            prop_assert!(store.dependents(dep).contains(&format!("k{key}").into()), "a stored entry keeps its dependencies");
                        }
                    }
                }
                Op::Get { key, variant } => {
                    if let Ok(e) = store.get(&format!("k{key}"), is_variant(variant), now) {
                        prop_assert!(e.expires_at(Keep::NONE) > now, "expired entry served");
                    }
                }
                Op::Remove { key } => {
                    store.remove_key(&format!("k{key}"), RemovalCause::Invalidated);
                    let gone = store.get(&format!("k{key}"), |_| true, now).is_err();
                    prop_assert!(gone);
                }
                Op::Advance { secs } => now += Duration::from_secs(secs),
                Op::Sweep => {
                    store.sweep(now);
                    prop_assert!(store.metadata().iter().all(|m| m.expires_at > now));
                }
                Op::PurgeTag { tag, soft } => {
                    let tag = format!("t{tag}");
                    let mode = if soft { Purge::Soft } else { Purge::Hard };
                    store.purge_tag(&tag, mode);
                    if !soft {
                        prop_assert!(store.metadata().iter().all(|m| !m.tags.iter().any(|t| **t == *tag)));
                    }
                }
                Op::Depend { key, on } => {
                    let node = node(on);
                    let name = format!("k{key}");
                    let stored = store.metadata().iter().any(|m| *m.key == *name);
                    let added = store.add_dependency(&name, node.clone());
                    prop_assert_eq!(added, stored, "dependencies attach to stored URIs only");
                    let still = store.metadata().iter().any(|m| *m.key == *name);
                    prop_assert!(!still || store.dependents(&node).contains(&name.as_str().into()), "kept only with its dependency");
                    for dependent in store.dependents(&node) {
                        prop_assert!(store.metadata().iter().any(|m| m.key == dependent), "index holds a gone key");
                    }
                }
                Op::Evict { bytes } => {
                    let before = store.bytes();
                    let removed = store.evict_bytes(bytes, RemovalCause::Pressure);
                    prop_assert_eq!(before - store.bytes(), removed.bytes);
                    prop_assert!(removed.bytes >= bytes.min(before));
                }
            }
            prop_assert!(store.bytes() <= budget);
            let audit = store.audit();
            prop_assert!(audit.is_clean(), "drift: {:?}", audit);
            prop_assert_eq!(audit.bytes, store.bytes());
        }
    }
}
