//! Writes through the cache layer alone, without an `InvalidationLayer`:
//! RFC 9111 §4.4 invalidation, and writes whose outcome is never known.
#![cfg(feature = "cache")]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use support::*;
use tokio::time::advance;
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{InvalidationKind, Outcome};

/// An upstream that stores `max-age=60` answers with an `ETag` for reads,
/// answers writes with what `write` says, and counts both.
fn upstream(write: impl Fn(&Req) -> Result<Res, BoxError> + Send + Sync + 'static) -> Upstream {
    let write = Arc::new(write);
    Upstream::new(move |req, _| {
        let answer = if req.method() == Method::GET {
            // A conditional read of an unchanged resource is a 304.
            Ok(if req.headers().contains_key("if-none-match") {
                Response::builder().status(304).body(Full::default()).unwrap()
            } else {
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .header("etag", "\"1\"")
                    .body(Full::new(Bytes::copy_from_slice(req.uri().path().as_bytes())))
                    .unwrap()
            })
        } else {
            write(&req)
        };
        async move { answer }
    })
}

fn write(method: Method, uri: &str) -> Req {
    Request::builder().method(method).uri(uri).body(empty()).unwrap()
}

async fn outcome(c: &mut Client, uri: &str) -> Outcome {
    get(c, uri).await.cache.outcome()
}

#[tokio::test(start_paused = true)]
async fn a_write_invalidates_its_target_and_same_origin_locations_after_success_only() {
    let cache = cache();
    let upstream = upstream(|req| {
        let status = if req.uri().path() == "/users/9" { 409 } else { 201 };
        Ok(Response::builder()
            .status(status)
            .header("location", "/users/8")
            .header("content-location", "http://other.test/users/7")
            .body(empty())
            .unwrap())
    });
    let mut c = client(&cache, &upstream);
    for uri in [
        "http://api.test/users/7",
        "http://api.test/users/8",
        "http://api.test/users/9",
        "http://api.test/users",
        "http://other.test/users/7",
    ] {
        assert_eq!(outcome(&mut c, uri).await, Outcome::Miss);
        assert_eq!(outcome(&mut c, uri).await, Outcome::Hit);
    }
    let posted = send(&mut c, write(Method::POST, "http://API.test:80/users/7"))
        .await
        .unwrap();
    assert_eq!(posted.status, 201);
    assert_eq!(
        outcome(&mut c, "http://api.test/users/7").await,
        Outcome::Miss,
        "the target"
    );
    assert_eq!(
        outcome(&mut c, "http://api.test/users/8").await,
        Outcome::Miss,
        "its Location"
    );
    assert_eq!(
        outcome(&mut c, "http://api.test/users").await,
        Outcome::Hit,
        "another URI"
    );
    assert_eq!(
        outcome(&mut c, "http://other.test/users/7").await,
        Outcome::Hit,
        "another origin is never invalidated"
    );
    // An error status says the write did not happen.
    let refused = send(&mut c, write(Method::PUT, "http://api.test/users/9"))
        .await
        .unwrap();
    assert_eq!(refused.status, 409);
    assert_eq!(outcome(&mut c, "http://api.test/users/9").await, Outcome::Hit);
    // Safe methods invalidate nothing.
    send(&mut c, write(Method::OPTIONS, "http://api.test/users"))
        .await
        .unwrap();
    assert_eq!(outcome(&mut c, "http://api.test/users").await, Outcome::Hit);
    // Unknown methods are unsafe.
    let purge = Method::from_bytes(b"PURGE").unwrap();
    send(&mut c, write(purge, "http://api.test/users")).await.unwrap();
    assert_eq!(outcome(&mut c, "http://api.test/users").await, Outcome::Miss);
    assert_eq!(
        cache.stats().invalidations(InvalidationKind::Http),
        4,
        "the POST's target and Location, and the PURGE's target and Location (read again since)"
    );
    assert!(cache.audit().is_clean());
}

