//! The pure model of `tests/cache_model.rs`: what an origin sends, what a
//! cache must have stored, and what it must do with a request, by RFC 9111
//! and RFC 5861, for one URI, in whole seconds. No tower, no clock.
#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;
/// A caller's per-request choice (the Fetch standard's modes).
pub use tower_optimizer::cache::RequestCacheMode as Mode;

/// What the origin puts on one answer.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::struct_excessive_bools)] // one flag per directive the origin may send
pub struct Shape {
    pub status: u16,
    pub max_age: Option<u64>,
    pub age: u64,
    pub etag: bool,
    pub no_cache: bool,
    pub no_store: bool,
    pub must_revalidate: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `must-understand` (§5.2.2.3), which both statuses drawn are.
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// `Vary: accept-language`.
    pub vary: bool,
    /// `Expires`, this many seconds after the answer's `Date`.
    pub expires: Option<u64>,
    /// `Last-Modified` (the version's own date).
    pub last_modified: bool,
    /// The directives a shared cache reads (§5.2.2).
    pub shared: SharedDirectives,
}

/// `s-maxage`, `private`, `public` and `proxy-revalidate`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[allow(clippy::struct_excessive_bools)] // one flag per directive
pub struct SharedDirectives {
    pub s_maxage: Option<u64>,
    pub private: bool,
    pub public: bool,
    pub proxy_revalidate: bool,
}

impl Shape {
    /// The `Cache-Control` line, if any directive is set.
    pub fn cache_control(&self) -> Option<String> {
        let mut directives = Vec::new();
        let numbers = [
            ("max-age", self.max_age),
            ("s-maxage", self.shared.s_maxage),
            ("stale-while-revalidate", self.stale_while_revalidate),
            ("stale-if-error", self.stale_if_error),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                directives.push(format!("{name}={value}"));
            }
        }
        let flags = [
            (self.no_cache, "no-cache"),
            (self.no_store, "no-store"),
            (self.must_revalidate, "must-revalidate"),
            (self.immutable, "immutable"),
            (self.must_understand, "must-understand"),
            (self.shared.private, "private"),
            (self.shared.public, "public"),
            (self.shared.proxy_revalidate, "proxy-revalidate"),
        ];
        for (set, name) in flags {
            if set {
                directives.push(name.to_owned());
            }
        }
        (!directives.is_empty()).then(|| directives.join(", "))
    }

    /// A stored response freshened by a 304 of shape `update` (§4.3.4,
    /// §3.2): the 304's `Cache-Control` line, if it has one, replaces the
    /// stored one, and so do its `Expires`, `ETag` and `Last-Modified`; the
    /// rest stays.
    pub fn freshened_by(&self, update: &Shape) -> Shape {
        let mut merged = self.clone();
        if update.cache_control().is_some() {
            merged = Shape {
                status: self.status,
                age: self.age,
                etag: self.etag,
                vary: self.vary,
                expires: self.expires,
                last_modified: self.last_modified,
                ..update.clone()
            };
        }
        if update.expires.is_some() {
            merged.expires = update.expires;
        }
        // Validators the 304 carries are added (§3.2).
        merged.etag |= update.etag;
        merged.last_modified |= update.last_modified;
        merged
    }
}

/// The cache's own settings that the model follows, drawn per run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Lifetime of answers that carry no freshness.
    pub default_ttl: Option<u64>,
    /// Cap on every lifetime.
    pub max_ttl: Option<u64>,
    /// `stale-if-error` window of answers that carry none.
    pub stale_if_error: Option<u64>,
    /// `CacheMode::Shared` (else private).
    pub shared: bool,
    /// Every body is "long" (`stream_above(1)`): answers reach the caller
    /// as they arrive and are stored at their end, which must change
    /// nothing the model sees.
    pub stream: bool,
    /// The origin declares its bodies' length, so long ones are shared as
    /// they arrive (the broadcast path).
    pub declare_length: bool,
}

/// Why an answer is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstorable {
    /// The answer is one caller's (`private` in a shared cache, or to a
    /// request with `Authorization` that §3.5 does not let a shared cache
    /// store): the stored response stays as it was.
    Personal,
    /// Anything else: the stored response it replaces is dropped.
    Other,
}

