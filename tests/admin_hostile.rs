//! Hostile requests to the admin service, called as axum calls a mounted
//! service: arbitrary methods, paths, query strings, `Authorization` values
//! and bodies (junk, JSON of every shape the routes read, oversized), on
//! paused time. Nothing panics. Without the token (liveness aside, when
//! exempt) every answer is a 401 with `WWW-Authenticate`. With it, no
//! answer is a server error, a 405 says what is allowed, a body over the
//! limit is a 413, a HEAD has no body and each JSON answer parses. And
//! only a `200` to a `POST` changes anything: after any other answer the
//! cache's entries, its invalidation counts, the version namespace and the
//! breakers' states are as they were.
#![cfg(all(feature = "monitor", feature = "invalidation", feature = "circuit-breaker"))]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::PrometheusHandle;
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_optimizer::cache::{Cache, CacheLayer, Versions};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakers};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::monitor::{
    AdminService, AlertManager, CheckResult, HealthRegistry, LivenessAuth, Monitor, Probe, Stats, install_prometheus,
};

/// A base64 token: `+`, `/` and `=` are where query and header readings
/// part ways.
const TOKEN: &str = "aB+c/d=";
/// The admin's body limit (`MAX_BODY` in `monitor/admin.rs`).
const MAX_BODY: usize = 64 * 1024;
/// The version namespace the stored responses are stamped in.
const NAMESPACE: &str = "v";
/// URIs stored before each case.
const STORED: [&str; 3] = [
    "http://api.test/users/1",
    "http://api.test/users/2",
    "http://api.test/items/1",
];

/// Installed outside any runtime (no upkeep task), once per test binary.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| install_prometheus().expect("install the recorder"))
        .clone()
}

/// What an admin request may change.
#[derive(Debug, PartialEq)]
struct State {
    entries: Vec<(String, Vec<String>, tokio::time::Instant)>,
    invalidations: Vec<u64>,
    version: u64,
    breakers: Vec<(String, String)>,
}

struct Ctx {
    admin: AdminService,
    cache: Cache,
    inv: Invalidator,
    breakers: CircuitBreakers,
    exempt: bool,
}

impl Ctx {
    fn state(&self) -> State {
        let mut entries: Vec<_> = self
            .cache
            .entries()
            .into_iter()
            .map(|e| {
                (
                    e.key.to_string(),
                    e.tags.iter().map(ToString::to_string).collect(),
                    e.fresh_until,
                )
            })
            .collect();
        entries.sort();
        let mut breakers: Vec<_> = self
            .breakers
            .snapshot()
            .into_iter()
            .map(|b| (b.key.to_string(), format!("{:?}", b.state)))
            .collect();
        breakers.sort();
        State {
            entries,
            invalidations: self.cache.stats().invalidations.to_vec(),
            version: self.inv.version(NAMESPACE),
            breakers,
        }
    }
}

