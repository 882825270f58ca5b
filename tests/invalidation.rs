//! Every invalidation strategy, soft and hard, through the cache and
//! invalidation layers with a real inner service, on paused time.
#![cfg(feature = "invalidation")]

#[path = "support/recorder.rs"]
mod recorder;
mod support;

use recorder::Recorder;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use support::{Req, Res, Upstream};
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, InvalidationKind, Node, Purge};
use tower_optimizer::invalidation::{
    HeaderVisibility, InvalidationEvent, InvalidationLayer, InvalidationReport, Invalidator, Pattern, Rule, SCAN_CHUNK,
    TagHeaders, Target,
};

type Client = tower_optimizer::cache::CacheService<tower_optimizer::invalidation::InvalidationService<Upstream>>;

fn stack(cache: &Cache, layer: &InvalidationLayer, upstream: &Upstream) -> Client {
    tower::Layer::layer(
        &CacheLayer::new(cache.clone()),
        tower::Layer::layer(layer, upstream.clone()),
    )
}

struct Got {
    status: u16,
    body: Bytes,
    cache: CacheStatus,
    headers: http::HeaderMap,
    report: Option<InvalidationReport>,
}

async fn send(client: &mut Client, req: Req) -> Got {
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status.as_u16(),
        cache: CacheStatus::from_headers(&parts.headers).unwrap(),
        report: parts.extensions.get::<InvalidationReport>().copied(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(client: &mut Client, uri: &str) -> Got {
    send(client, Request::get(uri).body(Full::default()).unwrap()).await
}

async fn write(client: &mut Client, method: Method, uri: &str) -> Got {
    send(
        client,
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Upstream for most tests: `GET` answers `max-age=600` with tag headers
/// derived from the path; writes answer 204 (or what the path asks for).
fn api() -> Upstream {
    Upstream::new(|req: Req, n| async move {
        let path = req.uri().path().to_owned();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = Response::builder().status(if path.contains("fail") { 500 } else { 204 });
            if path.starts_with("/groups") {
                res = res.header("cache-group-invalidation", "\"team\"");
            }
            if path == "/users" {
                res = res
                    .status(201)
                    .header("location", "/users/99")
                    .header("content-location", "http://other.test/users/99");
            }
            return Ok::<Res, BoxError>(res.body(Full::default()).unwrap());
        }
        let id = path.rsplit('/').next().unwrap_or("").to_owned();
        Ok(Response::builder()
            .header("cache-control", "max-age=600")
            .header("etag", "\"e\"")
            .header("vary", "accept-language")
            .header("surrogate-key", format!("user:{id} users"))
            .header("cache-tag", "api, v1")
            .header("cache-groups", "\"team\", \"all\"")
            .body(Full::new(Bytes::from(format!("{path} #{n}"))))
            .unwrap())
    })
}

#[tokio::test(start_paused = true)]
async fn key_and_uri_invalidation_drop_every_variant() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = api();
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    for lang in ["en", "fr"] {
        send(
            &mut c,
            Request::get("http://api.test/users/7")
                .header("accept-language", lang)
                .body(Full::default())
                .unwrap(),
        )
        .await;
    }
    assert_eq!(cache.stats().entries, 2);
    let report = inv.uri(&"http://API.test:80/users/7".parse().unwrap());
    assert_eq!((report.entries, report.kind), (2, InvalidationKind::Key));
    assert!(report.bytes > 0);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().invalidations(InvalidationKind::Key), 2);
}

#[tokio::test(start_paused = true)]
async fn tags_from_every_header_and_closure_scoped_groups_and_stripping() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let layer = InvalidationLayer::new(inv.clone())
        .tag_with(|req, _res| vec![format!("path:{}", req.uri.path())])
        .tag_headers(TagHeaders {
            visibility: HeaderVisibility::Strip,
            ..TagHeaders::default()
        });
    let upstream = api();
    let mut c = stack(&cache, &layer, &upstream);
    let first = get(&mut c, "http://api.test/users/1").await;
    assert!(
        first.headers.get("surrogate-key").is_none() && first.headers.get("cache-groups").is_none(),
        "stripped"
    );
    get(&mut c, "http://api.test/users/2").await;
    get(&mut c, "http://other.test/users/3").await;
    let meta = cache.entries();
    let tags: Vec<String> = meta
        .iter()
        .find(|m| m.key.ends_with("/users/1"))
        .unwrap()
        .tags
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "user:1",
        "users",
        "api",
        "v1",
        "path:/users/1",
        "http://api.test team",
        "http://api.test all",
    ] {
        assert!(tags.iter().any(|t| t == want), "missing {want} in {tags:?}");
    }
    assert_eq!(inv.tag("user:1").entries, 1);
    assert_eq!(inv.group("http://api.test", "team").entries, 1, "groups are per origin");
    assert_eq!(inv.tag("v1").entries, 1);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().indexed_tags, 0, "the tag index emptied with the entries");
}