impl Config {
    /// §4.2.1: `max-age`, else `Expires - Date`, else the default TTL
    /// (both statuses the origin sends are heuristically cacheable); capped
    /// by `max_ttl`. `None`: no freshness at all.
    fn lifetime(&self, shape: &Shape) -> Option<u64> {
        let s_maxage = shape.shared.s_maxage.filter(|_| self.shared);
        let lifetime = s_maxage.or(shape.max_age).or(shape.expires).or(self.default_ttl)?;
        Some(self.max_ttl.map_or(lifetime, |max| lifetime.min(max)))
    }

    /// Whether the cache stores an answer of this shape to a request with
    /// `Authorization` or not (§3, §3.5), in the cache's order: `no-store`;
    /// `private` in a shared cache; `Authorization` without `public`,
    /// `s-maxage` or `must-revalidate`; freshness or a validator to
    /// revalidate with, and `no-cache` only with a validator.
    pub fn storable(&self, shape: &Shape, authorization: bool) -> Result<(), Unstorable> {
        let validator = shape.etag || shape.last_modified;
        // A cache that understands the status (this one knows 200 and 404)
        // ignores a `no-store` sent beside `must-understand`.
        if shape.no_store && !shape.must_understand {
            return Err(Unstorable::Other);
        }
        if self.shared && shape.shared.private {
            return Err(Unstorable::Personal);
        }
        let allowed = shape.shared.public || shape.must_revalidate || shape.shared.s_maxage.is_some();
        if authorization && !allowed {
            return Err(Unstorable::Personal);
        }
        // With a validator it can always be revalidated; without, it needs
        // a lifetime, and `no-cache` would make every use a full refetch.
        if validator || (self.lifetime(shape).is_some() && !shape.no_cache) {
            Ok(())
        } else {
            Err(Unstorable::Other)
        }
    }

    /// `must-revalidate`, or in a shared cache `proxy-revalidate` or
    /// `s-maxage`, which carries its rule (§5.2.2.10).
    fn must_revalidate(&self, shape: &Shape) -> bool {
        shape.must_revalidate || (self.shared && (shape.shared.proxy_revalidate || shape.shared.s_maxage.is_some()))
    }
}

/// A request's own directive (RFC 9111 §5.2.1).
#[derive(Debug, Clone, Copy)]
pub enum Directive {
    None,
    NoCache,
    MaxAge(u64),
    MinFresh(u64),
    MaxStale(Option<u64>),
    OnlyIfCached,
}

impl Directive {
    pub fn header(self) -> Option<String> {
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

/// A caller's own validators (RFC 9111 §4.3.2), for a version of the
/// resource it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    None,
    /// `If-None-Match` with that version's `ETag`.
    Tag(u32),
    /// `If-None-Match: *`.
    Star,
    /// `If-Modified-Since` that version's `Last-Modified`.
    Since(u32),
}

impl Ask {
    /// Whether the stored response `stored` meets the caller's validators
    /// (its precondition is false): the cache answers 304. `If-None-Match`
    /// compares `ETag`s; `If-Modified-Since` compares the stored
    /// `Last-Modified` (each version's is later than the one before), else
    /// its `Date`, which is after every `Last-Modified`.
    pub fn not_modified(self, stored: &Stored) -> bool {
        match self {
            Ask::None => false,
            Ask::Tag(version) => stored.shape.etag && stored.version == version,
            Ask::Star => true,
            Ask::Since(version) => stored.shape.last_modified && stored.version <= version,
        }
    }
}

/// How the origin answers for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// A bare 503 to everything.
    Failing,
    /// No answer at all: the call fails (a reset connection).
    Unreachable,
    /// Answers as usual, but every GET body fails after its data.
    BodiesFail,
}

/// A request's `Accept-Language`, if any.
pub type Lang = Option<&'static str>;

