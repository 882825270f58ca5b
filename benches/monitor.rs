//! MetricsLayer overhead per request against the bare service, in one run:
//! `metrics/bare` vs `metrics/layer` with no recorder (target ratio at most
//! 1.1), then `prometheus/bare` vs `prometheus/layer` with the Prometheus
//! recorder installed (target at most 1.5). `metrics_tasks64/*`: 64 tasks on
//! a 2-worker runtime through one layer (no recorder), which shows what
//! threads sharing the layer's handles cost.
//!
//! `cargo bench --bench monitor`; the last lines print the ratios.

#[path = "common/mod.rs"]
mod common;

use criterion::Criterion;
use http::Uri;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower_optimizer::monitor::MetricsLayer;

use common::bare_small as bare;

fn group(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str) {
    let uri: Uri = "http://api.test:8080/items/1".parse().unwrap();
    // A new layer per group: handles are registered with the recorder in
    // place when first used.
    let layered = tower::Layer::layer(&MetricsLayer::new(), bare());
    common::versus(c, rt, name, &uri, &bare(), ("layer", &layered));
    common::clock_pair(c, name);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = common::criterion();
    group(&mut c, &rt, "metrics");
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = "http://api.test:8080/items/1".parse().unwrap();
    let layered = tower::Layer::layer(&MetricsLayer::new(), bare());
    common::versus_tasks(&mut c, &threads, "metrics_tasks64", &uri, &bare(), ("layer", &layered));
    let buckets = [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)
        .unwrap()
        .install_recorder()
        .unwrap();
    group(&mut c, &rt, "prometheus");
    handle.run_upkeep();
    // Only when the group ran: a filtered run (`-- metrics_tasks64`) skips it.
    if common::paired("prometheus").is_some() {
        assert!(
            handle.render().contains("http_client_request_duration"),
            "the recorder saw the requests"
        );
    }
    c.final_summary();
    for name in ["metrics", "prometheus"] {
        if let (Some(bare), Some(layer)) = (common::median(name, "bare"), common::median(name, "layer")) {
            let target = if name == "metrics" {
                "1.1 (no recorder)"
            } else {
                "1.5 (Prometheus recorder)"
            };
            println!(
                "{name}: bare {bare:.0} ns, layer {layer:.0} ns, ratio {:.2} (target <= {target})",
                layer / bare
            );
        }
        common::print_paired(name, if name == "metrics" { "<= 1.1" } else { "<= 1.5" });
        common::print_clock_floor(name);
    }
    if let (Some(bare), Some(layer)) = (
        common::median("metrics_tasks64", "bare"),
        common::median("metrics_tasks64", "layer"),
    ) {
        println!(
            "metrics, 64 tasks / 2 workers: layer throughput {:.0}% of bare",
            bare / layer * 100.0
        );
        common::print_paired_throughput("metrics_tasks64", "none");
    }
}
