//! Long storable bodies reach their caller as they arrive, while the cache
//! keeps a copy and stores it at the end (`CacheBuilder::stream_above`).
//! The upstream's body is a channel, so each test decides when each frame
//! arrives and sees the caller get its answer before the body is whole.
#![cfg(feature = "cache")]

#[path = "support/chunks.rs"]
mod chunks;
#[path = "support/logs.rs"]
mod logs;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt, service_fn};
use tower_optimizer::BoxError;
use tower_optimizer::body::OptimizerBody;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, Outcome};

use chunks::Chunks;

/// A body whose frames the test sends; it ends when the sender is dropped,
/// or, with a declared length, once that much has come (it says so in
/// `is_end_stream`, as hyper's bodies do).
struct Channel {
    frames: mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>,
    left: Option<usize>,
}

impl Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.frames.poll_recv(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(left)) = (&polled, self.left.as_mut()) {
            *left = left.saturating_sub(frame.data_ref().map_or(0, Bytes::len));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0)
    }
}

type Feed = mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

/// An upstream whose every answer is `max-age=60` (with `Content-Length`
/// when `declared` is set) and a channel body; each call hands the test the
/// channel's sender.
#[allow(clippy::type_complexity)] // the service is only nameable as `impl`
fn upstream(
    declared: Option<usize>,
) -> (
    impl Service<Request<Empty<Bytes>>, Response = Response<Channel>, Error = BoxError, Future = impl Send> + Clone,
    mpsc::UnboundedReceiver<Feed>,
    Arc<AtomicUsize>,
) {
    let (feeds, fed) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = service_fn(move |_req: Request<Empty<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        feeds.send(tx).unwrap();
        async move {
            let mut res = Response::builder().header("cache-control", "max-age=60");
            if let Some(len) = declared {
                res = res.header("content-length", len);
            }
            Ok(res
                .body(Channel {
                    frames: rx,
                    left: declared,
                })
                .unwrap())
        }
    });
    (svc, fed, calls)
}

fn data(n: usize) -> Frame<Bytes> {
    Frame::data(Bytes::from(vec![u8::try_from(n % 251).unwrap(); 1000]))
}

fn whole(chunks: usize) -> Vec<u8> {
    (0..chunks)
        .flat_map(|n| vec![u8::try_from(n % 251).unwrap(); 1000])
        .collect()
}

type Answer = Response<OptimizerBody<Channel>>;

async fn call<S>(svc: &mut S) -> Result<Answer, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Answer, Error = BoxError>,
{
    call_as(svc, "a").await
}

/// A request from `tenant` (an `x-tenant` header).
async fn call_as<S>(svc: &mut S, tenant: &str) -> Result<Answer, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Answer, Error = BoxError>,
{
    let request = Request::get("http://api.test/long")
        .header("x-tenant", tenant)
        .body(Empty::new())
        .unwrap();
    svc.ready().await?.call(request).await
}

/// Starts a request on a task of its own.
fn spawn_call<S>(svc: &S, tenant: &'static str) -> tokio::task::JoinHandle<Result<Answer, BoxError>>
where
    S: Service<Request<Empty<Bytes>>, Response = Answer, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut svc = svc.clone();
    tokio::spawn(async move { call_as(&mut svc, tenant).await })
}

/// Reads `n` bytes of data frames. Bounded: on the paused clock, a body
/// that never comes fails the test after a minute instead of hanging it.
async fn read<B>(body: &mut OptimizerBody<B>, n: usize) -> Vec<u8>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut data = Vec::new();
    while data.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("a frame within a minute")
            .expect("more frames")
            .expect("no error");
        data.extend_from_slice(frame.data_ref().expect("a data frame"));
    }
    data
}

fn status(response: &Answer) -> CacheStatus {
    CacheStatus::from_headers(response.headers()).unwrap()
}

