//! Exchanges through the whole stack (cache, invalidation, breaker with the
//! gRPC rule, retries) whose request and response heads come from the
//! fuzzer: every header parser the network reaches (`Cache-Control`, dates,
//! `Age`, `Vary`, validators, `Retry-After`, `grpc-status`, invalidation
//! headers, `grpc-timeout`) and the freshness arithmetic over the paused
//! clock. Nothing may panic.
//!
//! Input: a settings byte, then blocks separated by a NUL byte, alternating a request (first
//! line `<method byte><path>`, then `name: value` lines) and the response
//! the upstream gives it (first line the status digits, then headers); a
//! block's last line `+N` advances the clock N seconds after the exchange.
#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceExt};
use tower_optimizer::cache::Cache;
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, GrpcClassifier};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator};
use tower_optimizer::retry::{RetryConfig, RetryPolicy};
use tower_optimizer::stack::{OptimizerStack, Overload};

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

struct Block<'a> {
    first: &'a [u8],
    headers: Vec<(HeaderName, HeaderValue)>,
    advance: u64,
}

fn block(text: &[u8]) -> Block<'_> {
    let mut lines = text.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    let mut advance = 0;
    for line in lines {
        if let Some(n) = line.strip_prefix(b"+") {
            advance = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        // What hyper would let through: valid names and values only.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.push((name, value));
        }
    }
    Block {
        first,
        headers,
        advance,
    }
}

fn response(spec: &Block<'_>) -> Response<Full<Bytes>> {
    let status = std::str::from_utf8(spec.first)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Full::new(Bytes::from_static(b"0123456789abcdef")));
    *response.status_mut() = status;
    for (name, value) in &spec.headers {
        // The body is what it is: a lying length is hyper's to refuse.
        if name != http::header::CONTENT_LENGTH {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks settings: bit 0 lifts every cap a network value
    // is held under (the breaker's open period, `Retry-After` for retries);
    // bit 1 puts the stack's limits in, with a bounded wait.
    let (&settings, data) = data.split_first().unwrap_or((&0, data));
    let text: Vec<&[u8]> = data.split(|&b| b == b'\x00').collect();
    let blocks: Vec<Block<'_>> = text.iter().map(|t| block(t)).collect();
    if blocks.len() > 16 {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::builder()
            .max_bytes(64 << 10)
            .max_entry_bytes(8 << 10)
            .sweep_interval(None)
            .build()
            .unwrap();
        let invalidator = Invalidator::new(cache.clone());
        let uncapped = settings & 1 == 1;
        let mut breaker = CircuitBreakerConfig::builder().classifier(GrpcClassifier::new());
        let mut retry = RetryConfig::builder();
        if uncapped {
            breaker = breaker.open_period(Duration::from_secs(1), Duration::MAX, 2.0);
            retry = retry.max_retry_after(Duration::MAX).deadline(Duration::from_secs(60));
        }
        let mut builder = OptimizerStack::builder()
            .cache(cache.clone())
            .invalidation(InvalidationLayer::new(invalidator))
            .circuit_breaker(breaker.build().unwrap())
            .retry(RetryPolicy::new(retry.build().unwrap()))
            .timeout(Duration::from_secs(30));
        if settings & 2 == 2 {
            builder = builder
                .concurrency_limit(2, Overload::Shed)
                .per_host_limit(1, Overload::WaitAtMost(Duration::from_millis(50)));
        }
        let (layer, _optimizer) = builder.build::<Full<Bytes>>().unwrap();
        let answers: Arc<Mutex<VecDeque<Response<Full<Bytes>>>>> = Arc::default();
        let queue = answers.clone();
        let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let answer = queue.lock().unwrap().pop_front();
            async move { Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|| Response::new(Full::default()))) }
        });
        let mut client = layer.layer(upstream);
        for pair in blocks.chunks(2) {
            let request_spec = &pair[0];
            if let Some(response_spec) = pair.get(1) {
                answers.lock().unwrap().push_back(response(response_spec));
            }
            let (method, path) = match request_spec.first.split_first() {
                Some((&m, path)) => (METHODS[usize::from(m) % METHODS.len()].clone(), path),
                None => (Method::GET, &b""[..]),
            };
            let path = std::str::from_utf8(path).unwrap_or("/");
            let Ok(uri) = format!("http://fuzz.test/{}", path.trim_start_matches('/')).parse::<http::Uri>() else {
                continue;
            };
            let mut request = Request::new(Full::new(Bytes::from_static(b"body")));
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            for (name, value) in &request_spec.headers {
                request.headers_mut().append(name.clone(), value.clone());
            }
            let Ok(ready) = client.ready().await else {
                break;
            };
            if let Ok(answer) = ready.call(request).await {
                let _ = answer.into_body().collect().await;
            }
            let advance = request_spec.advance.max(pair.get(1).map_or(0, |r| r.advance));
            tokio::time::advance(Duration::from_secs(advance.min(u64::from(u32::MAX)))).await;
        }
        assert!(cache.stats().bytes <= 64 << 10);
    });
});
