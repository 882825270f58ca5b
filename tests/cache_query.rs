//! `CacheBuilder::query_key`: keys that leave out the query parameters that
//! select nothing (a presigned URL's signature, tracking) and sort the rest,
//! through a real hyper-util HTTP/2 client and server on 127.0.0.1, and
//! every invalidation that names a URI keying it the same way.
#![cfg(all(feature = "cache", feature = "invalidation"))]

#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};
use tower_optimizer::cache::{Cache, CacheLayer, CacheService, CacheStatus, QueryKey, QueryOrder};
use tower_optimizer::invalidation::Invalidator;

type H2Client = Client<HttpConnector, Full<Bytes>>;

/// An upstream whose GETs are fresh for a minute and whose body is the
/// query it was asked with and the call's number; POSTs answer 204.
async fn upstream(calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = if req.method() == Method::POST {
                Response::builder().status(204).body(Full::new(Bytes::new()))
            } else {
                let body = format!("{} #{n}", req.uri().query().unwrap_or(""));
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from(body)))
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    server::serve(server::Protocol::H2c, service).await
}

async fn send(svc: &mut CacheService<H2Client>, method: Method, url: &str) -> (CacheStatus, String) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::default())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let status = CacheStatus::from_headers(response.headers()).unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn setup(query: QueryKey) -> (Cache, CacheService<H2Client>, String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = upstream(calls.clone()).await;
    let cache = Cache::builder().query_key(query).build().unwrap();
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), client);
    (cache, svc, format!("http://{addr}"), calls)
}

// Real sockets run on the real clock; nothing here sleeps or waits on time.
#[tokio::test]
async fn presigned_urls_hit_whatever_their_signature_and_tracking_parameters() {
    let query = QueryKey::as_sent().ignoring(["X-Amz-*", "utm_source"]);
    let (cache, mut svc, base, calls) = setup(query).await;
    let signed =
        |sig: &str| format!("{base}/a.png?X-Amz-Date=2026112{sig}&v=2&X-Amz-Signature={sig}&utm_source=x{sig}");
    let (miss, first) = send(&mut svc, Method::GET, &signed("1")).await;
    assert!(miss.stored, "{miss:?}");
    assert!(first.ends_with("#0"), "the upstream saw the whole query: {first}");
    assert!(first.contains("X-Amz-Signature=1"), "{first}");
    let (hit, again) = send(&mut svc, Method::GET, &signed("2")).await;
    assert!(hit.hit, "another signature, one resource: {hit:?}");
    assert_eq!(again, first);
    // A parameter that selects is still part of the key.
    let (other, _) = send(&mut svc, Method::GET, &format!("{base}/a.png?v=3&X-Amz-Signature=1")).await;
    assert!(!other.hit);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let key = cache.key_for_uri(&signed("9").parse().unwrap()).unwrap();
    assert_eq!(key, format!("{base}/a.png?v=2"));
    assert_eq!(cache.entries().iter().filter(|e| *e.key == *key).count(), 1);
}

#[tokio::test]
async fn sorted_parameters_make_one_entry_of_any_order() {
    let (_cache, mut svc, base, calls) = setup(QueryKey::as_sent().order(QueryOrder::Sorted)).await;
    let (miss, body) = send(&mut svc, Method::GET, &format!("{base}/list?b=2&a=1&a=0")).await;
    assert!(miss.stored && body.starts_with("b=2&a=1&a=0"), "sent as asked: {body}");
    let (hit, _) = send(&mut svc, Method::GET, &format!("{base}/list?a=0&b=2&a=1")).await;
    assert!(hit.hit, "{hit:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // As sent, the same two are two entries.
    let (_cache, mut svc, base, calls) = setup(QueryKey::as_sent()).await;
    send(&mut svc, Method::GET, &format!("{base}/list?b=2&a=1")).await;
    let (other, _) = send(&mut svc, Method::GET, &format!("{base}/list?a=1&b=2")).await;
    assert!(!other.hit);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn invalidations_that_name_a_uri_key_it_the_same_way() {
    let query = QueryKey::as_sent().ignoring(["utm_*"]);
    let (cache, mut svc, base, calls) = setup(query).await;
    let url = |tracking: &str| format!("{base}/doc?id=7&utm_source={tracking}");
    send(&mut svc, Method::GET, &url("web")).await;
    assert!(send(&mut svc, Method::GET, &url("mail")).await.0.hit);
    // An unsafe request to the URI, tracked otherwise, invalidates it
    // (RFC 9111 §4.4).
    let (_, _) = send(&mut svc, Method::POST, &url("app")).await;
    assert_eq!(cache.stats().entries, 0);
    send(&mut svc, Method::GET, &url("web")).await;
    assert_eq!(cache.stats().entries, 1);
    // So does the invalidator, given the URI with any tracking.
    let invalidator = Invalidator::new(cache.clone());
    let report = invalidator.uri(&url("feed").parse().unwrap());
    assert_eq!(report.entries, 1, "{report:?}");
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two GETs upstream and the POST");
}

/// The invalidation layer's keys too: a CRUD rule that names a URI with
/// its own tracking parameter reaches the entry stored without it.
#[tokio::test]
async fn keys_named_by_the_invalidation_layer_follow_the_policy() {
    use tower_optimizer::invalidation::{InvalidationLayer, Rule};
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = upstream(calls.clone()).await;
    let base = format!("http://{addr}");
    let cache = Cache::builder()
        .query_key(QueryKey::as_sent().ignoring(["utm_*"]))
        .build()
        .unwrap();
    let rules = InvalidationLayer::new(Invalidator::new(cache.clone())).rule(
        Rule::new(Method::POST, "/orders")
            .unwrap()
            .key("/doc?id=7&utm_medium=rule"),
    );
    let client: H2Client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), tower::Layer::layer(&rules, client));
    let doc = format!("{base}/doc?utm_source=a&id=7");
    for expect_hit in [false, true] {
        let request = Request::get(doc.as_str()).body(Full::default()).unwrap();
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(CacheStatus::from_headers(response.headers()).unwrap().hit, expect_hit);
    }
    let post = Request::post(format!("{base}/orders")).body(Full::default()).unwrap();
    let response = svc.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(cache.stats().entries, 0, "the rule's key is the entry's");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
