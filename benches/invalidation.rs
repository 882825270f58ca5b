//! Invalidation benchmarks over a cache of 100,000 entries, each against a
//! baseline in the same run where one applies:
//!
//! - `tag/1000_of_100000`: invalidating the 1,000 entries of one tag.
//! - `version/bump`: a namespace bump (O(1)).
//! - `pattern/scan_100000`: a pattern scan over every key (time per entry
//!   is the median divided by 100,000; criterion prints it as throughput).
//! - `hit/plain` vs `hit/labelled`: a hit on an entry with no labels, and
//!   on one with tags and a version stamp while 1,000 tags and 1,000
//!   namespaces are in use (target ratio at most 1.05).
//!
//! `cargo bench --bench invalidation`; the last lines print the figures.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_optimizer::cache::{Cache, CacheLayer, Purge};
use tower_optimizer::invalidation::{HeaderVisibility, InvalidationLayer, Invalidator, Pattern, TagHeaders};

const ENTRIES: usize = 100_000;
const TAGS: usize = 1000;

type Upstream =
    tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>>;

/// Entry `i` carries tag `t{i % 1000}`, and `hot` when `i % 100 == 0`;
/// `/plain/` paths carry nothing.
#[allow(clippy::needless_pass_by_value)] // `service_fn` hands the request over by value
fn respond(req: Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let path = req.uri().path();
    let mut res = Response::builder()
        .header("cache-control", "max-age=3600")
        .header("content-type", "application/json");
    if let Some(i) = path.strip_prefix("/items/").and_then(|n| n.parse::<usize>().ok()) {
        let hot = if i % 100 == 0 { " hot" } else { "" };
        res = res.header("surrogate-key", format!("t{}{hot}", i % TAGS));
    }
    std::future::ready(Ok(res.body(Full::new(Bytes::from_static(&[b'x'; 256]))).unwrap()))
}

type Client = tower_optimizer::cache::CacheService<tower_optimizer::invalidation::InvalidationService<Upstream>>;

fn client(cache: &Cache, inv: &Invalidator) -> Client {
    // Tag headers are stripped so plain and labelled entries store the same
    // headers and the hit comparison measures the labels alone.
    let strip = TagHeaders {
        visibility: HeaderVisibility::Strip,
        ..TagHeaders::default()
    };
    let layer = InvalidationLayer::new(inv.clone()).tag_headers(strip).namespace(|req| {
        let i: usize = req.uri.path().strip_prefix("/items/")?.parse().ok()?;
        Some(format!("ns{}", i % TAGS))
    });
    let upstream: Upstream = service_fn(respond as fn(_) -> _);
    tower::Layer::layer(&CacheLayer::new(cache.clone()), tower::Layer::layer(&layer, upstream))
}

async fn get(client: &mut Client, uri: &Uri) {
    let req = Request::get(uri.clone()).body(Full::default()).unwrap();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    std::hint::black_box(res.into_body().collect().await.unwrap());
}

fn item(i: usize) -> Uri {
    format!("http://api.test/items/{i}").parse().unwrap()
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let cache = rt.block_on(async {
        Cache::builder()
            .max_bytes(1 << 30)
            .sweep_interval(None)
            .build()
            .unwrap()
    });
    let inv = Invalidator::new(cache.clone());
    let mut client = client(&cache, &inv);
    rt.block_on(async {
        for i in 0..ENTRIES {
            get(&mut client, &item(i)).await;
        }
        get(&mut client, &"http://api.test/plain/1".parse().unwrap()).await;
    });
    assert_eq!(cache.stats().entries as usize, ENTRIES + 1);

    let mut group = c.benchmark_group("tag");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("1000_of_100000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    for i in (0..ENTRIES).step_by(100) {
                        get(&mut client, &item(i)).await;
                    }
                });
                let start = Instant::now();
                let report = inv.tag("hot");
                total += start.elapsed();
                assert_eq!(report.entries, ENTRIES / 100);
            }
            total
        });
    });
    group.finish();

    let mut group = c.benchmark_group("version");
    group.bench_function("bump", |b| b.iter(|| inv.bump_version("ns-bench")));
    group.finish();

    let mut group = c.benchmark_group("pattern");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(ENTRIES as u64));
    let nothing = Pattern::path(r"^/never/\d+$").unwrap();
    group.bench_function("scan_100000", |b| {
        b.to_async(rt).iter(|| async {
            let report = inv.purge_pattern(&nothing, Purge::Hard).await;
            assert!(report.scanned >= ENTRIES - ENTRIES / 100 && report.entries == 0);
        });
    });
    group.finish();

    // Hits: an unlabelled entry vs one with tags and a version stamp.
    let plain: Uri = "http://api.test/plain/1".parse().unwrap();
    let labelled = item(4242);
    rt.block_on(get(&mut client, &labelled));
    let mut group = c.benchmark_group("hit");
    for (name, uri) in [("plain", plain), ("labelled", labelled)] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let mut client = client.clone();
                let uri = uri.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        get(&mut client, &uri).await;
                    }
                    start.elapsed()
                }
            });
        });
    }
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();
    benches(&mut c, &rt);
    c.final_summary();
    if let Some(t) = common::median("tag", "1000_of_100000") {
        println!(
            "tag invalidation, 1,000 of 100,000 entries: {:.2} ms ({:.0} ns per entry)",
            t / 1e6,
            t / 1000.0
        );
    }
    if let Some(t) = common::median("version", "bump") {
        println!("version bump: {t:.0} ns");
    }
    if let Some(t) = common::median("pattern", "scan_100000") {
        println!(
            "pattern scan over 100,000 entries: {:.2} ms ({:.0} ns per entry)",
            t / 1e6,
            t / ENTRIES as f64
        );
    }
    if let (Some(plain), Some(labelled)) = (common::median("hit", "plain"), common::median("hit", "labelled")) {
        println!(
            "hit with 1,000 tags and versions in use: {labelled:.0} ns vs {plain:.0} ns, ratio {:.3} (target <= 1.05)",
            labelled / plain
        );
    }
}