#[tokio::test(start_paused = true)]
async fn pattern_scans_run_to_the_end_and_bad_regexes_are_errors() {
    let cache = Cache::builder().max_bytes(64 << 20).build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = Upstream::fixed("max-age=600", "x");
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    let total = SCAN_CHUNK * 3;
    for i in 0..total {
        get(&mut c, &format!("http://api.test/items/{i}")).await;
    }
    let err = inv.pattern("([").await.unwrap_err();
    assert!(err.is_pattern() && err.to_string().contains("invalid pattern"), "{err}");
    let report = inv.pattern(r"/items/\d*7$").await.unwrap();
    assert_eq!(report.scanned, total);
    assert_eq!(report.entries, (0..total).filter(|i| i % 10 == 7).count());
    // (That the scan pauses between chunks is a unit test in `scan.rs`.)
    // A caller that stops waiting after the first chunk: the scan still
    // runs to the end, so no matching entry is left behind.
    let before = cache.stats().entries as usize;
    let gave_up = tokio::time::timeout(Duration::ZERO, inv.pattern(r"/items/\d*3$")).await;
    assert!(gave_up.is_err(), "dropped while scanning");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let threes = (0..total).filter(|i| i % 10 == 3).count();
    assert_eq!(cache.stats().entries as usize, before - threes);
    let soft = inv
        .purge_pattern(&Pattern::path(r"^/items/1\d*$").unwrap(), Purge::Soft)
        .await;
    assert!(soft.entries > 0 && soft.mode == Purge::Soft);
    assert_eq!(
        cache.stats().entries as usize,
        total - report.entries - threes,
        "soft purge keeps entries"
    );
    // A regex anchored at a path, as one writes it for a route, matches
    // paths: over whole keys (which start with a scheme) it never could.
    let before = cache.stats().entries as usize;
    let by_path = inv.pattern(r"^/items/2\d$").await.unwrap();
    let kept = |i: &usize| i % 10 != 7 && i % 10 != 3;
    assert_eq!(by_path.entries, (20..30).filter(kept).count());
    assert_eq!(cache.stats().entries as usize, before - by_path.entries);
    let by_key = inv.pattern(r"^http://api\.test/items/3\d$").await.unwrap();
    assert_eq!(by_key.entries, (30..40).filter(kept).count());
}