/// A write that failed upstream, or that its caller stopped waiting for,
/// may still have happened: its target is marked stale, so the next read
/// revalidates, where the old code served the old entry as fresh.
#[tokio::test(start_paused = true)]
async fn a_write_of_unknown_outcome_marks_its_target_stale() {
    let cache = cache();
    let upstream = upstream(|req| match req.uri().path() {
        "/reset" => Err("connection reset after the request was sent".into()),
        _ => Ok(Response::new(empty())),
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/reset").await;
    let error = send(&mut c, write(Method::PATCH, "http://api.test/reset"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("reset"),
        "the caller still gets its error: {error}"
    );
    assert_eq!(cache.stats().invalidations(InvalidationKind::Http), 1, "marked stale");
    let read = get(&mut c, "http://api.test/reset").await;
    assert_eq!(read.cache.outcome(), Outcome::Revalidated, "stale, so validated");
    assert_eq!(read.body, "/reset", "a 304: the stored body, kept for it");
    assert_eq!(outcome(&mut c, "http://api.test/reset").await, Outcome::Hit);

    // The caller gives up before the answer comes.
    let slow = Upstream::new(|req, _| async move {
        if req.method() != Method::GET {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(ok("max-age=60", "v"))
    });
    let mut c = client(&cache, &slow);
    get(&mut c, "http://api.test/slow").await;
    let mut pending = Box::pin(
        c.ready()
            .await
            .unwrap()
            .call(write(Method::DELETE, "http://api.test/slow")),
    );
    // Sent: polled once, as far as the upstream's wait.
    let polled = pending.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending());
    assert_eq!(
        outcome(&mut c, "http://api.test/slow").await,
        Outcome::Hit,
        "not settled yet"
    );
    drop(pending);
    advance(Duration::from_secs(1)).await;
    let read = get(&mut c, "http://api.test/slow").await;
    assert_eq!(
        read.cache.outcome(),
        Outcome::Miss,
        "stale, so fetched again: {:?}",
        read.cache
    );
    assert_eq!(slow.calls(), 3);
    assert_eq!(cache.stats().invalidations(InvalidationKind::Http), 2);
    assert!(cache.audit().is_clean());
}

/// A write refused before it left (an open circuit, a shed load) changed
/// nothing: its target stays fresh, and answers hits while the upstream is
/// cut off.
#[cfg(feature = "circuit-breaker")]
#[tokio::test(start_paused = true)]
async fn a_write_refused_before_sending_leaves_its_target_fresh() {
    use tower_optimizer::circuit_breaker::error::Open;
    let cache = cache();
    let upstream = upstream(|_| {
        let open = Open::new("http://api.test".into(), Duration::from_secs(10));
        // Wrapped, as `tower::buffer` wraps it.
        Err(Box::new(Wrapped(Box::new(open))))
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/doc").await;
    let error = send(&mut c, write(Method::PUT, "http://api.test/doc"))
        .await
        .unwrap_err();
    assert!(Open::find(&*error).is_some());
    assert_eq!(outcome(&mut c, "http://api.test/doc").await, Outcome::Hit);
}

/// An error that names another as its source, as `tower::buffer`'s does.
#[cfg(feature = "circuit-breaker")]
#[derive(Debug)]
struct Wrapped(BoxError);

#[cfg(feature = "circuit-breaker")]
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wrapped: {}", self.0)
    }
}

#[cfg(feature = "circuit-breaker")]
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// With the invalidation layer, a write of unknown outcome also marks stale
/// what its rules name (here a tag), not only its target; one refused
/// before it left marks nothing.
#[cfg(all(feature = "invalidation", feature = "circuit-breaker"))]
#[tokio::test(start_paused = true)]
async fn with_the_invalidation_layer_unknown_outcomes_reach_what_rules_name() {
    use tower_optimizer::circuit_breaker::error::Open;
    use tower_optimizer::invalidation::{InvalidationLayer, Invalidator, Rule};
    let cache = cache();
    let layer = InvalidationLayer::new(Invalidator::new(cache.clone()))
        .rule(Rule::new(Method::PUT, "/users/{id}").unwrap().tag("user:{id}"));
    let upstream = Upstream::new(|req, _| async move {
        let path = req.uri().path().to_owned();
        if req.method() == Method::GET {
            let id = path.rsplit('/').next().unwrap_or_default().to_owned();
            return Ok(Response::builder()
                .header("cache-control", "max-age=60")
                .header("surrogate-key", format!("user:{id}"))
                .body(Full::new(Bytes::from(path)))
                .unwrap());
        }
        match path.as_str() {
            "/users/7" => Err("connection reset after the request was sent".into()),
            "/users/8" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Response::new(empty()))
            }
            _ => Err(Box::new(Wrapped(Box::new(Open::new(
                "http://api.test".into(),
                Duration::from_secs(10),
            )))) as BoxError),
        }
    });
    let mut c = tower::Layer::layer(
        &tower_optimizer::cache::CacheLayer::new(cache.clone()),
        tower::Layer::layer(&layer, upstream),
    );
    let outcome = |got: Result<Response<_>, BoxError>| {
        tower_optimizer::cache::CacheStatus::from_headers(got.unwrap().headers())
            .unwrap()
            .outcome()
    };
    for id in [7, 8, 9] {
        let uri = format!("http://api.test/profile/{id}");
        let read = || Request::get(uri.as_str()).body(empty()).unwrap();
        assert_eq!(outcome(c.ready().await.unwrap().call(read()).await), Outcome::Miss);
        assert_eq!(outcome(c.ready().await.unwrap().call(read()).await), Outcome::Hit);
    }
    // Failed after sending.
    let put = |id: u32| write(Method::PUT, &format!("http://api.test/users/{id}"));
    assert!(c.ready().await.unwrap().call(put(7)).await.is_err());
    // Given up on.
    let mut pending = Box::pin(c.ready().await.unwrap().call(put(8)));
    assert!(
        pending
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    drop(pending);
    // Refused before it left.
    assert!(c.ready().await.unwrap().call(put(9)).await.is_err());
    for (id, expected) in [(7, Outcome::Miss), (8, Outcome::Miss), (9, Outcome::Hit)] {
        let read = Request::get(format!("http://api.test/profile/{id}"))
            .body(empty())
            .unwrap();
        assert_eq!(
            outcome(c.ready().await.unwrap().call(read).await),
            expected,
            "profile {id}"
        );
    }
}
