//! Cache benchmarks, each against a baseline measured in the same run:
//!
//! - `hit/bare` vs `hit/cache`: one request answered by a bare service that
//!   builds a 1 KiB response, and by the cache in front of it (a hit).
//! - `hit_omit/*`: the same, from a cache built with
//!   `StatusExtension::Omit` (no `CacheStatus` extension): what it costs.
//! - `zipf64/bare` vs `zipf64/cache`: 64 tasks on a 2-worker runtime, each
//!   sending requests for Zipf-distributed keys (10,000 keys, s = 1).
//! - `zipf1/bare` vs `zipf1/cache`: the same keys from one task on a
//!   current-thread runtime, to tell what the threads add from what a hit
//!   on many entries costs by itself.
//! - `miss/*`: a miss that stores (unique keys) and 64 coalesced misses.
//! - `no_store/bare` vs `no_store/cache`: a miss whose response may not be
//!   stored, against the bare service answering it.
//!
//! The per-entry memory overhead is measured by `benches/overhead.rs`, in
//! its own binary so its counting allocator does not slow these.
//!
//! Run with `cargo bench --bench cache`; the last lines print the median
//! ratios read back from criterion's estimates.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower::{Service, service_fn};
use tower_optimizer::cache::{Cache, CacheLayer, StatusExtension};

use common::{BODY, bare_1k as bare};

fn cache(max_bytes: usize) -> Cache {
    cache_with(max_bytes, StatusExtension::Insert)
}

fn cache_with(max_bytes: usize, extension: StatusExtension) -> Cache {
    Cache::builder()
        .max_bytes(max_bytes)
        .sweep_interval(None)
        .status_extension(extension)
        .build()
        .unwrap()
}

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = "http://api.test/items/42".parse().unwrap();
    let cache = rt.block_on(async { cache(64 << 20) });
    let mut cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), bare());
    rt.block_on(common::one(&mut cached, &uri));
    common::versus(c, &rt, "hit", &uri, &bare(), ("cache", &cached));
    assert_eq!(cache.stats().misses, 1, "every measured request was a hit");
    // The same hit from a cache that leaves the `CacheStatus` extension
    // out: what the extension costs.
    let omitting = rt.block_on(async { cache_with(64 << 20, StatusExtension::Omit) });
    let mut omitted = tower::Layer::layer(&CacheLayer::new(omitting.clone()), bare());
    rt.block_on(common::one(&mut omitted, &uri));
    common::versus(c, &rt, "hit_omit", &uri, &bare(), ("cache", &omitted));
    assert_eq!(omitting.stats().misses, 1, "every measured request was a hit");
}

fn zipf(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = Arc::new(common::zipf_keys(10_000, common::ZIPF_TASKS * common::ZIPF_PER_TASK));
    let mut group = c.benchmark_group("zipf64");
    group.throughput(criterion::Throughput::Elements(
        (common::ZIPF_TASKS * common::ZIPF_PER_TASK) as u64,
    ));
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::zipf_iters(bare(), keys.clone(), iters));
    });
    let cache = rt.block_on(async { cache(256 << 20) });
    let cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), bare());
    rt.block_on(async {
        let mut warm = cached.clone();
        for k in 0..10_000 {
            common::one(&mut warm, &format!("http://api.test/items/{k}").parse().unwrap()).await;
        }
    });
    group.bench_function("cache", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::zipf_iters(cached.clone(), keys.clone(), iters));
    });
    group.finish();
    if common::selected("zipf64") {
        let ratio = common::interleaved_runs(
            &rt,
            || common::zipf_run(bare(), keys.clone()),
            || common::zipf_run(cached.clone(), keys.clone()),
        );
        common::record("zipf64", ratio);
    }
    zipf_one_thread(c, &cached, &keys);
    assert_eq!(cache.stats().misses, 10_000, "every measured request was a hit");
}

/// The same keys in the same order from one task on a current-thread
/// runtime: no thread shares a lock or a line with another, so the gap to
/// bare here is what a hit on 10,000 entries costs by itself (cold entries
/// included), and the rest of the `zipf64` gap is what the threads add.
fn zipf_one_thread<S, B>(c: &mut Criterion, cached: &S, keys: &Arc<Vec<Uri>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("zipf1");
    group.throughput(criterion::Throughput::Elements(keys.len() as u64));
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::repeat_over(bare(), keys, iters));
    });
    group.bench_function("cache", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::repeat_over(cached.clone(), keys, iters));
    });
    group.finish();
}

