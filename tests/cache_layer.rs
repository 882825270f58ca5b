//! The cache layer's behaviour through a real inner service, on paused time.
#![cfg(feature = "cache")]

#[path = "support/logs.rs"]
mod logs;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use support::*;
use tokio::time::{Instant, advance};
use tower_optimizer::cache::{Cache, CacheMode, Forward, Outcome, RemovalCause};

#[tokio::test(start_paused = true)]
async fn fresh_hit_with_age_and_cache_status() {
    let cache = cache();
    let upstream = Upstream::new(|_, _| async {
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .header("age", "10")
            .body(Full::new(Bytes::from_static(b"v1")))
            .unwrap())
    });
    let mut c = client(&cache, &upstream);
    let first = get(&mut c, "http://api.test/a").await;
    assert_eq!(first.cache.fwd, Some(Forward::UriMiss));
    assert!(first.cache.stored);
    assert_eq!(
        first.header("cache-status"),
        "tower-optimizer; fwd=uri-miss; fwd-status=200; ttl=50; stored"
    );
    advance(Duration::from_secs(5)).await;
    let hit = get(&mut c, "http://API.test:80/a").await;
    assert_eq!(hit.body, "v1");
    assert_eq!(hit.header("age"), "15", "stored age 10 plus 5 s resident");
    assert_eq!(hit.header("cache-status"), "tower-optimizer; hit; ttl=45");
    assert_eq!(hit.header("content-length"), "2");
    assert_eq!(upstream.calls(), 1);
    advance(Duration::from_secs(46)).await;
    let refetched = get(&mut c, "http://api.test/a").await;
    assert_eq!(refetched.cache.fwd, Some(Forward::Stale));
    assert_eq!(upstream.calls(), 2);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_upstream_call() {
    let cache = cache();
    let upstream = Upstream::new(|_, _| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(ok("max-age=60", "shared"))
    });
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut c = client(&cache, &upstream);
        tasks.push(tokio::spawn(async move { get(&mut c, "http://api.test/hot").await }));
    }
    let mut collapsed = 0;
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(got.body, "shared");
        collapsed += usize::from(got.cache.collapsed);
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(collapsed, 99);
    assert_eq!(cache.stats().coalesced, 99);
    assert_eq!(cache.in_flight(), 0);
    assert!(cache.audit().is_clean());
}

/// A miss whose lookup ran before another request's flight stored its
/// answer, and whose join came after that flight ended, is answered with
/// the stored response instead of leading a second upstream call. The
/// window between lookup and join is held open here: this request's lookup
/// drops the expired entry it finds, and the eviction listener that runs
/// inside that lookup waits while a request on another thread fetches and
/// stores the key. (Without the check this made a third upstream call; on
/// two worker threads under load, one case in thousands did.)
#[test]
fn a_miss_racing_a_finishing_flight_takes_its_stored_answer() {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    let (to_other, other_starts) = mpsc::channel::<()>();
    let (to_listener, other_done) = mpsc::channel::<()>();
    let other_done = std::sync::Mutex::new(other_done);
    let armed = Arc::new(AtomicBool::new(false));
    let cache = Cache::builder()
        .max_bytes(4 << 20)
        .stale_retention(Duration::ZERO)
        .eviction_listener({
            let armed = armed.clone();
            move |_, cause| {
                if cause == RemovalCause::Expired && armed.swap(false, Ordering::SeqCst) {
                    to_other.send(()).unwrap();
                    other_done.lock().unwrap().recv().unwrap();
                }
            }
        })
        .build()
        .unwrap();
    let upstream = first_then(|| ok("max-age=1", "old"), || ok("max-age=60", "new"));
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let other = std::thread::spawn({
        let mut c = client(&cache, &upstream);
        let rt = paused();
        move || {
            rt.block_on(async {
                advance(Duration::from_secs(2)).await;
                other_starts.recv().unwrap();
                let got = get(&mut c, "http://api.test/k").await;
                to_listener.send(()).unwrap();
                got
            })
        }
    });
    let rt = paused();
    let got = rt.block_on(async {
        let mut c = client(&cache, &upstream);
        assert_eq!(get(&mut c, "http://api.test/k").await.body, "old");
        advance(Duration::from_secs(2)).await;
        armed.store(true, Ordering::SeqCst);
        get(&mut c, "http://api.test/k").await
    });
    let theirs = other.join().unwrap();
    assert_eq!((theirs.body.as_ref(), theirs.cache.stored), (b"new".as_ref(), true));
    assert_eq!(got.body, "new");
    assert!(got.cache.collapsed, "{:?}", got.cache);
    assert_eq!(upstream.calls(), 2, "one call for the old answer, one for the new");
    assert_eq!(cache.stats().coalesced, 1);
    assert_eq!(cache.in_flight(), 0);
    assert!(cache.audit().is_clean());
}

async fn burst(cache: &Cache, upstream: &Upstream, n: usize) -> Vec<Result<Got, tower_optimizer::BoxError>> {
    burst_at(cache, upstream, n, "http://api.test/x").await
}

