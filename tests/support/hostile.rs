//! What the hostile-input test generates: header soup, odd statuses,
//! failing bodies, errors and hangs from the upstream; junk directives and
//! API invalidations from the client side.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower_optimizer::BoxError;
use tower_optimizer::cache::Cache;

/// The stack's timeout, which a hanging upstream runs into.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Response header values an upstream might send, sensible and not.
pub(crate) const RESPONSE_VALUES: &[(&str, &[&str])] = &[
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
    ("content-type", &["application/json", "application/grpc", ""]),
    // gRPC's status in a head (a Trailers-Only answer), valid or not.
    ("grpc-status", GRPC_STATUSES),
];

/// `grpc-status` values, in a head or in trailers: codes, a code gRPC does
/// not define, and junk.
pub(crate) const GRPC_STATUSES: &[&str] = &["0", "5", "14", "99", "", "abc", "18446744073709551616"];

/// Request header values a client might send.
pub(crate) const REQUEST_VALUES: &[(&str, &[&str])] = &[
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

pub(crate) const PATHS: &[&str] = &["/a", "/a?x=1", "/A/../a", "/b%20c", "/tagged"];
pub(crate) const STATUSES: &[u16] = &[
    200, 200, 200, 200, 200, 200, 200, 200, 203, 204, 206, 301, 304, 404, 410, 429, 500, 502, 503,
];
/// Sensible freshness most answers start from, so that entries are stored,
/// hit, go stale, revalidate and get refreshed before the soup spoils them.
pub(crate) const FRESHNESS: &[&str] = &[
    "max-age=600",
    "max-age=600",
    "max-age=30, stale-while-revalidate=600",
    "max-age=1, stale-if-error=6000",
    "no-cache",
    "max-age=60, must-revalidate",
];
pub(crate) const LENGTHS: &[usize] = &[0, 16, 700, 40 << 10];
pub(crate) const ADVANCES: &[u64] = &[0, 0, 1, 5, 31, 61, 700, 4000];

/// A header line: a listed value, or arbitrary bytes (invalid ones are
/// replaced, since no `HeaderValue` can hold them).
pub(crate) fn header(
    table: &'static [(&'static str, &'static [&'static str])],
) -> impl Strategy<Value = (String, Vec<u8>)> {
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

pub(crate) fn value(bytes: &[u8]) -> HeaderValue {
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
pub(crate) enum Length {
    Absent,
    Correct,
    Wrong,
    Junk,
}

#[derive(Debug, Clone)]
pub(crate) enum Behaviour {
    Answer {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        len: usize,
        length: Length,
        fails_midway: bool,
        /// A `grpc-status` in trailers after the body.
        trailers: Option<&'static str>,
    },
    Error,
    Hang,
}

pub(crate) fn behaviour() -> impl Strategy<Value = Behaviour> {
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
        prop::option::weighted(0.15, prop::sample::select(GRPC_STATUSES)),
    )
        .prop_map(
            |(status, headers, len, length, fails_midway, trailers)| Behaviour::Answer {
                status,
                headers,
                len,
                length,
                fails_midway,
                trailers,
            },
        );
    prop_oneof![18 => answer, 1 => Just(Behaviour::Error), 1 => Just(Behaviour::Hang)]
}

/// What an exchange does: a request, or an invalidation through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Request,
    /// `Invalidator::uri` of the exchange's path.
    Uri,
    /// `Cache::clear`.
    Clear,
    /// `Invalidator::pattern` matching every key.
    Pattern,
    /// `Invalidator::bump_version` of the namespace every response is in.
    Version,
}

#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) op: Op,
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) advance: u64,
    /// Sent together with the next exchange.
    pub(crate) with_next: bool,
}

pub(crate) fn exchange() -> impl Strategy<Value = Exchange> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::GET,
        Method::GET,
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::DELETE,
    ]);
    let op = prop_oneof![
        24 => Just(Op::Request),
        1 => Just(Op::Uri),
        1 => Just(Op::Clear),
        1 => Just(Op::Pattern),
        1 => Just(Op::Version)
    ];
    (
        (op, method),
        prop::sample::select(PATHS),
        // Most requests carry nothing special, so entries get hit.
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(header(REQUEST_VALUES), 1..3)],
        prop::sample::select(ADVANCES),
        prop::bool::weighted(0.3),
    )
        .prop_map(|((op, method), path, headers, advance, with_next)| Exchange {
            op,
            method,
            path,
            headers,
            advance,
            with_next,
        })
}

/// A body that yields half its bytes and then fails.
pub(crate) struct FailsMidway(pub(crate) Option<Bytes>);

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

pub(crate) type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the upstream sent, by cache key: every body it answered with.
pub(crate) type Sent = Arc<Mutex<HashMap<String, Vec<Bytes>>>>;

/// The upstream call number a body starts with (`#n#`).
pub(crate) fn call_number(body: &[u8]) -> Option<usize> {
    let rest = body.strip_prefix(b"#")?;
    let end = rest.iter().position(|&b| b == b'#')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

pub(crate) fn key_of(uri: &Uri) -> String {
    // Keys as every cache here does (default settings); it runs no task.
    static KEYS: std::sync::LazyLock<Cache> =
        std::sync::LazyLock::new(|| Cache::builder().sweep_interval(None).build().unwrap());
    KEYS.key_for_uri(uri).unwrap_or_default()
}

/// The upstream: call `n` behaves as `script[n % len]`, with a body unique
/// to the call.
pub(crate) fn upstream(
    script: Arc<Vec<Behaviour>>,
    sent: Sent,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<Request<Full<Bytes>>, Response = Response<UpBody>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let behaviour = script[n % script.len()].clone();
        let sent = sent.clone();
        async move {
            // Answers take a moment, so requests sent together overlap, and
            // not all the same moment, so they finish out of order.
            tokio::time::sleep(Duration::from_millis(10 * (n as u64 % 4 + 1))).await;
            let (status, headers, len, length, fails_midway, trailers) = match behaviour {
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
                    trailers,
                } => (status, headers, len, length, fails_midway, trailers),
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
            } else if let Some(status) = trailers {
                let mut map = http::HeaderMap::new();
                map.insert("grpc-status", http::HeaderValue::from_static(status));
                Full::new(body)
                    .with_trailers(async move { Some(Ok(map)) })
                    .map_err(|e: Infallible| match e {})
                    .boxed_unsync()
            } else {
                Full::new(body).map_err(|e: Infallible| match e {}).boxed_unsync()
            };
            Ok(res.body(body).unwrap())
        }
    })
}
