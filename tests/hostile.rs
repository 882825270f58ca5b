//! Hostile input through the whole stack, on paused time: an upstream
//! answering arbitrary header soup (junk directives, absurd ages, lying
//! lengths, odd statuses, `Vary: *`, invalidation headers, `grpc-status`
//! junk read by a gRPC-aware breaker), bodies that fail midway or end in
//! trailers, errors and hangs (retried, as the stack's retries would), and
//! clients sending junk directives. Whatever happens, nothing panics, no response body is cut short or taken from
//! another URI, a cached answer never carries a lying `Content-Length`, and
//! the cache's accounting stays within its budget and exact. API
//! invalidations and writes (`POST`, `DELETE`) are mixed in: nothing fetched
//! before one is served after it. The generators are in
//! `support/hostile.rs`.
#![cfg(feature = "stack")]

#[path = "support/hostile.rs"]
mod generate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use generate::{Behaviour, Exchange, Op, Sent, TIMEOUT, behaviour, call_number, exchange, key_of, upstream, value};
use http::header::{CONTENT_LENGTH, HeaderName};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_optimizer::cache::{Cache, CacheStatus, Outcome};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, GrpcClassifier};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::retry::RetryPolicy;
use tower_optimizer::stack::{MonitorSettings, OptimizedService, OptimizerStack};

/// Budget small enough that the larger bodies evict each other.
const MAX_BYTES: usize = 256 << 10;
/// Bodies above this stream through uncached.
const MAX_ENTRY: usize = 32 << 10;
/// The version namespace every response is stamped in.
const NAMESPACE: &str = "all";

/// Writes and invalidations that succeeded, by cache key (`*`: every key):
/// the batch of the latest, and the upstream calls that started before it
/// (answers of calls numbered below must not be served after it).
type Writes = Arc<Mutex<HashMap<String, (usize, usize)>>>;

/// Records that nothing fetched by calls numbered below `barrier` may be
/// served for `key` after batch `batch`.
fn record_write(writes: &Writes, key: String, batch: usize, barrier: usize) {
    let mut writes = writes.lock().unwrap();
    let latest = writes.entry(key).or_insert((batch, barrier));
    *latest = (batch, latest.1.max(barrier));
}

/// What every exchange of a run shares.
#[derive(Clone)]
struct Ctx {
    client: OptimizedService<Full<Bytes>>,
    cache: Cache,
    invalidator: Invalidator,
    calls: Arc<AtomicUsize>,
    sent: Sent,
    writes: Writes,
}

/// Sends exchange `i` of batch `batch` and checks what comes back.
async fn exchange_once((i, batch): (usize, usize), ex: Exchange, ctx: Ctx) -> Result<(), String> {
    let Ctx {
        client,
        cache,
        invalidator,
        calls,
        sent,
        writes,
    } = ctx;
    let uri: Uri = format!("http://up.test{}", ex.path).parse().unwrap();
    if ex.op != Op::Request {
        let barrier = calls.load(Ordering::SeqCst);
        let key = match ex.op {
            Op::Uri => {
                invalidator.uri(&uri);
                key_of(&uri)
            }
            Op::Clear => {
                cache.clear();
                "*".to_owned()
            }
            Op::Pattern => {
                invalidator.pattern(".").await.unwrap();
                "*".to_owned()
            }
            Op::Version => {
                invalidator.bump_version(NAMESPACE);
                "*".to_owned()
            }
            Op::Request => unreachable!("handled below"),
        };
        record_write(&writes, key, batch, barrier);
        return Ok(());
    }
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
    let outcome = CacheStatus::from_headers(res.headers())
        .as_ref()
        .map(CacheStatus::outcome);
    let from_cache = outcome.is_some_and(|o| matches!(o, Outcome::Hit | Outcome::StaleHit | Outcome::Revalidated));
    let asked = ex
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("if-none-match") || name.eq_ignore_ascii_case("if-modified-since"));
    if from_cache && status == 304 && !asked {
        // The cache answers a 304 only to a client's own validators: any
        // other would answer a question the client never asked.
        return Err(format!("exchange {i}: the cache answered 304 ({outcome:?}) unasked"));
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
        record_write(&writes, key_of(&uri), batch, n);
    }
    if let (true, Some(n)) = (ex.method == Method::GET, n) {
        let writes = writes.lock().unwrap();
        for key in [key_of(&uri), "*".to_owned()] {
            if let Some(&(write_batch, barrier)) = writes.get(&key) {
                if write_batch < batch && n < barrier {
                    return Err(format!(
                        "exchange {i}: answered with call #{n}, fetched before an invalidation of {key} \
                         (calls below #{barrier})"
                    ));
                }
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
    let invalidator = Invalidator::new(cache.clone());
    let (layer, _optimizer) = OptimizerStack::builder()
        .cache(cache.clone())
        .invalidation(InvalidationLayer::new(invalidator.clone()).namespace(|_| Some(NAMESPACE.to_owned())))
        // gRPC-aware, so the statuses in heads and trailers are read too.
        .circuit_breaker(
            CircuitBreakerConfig::builder()
                .classifier(GrpcClassifier::new())
                .build()
                .unwrap(),
        )
        .retry(RetryPolicy::default())
        .timeout(TIMEOUT)
        .monitor(MonitorSettings::default())
        .build::<Full<Bytes>>()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let ctx = Ctx {
        client: layer.layer(upstream(Arc::new(script), sent.clone(), calls.clone())),
        cache: cache.clone(),
        invalidator,
        calls,
        sent,
        writes: Writes::default(),
    };
    let mut exchanges = exchanges.into_iter().enumerate();
    let mut batch = 0;
    while let Some((i, ex)) = exchanges.next() {
        batch += 1;
        tokio::time::advance(Duration::from_secs(ex.advance)).await;
        // A run of exchanges marked `with_next` goes out at once, so
        // misses coalesce and race refreshes and invalidations.
        let mut tasks = tokio::task::JoinSet::new();
        let mut with_next = ex.with_next;
        tasks.spawn(exchange_once((i, batch), ex, ctx.clone()));
        while with_next {
            let Some((i, ex)) = exchanges.next() else { break };
            with_next = ex.with_next;
            tasks.spawn(exchange_once((i, batch), ex, ctx.clone()));
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
