//! Hostile input through the whole stack, on paused time: an upstream
//! answering arbitrary header soup (junk directives, absurd ages, lying
//! lengths, odd statuses, `Vary: *`, invalidation headers), bodies that fail
//! midway, errors and hangs, and clients sending junk directives. Whatever
//! happens, nothing panics, no response body is cut short or taken from
//! another URI, a cached answer never carries a lying `Content-Length`, and
//! the cache's accounting stays within its budget and exact.
#![cfg(feature = "stack")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheStatus, Outcome};
use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack};

/// Budget small enough that the larger bodies evict each other.
const MAX_BYTES: usize = 256 << 10;
/// Bodies above this stream through uncached.
const MAX_ENTRY: usize = 32 << 10;
/// The stack's timeout, which a hanging upstream runs into.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Response header values an upstream might send, sensible and not.
const RESPONSE_VALUES: &[(&str, &[&str])] = &[
    (
        "cache-control",
        &[
            "max-age=60",
            "max-age=0",
            "max-age=-5",
            "max-age=99999999999999999999",
            "max-age=\"30\"",
            "max-age",
            "max-age=1e3",
            "s-maxage=30",
            "no-cache",
            "no-cache=\"set-cookie\"",
            "no-store",
            "private",
            "public",
            "must-revalidate",
            "proxy-revalidate",
            "stale-while-revalidate=30",
            "stale-if-error=600",
            "stale-if-error=-1",
            "immutable",
            "=,=,;",
            "MAX-AGE=10, Max-Age=20",
        ],
    ),
    (
        "age",
        &["0", "30", "-1", "abc", "18446744073709551616", "4294967296", ""],
    ),
    (
        "date",
        &[
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Fri, 01 Jan 2100 00:00:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "yesterday",
        ],
    ),
    (
        "expires",
        &[
            "0",
            "-1",
            "Fri, 01 Jan 2100 00:00:00 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "never",
        ],
    ),
    (
        "last-modified",
        &[
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Fri, 01 Jan 2100 00:00:00 GMT",
            "garbage",
        ],
    ),
    ("etag", &["\"v1\"", "W/\"v1\"", "v1", "\"", "*", ""]),
    (
        "vary",
        &["accept-encoding", "*", "Accept-Encoding, Cookie", "x-\u{7f}", ",,", ""],
    ),
    ("retry-after", &["120", "-3", "Fri, 01 Jan 2100 00:00:00 GMT", "soon"]),
    ("set-cookie", &["id=1"]),
    ("connection", &["etag, x-gone", "close", ",,,"]),
    ("surrogate-key", &["a b", "", "   ", "a a a"]),
    ("cache-tag", &["a,b", ",,"]),
    ("cache-groups", &["\"g\"", "\"", "g, \"h\""]),
    ("cache-group-invalidation", &["\"g\"", "\"", "junk"]),
    ("pragma", &["no-cache"]),
    ("content-type", &["application/json", ""]),
];

/// Request header values a client might send.
const REQUEST_VALUES: &[(&str, &[&str])] = &[
    (
        "cache-control",
        &[
            "no-cache",
            "no-store",
            "max-age=0",
            "max-age=-1",
            "max-stale",
            "max-stale=30",
            "min-fresh=1000",
            "only-if-cached",
            "max-age=99999999999999999999",
            "=;=",
        ],
    ),
    ("accept-encoding", &["gzip", "br", ""]),
    ("cookie", &["a=1", "a=2"]),
    ("authorization", &["Bearer x"]),
    ("if-none-match", &["\"v1\"", "*", "junk"]),
    ("if-modified-since", &["Sun, 06 Nov 1994 08:49:37 GMT", "junk"]),
    ("pragma", &["no-cache"]),
];

const PATHS: &[&str] = &["/a", "/a?x=1", "/A/../a", "/b%20c", "/tagged"];
const STATUSES: &[u16] = &[
    200, 200, 200, 200, 200, 200, 200, 200, 203, 204, 206, 301, 304, 404, 410, 429, 500, 502, 503,
];
/// Sensible freshness most answers start from, so that entries are stored,
/// hit, go stale, revalidate and get refreshed before the soup spoils them.
const FRESHNESS: &[&str] = &[
    "max-age=600",
    "max-age=600",
    "max-age=30, stale-while-revalidate=600",
    "max-age=1, stale-if-error=6000",
    "no-cache",
    "max-age=60, must-revalidate",
];
const LENGTHS: &[usize] = &[0, 16, 700, 40 << 10];
const ADVANCES: &[u64] = &[0, 0, 1, 5, 31, 61, 700, 4000];

