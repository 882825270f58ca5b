//! Per-entry memory overhead of the cache, measured with a counting
//! allocator: bytes really allocated per stored entry beyond its key, header
//! text and body, against what the byte budget charges for it.
//!
//! `cargo bench --bench overhead` prints the figures and fails if the budget
//! charges less than the real cost.

#[path = "common/mod.rs"]
mod common;

use http::Uri;
use http_body_util::BodyExt as _;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer as _, Service as _, ServiceExt as _};
use tower_optimizer::cache::{
    Cache, CacheLayer, DEPENDENCY_OVERHEAD, ENTRY_OVERHEAD, HEADER_INDEX_OVERHEAD, HEADER_OVERHEAD, Node, Tags,
};
use tower_optimizer::invalidation::Invalidator;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Entries each bench stores: enough that one-off allocations vanish.
const N: usize = 20_000;

/// The `Date` and `Server` lines most real upstreams add, for the second
/// shape measured: 8 stored lines, where the 1 KiB response has 6.
const DATE: &str = "Thu, 26 Nov 2026 10:00:00 GMT";
const SERVER: &str = "upstream/1.0";

/// The bare 1 KiB service, with `Date` and `Server` lines when `full_head`.
fn upstream(
    full_head: bool,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::util::MapResponseLayer::new(move |mut response: http::Response<_>| {
        if full_head {
            response
                .headers_mut()
                .insert("date", http::HeaderValue::from_static(DATE));
            response
                .headers_mut()
                .insert("server", http::HeaderValue::from_static(SERVER));
        }
        response
    })
    .layer(common::bare_1k())
}

/// A current-thread runtime, and a cache built on it with room for
/// everything each bench stores.
fn runtime_and_cache() -> (tokio::runtime::Runtime, Cache) {
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
    (rt, cache)
}

/// The `N` URIs each bench stores.
fn uris() -> Vec<Uri> {
    (0..N)
        .map(|i| format!("http://api.test/items/{i:08}").parse().unwrap())
        .collect()
}

/// Bytes `svc` allocates, net, per URI while it answers each of [`uris`]
/// twice (a miss that stores, then a hit, so lazily allocated state shows
/// up too), after one request that warms one-off allocations.
fn allocated_per_entry<S, B>(rt: &tokio::runtime::Runtime, svc: &mut S) -> f64
where
    S: tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::fmt::Debug,
{
    let uris = uris();
    rt.block_on(common::one(svc, &"http://warm.test/".parse().unwrap()));
    let region = Region::new(GLOBAL);
    rt.block_on(async {
        for _ in 0..2 {
            for uri in &uris {
                common::one(svc, uri).await;
            }
        }
    });
    let change = region.change();
    (change.bytes_allocated as i64 - change.bytes_deallocated as i64) as f64 / N as f64
}

/// A runtime, a cache with room for everything, the service behind it, and
/// `N` distinct URIs.
fn setup(
    full_head: bool,
) -> (
    tokio::runtime::Runtime,
    Cache,
    impl tower::Service<
        http::Request<http_body_util::Full<bytes::Bytes>>,
        Response = http::Response<impl http_body::Body<Data = bytes::Bytes, Error = impl std::fmt::Debug>>,
        Error = impl std::fmt::Debug,
    >,
    Vec<Uri>,
) {
    let (rt, cache) = runtime_and_cache();
    let cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream(full_head));
    (rt, cache, cached, uris())
}

/// Measures the bytes the cache really allocates per stored entry, beyond
/// key, header text and body, and checks the budget charges at least that.
/// `lines`: the stored header lines (the upstream's kept ones, plus
/// `Content-Length`, `Age` and `Cache-Status`).
fn overhead(full_head: bool, lines: usize) {
    let (rt, cache, mut cached, _) = setup(full_head);
    let per_entry = allocated_per_entry(&rt, &mut cached);
    let entry = cache
        .entries()
        .into_iter()
        .find(|m| m.key.contains("items/00000001"))
        .unwrap();
    // Text the entry holds: key, body, and the header values it stores.
    // `Content-Type` and `Cache-Control` values come from a process-wide
    // table of recurring values and `Content-Length`'s digits are static
    // text, so of the header text only the `ETag` (and `Date` and
    // `Server`) is allocated per entry; counting the others here would
    // hide overhead behind text never allocated.
    let key_len = entry.key.len();
    let mut header_text = "\"0123456789\"".len();
    if full_head {
        header_text += DATE.len() + SERVER.len();
    }
    let payload = key_len + header_text + common::BODY.len();
    let overhead = per_entry - payload as f64;
    // The budget charges each line, and the map's hash index (a power of
    // two of 4-byte slots, 4 for every 3 lines of capacity).
    let raw = (lines + lines / 3).next_power_of_two();
    let capacity = raw - raw / 4;
    let charged_headers = lines * HEADER_OVERHEAD + capacity * HEADER_INDEX_OVERHEAD;
    let charged_overhead = ENTRY_OVERHEAD + charged_headers;
    let header_storage = header_storage(lines);
    println!("{lines} header lines: {per_entry:.0} B allocated per entry, {payload} B of key+header text+body");
    println!(
        "  overhead {overhead:.0} B = {header_storage} B header storage (measured) + {:.0} B beyond key, headers and body; charged {charged_headers} + {ENTRY_OVERHEAD} B",
        overhead - header_storage as f64,
    );
    println!("  budget charged per entry: {} B", cache.stats().bytes / (N as u64 + 1));
    assert!(
        overhead <= charged_overhead as f64,
        "the budget under-counts: {overhead:.0} B real overhead vs {charged_overhead} B charged"
    );
}

