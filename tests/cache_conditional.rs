//! A caller's own conditional requests (RFC 9111 §4.3.2): `If-None-Match`
//! and `If-Modified-Since` are answered from the stored response the cache
//! answers with, a 304 where they match it and the response where they do
//! not. Where the cache must go upstream first (a miss, a stale entry), it
//! asks for itself, without them, and judges them against what it gets.
#![cfg(feature = "cache")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Cache, Forward, Outcome};

const MON: &str = "Mon, 02 Nov 2026 10:00:00 GMT";
const TUE: &str = "Tue, 03 Nov 2026 10:00:00 GMT";

/// The validators each upstream request carried.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// An upstream whose resource is `v1` (`ETag: "a"`, `Last-Modified` on
/// Monday) with `cache_control`; it answers a matching `If-None-Match` with
/// a 304 and records the validators of every request.
fn upstream(cache_control: &'static str) -> (Upstream, Seen) {
    upstream_with(cache_control, ("last-modified", MON))
}

/// [`upstream`] with `extra` in place of its `Last-Modified`.
fn upstream_with(cache_control: &'static str, extra: (&'static str, &'static str)) -> (Upstream, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let upstream = Upstream::new(move |req: Req, _| {
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (inm, ims) = (header(IF_NONE_MATCH), header(IF_MODIFIED_SINCE));
        let matched = inm.as_deref() == Some("\"a\"");
        log.lock().unwrap().push((inm, ims));
        async move {
            let headers = [
                ("cache-control", cache_control),
                ("etag", "\"a\""),
                extra,
                ("content-type", "text/plain"),
            ];
            Ok(if matched {
                respond(304, &headers, "")
            } else {
                respond(200, &headers, "v1")
            })
        }
    });
    (upstream, seen)
}

/// A GET of the resource with `headers`.
fn with(headers: &[(http::HeaderName, &str)]) -> Req {
    let mut request = req("http://api.test/r");
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    request.body(empty()).unwrap()
}

fn conditional(name: http::HeaderName, value: &str) -> Req {
    with(&[(name, value)])
}

