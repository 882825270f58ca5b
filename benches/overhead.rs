//! Per-entry memory overhead of the cache, measured with a counting
//! allocator: bytes really allocated per stored entry beyond its key, header
//! text and body, against what the byte budget charges for it.
//!
//! `cargo bench --bench overhead` prints the figures and fails if the budget
//! charges less than the real cost.

#[path = "common/mod.rs"]
mod common;

use http::Uri;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower_optimizer::cache::{Cache, CacheLayer, DEPENDENCY_OVERHEAD, ENTRY_OVERHEAD, HEADER_OVERHEAD, Node};
use tower_optimizer::invalidation::Invalidator;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Measures the bytes the cache really allocates per stored entry, beyond
/// key, header text and body, and checks the budget charges at least that.
/// Entries each bench stores: enough that one-off allocations vanish.
const N: usize = 20_000;

/// A runtime, a cache with room for everything, the bare 1 KiB service
/// behind it, and `N` distinct URIs.
fn setup() -> (
    tokio::runtime::Runtime,
    Cache,
    impl tower::Service<
        http::Request<http_body_util::Full<bytes::Bytes>>,
        Response = http::Response<impl http_body::Body<Data = bytes::Bytes, Error = impl std::fmt::Debug>>,
        Error = impl std::fmt::Debug,
    >,
    Vec<Uri>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = rt.block_on(async {
        Cache::builder()
            .max_bytes(512 << 20)
            .sweep_interval(None)
            .build()
            .unwrap()
    });
    let cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), common::bare_1k());
    let uris = (0..N)
        .map(|i| format!("http://api.test/items/{i:08}").parse().unwrap())
        .collect();
    (rt, cache, cached, uris)
}

fn overhead() {
    let (rt, cache, mut cached, uris) = setup();
    // Warm one-off allocations (runtime, flight table) before measuring.
    rt.block_on(common::one(&mut cached, &"http://warm.test/".parse().unwrap()));
    let region = Region::new(GLOBAL);
    rt.block_on(async {
        for uri in &uris {
            common::one(&mut cached, uri).await;
        }
        // A hit on each entry too: any lazily allocated state shows up now.
        for uri in &uris {
            common::one(&mut cached, uri).await;
        }
    });
    let change = region.change();
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let entry = cache
        .entries()
        .into_iter()
        .find(|m| m.key.contains("items/00000001"))
        .unwrap();
    // Text the entry holds: key, body, and the header values it stores.
    // `Content-Type` and `Cache-Control` values come from a process-wide
    // table of recurring values and `Content-Length`'s digits are static
    // text, so of the header text only the `ETag` is allocated per entry;
    // counting the others here would hide overhead behind text never
    // allocated.
    let key_len = entry.key.len();
    let header_text = "\"0123456789\"".len();
    let payload = key_len + header_text + common::BODY.len();
    let per_entry = net as f64 / N as f64;
    let overhead = per_entry - payload as f64;
    // The stored map has room for 6 lines (`HeaderMap` grows in powers of
    // two); the budget charges every slot as header storage.
    let slots = 6;
    let charged_overhead = ENTRY_OVERHEAD + slots * HEADER_OVERHEAD;
    println!("per-entry: {per_entry:.0} B allocated, {payload} B of key+header text+body");
    println!(
        "per-entry overhead: {overhead:.0} B measured = {:.0} B header-map storage ({slots} slots) + {:.0} B beyond key, headers and body; charged {} + {ENTRY_OVERHEAD} B",
        (slots * HEADER_OVERHEAD) as f64,
        overhead - (slots * HEADER_OVERHEAD) as f64,
        slots * HEADER_OVERHEAD
    );
    println!("budget charged per entry: {} B", cache.stats().bytes / (N as u64 + 1));
    assert!(
        overhead <= charged_overhead as f64,
        "the budget under-counts: {overhead:.0} B real overhead vs {charged_overhead} B charged"
    );
}

/// Measures the bytes one dependency edge really costs (the worst case: each
/// stored URI gains its first edge, on a node of its own) and checks the
/// budget charges at least that.
fn dependency_overhead() {
    let (rt, cache, mut cached, uris) = setup();
    let invalidator = Invalidator::new(cache.clone());
    rt.block_on(async {
        for uri in &uris {
            common::one(&mut cached, uri).await;
        }
    });
    // The nodes are built before measuring: the caller owns their names.
    let edges: Vec<(Node, Node)> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            let key = Cache::key_for_uri(uri).unwrap();
            (Node::Key(key.into()), Node::Tag(format!("node-{i:08}").into()))
        })
        .collect();
    let name_len = "node-00000000".len();
    let bytes_before = cache.stats().bytes;
    let region = Region::new(GLOBAL);
    for (dependent, dependency) in &edges {
        invalidator.depends_on(dependent.clone(), dependency.clone()).unwrap();
    }
    let change = region.change();
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let per_edge = net as f64 / N as f64;
    let charged = (cache.stats().bytes - bytes_before) as f64 / N as f64;
    println!(
        "per dependency edge: {per_edge:.0} B allocated; charged {charged:.0} B ({DEPENDENCY_OVERHEAD} B + the node's {name_len} B name)"
    );
    assert!(
        per_edge <= charged,
        "the budget under-counts dependency edges: {per_edge:.0} B real vs {charged:.0} B charged"
    );
    assert!(cache.audit().is_clean());
}

fn main() {
    overhead();
    dependency_overhead();
}