/// A header line: a listed value, or arbitrary bytes (invalid ones are
/// replaced, since no `HeaderValue` can hold them).
fn header(table: &'static [(&'static str, &'static [&'static str])]) -> impl Strategy<Value = (String, Vec<u8>)> {
    let listed = (0..table.len()).prop_flat_map(move |i| {
        let (name, values) = table[i];
        (
            Just(name.to_owned()),
            prop::sample::select(values).prop_map(|v| v.as_bytes().to_vec()),
        )
    });
    let raw = (
        prop::sample::select(table.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(name, bytes)| (name.to_owned(), bytes));
    prop_oneof![4 => listed, 1 => raw]
}

fn value(bytes: &[u8]) -> HeaderValue {
    let clean: Vec<u8> = bytes
        .iter()
        .map(|&b| {
            if b == b'\t' || (b >= 0x20 && b != 0x7f) {
                b
            } else {
                b'?'
            }
        })
        .collect();
    HeaderValue::from_bytes(&clean).expect("visible bytes make a value")
}

#[derive(Debug, Clone)]
enum Length {
    Absent,
    Correct,
    Wrong,
    Junk,
}

#[derive(Debug, Clone)]
enum Behaviour {
    Answer {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        len: usize,
        length: Length,
        fails_midway: bool,
    },
    Error,
    Hang,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    let base = (
        prop::option::weighted(0.8, prop::sample::select(FRESHNESS)),
        prop::option::weighted(0.5, prop::sample::select(&["\"v1\"", "\"v2\"", "W/\"v1\""][..])),
    )
        .prop_map(|(freshness, etag)| {
            let mut headers = Vec::new();
            if let Some(freshness) = freshness {
                headers.push(("cache-control".to_owned(), freshness.as_bytes().to_vec()));
            }
            if let Some(etag) = etag {
                headers.push(("etag".to_owned(), etag.as_bytes().to_vec()));
            }
            headers
        });
    let soup = prop::collection::vec(header(RESPONSE_VALUES), 0..4);
    let answer = (
        prop::sample::select(STATUSES),
        (base, soup).prop_map(|(mut base, soup)| {
            base.extend(soup);
            base
        }),
        prop::sample::select(LENGTHS),
        prop_oneof![
            4 => Just(Length::Absent),
            4 => Just(Length::Correct),
            1 => Just(Length::Wrong),
            1 => Just(Length::Junk)
        ],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(status, headers, len, length, fails_midway)| Behaviour::Answer {
            status,
            headers,
            len,
            length,
            fails_midway,
        });
    prop_oneof![18 => answer, 1 => Just(Behaviour::Error), 1 => Just(Behaviour::Hang)]
}

#[derive(Debug, Clone)]
struct Exchange {
    method: Method,
    path: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    advance: u64,
    /// Sent together with the next exchange.
    with_next: bool,
}

fn exchange() -> impl Strategy<Value = Exchange> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::GET,
        Method::GET,
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::DELETE,
    ]);
    (
        method,
        prop::sample::select(PATHS),
        // Most requests carry nothing special, so entries get hit.
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(header(REQUEST_VALUES), 1..3)],
        prop::sample::select(ADVANCES),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(method, path, headers, advance, with_next)| Exchange {
            method,
            path,
            headers,
            advance,
            with_next,
        })
}

/// A body that yields half its bytes and then fails.
struct FailsMidway(Option<Bytes>);

impl Body for FailsMidway {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(match self.0.take() {
            Some(half) => Ok(Frame::data(half)),
            None => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
        }))
    }
}

type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the upstream sent, by cache key: every body it answered with.
type Sent = Arc<Mutex<HashMap<String, Vec<Bytes>>>>;

/// Writes that succeeded, by cache key: the batch they were sent in and the
/// upstream call that answered the latest.
type Writes = Arc<Mutex<HashMap<String, (usize, usize)>>>;

