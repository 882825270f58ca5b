//! Unit tests of `Cache-Status`: rendering, reading back and the memos.
use super::*;

#[test]
fn renders_rfc_9211_members() {
    assert_eq!(CacheStatus::hit(42).to_string(), "tower-optimizer; hit; ttl=42");
    let miss = CacheStatus {
        stored: true,
        fwd_status: Some(200),
        ttl: Some(60),
        ..CacheStatus::forward(Forward::UriMiss)
    };
    assert_eq!(
        miss.to_string(),
        "tower-optimizer; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    assert_eq!(miss.outcome(), Outcome::Miss);
    let swr = CacheStatus {
        detail: Some("stale-while-revalidate"),
        ..CacheStatus::hit(-3)
    };
    assert_eq!(
        swr.to_string(),
        "tower-optimizer; hit; ttl=-3; detail=stale-while-revalidate"
    );
    assert_eq!(swr.outcome(), Outcome::StaleHit);
    let reval = CacheStatus {
        fwd_status: Some(304),
        ttl: Some(60),
        ..CacheStatus::forward(Forward::Stale)
    };
    assert_eq!(reval.outcome(), Outcome::Revalidated);
    let unsolicited = CacheStatus {
        fwd_status: Some(304),
        detail: Some("status"),
        ..CacheStatus::forward(Forward::UriMiss)
    };
    assert_eq!(
        unsolicited.outcome(),
        Outcome::Miss,
        "no stored response was revalidated"
    );
    let passed_on = CacheStatus {
        fwd_status: Some(304),
        ..CacheStatus::forward(Forward::Stale)
    };
    assert_eq!(passed_on.outcome(), Outcome::Miss, "a HEAD's 304 passed on as it came");
    assert_eq!(CacheStatus::forward(Forward::Method).outcome(), Outcome::Bypass);
    assert_eq!(CacheStatus::hit(1).to_header_value(), "tower-optimizer; hit; ttl=1");
    assert_eq!(
        CacheStatus::hit(-1234).to_header_value(),
        "tower-optimizer; hit; ttl=-1234"
    );
    assert_eq!(
        CacheStatus::hit(i64::MIN).to_header_value(),
        format!("tower-optimizer; hit; ttl={}", i64::MIN)
    );
    assert_eq!(CacheStatus::hit(0).to_header_value(), "tower-optimizer; hit; ttl=0");
    // Other statuses come from their own memo: the same status twice,
    // and statuses that differ in any member, each render as their own.
    for _ in 0..2 {
        assert_eq!(miss.to_header_value(), miss.to_string());
        assert_eq!(swr.to_header_value(), swr.to_string());
        assert_eq!(reval.to_header_value(), reval.to_string());
    }
    let other_detail = CacheStatus {
        detail: Some("max-stale"),
        ..swr
    };
    assert_eq!(other_detail.to_header_value(), other_detail.to_string());
    let collapsed = CacheStatus {
        collapsed: true,
        ..miss
    };
    assert_eq!(collapsed.to_header_value(), collapsed.to_string());
}

#[test]
fn details_cover_every_token_written() {
    use crate::cache::policy::{Bypass, NotStorable};
    // A variant added to either enum fails to compile here until it is
    // listed, and then fails the test until `DETAILS` has its token.
    let bypass = |b: Bypass| match b {
        Bypass::Method
        | Bypass::Authorization
        | Bypass::Excluded
        | Bypass::Conditional
        | Bypass::NoKey
        | Bypass::RequestMode => b.as_str(),
    };
    let not_storable = |n: NotStorable| match n {
        NotStorable::NoStore
        | NotStorable::Private
        | NotStorable::Authorization
        | NotStorable::SetCookie
        | NotStorable::Status
        | NotStorable::NoFreshness
        | NotStorable::VaryStar
        | NotStorable::TooLarge
        | NotStorable::Body
        | NotStorable::Predicate
        | NotStorable::Head
        | NotStorable::Invalidated => n.as_str(),
    };
    let written = [
        Bypass::Method,
        Bypass::Authorization,
        Bypass::Excluded,
        Bypass::Conditional,
        Bypass::NoKey,
        Bypass::RequestMode,
    ]
    .map(bypass)
    .into_iter()
    .chain(
        [
            NotStorable::NoStore,
            NotStorable::Private,
            NotStorable::Authorization,
            NotStorable::SetCookie,
            NotStorable::Status,
            NotStorable::NoFreshness,
            NotStorable::VaryStar,
            NotStorable::TooLarge,
            NotStorable::Body,
            NotStorable::Predicate,
            NotStorable::Head,
            NotStorable::Invalidated,
        ]
        .map(not_storable),
    );
    for token in written {
        assert!(DETAILS.contains(&token), "{token} is missing from DETAILS");
    }
}

#[test]
fn every_status_reads_back_from_its_header() {
    let fwds = [
        None,
        Some(Forward::Bypass),
        Some(Forward::Method),
        Some(Forward::UriMiss),
        Some(Forward::VaryMiss),
        Some(Forward::Stale),
        Some(Forward::Request),
    ];
    let details = std::iter::once(None).chain(DETAILS.iter().copied().map(Some));
    for (i, detail) in details.enumerate() {
        for (j, fwd) in fwds.into_iter().enumerate() {
            let status = CacheStatus {
                hit: fwd.is_none(),
                fwd,
                fwd_status: (j % 2 == 0).then_some(200 + i as u16),
                ttl: (i % 3 != 0).then_some(i as i64 - 12),
                stored: i % 2 == 0,
                collapsed: j % 3 == 0,
                detail,
            };
            let mut headers = HeaderMap::new();
            headers.append(CACHE_STATUS, status.to_header_value());
            assert_eq!(CacheStatus::from_headers(&headers), Some(status), "{status}");
        }
    }
}

#[test]
fn reading_takes_our_last_member_and_survives_foreign_or_broken_ones() {
    let read = |lines: &[&[u8]]| {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_STATUS, HeaderValue::from_bytes(line).unwrap());
        }
        CacheStatus::from_headers(&headers)
    };
    assert_eq!(read(&[]), None);
    assert_eq!(read(&[b"OtherCache; hit"]), None);
    // Several members on one line, and over several lines: our last one.
    let hit = read(&[
        b"tower-optimizer; fwd=uri-miss, OtherCache; hit",
        b"tower-optimizer; hit; ttl=7",
    ]);
    assert_eq!(hit, Some(CacheStatus::hit(7)));
    let miss = read(&[b"tower-optimizer; hit; ttl=7, tower-optimizer; fwd=stale; fwd-status=503"]);
    assert_eq!(
        miss.map(|s| (s.fwd, s.fwd_status)),
        Some((Some(Forward::Stale), Some(503)))
    );
    // Unknown parameters are skipped; a malformed known one fails the
    // member; bytes that are not text are skipped, never a panic.
    assert_eq!(
        read(&[b"tower-optimizer; hit; ttl=3; key=\"x\""]),
        Some(CacheStatus::hit(3))
    );
    assert_eq!(read(&[b"tower-optimizer; hit; ttl=many"]), None);
    assert_eq!(read(&[b"tower-optimizer; fwd=sideways"]), None);
    assert_eq!(
        read(&[b"tower-optimizer; hit; ttl=1", b"\xff\xfe"]),
        Some(CacheStatus::hit(1))
    );
    let unknown_detail = read(&[b"tower-optimizer; hit; ttl=1; detail=made-up"]).unwrap();
    assert_eq!(unknown_detail.detail, None);
}
