//! The cache kept between runs, against refilling it by misses, in the
//! same run: 10,000 entries of the 1 KiB response.
//!
//! - `persist/refill_by_misses`: a fresh cache filled by 10,000 misses
//!   through the layer from the bare service (an upstream that answers at
//!   once: what a restart costs at best without a file).
//! - `persist/load`: a fresh cache filled from the saved file (in memory).
//! - `persist/save`: the full cache written to a buffer.
//!
//! `cargo bench --bench persist`; the last lines print the figures.

#[path = "common/mod.rs"]
mod common;

use criterion::{BatchSize, Criterion};
use http::Uri;
use tower_optimizer::cache::{Cache, CacheLayer};

use common::bare_1k as bare;

/// Entries saved and loaded: a cache of about 20 MiB.
const N: usize = 10_000;

fn cache() -> Cache {
    Cache::builder()
        .max_bytes(256 << 20)
        .sweep_interval(None)
        .build()
        .unwrap()
}

fn uris() -> Vec<Uri> {
    (0..N)
        .map(|k| format!("http://api.test/items/{k}").parse().unwrap())
        .collect()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uris = uris();
    let fill = |cache: &Cache| {
        let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), bare());
        rt.block_on(async {
            for uri in &uris {
                common::one(&mut svc, uri).await;
            }
        });
    };
    let full = rt.block_on(async { cache() });
    fill(&full);
    assert_eq!(full.stats().entries, N as u64);
    let mut file = Vec::new();
    let saved = full.save(&mut file).unwrap();
    assert_eq!(saved.entries, N);

    let mut group = c.benchmark_group("persist");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(N as u64));
    group.bench_function("refill_by_misses", |b| {
        b.iter_batched(
            || rt.block_on(async { cache() }),
            |fresh| fill(&fresh),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("load", |b| {
        b.iter_batched(
            || rt.block_on(async { cache() }),
            |fresh| {
                let _guard = rt.enter();
                assert_eq!(fresh.load(&file[..]).unwrap().entries, N);
                fresh
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("save", |b| {
        let mut out = Vec::with_capacity(file.len());
        b.iter(|| {
            out.clear();
            full.save(&mut out).unwrap()
        });
    });
    group.finish();
    println!(
        "file: {} bytes for {N} entries ({} per entry; the stored body is 1,024)",
        file.len(),
        file.len() / N
    );
}

fn main() {
    let mut c = common::criterion();
    benches(&mut c);
    c.final_summary();
    let per_entry = |f: &str| common::median("persist", f).map(|ns| ns / N as f64);
    if let (Some(refill), Some(load), Some(save)) =
        (per_entry("refill_by_misses"), per_entry("load"), per_entry("save"))
    {
        println!(
            "per entry: load {load:.0} ns, save {save:.0} ns, refill by a miss {refill:.0} ns; \
             loading takes {:.2}x the time of refilling from an upstream that answers at once",
            load / refill
        );
    }
}
