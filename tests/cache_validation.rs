//! Revalidation: what a 304 does to the stored response (RFC 9111 §4.3.4:
//! its `Age` counts, a `no-store` drops it, and one naming another
//! validator freshens nothing), and HEAD requests and the stored GET they
//! would be answered from (§4.3.5): a HEAD that goes upstream revalidates
//! it, a matching answer freshens it, a different one marks it stale, and
//! nothing a HEAD gets is stored as a GET.
#![cfg(feature = "cache")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::IF_NONE_MATCH;
use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Forward, InvalidationKind, Outcome};

/// An upstream that answers GETs `v1` (ETag `"a"`, fresh for 1 s) and
/// HEADs with `head`, recording the `If-None-Match` of each HEAD.
fn upstream(head: fn() -> Res) -> (Upstream, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::new(move |req: Req, _| {
        let is_head = req.method() == http::Method::HEAD;
        if is_head {
            let inm = req.headers().get(IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(inm);
        }
        async move {
            Ok(if is_head {
                head()
            } else {
                respond(200, &[("cache-control", "max-age=1"), ("etag", "\"a\"")], "v1")
            })
        }
    });
    (upstream, seen)
}

fn head_request(cache_control: Option<&str>) -> Req {
    let mut request = req("http://api.test/r").method(http::Method::HEAD);
    if let Some(cc) = cache_control {
        request = request.header("cache-control", cc);
    }
    request.body(empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_head_revalidates_the_stale_get_and_a_304_freshens_it() {
    let cache = cache();
    let (upstream, seen) = upstream(|| respond(304, &[("cache-control", "max-age=60"), ("etag", "\"a\"")], ""));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let head = send(&mut c, head_request(None)).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some("\"a\"".to_owned())],
        "a conditional HEAD"
    );
    assert_eq!(
        (head.status, head.body.len()),
        (200, 0),
        "the stored GET's head, no body"
    );
    assert_eq!(head.cache.outcome(), Outcome::Revalidated);
    let next = get(&mut c, "http://api.test/r").await;
    assert_eq!((next.cache.outcome(), next.body.as_ref()), (Outcome::Hit, &b"v1"[..]));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_head_answered_200_with_the_same_validator_freshens_the_get() {
    let cache = cache();
    // An upstream that ignores conditionals on HEAD.
    let (upstream, _) = upstream(|| respond(200, &[("cache-control", "max-age=60"), ("etag", "\"a\"")], ""));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let head = send(&mut c, head_request(None)).await.unwrap();
    assert_eq!((head.status, head.cache.fwd), (200, Some(Forward::Stale)));
    let next = get(&mut c, "http://api.test/r").await;
    assert_eq!(
        (next.cache.outcome(), next.header("cache-control")),
        (Outcome::Hit, "max-age=60")
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_head_answered_with_another_validator_marks_the_get_stale() {
    let cache = cache();
    let (upstream, _) = upstream(|| respond(200, &[("cache-control", "max-age=60"), ("etag", "\"b\"")], ""));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    // The GET is fresh; a HEAD that asks for an end-to-end check goes up.
    send(&mut c, head_request(Some("no-cache"))).await.unwrap();
    let next = get(&mut c, "http://api.test/r").await;
    assert_eq!(
        next.cache.fwd,
        Some(Forward::Stale),
        "revalidated, not a hit on the old version"
    );
    assert_eq!(upstream.calls(), 3);
    assert_eq!(cache.stats().entries, 1);
    assert_eq!(
        cache.stats().invalidations(InvalidationKind::Http),
        1,
        "an HTTP invalidation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_stand_in_for_a_failed_head_has_no_body() {
    let cache = tower_optimizer::cache::Cache::builder()
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let (upstream, _) = upstream(|| respond(503, &[], "down"));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let head = send(&mut c, head_request(None)).await.unwrap();
    assert_eq!(
        head.cache.outcome(),
        Outcome::StaleHit,
        "the stored GET stands in for the 503"
    );
    assert_eq!((head.status, head.body.len()), (200, 0));
}

#[tokio::test(start_paused = true)]
async fn a_304_naming_another_etag_does_not_freshen_the_stored_response() {
    // RFC 9111 §4.3.4: a 304 updates only stored responses with its
    // validator. One that names another is answered from the stored
    // response once, unchanged and marked stale, so the next use asks again.
    let cache = cache();
    let upstream = first_then(
        || respond(200, &[("cache-control", "max-age=1"), ("etag", "\"a\"")], "v1"),
        || respond(304, &[("cache-control", "max-age=60"), ("etag", "\"b\"")], ""),
    );
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let odd = get(&mut c, "http://api.test/r").await;
    assert_eq!(odd.body, "v1");
    assert_eq!(odd.header("cache-control"), "max-age=1", "not freshened");
    assert!(!odd.cache.stored);
    let next = get(&mut c, "http://api.test/r").await;
    assert_eq!(next.cache.fwd, Some(Forward::Stale), "asked again, not a hit");
    assert_eq!(upstream.calls(), 3);
    assert_eq!(cache.stats().invalidations(InvalidationKind::Http), 1);
}

#[tokio::test(start_paused = true)]
async fn a_304_with_a_weak_form_of_the_same_etag_freshens() {
    let cache = cache();
    let upstream = first_then(
        || respond(200, &[("cache-control", "max-age=1"), ("etag", "\"a\"")], "v1"),
        || respond(304, &[("cache-control", "max-age=60"), ("etag", "W/\"a\"")], ""),
    );
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        get(&mut c, "http://api.test/r").await.cache.outcome(),
        Outcome::Revalidated
    );
    assert_eq!(get(&mut c, "http://api.test/r").await.cache.outcome(), Outcome::Hit);
}

/// A `v1` answer (or a 304 for it) with ETag `"v1"` and an `Age`.
fn tagged(status: u16, cache_control: &str, age: &str) -> Res {
    let etag = [("cache-control", cache_control), ("etag", "\"v1\""), ("age", age)];
    respond(status, &etag, if status == 304 { "" } else { "v1" })
}

#[tokio::test(start_paused = true)]
async fn a_304_that_says_no_store_leaves_nothing_stored() {
    let cache = cache();
    let upstream = first_then(|| tagged(200, "max-age=1", "0"), || tagged(304, "no-store", "0"));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let revalidated = get(&mut c, "http://api.test/r").await;
    assert_eq!(revalidated.body, "v1");
    assert_eq!(revalidated.header("cache-control"), "no-store", "answered as freshened");
    assert_eq!(revalidated.cache.outcome(), Outcome::Revalidated);
    assert!(!revalidated.cache.stored);
    assert_eq!(cache.stats().entries, 0, "not stored again");
    get(&mut c, "http://api.test/r").await;
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_304_with_age_ages_the_freshened_entry_from_it() {
    let cache = cache();
    let upstream = first_then(|| tagged(200, "max-age=10", "0"), || tagged(304, "max-age=10", "4"));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let revalidated = get(&mut c, "http://api.test/r").await;
    assert_eq!(revalidated.header("age"), "4", "the 304's Age");
    tokio::time::advance(Duration::from_secs(5)).await;
    let hit = get(&mut c, "http://api.test/r").await;
    assert_eq!((hit.cache.outcome(), hit.header("age")), (Outcome::Hit, "9"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let stale = get(&mut c, "http://api.test/r").await;
    assert_eq!(stale.cache.outcome(), Outcome::Revalidated, "fresh for 10 - 4 s only");
}
