//! The stack as a reqwest-middleware `Middleware`, over a real h2c server
//! on 127.0.0.1: hits end in the chain, misses go on down it, per-request
//! settings travel as extensions, errors keep their kind, and what the
//! cache sends on its own goes to the client.
#![cfg(feature = "reqwest-middleware")]

#[path = "support/chunks.rs"]
mod chunks;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chunks::Chunks;
use http::{Extensions, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use server::{Protocol, serve};
use tokio::sync::{Semaphore, mpsc};
use tower_optimizer::cache::{CACHE_STATUS, Cache, CacheStatus, Outcome, RemovalCause, RequestCacheMode};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, error::Open};
use tower_optimizer::stack::{OptimizerStack, OptimizerStackBuilder, ShuttingDown};

/// An h2c server: `/items/N` (fresh for a minute), `/swr` (stale at once,
/// refreshable for a minute), `/old` (a redirect to `/items/7`), `/down`
/// (503), `/echo` (the request body's length), `/reset` (half a body,
/// then a reset), `/held...` (fresh, once
/// the test adds a permit to the returned semaphore) and `/hang` (never
/// answers). Each request's path is sent to the returned receiver.
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<String>, Arc<Semaphore>) {
    let (seen, paths) = mpsc::unbounded_channel();
    let served = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Semaphore::new(0));
    let gate = held.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let path = req.uri().path().to_owned();
        let _ = seen.send(path.clone());
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = gate.clone();
        async move {
            if path.starts_with("/held") {
                drop(gate.acquire().await.unwrap());
            } else if path == "/hang" {
                std::future::pending::<()>().await;
            }
            let res = match path.as_str() {
                "/swr" => Response::builder().header("cache-control", "max-age=0, stale-while-revalidate=60"),
                "/old" => Response::builder().status(301).header("location", "/items/7"),
                "/down" => Response::builder().status(503),
                _ => Response::builder().header("cache-control", "max-age=60"),
            };
            if path == "/reset" {
                // Half the body, then the stream is reset.
                let body = Chunks::pattern(50, 10).failing(true).paced();
                return Ok::<_, Infallible>(res.header("content-length", "100").body(body.boxed()).unwrap());
            }
            let body = if path == "/echo" {
                let sent = req.into_body().collect().await.unwrap().to_bytes();
                format!("{} bytes", sent.len())
            } else {
                format!("{path} #{n}")
            };
            Ok(res
                .body(Full::new(Bytes::from(body)).map_err(Into::into).boxed())
                .unwrap())
        }
    });
    (serve(Protocol::H2c, svc).await, paths, held)
}

fn reqwest_h2c() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

/// A middleware that counts the requests it sees and checks they can be
/// cloned (as retry middleware needs: buffered bodies stay buffered).
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Middleware for Counter {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        assert!(
            req.try_clone().is_some(),
            "{} {}: the body stayed reusable",
            req.method(),
            req.url()
        );
        next.run(req, extensions).await
    }
}

/// A client whose chain is `before`, the stack, `after`.
fn client(stack: OptimizerStackBuilder, before: &Counter, after: &Counter) -> ClientWithMiddleware {
    let reqwest = reqwest_h2c();
    let (middleware, _optimizer) = stack.build_reqwest_middleware(reqwest.clone()).unwrap();
    ClientBuilder::new(reqwest)
        .with(before.clone())
        .with(middleware)
        .with(after.clone())
        .build()
}

fn cached() -> OptimizerStackBuilder {
    OptimizerStack::builder().cache(Cache::builder().build().unwrap())
}

fn outcome(res: &reqwest::Response) -> Option<Outcome> {
    CacheStatus::from_headers(res.headers())
        .as_ref()
        .map(CacheStatus::outcome)
}