fn cache() -> Cache {
    Cache::builder()
        .stream_above(4096)
        .max_entry_bytes(64 << 10)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_long_body_reaches_its_caller_as_it_arrives_and_is_stored_at_its_end() {
    let cache = cache();
    let (upstream, mut fed, calls) = upstream(None);
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let first = tokio::spawn({
        let mut svc = svc.clone();
        async move { call(&mut svc).await }
    });
    let feed = fed.recv().await.unwrap();
    for n in 0..4 {
        feed.send(Ok(data(n))).unwrap();
    }
    tokio::task::yield_now().await;
    assert!(!first.is_finished(), "4,000 bytes: still buffered, under 4,096");
    feed.send(Ok(data(4))).unwrap();
    let response = first.await.unwrap().unwrap();
    let streamed = status(&response);
    assert_eq!((streamed.stored, streamed.detail), (false, Some("streamed")));
    assert_eq!(streamed.ttl, Some(60));
    assert_eq!(
        response.headers()["cache-status"],
        "tower-optimizer; fwd=uri-miss; fwd-status=200; ttl=60; detail=streamed"
    );
    let mut body = response.into_body();
    assert_eq!(read(&mut body, 5000).await, whole(5));
    // A request for the same key now shares the body as it arrives, from
    // its first byte, though it declared no length.
    let waiter = spawn_call(&svc, "a").await.unwrap().unwrap();
    let shared = status(&waiter);
    assert!(shared.collapsed && !shared.stored, "{shared:?}");
    assert_eq!(shared.detail, Some("streamed"));
    let mut shared = waiter.into_body();
    assert_eq!(read(&mut shared, 5000).await, whole(5), "read before the body ended");
    assert_eq!(cache.stats().entries, 0, "not stored before its end");
    for n in 5..10 {
        feed.send(Ok(data(n))).unwrap();
    }
    drop(feed);
    let mut rest = read(&mut body, 5000).await;
    assert!(body.frame().await.is_none());
    let mut all = whole(5);
    all.append(&mut rest);
    assert_eq!(all, whole(10), "every byte, in order");
    assert_eq!(cache.stats().entries, 1, "stored at its end");
    assert_eq!(cache.stats().streamed, 1);
    assert_eq!(shared.collect().await.unwrap().to_bytes(), whole(10)[5000..]);
    // The shared chunks stay counted in the in-flight budget while a
    // reader holds them.
    assert_eq!(cache.stats().inflight_bytes, 10_000);
    drop(body);
    let hit = call(&mut svc).await.unwrap();
    assert_eq!(status(&hit).outcome(), Outcome::Hit);
    assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), whole(10));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().inflight_bytes, 0);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_declared_long_body_streams_from_its_first_byte_and_is_stored_when_it_says_it_ended() {
    let cache = cache();
    let (upstream, mut fed, _) = upstream(Some(6000));
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let (response, feed) = tokio::join!(call(&mut svc), fed.recv());
    let response = response.unwrap();
    let feed = feed.unwrap();
    assert_eq!(status(&response).detail, Some("streamed"), "before any body arrived");
    let mut body = response.into_body();
    for n in 0..6 {
        feed.send(Ok(data(n))).unwrap();
    }
    // The reader stops at `is_end_stream`, as hyper does, and never polls
    // for the end: the entry is stored all the same.
    assert_eq!(read(&mut body, 6000).await, whole(6));
    assert!(body.is_end_stream());
    assert_eq!(cache.stats().entries, 1);
    drop(feed);
}

/// A shared body whose first caller stops reading is read on for the
/// others and the store; one that then fails fails its readers and is not
/// stored. With no flight to share it (the key known uncacheable), a
/// caller that stops reading ends the upstream body.
#[tokio::test(start_paused = true)]
async fn a_shared_body_the_caller_drops_is_read_on_and_one_that_fails_is_not_stored() {
    let cache = cache();
    let (upstream, mut fed, calls) = upstream(None);
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let first = spawn_call(&svc, "a");
    let feed = fed.recv().await.unwrap();
    for n in 0..5 {
        feed.send(Ok(data(n))).unwrap();
    }
    let mut body = first.await.unwrap().unwrap().into_body();
    read(&mut body, 5000).await;
    let mut waiter = spawn_call(&svc, "a").await.unwrap().unwrap().into_body();
    // The caller stops reading halfway; the waiter reads on.
    drop(body);
    for n in 5..8 {
        feed.send(Ok(data(n))).unwrap();
    }
    assert_eq!(read(&mut waiter, 8000).await, whole(8));
    // The body fails after it started streaming.
    feed.send(Err("upstream reset the stream".into())).unwrap();
    let error = waiter.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "upstream reset the stream");
    drop(waiter);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.inflight_bytes), (0, 0));
    assert!(stats.not_storable >= 1);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_past_max_entry_bytes_or_with_trailers_passes_whole_and_uncached() {
    let cache = Cache::builder()
        .stream_above(4096)
        .max_entry_bytes(8000)
        .build()
        .unwrap();
    let (upstream, mut fed, calls) = upstream(None);
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    for trailers in [false, true] {
        let pending = tokio::spawn({
            let mut svc = svc.clone();
            async move { call(&mut svc).await }
        });
        let feed = fed.recv().await.unwrap();
        let chunks = if trailers { 6 } else { 12 };
        for n in 0..chunks {
            feed.send(Ok(data(n))).unwrap();
        }
        if trailers {
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", "abc".parse().unwrap());
            feed.send(Ok(Frame::trailers(t))).unwrap();
        }
        drop(feed);
        let response = pending.await.unwrap().unwrap();
        assert_eq!(status(&response).detail, Some("streamed"));
        let collected = response.into_body().collect().await.unwrap();
        if trailers {
            assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
        }
        assert_eq!(collected.to_bytes(), whole(chunks), "every byte, in order");
        assert_eq!(cache.stats().entries, 0);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().inflight_bytes, 0);
    assert!(cache.audit().is_clean());
}

