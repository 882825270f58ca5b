//! The benchmark engine: drives a workload through any client service and
//! reports throughput, status classes and latency percentiles; its
//! validation mode re-fetches a sample of cache hits straight from the
//! upstream and reports any answer that differs beyond what HTTP allows.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_optimizer::bench::{Stop, Workload, run};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
//! });
//! let workload = Workload::urls(vec!["http://api.test/a".parse().unwrap()]).concurrency(4).stop(Stop::Requests(100));
//! let report = run(service, &workload).await;
//! assert_eq!(report.requests, 100);
//! assert_eq!(report.status_classes[2], 100, "all 2xx");
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::BoxError;
use crate::cache::CacheStatus;
use crate::monitor::Sketch;

/// When a workload ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests.
    Requests(usize),
    /// After this long.
    Duration(Duration),
}

type Generator = Arc<dyn Fn(usize) -> Uri + Send + Sync>;

/// What to send.
#[derive(Clone)]
pub struct Workload {
    generator: Generator,
    concurrency: usize,
    stop: Stop,
    rate: Option<f64>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("concurrency", &self.concurrency)
            .field("stop", &self.stop)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// GETs over `urls` in turn (an empty list sends to `/`).
    pub fn urls(urls: Vec<Uri>) -> Self {
        let urls = Arc::new(urls);
        Workload::generator(move |i| {
            urls.get(i % urls.len().max(1))
                .cloned()
                .unwrap_or_else(|| Uri::from_static("/"))
        })
    }

    /// GETs of `generate(i)` for the i-th request.
    pub fn generator(generate: impl Fn(usize) -> Uri + Send + Sync + 'static) -> Self {
        Workload {
            generator: Arc::new(generate),
            concurrency: 8,
            stop: Stop::Requests(1000),
            rate: None,
        }
    }

    /// Requests in flight at once (default 8).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// When to stop (default 1,000 requests).
    #[must_use]
    pub fn stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Pace requests to about this many per second overall.
    #[must_use]
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = (per_second > 0.0).then_some(per_second);
        self
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests that failed without a response.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Answered requests per second.
    pub throughput: f64,
    /// Responses by class: index 1 for 1xx ... 5 for 5xx (index 0 unused).
    pub status_classes: [u64; 6],
    /// Answers served from cache (fresh or stale), when a cache stamped them.
    pub cache_hits: u64,
    /// Latency quantiles in seconds (p50, p90, p99, p99.9).
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
}

#[derive(Default)]
struct Tally {
    latency: Sketch,
    requests: u64,
    errors: u64,
    classes: [u64; 6],
    hits: u64,
}

/// Runs `workload` through `service` and reports.
pub async fn run<S, B>(service: S, workload: &Workload) -> BenchReport
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = match workload.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Requests(_) => None,
    };
    let limit = match workload.stop {
        Stop::Requests(n) => n,
        Stop::Duration(_) => usize::MAX,
    };
    let mut workers = Vec::with_capacity(workload.concurrency);
    for _ in 0..workload.concurrency {
        let (service, next, generator, rate) =
            (service.clone(), next.clone(), workload.generator.clone(), workload.rate);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    return tally;
                }
                if let Some(rate) = rate {
                    // A rate so low that the slot is past any instant ends
                    // the run, as a slot past its deadline does.
                    let Some(slot) = Duration::try_from_secs_f64(i as f64 / rate)
                        .ok()
                        .and_then(|after| start.checked_add(after))
                    else {
                        return tally;
                    };
                    if deadline.is_some_and(|d| slot >= d) {
                        return tally;
                    }
                    tokio::time::sleep_until(slot).await;
                }
                let Ok(request) = Request::get(generator(i)).body(Full::default()) else {
                    tally.errors += 1;
                    continue;
                };
                let sent = Instant::now();
                match send(service.clone(), request).await {
                    Ok((status, hit)) => {
                        tally.requests += 1;
                        tally.classes[usize::from(status / 100).min(5)] += 1;
                        tally.hits += u64::from(hit);
                        tally.latency.add(sent.elapsed().as_secs_f64());
                    }
                    Err(_) => tally.errors += 1,
                }
            }
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            total.requests += t.requests;
            total.errors += t.errors;
            total.hits += t.hits;
            for (a, b) in total.classes.iter_mut().zip(t.classes) {
                *a += b;
            }
            total.latency.merge(&t.latency);
        }
    }
    let elapsed = start.elapsed();
    BenchReport {
        requests: total.requests,
        errors: total.errors,
        elapsed,
        throughput: if elapsed.is_zero() {
            0.0
        } else {
            total.requests as f64 / elapsed.as_secs_f64()
        },
        status_classes: total.classes,
        cache_hits: total.hits,
        p50: total.latency.quantile(0.5),
        p90: total.latency.quantile(0.9),
        p99: total.latency.quantile(0.99),
        p999: total.latency.quantile(0.999),
    }
}

