//! The cache layer against a model of RFC 9111 (and RFC 5861) for one
//! URI, on paused time: random request directives, clock steps, writes,
//! origin changes and outages, and an origin whose answers carry random
//! freshness (`max-age`, `Age`, `no-cache`, `must-revalidate`,
//! `no-store`, `stale-while-revalidate`, `stale-if-error`), validators and
//! statuses.
//!
//! The model (`support/rfc_model.rs`) keeps what a cache must have stored
//! after each exchange (§3, §4.3.4 freshening, §4.4 writes, an answer that
//! may not be stored outdating the stored one) and decides each request by
//! §4.2 and §5.2.1: a hit of which version at which `Age` (refreshed
//! behind, within `stale-while-revalidate`), a trip upstream with or
//! without `If-None-Match` (and the stored response standing in for a
//! failure, within `stale-if-error`), or a 504 for `only-if-cached`. A
//! caller's own `If-None-Match` or `If-Modified-Since` gets a 304 from
//! whatever stored response the cache answers with, where it matches it
//! (§4.3.2); upstream the cache asks with its own validators only. Some
//! requests carry a `RequestCacheMode` instead of a directive: `NoStore`
//! goes around the store, `Reload` upstream without validators (its answer
//! stored), and the others stand for the directives they are named after.
//! The cache must do exactly that, neither more conservative nor less.
#![cfg(feature = "cache")]

#[path = "support/chunks.rs"]
mod chunks;
#[path = "support/rfc_model.rs"]
mod rfc_model;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chunks::Chunks;
use http::header::{ACCEPT_LANGUAGE, AUTHORIZATION, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use proptest::prelude::*;
use rfc_model::{
    Answer, Ask, Config, Directive, Health, Lang, Mode, Shape, Step, Stored, Unstorable, Use, after_answer, after_head,
    config, etag, select, shape, step, usability,
};
use support::*;
use tower::util::BoxService;
use tower_optimizer::BoxError;
use tower_optimizer::body::OptimizerBody;
use tower_optimizer::cache::{Cache, CacheLayer, CacheMode};

/// The `Date` on every answer: in the future of any test run, so the
/// cache's apparent age (§4.2.3: now minus `Date`) is exactly zero and
/// `Expires` gives its whole-second lifetime.
fn date() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000)
}

/// The `Last-Modified` of `version`: later for each version, before `date()`.
fn last_modified(version: u32) -> String {
    httpdate::fmt_http_date(date() - Duration::from_secs(100_000) + Duration::from_secs(u64::from(version)))
}

/// `If-None-Match` and `If-Modified-Since`, as sent.
type Validators = (Option<String>, Option<String>);

/// The validators a request that validates `stored` sends.
fn validators_of(stored: Option<&Stored>) -> Validators {
    stored.map_or((None, None), |s| {
        (
            s.shape.etag.then(|| etag(s.version)),
            s.shape.last_modified.then(|| last_modified(s.version)),
        )
    })
}

/// The origin: its resource's version, its health, its answers' shapes (by
/// answer number, cycling) and what the last request it saw asked.
struct Origin {
    version: u32,
    health: Health,
    shapes: Vec<Shape>,
    answers: usize,
    calls: usize,
    last: Option<Seen>,
    /// Whether GET answers carry `Content-Length`.
    declare_length: bool,
}

/// The last request the origin saw, and how it answered (`None`: a
/// failure).
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// `If-None-Match` and `If-Modified-Since`.
    validators: Validators,
    answer: Option<Answer>,
}

