//! The whole stack (metrics, cache, invalidation, circuit breaker, timeout)
//! against the bare service, each pair measured in the same run:
//! - `stack_hit/bare` vs `stack_hit/stack`: a fresh hit through the stack
//!   against the bare in-process service building the same response
//!   (target ratio at most 1.5);
//! - `stack_miss/bare` vs `stack_miss/stack`: every request to a loopback
//!   h2c server (`no-store`, so each one goes upstream) through the bare
//!   hyper-util client and through `build_http2_client` (target overhead at
//!   most 5 %);
//! - `stack_hit_tasks64/bare` vs `/stack`: the same fresh hit from 64 tasks
//!   on a 2-worker runtime through clones of one stack (no target: what
//!   threads sharing the stack's state cost);
//! - `shell/bare` vs `shell/stack`: the stack with no layer over the bare
//!   in-process service, for what its shell costs by itself;
//! - `miss_layer_<name>/bare` vs `/<name>`: the same miss through a stack of
//!   no layer (`none`: the stack's shell and client) or of one layer
//!   (`retry` among them, which the full stack leaves out), to tell what
//!   each adds.
//!
//! `cargo bench --bench stack`; the last lines print the ratios.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::Layer;
use tower_optimizer::cache::Cache;
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::retry::{RetryConfig, RetryPolicy};
use tower_optimizer::stack::{
    ClientConfig, MonitorSettings, OptimizedService, Optimizer, OptimizerStack, OptimizerStackBuilder, http_client,
};

/// Every layer the stack has, as a user would configure it.
fn full_stack(cache: &Cache) -> OptimizerStackBuilder {
    OptimizerStack::builder()
        .cache(cache.clone())
        .invalidation(InvalidationLayer::new(Invalidator::new(cache.clone())))
        .circuit_breaker(CircuitBreakerConfig::default())
        .timeout(std::time::Duration::from_secs(5))
        .monitor(MonitorSettings::default())
}