/// While a stale entry could stand in for a failing body (stale-if-error),
/// a long body is buffered whole: its failure is answered stale, which a
/// streamed body could not be.
#[tokio::test(start_paused = true)]
async fn a_long_body_that_a_stale_entry_could_replace_is_buffered_and_replaced_when_it_fails() {
    let cache = Cache::builder()
        .stream_above(4096)
        .stale_if_error(Duration::from_secs(300))
        .build()
        .unwrap();
    let (upstream, mut fed, _) = upstream(None);
    let mut svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let (first, feed) = tokio::join!(call(&mut svc), async {
        let feed = fed.recv().await.unwrap();
        for n in 0..6 {
            feed.send(Ok(data(n))).unwrap();
        }
        feed
    });
    drop(feed);
    let first = first.unwrap();
    assert_eq!(status(&first).detail, Some("streamed"), "nothing to stand in: streamed");
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), whole(6));
    tokio::time::advance(Duration::from_secs(61)).await;
    let second = tokio::spawn({
        let mut svc = svc.clone();
        async move { call(&mut svc).await }
    });
    let feed = fed.recv().await.unwrap();
    for n in 10..16 {
        feed.send(Ok(data(n))).unwrap();
    }
    tokio::task::yield_now().await;
    assert!(
        !second.is_finished(),
        "6,000 bytes, but buffered while the stale entry can stand in"
    );
    feed.send(Err("upstream reset the stream".into())).unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(status(&second).detail, Some("stale-if-error"));
    assert_eq!(
        second.into_body().collect().await.unwrap().to_bytes(),
        whole(6),
        "the stored body"
    );
}

/// A body of declared length is read once, by a task of its own, and every
/// request for the key reads it as it arrives: the flight's waiters and
/// those that join while it streams, from its first byte. The request that
/// fetched it may stop reading without cutting the others off.
#[tokio::test(start_paused = true)]
async fn waiters_and_late_joiners_read_a_declared_long_body_as_it_arrives() {
    let cache = cache();
    let (upstream, mut fed, calls) = upstream(Some(10_000));
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let leader = spawn_call(&svc, "a");
    let waiter = spawn_call(&svc, "a");
    let feed = fed.recv().await.unwrap();
    for n in 0..3 {
        feed.send(Ok(data(n))).unwrap();
    }
    let (leader, waiter) = (leader.await.unwrap().unwrap(), waiter.await.unwrap().unwrap());
    assert_eq!(status(&leader).detail, Some("streamed"));
    let shared = status(&waiter);
    assert!(shared.collapsed && !shared.hit && !shared.stored, "{shared:?}");
    assert_eq!(
        (shared.detail, shared.ttl, shared.fwd_status),
        (Some("streamed"), Some(60), Some(200))
    );
    assert_eq!(waiter.headers()["content-length"], "10000");
    let mut leader = leader.into_body();
    let mut waiter = waiter.into_body();
    assert_eq!(read(&mut leader, 3000).await, whole(3));
    assert_eq!(read(&mut waiter, 3000).await, whole(3), "read before the body ended");
    drop(leader);
    // Joins while it streams, and reads it from the start.
    let mut late = spawn_call(&svc, "a").await.unwrap().unwrap().into_body();
    assert_eq!(read(&mut late, 3000).await, whole(3));
    for n in 3..10 {
        feed.send(Ok(data(n))).unwrap();
    }
    let mut rest = read(&mut waiter, 7000).await;
    let mut got = whole(3);
    got.append(&mut rest);
    assert_eq!(got, whole(10));
    assert!(waiter.frame().await.is_none());
    assert_eq!(late.collect().await.unwrap().to_bytes(), whole(10)[3000..]);
    let hit = call(&mut svc.clone()).await.unwrap();
    assert!(status(&hit).hit, "stored at its end");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call for four requests");
    assert_eq!(cache.stats().streamed, 1, "one body streamed, read four times");
    assert_eq!(cache.stats().coalesced, 2);
    // The shared chunks count in the in-flight budget while a reader holds
    // them, stored copy or not.
    assert_eq!(cache.stats().inflight_bytes, 10_000);
    drop(waiter);
    assert_eq!(cache.stats().inflight_bytes, 0);
    assert!(cache.audit().is_clean());
    drop(feed);
}

