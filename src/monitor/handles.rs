//! Metric handles cached by label set, so the per-request path registers
//! nothing and allocates nothing once a label set has been seen (the
//! `metrics` facade builds a key, with owned strings, on every macro call).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Gauge, Histogram, Unit};

/// Label sets remembered per kind of handle; past this, handles are
/// registered per request (still correct, just slower).
pub(crate) const MAX_CACHED: usize = 4096;

/// `http.client.request.duration` (seconds).
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.client.active_requests`.
pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
/// `http.client.response.body.size` (bytes, opt-in).
pub const RESPONSE_BODY_SIZE: &str = "http.client.response.body.size";

/// The labels of one finished request, borrowed.
#[derive(Debug, Clone, Copy, Hash)]
pub(crate) struct RequestLabels<'a> {
    pub(crate) method: &'static str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) template: Option<&'a str>,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<&'a str>,
    pub(crate) version: &'static str,
    pub(crate) cache: Option<&'static str>,
    pub(crate) breaker: Option<&'static str>,
}

impl RequestLabels<'_> {
    fn owned(&self) -> Vec<metrics::Label> {
        let mut labels = vec![
            metrics::Label::new("http.request.method", self.method),
            metrics::Label::new("server.address", self.host.to_owned()),
            metrics::Label::new("server.port", self.port.to_string()),
            metrics::Label::new("network.protocol.version", self.version),
        ];
        if let Some(template) = self.template {
            labels.push(metrics::Label::new("url.template", template.to_owned()));
        }
        if let Some(status) = self.status {
            labels.push(metrics::Label::new("http.response.status_code", status.to_string()));
        }
        if let Some(error) = self.error {
            labels.push(metrics::Label::new("error.type", error.to_owned()));
        }
        if let Some(cache) = self.cache {
            labels.push(metrics::Label::new("tower_optimizer.cache.status", cache));
        }
        if let Some(breaker) = self.breaker {
            labels.push(metrics::Label::new("tower_optimizer.circuit_breaker.outcome", breaker));
        }
        labels
    }
}

/// A multiply-rotate hasher (FxHash's): label sets come from our own
/// requests, so speed matters more than flooding resistance here, and a
/// 64-bit hash over at most `MAX_CACHED` sets does not collide in practice.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The maps' keys are already hashes: use them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByHash<T> = HashMap<u64, T, BuildHasherDefault<Identity>>;

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = Fx::default();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A handle for the active-requests gauge, and the host it counts.
#[derive(Debug, Clone)]
pub(crate) struct Active {
    pub(crate) gauge: Gauge,
    pub(crate) host: Arc<str>,
}

#[derive(Debug, Default)]
pub(crate) struct Handles {
    durations: RwLock<ByHash<Histogram>>,
    sizes: RwLock<ByHash<Histogram>>,
    active: RwLock<ByHash<Active>>,
}

impl Handles {
    pub(crate) fn describe() {
        metrics::describe_histogram!(
            REQUEST_DURATION,
            Unit::Seconds,
            "Duration of HTTP client requests, until the response body ends."
        );
        metrics::describe_gauge!(ACTIVE_REQUESTS, "Number of outbound HTTP requests in flight.");
        metrics::describe_histogram!(RESPONSE_BODY_SIZE, Unit::Bytes, "Size of HTTP client response bodies.");
    }

    pub(crate) fn duration(&self, labels: &RequestLabels<'_>) -> Histogram {
        cached(&self.durations, hash_of(labels), || {
            metrics::histogram!(REQUEST_DURATION, labels.owned())
        })
    }

    pub(crate) fn body_size(&self, labels: &RequestLabels<'_>) -> Histogram {
        cached(&self.sizes, hash_of(labels), || {
            metrics::histogram!(RESPONSE_BODY_SIZE, labels.owned())
        })
    }

    pub(crate) fn active(&self, method: &'static str, host: &str, port: u16) -> Active {
        cached(&self.active, hash_of(&(method, host, port)), || Active {
            gauge: metrics::gauge!(
                ACTIVE_REQUESTS,
                "http.request.method" => method,
                "server.address" => host.to_owned(),
                "server.port" => port.to_string()
            ),
            host: format!("{host}:{port}").into(),
        })
    }
}

fn cached<T: Clone>(map: &RwLock<ByHash<T>>, key: u64, make: impl FnOnce() -> T) -> T {
    if let Some(found) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return found.clone();
    }
    let made = make();
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    if map.len() < MAX_CACHED {
        map.insert(key, made.clone());
    }
    made
}