async fn send<S, B>(service: S, request: Request<Full<Bytes>>) -> Result<(u16, bool), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let response = service.oneshot(request).await.map_err(Into::into)?;
    let status = response.status().as_u16();
    let hit = CacheStatus::of(response.extensions(), response.headers()).is_some_and(|s| s.hit);
    // Timed to the last byte, but not kept: the workload may fetch large
    // bodies from any server, many at a time.
    crate::util::drain(response.into_body()).await.map_err(Into::into)?;
    Ok((status, hit))
}

/// One answer from the cache that the upstream contradicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The URL.
    pub url: String,
    /// What differs.
    pub what: String,
}

/// What validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Cache hits compared with the upstream.
    pub checked: usize,
    /// Answers that differ beyond what HTTP allows.
    pub mismatches: Vec<Mismatch>,
}

/// Fields that legitimately differ between a cached and a fresh answer.
const VOLATILE: [&str; 7] = [
    "age",
    "date",
    "cache-status",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// Sends each URL of `urls` (up to `sample` cache hits) through `stack`,
/// and for every answer served from cache fetches the same URL straight
/// from `upstream`; reports answers whose status, body or headers (except
/// `Age`, `Date`, `Cache-Status` and framing) differ.
pub async fn validate<S, U, B, C>(stack: S, upstream: U, urls: &[Uri], sample: usize) -> ValidationReport
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    U: Service<Request<Full<Bytes>>, Response = Response<C>> + Clone,
    U::Error: Into<BoxError>,
    C: Body<Data = Bytes>,
    C::Error: Into<BoxError>,
{
    let mut report = ValidationReport::default();
    for url in urls {
        if report.checked >= sample {
            break;
        }
        let Some(cached) = fetch(stack.clone(), url).await else {
            continue;
        };
        if !cached.3 {
            continue;
        }
        report.checked += 1;
        let Some(fresh) = fetch(upstream.clone(), url).await else {
            report.mismatches.push(Mismatch {
                url: url.to_string(),
                what: "the upstream did not answer".into(),
            });
            continue;
        };
        if cached.0 != fresh.0 {
            report.mismatches.push(Mismatch {
                url: url.to_string(),
                what: format!("status {} vs {}", cached.0, fresh.0),
            });
        }
        if cached.2 != fresh.2 {
            report.mismatches.push(Mismatch {
                url: url.to_string(),
                what: format!("body of {} vs {} bytes", cached.2.len(), fresh.2.len()),
            });
        }
        for name in cached.1.keys().chain(fresh.1.keys()) {
            if VOLATILE.contains(&name.as_str()) {
                continue;
            }
            let a: Vec<_> = cached.1.get_all(name).iter().collect();
            let b: Vec<_> = fresh.1.get_all(name).iter().collect();
            if a != b {
                report.mismatches.push(Mismatch {
                    url: url.to_string(),
                    what: format!("header {name}: {a:?} vs {b:?}"),
                });
            }
        }
        report.mismatches.dedup();
    }
    report
}

async fn fetch<S, B>(service: S, url: &Uri) -> Option<(u16, HeaderMap, Bytes, bool)>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request = Request::get(url.clone()).body(Full::default()).ok()?;
    let response = service.oneshot(request).await.ok()?;
    let (parts, body) = response.into_parts();
    let hit = CacheStatus::of(&parts.extensions, &parts.headers).is_some_and(|s| s.hit);
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts.status.as_u16(), parts.headers, body, hit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test(start_paused = true)]
    async fn duration_rate_and_classes() {
        let service = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let status = if req.uri().path() == "/bad" { 503 } else { 200 };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        });
        let urls = vec![
            Uri::from_static("http://a.test/ok"),
            Uri::from_static("http://a.test/bad"),
        ];
        let report = run(
            service,
            &Workload::urls(urls)
                .concurrency(4)
                .stop(Stop::Duration(Duration::from_secs(10)))
                .rate(10.0),
        )
        .await;
        assert_eq!(report.requests, 100, "10/s for 10 s");
        assert_eq!(report.status_classes[2], report.status_classes[5]);
        assert!(report.p50.is_some());
    }

    #[tokio::test]
    async fn validation_finds_a_lying_cache() {
        use crate::cache::{Cache, CacheLayer};
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("cache-control", "max-age=60")
                        .header("x-version", if n == 0 { "1" } else { "2" })
                        .body(Full::new(Bytes::from_static(b"same")))
                        .unwrap(),
                )
            }
        });
        let stack = tower::Layer::layer(&CacheLayer::new(Cache::builder().build().unwrap()), upstream.clone());
        let urls = [Uri::from_static("http://a.test/x")];
        let first = validate(stack.clone(), upstream.clone(), &urls, 10).await;
        assert_eq!(first.checked, 0, "the first answer was a miss: nothing to check");
        let second = validate(stack, upstream, &urls, 10).await;
        assert_eq!(second.checked, 1);
        assert_eq!(second.mismatches.len(), 1, "{:?}", second.mismatches);
        assert!(second.mismatches[0].what.starts_with("header x-version"));
    }
}
