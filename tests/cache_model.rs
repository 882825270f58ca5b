//! The cache layer against a model of RFC 9111 for one URI, on paused
//! time: random request directives, clock steps and origin changes, and an
//! origin whose answers carry random freshness (`max-age`, `Age`,
//! `no-cache`, `must-revalidate`, `no-store`), validators and statuses.
//!
//! The model keeps what a cache must have stored after each exchange
//! (§3, §4.3.4 freshening, a not-storable answer outdating the stored one)
//! and decides each request by §4.2 and §5.2.1: a hit of which version at
//! which `Age`, a trip upstream with or without `If-None-Match`, or a 504
//! for `only-if-cached`. The cache must do exactly that, neither more
//! conservative nor less.
#![cfg(feature = "cache")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::IF_NONE_MATCH;
use http_body_util::Full;
use proptest::prelude::*;
use support::*;
use tower_optimizer::cache::Cache;

/// What the origin puts on one answer.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // one flag per directive the origin may send
struct Shape {
    status: u16,
    max_age: Option<u64>,
    age: u64,
    etag: bool,
    no_cache: bool,
    no_store: bool,
    must_revalidate: bool,
}

impl Shape {
    /// The `Cache-Control` line, if any directive is set.
    fn cache_control(&self) -> Option<String> {
        let mut directives = Vec::new();
        if let Some(max_age) = self.max_age {
            directives.push(format!("max-age={max_age}"));
        }
        for (set, name) in [
            (self.no_cache, "no-cache"),
            (self.no_store, "no-store"),
            (self.must_revalidate, "must-revalidate"),
        ] {
            if set {
                directives.push(name.to_owned());
            }
        }
        (!directives.is_empty()).then(|| directives.join(", "))
    }
}

/// A request's own directive (§5.2.1).
#[derive(Debug, Clone, Copy)]
enum Directive {
    None,
    NoCache,
    MaxAge(u64),
    MinFresh(u64),
    MaxStale(Option<u64>),
    OnlyIfCached,
}

