//! Unit tests of the stored entry: instants and freshness packed, `Age`
//! text, header compaction and what the rare part costs.

use super::*;
use http::HeaderName;

#[test]
fn instants_kept_as_offsets_read_back_exactly() {
    let base = Instant::now() + Duration::from_secs(1_000_000);
    for d in [
        Duration::ZERO,
        Duration::new(3, 7),
        Duration::from_secs(86_400 * 365 * 100),
    ] {
        assert_eq!(at_offset(base, offset_of(base, base + d)), base + d, "{d:?} after");
        assert_eq!(at_offset(base, offset_of(base, base - d)), base - d, "{d:?} before");
    }
    // Beyond 292 years the offset saturates: still far in the future.
    let far = base + Duration::from_secs(86_400 * 365 * 300);
    assert_eq!(offset_of(base, far), i64::MAX);
    assert!(at_offset(base, i64::MAX) > base + Duration::from_secs(86_400 * 365 * 290));
}

#[test]
fn a_response_born_before_the_epoch_keeps_its_age_at_every_instant() {
    // Another runtime's clock, ahead of this one, may have set the epoch:
    // this runtime's instants, its `now` included, then precede it.
    let e = epoch();
    let arrived = e.checked_sub(Duration::from_secs(5)).expect("the clock has run 5 s");
    let stored = Freshness {
        response_time: arrived,
        initial_age: Duration::from_secs(10),
        lifetime: Duration::from_secs(60),
        no_cache: false,
        must_revalidate: false,
        immutable: false,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: None,
    };
    let read = Packed::new(&stored).get(Flags::new(Version::HTTP_11, false, &stored), NO_WINDOWS);
    for now in [arrived, arrived + Duration::from_secs(1), e, e + Duration::from_secs(1)] {
        assert_eq!(read.age(now), stored.age(now), "{:?} after arrival", now - arrived);
        assert_eq!(read.ttl_secs(now), stored.ttl_secs(now));
    }
    assert_eq!(
        read.ttl_secs(arrived),
        50,
        "60 s of lifetime, 10 s of it gone on arrival"
    );
}

#[test]
fn packed_freshness_reads_back_what_was_stored() {
    let now = Instant::now();
    let base = Freshness {
        response_time: now,
        initial_age: Duration::new(3, 123_456_789),
        lifetime: Duration::from_secs(3600),
        no_cache: false,
        must_revalidate: true,
        immutable: false,
        stale_while_revalidate: Duration::from_secs(30),
        stale_if_error: None,
    };
    let read = |f: &Freshness| Packed::new(f).get(Flags::new(Version::HTTP_11, false, f), Windows::new(f));
    // The same age at every instant, to the nanosecond, and the rest as
    // it was: that is all the freshness rules read.
    let same = |a: &Freshness, b: &Freshness| {
        for later in [Duration::ZERO, Duration::new(1, 1), Duration::from_secs(86_400)] {
            assert_eq!(a.age(now + later), b.age(now + later));
        }
        assert_eq!(
            (Freshness {
                response_time: now,
                initial_age: Duration::ZERO,
                ..*a
            }),
            Freshness {
                response_time: now,
                initial_age: Duration::ZERO,
                ..*b
            }
        );
    };
    same(&read(&base), &base);
    // Older than the process: the age still reads back exactly.
    let ancient = Freshness {
        initial_age: Duration::from_secs(100 * 365 * 86_400),
        ..base
    };
    same(&read(&ancient), &ancient);
    // An absurd age saturates rather than overflow.
    let absurd = read(&Freshness {
        initial_age: Duration::MAX,
        ..base
    });
    assert!(absurd.age(now) > Duration::from_secs(200 * 365 * 86_400));
    let windows = Freshness {
        no_cache: true,
        immutable: true,
        stale_if_error: Some(Duration::ZERO),
        ..base
    };
    same(&read(&windows), &windows);
    assert_eq!(
        read(&windows).stale_if_error,
        Some(Duration::ZERO),
        "a zero window is still a window"
    );
    // Beyond 584 years a duration saturates, and stays what it was:
    // present, and longer than any other.
    let forever = Duration::from_secs(u64::MAX);
    let huge = read(&Freshness {
        lifetime: forever,
        stale_if_error: Some(forever),
        ..base
    });
    assert!(huge.lifetime > Duration::from_secs(500 * 365 * 86_400));
    assert!(
        huge.stale_if_error
            .is_some_and(|d| d > Duration::from_secs(500 * 365 * 86_400))
    );
}

#[test]
fn age_values_are_the_decimal_text_of_every_age() {
    for secs in (0..1100).chain([9_999, 86_400, u64::MAX]) {
        assert_eq!(age_value(secs), secs.to_string().as_str(), "{secs}");
    }
}