#[tokio::test(start_paused = true)]
async fn dependencies_cascade_through_cycles_once() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = Upstream::fixed("max-age=600", "x");
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    let key = |p: &str| Node::Key(format!("http://api.test/{p}").into());
    for p in ["a", "b", "c", "d", "list"] {
        get(&mut c, &format!("http://api.test/{p}")).await;
    }
    inv.depends_on(key("b"), key("a")).unwrap();
    inv.depends_on(key("a"), key("b")).unwrap(); // a cycle
    inv.depends_on(key("c"), key("b")).unwrap();
    inv.depends_on(Node::Tag("lists".into()), key("c")).unwrap();
    inv.depends_on(key("list"), Node::Tag("lists".into())).unwrap();
    assert!(inv.depends_on(key("nope"), key("a")).unwrap_err().is_not_cached());
    let report = inv.key("http://api.test/a");
    assert_eq!(report.entries, 4, "a, b, c and list; d stays");
    assert_eq!(report.depth, 4, "a -> b -> c -> tag lists -> list");
    assert_eq!(cache.stats().entries, 1);
    assert_eq!(
        cache.stats().indexed_dependencies,
        0,
        "no index slot outlives its entries"
    );
    assert_eq!(cache.stats().invalidations(InvalidationKind::Dependency), 3);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn dependencies_declared_by_the_layer() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let layer = InvalidationLayer::new(inv.clone()).depends_with(|req, _| {
        if req.uri.path().starts_with("/teams/1/") {
            vec![Node::Key("http://api.test/teams/1".into())]
        } else {
            vec![]
        }
    });
    let upstream = Upstream::fixed("max-age=600", "x");
    let mut c = stack(&cache, &layer, &upstream);
    get(&mut c, "http://api.test/teams/1/members").await;
    get(&mut c, "http://api.test/teams/2/members").await;
    let report = inv.dependents_of(Node::Key("http://api.test/teams/1".into()), Purge::Hard);
    assert_eq!((report.entries, report.depth), (1, 1));
    assert_eq!(cache.stats().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn version_bumps_invalidate_lazily_in_constant_time() {
    let cache = Cache::builder().sweep_interval(None).build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let layer =
        InvalidationLayer::new(inv.clone()).namespace(|req| req.uri.path().split('/').nth(1).map(str::to_owned));
    let upstream = api();
    let mut c = stack(&cache, &layer, &upstream);
    get(&mut c, "http://api.test/users/1").await;
    get(&mut c, "http://api.test/users/2").await;
    get(&mut c, "http://api.test/teams/1").await;
    assert!(get(&mut c, "http://api.test/users/1").await.cache.hit);
    let bump = inv.bump_version("users");
    assert_eq!((bump.version, bump.entries), (Some(1), 0), "O(1): nothing walked");
    assert_eq!(inv.version("users"), 1);
    let after = get(&mut c, "http://api.test/users/1").await;
    assert!(
        !after.cache.hit && after.body.ends_with(b"#3"),
        "dropped on access and refetched"
    );
    assert!(
        get(&mut c, "http://api.test/teams/1").await.cache.hit,
        "other namespaces untouched"
    );
    assert_eq!(cache.sweep().entries, 1, "the sweep drops the other stale one");
    assert_eq!(cache.stats().invalidations(InvalidationKind::Version), 2);
    assert!(
        get(&mut c, "http://api.test/users/1").await.cache.hit,
        "the refetch is stamped with the new version"
    );
}

#[tokio::test(start_paused = true)]
async fn soft_purge_revalidates_with_validators_and_serves_stale_where_allowed() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let conditional = Arc::new(AtomicUsize::new(0));
    let seen = conditional.clone();
    let upstream = Upstream::new(move |req: Req, n| {
        if req.headers().contains_key("if-none-match") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            let swr = req.uri().path() == "/swr";
            let cc = if swr {
                "max-age=600, stale-while-revalidate=60"
            } else {
                "max-age=600"
            };
            if n > 0 && req.headers().contains_key("if-none-match") {
                return Ok::<Res, BoxError>(
                    Response::builder()
                        .status(304)
                        .header("cache-control", cc)
                        .header("etag", "\"v\"")
                        .body(Full::default())
                        .unwrap(),
                );
            }
            Ok(Response::builder()
                .header("cache-control", cc)
                .header("etag", "\"v\"")
                .header("cache-tag", "soft")
                .body(Full::new(Bytes::from_static(b"stored")))
                .unwrap())
        }
    });
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    get(&mut c, "http://api.test/plain").await;
    get(&mut c, "http://api.test/swr").await;
    let report = inv.purge(&[Node::Tag("soft".into())], Purge::Soft);
    assert_eq!((report.entries, report.mode), (2, Purge::Soft));
    assert_eq!(cache.stats().entries, 2, "marked, not removed");
    let plain = get(&mut c, "http://api.test/plain").await;
    assert_eq!(
        (plain.body.as_ref(), plain.cache.fwd_status),
        (b"stored".as_ref(), Some(304)),
        "revalidated with its ETag"
    );
    let swr = get(&mut c, "http://api.test/swr").await;
    assert_eq!(
        swr.cache.detail,
        Some("stale-while-revalidate"),
        "served stale where SWR allows"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(conditional.load(Ordering::SeqCst), 2);
    assert!(
        get(&mut c, "http://api.test/plain").await.cache.hit,
        "fresh again after the 304"
    );
}

