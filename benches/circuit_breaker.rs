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

use criterion::Criterion;
use http::Uri;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};

use common::bare_small as bare;

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
    common::versus_tasks(c, &rt, "tasks64", &uri, &bare(), ("breaker", &breaker));
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
    common::print_paired("closed", "<= 1.1");
    common::print_clock_floor("closed");
    if let (Some(bare), Some(breaker)) = (common::median("tasks64", "bare"), common::median("tasks64", "breaker")) {
        println!(
            "64 tasks / 2 workers: breaker throughput {:.0}% of bare (target >= 80%)",
            bare / breaker * 100.0
        );
    }
    common::print_paired_throughput("tasks64", ">= 80%");
}