/// The upstream call number a body starts with (`#n#`).
fn call_number(body: &[u8]) -> Option<usize> {
    let rest = body.strip_prefix(b"#")?;
    let end = rest.iter().position(|&b| b == b'#')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn key_of(uri: &Uri) -> String {
    Cache::key_for_uri(uri).unwrap_or_default()
}

/// The upstream: call `n` behaves as `script[n % len]`, with a body unique
/// to the call.
fn upstream(
    script: Arc<Vec<Behaviour>>,
    sent: Sent,
) -> impl tower::Service<Request<Full<Bytes>>, Response = Response<UpBody>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let behaviour = script[n % script.len()].clone();
        let sent = sent.clone();
        async move {
            // Answers take a moment, so requests sent together overlap, and
            // not all the same moment, so they finish out of order.
            tokio::time::sleep(Duration::from_millis(10 * (n as u64 % 4 + 1))).await;
            let (status, headers, len, length, fails_midway) = match behaviour {
                Behaviour::Error => {
                    return Err::<_, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
                }
                Behaviour::Hang => {
                    tokio::time::sleep(TIMEOUT * 4).await;
                    return Err("hung".into());
                }
                Behaviour::Answer {
                    status,
                    headers,
                    len,
                    length,
                    fails_midway,
                } => (status, headers, len, length, fails_midway),
            };
            let body = if req.method() == Method::HEAD {
                Bytes::new()
            } else {
                let mut body = format!("#{n}#").into_bytes();
                body.resize(len.max(body.len()), b'.');
                Bytes::from(body)
            };
            sent.lock()
                .unwrap()
                .entry(key_of(req.uri()))
                .or_default()
                .push(body.clone());
            let mut res = Response::builder().status(status);
            for (name, bytes) in &headers {
                res = res.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), value(bytes));
            }
            match length {
                Length::Absent => {}
                Length::Correct => res = res.header(CONTENT_LENGTH, body.len()),
                Length::Wrong => res = res.header(CONTENT_LENGTH, body.len() + 5),
                Length::Junk => res = res.header(CONTENT_LENGTH, "12abc"),
            }
            let body: UpBody = if fails_midway {
                FailsMidway(Some(body.slice(..body.len() / 2))).boxed_unsync()
            } else {
                Full::new(body).map_err(|e: Infallible| match e {}).boxed_unsync()
            };
            Ok(res.body(body).unwrap())
        }
    })
}