/// `n` concurrent GETs of `uri`, each through its own client.
async fn burst_at(
    cache: &Cache,
    upstream: &Upstream,
    n: usize,
    uri: &'static str,
) -> Vec<Result<Got, tower_optimizer::BoxError>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut c = client(cache, upstream);
        tasks.push(tokio::spawn(async move {
            send(&mut c, Request::get(uri).body(Full::default()).unwrap()).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn failing_leader_releases_waiters_at_once() {
    let cache = cache();
    let upstream = Upstream::new(|_, n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if n == 0 {
            Err("leader failed".into())
        } else {
            Ok(ok("max-age=60", "ok"))
        }
    });
    let start = Instant::now();
    let results = burst(&cache, &upstream, 20).await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "waiters did not wait for the lock timeout"
    );
    assert_eq!(cache.stats().coalesce_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn uncacheable_response_releases_waiters_at_once() {
    let cache = cache();
    let upstream = Upstream::new(|_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(ok("no-store", "private"))
    });
    let start = Instant::now();
    let results = burst(&cache, &upstream, 20).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().body == "private"));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(upstream.calls(), 20, "each waiter fetched for itself, none was stored");
    assert_eq!(cache.stats().entries, 0);
}

/// Settings without bound ("wait for the leader however long", "remember
/// an uncacheable key for good") are taken as "never" on the clock, not
/// added to it: adding them overflowed on the first miss.
#[tokio::test(start_paused = true)]
async fn unbounded_lock_timeout_and_uncacheable_window_are_never() {
    let cache = Cache::builder()
        .lock_timeout(Duration::MAX)
        .remember_uncacheable(Some(Duration::MAX))
        .build()
        .unwrap();
    let upstream = Upstream::new(|_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(ok("no-store", "v"))
    });
    let first = burst(&cache, &upstream, 3).await;
    assert!(first.iter().all(|r| r.as_ref().unwrap().body == "v"));
    assert_eq!(upstream.calls(), 3, "the waiters were released to go themselves");
    // Remembered as uncacheable a year on: both go upstream at once.
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    let start = Instant::now();
    let later = burst(&cache, &upstream, 2).await;
    assert!(later.iter().all(|r| !r.as_ref().unwrap().cache.collapsed));
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "neither waited for a leader"
    );
    assert_eq!(upstream.calls(), 5);
}

