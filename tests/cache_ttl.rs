//! `CacheBuilder::ttl_with`: lifetimes route by route over what the
//! upstream's headers say, on the paused clock. A policy sets how long,
//! never whether: what may not be stored still is not.
#![cfg(feature = "cache")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_optimizer::cache::{Cache, CacheBuilder, CacheLayer, CacheStatus};

/// An upstream whose answer depends on the path: `/plain` carries no
/// caching headers, `/short` says `max-age=5`, `/aged` is already 50 s old,
/// `/secret` says `no-store`, `/error` is a 500. Each body is the call's
/// number; the paths it was asked for are logged.
fn upstream(
    log: Arc<Mutex<Vec<String>>>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |req: Request<Empty<Bytes>>| {
        let path = req.uri().path().to_owned();
        let n = {
            let mut log = log.lock().unwrap();
            log.push(path.clone());
            log.len()
        };
        async move {
            let mut res = Response::builder();
            match path.as_str() {
                "/short" => res = res.header("cache-control", "max-age=5"),
                "/aged" => res = res.header("age", "50"),
                "/secret" => res = res.header("cache-control", "no-store"),
                "/error" => res = res.status(StatusCode::INTERNAL_SERVER_ERROR),
                _ => {}
            }
            Ok(res.body(Full::new(Bytes::from(n.to_string()))).unwrap())
        }
    })
}

/// Sixty seconds for everything but `/short` (two minutes) and errors.
fn policy(builder: CacheBuilder) -> CacheBuilder {
    builder.ttl_with(|req: &http::request::Parts, res: &http::response::Parts| {
        if res.status.is_server_error() {
            return None;
        }
        Some(Duration::from_secs(if req.uri.path() == "/short" { 120 } else { 60 }))
    })
}

async fn get<S>(svc: &mut S, path: &str) -> (CacheStatus, String)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<tower_optimizer::body::OptimizerBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(format!("http://api.test{path}"))
        .body(Empty::new())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let status = CacheStatus::from_headers(response.headers()).unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_policy_sets_lifetimes_over_the_headers_and_max_ttl_caps_them() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let cache = policy(Cache::builder()).build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream(log.clone()));
    // No caching headers: stored for the policy's minute.
    let (stored, first) = get(&mut svc, "/plain").await;
    assert!(stored.stored && stored.ttl == Some(60), "{stored:?}");
    // `max-age=5` from upstream; the policy says two minutes.
    assert_eq!(get(&mut svc, "/short").await.0.ttl, Some(120));
    tokio::time::advance(Duration::from_secs(59)).await;
    let (hit, body) = get(&mut svc, "/plain").await;
    assert!(hit.hit && body == first, "59 s old: still fresh");
    assert!(get(&mut svc, "/short").await.0.hit, "past its own max-age");
    tokio::time::advance(Duration::from_secs(2)).await;
    let (stale, again) = get(&mut svc, "/plain").await;
    assert!(!stale.hit && again != first, "a minute old: fetched again");
    // Its `Age` counts, as a `max-age`'s would: 50 s of 60 gone already.
    get(&mut svc, "/aged").await;
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(get(&mut svc, "/aged").await.0.hit);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!get(&mut svc, "/aged").await.0.hit);
    assert_eq!(
        *log.lock().unwrap(),
        ["/plain", "/short", "/plain", "/aged", "/aged"],
        "every other answer came from the cache"
    );

    // `max_ttl` caps what the policy says.
    let capped = policy(Cache::builder().max_ttl(Duration::from_secs(30)))
        .build()
        .unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(capped), upstream(log.clone()));
    assert_eq!(get(&mut svc, "/plain").await.0.ttl, Some(30));
}

#[tokio::test(start_paused = true)]
async fn a_policy_never_stores_what_may_not_be_stored() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let cache = policy(Cache::builder()).build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream(log.clone()));
    for path in ["/secret", "/secret", "/error", "/error"] {
        let (status, _) = get(&mut svc, path).await;
        assert!(!status.hit && !status.stored, "{path}: {status:?}");
    }
    assert_eq!(log.lock().unwrap().len(), 4);
    assert_eq!(cache.stats().entries, 0);
    // Without a policy, a response with no caching headers is not stored.
    let plain = Cache::builder().build().unwrap();
    let mut svc = tower::Layer::layer(&CacheLayer::new(plain.clone()), upstream(log));
    assert!(!get(&mut svc, "/plain").await.0.stored);
    assert_eq!(plain.stats().entries, 0);
}
