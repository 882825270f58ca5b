//! The cache layer's behaviour through a real inner service, on paused time.
#![cfg(feature = "cache")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Cache, CacheMode, Forward, Outcome};

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

#[test]
fn configuration_errors_come_from_build() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let cases = [
        ("max_bytes", Cache::builder().max_bytes(0).build().err()),
        ("max_entry_bytes", Cache::builder().max_entry_bytes(0).build().err()),
        ("max_variants", Cache::builder().max_variants(0).build().err()),
        (
            "heuristic_freshness",
            Cache::builder().heuristic_freshness(101).build().err(),
        ),
        (
            "sweep_interval",
            Cache::builder().sweep_interval(Some(Duration::ZERO)).build().err(),
        ),
        ("exclude", Cache::builder().exclude("([").build().err()),
        ("shards", Cache::builder().shards(0).build().err()),
        (
            "shards",
            Cache::builder()
                .max_bytes(1 << 20)
                .max_entry_bytes(1 << 20)
                .shards(16)
                .build()
                .err(),
        ),
        (
            "memory_pressure",
            Cache::builder()
                .memory_pressure(MemoryPressure::new(MemorySource::ProcessRss, 10, 20))
                .build()
                .err(),
        ),
    ];
    // Each case is named by the setting at fault, which the error names too.
    for (setting, error) in cases {
        let error = error.unwrap_or_else(|| panic!("{setting}: expected a build error"));
        assert!(
            error.to_string().starts_with("invalid cache configuration: "),
            "{setting}: {error}"
        );
        assert_eq!(error.setting(), setting, "{error}");
    }
    let audit = Cache::builder().audit_interval(Duration::ZERO).build().unwrap_err();
    assert_eq!(audit.setting(), "audit_interval");
    let vary = Cache::builder().vary_on(["x tenant"]).build().unwrap_err();
    assert_eq!(vary.setting(), "vary_on");
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
