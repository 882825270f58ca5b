//! Helpers shared by the bench binaries.
// Each bench binary uses a different subset of these.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};

/// Criterion settings for a noisy 2-core machine: short, fewer samples.
pub fn criterion() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40)
        .configure_from_args()
}

/// Sends one GET for `uri` and reads the whole body; the body's length.
pub async fn one<S, B>(svc: &mut S, uri: &Uri) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = Request::get(uri.clone()).body(Full::default()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    res.into_body().collect().await.unwrap().to_bytes().len()
}

/// Sends `iters` requests for `uri` one after another; the elapsed time.
pub async fn repeat<S, B>(svc: S, uri: Uri, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    repeat_over(svc, std::slice::from_ref(&uri), iters).await
}

/// Sends a request for each of `uris` in turn, `iters` times over, one
/// after another; the elapsed time.
pub async fn repeat_over<S, B>(mut svc: S, uris: &[Uri], iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        for uri in uris {
            std::hint::black_box(one(&mut svc, uri).await);
        }
    }
    start.elapsed()
}

/// Measures `bare` and then `layered` answering the same GET of `uri`, in
/// one group (`group/bare`, `group/name`), so their medians compare within
/// one run on the same runtime; then (when the command line selects
/// `group`) the same pair in [`BATCH`]es [`interleaved_runs`], whose ratio [`paired`] reads
/// back for the report.
pub fn versus<A, L, RA, RL>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    uri: &Uri,
    bare: &A,
    (name, layered): (&str, &L),
) where
    A: Service<Request<Full<Bytes>>, Response = Response<RA>> + Clone,
    A::Error: std::fmt::Debug,
    RA: http_body::Body<Data = Bytes>,
    RA::Error: std::fmt::Debug,
    L: Service<Request<Full<Bytes>>, Response = Response<RL>> + Clone,
    L::Error: std::fmt::Debug,
    RL: http_body::Body<Data = Bytes>,
    RL::Error: std::fmt::Debug,
{
    let group_name = group;
    let mut group = c.benchmark_group(group_name);
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter_custom(|iters| repeat(bare.clone(), uri.clone(), iters));
    });
    group.bench_function(name, |b| {
        b.to_async(rt)
            .iter_custom(|iters| repeat(layered.clone(), uri.clone(), iters));
    });
    group.finish();
    if selected(group_name) {
        let ratio = interleaved_runs(
            rt,
            || repeat(bare.clone(), uri.clone(), BATCH),
            || repeat(layered.clone(), uri.clone(), BATCH),
        );
        record(group_name, ratio);
    }
}

/// Whether the filter given on the command line selects `group`, for the
/// measurements made outside criterion: no filter, or one that begins with
/// the group's name (`hit`, `^hit/`); never in criterion's test mode.
/// Criterion reads the filter as a regex; this reads only the plain
/// prefixes the README's commands use.
pub fn selected(group: &str) -> bool {
    // Criterion's options that take a value, which is not a filter.
    const VALUED: [&str; 14] = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--measurement-time",
        "--warm-up-time",
        "--sample-size",
        "--profile-time",
        "--output-format",
        "--color",
        "--significance-level",
        "--noise-threshold",
        "--confidence-level",
        "--nresamples",
    ];
    // Criterion's smoke mode measures nothing, and neither does this: asked
    // for with `--test`, or the binary run without the `--bench` that
    // `cargo bench` passes (`cargo test --benches`, what CI runs). `--list`
    // measures nothing either.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test" || a == "--list") {
        return false;
    }
    let mut args = std::env::args().skip(1);
    let mut filter = None;
    while let Some(arg) = args.next() {
        if VALUED.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg);
            break;
        }
    }
    filter.is_none_or(|f| {
        let f = f.trim_start_matches('^');
        let name = format!("{group}/");
        name.starts_with(f) || f.starts_with(&name)
    })
}

/// Rounds of [`interleaved_runs`], and requests per side in each round of [`versus`].
pub const ROUNDS: usize = 61;
pub const BATCH: u64 = 2_000;