// Real sockets on the real clock; nothing here sleeps.
#[tokio::test]
async fn hits_end_in_the_chain_and_misses_go_on_down_it() {
    let (addr, mut paths, _) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let client = client(cached(), &before, &after);
    let url = format!("http://{addr}/items/1");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let res = client.get(&url).send().await.unwrap();
        assert_eq!(res.url().as_str(), url);
        assert_eq!(
            res.content_length(),
            Some("/items/1 #1".len() as u64),
            "the length reaches reqwest"
        );
        seen.push((outcome(&res), res.headers().contains_key(CACHE_STATUS)));
        assert_eq!(res.text().await.unwrap(), "/items/1 #1");
    }
    assert_eq!(
        seen,
        [
            (Some(Outcome::Miss), true),
            (Some(Outcome::Hit), true),
            (Some(Outcome::Hit), true)
        ]
    );
    assert_eq!(
        (before.count(), after.count()),
        (3, 1),
        "only the miss went on down the chain"
    );
    assert_eq!(paths.recv().await.unwrap(), "/items/1");
    assert!(paths.try_recv().is_err(), "the upstream saw one request");
}

#[tokio::test]
async fn per_request_settings_reach_the_cache() {
    let (addr, _paths, _) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let client = client(cached(), &before, &after);
    let url = format!("http://{addr}/items/2");
    // A request's settings reach the cache: nothing stored yet, so a 504.
    let res = client
        .get(&url)
        .with_extension(RequestCacheMode::OnlyIfCached)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(after.count(), 0);
    client.get(&url).send().await.unwrap();
    let res = client
        .get(&url)
        .with_extension(RequestCacheMode::Reload)
        .send()
        .await
        .unwrap();
    assert_eq!(outcome(&res), Some(Outcome::Miss), "a reload goes upstream");
    assert_eq!(res.text().await.unwrap(), "/items/2 #2");
    assert_eq!(after.count(), 2);
}

#[tokio::test]
async fn a_redirected_answer_keeps_its_final_url() {
    let (addr, _paths, _) = server().await;
    let client = client(cached(), &Counter::default(), &Counter::default());
    let res = client.get(format!("http://{addr}/old")).send().await.unwrap();
    assert_eq!(res.url().as_str(), format!("http://{addr}/items/7"));
    assert_eq!(res.text().await.unwrap(), "/items/7 #2");
}

#[tokio::test]
async fn request_bodies_pass_down_the_chain_whole_and_reusable() {
    let (addr, _paths, _) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let client = client(cached(), &before, &after);
    let res = client
        .post(format!("http://{addr}/echo"))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "100000 bytes");
    assert_eq!(after.count(), 1, "the counter below checked the body could be cloned");
}

#[tokio::test]
async fn an_open_circuit_is_a_middleware_error_that_downcasts() {
    let (addr, _paths, _) = server().await;
    let client = client(
        OptimizerStack::builder().circuit_breaker(CircuitBreakerConfig::default()),
        &Counter::default(),
        &Counter::default(),
    );
    let url = format!("http://{addr}/down");
    let mut answered = 0;
    let error = loop {
        match client.get(&url).send().await {
            Ok(res) => {
                assert_eq!(res.status(), 503);
                answered += 1;
                assert!(answered <= 20, "the breaker opens within 20 failures");
            }
            Err(error) => break error,
        }
    };
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("an open circuit is the stack's own error: {error:?}");
    };
    let open = error.downcast_ref::<Open>().expect("it downcasts to error::Open");
    assert!(open.retry_after() > Duration::ZERO);
    assert_eq!(open.key(), format!("http://{addr}"));
}