#[test]
fn compaction_drops_hop_by_hop_and_fixes_length() {
    let mut h = HeaderMap::new();
    h.insert("connection", "x-hop, keep-alive".parse().unwrap());
    h.insert("x-hop", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("transfer-encoding", "chunked".parse().unwrap());
    h.insert("content-length", "999".parse().unwrap());
    h.insert("age", "3".parse().unwrap());
    h.append("x-multi", "a".parse().unwrap());
    h.append("x-multi", "b".parse().unwrap());
    h.insert("content-type", "text/plain".parse().unwrap());
    let mut secret = HeaderValue::from_static("token");
    secret.set_sensitive(true);
    h.insert("x-secret", secret);
    let (out, body) = compact(&h, EntryBody::Shared(Bytes::from_static(b"hello")));
    // Shared and copied values read back the same; sensitivity is kept.
    assert_eq!(out.get("content-type").unwrap(), "text/plain");
    assert!(out.get("x-secret").unwrap().is_sensitive());
    assert!(!out.get("content-type").unwrap().is_sensitive());
    assert_eq!(out.get("content-length").unwrap(), "5");
    assert_eq!(body, "hello");
    // Copied chunks share one buffer with the values, and the length is
    // what was copied.
    let chunks = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")];
    let (copied, body) = compact(&h, EntryBody::Chunks(chunks));
    assert_eq!(body, "abcde");
    assert_eq!(copied.get("content-length").unwrap(), "5");
    assert_eq!(copied.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
    for gone in ["connection", "x-hop", "keep-alive", "transfer-encoding", "age"] {
        assert!(!out.contains_key(gone), "{gone} kept");
    }
    let multi: Vec<_> = out.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
}

/// A plain response that arrived at `now`, fresh for a minute.
/// An entry of one byte, no `Vary` key and no labels, stored at `now`.
fn plain(parts: &response::Parts, freshness: Freshness, now: Instant) -> Entry {
    let body = EntryBody::Shared(Bytes::from_static(b"x"));
    Entry::new("k", Secondary::NONE, parts, body, freshness, Labels::default(), now)
}

fn fresh_for_a_minute(now: Instant) -> Freshness {
    Freshness {
        response_time: now,
        initial_age: Duration::ZERO,
        lifetime: Duration::from_secs(60),
        no_cache: false,
        must_revalidate: false,
        immutable: false,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: None,
    }
}

#[test]
fn only_entries_with_a_rare_part_pay_for_it() {
    // After the epoch: an instant before it reads back as the epoch.
    let now = epoch() + Duration::from_secs(1);
    let (parts, ()) = Response::builder().body(()).unwrap().into_parts();
    let plain = fresh_for_a_minute(now);
    let make = |secondary: Secondary, freshness: Freshness, tags: &[&str]| {
        let labels = Labels {
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            versions: Box::default(),
        };
        let body = EntryBody::Shared(Bytes::from_static(b"x"));
        Entry::new("k", secondary, &parts, body, freshness, labels, now)
    };
    // What the freshness rules read (the instants are kept as one offset).
    let read = |f: Freshness| (f.age(now), f.lifetime, f.stale_while_revalidate, f.stale_if_error);
    let common = make(Secondary::NONE, plain, &[]);
    assert!(common.rare.is_none(), "a plain entry carries no rare part");
    // `ENTRY_OVERHEAD` counts this box at 56 bytes.
    assert!(size_of::<Rare>() <= 56);
    assert!(common.secondary().is_empty() && common.tags().is_empty());
    assert_eq!(read(common.freshness()), read(plain));
    // Each rare field alone makes one, and reads back from it.
    let vary = Secondary::new(vec![(http::header::ACCEPT, Some(HeaderValue::from_static("a/b")))]);
    let varied = make(vary.clone(), plain, &[]);
    assert!(varied.rare.is_some());
    assert_eq!(*varied.secondary(), vary);
    let tagged = make(Secondary::NONE, plain, &["t"]);
    assert_eq!(tagged.tags(), [Arc::<str>::from("t")]);
    for windows in [
        Freshness {
            stale_while_revalidate: Duration::from_millis(1500),
            ..plain
        },
        Freshness {
            stale_if_error: Some(Duration::ZERO),
            ..plain
        },
    ] {
        let entry = make(Secondary::NONE, windows, &[]);
        assert!(entry.rare.is_some());
        assert_eq!(read(entry.freshness()), read(windows));
    }
}

#[test]
fn a_hit_sets_age_and_cache_status_in_the_placeholder_lines() {
    let now = epoch() + Duration::from_secs(1);
    let freshness = fresh_for_a_minute(now);
    let make = |response: http::response::Builder| {
        let (parts, ()) = response.body(()).unwrap().into_parts();
        let body = EntryBody::Shared(Bytes::from_static(b"x"));
        Entry::new("k", Secondary::NONE, &parts, body, freshness, Labels::default(), now)
    };
    let ours = HeaderValue::from_static("tower-optimizer; hit; ttl=7");
    let lines = |headers: &HeaderMap, name| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    // Multi-valued lines before the placeholders, and an upstream `Age`.
    let plain = make(
        Response::builder()
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("age", "99")
            .header("content-type", "text/plain"),
    );
    assert!(plain.own_status_line());
    let served = plain.to_response(Duration::from_secs(12), false, ours.clone());
    assert_eq!(lines(served.headers(), AGE), ["12"]);
    assert_eq!(lines(served.headers(), CACHE_STATUS), ["tower-optimizer; hit; ttl=7"]);
    assert_eq!(lines(served.headers(), HeaderName::from_static("x-multi")), ["a", "b"]);
    assert_eq!(served.headers().len(), plain.headers.len());
    // An upstream cache's member stays first; ours follows it (RFC 9211 §2).
    let behind = make(Response::builder().header("cache-status", "upstream; hit"));
    assert!(!behind.own_status_line());
    let served = behind.to_response(Duration::from_secs(3), true, ours);
    assert_eq!(lines(served.headers(), AGE), ["3"]);
    assert_eq!(
        lines(served.headers(), CACHE_STATUS),
        ["upstream; hit", "tower-optimizer; hit; ttl=7"]
    );
    assert!(served.body().is_empty(), "HEAD: headers only");
    // A map without the placeholders at its end has none to set.
    let mut other = HeaderMap::new();
    other.insert(AGE, HeaderValue::from_static("1"));
    other.insert(CACHE_STATUS, HeaderValue::from_static("x"));
    other.insert(http::header::ETAG, HeaderValue::from_static("\"e\""));
    assert!(placeholder_slots(&mut other, true).is_none());
    assert!(placeholder_slots(&mut other, false).is_none());
    assert!(placeholder_slots(&mut HeaderMap::new(), false).is_none());
}

#[test]
fn freshness_dated_now_reads_as_the_stored_freshness_does() {
    let now = epoch() + Duration::from_secs(1);
    let (parts, ()) = Response::builder().body(()).unwrap().into_parts();
    let stored = Freshness {
        initial_age: Duration::new(7, 5),
        stale_while_revalidate: Duration::from_secs(30),
        stale_if_error: Some(Duration::from_secs(90)),
        must_revalidate: true,
        ..fresh_for_a_minute(now)
    };
    let entry = plain(&parts, stored, now);
    let rules = |f: &Freshness, at: Instant| {
        (
            f.age(at),
            f.ttl_secs(at),
            f.lifetime,
            f.no_cache,
            f.must_revalidate,
            f.stale_while_revalidate,
            f.stale_if_error,
        )
    };
    for later in [
        Duration::ZERO,
        Duration::new(0, 1),
        Duration::from_secs(61),
        Duration::from_secs(86_400),
    ] {
        let at = now + later;
        let dated = entry.freshness_at(Stamp::of(at), at);
        assert_eq!(rules(&dated, at), rules(&entry.freshness(), at), "{later:?} on");
        // And it keeps ageing as the stored one does.
        let after = at + Duration::from_secs(3);
        assert_eq!(dated.age(after), entry.freshness().age(after));
    }
    // Soft-purged: stale at once, both ways.
    entry.purge();
    let dated = entry.freshness_at(Stamp::of(now), now);
    assert_eq!(rules(&dated, now), rules(&entry.freshness(), now));
    assert!(!dated.is_fresh(now));
    // Expiry compares as the instants do.
    assert!(!entry.expired_by(Stamp::of(now - Duration::from_nanos(1)), Keep::NONE));
    assert!(entry.expired_by(Stamp::of(entry.expires_at(Keep::NONE)), Keep::NONE));
}

#[test]
fn expiry_is_the_end_of_usable_life_plus_the_caches_retention() {
    let now = epoch() + Duration::from_secs(1);
    let (parts, ()) = Response::builder().body(()).unwrap().into_parts();
    let keeps = [
        Keep::NONE,
        Keep::new(Duration::from_millis(1500), None),
        Keep::new(Duration::ZERO, Some(Duration::from_secs(40))),
        Keep::new(Duration::from_secs(7), Some(Duration::from_secs(400))),
        // Forever, for all practical purposes; no overflow.
        Keep::new(Duration::MAX, Some(Duration::MAX)),
    ];
    let shapes = [
        fresh_for_a_minute(now),
        Freshness {
            initial_age: Duration::new(7, 5),
            stale_while_revalidate: Duration::from_secs(30),
            ..fresh_for_a_minute(now)
        },
        Freshness {
            stale_if_error: Some(Duration::from_secs(90)),
            ..fresh_for_a_minute(now)
        },
        Freshness {
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Some(Duration::from_secs(90)),
            must_revalidate: true,
            ..fresh_for_a_minute(now)
        },
        Freshness {
            lifetime: Duration::MAX,
            ..fresh_for_a_minute(now)
        },
    ];
    for freshness in shapes {
        let entry = plain(&parts, freshness, now);
        for (keep, (retention, default_window)) in keeps.into_iter().zip([
            (Duration::ZERO, None),
            (Duration::from_millis(1500), None),
            (Duration::ZERO, Some(Duration::from_secs(40))),
            (Duration::from_secs(7), Some(Duration::from_secs(400))),
            (Duration::MAX, Some(Duration::MAX)),
        ]) {
            let expires = entry.expires_at(keep);
            // What the freshness rules say, where `Instant` can hold it.
            if retention < Duration::from_secs(1 << 40) && freshness.lifetime < Duration::from_secs(1 << 40) {
                let usable = freshness.usable_until(default_window);
                assert_eq!(expires, usable + retention, "{freshness:?} kept {keep:?}");
            } else {
                assert!(expires > now + Duration::from_secs(60 * 365 * 86_400));
            }
            assert!(!entry.expired_by(Stamp::of(expires - Duration::from_nanos(1)), keep));
            assert!(entry.expired_by(Stamp::of(expires), keep));
        }
    }
}

#[test]
fn stamps_tick_once_a_second_on_either_side_of_the_epoch() {
    let e = epoch();
    let second = |s: i64| Stamp(s * 1_000_000_000);
    assert_eq!(second(0).tick(), Stamp(999_999_999).tick());
    assert_ne!(second(0).tick(), second(1).tick());
    // Before the epoch (a runtime on paused time may run behind it) the
    // ticks still change each second rather than sticking at zero.
    assert_ne!(second(-1).tick(), second(0).tick());
    assert_ne!(second(-2).tick(), second(-1).tick());
    assert_eq!(Stamp(-1).tick(), second(-1).tick());
    assert_eq!(Stamp::of(e), Stamp(0));
}

#[test]
fn version_flags_and_state_share_a_word_and_read_back() {
    // The small fields fit the word beside the status and size.
    assert_eq!(size_of::<Entry>(), 168, "the entry grew");
    let now = epoch() + Duration::from_secs(1);
    for version in Flags::VERSIONS {
        for (no_cache, must_revalidate, upstream_status) in [
            (false, false, false),
            (true, false, true),
            (false, true, false),
            (true, true, true),
        ] {
            let mut response = Response::builder().version(version).status(299);
            if upstream_status {
                response = response.header(CACHE_STATUS, "upstream; hit");
            }
            let (parts, ()) = response.body(()).unwrap().into_parts();
            let freshness = Freshness {
                no_cache,
                must_revalidate,
                ..fresh_for_a_minute(now)
            };
            let entry = plain(&parts, freshness, now);
            assert_eq!(entry.version(), version);
            assert_eq!(entry.status.as_u16(), 299);
            assert_eq!(entry.own_status_line(), !upstream_status);
            let read = entry.freshness();
            assert_eq!((read.no_cache, read.must_revalidate), (no_cache, must_revalidate));
            let answer = entry.to_response(Duration::ZERO, false, HeaderValue::from_static("ours"));
            assert_eq!(answer.version(), version);
        }
    }
}

#[test]
fn touches_move_once_a_tick_and_never_undo_a_purge() {
    let now = epoch() + Duration::from_secs(1);
    let (parts, ()) = Response::builder().body(()).unwrap().into_parts();
    let entry = plain(&parts, fresh_for_a_minute(now), now);
    // The first hit moves it, whatever the tick; the next of the same tick
    // does not; a later tick does.
    for first in [0, 7, 64, u32::MAX] {
        let fresh = plain(&parts, fresh_for_a_minute(now), now);
        assert!(fresh.touch(first), "first hit at tick {first}");
        assert!(!fresh.touch(first));
        assert!(fresh.touch(first.wrapping_add(1)));
    }
    assert!(entry.touch(5));
    assert!(!entry.is_purged());
    assert!(entry.purge(), "newly purged");
    assert!(!entry.purge(), "already purged");
    // Touches keep the mark, and still move once a tick.
    assert!(!entry.touch(5));
    assert!(entry.touch(6));
    assert!(!entry.touch(6));
    assert!(entry.is_purged());
    assert!(!entry.freshness().is_fresh(now), "a purged entry reads stale");
}