#[tokio::test(start_paused = true)]
async fn predicates_and_age() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = Upstream::new(|req: Req, _| async move {
        let status = if req.uri().path().starts_with("/missing") {
            404
        } else {
            200
        };
        Ok::<Res, BoxError>(
            Response::builder()
                .status(status)
                .header("cache-control", "max-age=600")
                .body(Full::default())
                .unwrap(),
        )
    });
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    get(&mut c, "http://api.test/missing/1").await;
    get(&mut c, "http://api.test/ok/1").await;
    tokio::time::advance(Duration::from_secs(100)).await;
    get(&mut c, "http://api.test/ok/2").await;
    let gone = inv.purge_where(|m| m.status == 404, Purge::Hard).await;
    assert_eq!(
        (gone.entries, gone.scanned, gone.kind),
        (1, 3, InvalidationKind::Conditional)
    );
    let old = inv.purge_older_than(Duration::from_secs(50), Purge::Hard).await;
    assert_eq!((old.entries, old.kind), (1, InvalidationKind::Time));
    assert_eq!(cache.entries()[0].key.as_ref(), "http://api.test/ok/2");
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_invalidate_target_location_and_groups_same_origin_only() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = api();
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    for uri in [
        "http://api.test/users",
        "http://api.test/users/99",
        "http://other.test/users/99",
        "http://api.test/x/fail",
        "http://api.test/team/1",
        "http://other.test/team/1",
    ] {
        get(&mut c, uri).await;
    }
    assert_eq!(cache.stats().entries, 6);
    let post = write(&mut c, Method::POST, "http://api.test/users").await;
    assert_eq!(post.status, 201);
    let report = post.report.expect("writes carry a report");
    assert_eq!(
        (report.entries, report.kind),
        (2, InvalidationKind::Http),
        "target and same-origin Location"
    );
    assert!(
        cache.entries().iter().any(|m| &*m.key == "http://other.test/users/99"),
        "other origin untouched"
    );
    let failed = write(&mut c, Method::DELETE, "http://api.test/x/fail").await;
    assert_eq!(
        (failed.status, failed.report.unwrap().entries),
        (500, 0),
        "error responses invalidate nothing"
    );
    // RFC 9875: the group named by the write's response, on its origin only.
    let grouped = write(&mut c, Method::PATCH, "http://api.test/groups/1").await;
    assert_eq!(
        grouped.report.unwrap().entries,
        2,
        "api.test's 'team' group: /team/1 and /x/fail"
    );
    let kept: Vec<String> = cache.entries().iter().map(|m| m.key.to_string()).collect();
    assert!(kept.contains(&"http://other.test/team/1".to_owned()), "{kept:?}");
    // Safe methods never invalidate, whatever their headers say.
    let safe = get(&mut c, "http://api.test/groups/1").await;
    assert!(safe.report.is_none());
    assert_eq!(cache.stats().invalidations(InvalidationKind::Http), 4);
}