/// Hit-for-miss: once a key's answer was not storable, its requests go
/// upstream at once instead of waiting for a leader's answer they could not
/// share, until the window ends or a storable answer comes.
#[tokio::test(start_paused = true)]
async fn a_key_learned_uncacheable_is_not_coalesced_for_a_while() {
    let cache = cache();
    // `no-store` for the first four calls, cacheable from then on.
    let upstream = Upstream::new(|_, n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(ok(if n < 4 { "no-store" } else { "max-age=60" }, "v"))
    });
    let timed = |n| {
        let (cache, upstream) = (cache.clone(), upstream.clone());
        async move {
            let start = Instant::now();
            let got = burst_at(&cache, &upstream, n, "http://api.test/x").await;
            (start.elapsed(), got.into_iter().map(Result::unwrap).collect::<Vec<_>>())
        }
    };
    // Not known yet: the second request waits for the first's answer, then
    // goes upstream itself.
    let (first, _) = timed(2).await;
    assert_eq!(first, Duration::from_millis(200));
    // Known uncacheable: both go at once, neither waits.
    let (second, got) = timed(2).await;
    assert_eq!(second, Duration::from_millis(100), "no queueing behind a leader");
    assert!(got.iter().all(|g| !g.cache.collapsed && !g.cache.stored));
    assert_eq!(upstream.calls(), 4);
    // The answer turns cacheable: still not coalesced, but stored, which
    // ends the window.
    let (third, got) = timed(2).await;
    assert_eq!(third, Duration::from_millis(100));
    assert!(got.iter().all(|g| g.cache.stored));
    assert_eq!(upstream.calls(), 6);
    let (_, got) = timed(2).await;
    assert!(got.iter().all(|g| g.cache.hit), "served from the cache");
    assert_eq!(upstream.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn the_uncacheable_window_ends_and_can_be_turned_off() {
    let upstream = Upstream::new(|_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(ok("no-store", "v"))
    });
    let elapsed = |cache: Cache, uri: &'static str| {
        let upstream = upstream.clone();
        async move {
            let start = Instant::now();
            burst_at(&cache, &upstream, 2, uri).await;
            start.elapsed()
        }
    };
    let window = Duration::from_secs(10);
    let cache = Cache::builder().remember_uncacheable(Some(window)).build().unwrap();
    assert_eq!(
        elapsed(cache.clone(), "http://api.test/a").await,
        Duration::from_millis(200)
    );
    assert_eq!(
        elapsed(cache.clone(), "http://api.test/a").await,
        Duration::from_millis(100)
    );
    assert_eq!(
        elapsed(cache.clone(), "http://api.test/b").await,
        Duration::from_millis(200),
        "per key"
    );
    advance(window).await;
    assert_eq!(
        elapsed(cache.clone(), "http://api.test/a").await,
        Duration::from_millis(200),
        "the window ended: coalesced (and learned) again"
    );
    let off = Cache::builder().remember_uncacheable(None).build().unwrap();
    for _ in 0..2 {
        assert_eq!(
            elapsed(off.clone(), "http://api.test/a").await,
            Duration::from_millis(200)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn slow_leader_hits_the_lock_timeout() {
    let cache = Cache::builder().lock_timeout(Duration::from_secs(1)).build().unwrap();
    let upstream = Upstream::new(|_, n| async move {
        tokio::time::sleep(Duration::from_secs(if n == 0 { 30 } else { 1 })).await;
        Ok(ok("max-age=60", "ok"))
    });
    let start = Instant::now();
    let mut leader = client(&cache, &upstream);
    let lead = tokio::spawn(async move { get(&mut leader, "http://api.test/x").await });
    tokio::task::yield_now().await;
    let mut waiter = client(&cache, &upstream);
    let got = get(&mut waiter, "http://api.test/x").await;
    assert_eq!(got.body, "ok");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(cache.stats().coalesce_timeouts, 1);
    lead.await.unwrap();
}

/// One waiter runs the flight's timer for all; when it leaves, another
/// takes over, so the deadline (the lock timeout after the first waiter
/// joined) still releases the rest; anyone joining after it goes upstream
/// at once.
#[tokio::test(start_paused = true)]
async fn lock_timeout_holds_when_the_waiter_running_the_timer_leaves() {
    let cache = Cache::builder().lock_timeout(Duration::from_secs(1)).build().unwrap();
    // The leader's answer arrives after 30 s; the others take 1 s and are
    // not stored, so the late request still finds the flight.
    let upstream = Upstream::new(|_, n| async move {
        let (secs, cc) = if n == 0 { (30, "max-age=60") } else { (1, "no-store") };
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok(ok(cc, "ok"))
    });
    let start = Instant::now();
    let spawn_get = || {
        let mut c = client(&cache, &upstream);
        tokio::spawn(async move { get(&mut c, "http://api.test/x").await })
    };
    let lead = spawn_get();
    tokio::task::yield_now().await;
    let first = spawn_get();
    tokio::task::yield_now().await;
    let others: Vec<_> = (0..10).map(|_| spawn_get()).collect();
    tokio::task::yield_now().await;
    advance(Duration::from_millis(500)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    for other in others {
        assert_eq!(other.await.unwrap().body, "ok");
    }
    // Released at the 1 s deadline, then 1 s upstream each: not the
    // leader's 30 s.
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert_eq!(cache.stats().coalesce_timeouts, 10);
    let late_start = Instant::now();
    let late = spawn_get().await.unwrap();
    assert_eq!(late.body, "ok");
    assert!(
        late_start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        late_start.elapsed()
    );
    assert_eq!(cache.stats().coalesce_timeouts, 11);
    assert_eq!(
        upstream.calls(),
        12,
        "the leader, ten released waiters and the late one"
    );
    lead.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_refreshes_once_in_background() {
    let cache = cache();
    let upstream = Upstream::new(|_, n| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(ok(
            "max-age=1, stale-while-revalidate=60",
            if n == 0 { "v1" } else { "v2" },
        ))
    });
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/swr").await.body, "v1");
    advance(Duration::from_secs(5)).await;
    for _ in 0..3 {
        let stale = get(&mut c, "http://api.test/swr").await;
        assert_eq!(stale.body, "v1");
        assert_eq!(stale.cache.outcome(), Outcome::StaleHit);
        assert_eq!(stale.cache.detail, Some("stale-while-revalidate"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream.calls(), 2, "one background refresh for three stale hits");
    let fresh = get(&mut c, "http://api.test/swr").await;
    assert_eq!(fresh.body, "v2");
    assert_eq!(fresh.cache.outcome(), Outcome::Hit);
    assert_eq!(cache.stats().background_refreshes, 1);
}

// A background refresh whose upstream never answers gives up after a
// minute, releasing the key: the next stale hit starts a new refresh.
#[tokio::test(start_paused = true)]
async fn a_hung_background_refresh_gives_up_and_the_next_one_runs() {
    let cache = cache();
    let upstream = Upstream::new(|_, n| async move {
        if n == 1 {
            std::future::pending::<()>().await;
        }
        Ok(ok(
            "max-age=1, stale-while-revalidate=3600",
            if n == 0 { "v1" } else { "v2" },
        ))
    });
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/swr").await.body, "v1");
    advance(Duration::from_secs(5)).await;
    assert_eq!(get(&mut c, "http://api.test/swr").await.body, "v1");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(get(&mut c, "http://api.test/swr").await.body, "v1");
    assert_eq!(
        cache.stats().background_refreshes,
        1,
        "the hung refresh still holds the key"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(get(&mut c, "http://api.test/swr").await.body, "v1");
    assert_eq!(cache.stats().background_refreshes, 2, "given up: a new refresh ran");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let fresh = get(&mut c, "http://api.test/swr").await;
    assert_eq!(
        (fresh.body.as_ref(), fresh.cache.outcome()),
        (b"v2".as_ref(), Outcome::Hit)
    );
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_covers_5xx_and_inner_errors_within_the_window() {
    let cache = cache();
    let upstream = Upstream::new(|_, n| async move {
        match n {
            0 => Ok(ok("max-age=1, stale-if-error=60", "good")),
            1 => Ok(Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(b"down")))
                .unwrap()),
            _ => Err("connection refused".into()),
        }
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/sie").await;
    advance(Duration::from_secs(10)).await;
    let on_503 = get(&mut c, "http://api.test/sie").await;
    assert_eq!((on_503.status, on_503.body.as_ref()), (200, b"good".as_ref()));
    assert_eq!(
        on_503.header("cache-status"),
        "tower-optimizer; fwd=stale; fwd-status=503; ttl=-9; detail=stale-if-error"
    );
    let on_error = get(&mut c, "http://api.test/sie").await;
    assert_eq!(on_error.body, "good");
    advance(Duration::from_secs(60)).await;
    let err = send(&mut c, req("http://api.test/sie").body(empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "connection refused",
        "outside the window the error reaches the caller"
    );
}

#[tokio::test(start_paused = true)]
async fn configured_stale_if_error_window_and_must_revalidate() {
    let cache = Cache::builder()
        .stale_if_error(Duration::from_secs(30))
        .build()
        .unwrap();
    let upstream = Upstream::new(|req, n| async move {
        let must = req.uri().path() == "/must";
        match n {
            0 | 1 => Ok(ok(
                if must {
                    "max-age=1, must-revalidate"
                } else {
                    "max-age=1"
                },
                "stored",
            )),
            _ => Ok(Response::builder().status(502).body(Full::default()).unwrap()),
        }
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/plain").await;
    get(&mut c, "http://api.test/must").await;
    advance(Duration::from_secs(5)).await;
    assert_eq!(get(&mut c, "http://api.test/plain").await.body, "stored");
    assert_eq!(
        get(&mut c, "http://api.test/must").await.status,
        502,
        "must-revalidate forbids stale"
    );
}

/// In a shared cache `s-maxage` carries `proxy-revalidate`'s rule (RFC 9111
/// §5.2.2.10): what says it is never served stale, neither while
/// revalidating nor on an error (§4.2.4). A private cache ignores
/// `s-maxage`, and serves the same response stale.
#[tokio::test(start_paused = true)]
async fn s_maxage_forbids_stale_in_a_shared_cache_only() {
    let upstream = Upstream::new(|_, n| async move {
        Ok(match n % 2 {
            0 => ok(
                "max-age=1, s-maxage=1, stale-while-revalidate=60, stale-if-error=60",
                "stored",
            ),
            _ => Response::builder().status(503).body(Full::default()).unwrap(),
        })
    });
    for mode in [CacheMode::Shared, CacheMode::Private] {
        let cache = Cache::builder().mode(mode).build().unwrap();
        let mut c = client(&cache, &upstream);
        get(&mut c, "http://api.test/s").await;
        advance(Duration::from_secs(5)).await;
        let after = get(&mut c, "http://api.test/s").await;
        if mode == CacheMode::Shared {
            assert_eq!(after.status, 503, "no stale answer: {}", after.header("cache-status"));
            assert_ne!(after.cache.outcome(), Outcome::StaleHit);
        } else {
            assert_eq!((after.status, after.body.as_ref()), (200, b"stored".as_ref()));
            assert_eq!(after.cache.detail, Some("stale-while-revalidate"));
        }
        // The private cache's background refresh (a 503) runs.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.calls(), 4);
}

/// `public` makes a response heuristically cacheable whatever its status
/// (RFC 9111 §5.2.2.9): a `302` without explicit freshness gets the
/// configured lifetime when it says `public`, and is not stored otherwise.
#[tokio::test(start_paused = true)]
async fn public_makes_any_status_heuristically_cacheable() {
    let upstream = Upstream::new(|req: Req, _| async move {
        let public = req.uri().path() == "/public";
        let mut res = Response::builder().status(302).header("location", "/elsewhere");
        if public {
            res = res.header("cache-control", "public");
        }
        Ok(res.body(Full::default()).unwrap())
    });
    let cache = Cache::builder().default_ttl(Duration::from_secs(60)).build().unwrap();
    let mut c = client(&cache, &upstream);
    let stored = get(&mut c, "http://api.test/public").await;
    assert!(
        stored.cache.stored && stored.cache.ttl == Some(60),
        "{}",
        stored.header("cache-status")
    );
    assert_eq!(
        get(&mut c, "http://api.test/public").await.cache.outcome(),
        Outcome::Hit
    );
    let plain = get(&mut c, "http://api.test/plain").await;
    assert_eq!((plain.cache.stored, plain.cache.detail), (false, Some("status")));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn revalidation_with_304_freshens_and_serves_the_stored_body() {
    let cache = cache();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::new(move |req, n| {
        log.lock().unwrap().push(
            req.headers()
                .get("if-none-match")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        async move {
            Ok(if n == 0 {
                Response::builder()
                    .header("cache-control", "max-age=1")
                    .header("etag", "\"abc\"")
                    .header("x-version", "1")
                    .body(Full::new(Bytes::from_static(b"body")))
                    .unwrap()
            } else {
                Response::builder()
                    .status(304)
                    .header("cache-control", "max-age=100")
                    .header("etag", "\"abc\"")
                    .header("x-version", "2")
                    .body(Full::default())
                    .unwrap()
            })
        }
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let revalidated = get(&mut c, "http://api.test/r").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "body");
    assert_eq!(revalidated.header("x-version"), "2", "304 headers replace stored ones");
    assert_eq!(revalidated.cache.fwd_status, Some(304));
    assert_eq!(revalidated.cache.outcome(), Outcome::Revalidated);
    assert_eq!(seen.lock().unwrap().as_slice(), [None, Some("\"abc\"".to_owned())]);
    advance(Duration::from_secs(50)).await;
    let hit = get(&mut c, "http://api.test/r").await;
    assert_eq!(hit.cache.outcome(), Outcome::Hit, "freshened by the 304's max-age");
    assert_eq!(cache.stats().revalidated, 1);
    assert_eq!(cache.stats().entries, 1);
}

/// A 304 without `Date` is dated on arrival (RFC 9110 §6.6.1). Were the
/// stored response's `Date` kept, the freshened entry would be as old as the
/// first fetch: stale again at once, revalidated on every use.
#[tokio::test(start_paused = true)]
async fn a_304_without_date_freshens_from_its_arrival_not_the_old_date() {
    let cache = cache();
    // The paused clock does not move the wall clock, so the first response
    // is dated 100 s back: aged 100 of its 110 s on arrival.
    let dated = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100));
    let upstream = Upstream::new(move |_, n| {
        let dated = dated.clone();
        async move {
            let res = Response::builder()
                .header("cache-control", "max-age=110")
                .header("etag", "\"v\"");
            Ok(if n == 0 {
                res.header("date", dated)
                    .body(Full::new(Bytes::from_static(b"body")))
                    .unwrap()
            } else {
                res.status(304).body(Full::default()).unwrap()
            })
        }
    });
    let mut c = client(&cache, &upstream);
    let first = get(&mut c, "http://api.test/r").await;
    // An HTTP date has whole seconds: the apparent age is 100 to 101 s.
    assert!(matches!(first.cache.ttl, Some(9 | 10)), "{:?}", first.cache.ttl);
    advance(Duration::from_secs(20)).await;
    let revalidated = get(&mut c, "http://api.test/r").await;
    assert_eq!(revalidated.cache.outcome(), Outcome::Revalidated);
    assert_eq!(revalidated.body, "body");
    // Aged from the 304's arrival (dated in whole seconds too), not by the
    // 100 s of the first response's date.
    assert!(
        matches!(revalidated.cache.ttl, Some(109 | 110)),
        "{:?}",
        revalidated.cache.ttl
    );
    assert_eq!(revalidated.header("age"), "0");
    advance(Duration::from_secs(60)).await;
    let hit = get(&mut c, "http://api.test/r").await;
    assert_eq!(hit.cache.outcome(), Outcome::Hit, "still fresh 60 s after the 304");
    assert_eq!(hit.header("age"), "60");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_forces_validation_and_max_stale_accepts_stale() {
    let cache = cache();
    let upstream = Upstream::fixed("max-age=10", "x");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/d").await;
    let forced = send(
        &mut c,
        req("http://api.test/d")
            .header("cache-control", "no-cache")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(forced.cache.fwd, Some(Forward::Request));
    assert_eq!(upstream.calls(), 2);
    advance(Duration::from_secs(15)).await;
    let stale = send(
        &mut c,
        req("http://api.test/d")
            .header("cache-control", "max-stale=10")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stale.cache.detail, Some("max-stale"));
    assert_eq!(upstream.calls(), 2);
    let miss = send(
        &mut c,
        req("http://api.test/other")
            .header("cache-control", "only-if-cached")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(miss.status, 504);
    assert_eq!(upstream.calls(), 2, "only-if-cached never goes upstream");
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_several_variants_and_star_is_never_served() {
    let cache = cache();
    let upstream = Upstream::new(|req, _| async move {
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("none", |v| if v == "fr" { "fr" } else { "en" });
        let vary = if req.uri().path() == "/star" {
            "*"
        } else {
            "Accept-Language"
        };
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", vary)
            .body(Full::new(Bytes::from(lang)))
            .unwrap())
    });
    let mut c = client(&cache, &upstream);
    let get_lang = |lang: &'static str, path: &'static str| {
        req(&format!("http://api.test{path}"))
            .header("accept-language", lang)
            .body(empty())
            .unwrap()
    };
    assert_eq!(send(&mut c, get_lang("en", "/v")).await.unwrap().body, "en");
    let fr = send(&mut c, get_lang("fr", "/v")).await.unwrap();
    assert_eq!(
        (fr.body.as_ref(), fr.cache.fwd),
        (b"fr".as_ref(), Some(Forward::VaryMiss))
    );
    assert!(send(&mut c, get_lang("en", "/v")).await.unwrap().cache.hit);
    assert!(send(&mut c, get_lang("fr", "/v")).await.unwrap().cache.hit);
    assert_eq!(upstream.calls(), 2);
    send(&mut c, get_lang("en", "/star")).await.unwrap();
    let again = send(&mut c, get_lang("en", "/star")).await.unwrap();
    assert!(!again.cache.hit);
    assert_eq!(again.cache.detail, Some("vary-star"));
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn vary_on_keys_entries_by_request_headers_the_upstream_does_not_name() {
    let cache = Cache::builder().vary_on(["X-Tenant"]).build().unwrap();
    // The upstream answers per tenant but says nothing of it in `Vary`.
    let upstream = Upstream::new(|req, _| async move {
        let tenant = match req.headers().get("x-tenant").map(|v| v.to_str().unwrap()) {
            Some("a") => "a",
            Some("b") => "b",
            _ => "nobody",
        };
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ok("max-age=60", tenant))
    });
    let mut c = client(&cache, &upstream);
    let on = |path: &str, tenant: Option<&'static str>| {
        let mut r = req(&format!("http://api.test{path}"));
        if let Some(t) = tenant {
            r = r.header("x-tenant", t);
        }
        r.body(empty()).unwrap()
    };
    let as_tenant = |tenant| on("/me", tenant);
    assert_eq!(send(&mut c, as_tenant(Some("a"))).await.unwrap().body, "a");
    let b = send(&mut c, as_tenant(Some("b"))).await.unwrap();
    assert_eq!((b.body.as_ref(), b.cache.fwd), (b"b".as_ref(), Some(Forward::VaryMiss)));
    let nobody = send(&mut c, as_tenant(None)).await.unwrap();
    assert_eq!(nobody.body, "nobody", "no value is a value of its own");
    for (tenant, body) in [(Some("a"), "a"), (Some("b"), "b"), (None, "nobody")] {
        let hit = send(&mut c, as_tenant(tenant)).await.unwrap();
        assert!(hit.cache.hit, "{tenant:?}");
        assert_eq!(hit.body, body, "never another tenant's answer");
    }
    assert_eq!(upstream.calls(), 3);
    assert_eq!(cache.stats().entries, 3);
    // One URI, three variants: invalidating the URI removes them all.
    let removed = cache.remove_key(&cache.key_for_uri(&"http://api.test/me".parse().unwrap()).unwrap());
    assert_eq!(removed.entries, 3);
    // Concurrent misses of two tenants: the second does not take the
    // first's answer when it lands.
    let (mut ca, mut cb) = (client(&cache, &upstream), client(&cache, &upstream));
    let (a, b) = tokio::join!(
        send(&mut ca, on("/slow", Some("a"))),
        send(&mut cb, on("/slow", Some("b")))
    );
    assert_eq!((a.unwrap().body, b.unwrap().body), ("a".into(), "b".into()));
    assert_eq!(upstream.calls(), 5);
    assert!(Cache::builder().vary_on(["x tenant"]).build().is_err());
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_a_stored_get() {
    let cache = cache();
    let upstream = Upstream::fixed("max-age=60", "twelve bytes");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/h").await;
    let head = send(&mut c, Request::head("http://api.test/h").body(empty()).unwrap())
        .await
        .unwrap();
    assert!(head.cache.hit);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), "12");
    assert_eq!(upstream.calls(), 1);
    let head_miss = send(&mut c, Request::head("http://api.test/none").body(empty()).unwrap())
        .await
        .unwrap();
    assert!(!head_miss.cache.stored, "HEAD responses are not stored");
}

#[tokio::test(start_paused = true)]
async fn bypasses_and_not_storable() {
    let cache = Cache::builder().exclude(r"/admin/").build().unwrap();
    let upstream = Upstream::new(|req, _| async move {
        let mut res = ok("max-age=60", "x");
        if req.uri().path() == "/cookie" {
            res.headers_mut().insert("set-cookie", "a=b".parse().unwrap());
        }
        Ok(res)
    });
    let mut c = client(&cache, &upstream);
    for _ in 0..2 {
        let auth = send(
            &mut c,
            req("http://api.test/me")
                .header("authorization", "Bearer t")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            auth.header("cache-status"),
            "tower-optimizer; fwd=bypass; fwd-status=200; detail=authorization"
        );
        let post = send(&mut c, Request::post("http://api.test/me").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(post.cache.fwd, Some(Forward::Method));
        assert_eq!(
            get(&mut c, "http://api.test/admin/x").await.cache.detail,
            Some("excluded")
        );
        assert_eq!(
            get(&mut c, "http://api.test/cookie").await.cache.detail,
            Some("set-cookie")
        );
    }
    assert_eq!(upstream.calls(), 8);
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn shared_mode_reads_s_maxage_and_refuses_private() {
    let cache = Cache::builder().mode(CacheMode::Shared).build().unwrap();
    let upstream = Upstream::new(|req, _| async move {
        Ok(if req.uri().path() == "/p" {
            ok("private, max-age=60", "p")
        } else {
            ok("max-age=1, s-maxage=60", "s")
        })
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/p").await;
    assert_eq!(get(&mut c, "http://api.test/p").await.cache.detail, Some("private"));
    get(&mut c, "http://api.test/s").await;
    advance(Duration::from_secs(10)).await;
    assert!(
        get(&mut c, "http://api.test/s").await.cache.hit,
        "s-maxage=60 wins in shared mode"
    );
}

#[tokio::test(start_paused = true)]
async fn default_and_max_ttl() {
    let cache = Cache::builder()
        .default_ttl(Duration::from_secs(30))
        .max_ttl(Duration::from_secs(100))
        .build()
        .unwrap();
    let upstream = Upstream::new(|req, _| async move {
        Ok(if req.uri().path() == "/long" {
            ok("max-age=100000", "l")
        } else {
            Response::new(Full::new(Bytes::from_static(b"plain")))
        })
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/plain").await;
    get(&mut c, "http://api.test/long").await;
    advance(Duration::from_secs(20)).await;
    assert!(get(&mut c, "http://api.test/plain").await.cache.hit);
    assert_eq!(get(&mut c, "http://api.test/long").await.cache.ttl, Some(80));
    advance(Duration::from_secs(15)).await;
    assert!(!get(&mut c, "http://api.test/plain").await.cache.hit);
}

#[tokio::test(start_paused = true)]
async fn eviction_listener_and_budget() {
    let causes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = causes.clone();
    let cache = Cache::builder()
        .max_bytes(16 << 10)
        .max_entry_bytes(2 << 10)
        .shards(1)
        .stale_retention(Duration::ZERO)
        .eviction_listener(move |meta, cause| log.lock().unwrap().push((meta.key.to_string(), cause)))
        .build()
        .unwrap();
    let upstream = Upstream::new(|_, _| async {
        Ok(ok(
            "max-age=5",
            std::str::from_utf8(&[b'x'; 1500]).unwrap().to_owned().leak(),
        ))
    });
    let mut c = client(&cache, &upstream);
    for i in 0..40 {
        get(&mut c, &format!("http://api.test/{i}")).await;
        assert!(cache.stats().bytes <= 16 << 10);
    }
    assert!(causes.lock().unwrap().iter().any(|(_, c)| *c == RemovalCause::Capacity));
    advance(Duration::from_secs(6)).await;
    let swept = cache.sweep();
    assert!(swept.entries > 0);
    assert_eq!(cache.stats().entries, 0);
    assert!(causes.lock().unwrap().iter().any(|(_, c)| *c == RemovalCause::Expired));
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn background_sweep_runs_and_stops_with_the_last_handle() {
    let cache = Cache::builder()
        .sweep_interval(Some(Duration::from_secs(1)))
        .stale_retention(Duration::from_secs(1))
        .build()
        .unwrap();
    let upstream = Upstream::fixed("max-age=2", "x");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/s").await;
    assert_eq!(cache.stats().entries, 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0, "swept without any access");
    let token = cache.background_token();
    assert!(token.upgrade().is_some(), "the sweeper runs");
    drop(c);
    drop(cache);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        token.upgrade().is_none(),
        "the sweeper ended after the last handle went"
    );
}

// An eviction listener that panics is the user's bug; the sweep that
// called it must go on (and count what it removed), or expired entries
// would pile up with nothing said.
#[tokio::test(start_paused = true)]
async fn a_panicking_eviction_listener_does_not_stop_the_sweep() {
    let cache = Cache::builder()
        .sweep_interval(Some(Duration::from_secs(1)))
        .stale_retention(Duration::ZERO)
        .eviction_listener(|_, _| panic!("listener bug"))
        .build()
        .unwrap();
    let upstream = Upstream::fixed("max-age=2", "x");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/1").await;
    get(&mut c, "http://api.test/2").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0, "both swept, the listener's panics aside");
    // The sweeper survived: a later entry is swept too.
    get(&mut c, "http://api.test/3").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().evictions(RemovalCause::Expired), 3);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn memory_pressure_evicts_down_to_the_low_watermark() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let reading = Arc::new(AtomicUsize::new(0));
    let source = reading.clone();
    let pressure = MemoryPressure::new(
        MemorySource::Custom(Arc::new(move || Some(source.load(Ordering::SeqCst) as u64))),
        1_000_000,
        995_000,
    )
    .interval(Duration::from_millis(100));
    let cache = Cache::builder().memory_pressure(pressure).build().unwrap();
    let upstream = Upstream::fixed("max-age=600", "some body");
    let mut c = client(&cache, &upstream);
    for i in 0..50 {
        get(&mut c, &format!("http://api.test/{i}")).await;
    }
    let before = cache.stats().bytes;
    reading.store(1_005_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let stats = cache.stats();
    assert!(stats.evictions(RemovalCause::Pressure) > 0);
    let freed = before - stats.bytes;
    assert!(freed >= 10_000, "freed usage - low: {freed}");
    assert!(
        freed < 12_000 && stats.bytes > 0,
        "one eviction while the reading lags, not the whole cache"
    );
    reading.store(0, Ordering::SeqCst);
}

// A memory figure that cannot be read is said once, not every tick; a
// reader that panics is an unreadable figure, not the end of the watcher,
// which evicts once the figure is back and too high.
#[tokio::test(start_paused = true)]
async fn memory_pressure_says_once_it_is_blind_and_outlives_a_panicking_reader() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let (logs, _guard) = logs::Logs::capture();
    let ticks = Arc::new(AtomicUsize::new(0));
    let seen = ticks.clone();
    let source = MemorySource::Custom(Arc::new(move || match seen.fetch_add(1, Ordering::SeqCst) {
        0..=4 => None,
        5 => panic!("reader bug"),
        _ => Some(1_005_000),
    }));
    let pressure = MemoryPressure::new(source, 1_000_000, 995_000).interval(Duration::from_millis(100));
    let cache = Cache::builder().memory_pressure(pressure).build().unwrap();
    let upstream = Upstream::fixed("max-age=600", "some body");
    let mut c = client(&cache, &upstream);
    for i in 0..50 {
        get(&mut c, &format!("http://api.test/{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ticks.load(Ordering::SeqCst) >= 7, "the watcher kept ticking");
    assert!(cache.stats().evictions(RemovalCause::Pressure) > 0);
    let logged = logs.text();
    let blind = logged
        .lines()
        .filter(|l| l.contains("cannot read memory usage"))
        .count();
    assert_eq!(blind, 1, "said once, not every tick: {logged}");
    assert!(
        logged.contains("callback=\"memory source\"") && logged.contains("reader bug"),
        "{logged}"
    );
}

#[test]
fn configuration_errors_come_from_build() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let cases = [
        ("zero budget", Cache::builder().max_bytes(0).build().err()),
        ("zero entry size", Cache::builder().max_entry_bytes(0).build().err()),
        ("zero variants", Cache::builder().max_variants(0).build().err()),
        ("percent > 100", Cache::builder().heuristic_freshness(101).build().err()),
        (
            "zero sweep",
            Cache::builder().sweep_interval(Some(Duration::ZERO)).build().err(),
        ),
        ("bad regex", Cache::builder().exclude("([").build().err()),
        ("zero shards", Cache::builder().shards(0).build().err()),
        (
            "shards too small",
            Cache::builder()
                .max_bytes(1 << 20)
                .max_entry_bytes(1 << 20)
                .shards(16)
                .build()
                .err(),
        ),
        (
            "watermarks reversed",
            Cache::builder()
                .memory_pressure(MemoryPressure::new(MemorySource::ProcessRss, 10, 20))
                .build()
                .err(),
        ),
    ];
    for (what, error) in cases {
        let error = error.unwrap_or_else(|| panic!("{what}: expected a build error"));
        assert!(
            error.to_string().starts_with("invalid cache configuration: "),
            "{what}: {error}"
        );
    }
    let regex_error = Cache::builder().exclude("([").build().unwrap_err();
    assert!(
        std::error::Error::source(&regex_error).is_some(),
        "the regex error is kept as the source"
    );
    assert!(
        Cache::builder()
            .max_bytes(1 << 20)
            .max_entry_bytes(64 << 10)
            .build()
            .is_ok()
    );
}

/// The same requests through a cache that inserts the `CacheStatus`
/// extension and one that omits it: the same `Cache-Status` lines and
/// bodies, and no extension from the second (misses, hits, HEAD, a bypass,
/// `only-if-cached`, coalesced waiters, a response not stored, a stale
/// answer while revalidating).
#[tokio::test(start_paused = true)]
async fn an_omitted_status_extension_changes_nothing_but_the_extension() {
    use http::header::CACHE_CONTROL;
    use tower::{Service, ServiceExt};
    use tower_optimizer::cache::{CacheStatus, StatusExtension};

    let upstream = || {
        Upstream::new(|req: Req, _| async move {
            let cc = match req.uri().path() {
                "/swr" => "max-age=1, stale-while-revalidate=30",
                "/nostore" => "no-store",
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    "max-age=60"
                }
                _ => "max-age=60",
            };
            Ok(ok(cc, "body"))
        })
    };
    let script = |extension: StatusExtension| async move {
        let cache = Cache::builder().status_extension(extension).build().unwrap();
        let upstream = upstream();
        let c = client(&cache, &upstream);
        let send = |method: http::Method, path: &str, only_if_cached: bool| {
            let mut c = c.clone();
            let mut request = Request::builder().method(method).uri(format!("http://api.test{path}"));
            if only_if_cached {
                request = request.header(CACHE_CONTROL, "only-if-cached");
            }
            let request = request.body(Full::default()).unwrap();
            async move {
                let response = c.ready().await.unwrap().call(request).await.unwrap();
                let (parts, body) = response.into_parts();
                let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                let lines: Vec<String> = parts
                    .headers
                    .get_all("cache-status")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect();
                let read = CacheStatus::of(&parts.extensions, &parts.headers).unwrap();
                (
                    parts.extensions.get::<CacheStatus>().copied(),
                    read,
                    lines,
                    parts.status,
                    body,
                )
            }
        };
        let mut seen = Vec::new();
        for (method, path, only_if_cached) in [
            (http::Method::GET, "/a", false),
            (http::Method::GET, "/a", false),
            (http::Method::HEAD, "/a", false),
            (http::Method::POST, "/a", false),
            (http::Method::GET, "/b", true),
            (http::Method::GET, "/nostore", false),
            (http::Method::GET, "/swr", false),
        ] {
            seen.push(send(method, path, only_if_cached).await);
        }
        advance(Duration::from_secs(5)).await;
        seen.push(send(http::Method::GET, "/swr", false).await);
        let (x, y, z) = tokio::join!(
            send(http::Method::GET, "/slow", false),
            send(http::Method::GET, "/slow", false),
            send(http::Method::GET, "/slow", false)
        );
        seen.extend([x, y, z]);
        seen
    };
    let inserted = script(StatusExtension::Insert).await;
    let omitted = script(StatusExtension::Omit).await;
    let outcomes: Vec<Outcome> = omitted.iter().map(|s| s.1.outcome()).collect();
    assert_eq!(
        outcomes[..8],
        [
            Outcome::Miss,
            Outcome::Hit,
            Outcome::Hit,
            Outcome::Bypass,
            Outcome::Miss,
            Outcome::Miss,
            Outcome::Miss,
            Outcome::StaleHit
        ]
    );
    assert_eq!(omitted[4].3, 504, "only-if-cached on a miss");
    assert_eq!(
        omitted.iter().filter(|s| s.1.collapsed).count(),
        2,
        "two waiters shared one call"
    );
    for (with, without) in inserted.iter().zip(&omitted) {
        assert_eq!(with.0, Some(with.1), "the extension is the header's status");
        assert_eq!(without.0, None, "no extension when omitted");
        assert_eq!((&with.2, with.3, &with.4), (&without.2, without.3, &without.4));
    }
}

/// A retention of `Duration::MAX` keeps stale entries for revalidation
/// as long as the budget allows, without overflowing an instant (adding it
/// to the end of an entry's usable life once panicked on store).
#[tokio::test(start_paused = true)]
async fn an_endless_retention_keeps_stale_entries_without_overflow() {
    let cache = Cache::builder()
        .stale_retention(Duration::MAX)
        .stale_if_error(Duration::MAX)
        .build()
        .unwrap();
    let upstream = Upstream::new(|_, n| async move {
        Ok(if n == 0 {
            respond(200, &[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "v1")
        } else {
            respond(304, &[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "")
        })
    });
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/a").await.body, "v1");
    advance(Duration::from_secs(86_400 * 365)).await;
    cache.sweep();
    assert_eq!(cache.stats().entries, 1, "kept, stale, for revalidation");
    let revalidated = get(&mut c, "http://api.test/a").await;
    assert_eq!((revalidated.status, revalidated.body.as_ref()), (200, b"v1".as_ref()));
    assert_eq!(cache.stats().revalidated, 1);
    assert_eq!(upstream.calls(), 2);
}