/// An upstream body error with a source, as hyper's are.
#[derive(Debug)]
struct Reset(std::io::Error);

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream reset the stream")
    }
}

impl std::error::Error for Reset {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A shared body that fails reaches every reader as the same error after
/// what came; nothing is stored, and the next request goes upstream. A
/// request of another `Vary` variant does not share it.
#[tokio::test(start_paused = true)]
async fn a_shared_body_that_fails_fails_every_reader_and_other_variants_go_alone() {
    let cache = Cache::builder()
        .stream_above(4096)
        .vary_on(["x-tenant"])
        .build()
        .unwrap();
    let (upstream, mut fed, calls) = upstream(Some(10_000));
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let leader = spawn_call(&svc, "a");
    let feed = fed.recv().await.unwrap();
    let mut leader = leader.await.unwrap().unwrap().into_body();
    let mut waiter = spawn_call(&svc, "a").await.unwrap().unwrap().into_body();
    // Another tenant: another variant, so its own upstream call.
    let other = spawn_call(&svc, "b");
    let other_feed = fed.recv().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    feed.send(Ok(data(0))).unwrap();
    feed.send(Err(Box::new(Reset(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )))))
    .unwrap();
    for body in [&mut leader, &mut waiter] {
        assert_eq!(read(body, 1000).await, whole(1));
        let error = body.frame().await.unwrap().unwrap_err();
        // Every reader gets the error's text with its source's: what the
        // connection said is not lost on the way.
        assert_eq!(error.to_string(), "upstream reset the stream: connection reset");
    }
    assert_eq!(cache.stats().entries, 0);
    drop((other_feed, other));
    let _next = spawn_call(&svc, "a");
    assert!(fed.recv().await.is_some(), "the next request goes upstream");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

mod model {
    use super::*;
    use chunks::pattern;
    use proptest::prelude::*;

    /// What one case's upstream sends.
    #[derive(Debug, Clone)]
    struct Plan {
        len: usize,
        chunk: usize,
        declared: bool,
        fail: bool,
        stream_above: usize,
        readers: usize,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (
            0usize..100_000,
            1usize..20_000,
            any::<bool>(),
            prop::bool::weighted(0.25),
            1usize..40_000,
            1usize..5,
        )
            .prop_map(|(len, chunk, declared, fail, stream_above, readers)| Plan {
                len,
                chunk,
                declared,
                fail,
                stream_above,
                readers,
            })
    }