/// The layered run's time over the bare one's, measured in alternating
/// rounds ([`ROUNDS`] of them, which side goes first alternating too; each
/// of `bare()` and `layered()` returns how long one run took), so a burst
/// of load from elsewhere on a noisy machine falls on both sides of a round
/// alike: the median of the per-round ratios and its quartiles. Criterion
/// measures each side in one stretch, seconds apart, and its two medians
/// can disagree by more than the layer's cost; this is the ratio the
/// benches report.
pub fn interleaved_runs<FA, FL, A, L>(rt: &tokio::runtime::Runtime, mut bare: FA, mut layered: FL) -> Ratio
where
    FA: FnMut() -> A,
    FL: FnMut() -> L,
    A: std::future::Future<Output = Duration>,
    L: std::future::Future<Output = Duration>,
{
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let (a, l) = if round % 2 == 0 {
                let a = rt.block_on(bare());
                (a, rt.block_on(layered()))
            } else {
                let l = rt.block_on(layered());
                (rt.block_on(bare()), l)
            };
            l.as_secs_f64() / a.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    Ratio {
        median: ratios[ROUNDS / 2],
        low: ratios[ROUNDS / 4],
        high: ratios[ROUNDS * 3 / 4],
    }
}

/// Keeps `group`'s interleaved ratio for [`paired`].
pub fn record(group: &str, ratio: Ratio) {
    PAIRED.lock().unwrap().push((group.to_owned(), ratio));
}

/// Prints `group`'s interleaved ratio, if measured, as the layered
/// service's throughput against the bare one's, with `target`.
pub fn print_paired_throughput(group: &str, target: &str) {
    if let Some(r) = paired(group) {
        println!(
            "{group}, interleaved with bare: throughput {:.0}% of bare (quartiles {:.0}-{:.0}%, {ROUNDS} rounds) (target {target})",
            100.0 / r.median,
            100.0 / r.high,
            100.0 / r.low
        );
    }
}

static PAIRED: std::sync::Mutex<Vec<(String, Ratio)>> = std::sync::Mutex::new(Vec::new());

/// The interleaved ratio [`versus`] measured for `group` in this run.
pub fn paired(group: &str) -> Option<Ratio> {
    PAIRED.lock().unwrap().iter().find(|(g, _)| g == group).map(|(_, r)| *r)
}

/// Prints `group`'s interleaved ratio, if measured, against `target`.
pub fn print_paired(group: &str, target: &str) {
    if let Some(ratio) = paired(group) {
        println!("{group}, interleaved with bare: ratio {ratio} (target {target})");
    }
}

/// A ratio from [`interleaved_runs`]: median and quartiles over its rounds.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} (quartiles {:.2}-{:.2}, {ROUNDS} interleaved rounds of {BATCH})",
            self.median, self.low, self.high
        )
    }
}

/// Prints each peer's time over ours, measured in alternating rounds, as
/// `name, interleaved with ours: time ratio ...`.
pub fn print_versus_ours(ratios: &[(String, Ratio)], ours: &str) {
    for (name, r) in ratios {
        println!(
            "{name}, interleaved with {ours}: time ratio {:.2} (quartiles {:.2}-{:.2}, {ROUNDS} rounds)",
            r.median, r.low, r.high
        );
    }
}

/// Tasks of [`versus_tasks`], and requests each sends.
pub const TASKS: usize = 64;
pub const PER_TASK: u64 = 200;

/// Runs [`TASKS`] tasks of [`PER_TASK`] requests for `uri` through clones
/// of `svc`; the elapsed time.
pub async fn tasks<S, B>(svc: S, uri: Uri) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    // Each task parses its own copy: clones of one `Uri` share one count,
    // which 64 tasks on two threads would fight over (in bare and layered
    // alike), measuring the harness instead of the layer.
    let uris: Vec<Uri> = (0..TASKS).map(|_| uri.to_string().parse().unwrap()).collect();
    let start = Instant::now();
    let handles: Vec<_> = uris
        .into_iter()
        .map(|uri| tokio::spawn(repeat(svc.clone(), uri, PER_TASK)))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

