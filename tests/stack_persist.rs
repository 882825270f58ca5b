//! A stack's cache kept between runs (`[cache] persist`): a stack over a
//! real h2c server on 127.0.0.1 fills its cache and shuts down, saving it;
//! a second stack from the same file starts with it and answers from it
//! without calling the server, with the age the responses had; and a
//! damaged file leaves the second stack starting empty, the reason in its
//! start report.
#![cfg(feature = "stack")]

#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_optimizer::Optimizer;
use tower_optimizer::cache::{CacheStatus, Loaded};
use tower_optimizer::stack::{OptimizedService, OptimizerConfig, OptimizerStackBuilder};

/// A server answering every path with a cacheable body naming it, counting
/// its requests.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=3600")
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from(format!("page {}", req.uri().path()))))
                    .unwrap(),
            )
        }
    });
    (server::serve(server::Protocol::H2c, service).await, requests)
}

fn stack(file: &std::path::Path, extra: &str) -> (OptimizedService<Full<Bytes>>, Optimizer) {
    let toml = format!("[cache]\npersist = {:?}\n{extra}", file.display().to_string());
    OptimizerConfig::from_toml(&toml)
        .and_then(OptimizerConfig::into_builder)
        .and_then(OptimizerStackBuilder::build_http2_client)
        .unwrap()
}

async fn get(client: &OptimizedService<Full<Bytes>>, url: &str) -> (CacheStatus, Option<String>, String) {
    let res = client
        .clone()
        .oneshot(Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = *res.extensions().get::<CacheStatus>().unwrap();
    let age = res.headers().get("age").map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, age, String::from_utf8(body.to_vec()).unwrap())
}

fn file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stack_persist");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.cache", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test(start_paused = true)]
async fn a_restarted_stack_answers_from_what_the_last_one_saved() {
    let (addr, requests) = upstream().await;
    let path = file("restart");
    let (client, first) = stack(&path, "");
    let report = first.start().await.unwrap();
    assert_eq!(
        report.restored,
        Some(Ok(Loaded::default())),
        "no file yet: nothing loaded, no error"
    );
    for i in 0..5 {
        get(&client, &format!("http://{addr}/items/{i}")).await;
    }
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    tokio::time::advance(Duration::from_secs(40)).await;
    let last = first.shutdown(Duration::from_secs(1)).await;
    let saved = last.cache_saved.expect("a cache file is configured").unwrap();
    assert_eq!(saved.entries, 5);
    assert!(path.exists());

    let (client, second) = stack(&path, "");
    let report = second.start().await.unwrap();
    let loaded = report.restored.unwrap().unwrap();
    assert_eq!(loaded.entries, 5);
    for i in 0..5 {
        let (status, age, body) = get(&client, &format!("http://{addr}/items/{i}")).await;
        assert!(status.hit, "{status:?}");
        assert_eq!(body, format!("page /items/{i}"));
        assert_eq!(age.as_deref(), Some("40"), "the age it had when saved");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 5, "no request reached the server");
    // Saved on demand too, with what was added since.
    get(&client, &format!("http://{addr}/items/new")).await;
    assert_eq!(second.save_cache().await.unwrap().entries, 6);
    second.shutdown(Duration::from_secs(1)).await;
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stack_saves_every_period_and_a_damaged_file_only_starts_it_empty() {
    let (addr, _) = upstream().await;
    let path = file("periodic");
    let (client, first) = stack(&path, "save_every = \"1m\"\n");
    first.start().await.unwrap();
    get(&client, &format!("http://{addr}/a")).await;
    assert!(!path.exists(), "not saved before the first period ends");
    // The save runs on a blocking thread (which holds the paused clock
    // still while it runs): wait for it, up to two periods.
    let mut saved = false;
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if path.exists() {
            saved = true;
            break;
        }
    }
    assert!(saved, "saved once the period ended");
    // A crash now (no shutdown): the next start has what was saved.
    drop((client, first));
    let (_, second) = stack(&path, "");
    assert_eq!(second.start().await.unwrap().restored.unwrap().unwrap().entries, 1);
    second.shutdown(Duration::from_secs(1)).await;

    // A damaged file: the stack starts all the same, empty, and says why.
    let mut bytes = std::fs::read(&path).unwrap();
    // The last record's last byte, before the 12-byte end marker.
    let last = bytes.len() - 13;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (client, third) = stack(&path, "");
    let report = third.start().await.unwrap();
    let why = report.restored.unwrap().unwrap_err();
    assert!(why.contains("checksum"), "{why}");
    let (status, _, body) = get(&client, &format!("http://{addr}/a")).await;
    assert!(!status.hit);
    assert_eq!(body, "page /a");
    third.shutdown(Duration::from_secs(1)).await;
    std::fs::remove_file(&path).unwrap();
}

/// A cache file needs a cache; a period needs a file.
#[test]
fn persistence_settings_are_checked_by_name() {
    let err = |b: OptimizerStackBuilder| b.build::<()>().map(|_| ()).unwrap_err().to_string();
    let b = tower_optimizer::OptimizerStack::builder;
    assert!(err(b().persist_cache("x.cache")).contains("persist_cache"));
    assert!(err(b().save_cache_every(Duration::from_secs(60))).contains("save_cache_every"));
}
