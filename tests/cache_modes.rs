//! Per-request cache modes ([`RequestCacheMode`] in the request's
//! extensions): each does what the Fetch standard's mode of that name does,
//! within RFC 9111, and none sends a header upstream.
#![cfg(feature = "cache")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CACHE_CONTROL, IF_NONE_MATCH};
use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Bypass, Cache, Forward, Outcome, RequestCacheMode};

/// The `Cache-Control` and `If-None-Match` of every upstream request.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// An upstream whose resource changes on every call (`v1`, `v2`, ...,
/// each with its own `ETag`), answering a conditional request for the
/// latest version with a 304, with `cache_control`.
fn upstream(cache_control: &'static str) -> (Upstream, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let version = Arc::new(Mutex::new(0_usize));
    let upstream = Upstream::new(move |req: Req, _| {
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (cc, inm) = (header(CACHE_CONTROL), header(IF_NONE_MATCH));
        log.lock().unwrap().push((cc, inm.clone()));
        let mut version = version.lock().unwrap();
        let current = format!("\"{}\"", *version);
        let not_modified = *version > 0 && inm.as_deref() == Some(current.as_str());
        if !not_modified {
            *version += 1;
        }
        let n = *version;
        async move {
            let etag = format!("\"{n}\"");
            let body: &'static str = Box::leak(format!("v{n}").into_boxed_str());
            let headers = [("cache-control", cache_control), ("etag", etag.as_str())];
            Ok(if not_modified {
                respond(304, &headers, "")
            } else {
                respond(200, &headers, body)
            })
        }
    });
    (upstream, seen)
}

fn with_mode(mode: RequestCacheMode) -> Req {
    let mut request = req("http://api.test/r").body(empty()).unwrap();
    request.extensions_mut().insert(mode);
    request
}

async fn fetch(c: &mut Client, mode: RequestCacheMode) -> Got {
    send(c, with_mode(mode)).await.unwrap()
}

/// Nothing the caller chose travels upstream: no request carried a
/// `Cache-Control`.
fn no_header_sent(seen: &Seen) {
    assert!(
        seen.lock().unwrap().iter().all(|(cc, _)| cc.is_none()),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn no_store_goes_around_the_cache_and_leaves_the_stored_copy_alone() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/r").await.body, "v1");
    let around = fetch(&mut c, RequestCacheMode::NoStore).await;
    assert_eq!(around.body, "v2", "upstream, although v1 is fresh");
    assert_eq!(around.cache.outcome(), Outcome::Bypass);
    assert_eq!(
        around.header("cache-status"),
        "tower-optimizer; fwd=bypass; fwd-status=200; detail=request-mode"
    );
    assert_eq!(Bypass::RequestMode.as_str(), "request-mode");
    let after = get(&mut c, "http://api.test/r").await;
    assert_eq!(
        (after.body.as_ref(), after.cache.hit),
        (&b"v1"[..], true),
        "v2 was not stored"
    );
    assert_eq!(cache.stats().bypassed, 1);
    // On an empty cache it stores nothing either.
    let other = Cache::builder().build().unwrap();
    let mut c2 = client(&other, &upstream);
    fetch(&mut c2, RequestCacheMode::NoStore).await;
    assert_eq!(other.stats().entries, 0);
    no_header_sent(&seen);
}

#[tokio::test(start_paused = true)]
async fn reload_fetches_a_whole_new_response_and_stores_it() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    let reloaded = fetch(&mut c, RequestCacheMode::Reload).await;
    assert_eq!((reloaded.status, reloaded.body.as_ref()), (200, &b"v2"[..]));
    assert_eq!(reloaded.cache.fwd, Some(Forward::Request));
    assert!(reloaded.cache.stored);
    assert_eq!(
        seen.lock().unwrap()[1],
        (None, None),
        "no validators of the stored copy: a 304 would hand back the stored body"
    );
    let after = get(&mut c, "http://api.test/r").await;
    assert_eq!(
        (after.body.as_ref(), after.cache.hit),
        (&b"v2"[..], true),
        "the reload replaced v1"
    );
    assert_eq!(upstream.calls(), 2);
    no_header_sent(&seen);
}

