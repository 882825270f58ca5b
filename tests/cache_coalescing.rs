//! Coalescing through the cache layer, on paused time: concurrent misses
//! for one key make one upstream call, waiters never hang (a failing or
//! slow leader, an answer that may not be stored, the lock timeout), and a
//! key learned uncacheable goes upstream without waiting.
#![cfg(feature = "cache")]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;
use tokio::time::{Instant, advance};
use tower_optimizer::cache::{Cache, RemovalCause};

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
