//! Unit tests of freshness (RFC 9111 §4.2): lifetimes, ages and what a request accepts.
use super::*;
use http::HeaderValue;

const NO_EXTRA: Lifetimes = Lifetimes {
    heuristic_percent: None,
    heuristic_max: Duration::from_secs(86_400),
    default_ttl: None,
    max_ttl: None,
};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn wall(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(wall(secs))
}

fn life(pairs: &[(&'static str, &str)], mode: CacheMode, config: &Lifetimes) -> Option<u64> {
    let h = headers(pairs);
    let cc = CacheControl::from_headers(&h);
    lifetime(StatusCode::OK, &cc, &h, mode, wall(1_000_000), config).map(|d| d.as_secs())
}

#[test]
fn lifetime_table() {
    let d = date(1_000_000);
    let e = date(1_000_100);
    let lm = date(0);
    let heur = Lifetimes {
        heuristic_percent: Some(10),
        ..NO_EXTRA
    };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(Vec<(&'static str, &str)>, CacheMode, &Lifetimes, Option<u64>)> = vec![
        (
            vec![("cache-control", "max-age=60")],
            CacheMode::Private,
            &NO_EXTRA,
            Some(60),
        ),
        (
            vec![("cache-control", "max-age=60, s-maxage=5")],
            CacheMode::Private,
            &NO_EXTRA,
            Some(60),
        ),
        (
            vec![("cache-control", "max-age=60, s-maxage=5")],
            CacheMode::Shared,
            &NO_EXTRA,
            Some(5),
        ),
        (
            vec![("date", &d), ("expires", &e)],
            CacheMode::Private,
            &NO_EXTRA,
            Some(100),
        ),
        (vec![("expires", &e)], CacheMode::Private, &NO_EXTRA, Some(100)),
        (
            vec![("date", &d), ("expires", "0")],
            CacheMode::Private,
            &NO_EXTRA,
            Some(0),
        ),
        (
            vec![("date", &d), ("expires", &e), ("expires", &e)],
            CacheMode::Private,
            &NO_EXTRA,
            Some(0),
        ),
        (
            vec![("date", &e), ("expires", &d)],
            CacheMode::Private,
            &NO_EXTRA,
            Some(0),
        ),
        (
            vec![("cache-control", "max-age=7"), ("expires", &e)],
            CacheMode::Private,
            &NO_EXTRA,
            Some(7),
        ),
        (
            vec![("cache-control", "max-age=oops"), ("expires", &e)],
            CacheMode::Private,
            &NO_EXTRA,
            Some(0),
        ),
        (vec![], CacheMode::Private, &NO_EXTRA, None),
        (
            vec![("last-modified", &lm), ("date", &d)],
            CacheMode::Private,
            &NO_EXTRA,
            None,
        ),
        (
            vec![("last-modified", &lm), ("date", &d)],
            CacheMode::Private,
            &heur,
            Some(86_400),
        ),
        (vec![("last-modified", "garbage")], CacheMode::Private, &heur, None),
    ];
    for (i, (pairs, mode, config, want)) in cases.iter().enumerate() {
        assert_eq!(life(pairs, *mode, config), *want, "case {i}");
    }
    let small = Lifetimes {
        heuristic_percent: Some(10),
        ..NO_EXTRA
    };
    let lm_recent = date(999_000);
    assert_eq!(
        life(
            &[("last-modified", &lm_recent), ("date", &d)],
            CacheMode::Private,
            &small
        ),
        Some(100)
    );
    let dflt = Lifetimes {
        default_ttl: Some(Duration::from_secs(30)),
        max_ttl: Some(Duration::from_secs(20)),
        ..NO_EXTRA
    };
    assert_eq!(life(&[], CacheMode::Private, &dflt), Some(20));
    assert_eq!(
        life(&[("cache-control", "max-age=3600")], CacheMode::Private, &dflt),
        Some(20)
    );
}

#[test]
fn default_ttl_only_for_heuristically_cacheable_statuses() {
    let config = Lifetimes {
        default_ttl: Some(Duration::from_secs(30)),
        ..NO_EXTRA
    };
    let h = HeaderMap::new();
    let cc = CacheControl::default();
    let got = lifetime(
        StatusCode::INTERNAL_SERVER_ERROR,
        &cc,
        &h,
        CacheMode::Private,
        wall(0),
        &config,
    );
    assert_eq!(got, None);
    let got = lifetime(StatusCode::NOT_FOUND, &cc, &h, CacheMode::Private, wall(0), &config);
    assert_eq!(got, Some(Duration::from_secs(30)));
    // `public` makes any status heuristically cacheable (RFC 9111 §5.2.2.9).
    let public = CacheControl::from_headers(&headers(&[("cache-control", "public")]));
    let found = lifetime(StatusCode::FOUND, &public, &h, CacheMode::Private, wall(0), &config);
    assert_eq!(found, Some(Duration::from_secs(30)));
    assert_eq!(
        lifetime(StatusCode::FOUND, &cc, &h, CacheMode::Private, wall(0), &config),
        None
    );
    // But for a server error: an outage's answer is not kept by default.
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    assert_eq!(
        lifetime(unavailable, &public, &h, CacheMode::Private, wall(0), &config),
        None
    );
}

#[test]
fn age_table() {
    let response_wall = wall(1_000_000);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(Vec<(&'static str, String)>, u64, u64)> = vec![
        (vec![], 0, 0),
        (vec![], 2, 2),
        (vec![("date", date(999_990))], 0, 10),
        (vec![("date", date(999_990)), ("age", "30".into())], 1, 31),
        (vec![("date", date(1_000_050))], 0, 0),
        (vec![("age", "junk".into())], 0, 0),
        (vec![("age", "99999999999999999999".into())], 0, 1 << 31),
    ];
    for (i, (pairs, delay, want)) in cases.iter().enumerate() {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_str(v).unwrap());
        }
        let got = initial_age(&map, response_wall, Duration::from_secs(*delay));
        assert_eq!(got.as_secs(), *want, "case {i}");
    }
}

fn fresh(lifetime: u64) -> Freshness {
    Freshness {
        response_time: Instant::now(),
        initial_age: Duration::ZERO,
        lifetime: Duration::from_secs(lifetime),
        no_cache: false,
        must_revalidate: false,
        immutable: false,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: None,
    }
}

fn req(line: &'static str) -> CacheControl {
    CacheControl::from_headers(&headers(&[("cache-control", line)]))
}

#[tokio::test(start_paused = true)]
async fn usability_table() {
    let f = fresh(60);
    let t0 = f.response_time;
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(usability(&f, &CacheControl::default(), at(10)), Usability::Fresh);
    assert_eq!(f.ttl_secs(at(10)), 50);
    assert_eq!(usability(&f, &req("no-cache"), at(10)), Usability::Validate);
    assert_eq!(usability(&f, &req("max-age=0"), at(0)), Usability::Validate);
    assert_eq!(usability(&f, &req("max-age=5"), at(10)), Usability::Validate);
    assert_eq!(usability(&f, &req("max-age=20"), at(10)), Usability::Fresh);
    assert_eq!(usability(&f, &req("min-fresh=55"), at(10)), Usability::Validate);
    assert_eq!(usability(&f, &CacheControl::default(), at(60)), Usability::Validate);
    assert_eq!(f.ttl_secs(at(70)), -10);
    assert_eq!(usability(&f, &req("max-stale=10"), at(70)), Usability::StaleAccepted);
    assert_eq!(usability(&f, &req("max-stale=9"), at(70)), Usability::Validate);
    assert_eq!(usability(&f, &req("max-stale"), at(10_000)), Usability::StaleAccepted);
    let swr = Freshness {
        stale_while_revalidate: Duration::from_secs(30),
        ..f
    };
    assert_eq!(
        usability(&swr, &CacheControl::default(), at(80)),
        Usability::StaleWhileRevalidate
    );
    assert_eq!(usability(&swr, &CacheControl::default(), at(91)), Usability::Validate);
    let must = Freshness {
        must_revalidate: true,
        ..swr
    };
    assert_eq!(usability(&must, &req("max-stale"), at(70)), Usability::Validate);
    let no_cache = Freshness { no_cache: true, ..f };
    assert_eq!(
        usability(&no_cache, &CacheControl::default(), at(1)),
        Usability::Validate
    );
    // RFC 8246: a reload does not revalidate a fresh immutable response;
    // a forced reload (`no-cache`) does, and so does staleness.
    let immutable = Freshness { immutable: true, ..f };
    assert_eq!(usability(&immutable, &req("max-age=0"), at(0)), Usability::Fresh);
    assert_eq!(usability(&immutable, &req("max-age=5"), at(10)), Usability::Fresh);
    assert_eq!(usability(&immutable, &req("no-cache"), at(10)), Usability::Validate);
    assert_eq!(usability(&immutable, &req("max-age=0"), at(60)), Usability::Validate);
    assert_eq!(usability(&immutable, &req("min-fresh=55"), at(10)), Usability::Validate);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_windows() {
    let f = Freshness {
        stale_if_error: Some(Duration::from_secs(100)),
        ..fresh(60)
    };
    let t0 = f.response_time;
    assert!(f.may_serve_on_error(t0 + Duration::from_secs(150), None));
    assert!(!f.may_serve_on_error(t0 + Duration::from_secs(161), None));
    let plain = fresh(60);
    assert!(plain.may_serve_on_error(t0 + Duration::from_secs(30), None));
    assert!(!plain.may_serve_on_error(t0 + Duration::from_secs(61), None));
    assert!(plain.may_serve_on_error(t0 + Duration::from_secs(61), Some(Duration::from_secs(5))));
    let must = Freshness {
        must_revalidate: true,
        ..f
    };
    assert!(!must.may_serve_on_error(t0 + Duration::from_secs(61), Some(Duration::from_secs(5))));
}