#[derive(Debug, Clone)]
pub enum Step {
    Advance(u64),
    /// A GET with a directive, a language, `Authorization` or not,
    /// validators of its own or not, and a cache mode.
    Get(Directive, Lang, bool, Ask, Mode),
    /// A HEAD with a language, validators of its own or not, and a mode.
    Head(Lang, Ask, Mode),
    /// A write to the URI (RFC 9111 §4.4 when it succeeds).
    Post,
    /// The origin's resource changes: validators no longer match.
    Change,
    Health(Health),
    /// An invalidation of the URI through the `Invalidator`: hard (its
    /// responses removed) or soft (marked stale, kept for revalidation and
    /// stale serving).
    Purge {
        soft: bool,
    },
}

pub fn etag(version: u32) -> String {
    format!("\"v{version}\"")
}

/// What the model says a stored response is.
#[derive(Debug, Clone)]
pub struct Stored {
    pub version: u32,
    pub status: u16,
    pub body: String,
    /// Its `Vary` key: `None` when it varies on nothing (it matches every
    /// request), else the `Accept-Language` of the request it answered.
    pub secondary: Option<Lang>,
    /// Its directives (those of its last `Cache-Control` line).
    pub shape: Shape,
    /// Seconds of age it had when it arrived (its `Age`; no `Date` is sent).
    pub initial_age: u64,
    /// When it arrived, in seconds of the test's clock.
    pub at: u64,
    /// Its freshness lifetime (zero for one kept only for validation).
    pub lifetime: u64,
    /// Soft-purged: stale from then on, whatever its lifetime.
    pub purged: bool,
    /// Never served stale (`must-revalidate`, or `proxy-revalidate` in a
    /// shared cache).
    pub must_revalidate: bool,
}

impl Stored {
    /// A response of no version, for filling in the rest of one.
    pub fn placeholder() -> Self {
        Stored {
            version: 0,
            status: 200,
            body: String::new(),
            secondary: None,
            shape: Shape {
                status: 200,
                max_age: None,
                age: 0,
                etag: false,
                no_cache: false,
                no_store: false,
                must_revalidate: false,
                immutable: false,
                must_understand: false,
                stale_while_revalidate: None,
                stale_if_error: None,
                vary: false,
                expires: None,
                last_modified: false,
                shared: SharedDirectives::default(),
            },
            initial_age: 0,
            at: 0,
            lifetime: 0,
            purged: false,
            must_revalidate: false,
        }
    }

    /// Whether it may answer a request with `lang` (§4.1).
    pub fn matches(&self, lang: Lang) -> bool {
        self.secondary.is_none_or(|stored| stored == lang)
    }

    pub fn age(&self, now: u64) -> u64 {
        self.initial_age + (now - self.at)
    }

    /// Its lifetime as requests see it: none left once soft-purged.
    fn usable_lifetime(&self) -> u64 {
        if self.purged { 0 } else { self.lifetime }
    }

    fn staleness(&self, now: u64) -> u64 {
        self.age(now).saturating_sub(self.usable_lifetime())
    }

    /// RFC 5861 `stale-if-error` (or the configured window): may it stand
    /// in for a failed trip upstream? Without a window, only while fresh.
    pub fn serves_on_error(&self, now: u64, config: &Config) -> bool {
        if self.shape.no_cache || self.must_revalidate {
            return false;
        }
        match self.shape.stale_if_error.or(config.stale_if_error) {
            Some(window) => self.staleness(now) <= window,
            None => self.age(now) < self.usable_lifetime(),
        }
    }
}

/// What a request may do with a stored response (§4.2, §5.2.1, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Fresh,
    /// Stale, within the request's `max-stale`.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: answered now, refreshed
    /// behind (GET only).
    StaleWhileRevalidate,
    Validate,
}

