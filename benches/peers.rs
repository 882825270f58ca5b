//! The cache layer side by side with its peers, each in front of the same
//! bare service (a 1 KiB response with `Cache-Control: max-age=3600`), in
//! the same run:
//!
//! - `peers_hit/*`: one request at a time on a current-thread runtime, all
//!   hits on one key;
//! - `peers_zipf64/*`: 64 tasks on a 2-worker runtime over Zipf-distributed
//!   keys (10,000 keys, all stored beforehand).
//!
//! The peers, each with its in-memory store and room for every key:
//! `tower-http-cache` (moka, with `respect_cache_control`),
//! `http-cache-tower` (`http-cache`'s `MokaManager`) and
//! `tower-resilience-cache` (a memoizing LRU behind a mutex, keyed by URI,
//! with no HTTP semantics: it keeps any response for its TTL). Each setup checks that
//! its measured requests are hits (the upstream is called once per key).
//! Besides criterion's medians, each peer's time is measured against ours
//! in alternating rounds (`common::interleaved_runs`), and the report prints
//! those ratios last.
//!
//! Run with `cargo bench --bench peers`.

#[path = "common/mod.rs"]
mod common;
#[path = "common/peer_caches.rs"]
mod peer_caches;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::Full;
use peer_caches::Boxed;
use tower::{Service, ServiceExt as _};

/// Keys of the Zipf run; every store has room for all of them.
const KEYS: usize = 10_000;

/// The bare 1 KiB service, counting its calls in `calls`.
fn upstream(
    calls: Arc<AtomicU64>,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let bare = common::bare_1k();
    tower::service_fn(move |req| {
        calls.fetch_add(1, Ordering::Relaxed);
        bare.clone().oneshot(req)
    })
}

/// The contestants, in report order: name, service, its upstream's calls.
fn contestants(max_entries: u64) -> Vec<(&'static str, Boxed, Arc<AtomicU64>)> {
    std::iter::once("bare")
        .chain(peer_caches::NAMES)
        .map(|name| {
            let calls = Arc::new(AtomicU64::new(0));
            let svc = peer_caches::layered(name, max_entries, upstream(calls.clone()));
            (name, svc, calls)
        })
        .collect()
}

/// Ratios of each peer's time to ours, measured in alternating rounds.
static VERSUS_OURS: std::sync::Mutex<Vec<(String, common::Ratio)>> = std::sync::Mutex::new(Vec::new());

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = "http://api.test/items/42".parse().unwrap();
    let contestants = rt.block_on(async { contestants(KEYS as u64 * 2) });
    for (_, svc, _) in &contestants {
        // The miss that stores, then a hit every time.
        rt.block_on(common::one(&mut svc.clone(), &uri));
    }
    let mut group = c.benchmark_group("peers_hit");
    for (name, svc, _) in &contestants {
        group.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| common::repeat(svc.clone(), uri.clone(), iters));
        });
    }
    group.finish();
    for (name, _, calls) in &contestants[1..] {
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "{name}: every measured request was a hit"
        );
    }
    if common::selected("peers_hit") {
        let ours = &contestants[1].1;
        for (name, peer, _) in &contestants[2..] {
            let ratio = common::interleaved_runs(
                &rt,
                || common::repeat(ours.clone(), uri.clone(), common::BATCH),
                || common::repeat(peer.clone(), uri.clone(), common::BATCH),
            );
            VERSUS_OURS.lock().unwrap().push((format!("peers_hit/{name}"), ratio));
        }
    }
}

fn zipf(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = Arc::new(common::zipf_keys(KEYS, common::ZIPF_TASKS * common::ZIPF_PER_TASK));
    let contestants = rt.block_on(async { contestants(KEYS as u64 * 2) });
    rt.block_on(async {
        for (_, svc, _) in &contestants[1..] {
            let mut svc = svc.clone();
            for k in 0..KEYS {
                common::one(&mut svc, &format!("http://api.test/items/{k}").parse().unwrap()).await;
            }
        }
    });
    let mut group = c.benchmark_group("peers_zipf64");
    group.throughput(criterion::Throughput::Elements(
        (common::ZIPF_TASKS * common::ZIPF_PER_TASK) as u64,
    ));
    for (name, svc, _) in &contestants {
        group.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| common::zipf_iters(svc.clone(), keys.clone(), iters));
        });
    }
    group.finish();
    for (name, _, calls) in &contestants[1..] {
        assert_eq!(
            calls.load(Ordering::Relaxed),
            KEYS as u64,
            "{name}: every measured request was a hit"
        );
    }
    if common::selected("peers_zipf64") {
        let ours = &contestants[1].1;
        for (name, peer, _) in &contestants[2..] {
            let ratio = common::interleaved_runs(
                &rt,
                || common::zipf_run(ours.clone(), keys.clone()),
                || common::zipf_run(peer.clone(), keys.clone()),
            );
            VERSUS_OURS
                .lock()
                .unwrap()
                .push((format!("peers_zipf64/{name}"), ratio));
        }
    }
}

fn report() {
    for group in ["peers_hit", "peers_zipf64"] {
        let Some(ours) = common::median(group, "tower-optimizer") else {
            continue;
        };
        let bare = common::median(group, "bare").unwrap_or(f64::NAN);
        println!(
            "{group}: bare {:.0} ns, tower-optimizer {:.0} ns ({:.2}x bare)",
            bare,
            ours,
            ours / bare
        );
        for peer in ["tower-http-cache", "http-cache-tower", "tower-resilience-cache"] {
            if let Some(t) = common::median(group, peer) {
                println!("  {peer}: {t:.0} ns, {:.2}x tower-optimizer's time", t / ours);
            }
        }
    }
    common::print_versus_ours(&VERSUS_OURS.lock().unwrap(), "tower-optimizer");
}

fn main() {
    let mut c = common::criterion();
    hit(&mut c);
    zipf(&mut c);
    c.final_summary();
    report();
}