#[tokio::test]
async fn an_error_from_below_comes_back_as_it_was() {
    // A port nothing listens on: the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(cached(), &Counter::default(), &Counter::default());
    let error = client.get(format!("http://{addr}/items/1")).send().await.unwrap_err();
    let reqwest_middleware::Error::Reqwest(error) = error else {
        panic!("reqwest's error stays reqwest's: {error:?}");
    };
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn the_caches_own_requests_go_to_the_client() {
    let (addr, mut paths, _) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let reqwest = reqwest_h2c();
    let url = format!("http://{addr}/swr");
    // Told when a stored response is replaced: the refresh has stored.
    let (replaced, mut replacements) = mpsc::unbounded_channel();
    let cache = Cache::builder()
        .eviction_listener(move |meta, cause| {
            if cause == RemovalCause::Replaced {
                let _ = replaced.send(meta.key.to_string());
            }
        })
        .build()
        .unwrap();
    let (middleware, optimizer) = OptimizerStack::builder()
        .cache(cache)
        .warm_up([format!("http://{addr}/items/5")])
        .build_reqwest_middleware(reqwest.clone())
        .unwrap();
    let client = ClientBuilder::new(reqwest)
        .with(before.clone())
        .with(middleware)
        .with(after.clone())
        .build();
    // Warm-up has no call to go down: the client fetches it.
    let report = optimizer.start().await.unwrap();
    assert_eq!((report.warmed, report.warm_up_failures.len()), (1, 0));
    assert_eq!(paths.recv().await.unwrap(), "/items/5");
    let res = client.get(format!("http://{addr}/items/5")).send().await.unwrap();
    assert_eq!(outcome(&res), Some(Outcome::Hit));
    // A stale answer is served at once and refreshed behind, after the
    // call has ended: the refresh goes to the client.
    client.get(&url).send().await.unwrap();
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(
        outcome(&res),
        Some(Outcome::StaleHit),
        "served stale while revalidating"
    );
    assert_eq!(res.text().await.unwrap(), "/swr #2");
    let refreshed = tokio::time::timeout(Duration::from_secs(10), replacements.recv())
        .await
        .expect("the refresh stored its answer")
        .unwrap();
    assert_eq!(refreshed, url);
    assert_eq!(paths.recv().await.unwrap(), "/swr");
    assert_eq!(paths.recv().await.unwrap(), "/swr", "the refresh reached the upstream");
    assert_eq!(
        (before.count(), after.count()),
        (3, 1),
        "only the first /swr went down the chain"
    );
    let last = client.get(&url).send().await.unwrap();
    assert_eq!(last.text().await.unwrap(), "/swr #3", "the refresh was stored");
}

#[tokio::test]
async fn concurrent_misses_from_two_calls_share_one_upstream_request() {
    let (addr, mut paths, held) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let client = client(cached(), &before, &after);
    let url = format!("http://{addr}/held");
    // Both calls are in the stack before the server answers: the first
    // leads the flight down its chain, the second waits for it.
    let (a, b, ()) = tokio::join!(client.get(&url).send(), client.get(&url).send(), async {
        assert_eq!(paths.recv().await.unwrap(), "/held");
        held.add_permits(1);
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let collapsed = |res: &reqwest::Response| CacheStatus::from_headers(res.headers()).unwrap().collapsed;
    assert_eq!((collapsed(&a), collapsed(&b)), (false, true));
    assert_eq!(a.text().await.unwrap(), "/held #1");
    assert_eq!(b.text().await.unwrap(), "/held #1");
    assert_eq!((before.count(), after.count()), (2, 1), "one call went down the chain");
    assert!(paths.try_recv().is_err(), "the upstream saw one request");
}

// Paused time: the upstream never answers, so the runtime, idle, moves the
// clock to the stack's timeout, which runs while the chain below waits.
#[tokio::test(start_paused = true)]
async fn the_stacks_timeout_runs_while_the_chain_below_waits() {
    let (addr, _paths, _) = server().await;
    let client = client(
        cached().timeout(Duration::from_secs(2)),
        &Counter::default(),
        &Counter::default(),
    );
    let start = tokio::time::Instant::now();
    let error = client.get(format!("http://{addr}/hang")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("the timeout is the stack's own error: {error:?}");
    };
    assert!(
        error.downcast_ref::<tower::timeout::error::Elapsed>().is_some(),
        "{error:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

// Paused time, as above: reqwest's own per-request timeout is the caller's
// limit, which the stack keeps. Shorter than the stack's, it ends the call
// on time, and the breaker counts the cut calls as cancelled, not failed.
#[tokio::test(start_paused = true)]
async fn a_requests_own_timeout_is_the_callers_limit() {
    let (addr, _paths, _) = server().await;
    let reqwest = reqwest_h2c();
    let (middleware, optimizer) = cached()
        .circuit_breaker(
            CircuitBreakerConfig::builder()
                .consecutive_failures(Some(3))
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build_reqwest_middleware(reqwest.clone())
        .unwrap();
    let client = ClientBuilder::new(reqwest).with(middleware).build();
    for _ in 0..4 {
        let start = tokio::time::Instant::now();
        let error = client
            .get(format!("http://{addr}/hang"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .unwrap_err();
        let reqwest_middleware::Error::Middleware(error) = error else {
            panic!("the limit is kept by the stack: {error:?}");
        };
        assert!(
            error.downcast_ref::<tower::timeout::error::Elapsed>().is_some(),
            "{error:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
    let breaker = &optimizer.breakers().unwrap().snapshot()[0];
    assert_eq!(breaker.figures.failures, 0, "{breaker:?}");
    assert_eq!(breaker.state, tower_optimizer::circuit_breaker::State::Closed);
}

// Real sockets and two worker threads; the only wait is for the calls to
// enter the chain, bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_many_tasks_make_one_upstream_request_per_key() {
    let (addr, mut paths, held) = server().await;
    let (before, after) = (Counter::default(), Counter::default());
    let client = client(cached(), &before, &after);
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            let url = format!("http://{addr}/held/{}", i % 8);
            tokio::spawn(async move {
                let res = client.get(&url).send().await.unwrap();
                (i % 8, res.text().await.unwrap())
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while before.count() < 64 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every call entered the chain");
    held.add_permits(64);
    let mut bodies = std::collections::HashMap::new();
    for call in calls {
        let (key, body) = call.await.unwrap();
        assert_eq!(
            *bodies.entry(key).or_insert_with(|| body.clone()),
            body,
            "key {key}: one answer"
        );
        assert!(body.starts_with(&format!("/held/{key} #")), "{body}");
    }
    assert_eq!(bodies.len(), 8);
    let mut upstream = Vec::new();
    while let Ok(path) = paths.try_recv() {
        upstream.push(path);
    }
    upstream.sort();
    let expected: Vec<_> = (0..8).map(|key| format!("/held/{key}")).collect();
    assert_eq!(upstream, expected, "one upstream request per key");
    assert_eq!(after.count(), 8);
}

#[tokio::test]
async fn after_shutdown_calls_fail_with_shutting_down() {
    let (addr, _paths, _) = server().await;
    let reqwest = reqwest_h2c();
    let (middleware, optimizer) = cached().build_reqwest_middleware(reqwest.clone()).unwrap();
    let client = ClientBuilder::new(reqwest).with(middleware).build();
    let url = format!("http://{addr}/items/3");
    client.get(&url).send().await.unwrap();
    optimizer.shutdown(Duration::from_secs(1)).await;
    let error = client.get(&url).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("shutting down is the stack's own error: {error:?}");
    };
    assert!(error.downcast_ref::<ShuttingDown>().is_some(), "{error:?}");
}

#[tokio::test]
async fn a_body_reset_upstream_is_an_error_for_the_caller_and_nothing_is_stored() {
    let (addr, mut paths, _) = server().await;
    let client = client(cached(), &Counter::default(), &Counter::default());
    let url = format!("http://{addr}/reset");
    for _ in 0..2 {
        match client.get(&url).send().await {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                let error = res
                    .bytes()
                    .await
                    .expect_err("a cut body is an error, never a short success");
                assert!(error.is_body() || error.is_decode(), "{error:?}");
            }
            // The reset overtook the head (the body is paced so that it
            // seldom does): an error all the same.
            Err(reqwest_middleware::Error::Reqwest(error)) => assert!(error.is_request(), "{error:?}"),
            Err(error) => panic!("a reset is reqwest's error: {error:?}"),
        }
        assert_eq!(
            paths.recv().await.unwrap(),
            "/reset",
            "not stored: each call went upstream"
        );
    }
}

/// With retries in the stack, a retried request goes down the chain again,
/// its buffered body with it (on the paused clock: the backoff passes at
/// once).
#[tokio::test(start_paused = true)]
async fn a_retry_goes_down_the_chain_again() {
    let (addr, mut paths, _) = server().await;
    let policy = tower_optimizer::retry::RetryPolicy::default();
    let after = Counter::default();
    let client = client(
        OptimizerStack::builder().retry(policy.clone()),
        &Counter::default(),
        &after,
    );
    let res = client
        .put(format!("http://{addr}/down"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "three 503s: the last is passed on");
    assert_eq!(after.count(), 3, "each attempt went down the chain");
    for _ in 0..3 {
        assert_eq!(paths.recv().await.as_deref(), Some("/down"));
    }
    let stats = policy.stats();
    assert_eq!((stats.retries, stats.attempts_exhausted), (2, 1), "{stats:?}");
}