pub fn usability(stored: &Stored, directive: Directive, now: u64) -> Use {
    if stored.shape.no_cache || matches!(directive, Directive::NoCache) {
        return Use::Validate;
    }
    let age = stored.age(now);
    let lifetime = stored.usable_lifetime();
    if let Directive::MaxAge(max_age) = directive {
        // `max-age=0` asks for an end-to-end check, but for a fresh
        // `immutable` response (RFC 8246), which cannot have changed.
        let unchanged = stored.shape.immutable && age < lifetime;
        if !unchanged && (max_age == 0 || age > max_age) {
            return Use::Validate;
        }
    }
    if age < lifetime {
        return match directive {
            Directive::MinFresh(min) if lifetime - age < min => Use::Validate,
            _ => Use::Fresh,
        };
    }
    if stored.must_revalidate {
        return Use::Validate;
    }
    let staleness = age - lifetime;
    match directive {
        Directive::MaxStale(None) => return Use::StaleAccepted,
        Directive::MaxStale(Some(max)) if staleness <= max => return Use::StaleAccepted,
        _ => {}
    }
    match stored.shape.stale_while_revalidate {
        Some(window) if window > 0 && staleness <= window => Use::StaleWhileRevalidate,
        _ => Use::Validate,
    }
}

/// The stored response a request with `lang` is answered from or
/// validates (§4.1: the most recent that matches), by its index.
pub fn select(store: &[Stored], lang: Lang) -> Option<usize> {
    store.iter().rposition(|s| s.matches(lang))
}

/// A whole answer to a GET with `lang`, as the origin sent it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub shape: Shape,
    pub version: u32,
    pub body: String,
    pub not_modified: bool,
    /// Its body failed after its data (see [`Health::BodiesFail`]).
    pub body_failed: bool,
}

/// Updates the model's store for `answer` to a GET with `lang` (and
/// `Authorization` or not) at `now` that validated (or replaced) the stored
/// response at `nominated`.
pub fn after_answer(
    store: &mut Vec<Stored>,
    nominated: Option<usize>,
    answer: &Answer,
    request: (Lang, bool),
    now: u64,
    config: &Config,
) {
    let (lang, authorization) = request;
    let shape = &answer.shape;
    let new = if answer.not_modified {
        // Its `Age` is the freshened response's.
        let old = store[nominated.expect("a 304 answers a conditional request")].clone();
        let merged = old.shape.freshened_by(shape);
        Stored {
            lifetime: config.lifetime(&merged).unwrap_or(0),
            purged: false,
            must_revalidate: config.must_revalidate(&merged),
            shape: merged,
            initial_age: shape.age,
            at: now,
            ..old
        }
    } else {
        Stored {
            version: answer.version,
            status: shape.status,
            body: answer.body.clone(),
            secondary: shape.vary.then_some(lang),
            shape: shape.clone(),
            initial_age: shape.age,
            at: now,
            lifetime: config.lifetime(shape).unwrap_or(0),
            purged: false,
            must_revalidate: config.must_revalidate(shape),
        }
    };
    match config.storable(&new.shape, authorization) {
        // One caller's answer says nothing of what others are served.
        Err(Unstorable::Personal) => {}
        // Otherwise the response the request nominated is replaced: by its
        // freshened self, by the new answer, or by nothing.
        verdict => {
            if let Some(i) = nominated {
                store.remove(i);
            }
            if verdict.is_ok() {
                // One response per `Vary` key: the newer replaces the older.
                store.retain(|s| s.secondary != new.secondary);
                store.push(new);
            }
        }
    }
}

/// Updates the model's store for a 200 `answer` to a HEAD that revalidated
/// the stored response at `nominated` (§4.3.5): validators it carries (at
/// least one) and a `Content-Length` that are the stored response's own
/// freshen it as a 304 would; any other 200 marks it stale.
pub fn after_head(store: &mut Vec<Stored>, nominated: usize, answer: &Answer, now: u64, config: &Config) {
    let stored = &store[nominated];
    let same_version = stored.version == answer.version;
    let (etag, modified) = (answer.shape.etag, answer.shape.last_modified);
    // Each validator the answer carries must be the stored one's.
    let same_etag = !etag || (stored.shape.etag && same_version);
    let same_modified = !modified || (stored.shape.last_modified && same_version);
    // And so must its `Content-Length`, which it always sends.
    let same_length = answer.body.len() == stored.body.len();
    let matches = (etag || modified) && same_etag && same_modified && same_length;
    if matches {
        let update = Answer {
            not_modified: true,
            ..answer.clone()
        };
        after_answer(store, Some(nominated), &update, (None, false), now, config);
    } else {
        store[nominated].purged = true;
    }
}