/// Sends exchange `i` of batch `batch` and checks what comes back.
async fn exchange_once(
    (i, batch): (usize, usize),
    ex: Exchange,
    client: OptimizedService<Full<Bytes>>,
    (sent, writes): (Sent, Writes),
) -> Result<(), String> {
    let uri: Uri = format!("http://up.test{}", ex.path).parse().unwrap();
    let mut req = Request::builder().method(ex.method.clone()).uri(uri.clone());
    for (name, bytes) in &ex.headers {
        req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), value(bytes));
    }
    let req = req.body(Full::default()).unwrap();
    let Ok(res) = client.clone().oneshot(req).await else {
        // An error reaches the caller as an error: allowed.
        return Ok(());
    };
    let status = res.status();
    let outcome = res.extensions().get::<CacheStatus>().map(CacheStatus::outcome);
    let from_cache = outcome.is_some_and(|o| matches!(o, Outcome::Hit | Outcome::StaleHit | Outcome::Revalidated));
    if from_cache && status == 304 {
        // Conditional requests bypass the cache: a 304 from it would
        // answer a question the client never asked.
        return Err(format!("exchange {i}: the cache answered 304 ({outcome:?})"));
    }
    if res.headers().get("cache-status").is_none() {
        return Err(format!("exchange {i}: no Cache-Status header"));
    }
    let declared = res.headers().get(CONTENT_LENGTH).cloned();
    let body = match res.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if from_cache => return Err(format!("exchange {i}: a cached body failed: {e}")),
        // An upstream body that failed midway fails for its caller too.
        Err(_) => return Ok(()),
    };
    let n = call_number(&body);
    let unsafe_method = ex.method == Method::POST || ex.method == Method::DELETE;
    if let (true, true, Some(n)) = (unsafe_method, status.as_u16() < 400, n) {
        // RFC 9111 §4.4: a non-error answer to an unsafe method invalidates
        // the URI; nothing fetched before it may be served after it.
        let mut writes = writes.lock().unwrap();
        let latest = writes.entry(key_of(&uri)).or_insert((batch, n));
        *latest = (batch, latest.1.max(n));
    }
    if ex.method == Method::GET {
        let written = writes.lock().unwrap().get(&key_of(&uri)).copied();
        if let (Some((write_batch, write_call)), Some(n)) = (written, n) {
            if write_batch < batch && n < write_call {
                return Err(format!(
                    "exchange {i}: answered with call #{n}, fetched before the write answered by call #{write_call}"
                ));
            }
        }
    }
    if ex.method == Method::HEAD {
        if !body.is_empty() {
            return Err(format!("exchange {i}: HEAD answered with a body"));
        }
    } else if !(body.is_empty() && matches!(status.as_u16(), 304 | 504)) {
        let sent = sent.lock().unwrap();
        let whole = sent.get(&key_of(&uri)).is_some_and(|bodies| bodies.contains(&body));
        if !whole {
            return Err(format!(
                "exchange {i}: {status} body of {} bytes is not one the upstream sent for {}",
                body.len(),
                ex.path
            ));
        }
    }
    if from_cache {
        // A HEAD declares the length of the stored GET's body.
        let expected = if ex.method == Method::HEAD {
            let sent = sent.lock().unwrap();
            sent.get(&key_of(&uri))
                .map(|bodies| bodies.iter().map(|b| b.len().to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        } else {
            vec![body.len().to_string()]
        };
        if let Some(declared) = declared {
            if !declared.to_str().is_ok_and(|d| expected.iter().any(|e| e == d)) {
                return Err(format!(
                    "exchange {i}: cached answer declares {declared:?}, expected one of {expected:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Runs the exchanges through a full stack; the first broken rule, if any.
async fn run(script: Vec<Behaviour>, exchanges: Vec<Exchange>) -> Result<(), String> {
    let cache = Cache::builder()
        .max_bytes(MAX_BYTES)
        .max_entry_bytes(MAX_ENTRY)
        .heuristic_freshness(10)
        .stale_if_error(Duration::from_secs(300))
        .build()
        .unwrap();
    let sent = Sent::default();
    let (layer, _optimizer) = OptimizerStack::builder()
        .cache(cache.clone())
        .invalidation(InvalidationLayer::new(Invalidator::new(cache.clone())))
        .circuit_breaker(CircuitBreakerConfig::default())
        .timeout(TIMEOUT)
        .monitor(MonitorSettings::default())
        .build::<Full<Bytes>>()
        .unwrap();
    let client = layer.layer(upstream(Arc::new(script), sent.clone()));
    let writes = Writes::default();
    let mut exchanges = exchanges.into_iter().enumerate();
    let mut batch = 0;
    while let Some((i, ex)) = exchanges.next() {
        batch += 1;
        let shared = || (sent.clone(), writes.clone());
        tokio::time::advance(Duration::from_secs(ex.advance)).await;
        // A run of exchanges marked `with_next` goes out at once, so
        // misses coalesce and race refreshes and invalidations.
        let mut tasks = tokio::task::JoinSet::new();
        let mut with_next = ex.with_next;
        tasks.spawn(exchange_once((i, batch), ex, client.clone(), shared()));
        while with_next {
            let Some((i, ex)) = exchanges.next() else { break };
            with_next = ex.with_next;
            tasks.spawn(exchange_once((i, batch), ex, client.clone(), shared()));
        }
        while let Some(result) = tasks.join_next().await {
            result.map_err(|e| format!("an exchange panicked: {e}"))??;
        }
        let stats = cache.stats();
        if stats.bytes > stats.max_bytes {
            return Err(format!(
                "exchange {i}: {} bytes over a budget of {}",
                stats.bytes, stats.max_bytes
            ));
        }
    }
    // Let background refreshes settle, then check the books.
    tokio::time::advance(TIMEOUT * 5).await;
    tokio::task::yield_now().await;
    let audit = cache.audit();
    if !audit.is_clean() {
        return Err(format!("accounting drifted: {audit:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_upstreams_and_clients_break_nothing(
        script in prop::collection::vec(behaviour(), 1..12),
        exchanges in prop::collection::vec(exchange(), 1..32),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(run(script, exchanges));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