/// A cache holding [`STORED`] (tagged `users` or `items`, stamped in
/// [`NAMESPACE`]), a breaker that has seen one call, a monitor, passing
/// checks and the admin over all of it.
async fn setup(exempt: bool, prometheus: PrometheusHandle) -> Ctx {
    let cache = Cache::builder().build().unwrap();
    let inv = Invalidator::new(cache.clone());
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let breakers = breaker.breakers();
    let stamping = inv.clone();
    let upstream = service_fn(move |request: Request<Full<Bytes>>| {
        let tag = if request.uri().path().starts_with("/users") {
            "users"
        } else {
            "items"
        };
        let mut response = Response::builder()
            .header("cache-control", "max-age=600")
            .header("surrogate-key", tag)
            .body(Full::new(Bytes::from_static(b"stored")))
            .unwrap();
        response
            .extensions_mut()
            .insert(Versions(vec![stamping.stamp(NAMESPACE)]));
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let mut client = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .layer(InvalidationLayer::new(inv.clone()))
        .layer(breaker)
        .service(upstream);
    for uri in STORED {
        let request = Request::get(uri).body(Full::default()).unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(cache.stats().entries, STORED.len() as u64, "all stored");
    let monitor = Monitor::builder()
        .stats(Stats::default())
        .cache(cache.clone())
        .breakers(breakers.clone())
        .alerts(AlertManager::with_default_rules(1024.0 * 1024.0 * 1024.0))
        .build();
    monitor.sample_now();
    let health = HealthRegistry::new();
    health.register("process", Probe::Liveness, Duration::from_secs(1), || async {
        CheckResult::pass()
    });
    health.register("upstream", Probe::Readiness, Duration::from_secs(1), || async {
        CheckResult::pass()
    });
    let admin = AdminService::builder()
        .token(TOKEN)
        .liveness(if exempt {
            LivenessAuth::Exempt
        } else {
            LivenessAuth::Required
        })
        .prometheus(prometheus)
        .monitor(monitor)
        .health(health)
        .invalidator(inv.clone())
        .breakers(breakers.clone())
        .build();
    Ctx {
        admin,
        cache,
        inv,
        breakers,
        exempt,
    }
}

/// One hostile request.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    path: String,
    query: Option<String>,
    authorization: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        1 => Just(Method::HEAD),
        4 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::from_bytes(b"BREW").unwrap()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    const ROUTES: [&str; 13] = [
        "/metrics",
        "/health/live",
        "/health/ready",
        "/stats",
        "/alerts",
        "/dashboard",
        "/",
        "/cache/invalidate",
        "/breakers",
        "/breakers/",
        "//stats",
        "/cache/%2e%2e/stats",
        "/STATS",
    ];
    prop_oneof![
        3 => Just("/cache/invalidate".to_owned()),
        2 => Just("/breakers".to_owned()),
        4 => prop::sample::select(&ROUTES[..]).prop_map(str::to_owned),
        1 => "/[a-zA-Z0-9/._~%-]{0,24}",
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just(format!("token={TOKEN}")),
        Just("token=aB%2Bc%2Fd%3D".to_owned()),
        Just("token=aB%20c/d=".to_owned()),
        Just(format!("x=1&token={TOKEN}&y")),
        Just("token=wrong".to_owned()),
        "[a-zA-Z0-9=&%+/._-]{0,24}",
    ])
}

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    let byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    prop_oneof![
        6 => prop::sample::select(vec![
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER  {TOKEN} "),
        ])
        .prop_map(|value| Some(value.into_bytes())),
        2 => prop::sample::select(vec![
            format!("Bearer{TOKEN}"),
            "Bearer wrong".to_owned(),
            "Basic YWRtaW46YUIrYy9kPQ==".to_owned(),
            "Bearer".to_owned(),
        ])
        .prop_map(|value| Some(value.into_bytes())),
        1 => prop::collection::vec(byte, 0..40).prop_map(Some),
        2 => Just(None),
    ]
}