impl Directive {
    fn header(self) -> Option<String> {
        match self {
            Directive::None => None,
            Directive::NoCache => Some("no-cache".into()),
            Directive::MaxAge(s) => Some(format!("max-age={s}")),
            Directive::MinFresh(s) => Some(format!("min-fresh={s}")),
            Directive::MaxStale(None) => Some("max-stale".into()),
            Directive::MaxStale(Some(s)) => Some(format!("max-stale={s}")),
            Directive::OnlyIfCached => Some("only-if-cached".into()),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Get(Directive),
    /// The origin's resource changes: validators no longer match.
    Change,
}

/// The origin: its resource's version, its answers' shapes (by call
/// number, cycling) and the `If-None-Match` of the last request it saw.
struct Origin {
    version: u32,
    shapes: Vec<Shape>,
    calls: usize,
    if_none_match: Option<String>,
}

fn etag(version: u32) -> String {
    format!("\"v{version}\"")
}

fn answer(origin: &mut Origin, if_none_match: Option<String>) -> Res {
    let shape = origin.shapes[origin.calls % origin.shapes.len()].clone();
    origin.calls += 1;
    let current = etag(origin.version);
    let not_modified = shape.etag && if_none_match.as_deref() == Some(current.as_str());
    origin.if_none_match = if_none_match;
    let mut builder = Response::builder()
        .status(if not_modified { 304 } else { shape.status })
        .header("age", shape.age.to_string());
    if let Some(cc) = shape.cache_control() {
        builder = builder.header("cache-control", cc);
    }
    if shape.etag {
        builder = builder.header("etag", current);
    }
    let body = if not_modified {
        Bytes::new()
    } else {
        Bytes::from(format!("v{}", origin.version))
    };
    builder.body(Full::new(body)).unwrap()
}

/// What the model says a stored response is.
#[derive(Debug, Clone)]
struct Stored {
    version: u32,
    status: u16,
    /// The stored `Cache-Control` directives (`None`: no such line).
    shape: Shape,
    /// Seconds of age it had when it arrived (its `Age`; no `Date` is sent).
    initial_age: u64,
    /// When it arrived, in seconds of the test's clock.
    at: u64,
}

impl Stored {
    /// Its freshness lifetime: `max-age`, or zero for a response kept only
    /// for validation (it has an `ETag`).
    fn lifetime(&self) -> u64 {
        self.shape.max_age.unwrap_or(0)
    }

    fn age(&self, now: u64) -> u64 {
        self.initial_age + (now - self.at)
    }
}

/// Whether the cache stores an answer of this shape (§3): no `no-store`,
/// and freshness or a validator to revalidate with; `no-cache` only with a
/// validator.
fn storable(shape: &Shape) -> bool {
    let validator = shape.etag;
    !shape.no_store && (shape.max_age.is_some() || validator) && (validator || !shape.no_cache)
}

/// What the cache must do with a request.
#[derive(Debug, PartialEq)]
enum Expect {
    Hit { version: u32, age: u64 },
    Upstream { if_none_match: Option<String> },
    GatewayTimeout,
}

/// §4.2 and §5.2.1: may `stored` answer a request with `directive` at
/// `now` without asking the origin?
fn usable(stored: &Stored, directive: Directive, now: u64) -> bool {
    if stored.shape.no_cache || matches!(directive, Directive::NoCache) {
        return false;
    }
    let age = stored.age(now);
    let lifetime = stored.lifetime();
    if let Directive::MaxAge(max_age) = directive {
        if max_age == 0 || age > max_age {
            return false;
        }
    }
    if age < lifetime {
        return !matches!(directive, Directive::MinFresh(min) if lifetime - age < min);
    }
    if stored.shape.must_revalidate {
        return false;
    }
    match directive {
        Directive::MaxStale(None) => true,
        Directive::MaxStale(Some(max)) => age - lifetime <= max,
        _ => false,
    }
}

fn expect(stored: Option<&Stored>, directive: Directive, now: u64) -> Expect {
    match stored {
        Some(s) if usable(s, directive, now) => Expect::Hit {
            version: s.version,
            age: s.age(now),
        },
        _ if matches!(directive, Directive::OnlyIfCached) => Expect::GatewayTimeout,
        Some(s) => Expect::Upstream {
            if_none_match: s.shape.etag.then(|| etag(s.version)),
        },
        None => Expect::Upstream { if_none_match: None },
    }
}

/// The model's store after the origin answered `shape` for version
/// `version` at `now`; `not_modified` when it answered 304.
fn after_answer(stored: Option<Stored>, shape: &Shape, version: u32, not_modified: bool, now: u64) -> Option<Stored> {
    if not_modified {
        // §4.3.4: the 304's fields replace the stored ones; a 304 without
        // `Cache-Control` keeps the stored directives.
        let old = stored.expect("a 304 answers a conditional request");
        let merged = if shape.cache_control().is_some() {
            shape.clone()
        } else {
            Shape {
                etag: true,
                ..old.shape.clone()
            }
        };
        let keep = storable(&merged);
        let freshened = Stored {
            shape: merged,
            initial_age: shape.age,
            at: now,
            ..old
        };
        return keep.then_some(freshened);
    }
    // A whole answer replaces the stored one, stored or not.
    storable(shape).then(|| Stored {
        version,
        status: shape.status,
        shape: shape.clone(),
        initial_age: shape.age,
        at: now,
    })
}

async fn run(steps: Vec<Step>, shapes: Vec<Shape>) -> Result<(), String> {
    let origin = Arc::new(Mutex::new(Origin {
        version: 1,
        shapes,
        calls: 0,
        if_none_match: None,
    }));
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        // Longer than any run: nothing leaves the store by expiry.
        .stale_retention(Duration::from_secs(24 * 3600))
        .build()
        .unwrap();
    let seen = origin.clone();
    let upstream = Upstream::new(move |req: Req, _| {
        let inm = req.headers().get(IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
        let res = answer(&mut seen.lock().unwrap(), inm);
        async move { Ok(res) }
    });
    let mut client = client(&cache, &upstream);
    let mut stored: Option<Stored> = None;
    let mut now = 0;
    for (i, step) in steps.into_iter().enumerate() {
        let directive = match step {
            Step::Advance(secs) => {
                tokio::time::advance(Duration::from_secs(secs)).await;
                now += secs;
                continue;
            }
            Step::Change => {
                origin.lock().unwrap().version += 1;
                continue;
            }
            Step::Get(directive) => directive,
        };
        let expected = expect(stored.as_ref(), directive, now);
        let calls_before = upstream.calls();
        let mut request = req("http://api.test/r");
        if let Some(cc) = directive.header() {
            request = request.header("cache-control", cc);
        }
        let got = send(&mut client, request.body(empty()).unwrap())
            .await
            .map_err(|e| format!("step {i}: error {e}"))?;
        let went_up = upstream.calls() > calls_before;
        let context = format!("step {i} at {now} s, {directive:?}, stored {stored:?}");
        let fail = |what: String| Err(format!("{context}: {what}"));
        match expected {
            Expect::Hit { version, age } => {
                if went_up {
                    return fail(format!("expected a hit on v{version}, went upstream"));
                }
                if got.body != format!("v{version}") || got.header("age") != age.to_string() {
                    return fail(format!(
                        "expected v{version} at age {age}, got {:?} at age {}",
                        got.body,
                        got.header("age")
                    ));
                }
            }
            Expect::GatewayTimeout => {
                if went_up || got.status != 504 {
                    return fail(format!("expected 504, got {} (upstream: {went_up})", got.status));
                }
            }
            Expect::Upstream { if_none_match } => {
                if !went_up {
                    return fail(format!("expected a trip upstream, got {:?} from the cache", got.body));
                }
                let (sent, shape, version) = {
                    let o = origin.lock().unwrap();
                    let shape = o.shapes[(o.calls - 1) % o.shapes.len()].clone();
                    (o.if_none_match.clone(), shape, o.version)
                };
                if sent != if_none_match {
                    return fail(format!("sent If-None-Match {sent:?}, expected {if_none_match:?}"));
                }
                let not_modified = shape.etag && sent == Some(etag(version));
                let (want_body, want_status) = match (&stored, not_modified) {
                    (Some(s), true) => (format!("v{}", s.version), s.status),
                    _ => (format!("v{version}"), shape.status),
                };
                if got.body != want_body || got.status != want_status || got.header("age") != shape.age.to_string() {
                    return fail(format!(
                        "answered {} {:?} at age {}, expected {want_status} {want_body} at age {} ({shape:?})",
                        got.status,
                        got.body,
                        got.header("age"),
                        shape.age
                    ));
                }
                stored = after_answer(stored, &shape, version, not_modified, now);
            }
        }
        let entries = cache.stats().entries;
        if entries != u64::from(stored.is_some()) {
            return Err(format!(
                "after step {i}: the cache holds {entries} entries, the model {stored:?}"
            ));
        }
    }
    Ok(())
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![4 => Just(200u16), 1 => Just(404u16)],
        prop_oneof![1 => Just(None), 4 => (0u64..=10).prop_map(Some)],
        prop_oneof![3 => Just(0u64), 1 => 1u64..=4],
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.25),
    )
        .prop_map(
            |(status, max_age, age, etag, no_cache, no_store, must_revalidate)| Shape {
                status,
                max_age,
                age,
                etag,
                no_cache,
                no_store,
                must_revalidate,
            },
        )
}

fn directive() -> impl Strategy<Value = Directive> {
    prop_oneof![
        6 => Just(Directive::None),
        1 => Just(Directive::NoCache),
        1 => (0u64..=8).prop_map(Directive::MaxAge),
        1 => (0u64..=8).prop_map(Directive::MinFresh),
        1 => prop::option::of(0u64..=8).prop_map(Directive::MaxStale),
        1 => Just(Directive::OnlyIfCached),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..=6).prop_map(Step::Advance),
        6 => directive().prop_map(Step::Get),
        1 => Just(Step::Change),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_does_what_rfc_9111_says(
        steps in prop::collection::vec(step(), 1..48),
        shapes in prop::collection::vec(shape(), 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(run(steps, shapes));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// Cases the model found, kept as plain tests.
mod found {
    use super::*;
    use tower_optimizer::cache::Outcome;

    /// An upstream answering `first`, then `second` to every later call.
    fn two(first: fn() -> Res, second: fn() -> Res) -> Upstream {
        Upstream::new(move |_, n| async move { Ok(if n == 0 { first() } else { second() }) })
    }

    fn tagged(status: u16, cache_control: &str, age: &str) -> Res {
        Response::builder()
            .status(status)
            .header("cache-control", cache_control)
            .header("etag", "\"v1\"")
            .header("age", age)
            .body(Full::new(if status == 304 {
                Bytes::new()
            } else {
                Bytes::from_static(b"v1")
            }))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_304_that_says_no_store_leaves_nothing_stored() {
        let cache = cache();
        let upstream = two(|| tagged(200, "max-age=1", "0"), || tagged(304, "no-store", "0"));
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
        let upstream = two(|| tagged(200, "max-age=10", "0"), || tagged(304, "max-age=10", "4"));
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
}