    /// The bytes a reader got, and its error if the body failed.
    async fn read_all(mut body: OptimizerBody<Chunks>) -> (Vec<u8>, Option<String>) {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => data.extend_from_slice(frame.data_ref().expect("data only")),
                Err(error) => return (data, Some(error.to_string())),
            }
        }
        (data, None)
    }

    /// Runs one plan: every reader gets the body or a prefix and the
    /// upstream's error; only a whole body within `max_entry_bytes` is
    /// stored, after one upstream call; nothing stays reserved and the
    /// accounting holds.
    async fn check(plan: Plan) {
        let max_entry = 64 << 10;
        let cache = Cache::builder()
            .stream_above(plan.stream_above)
            .max_entry_bytes(max_entry)
            .remember_uncacheable(None)
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let upstream = {
            let (plan, calls) = (plan.clone(), calls.clone());
            service_fn(move |_req: Request<Empty<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let mut res = Response::builder().header("cache-control", "max-age=60");
                if plan.declared {
                    res = res.header("content-length", plan.len);
                }
                let body = Chunks::pattern(plan.len, plan.chunk).failing(plan.fail).paced();
                async move { Ok::<_, BoxError>(res.body(body).unwrap()) }
            })
        };
        let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
        let tasks: Vec<_> = (0..plan.readers)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    let request = Request::get("http://api.test/p").body(Empty::new()).unwrap();
                    let response = svc.ready().await.unwrap().call(request).await.unwrap();
                    read_all(response.into_body()).await
                })
            })
            .collect();
        let whole = pattern(plan.len);
        for task in tasks {
            let (data, error) = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("every reader finishes")
                .unwrap();
            if plan.fail {
                assert_eq!(error.as_deref(), Some("upstream reset the stream"), "{plan:?}");
                assert_eq!(&data[..], &whole[..data.len()], "a prefix of the body: {plan:?}");
            } else {
                assert_eq!(error, None, "{plan:?}");
                assert!(data == whole, "the whole body, in order: {plan:?}");
            }
        }
        let stats = cache.stats();
        let storable = !plan.fail && plan.len <= max_entry;
        assert_eq!(stats.entries, u64::from(storable), "{plan:?}");
        if storable {
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{plan:?}");
        }
        // Released before any reader saw the end (stored or dropped).
        assert_eq!(stats.inflight_bytes, 0, "{plan:?}");
        assert!(cache.audit().is_clean(), "{plan:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// However a storable body is delivered (buffered, streamed to one
        /// caller, or shared with waiters), each reader gets what `check`
        /// asks, on the paused clock of one thread.
        #[test]
        fn every_reader_gets_the_body_or_its_prefix_and_error(plan in plan()) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(check(plan));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The same on two worker threads, where readers, the shared
        /// body's task and the upstream run at once.
        #[test]
        fn every_reader_gets_the_body_or_its_prefix_and_error_across_threads(plan in plan()) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(check(plan));
        }
    }
}

/// An invalidation while a body is shared: its readers, who asked before,
/// read on; a request after it does not join but goes upstream, and the
/// outdated body is not stored.
#[tokio::test(start_paused = true)]
async fn a_shared_body_outdated_by_an_invalidation_is_not_stored_or_joined() {
    let cache = cache();
    let (upstream, mut fed, calls) = upstream(Some(6000));
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let leader = spawn_call(&svc, "a");
    let feed = fed.recv().await.unwrap();
    let mut leader = leader.await.unwrap().unwrap().into_body();
    let mut waiter = spawn_call(&svc, "a").await.unwrap().unwrap().into_body();
    feed.send(Ok(data(0))).unwrap();
    assert_eq!(read(&mut waiter, 1000).await, whole(1));
    let key = cache.key_for_uri(&"http://api.test/long".parse().unwrap()).unwrap();
    cache.remove_key(&key);
    let after = spawn_call(&svc, "a");
    let fresh_feed = fed
        .recv()
        .await
        .expect("a request after the invalidation goes upstream");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for n in 1..6 {
        feed.send(Ok(data(n))).unwrap();
    }
    assert_eq!(read(&mut leader, 6000).await, whole(6), "asked before: reads on");
    assert_eq!(read(&mut waiter, 5000).await, whole(6)[1000..]);
    assert_eq!(cache.stats().entries, 0, "the outdated body is not stored");
    for n in 0..6 {
        fresh_feed.send(Ok(data(n + 20))).unwrap();
    }
    let fresh = after
        .await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(fresh.len(), 6000);
    assert_eq!(cache.stats().entries, 1, "the answer after the invalidation is");
    assert!(cache.audit().is_clean());
}