fn miss(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("miss");
    let cache = rt.block_on(async { cache(32 << 20) });
    let cached = tower::Layer::layer(&CacheLayer::new(cache.clone()), bare());
    let counter = AtomicU64::new(0);
    group.bench_function("store", |b| {
        b.to_async(&rt).iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let uri: Uri = format!("http://api.test/unique/{n}").parse().unwrap();
            let mut svc = cached.clone();
            async move { common::one(&mut svc, &uri).await }
        });
    });
    // 64 concurrent requests for one new key: one upstream call (which
    // yields once, as a real one would), 63 waiters.
    let slow = service_fn(|_req: Request<Full<Bytes>>| async {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=3600")
                .body(Full::new(Bytes::copy_from_slice(&BODY)))
                .unwrap(),
        )
    });
    let coalescing = tower::Layer::layer(&CacheLayer::new(cache.clone()), slow);
    for (name, with_cache) in [("coalesced64_bare", false), ("coalesced64_cache", true)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let uri: Uri = format!("http://api.test/hot/{n}").parse().unwrap();
                let coalescing = coalescing.clone();
                async move {
                    let mut tasks = Vec::with_capacity(64);
                    for _ in 0..64 {
                        let uri = uri.clone();
                        if with_cache {
                            let mut svc = coalescing.clone();
                            tasks.push(tokio::spawn(async move { common::one(&mut svc, &uri).await }));
                        } else {
                            let mut svc = slow;
                            tasks.push(tokio::spawn(async move { common::one(&mut svc, &uri).await }));
                        }
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
            });
        });
    }
    group.finish();
    // A miss the cache cannot store (`no-store`): what passing through
    // costs (key, lookup, flight, the head kept for `Vary`, response
    // directives, `Cache-Status`), the same work every miss does before
    // its response turns out storable or not.
    let no_store = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(Full::new(Bytes::copy_from_slice(&BODY)))
                .unwrap(),
        )
    });
    let passing = tower::Layer::layer(&CacheLayer::new(cache.clone()), no_store);
    let uri: Uri = "http://api.test/no-store".parse().unwrap();
    common::versus(c, &rt, "no_store", &uri, &no_store, ("cache", &passing));
}

fn report() {
    let ratio = |g: &str, a: &str, b: &str| Some(common::median(g, a)? / common::median(g, b)?);
    if let (Some(bare), Some(cache)) = (common::median("hit", "bare"), common::median("hit", "cache")) {
        println!(
            "hit path: bare {bare:.0} ns, cache {cache:.0} ns, ratio of criterion's medians {:.2} (target <= 1.3)",
            cache / bare
        );
    }
    common::print_paired("hit", "<= 1.3");
    common::print_paired("hit_omit", "<= 1.3; StatusExtension::Omit, outside the target's terms");
    if let Some(r) = ratio("zipf64", "bare", "cache") {
        println!("zipf64 hit throughput: {:.0}% of bare (target >= 70%)", r * 100.0);
    }
    common::print_paired_throughput("zipf64", ">= 70%");
    if let Some(r) = ratio("zipf1", "bare", "cache") {
        println!(
            "the same Zipf keys from one thread: hit throughput {:.0}% of bare",
            r * 100.0
        );
    }
    if let (Some(miss), Some(hit)) = (common::median("miss", "store"), common::median("hit", "cache")) {
        println!("miss that stores: {miss:.0} ns ({:.1}x a hit)", miss / hit);
    }
    if let (Some(bare), Some(cache)) = (common::median("no_store", "bare"), common::median("no_store", "cache")) {
        println!("a miss that is not stored: +{:.0} ns over bare", cache - bare);
    }
    if let Some(r) = ratio("miss", "coalesced64_cache", "coalesced64_bare") {
        println!("64 coalesced misses vs 64 bare calls: ratio {r:.2}");
    }
}

/// Runs every group with this file's settings (short, for a 2-core machine).
fn benches() {
    let mut c = common::criterion();
    hit(&mut c);
    zipf(&mut c);
    miss(&mut c);
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