/// An h2c server answering 1 KiB that must not be stored.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "no-store")
                            .body(Full::new(Bytes::copy_from_slice(&common::BODY)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The full stack over the bare 1 KiB service, with `uri`'s answer stored.
async fn stored(uri: &Uri) -> (OptimizedService<Full<Bytes>>, Optimizer) {
    let cache = Cache::builder().build().unwrap();
    let (layer, optimizer) = full_stack(&cache).build::<Full<Bytes>>().unwrap();
    let mut stack = layer.layer(common::bare_1k());
    common::one(&mut stack, uri).await; // stores it
    (stack, optimizer)
}

fn hits(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let uri: Uri = "http://api.test/items/1".parse().unwrap();
    let (stack, _optimizer) = rt.block_on(stored(&uri));
    common::versus(c, rt, "stack_hit", &uri, &common::bare_1k(), ("stack", &stack));
    // The stack with no layer at all: what its shell costs by itself.
    let (shell, _optimizer) = rt.block_on(async {
        let (layer, optimizer) = OptimizerStack::builder().build::<Full<Bytes>>().unwrap();
        (layer.layer(common::bare_1k()), optimizer)
    });
    common::versus(c, rt, "shell", &uri, &common::bare_1k(), ("stack", &shell));
}

/// Fresh hits from 64 tasks on two worker threads, through clones of one
/// stack: its shared state (the cache's shard, the breaker, the metrics'
/// endpoint, the lifecycle gate) under threads.
fn hits_from_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = "http://api.test/items/1".parse().unwrap();
    let (stack, _optimizer) = rt.block_on(stored(&uri));
    common::versus_tasks(c, &rt, "stack_hit_tasks64", &uri, &common::bare_1k(), ("stack", &stack));
}

fn misses(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (uri, bare, stack, _optimizer) = rt.block_on(async {
        let addr = upstream().await;
        let uri: Uri = format!("http://{addr}/items/1").parse().unwrap();
        let bare = http_client::<Full<Bytes>>(&ClientConfig::default());
        let cache = Cache::builder().build().unwrap();
        let (stack, optimizer) = full_stack(&cache).build_http2_client().unwrap();
        // Open the connections before measuring.
        common::one(&mut bare.clone(), &uri).await;
        common::one(&mut stack.clone(), &uri).await;
        (uri, bare, stack, optimizer)
    });
    common::versus(c, rt, "stack_miss", &uri, &bare, ("stack", &stack));
    miss_by_layer(c, rt, &uri, &bare);
}

/// A stack of one layer each, for [`miss_by_layer`].
type OneLayer = fn(&Cache) -> OptimizerStackBuilder;

/// What each layer adds to a miss: the stack with no layer (its shell and
/// client alone), then with each layer on its own, each against the bare
/// client in the same run (`miss_layer_<name>/bare` vs `/<name>`).
fn miss_by_layer<B>(c: &mut Criterion, rt: &tokio::runtime::Runtime, uri: &Uri, bare: &B)
where
    B: tower::Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone,
    B::Error: std::fmt::Debug,
{
    let layers: [(&str, OneLayer); 7] = [
        ("none", |_| OptimizerStack::builder()),
        ("cache", |cache| OptimizerStack::builder().cache(cache.clone())),
        ("invalidation", |cache| {
            OptimizerStack::builder()
                .cache(cache.clone())
                .invalidation(InvalidationLayer::new(Invalidator::new(cache.clone())))
        }),
        ("breaker", |_| {
            OptimizerStack::builder().circuit_breaker(CircuitBreakerConfig::default())
        }),
        ("retry", |_| {
            OptimizerStack::builder().retry(RetryPolicy::new(RetryConfig::default()))
        }),
        ("timeout", |_| {
            OptimizerStack::builder().timeout(std::time::Duration::from_secs(5))
        }),
        ("monitor", |_| {
            OptimizerStack::builder().monitor(MonitorSettings::default())
        }),
    ];
    for (name, stack) in layers {
        let (svc, _optimizer) = rt.block_on(async {
            let cache = Cache::builder().build().unwrap();
            let (svc, optimizer) = stack(&cache).build_http2_client().unwrap();
            common::one(&mut svc.clone(), uri).await;
            (svc, optimizer)
        });
        common::versus(c, rt, &format!("miss_layer_{name}"), uri, bare, (name, &svc));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = common::criterion();
    hits(&mut c, &rt);
    hits_from_tasks(&mut c);
    misses(&mut c, &rt);
    c.final_summary();
    for (name, target) in [("stack_hit", "ratio <= 1.5"), ("stack_miss", "ratio <= 1.05")] {
        if let (Some(bare), Some(stack)) = (common::median(name, "bare"), common::median(name, "stack")) {
            println!(
                "{name}: bare {bare:.0} ns, stack {stack:.0} ns, ratio {:.2} (target {target})",
                stack / bare
            );
        }
        common::print_paired(name, target);
    }
    if let (Some(bare), Some(stack)) = (
        common::median("stack_hit_tasks64", "bare"),
        common::median("stack_hit_tasks64", "stack"),
    ) {
        println!(
            "stack_hit_tasks64: stack throughput {:.0}% of bare (no target)",
            bare / stack * 100.0
        );
    }
    common::print_paired_throughput("stack_hit_tasks64", "none");
    if let (Some(bare), Some(shell)) = (common::median("shell", "bare"), common::median("shell", "stack")) {
        println!("the stack with no layer, in process: +{:.0} ns over bare", shell - bare);
    }
    for name in [
        "none",
        "cache",
        "invalidation",
        "breaker",
        "retry",
        "timeout",
        "monitor",
    ] {
        let group = format!("miss_layer_{name}");
        if let (Some(bare), Some(layer)) = (common::median(&group, "bare"), common::median(&group, name)) {
            let paired = common::paired(&group).map_or_else(String::new, |r| format!("; interleaved ratio {r}"));
            println!(
                "a miss through the stack with {name}: +{:.0} ns over bare{paired}",
                layer - bare
            );
        }
    }
}