fn answer(origin: &mut Origin, req: &Req) -> Result<Response<Chunks>, BoxError> {
    origin.calls += 1;
    let method = req.method().clone();
    let header = |name| {
        req.headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let mut seen = Seen {
        validators: (header(IF_NONE_MATCH), header(IF_MODIFIED_SINCE)),
        method: method.clone(),
        answer: None,
    };
    let result = match (origin.health, method == Method::POST) {
        (Health::Unreachable, false) => Err("connection reset".into()),
        (Health::Failing | Health::Unreachable, _) => Ok(bare(503)),
        (Health::Up | Health::BodiesFail, true) => Ok(bare(204)),
        (Health::Up | Health::BodiesFail, false) => {
            let shape = origin.shapes[origin.answers % origin.shapes.len()].clone();
            origin.answers += 1;
            let current = etag(origin.version);
            let modified = last_modified(origin.version);
            // RFC 9110 §13.2.2: `If-None-Match` decides when present, and
            // `If-Modified-Since` only without it.
            let not_modified = match &seen.validators {
                (Some(inm), _) => shape.etag && *inm == current,
                (None, Some(ims)) => shape.last_modified && *ims == modified,
                (None, None) => false,
            };
            let lang = header(ACCEPT_LANGUAGE).unwrap_or_else(|| "-".into());
            let body = format!("v{}:{lang}", origin.version);
            let mut builder = Response::builder()
                .status(if not_modified { 304 } else { shape.status })
                .header("age", shape.age.to_string())
                .header("date", httpdate::fmt_http_date(date()));
            if let Some(expires) = shape.expires {
                let expires = date() + Duration::from_secs(expires);
                builder = builder.header("expires", httpdate::fmt_http_date(expires));
            }
            if let Some(cc) = shape.cache_control() {
                builder = builder.header("cache-control", cc);
            }
            if shape.etag {
                builder = builder.header("etag", current);
            }
            if shape.last_modified {
                builder = builder.header("last-modified", modified);
            }
            if shape.vary {
                builder = builder.header("vary", "accept-language");
            }
            if !not_modified && (method == Method::HEAD || origin.declare_length) {
                // A HEAD's is the length a GET would have had (RFC 9110 §8.6).
                builder = builder.header("content-length", body.len());
            }
            let has_body = !not_modified && method != Method::HEAD;
            let body_failed = has_body && origin.health == Health::BodiesFail;
            let sent = Chunks::new(has_body.then(|| Bytes::from(body.clone()))).failing(body_failed);
            seen.answer = Some(Answer {
                shape,
                version: origin.version,
                body,
                not_modified,
                body_failed,
            });
            Ok(builder.body(sent).unwrap())
        }
    };
    origin.last = Some(seen);
    result
}

fn bare(status: u16) -> Response<Chunks> {
    Response::builder().status(status).body(Chunks::new([])).unwrap()
}

/// The validators a caller with `ask` sends.
fn validators_asked(ask: Ask) -> Validators {
    match ask {
        Ask::None => (None, None),
        Ask::Tag(version) => (Some(etag(version)), None),
        Ask::Star => (Some("*".into()), None),
        Ask::Since(version) => (None, Some(last_modified(version))),
    }
}

/// What the cache must do with a request.
#[derive(Debug)]
enum Expect {
    /// From the stored response at this index, refreshed behind when
    /// `refresh`; a 304 when the caller's validators match it.
    Hit {
        index: usize,
        refresh: bool,
        not_modified: bool,
    },
    Upstream,
    GatewayTimeout,
    /// Past the cache untouched (`Authorization` in a private cache, a
    /// HEAD with nothing stored).
    Bypass,
}

fn expect(store: &[Stored], read: &Read, now: u64, config: &Config) -> Expect {
    let Read {
        lang,
        directive,
        head,
        authorization,
        ask,
        mode,
    } = *read;
    let only_if_cached = matches!(directive, Directive::OnlyIfCached) || mode == Mode::OnlyIfCached;
    if authorization && !config.shared {
        // Never from the store; `only-if-cached` asks for the store only.
        return if only_if_cached {
            Expect::GatewayTimeout
        } else {
            Expect::Bypass
        };
    }
    // The modes that are not directives: around the store, or upstream
    // whatever it holds (validating nothing, so a HEAD passes as it came).
    match mode {
        Mode::NoStore => return Expect::Bypass,
        Mode::Reload if head => return Expect::Bypass,
        Mode::Reload => return Expect::Upstream,
        _ => {}
    }
    // The others stand for directives (the step gives no other with them).
    let directive = match mode {
        Mode::NoCache => Directive::NoCache,
        Mode::ForceCache | Mode::OnlyIfCached => Directive::MaxStale(None),
        _ => directive,
    };
    let found = select(store, lang).map(|i| (i, usability(&store[i], directive, now)));
    let hit = |index: usize, refresh| Expect::Hit {
        index,
        refresh,
        not_modified: ask.not_modified(&store[index]),
    };
    match found {
        Some((index, Use::Fresh | Use::StaleAccepted)) => hit(index, false),
        // HEAD is answered from a stored GET, and refreshes nothing.
        Some((index, Use::StaleWhileRevalidate)) => hit(index, !head),
        _ if only_if_cached => Expect::GatewayTimeout,
        // A HEAD with no stored GET to revalidate is passed on as it came,
        // the caller's validators with it: its answer is never stored.
        None if head => Expect::Bypass,
        // With or without the caller's validators: the cache asks for
        // itself, and judges them against its answer (`upstream_outcome`).
        _ => Expect::Upstream,
    }
}

/// A readable account of a failed step.
struct Failure(String);

type Checked = Result<(), Failure>;

fn check(ok: bool, what: impl FnOnce() -> String) -> Checked {
    if ok { Ok(()) } else { Err(Failure(what())) }
}

/// What the caller of a GET that went upstream must get (body, status,
/// `Age`; `None`: an error), by the origin's last answer, which then
/// updates the model's store. `nominated`: the stored response the request
/// validated. Where the caller is answered from a stored response (a stand-
/// in, a freshened one, or a new one read whole and stored), its own
/// validators are judged against it: a 304 where they match.
fn upstream_outcome(
    origin: &Origin,
    store: &mut Vec<Stored>,
    nominated: Option<usize>,
    read: &Read,
    now: u64,
    config: &Config,
) -> Option<(String, u16, u64)> {
    let seen = origin.last.clone().expect("the origin saw the request");
    // A HEAD's answer has no body, whoever gives it.
    let body = |text: &String| if read.head { String::new() } else { text.clone() };
    let judged = |s: &Stored, got: (String, u16, u64)| {
        if read.ask.not_modified(s) {
            (String::new(), 304, got.2)
        } else {
            got
        }
    };
    let Some(answer) = seen.answer else {
        // A failure: the stored response stands in where it may, and stays.
        let stand_in = nominated.map(|i| &store[i]).filter(|s| s.serves_on_error(now, config));
        return match (stand_in, origin.health) {
            (Some(s), _) => Some(judged(s, (body(&s.body), s.status, s.age(now)))),
            (None, Health::Unreachable) => None,
            (None, _) => Some((String::new(), 503, 0)),
        };
    };
    if answer.body_failed {
        // A GET's body failed after its head. An answer the cache would
        // store is read whole first: the stored response stands in where it
        // may and stays; otherwise the caller sees the failure. One it may
        // not store went on to the caller as it came, and, by its head,
        // outdated the stored response.
        let stand_in = match config.storable(&answer.shape, read.authorization) {
            Ok(()) => nominated.map(|i| &store[i]).filter(|s| s.serves_on_error(now, config)),
            Err(_) => None,
        };
        let got = stand_in.map(|s| judged(s, (s.body.clone(), s.status, s.age(now))));
        if config.storable(&answer.shape, read.authorization) == Err(Unstorable::Other) {
            if let Some(i) = nominated {
                store.remove(i);
            }
        }
        return got;
    }
    // A long body streams to the caller unless a stale entry could stand
    // in for it, should it fail.
    let streamed = config.stream && !nominated.is_some_and(|i| store[i].serves_on_error(now, config));
    let got = match nominated {
        Some(i) if answer.not_modified => {
            let s = &store[i];
            let freshened = Stored {
                shape: s.shape.freshened_by(&answer.shape),
                ..s.clone()
            };
            judged(&freshened, (body(&s.body), s.status, answer.shape.age))
        }
        _ => {
            let got = (body(&answer.body), answer.shape.status, answer.shape.age);
            let new = Stored {
                version: answer.version,
                shape: answer.shape.clone(),
                ..Stored::placeholder()
            };
            let read_whole = !read.head && !streamed && config.storable(&answer.shape, read.authorization).is_ok();
            if read_whole { judged(&new, got) } else { got }
        }
    };
    if read.head && !answer.not_modified {
        // A HEAD's own answer is never stored; a 200 updates or outdates
        // the stored response it revalidated, and any other leaves it.
        if let (Some(i), 200) = (nominated, answer.shape.status) {
            after_head(store, i, &answer, now, config);
        }
    } else {
        after_answer(store, nominated, &answer, (read.lang, read.authorization), now, config);
    }
    Some(got)
}

/// The cache over the model's origin, its body boxed.
type ModelClient = BoxService<Req, Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError>;

/// Lets the cache's background refresh run to its end (paused time: only
/// yields are needed).
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

async fn run(steps: Vec<Step>, shapes: Vec<Shape>, config: Config) -> Result<(), String> {
    let origin = Arc::new(Mutex::new(Origin {
        version: 1,
        health: Health::Up,
        shapes,
        answers: 0,
        calls: 0,
        last: None,
        declare_length: config.declare_length,
    }));
    let secs = Duration::from_secs;
    let mut builder = Cache::builder()
        .max_bytes(1 << 20)
        // Longer than any run: nothing leaves the store by expiry.
        .stale_retention(secs(24 * 3600));
    if let Some(ttl) = config.default_ttl {
        builder = builder.default_ttl(secs(ttl));
    }
    if let Some(ttl) = config.max_ttl {
        builder = builder.max_ttl(secs(ttl));
    }
    if let Some(window) = config.stale_if_error {
        builder = builder.stale_if_error(secs(window));
    }
    if config.shared {
        builder = builder.mode(CacheMode::Shared);
    }
    if config.stream {
        builder = builder.stream_above(1);
    }
    let cache = builder.build().unwrap();
    let shared = origin.clone();
    let upstream = tower::service_fn(move |req: Req| {
        let result = answer(&mut shared.lock().unwrap(), &req);
        async move { result }
    });
    let boxed = |response: Response<_>| response.map(|body: OptimizerBody<Chunks>| body.boxed_unsync());
    let mut client: ModelClient = BoxService::new(
        tower::ServiceBuilder::new()
            .map_response(boxed)
            .layer(CacheLayer::new(cache.clone()))
            .service(upstream),
    );
    let mut store: Vec<Stored> = Vec::new();
    let mut now = 0;
    for (i, step) in steps.into_iter().enumerate() {
        let context = format!("step {i} at {now} s, {step:?}, stored {store:?}");
        let checked = match step {
            Step::Advance(secs) => {
                tokio::time::advance(Duration::from_secs(secs)).await;
                now += secs;
                Ok(())
            }
            Step::Change => {
                origin.lock().unwrap().version += 1;
                Ok(())
            }
            Step::Health(health) => {
                origin.lock().unwrap().health = health;
                Ok(())
            }
            Step::Post => post(&mut client, &origin, &mut store).await,
            Step::Purge { soft } => {
                if purge(&cache, soft) {
                    if soft {
                        for stored in &mut store {
                            stored.purged = true;
                        }
                    } else {
                        store.clear();
                    }
                }
                Ok(())
            }
            Step::Head(lang, ask, mode) => {
                let read = Read {
                    lang,
                    directive: Directive::None,
                    head: true,
                    authorization: false,
                    ask,
                    mode,
                };
                read.check(&mut client, &origin, &mut store, now, &config).await
            }
            Step::Get(directive, lang, authorization, ask, mode) => {
                let read = Read {
                    lang,
                    directive,
                    head: false,
                    authorization,
                    ask,
                    mode,
                };
                read.check(&mut client, &origin, &mut store, now, &config).await
            }
        };
        checked.map_err(|Failure(what)| format!("{context}: {what}"))?;
        let entries = cache.stats().entries;
        if entries != store.len() as u64 {
            return Err(format!(
                "after step {i}: the cache holds {entries} entries, the model {store:?}"
            ));
        }
    }
    Ok(())
}

/// Purges the URI through an `Invalidator`; `false` without the
/// invalidation feature (the model then leaves the store as it is).
#[cfg(feature = "invalidation")]
fn purge(cache: &Cache, soft: bool) -> bool {
    use tower_optimizer::invalidation::{Invalidator, Node, Purge};
    let key = cache.key_for_uri(&"http://api.test/r".parse().unwrap()).unwrap();
    let mode = if soft { Purge::Soft } else { Purge::Hard };
    Invalidator::new(cache.clone()).purge(&[Node::Key(key.into())], mode);
    true
}

#[cfg(not(feature = "invalidation"))]
fn purge(_: &Cache, _: bool) -> bool {
    false
}

/// A write: a 2xx removes every stored response (§4.4); a 503 leaves them.
async fn post(client: &mut ModelClient, origin: &Mutex<Origin>, store: &mut Vec<Stored>) -> Checked {
    let request = Request::post("http://api.test/r").body(empty()).unwrap();
    let got = send(client, request).await.map_err(|e| Failure(format!("error {e}")))?;
    if got.status == 204 {
        store.clear();
    }
    let up = matches!(origin.lock().unwrap().health, Health::Up | Health::BodiesFail);
    check((got.status == 204) == up, || format!("POST answered {}", got.status))
}

/// A GET or HEAD.
#[derive(Clone, Copy)]
struct Read {
    lang: Lang,
    directive: Directive,
    head: bool,
    authorization: bool,
    ask: Ask,
    mode: Mode,
}

impl Read {
    /// Sends it, checks what the cache did against the model, and updates
    /// the model.
    async fn check(
        self,
        client: &mut ModelClient,
        origin: &Mutex<Origin>,
        store: &mut Vec<Stored>,
        now: u64,
        config: &Config,
    ) -> Checked {
        let expected = expect(store, &self, now, config);
        let Read {
            lang,
            directive,
            head,
            authorization,
            ask,
            mode,
        } = self;
        // A reload validates nothing: what is stored has no say.
        let nominated = select(store, lang).filter(|_| mode != Mode::Reload);
        let calls_before = origin.lock().unwrap().calls;
        let mut request = Request::builder()
            .method(if head { Method::HEAD } else { Method::GET })
            .uri("http://api.test/r");
        if let Some(cc) = directive.header() {
            request = request.header("cache-control", cc);
        }
        if mode != Mode::Default {
            request = request.extension(mode);
        }
        if let Some(lang) = lang {
            request = request.header(ACCEPT_LANGUAGE, lang);
        }
        if authorization {
            request = request.header(AUTHORIZATION, "Bearer model");
        }
        let (inm, ims) = validators_asked(ask);
        if let Some(inm) = inm {
            request = request.header(IF_NONE_MATCH, inm);
        }
        if let Some(ims) = ims {
            request = request.header(IF_MODIFIED_SINCE, ims);
        }
        let result = send(client, request.body(empty()).unwrap()).await;
        settle().await;
        let origin = origin.lock().unwrap();
        let calls = origin.calls - calls_before;
        let validator = |i: Option<usize>| validators_of(i.map(|i| &store[i]));
        match expected {
            Expect::GatewayTimeout => {
                let status = result.as_ref().map(|g| g.status).ok();
                check(calls == 0 && status == Some(504), || {
                    format!("expected 504, got {status:?} ({calls} calls)")
                })
            }
            Expect::Hit {
                index,
                refresh,
                not_modified,
            } => {
                let got = result.map_err(|e| Failure(format!("expected a hit, got error {e}")))?;
                let s = &store[index];
                let (status, body) = match (not_modified, head) {
                    (true, _) => (304, String::new()),
                    (false, true) => (s.status, String::new()),
                    (false, false) => (s.status, s.body.clone()),
                };
                let age = s.age(now);
                check(
                    got.status == status && got.body == body && got.header("age") == age.to_string(),
                    || {
                        format!(
                            "expected {status} {body:?} at age {age}, got {} {:?} at age {}",
                            got.status,
                            got.body,
                            got.header("age")
                        )
                    },
                )?;
                check(calls == usize::from(refresh), || {
                    format!("expected {} calls behind, saw {calls}", usize::from(refresh))
                })?;
                if refresh {
                    let sent = origin.last.as_ref().map(|s| s.validators.clone());
                    let want = validator(Some(index));
                    check(sent.as_ref() == Some(&want), || {
                        format!("refreshed with {sent:?}, expected {want:?}")
                    })?;
                    upstream_outcome(&origin, store, Some(index), &self, now, config);
                }
                Ok(())
            }
            Expect::Bypass => {
                check(calls == 1, || format!("expected one trip upstream, saw {calls}"))?;
                let seen = origin.last.clone().expect("the origin saw the request");
                let asked = validators_asked(self.ask);
                check(seen.validators == asked, || {
                    format!("a bypass sent {:?}, the caller {asked:?}", seen.validators)
                })?;
                let want = match (&seen.answer, origin.health) {
                    (Some(a), _) if a.body_failed => None,
                    (Some(a), _) if a.not_modified => Some((String::new(), 304, a.shape.age)),
                    // A HEAD's answer has no body.
                    (Some(a), _) if head => Some((String::new(), a.shape.status, a.shape.age)),
                    (Some(a), _) => Some((a.body.clone(), a.shape.status, a.shape.age)),
                    (None, Health::Unreachable) => None,
                    (None, _) => Some((String::new(), 503, 0)),
                };
                let got = result.ok().map(|g| {
                    let age = g.header("age").parse().unwrap_or(0);
                    (String::from_utf8_lossy(&g.body).into_owned(), g.status, age)
                });
                check(got == want, || {
                    format!("answered {got:?}, expected {want:?} ({seen:?})")
                })
            }
            Expect::Upstream => {
                check(calls == 1, || format!("expected one trip upstream, saw {calls}"))?;
                let seen = origin.last.clone().expect("the origin saw the request");
                let method = if head { Method::HEAD } else { Method::GET };
                check(seen.method == method, || format!("sent {} upstream", seen.method))?;
                let want = validator(nominated);
                check(seen.validators == want, || {
                    format!("sent validators {:?}, expected {want:?}", seen.validators)
                })?;
                let want = upstream_outcome(&origin, store, nominated, &self, now, config);
                let got = result.ok().map(|g| {
                    let age = g.header("age").parse().unwrap_or(0);
                    (String::from_utf8_lossy(&g.body).into_owned(), g.status, age)
                });
                check(got == want, || {
                    format!("answered {got:?}, expected {want:?} ({seen:?})")
                })
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_does_what_rfc_9111_says(
        steps in prop::collection::vec(step(), 1..48),
        shapes in prop::collection::vec(shape(), 1..6),
        config in config(),
    ) {
        let outcome = support::on_paused_runtime(run(steps, shapes, config));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