#[tokio::test(start_paused = true)]
async fn a_matching_if_none_match_on_a_fresh_entry_gets_a_304_from_the_cache() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(5)).await;
    let answer = send(&mut c, conditional(IF_NONE_MATCH, "\"x\", W/\"a\""))
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.len()), (304, 0));
    assert_eq!(answer.cache.outcome(), Outcome::Hit);
    assert_eq!(answer.cache.detail, Some("not-modified"));
    assert_eq!(answer.header("etag"), "\"a\"");
    assert_eq!(answer.header("cache-control"), "max-age=60");
    assert_eq!(answer.header("age"), "5");
    assert_eq!(
        answer.header("cache-status"),
        "tower-optimizer; hit; ttl=55; detail=not-modified"
    );
    assert!(
        answer.headers.get("content-type").is_none() && answer.headers.get("content-length").is_none(),
        "nothing that describes a body: {:?}",
        answer.headers
    );
    // A HEAD asks the same way.
    let head = req("http://api.test/r")
        .method(http::Method::HEAD)
        .header(IF_NONE_MATCH, "*")
        .body(empty())
        .unwrap();
    assert_eq!(send(&mut c, head).await.unwrap().status, 304);
    // Another tag: the stored response, whole.
    let other = send(&mut c, conditional(IF_NONE_MATCH, "\"b\"")).await.unwrap();
    assert_eq!((other.status, other.body.as_ref()), (200, &b"v1"[..]));
    assert_eq!(other.cache.outcome(), Outcome::Hit);
    assert_eq!(upstream.calls(), 1, "all from the cache");
    assert_eq!(seen.lock().unwrap().as_slice(), [(None, None)]);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.not_modified), (3, 2), "two of the hits were 304s");
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_is_judged_by_last_modified() {
    let cache = cache();
    let (upstream, _) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    let later = send(&mut c, conditional(IF_MODIFIED_SINCE, TUE)).await.unwrap();
    assert_eq!(later.status, 304, "not modified since Tuesday");
    assert_eq!(later.header("last-modified"), MON);
    let same = send(&mut c, conditional(IF_MODIFIED_SINCE, MON)).await.unwrap();
    assert_eq!(same.status, 304);
    let earlier = send(&mut c, conditional(IF_MODIFIED_SINCE, "Sun, 01 Nov 2026 10:00:00 GMT"))
        .await
        .unwrap();
    assert_eq!((earlier.status, earlier.body.as_ref()), (200, &b"v1"[..]));
    let junk = send(&mut c, conditional(IF_MODIFIED_SINCE, "last week")).await.unwrap();
    assert_eq!(junk.status, 200, "not a date: ignored");
    // If-None-Match, when present, decides alone (RFC 9110 §13.2.2).
    let both = with(&[(IF_NONE_MATCH, "\"b\""), (IF_MODIFIED_SINCE, TUE)]);
    assert_eq!(send(&mut c, both).await.unwrap().status, 200);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_usable_stored_response_the_cache_asks_for_itself_and_judges_the_answer() {
    let cache = cache();
    let (upstream, seen) = upstream("max-age=1");
    let mut c = client(&cache, &upstream);
    // A miss: the cache fetches the whole response (without the caller's
    // validators), stores it, and answers the caller's question from it.
    let miss = send(&mut c, conditional(IF_NONE_MATCH, "\"a\"")).await.unwrap();
    assert_eq!((miss.status, miss.body.len()), (304, 0));
    assert_eq!(miss.cache.fwd, Some(Forward::UriMiss));
    assert!(miss.cache.stored);
    assert_eq!(cache.stats().entries, 1);
    let other = send(&mut c, conditional(IF_NONE_MATCH, "\"old\"")).await.unwrap();
    assert_eq!(
        (other.status, other.body.as_ref()),
        (200, &b"v1"[..]),
        "a hit on what it stored"
    );
    // A stale entry: the cache revalidates its own copy with its own
    // validators; the 304 freshens it, and the caller's are judged against
    // the freshened response.
    advance(Duration::from_secs(2)).await;
    let stale = send(&mut c, conditional(IF_MODIFIED_SINCE, TUE)).await.unwrap();
    assert_eq!(stale.status, 304);
    assert_eq!(stale.cache.fwd_status, Some(304), "revalidated upstream");
    let next = get(&mut c, "http://api.test/r").await;
    assert_eq!(next.cache.outcome(), Outcome::Hit, "freshened for everyone");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(None, None), (Some("\"a\"".to_owned()), Some(MON.to_owned()))]
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_the_caller_and_refreshes_with_its_own_validators() {
    let cache = Cache::builder().build().unwrap();
    // No `Last-Modified`: the refresh has no date of its own to send.
    let (upstream, seen) = upstream_with("max-age=1, stale-while-revalidate=60", ("x-other", "1"));
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let asks = with(&[(IF_NONE_MATCH, "\"a\""), (IF_MODIFIED_SINCE, TUE)]);
    let answer = send(&mut c, asks).await.unwrap();
    assert_eq!(answer.status, 304, "answered at once from the stale entry");
    assert_eq!(
        answer.cache.detail,
        Some("stale-while-revalidate"),
        "why a stale entry answered"
    );
    // Let the background refresh run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let log = seen.lock().unwrap().clone();
    assert_eq!(
        log.last(),
        Some(&(Some("\"a\"".to_owned()), None)),
        "the refresh carries the stored response's validators, not the caller's date: {log:?}"
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn preconditions_for_the_origin_still_bypass_the_cache() {
    let cache = cache();
    let (upstream, _) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    for (name, value) in [
        (http::header::IF_MATCH, "\"a\""),
        (http::header::IF_UNMODIFIED_SINCE, MON),
        (http::header::RANGE, "bytes=0-0"),
    ] {
        let answer = send(&mut c, conditional(name.clone(), value)).await.unwrap();
        assert_eq!(answer.cache.fwd, Some(Forward::Bypass), "{name}");
    }
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_stands_in_for_a_failure_for_a_conditional_request_too() {
    let cache = Cache::builder()
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let upstream = first_then(
        || respond(200, &[("cache-control", "max-age=1"), ("etag", "\"a\"")], "v1"),
        || respond(503, &[], "down"),
    );
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/r").await;
    advance(Duration::from_secs(2)).await;
    let asks = || conditional(IF_NONE_MATCH, "\"a\"");
    assert!(cache.can_serve_on_error(&asks()), "failover leaves it to the cache");
    let matched = send(&mut c, asks()).await.unwrap();
    assert_eq!((matched.status, matched.cache.outcome()), (304, Outcome::StaleHit));
    let other = send(&mut c, conditional(IF_NONE_MATCH, "\"b\"")).await.unwrap();
    assert_eq!((other.status, other.body.as_ref()), (200, &b"v1"[..]));
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_never_goes_upstream_even_for_a_request_the_store_cannot_answer() {
    // RFC 9111 §5.2.1.7: a stored response or a 504, whatever else the
    // request carries (the RFC model found this one).
    let cache = cache();
    let (upstream, _) = upstream("max-age=60");
    let mut c = client(&cache, &upstream);
    for (name, value) in [
        (IF_NONE_MATCH, "\"a\""),
        (http::header::IF_MATCH, "\"a\""),
        (http::header::RANGE, "bytes=0-0"),
        (http::header::AUTHORIZATION, "Bearer x"),
    ] {
        let request = with(&[(http::header::CACHE_CONTROL, "only-if-cached"), (name.clone(), value)]);
        let answer = send(&mut c, request).await.unwrap();
        assert_eq!(answer.status, 504, "{name}");
        assert_eq!(answer.cache.detail, Some("only-if-cached"));
    }
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn coalesced_conditional_misses_each_get_their_own_answer() {
    // Concurrent misses, some with validators, make one upstream call
    // (without any caller's validators); each caller's are judged against
    // the stored answer, the leader's and the waiters' alike.
    let cache = cache();
    let (slow, seen) = {
        let seen = Seen::default();
        let log = seen.clone();
        let upstream = Upstream::new(move |req: Req, _| {
            let inm = req.headers().get(IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push((inm, None));
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(respond(
                    200,
                    &[("cache-control", "max-age=60"), ("etag", "\"a\"")],
                    "v1",
                ))
            }
        });
        (upstream, seen)
    };
    let asks = [Some("\"a\""), None, Some("\"b\""), Some("*"), None, Some("\"a\"")];
    let mut tasks = Vec::new();
    for ask in asks {
        let mut c = client(&cache, &slow);
        let request = match ask {
            Some(tag) => conditional(IF_NONE_MATCH, tag),
            None => with(&[]),
        };
        tasks.push(tokio::spawn(async move { send(&mut c, request).await.unwrap() }));
    }
    let mut collapsed = 0;
    for (task, ask) in tasks.into_iter().zip(asks) {
        let got = task.await.unwrap();
        let matches = matches!(ask, Some("\"a\"" | "*"));
        let want: (u16, &[u8]) = if matches { (304, b"") } else { (200, b"v1") };
        assert_eq!((got.status, got.body.as_ref()), want, "{ask:?}");
        collapsed += usize::from(got.cache.collapsed);
    }
    assert_eq!(slow.calls(), 1);
    assert_eq!(collapsed, asks.len() - 1);
    assert_eq!(cache.stats().not_modified, 3, "the leader's and two waiters'");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(None, None)],
        "no caller's tag went up"
    );
}
