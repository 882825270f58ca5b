//! A whole new answer that the cache may not store still tells it that the
//! stored one is out of date: the stored response it nominated is dropped,
//! so no later request is answered with content older than what the
//! upstream already sent (a cache "dooms" the entry, as browsers do).
//! Answers personal to one caller (`private` in a shared cache,
//! `Set-Cookie`, `Authorization`) and 5xx answers leave it in place.
#![cfg(feature = "cache")]

mod support;

use std::time::Duration;

use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Cache, CacheMode, Forward, Outcome, RemovalCause};

/// An upstream that answers `v1`, fresh for 60 s, then `second` for its
/// second call, then `v3`, fresh for 60 s.
fn upstream(second: fn() -> Res) -> Upstream {
    Upstream::new(move |_, n| async move {
        Ok(match n {
            0 => ok("max-age=60", "v1"),
            1 => second(),
            _ => ok("max-age=60", "v3"),
        })
    })
}

/// Stores `v1`, then sends a `no-cache` request (forced upstream past a
/// fresh entry) that `second` answers; what a plain request gets next.
async fn after_forced_reload(cache: &Cache, second: fn() -> Res) -> (Got, Got, usize) {
    let upstream = upstream(second);
    let mut c = client(cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/a").await.body, "v1");
    let reload = send(
        &mut c,
        req("http://api.test/a")
            .header("cache-control", "no-cache")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let next = get(&mut c, "http://api.test/a").await;
    (reload, next, upstream.calls())
}

#[tokio::test(start_paused = true)]
async fn a_no_store_answer_outdates_the_fresh_stored_one() {
    let cache = cache();
    let (reload, next, calls) =
        after_forced_reload(&cache, || respond(200, &[("cache-control", "no-store")], "v2")).await;
    assert_eq!(reload.body, "v2");
    assert_eq!(reload.cache.fwd, Some(Forward::Request));
    assert!(!reload.cache.stored);
    assert_eq!(next.body, "v3", "never v1 again once v2 was seen");
    assert_eq!(next.cache.fwd, Some(Forward::UriMiss));
    assert_eq!(calls, 3);
    assert_eq!(cache.stats().evictions[RemovalCause::Replaced.index()], 1);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_freshness_or_of_an_unstored_status_outdates_it() {
    // No freshness and no validators: not storable.
    let (_, next, _) = after_forced_reload(&cache(), || respond(200, &[], "v2")).await;
    assert_eq!(next.body, "v3");
    // 403 is not a status a cache stores without explicit freshness.
    let (reload, next, _) = after_forced_reload(&cache(), || respond(403, &[], "gone")).await;
    assert_eq!(reload.status, 403);
    assert_eq!(next.body, "v3");
    // `Vary: *` matches no later request.
    let (_, next, _) = after_forced_reload(&cache(), || {
        respond(200, &[("cache-control", "max-age=60"), ("vary", "*")], "v2")
    })
    .await;
    assert_eq!(next.body, "v3");
}

#[tokio::test(start_paused = true)]
async fn a_refused_revalidation_leaves_nothing_stale_to_serve() {
    // v1 goes stale; its revalidation is answered with a 404 the cache
    // does not store. A caller that accepts stale answers must not get v1.
    let cache = cache();
    let upstream = upstream(|| respond(404, &[], "not found"));
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/a").await.body, "v1");
    advance(Duration::from_secs(61)).await;
    let refused = get(&mut c, "http://api.test/a").await;
    assert_eq!((refused.status, refused.cache.fwd), (404, Some(Forward::Stale)));
    let stale_ok = send(
        &mut c,
        req("http://api.test/a")
            .header("cache-control", "max-stale")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stale_ok.body, "v3", "the 404 outdated v1");
    assert_eq!(stale_ok.cache.outcome(), Outcome::Miss);
}

#[tokio::test(start_paused = true)]
async fn personal_and_failed_answers_leave_the_stored_one() {
    // A `Set-Cookie` answer is one caller's; the stored one still serves
    // everyone else.
    let (reload, next, calls) = after_forced_reload(&cache(), || {
        respond(200, &[("cache-control", "max-age=60"), ("set-cookie", "s=1")], "v2")
    })
    .await;
    assert_eq!(reload.body, "v2");
    assert_eq!(
        (next.body.as_ref(), next.cache.outcome(), calls),
        (&b"v1"[..], Outcome::Hit, 2)
    );

    // So is a `private` one, in a shared cache.
    let shared = Cache::builder().mode(CacheMode::Shared).build().unwrap();
    let (_, next, _) = after_forced_reload(&shared, || {
        respond(200, &[("cache-control", "private, max-age=60")], "v2")
    })
    .await;
    assert_eq!((next.body.as_ref(), next.cache.outcome()), (&b"v1"[..], Outcome::Hit));

    // A 5xx is a failure, not a new version: v1 stands in for it, and
    // stays.
    let (reload, next, _) = after_forced_reload(&cache(), || respond(503, &[], "down")).await;
    assert_eq!((reload.body.as_ref(), reload.cache.fwd_status), (&b"v1"[..], Some(503)));
    assert_eq!((next.body.as_ref(), next.cache.outcome()), (&b"v1"[..], Outcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn the_removal_is_reported_as_a_replacement() {
    let causes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = causes.clone();
    let cache = Cache::builder()
        .eviction_listener(move |meta, cause| seen.lock().unwrap().push((meta.key.to_string(), cause)))
        .build()
        .unwrap();
    after_forced_reload(&cache, || respond(200, &[("cache-control", "no-store")], "v2")).await;
    assert_eq!(
        causes.lock().unwrap().as_slice(),
        [("http://api.test/a".to_owned(), RemovalCause::Replaced)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_answer_with_another_vary_key_replaces_the_one_it_revalidated() {
    // v1 varies on nothing; a reload is answered by v2, which now varies
    // on the language. v1 must not go on answering the other languages.
    let cache = cache();
    let upstream = first_then(
        || respond(200, &[("cache-control", "max-age=60")], "v1"),
        || {
            respond(
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept-language")],
                "v2",
            )
        },
    );
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/a").await.body, "v1");
    let reload = req("http://api.test/a")
        .header("accept-language", "en")
        .header("cache-control", "no-cache")
        .body(empty())
        .unwrap();
    assert_eq!(send(&mut c, reload).await.unwrap().body, "v2");
    let fr = req("http://api.test/a")
        .header("accept-language", "fr")
        .body(empty())
        .unwrap();
    let fr = send(&mut c, fr).await.unwrap();
    assert_eq!((fr.body.as_ref(), fr.cache.fwd), (&b"v2"[..], Some(Forward::VaryMiss)));
    assert_eq!(cache.stats().entries, 2, "the en and fr variants of v2, and no v1");
}

#[tokio::test(start_paused = true)]
async fn a_304_to_an_authorized_request_neither_freshens_nor_drops_the_shared_entry() {
    // RFC 9111 §3.5: a shared cache does not store what a request with
    // `Authorization` got, unless the answer allows it; a 304 without
    // `public` is such an answer. The entry others share stays as it was.
    let cache = Cache::builder().mode(CacheMode::Shared).build().unwrap();
    let upstream = first_then(
        || respond(200, &[("cache-control", "max-age=1"), ("etag", "\"a\"")], "v1"),
        || respond(304, &[("cache-control", "max-age=60"), ("etag", "\"a\"")], ""),
    );
    let mut c = client(&cache, &upstream);
    assert_eq!(get(&mut c, "http://api.test/a").await.body, "v1");
    advance(Duration::from_secs(2)).await;
    let authorized = req("http://api.test/a")
        .header("authorization", "Bearer x")
        .body(empty())
        .unwrap();
    let authorized = send(&mut c, authorized).await.unwrap();
    assert_eq!((authorized.body.as_ref(), authorized.cache.stored), (&b"v1"[..], false));
    assert_eq!(cache.stats().entries, 1, "still there for everyone else");
    let anonymous = get(&mut c, "http://api.test/a").await;
    assert_eq!(
        (anonymous.cache.outcome(), anonymous.body.as_ref()),
        (Outcome::Revalidated, &b"v1"[..]),
        "still stale: the authorized 304 did not freshen it"
    );
    assert_eq!(upstream.calls(), 3);
}
