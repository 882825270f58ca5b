//! Circuit breaker overhead on the closed path, against the bare inner
//! service in the same run:
//!
//! - `closed/bare` vs `closed/breaker`: one call on a current-thread runtime
//!   (target ratio at most 1.1).
//! - `tasks64/bare` vs `tasks64/breaker`: 64 tasks on a 2-worker runtime
//!   through one breaker (target: throughput at least 80% of bare).
//!
//! `cargo bench --bench circuit_breaker`; the last lines print the ratios.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower::Service;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};

use common::bare_small as bare;

const TASKS: usize = 64;
const PER_TASK: u64 = 200;

async fn tasks<S, B>(svc: S, uri: Uri) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    // Each task parses its own copy: clones of one `Uri` share one count,
    // which 64 tasks on two threads would fight over (in bare and breaker
    // alike), measuring the harness instead of the layer.
    let uris: Vec<Uri> = (0..TASKS).map(|_| uri.to_string().parse().unwrap()).collect();
    let start = Instant::now();
    let handles: Vec<_> = uris
        .into_iter()
        .map(|uri| tokio::spawn(common::repeat(svc.clone(), uri, PER_TASK)))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let uri: Uri = "http://api.test/items/1".parse().unwrap();
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let breaker = tower::Layer::layer(&layer, bare());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    common::versus(c, &rt, "closed", &uri, &bare(), ("breaker", &breaker));
    common::clock_pair(c, "closed");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("tasks64");
    group.throughput(Throughput::Elements(TASKS as u64 * PER_TASK));
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let uri = uri.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tasks(bare(), uri.clone()).await;
                }
                total
            }
        });
    });
    group.bench_function("breaker", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (uri, breaker) = (uri.clone(), breaker.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tasks(breaker.clone(), uri.clone()).await;
                }
                total
            }
        });
    });
    group.finish();
    assert!(
        layer.breakers().snapshot()[0].figures.calls > 0,
        "the breaker saw the calls"
    );
}

fn main() {
    let mut c = common::criterion();
    benches(&mut c);
    c.final_summary();
    if let (Some(bare), Some(breaker)) = (common::median("closed", "bare"), common::median("closed", "breaker")) {
        println!(
            "closed path: bare {bare:.0} ns, breaker {breaker:.0} ns, ratio {:.2} (target <= 1.1)",
            breaker / bare
        );
    }
    common::print_clock_floor("closed");
    if let (Some(bare), Some(breaker)) = (common::median("tasks64", "bare"), common::median("tasks64", "breaker")) {
        println!(
            "64 tasks / 2 workers: breaker throughput {:.0}% of bare (target >= 80%)",
            bare / breaker * 100.0
        );
    }
}