#[tokio::test(start_paused = true)]
async fn crud_rules_and_custom_strategies() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let layer = InvalidationLayer::new(inv.clone()).rule(
        Rule::new(Method::PUT, "/users/{id}")
            .unwrap()
            .tag("user:{id}")
            .pattern(r"^/users(\?.*)?$")
            .unwrap(),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    inv.register(move |event: &InvalidationEvent<'_>| {
        log.lock()
            .unwrap()
            .push(format!("{event:?}").split_whitespace().next().unwrap().to_owned());
        match event {
            InvalidationEvent::Write { uri, .. } if uri.path() == "/users/5" => {
                vec![Target::Key("http://api.test/other".into())]
            }
            _ => Vec::new(),
        }
    });
    let upstream = api();
    let mut c = stack(&cache, &layer, &upstream);
    for uri in [
        "http://api.test/users?page=2",
        "http://api.test/users",
        "http://api.test/profile/5",
        "http://api.test/other",
    ] {
        get(&mut c, uri).await;
    }
    // `/profile/5` carries the surrogate key `user:5` (from its last path
    // segment), so the rule's tag reaches it.
    let put = write(&mut c, Method::PUT, "http://api.test/users/5").await;
    let report = put.report.unwrap();
    assert_eq!(
        report.entries, 4,
        "list pages by pattern, /profile/5 by tag, /other by the strategy"
    );
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(report.scanned, 2, "the scan ran over what the sync targets left");
    assert_eq!(events.lock().unwrap().first().map(String::as_str), Some("Write"));
    assert!(cache.stats().invalidations(InvalidationKind::Custom) >= 1);
    assert!(cache.stats().invalidations(InvalidationKind::Pattern) >= 2);
}

#[tokio::test(start_paused = true)]
async fn malformed_and_huge_tag_headers_are_bounded() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = Upstream::new(|req: Req, _| async move {
        let mut res = Response::builder().header("cache-control", "max-age=600");
        match req.uri().path() {
            "/huge" => {
                let many = (0..5000).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" ");
                res = res
                    .header("surrogate-key", many)
                    .header("cache-tag", "x".repeat(100_000));
            }
            _ => {
                res = res
                    .header("cache-groups", "\"unterminated")
                    .header("cache-groups", HeaderValueBytes(b"\"\xff\""))
                    .header("cache-tag", ",,,")
                    .header("surrogate-key", "   ");
            }
        }
        Ok::<Res, BoxError>(res.body(Full::default()).unwrap())
    });
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    assert_eq!(get(&mut c, "http://api.test/huge").await.status, 200);
    assert_eq!(get(&mut c, "http://api.test/garbage").await.status, 200);
    let huge = cache.entries().into_iter().find(|m| m.key.ends_with("/huge")).unwrap();
    assert_eq!(
        huge.tags.len(),
        tower_optimizer::invalidation::headers::MAX_TAGS_PER_RESPONSE
    );
    let garbage = cache
        .entries()
        .into_iter()
        .find(|m| m.key.ends_with("/garbage"))
        .unwrap();
    assert!(garbage.tags.is_empty());
}

/// Builds a header value from raw bytes in a response builder.
struct HeaderValueBytes(&'static [u8]);

impl TryFrom<HeaderValueBytes> for http::HeaderValue {
    type Error = http::header::InvalidHeaderValue;
    fn try_from(v: HeaderValueBytes) -> Result<Self, Self::Error> {
        http::HeaderValue::from_bytes(v.0)
    }
}

#[tokio::test(start_paused = true)]
async fn invalidations_are_counted_through_the_metrics_facade() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = api();
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    get(&mut c, "http://api.test/users/1").await;
    get(&mut c, "http://api.test/users/2").await;
    let recorder = Recorder::default();
    let counts = recorder.counts.clone();
    let report = metrics::with_local_recorder(&recorder, || inv.tag("users"));
    assert_eq!(report.entries, 2);
    assert_eq!(
        counts.lock().unwrap().as_slice(),
        [(
            "tower_optimizer.cache.invalidations".to_owned(),
            "strategy=tag".to_owned(),
            2
        )]
    );
    assert_eq!(cache.stats().invalidations(InvalidationKind::Tag), 2);
}