/// Bytes a stored header map of `lines` lines allocates, measured: a map
/// built with room for them, then copied, as the cache stores it (values
/// are static text, which allocates nothing).
fn header_storage(lines: usize) -> usize {
    let names = [
        http::header::CONTENT_TYPE,
        http::header::CACHE_CONTROL,
        http::header::ETAG,
        http::header::DATE,
        http::header::SERVER,
        http::header::CONTENT_LENGTH,
        http::header::AGE,
        http::header::VARY,
        http::header::EXPIRES,
        http::header::LAST_MODIFIED,
    ];
    let mut map = http::HeaderMap::with_capacity(lines);
    for name in names.into_iter().take(lines) {
        map.insert(name, http::HeaderValue::from_static("x"));
    }
    assert_eq!(map.len(), lines);
    let region = Region::new(GLOBAL);
    let copy = map.clone();
    let change = region.change();
    drop(copy);
    change.bytes_allocated - change.bytes_deallocated
}

/// Measures the bytes one dependency edge really costs (the worst case: each
/// stored URI gains its first edge, on a node of its own) and checks the
/// budget charges at least that.
fn dependency_overhead() {
    let (rt, cache, mut cached, uris) = setup(false);
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
            let key = cache.key_for_uri(uri).unwrap();
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

/// The rarer shape: every URI stored in two `Vary` variants, each tagged
/// and with a stale window, so each entry has its boxed rare part (its
/// secondary key, tags and windows) and each URI its boxed variant group.
/// Checks the budget still charges at least what is really allocated, and
/// prints the figure beyond key, header text, header storage and body.
fn rich_overhead(variants: usize, tags: usize) {
    const LINES: usize = 7; // five from the upstream, plus `Age` and `Cache-Status`
    let (rt, cache) = runtime_and_cache();
    let upstream = tower::service_fn(
        move |req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
            let mut response = http::Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "max-age=3600, stale-while-revalidate=60")
                .header("etag", "\"0123456789\"")
                .header("vary", "x-v")
                .header("content-length", "1024")
                .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(&common::BODY)))
                .unwrap();
            // Tags of the URI's own (as `product:42` would be): their text is
            // counted as payload.
            let tags = (0..tags).map(|t| format!("t{t}-{}", req.uri().path()).into()).collect();
            response.extensions_mut().insert(Tags(tags));
            Ok::<_, std::convert::Infallible>(response)
        },
    );
    let mut cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let uris: Vec<Uri> = (0..N / 2)
        .map(|i| format!("http://api.test/items/{i:08}").parse().unwrap())
        .collect();
    let send = |uri: &Uri, variant: &'static str| {
        http::Request::get(uri.clone())
            .header("x-v", variant)
            .body(http_body_util::Full::default())
            .unwrap()
    };
    rt.block_on(async {
        let warm = "http://warm.test/".parse().unwrap();
        let res = cached.ready().await.unwrap().call(send(&warm, "a")).await.unwrap();
        res.into_body().collect().await.unwrap();
    });
    let region = Region::new(GLOBAL);
    rt.block_on(async {
        // Each URI twice (a miss that stores, then a hit), in each variant.
        for _ in 0..2 {
            for uri in &uris {
                for variant in ["a", "b"].into_iter().take(variants) {
                    let res = cached.ready().await.unwrap().call(send(uri, variant)).await.unwrap();
                    res.into_body().collect().await.unwrap();
                }
            }
        }
    });
    let change = region.change();
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let entries = uris.len() * variants;
    assert_eq!(cache.stats().entries, entries as u64 + 1, "every variant is stored");
    let key_len = cache.key_for_uri(&uris[1]).unwrap().len();
    let tag_len = tags * "t0-/items/00000001".len();
    let payload = key_len + "\"0123456789\"".len() + tag_len + common::BODY.len();
    let per_entry = net as f64 / entries as f64;
    let beyond = per_entry - payload as f64 - header_storage(LINES) as f64;
    let charged = cache.stats().bytes as f64 / (entries as f64 + 1.0);
    println!(
        "{variants} Vary variant(s) per URI, {tags} tags of its own, a stale window: {per_entry:.0} B allocated per entry ({payload} B of key+header text+tag+body); {beyond:.0} B beyond key, headers, tag and body; budget charged per entry: {charged:.0} B"
    );
    assert_charged("the rich shape", per_entry, charged);
}