pub fn shape() -> impl Strategy<Value = Shape> {
    let window = || prop_oneof![3 => Just(None), 1 => (0u64..=6).prop_map(Some)];
    (
        prop_oneof![4 => Just(200u16), 1 => Just(404u16)],
        prop_oneof![1 => Just(None), 4 => (0u64..=10).prop_map(Some)],
        prop_oneof![3 => Just(0u64), 1 => 1u64..=4],
        any::<bool>(),
        (
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
        ),
        (window(), window(), prop::bool::weighted(0.3), window()),
        (shared_directives(), prop::bool::weighted(0.3)),
    )
        .prop_map(
            |(
                status,
                max_age,
                age,
                etag,
                (no_cache, no_store, must_revalidate, immutable, must_understand),
                (swr, sie, vary, expires),
                (shared, last_modified),
            )| {
                Shape {
                    status,
                    max_age,
                    age,
                    etag,
                    no_cache,
                    no_store,
                    must_revalidate,
                    immutable,
                    must_understand,
                    stale_while_revalidate: swr,
                    stale_if_error: sie,
                    vary,
                    expires,
                    last_modified,
                    shared,
                }
            },
        )
}

fn shared_directives() -> impl Strategy<Value = SharedDirectives> {
    let flag = || prop::bool::weighted(0.15);
    (
        prop_oneof![3 => Just(None), 1 => (0u64..=10).prop_map(Some)],
        flag(),
        flag(),
        flag(),
    )
        .prop_map(|(s_maxage, private, public, proxy_revalidate)| SharedDirectives {
            s_maxage,
            private,
            public,
            proxy_revalidate,
        })
}

pub fn config() -> impl Strategy<Value = Config> {
    let setting = |most: u64| prop_oneof![2 => Just(None), 1 => (0..=most).prop_map(Some)];
    (setting(8), setting(8), setting(6), any::<[bool; 3]>()).prop_map(
        |(default_ttl, max_ttl, stale_if_error, [shared, stream, declare_length])| Config {
            default_ttl,
            max_ttl,
            stale_if_error,
            shared,
            stream,
            declare_length,
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

/// A mode other than the default.
fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::NoStore),
        Just(Mode::Reload),
        Just(Mode::NoCache),
        Just(Mode::ForceCache),
        Just(Mode::OnlyIfCached),
    ]
}

/// A request directive with the default mode, or a mode alone (the modes
/// stand for directives; mixing both would model what no caller means).
fn directive_and_mode() -> impl Strategy<Value = (Directive, Mode)> {
    prop_oneof![
        8 => directive().prop_map(|d| (d, Mode::Default)),
        3 => mode().prop_map(|m| (Directive::None, m)),
    ]
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        8 => Just(Ask::None),
        2 => (1u32..=4).prop_map(Ask::Tag),
        1 => Just(Ask::Star),
        2 => (1u32..=4).prop_map(Ask::Since),
    ]
}

fn lang() -> impl Strategy<Value = Lang> {
    prop_oneof![2 => Just(None), 1 => Just(Some("en")), 1 => Just(Some("fr"))]
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..=6).prop_map(Step::Advance),
        12 => (directive_and_mode(), lang(), prop::bool::weighted(0.15), ask())
            .prop_map(|((d, m), l, a, k)| Step::Get(d, l, a, k, m)),
        1 => (lang(), ask(), prop_oneof![3 => Just(Mode::Default), 1 => mode()]).prop_map(|(l, k, m)| Step::Head(l, k, m)),
        1 => Just(Step::Post),
        2 => Just(Step::Change),
        2 => prop_oneof![
            2 => Just(Health::Up),
            1 => Just(Health::Failing),
            1 => Just(Health::Unreachable),
            1 => Just(Health::BodiesFail),
        ]
        .prop_map(Step::Health),
        1 => any::<bool>().prop_map(|soft| Step::Purge { soft }),
    ]
}