#[tokio::test(start_paused = true)]
async fn soft_variants_of_key_dependency_predicate_and_age() {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = Upstream::new(|req: Req, _| async move {
        if req.headers().contains_key("if-none-match") {
            return Ok::<Res, BoxError>(
                Response::builder()
                    .status(304)
                    .header("cache-control", "max-age=600")
                    .body(Full::default())
                    .unwrap(),
            );
        }
        Ok(Response::builder()
            .header("cache-control", "max-age=600")
            .header("etag", "\"v\"")
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap())
    });
    let mut c = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    for p in ["a", "b", "c", "d"] {
        get(&mut c, &format!("http://api.test/{p}")).await;
    }
    let key = |p: &str| Node::Key(format!("http://api.test/{p}").into());
    inv.depends_on(key("b"), key("a")).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let reports = [
        inv.purge(&[key("a")], Purge::Soft),
        inv.purge_where(|m| m.key.ends_with("/c"), Purge::Soft).await,
        inv.purge_older_than(Duration::ZERO, Purge::Soft).await,
    ];
    assert_eq!(reports[0].entries, 2, "a, and b through its dependency");
    assert_eq!(reports[0].depth, 1);
    assert_eq!(reports[1].entries, 1);
    assert_eq!(reports[2].entries, 1, "only d was not marked yet");
    assert!(reports.iter().all(|r| r.mode == Purge::Soft));
    assert_eq!(cache.stats().entries, 4, "soft purges keep every entry");
    for p in ["a", "b", "c", "d"] {
        let got = get(&mut c, &format!("http://api.test/{p}")).await;
        assert_eq!(
            (got.cache.fwd_status, got.body.as_ref()),
            (Some(304), b"body".as_ref()),
            "{p} revalidated"
        );
    }
    assert_eq!(upstream.calls(), 8);
}

/// Upstream that takes a second to answer a GET (so an invalidation can
/// land while the miss is in flight), tagged `slow`; writes answer 204.
fn slow_api() -> Upstream {
    Upstream::new(|req: Req, n| async move {
        if req.method() != Method::GET {
            return Ok::<Res, BoxError>(Response::builder().status(204).body(Full::default()).unwrap());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Response::builder()
            .header("cache-control", "max-age=600")
            .header("surrogate-key", "slow")
            .body(Full::new(Bytes::from(format!("#{n}"))))
            .unwrap())
    })
}

/// How the invalidation in [`invalidated_mid_flight`] is made.
#[derive(Debug, Clone, Copy)]
enum Way {
    Key,
    Tag,
    Pattern,
    Post,
    Clear,
    Version,
}