/// JSON objects over the names the routes read, each with a good or a bad
/// value; JSON of other shapes; junk bytes; a body over the limit.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just(serde_json::json!("http://api.test/users/1")),
        Just(serde_json::json!("users")),
        Just(serde_json::json!("items")),
        Just(serde_json::json!("^http://api\\.test/users/.*")),
        Just(serde_json::json!("(unclosed")),
        Just(serde_json::json!("relative/path")),
        Just(serde_json::json!(NAMESPACE)),
        Just(serde_json::json!("http://api.test")),
        Just(serde_json::json!("force_open")),
        Just(serde_json::json!("force_closed")),
        Just(serde_json::json!("reset")),
        Just(serde_json::json!("disable")),
        Just(serde_json::json!("metrics_only")),
        Just(serde_json::json!("trip")),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(-5)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("explode")),
        Just(serde_json::json!(true)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!(["users"])),
        "[ -~]{0,16}".prop_map(serde_json::Value::from),
    ];
    let names = prop::sample::select(
        &[
            "uri",
            "tag",
            "pattern",
            "version",
            "soft",
            "key",
            "action",
            "open_for_ms",
            "other",
        ][..],
    );
    let object = prop::collection::vec((names, value), 0..4).prop_map(|fields| {
        let map: serde_json::Map<_, _> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&map).unwrap()
    });
    // What an operator would send, right or nearly right.
    let meant = (
        prop::sample::select(&["uri", "tag", "pattern", "version", "key"][..]),
        prop::sample::select(
            &[
                "http://api.test/users/1",
                "HTTP://API.test:80/users/2",
                "/users/1",
                "users",
                "items",
                "nothing",
                "^/users/\\d+$",
                "^http://api\\.test/",
                "[",
                NAMESPACE,
                "http://api.test",
                "http://other.test",
            ][..],
        ),
        prop::option::of(prop::sample::select(
            &[
                "force_open",
                "force_closed",
                "reset",
                "disable",
                "metrics_only",
                "Reset",
            ][..],
        )),
        any::<bool>(),
    )
        .prop_map(|(name, value, action, soft)| {
            let mut map = serde_json::Map::new();
            map.insert(name.to_owned(), value.into());
            if let Some(action) = action {
                map.insert("action".to_owned(), action.into());
            }
            if soft {
                map.insert("soft".to_owned(), true.into());
            }
            serde_json::to_vec(&map).unwrap()
        });
    let action = (
        prop::sample::select(&["http://api.test", "http://other.test", "", "api.test"][..]),
        prop::sample::select(
            &[
                "force_open",
                "force_closed",
                "reset",
                "disable",
                "metrics_only",
                "trip",
                "open",
            ][..],
        ),
        prop::option::of(prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!("30s")),
        ]),
    )
        .prop_map(|(key, action, open_for)| {
            let mut body = serde_json::json!({"key": key, "action": action});
            if let Some(ms) = open_for {
                body["open_for_ms"] = ms;
            }
            serde_json::to_vec(&body).unwrap()
        });
    prop_oneof![
        2 => Just(Vec::new()),
        6 => meant,
        3 => action,
        3 => object,
        1 => prop::sample::select(&["[]", "\"x\"", "1", "null", "{", "{\"tag\": \"users\"", "{}{}"][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![b' '; MAX_BODY + 1]),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    (method(), path(), query(), authorization(), body()).prop_map(|(method, path, query, authorization, body)| Sent {
        method,
        path,
        query,
        authorization,
        body,
    })
}

/// Whether the admin is to let `sent` in: the scheme `Bearer` in any case
/// and the token, or on GET and HEAD the token in the query, as sent or
/// percent-decoded; or liveness, when exempt.
fn authorised(sent: &Sent, exempt: bool) -> bool {
    if exempt && sent.path == "/health/live" {
        return true;
    }
    let header = sent.authorization.as_deref().is_some_and(|value| {
        value.len() > 7
            && value[..6].eq_ignore_ascii_case(b"bearer")
            && value[6] == b' '
            && value[7..].trim_ascii() == TOKEN.as_bytes()
    });
    let query = matches!(sent.method, Method::GET | Method::HEAD)
        && sent.query.as_deref().is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("token="))
                .any(|t| t == TOKEN || decoded(t) == TOKEN.as_bytes())
        });
    header || query
}

/// `%XX` escapes decoded, anything else (a `+`, a stray `%`) as it is.
fn decoded(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let escape = tail
            .get(..2)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) if first == b'%' => {
                out.push(byte);
                rest = &tail[2..];
            }
            _ => {
                out.push(first);
                rest = tail;
            }
        }
    }
    out
}