/// A reload asks for a response fetched after it was made: it does not
/// join a fetch already in flight, and that older fetch's answer, when it
/// comes back later, does not replace the reload's in the store.
#[tokio::test(start_paused = true)]
async fn reload_does_not_join_an_older_fetch_in_flight() {
    let cache = cache();
    // The first call takes 10 s, later ones 1 s; each answers the next version.
    let upstream = Upstream::new(|_, n| async move {
        tokio::time::sleep(Duration::from_secs(if n == 0 { 10 } else { 1 })).await;
        let body: &'static str = Box::leak(format!("v{}", n + 1).into_boxed_str());
        Ok(ok("max-age=600", body))
    });
    let mut first = client(&cache, &upstream);
    let older = tokio::spawn(async move { fetch(&mut first, RequestCacheMode::Default).await });
    advance(Duration::from_secs(1)).await;
    let mut c = client(&cache, &upstream);
    let reload = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let got = fetch(&mut c, RequestCacheMode::Reload).await;
        (got, start.elapsed())
    });
    let (reloaded, took) = reload.await.unwrap();
    assert_eq!(
        took,
        Duration::from_secs(1),
        "the reload waited for nobody: its own 1 s call"
    );
    assert_eq!(upstream.calls(), 2, "the reload went upstream itself");
    assert_eq!((reloaded.body.as_ref(), reloaded.cache.collapsed), (&b"v2"[..], false));
    assert!(reloaded.cache.stored);
    let older = older.await.unwrap();
    assert_eq!(older.body, "v1", "the older request gets its own fetch's answer");
    assert!(!older.cache.stored, "fetched before the reload: not stored over it");
    let after = get(&mut client(&cache, &upstream), "http://api.test/r").await;
    assert_eq!((after.body.as_ref(), after.cache.hit), (&b"v2"[..], true));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn reload_gets_no_stale_stand_in_when_upstream_fails() {
    let cache = cache();
    let upstream = Upstream::new(|_, n| async move {
        Ok(if n == 0 {
            ok("max-age=1, stale-if-error=600", "kept")
        } else {
            respond(503, &[], "down")
        })
    });
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(5)).await;
    let mut failing = with_mode(RequestCacheMode::Reload);
    assert!(
        !cache.can_serve_on_error(&failing),
        "failover must not count on the cache"
    );
    let reloaded = send(
        &mut c,
        std::mem::replace(&mut failing, with_mode(RequestCacheMode::Default)),
    )
    .await
    .unwrap();
    assert_eq!((reloaded.status, reloaded.body.as_ref()), (503, &b"down"[..]));
    // The same failure for a request without a mode is answered stale.
    assert!(cache.can_serve_on_error(&failing));
    let plain = send(&mut c, failing).await.unwrap();
    assert_eq!((plain.status, plain.body.as_ref()), (200, &b"kept"[..]));
    assert_eq!(plain.cache.outcome(), Outcome::StaleHit);
    let no_store = with_mode(RequestCacheMode::NoStore);
    assert!(!cache.can_serve_on_error(&no_store));
}

#[tokio::test(start_paused = true)]
async fn no_cache_answers_from_the_cache_only_once_upstream_confirms_it() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    let checked = fetch(&mut c, RequestCacheMode::NoCache).await;
    assert_eq!((checked.status, checked.body.as_ref()), (200, &b"v1"[..]));
    assert_eq!(checked.cache.outcome(), Outcome::Revalidated);
    assert_eq!(checked.cache.fwd, Some(Forward::Request));
    assert_eq!(
        seen.lock().unwrap()[1],
        (None, Some("\"1\"".to_owned())),
        "a conditional request, without the directive"
    );
    assert_eq!(upstream.calls(), 2);
    assert_eq!(get(&mut c, "http://api.test/r").await.cache.outcome(), Outcome::Hit);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn force_cache_takes_a_stale_copy_unless_the_origin_forbids_it() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=10");
    let mut c = client(&cache, &upstream);
    // A miss is fetched and stored.
    let first = fetch(&mut c, RequestCacheMode::ForceCache).await;
    assert_eq!((first.body.as_ref(), first.cache.stored), (&b"v1"[..], true));
    advance(Duration::from_secs(300)).await;
    let stale = fetch(&mut c, RequestCacheMode::ForceCache).await;
    assert_eq!(
        (stale.body.as_ref(), stale.cache.outcome()),
        (&b"v1"[..], Outcome::StaleHit)
    );
    assert_eq!(stale.cache.detail, Some("max-stale"));
    assert_eq!(stale.header("age"), "300");
    assert_eq!(upstream.calls(), 1);
    // Without the mode the same stale copy is revalidated.
    assert_eq!(
        get(&mut c, "http://api.test/r").await.cache.outcome(),
        Outcome::Revalidated
    );
    no_header_sent(&seen);

    let strict = Cache::builder().build().unwrap();
    let (upstream, _) = upstream_strict();
    let mut c = client(&strict, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(60)).await;
    let checked = fetch(&mut c, RequestCacheMode::ForceCache).await;
    assert_eq!(checked.cache.outcome(), Outcome::Revalidated, "must-revalidate wins");
    assert_eq!(upstream.calls(), 2);
}

fn upstream_strict() -> (Upstream, Seen) {
    upstream("max-age=10, must-revalidate")
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_never_goes_upstream() {
    let cache = cache();
    let (upstream, _) = upstream("max-age=10");
    let mut c = client(&cache, &upstream);
    let miss = fetch(&mut c, RequestCacheMode::OnlyIfCached).await;
    assert_eq!(miss.status, 504);
    assert_eq!(upstream.calls(), 0);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(300)).await;
    let stale = fetch(&mut c, RequestCacheMode::OnlyIfCached).await;
    assert_eq!((stale.status, stale.body.as_ref()), (200, &b"v1"[..]));
    assert_eq!(stale.cache.outcome(), Outcome::StaleHit);
    // A HEAD is answered from the stored GET the same way.
    let mut head = req("http://api.test/r")
        .method(http::Method::HEAD)
        .body(empty())
        .unwrap();
    head.extensions_mut().insert(RequestCacheMode::OnlyIfCached);
    let head = send(&mut c, head).await.unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(upstream.calls(), 1);

    let strict = Cache::builder().build().unwrap();
    let (upstream, _) = upstream_strict();
    let mut c = client(&strict, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(60)).await;
    let refused = fetch(&mut c, RequestCacheMode::OnlyIfCached).await;
    assert_eq!(refused.status, 504, "a must-revalidate copy cannot answer stale");
    assert_eq!(upstream.calls(), 1);
}