/// Many header lines: 20 of custom names (parsed at run time, as from the
/// network, so each name owns its text) with values of the response's own,
/// and 4 values of one name. Checks the budget charges at least what is
/// allocated.
fn many_headers_overhead() {
    let (rt, cache) = runtime_and_cache();
    let upstream = tower::service_fn(|req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
        let mut response = http::Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", "max-age=3600")
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(&common::BODY)))
            .unwrap();
        let headers = response.headers_mut();
        for h in 0..20 {
            let name = http::HeaderName::from_bytes(format!("x-custom-{h:02}").as_bytes()).unwrap();
            let value = http::HeaderValue::from_str(&format!("{h}-{}", req.uri().path())).unwrap();
            headers.insert(name, value);
        }
        for l in 0..4 {
            let value = http::HeaderValue::from_str(&format!("<{}/{l}>; rel=next", req.uri().path())).unwrap();
            headers.append(http::header::LINK, value);
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let per_entry = allocated_per_entry(&rt, &mut cached);
    let charged = cache.stats().bytes as f64 / (N as f64 + 1.0);
    println!(
        "28 header lines, 20 of custom names: {per_entry:.0} B allocated per entry; budget charged per entry: {charged:.0} B"
    );
    assert_charged("many header lines", per_entry, charged);
}

/// Fails if the budget charges `shape`'s entries less than they allocate.
fn assert_charged(shape: &str, per_entry: f64, charged: f64) {
    assert!(
        per_entry <= charged,
        "the budget under-counts {shape}: {per_entry:.0} B real vs {charged:.0} B charged"
    );
}

/// Bytes allocated per stored entry of the 1 KiB response (six stored
/// lines), ours and the peers' of `benches/peers.rs` (each with its
/// in-memory store), filled the same way: a miss and a hit for each of
/// `N` URIs. Printed for the README's comparison; nothing is asserted.
fn peers_memory() {
    fn measure<S, B>(name: &str, rt: &tokio::runtime::Runtime, mut svc: S)
    where
        S: tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>, Response = http::Response<B>>,
        S::Error: std::fmt::Debug,
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::fmt::Debug,
    {
        println!(
            "  {name}: {:.0} B allocated per entry",
            allocated_per_entry(rt, &mut svc)
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("the 1 KiB response, {N} entries, side by side (cargo bench --bench peers times them):");
    // Ours on the runtime its cache was built on (the cache starts tasks there).
    let (ours_rt, _cache, ours, _) = setup(false);
    measure("tower-optimizer", &ours_rt, ours);
    let thc =
        tower_http_cache::prelude::CacheLayer::builder(tower_http_cache::prelude::InMemoryBackend::new(2 * N as u64))
            .ttl(std::time::Duration::from_secs(3600))
            .respect_cache_control(true)
            .build();
    measure("tower-http-cache", &rt, thc.layer(upstream(false)));
    let hct =
        http_cache_tower::HttpCacheLayer::new(http_cache::MokaManager::new(http_cache::MokaCache::new(2 * N as u64)));
    measure("http-cache-tower", &rt, hct.layer(upstream(false)));
    let trc = tower_resilience_cache::CacheLayer::builder()
        .max_size(2 * N)
        .ttl(std::time::Duration::from_secs(3600))
        .key_extractor(|req: &http::Request<http_body_util::Full<bytes::Bytes>>| req.uri().to_string())
        .build()
        .unwrap();
    measure("tower-resilience-cache", &rt, trc.layer(upstream(false)));
}

fn main() {
    overhead(false, 6);
    overhead(true, 8);
    rich_overhead(2, 1);
    rich_overhead(2, 4);
    rich_overhead(1, 8);
    rich_overhead(1, 32);
    many_headers_overhead();
    peers_memory();
    dependency_overhead();
}