/// An invalidation that lands while a miss is in flight: the miss's caller
/// gets its answer (it asked first), but that answer is not stored, and a
/// request made after the invalidation does not share it.
async fn invalidated_mid_flight(way: Way) {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let upstream = slow_api();
    let layer = InvalidationLayer::new(inv.clone()).namespace(|_| Some("items".to_owned()));
    let client = stack(&cache, &layer, &upstream);
    let uri = "http://api.test/items/1";
    let first = tokio::spawn({
        let mut c = client.clone();
        async move { get(&mut c, uri).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = client.clone();
    match way {
        Way::Key => {
            inv.uri(&uri.parse().unwrap());
        }
        Way::Tag => {
            inv.tag("slow");
        }
        Way::Pattern => {
            inv.pattern("items/").await.unwrap();
        }
        Way::Post => assert_eq!(write(&mut c, Method::POST, uri).await.status, 204),
        Way::Clear => {
            cache.clear();
        }
        Way::Version => {
            inv.bump_version("items");
        }
    }
    // The POST is an upstream call of its own.
    let fresh: &[u8] = if matches!(way, Way::Post) { b"#2" } else { b"#1" };
    let after = get(&mut c, uri).await;
    assert_eq!(
        &after.body[..],
        fresh,
        "{way:?}: asked after the invalidation, answered afresh"
    );
    assert!(!after.cache.collapsed, "{way:?}: not the answer fetched before it");
    assert_eq!(
        &first.await.unwrap().body[..],
        b"#0",
        "{way:?}: the first caller gets its answer"
    );
    let later = get(&mut c, uri).await;
    assert!(later.cache.hit, "{way:?}");
    assert_eq!(
        &later.body[..],
        fresh,
        "{way:?}: the answer fetched before the invalidation was not stored"
    );
    assert_eq!(upstream.calls(), fresh[1] as usize - b'0' as usize + 1, "{way:?}");
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_miss_keeps_its_answer_out() {
    for way in [Way::Key, Way::Tag, Way::Pattern, Way::Post, Way::Clear, Way::Version] {
        invalidated_mid_flight(way).await;
    }
}

/// Real threads: readers hammer one key while invalidations land between
/// (and during) their misses. A read that starts after an invalidation
/// returned never gets an answer from an upstream call that started before
/// it, whether from the cache, from a shared flight or from its own call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_racing_misses_on_threads_never_resurrect_old_answers() {
    use std::sync::atomic::AtomicUsize;
    const READERS: usize = 4;
    const PHASES: usize = 300;
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = Upstream::new(move |_, _| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            // Let other tasks run between the call starting and answering.
            tokio::task::yield_now().await;
            Ok::<Res, BoxError>(
                Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("surrogate-key", "hot")
                    .body(Full::new(Bytes::from(n.to_string())))
                    .unwrap(),
            )
        }
    });
    let client = stack(&cache, &InvalidationLayer::new(inv.clone()), &upstream);
    let uri = "http://api.test/hot";
    // The lowest call number an answer may carry once the latest finished
    // invalidation has returned.
    let floor = Arc::new(AtomicUsize::new(0));
    // Lockstep by phases, so that invalidations land among the reads even
    // when the machine is busy: in each phase every reader reads a few
    // times while one invalidation lands, at a varying point.
    let phase = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (mut c, floor) = (client.clone(), floor.clone());
            let (phase, started, finished) = (phase.clone(), started.clone(), finished.clone());
            tokio::spawn(async move {
                for p in 1..=PHASES {
                    while phase.load(Ordering::SeqCst) < p {
                        tokio::task::yield_now().await;
                    }
                    for _ in 0..3 {
                        let at_least = floor.load(Ordering::SeqCst);
                        started.fetch_add(1, Ordering::SeqCst);
                        let got = get(&mut c, uri).await;
                        let n: usize = std::str::from_utf8(&got.body).unwrap().parse().unwrap();
                        assert!(
                            n >= at_least,
                            "call #{n} answered a read made after calls below #{at_least} were invalidated"
                        );
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // A reader that stopped early (its check failed) ends the run.
    let stopped = |readers: &[tokio::task::JoinHandle<()>]| readers.iter().any(tokio::task::JoinHandle::is_finished);
    for p in 1..=PHASES {
        if stopped(&readers) {
            break;
        }
        // Land after the phase's first few reads began (the first of them
        // misses: the last phase invalidated), while they are in flight.
        let target = started.load(Ordering::SeqCst) + 1 + p % 3;
        phase.store(p, Ordering::SeqCst);
        while started.load(Ordering::SeqCst) < target
            && finished.load(Ordering::SeqCst) < READERS * p
            && !stopped(&readers)
        {
            tokio::task::yield_now().await;
        }
        // Calls started so far are older than the invalidation.
        let barrier = calls.load(Ordering::SeqCst);
        match p % 3 {
            0 => {
                inv.uri(&uri.parse().unwrap());
            }
            1 => {
                inv.tag("hot");
            }
            _ => {
                cache.clear();
            }
        }
        floor.fetch_max(barrier, Ordering::SeqCst);
        while finished.load(Ordering::SeqCst) < READERS * p && !stopped(&readers) {
            tokio::task::yield_now().await;
        }
    }
    for r in readers {
        r.await.unwrap();
    }
    assert!(cache.audit().is_clean());
    // Each invalidation sends at least the next read upstream.
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        calls >= PHASES / 2,
        "{PHASES} invalidations sent {calls} reads upstream"
    );
}