/// Like [`versus`], with [`TASKS`] tasks on the multi-thread runtime `rt`
/// (`group/bare` and `group/name`, throughput in requests).
pub fn versus_tasks<A, L, RA, RL>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    uri: &Uri,
    bare: &A,
    (name, layered): (&str, &L),
) where
    A: Service<Request<Full<Bytes>>, Response = Response<RA>> + Clone + Send + 'static,
    A::Error: std::fmt::Debug + Send,
    A::Future: Send,
    RA: http_body::Body<Data = Bytes> + Send + 'static,
    RA::Error: std::fmt::Debug,
    L: Service<Request<Full<Bytes>>, Response = Response<RL>> + Clone + Send + 'static,
    L::Error: std::fmt::Debug + Send,
    L::Future: Send,
    RL: http_body::Body<Data = Bytes> + Send + 'static,
    RL::Error: std::fmt::Debug,
{
    let mut criterion_group = c.benchmark_group(group);
    criterion_group.throughput(criterion::Throughput::Elements(TASKS as u64 * PER_TASK));
    bench_tasks(&mut criterion_group, rt, "bare", uri, bare);
    bench_tasks(&mut criterion_group, rt, name, uri, layered);
    criterion_group.finish();
    if selected(group) {
        let ratio = interleaved_runs(
            rt,
            || tasks(bare.clone(), uri.clone()),
            || tasks(layered.clone(), uri.clone()),
        );
        record(group, ratio);
    }
}

/// One function of [`versus_tasks`]: [`tasks`] through clones of `svc`.
fn bench_tasks<S, B>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    uri: &Uri,
    svc: &S,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (uri, svc) = (uri.clone(), svc.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tasks(svc.clone(), uri.clone()).await;
                }
                total
            }
        });
    });
}

/// Criterion's median estimate (ns) for `group/function` from this run.
pub fn median(group: &str, function: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let text = std::fs::read_to_string(format!("{dir}/criterion/{group}/{function}/new/estimates.json")).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let point = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    point[..point.find([',', '}'])?].trim().parse().ok()
}

/// The 1 KiB body the bare service answers with.
pub static BODY: [u8; 1024] = [b'x'; 1024];

/// The bare inner service of the cache benches: builds a 1 KiB response
/// with typical headers on every call.
pub fn bare_1k()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "max-age=3600")
                .header("etag", "\"0123456789\"")
                .header("content-length", "1024")
                .body(Full::new(Bytes::copy_from_slice(&BODY)))
                .unwrap(),
        )
    })
}

/// The bare inner service of the layer benches: a small JSON response.
pub fn bare_small()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                .unwrap(),
        )
    })
}

/// Measures what timing one call costs at least, two reads of tokio's clock
/// and their difference, as `group/clock`: on a 2-core VM each read is a
/// `clock_gettime` of tens of nanoseconds, which bounds how close a layer
/// that times its calls can come to a bare service of a few hundred.
pub fn clock_pair(c: &mut Criterion, group: &str) {
    let mut group = c.benchmark_group(group);
    group.bench_function("clock", |b| {
        b.iter(|| {
            let start = tokio::time::Instant::now();
            std::hint::black_box(tokio::time::Instant::now().saturating_duration_since(start))
        });
    });
    group.finish();
}

/// Prints the ratio two clock reads alone put above `bare` in `group`.
pub fn print_clock_floor(group: &str) {
    if let (Some(bare), Some(clock)) = (median(group, "bare"), median(group, "clock")) {
        println!(
            "{group}: two clock reads alone cost {clock:.0} ns, a floor of {:.2} for a layer that times each call",
            (bare + clock) / bare
        );
    }
}

/// Keys drawn from a Zipf(1) distribution over `n` keys, deterministic.
pub fn zipf_keys(n: usize, count: usize) -> Vec<Uri> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let k = cdf.partition_point(|&p| p < u).min(n - 1);
            format!("http://api.test/items/{k}").parse().unwrap()
        })
        .collect()
}

/// Tasks of [`zipf_run`], and requests each sends.
pub const ZIPF_TASKS: usize = 64;
pub const ZIPF_PER_TASK: usize = 200;

/// [`ZIPF_TASKS`] tasks on the current runtime, each sending its share of
/// `keys` through a clone of `svc`; the elapsed time.
pub async fn zipf_run<S, B>(svc: S, keys: std::sync::Arc<Vec<Uri>>) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(ZIPF_TASKS);
    for t in 0..ZIPF_TASKS {
        let mut svc = svc.clone();
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ZIPF_PER_TASK {
                one(&mut svc, &keys[(t * ZIPF_PER_TASK + i) % keys.len()]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// `iters` runs of [`zipf_run`] one after another; their total time.
pub async fn zipf_iters<S, B>(svc: S, keys: std::sync::Arc<Vec<Uri>>, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::fmt::Debug,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += zipf_run(svc.clone(), keys.clone()).await;
    }
    total
}