/// Sends each of `requests` to the admin and checks what it answers and
/// what it changed.
async fn run(exempt: bool, requests: Vec<Sent>, prometheus: PrometheusHandle) -> Result<(), String> {
    let ctx = setup(exempt, prometheus).await;
    for sent in requests {
        let target = match &sent.query {
            Some(q) => format!("{}?{q}", sent.path),
            None => sent.path.clone(),
        };
        let mut request = Request::builder().method(sent.method.clone()).uri(&target);
        if let Some(value) = &sent.authorization {
            request = request.header(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        // A path or query the URI parser refuses never reaches a service.
        let Ok(request) = request.body(Full::new(Bytes::from(sent.body.clone()))) else {
            continue;
        };
        let before = ctx.state();
        let response = ctx.admin.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let status = parts.status;
        let what = format!("{sent:?} answered {status}: {}", String::from_utf8_lossy(&body));
        let after = ctx.state();
        if !authorised(&sent, ctx.exempt) {
            if status != StatusCode::UNAUTHORIZED || !parts.headers.contains_key(WWW_AUTHENTICATE) {
                return Err(format!("not authorised, yet {what}"));
            }
        } else if status.is_server_error() {
            return Err(format!("a server error: {what}"));
        } else if status == StatusCode::UNAUTHORIZED {
            return Err(format!("authorised, yet {what}"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED && !parts.headers.contains_key(ALLOW) {
            return Err(format!("a 405 without Allow: {what}"));
        }
        let posted = sent.method == Method::POST && matches!(sent.path.as_str(), "/cache/invalidate" | "/breakers");
        let too_large = posted && authorised(&sent, ctx.exempt) && sent.body.len() > MAX_BODY;
        if (status == StatusCode::PAYLOAD_TOO_LARGE) != too_large {
            return Err(format!("{} bytes: {what}", sent.body.len()));
        }
        if sent.method == Method::HEAD && !body.is_empty() {
            return Err(format!("a HEAD with a body: {what}"));
        }
        let json = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().ends_with(b"json"));
        if json && sent.method != Method::HEAD && serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            return Err(format!("JSON that does not parse: {what}"));
        }
        let changes = sent.method == Method::POST && status == StatusCode::OK;
        if !changes && after != before {
            return Err(format!("{what} changed {before:?} into {after:?}"));
        }
    }
    // Whatever was purged, the accounting is exact.
    let audit = ctx.cache.audit();
    if !audit.is_clean() {
        return Err(format!("accounting drifted: {audit:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_admin_requests_change_nothing_they_may_not(
        exempt in any::<bool>(),
        requests in prop::collection::vec(sent(), 1..10),
    ) {
        let prometheus = prometheus();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(run(exempt, requests, prometheus));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// The cases the property's generators reach only now and then, once each.
#[tokio::test(start_paused = true)]
async fn the_token_and_the_body_limit_at_their_edges() {
    let ctx = setup(false, prometheus()).await;
    let send = |method: Method, target: &str, authorization: Option<&str>, body: Vec<u8>| {
        let mut request = Request::builder().method(method).uri(target);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let admin = ctx.admin.clone();
        async move { admin.oneshot(request).await.unwrap().status() }
    };
    for (authorization, expected) in [
        (format!("Bearer {TOKEN}"), StatusCode::OK),
        (format!("bearer {TOKEN}"), StatusCode::OK),
        (format!("BeArEr   {TOKEN}  "), StatusCode::OK),
        (format!("Bearer{TOKEN}"), StatusCode::UNAUTHORIZED),
        (format!("Basic {TOKEN}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {TOKEN}x"), StatusCode::UNAUTHORIZED),
    ] {
        let got = send(Method::GET, "/stats", Some(&authorization), Vec::new()).await;
        assert_eq!(got, expected, "{authorization:?}");
    }
    let auth = format!("Bearer {TOKEN}");
    let tag = br#"{"tag": "users"}"#.to_vec();
    let mut padded = tag.clone();
    padded.resize(MAX_BODY, b' ');
    let before = ctx.state();
    let mut over = padded.clone();
    over.push(b' ');
    let status = send(Method::POST, "/cache/invalidate", Some(&auth), over).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ctx.state(), before, "refused whole");
    let status = send(Method::POST, "/cache/invalidate", Some(&auth), padded).await;
    assert_eq!(status, StatusCode::OK, "exactly at the limit");
    assert_eq!(ctx.cache.stats().entries, 1, "the two users purged");
}
