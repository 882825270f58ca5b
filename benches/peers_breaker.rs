//! The circuit breaker side by side with its nearest peer in tower,
//! `tower-resilience-circuitbreaker` (resilience4j's model), each closed, in
//! front of the same bare service (the small JSON response of
//! `benches/circuit_breaker.rs`), in the same run:
//!
//! - `peers_breaker/*`: one call at a time on a current-thread runtime;
//! - `peers_breaker_tasks64/*`: 64 tasks on a 2-worker runtime through one
//!   breaker.
//!
//! Both count 5xx answers as failures (the peer's default counts only
//! errors, so it gets a classifier closure over the status, as its docs
//! show), with their default windows. Each setup checks afterwards that the
//! breaker saw the calls and stayed closed. Besides criterion's medians,
//! the peer's time is measured against ours in alternating rounds
//! (`common::interleaved_runs`), and the report prints that ratio last.
//!
//! Run with `cargo bench --bench peers_breaker`.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::sync::Mutex;

use bytes::Bytes;
use criterion::Criterion;
use http::{Response, Uri};
use http_body_util::Full;
use tower::Layer;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
use tower_resilience_circuitbreaker::{CircuitBreakerLayer as PeerLayer, CircuitState};

use common::bare_small as bare;

/// The peer's time over ours from alternating rounds, by group.
static VERSUS_OURS: Mutex<Vec<(String, common::Ratio)>> = Mutex::new(Vec::new());

const OURS: &str = "tower-optimizer";
const PEER: &str = "tower-resilience";

fn benches(c: &mut Criterion) {
    let uri: Uri = "http://api.test/items/1".parse().unwrap();
    let ours_layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let ours = ours_layer.layer(bare());
    let (peer_layer, peer_handle) = PeerLayer::builder()
        .failure_classifier(|result: &Result<Response<Full<Bytes>>, Infallible>| {
            matches!(result, Ok(response) if response.status().is_server_error())
        })
        .build_with_handle()
        .unwrap();
    let peer = peer_layer.layer(bare());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let group_name = "peers_breaker";
    let mut group = c.benchmark_group(group_name);
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::repeat(bare(), uri.clone(), iters));
    });
    group.bench_function(OURS, |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::repeat(ours.clone(), uri.clone(), iters));
    });
    group.bench_function(PEER, |b| {
        b.to_async(&rt)
            .iter_custom(|iters| common::repeat(peer.clone(), uri.clone(), iters));
    });
    group.finish();
    if common::selected(group_name) {
        let ratio = common::interleaved_runs(
            &rt,
            || common::repeat(ours.clone(), uri.clone(), common::BATCH),
            || common::repeat(peer.clone(), uri.clone(), common::BATCH),
        );
        VERSUS_OURS
            .lock()
            .unwrap()
            .push((format!("{group_name}/{PEER}"), ratio));
    }

    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let group_name = "peers_breaker_tasks64";
    let mut group = c.benchmark_group(group_name);
    group.throughput(criterion::Throughput::Elements(common::TASKS as u64 * common::PER_TASK));
    for (name, run) in [
        (
            "bare",
            Box::new(|| Box::pin(common::tasks(bare(), uri.clone())) as Run) as Box<dyn Fn() -> Run>,
        ),
        (OURS, Box::new(|| Box::pin(common::tasks(ours.clone(), uri.clone())))),
        (PEER, Box::new(|| Box::pin(common::tasks(peer.clone(), uri.clone())))),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&threads).iter_custom(|iters| {
                let runs: Vec<Run> = (0..iters).map(|_| run()).collect();
                async move {
                    let mut total = std::time::Duration::ZERO;
                    for one in runs {
                        total += one.await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    if common::selected(group_name) {
        let ratio = common::interleaved_runs(
            &threads,
            || common::tasks(ours.clone(), uri.clone()),
            || common::tasks(peer.clone(), uri.clone()),
        );
        VERSUS_OURS
            .lock()
            .unwrap()
            .push((format!("{group_name}/{PEER}"), ratio));
    }

    // Both saw the calls and stayed closed throughout.
    let snapshot = ours_layer.breakers().snapshot();
    assert!(snapshot[0].figures.calls > 0 && snapshot[0].state == State::Closed);
    assert_eq!(peer_handle.state(), CircuitState::Closed);
    let figures = rt.block_on(peer_handle.metrics());
    assert!(figures.total_calls > 0, "the peer saw the calls");
}

/// One run of the 64 tasks, boxed so the three contestants share a type.
type Run = std::pin::Pin<Box<dyn std::future::Future<Output = std::time::Duration> + Send>>;

fn report() {
    for group in ["peers_breaker", "peers_breaker_tasks64"] {
        let Some(ours) = common::median(group, OURS) else {
            continue;
        };
        let bare = common::median(group, "bare").unwrap_or(f64::NAN);
        println!("{group}: bare {bare:.0}, {OURS} {ours:.0} ({:.2}x bare)", ours / bare);
        if let Some(peer) = common::median(group, PEER) {
            println!(
                "  {PEER}: {peer:.0} ({:.2}x bare), {:.2}x {OURS}'s time",
                peer / bare,
                peer / ours
            );
        }
    }
    common::print_versus_ours(&VERSUS_OURS.lock().unwrap(), OURS);
}

fn main() {
    let mut c = common::criterion();
    benches(&mut c);
    c.final_summary();
    report();
}