/// A stale-while-revalidate refresh whose answer is long enough to stream
/// reads it to its end in the background, so the refreshed copy is stored.
#[tokio::test(start_paused = true)]
async fn a_background_refresh_of_a_long_body_stores_it() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let upstream = service_fn(move |_req: Request<Empty<Bytes>>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        // Version `n`: ten 1,000-byte chunks of the byte `n`, no length.
        let chunks = (0..10).map(move |_| Bytes::from(vec![u8::try_from(n).unwrap(); 1000]));
        let res = Response::builder().header("cache-control", "max-age=1, stale-while-revalidate=60");
        async move { Ok::<_, BoxError>(res.body(Chunks::new(chunks).paced()).unwrap()) }
    });
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let get = || {
        let mut svc = svc.clone();
        async move {
            let request = Request::get("http://api.test/swr").body(Empty::new()).unwrap();
            let response = svc.ready().await.unwrap().call(request).await.unwrap();
            let status = CacheStatus::from_headers(response.headers()).unwrap();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        }
    };
    let (first, body) = get().await;
    assert_eq!((first.detail, body[0], body.len()), (Some("streamed"), 0, 10_000));
    tokio::time::advance(Duration::from_secs(2)).await;
    let (stale, body) = get().await;
    assert_eq!((stale.detail, body[0]), (Some("stale-while-revalidate"), 0));
    // The refresh runs on its own; give it time to read its body.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (hit, body) = get().await;
    assert!(hit.hit && hit.detail.is_none(), "{hit:?}");
    assert_eq!((body[0], body.len()), (1, 10_000), "the refreshed copy");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A body that does not match its `Content-Length` is incomplete (RFC 9111
/// §3.4): never stored, and readers of a shared one see it fail rather
/// than end short or run long.
#[tokio::test(start_paused = true)]
async fn a_body_that_breaks_its_content_length_is_not_stored() {
    // Declares `declared` bytes but sends what the test feeds, with no
    // word of its end but the channel closing.
    let lying = |declared: usize| {
        let (feeds, fed) = mpsc::unbounded_channel::<Feed>();
        let svc = service_fn(move |_req: Request<Empty<Bytes>>| {
            let (tx, rx) = mpsc::unbounded_channel();
            feeds.send(tx).unwrap();
            let res = Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-length", declared);
            async move { Ok::<_, BoxError>(res.body(Channel { frames: rx, left: None }).unwrap()) }
        });
        (svc, fed)
    };
    // (declared, chunks sent, what readers of a shared body see)
    for (declared, sent, error) in [
        (6000, 7, Some("the upstream body is longer than its Content-Length")),
        (6000, 5, Some("the upstream body is shorter than its Content-Length")),
        // Under `stream_above`: buffered, then passed on as it came.
        (3000, 2, None),
    ] {
        let cache = cache();
        let (upstream, mut fed) = lying(declared);
        let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
        let first = spawn_call(&svc, "a");
        let feed = fed.recv().await.unwrap();
        for n in 0..sent {
            feed.send(Ok(data(n))).unwrap();
        }
        drop(feed);
        let mut body = first.await.unwrap().unwrap().into_body();
        let mut got = Vec::new();
        let mut failed = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => got.extend_from_slice(frame.data_ref().unwrap()),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        assert_eq!(failed.as_deref(), error, "declared {declared}, sent {sent}");
        assert_eq!(
            got,
            whole(sent.min(declared / 1000)),
            "what came, no more than declared"
        );
        assert_eq!(cache.stats().entries, 0, "declared {declared}, sent {sent}: not stored");
        assert!(cache.stats().not_storable >= 1);
        drop(body);
        assert_eq!(cache.stats().inflight_bytes, 0);
    }
}

/// A body that declares no length counts the chunks its task took.
struct Tally {
    frames: mpsc::UnboundedReceiver<Bytes>,
    taken: Arc<AtomicUsize>,
}

impl Body for Tally {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.frames.poll_recv(cx);
        if let Poll::Ready(Some(_)) = polled {
            self.taken.fetch_add(1, Ordering::SeqCst);
        }
        polled.map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// A shared body that declared no length and outgrows `max_entry_bytes`:
/// those who joined before read every byte, at the pace of the slowest (the
/// task reads on only while what is held fits the room it had reserved),
/// or, once a reader has lagged for `lock_timeout`, at their own (a caller
/// that reads one response to its end before the other must not
/// deadlock); a request after it goes upstream alone; nothing of it is
/// stored and nothing stays reserved.
#[tokio::test(start_paused = true)]
async fn a_shared_body_that_overflows_goes_at_its_slowest_readers_pace_and_is_not_stored() {
    let (logs, _guard) = logs::Logs::capture();
    let cache = Cache::builder()
        .stream_above(4096)
        .max_entry_bytes(8000)
        .build()
        .unwrap();
    let (feeds, mut fed) = mpsc::unbounded_channel();
    let taken = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let (taken, calls) = (taken.clone(), calls.clone());
        service_fn(move |_req: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (tx, frames) = mpsc::unbounded_channel();
            feeds.send(tx).unwrap();
            let body = Tally {
                frames,
                taken: taken.clone(),
            };
            async move {
                let res = Response::builder().header("cache-control", "max-age=60");
                Ok::<_, BoxError>(res.body(body).unwrap())
            }
        })
    };
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream);
    let get = |svc: &_| {
        let mut svc: tower_optimizer::cache::CacheService<_> = Clone::clone(svc);
        tokio::spawn(async move {
            // The query stands for a credential, which the log must not show.
            let request = Request::get("http://api.test/huge?sig=s3cret")
                .body(Empty::new())
                .unwrap();
            svc.ready().await.unwrap().call(request).await.unwrap()
        })
    };
    let chunk = |n: usize| data(n).into_data().unwrap();
    let leader = get(&svc);
    let feed: mpsc::UnboundedSender<Bytes> = fed.recv().await.unwrap();
    let waiter = get(&svc);
    tokio::task::yield_now().await;
    for n in 0..5 {
        feed.send(chunk(n)).unwrap();
    }
    let (leader, waiter) = (leader.await.unwrap(), waiter.await.unwrap());
    assert!(CacheStatus::from_headers(waiter.headers()).unwrap().collapsed);
    let (mut leader, mut waiter) = (leader.into_body(), waiter.into_body());
    for n in 5..30 {
        feed.send(chunk(n)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 8,000 bytes are kept whole; the ninth chunk overflows, and with
    // 9,000 bytes held and reserved the task waits for its readers.
    assert_eq!(taken.load(Ordering::SeqCst), 9);
    assert_eq!(cache.stats().inflight_bytes, 9000, "never more than it reserved");
    // Nobody joins it now: a new request goes upstream alone.
    let alone = get(&svc);
    let alone_feed = fed.recv().await.unwrap();
    drop(alone_feed);
    assert_eq!(alone.await.unwrap().into_body().collect().await.unwrap().to_bytes(), "");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // One reader alone cannot pull it along: the other still needs it all.
    let start = tokio::time::Instant::now();
    let mut got = read(&mut leader, 9000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(taken.load(Ordering::SeqCst), 9, "held for the slowest reader");
    let mut other = read(&mut waiter, 9000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(taken.load(Ordering::SeqCst), 18, "room again: 9,000 bytes more");
    // Read one to its end before the other, the sequential pattern: the
    // task waits for the laggard for the lock timeout (5 s), then reads on.
    drop(feed);
    let stalled = tokio::time::Instant::now();
    let got_rest = tokio::time::timeout(Duration::from_secs(60), leader.collect())
        .await
        .expect("no deadlock")
        .unwrap()
        .to_bytes();
    // The wait began when the room filled, just after the second read.
    let waited = start.elapsed();
    assert_eq!(
        stalled.elapsed(),
        Duration::from_secs(4),
        "{waited:?}: read on after 5 s, not before"
    );
    got.extend(got_rest);
    assert_eq!(got, whole(30), "every byte, in order");
    let said = logs.text();
    assert!(
        said.contains("WARN") && said.contains("unread for the lock timeout") && said.contains("api.test/huge?"),
        "the wait past the budget is logged, with its key: {said}"
    );
    assert!(!said.contains("s3cret"), "a key's query is never logged: {said}");
    assert_eq!(
        cache.stats().inflight_bytes,
        21_000,
        "what the laggard has yet to read, counted"
    );
    other.extend(waiter.collect().await.unwrap().to_bytes());
    assert_eq!(other, whole(30));
    assert_eq!(taken.load(Ordering::SeqCst), 30);
    let stats = cache.stats();
    // Stored: only the empty answer of the request that went alone.
    assert_eq!((stats.entries, stats.inflight_bytes), (1, 0));
    assert!(cache.entries()[0].size < 8000, "{:?}", cache.entries());
    assert!(cache.audit().is_clean());
}
