//! Metric handles cached by label set, so the per-request path registers
//! nothing and allocates nothing once a label set has been seen (the
//! `metrics` facade builds a key, with owned strings, on every macro call).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use metrics::{Gauge, Histogram, Unit};

use super::layer::BodySizes;
use super::stats::{HostSlot, Stats};
use crate::grpc::GrpcCode;

/// Label sets remembered per kind of handle; past this, handles are
/// registered per request (still correct, just slower).
pub(crate) const MAX_CACHED: usize = 4096;

/// Outcomes remembered per endpoint (statuses, errors, cache statuses and
/// templates combined); past this, as above.
pub(crate) const MAX_OUTCOMES: usize = 1024;

/// Distinct `server.address` labels the metrics carry by default; the
/// hosts past them are labelled [`OTHER_SERVER_ADDRESS`]. A client of a
/// few APIs stays far below it, while one sent to hosts it is given (a
/// webhook sender, a crawler) would otherwise add series for every host,
/// without end, to every scrape (Prometheus holds each series in memory).
/// Set per layer with [`MetricsLayer::max_server_addresses`](super::MetricsLayer::max_server_addresses).
pub const DEFAULT_MAX_SERVER_ADDRESSES: usize = 256;

/// The `server.address` label of the hosts past the cap, as OpenTelemetry
/// spells a value it folds (`_OTHER`, as for unknown methods).
pub const OTHER_SERVER_ADDRESS: &str = "_OTHER";

/// `http.client.request.duration` (seconds).
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.client.active_requests`.
pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
/// `http.client.response.body.size` (bytes, opt-in).
pub const RESPONSE_BODY_SIZE: &str = "http.client.response.body.size";

/// `error.type` of a finished request, from a fixed set (bounded labels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) enum ErrorType {
    /// No error.
    #[default]
    None,
    /// The response body failed mid-stream.
    Body,
    /// A 4xx or 5xx status: the label is the status code.
    Status,
    /// The circuit breaker refused the request.
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))] // only the breaker's error is one
    CircuitOpen,
    /// A timeout.
    Timeout,
    /// The connection was refused.
    ConnectionRefused,
    /// The connection was reset.
    ConnectionReset,
    /// Another I/O error.
    Io,
    /// A gRPC status other than `OK`: the label is its name.
    Grpc,
    /// A concurrency limit refused the request (load shedding).
    #[cfg_attr(not(feature = "stack"), allow(dead_code))] // only the stack sheds load
    Overloaded,
    /// Anything else.
    Other,
}

/// `network.protocol.version` values, indexed by [`Outcome::version`].
pub(crate) const VERSIONS: [&str; 5] = ["0.9", "1.0", "1.1", "2", "3"];
/// `tower_optimizer.cache.status` values, indexed by [`Outcome::cache`]
/// (0: the response carried no cache status).
pub(crate) const CACHE_STATUSES: [&str; 6] = ["", "hit", "stale", "revalidated", "miss", "bypass"];
/// `rpc.grpc.status_code` values, indexed by code.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];
/// Index of HTTP/1.1 in [`VERSIONS`], the label before a response says.
pub(crate) const VERSION_1_1: u8 = 2;

/// The labels of a finished request beyond its endpoint, as small codes so
/// the per-request guard stays small (it moves with every response).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Outcome {
    /// Response status (0: no response).
    pub(crate) status: u16,
    pub(crate) error: ErrorType,
    /// Index into [`VERSIONS`].
    pub(crate) version: u8,
    /// Index into [`CACHE_STATUSES`].
    pub(crate) cache: u8,
    /// The breaker refused the request.
    pub(crate) rejected: bool,
    /// The gRPC status the response carried, plus one (0: none).
    pub(crate) grpc: u8,
}

impl Outcome {
    /// The codes packed into one number: distinct outcomes, distinct numbers.
    fn code(self) -> u64 {
        u64::from(self.status)
            | (self.error as u64) << 16
            | u64::from(self.version) << 24
            | u64::from(self.cache) << 32
            | u64::from(self.rejected) << 40
            | u64::from(self.grpc) << 48
    }

    /// Notes the `grpc-status` in `headers` (a Trailers-Only head, or the
    /// trailers), if there is one; a code other than `OK` is the request's
    /// error, as gRPC clients report every other code as one.
    pub(crate) fn note_grpc(&mut self, headers: &http::HeaderMap) {
        let Some(code) = GrpcCode::of(headers) else { return };
        self.grpc = code as u8 + 1;
        // The last status read stands (a head's, then the trailers').
        match (code, self.error) {
            (GrpcCode::Ok, ErrorType::Grpc) => self.error = ErrorType::None,
            (GrpcCode::Ok, _) | (_, ErrorType::Grpc) => {}
            (_, ErrorType::None) => self.error = ErrorType::Grpc,
            // Another error came first (none does today: an error ends
            // the request before any status).
            _ => {}
        }
    }

    /// The key of the handle for this outcome with `template`: the packed
    /// codes alone, or with a template a hash of both (the top bit set, so
    /// the two kinds never meet).
    fn key(self, template: Option<&str>) -> u64 {
        match template {
            None => self.code(),
            Some(template) => hash_of(&(self.code(), template)) | 1 << 63,
        }
    }
}

/// One method, host and port: its active-requests gauge and the handles of
/// its finished requests by outcome, found without hashing the host again.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) gauge: Gauge,
    /// `host:port`, the statistics' key.
    pub(crate) host_port: Arc<str>,
    host_len: usize,
    /// Labelled [`OTHER_SERVER_ADDRESS`]: its host came past the cap.
    folded: bool,
    method: &'static str,
    port: u16,
    durations: ByOutcome,
    sizes: ByOutcome,
    /// Whether body sizes are recorded (the layer's setting, kept here so a
    /// request's guard needs no reference to the layer's configuration).
    pub(crate) body_sizes: BodySizes,
    /// This host's buckets in the layer's statistics, if it keeps any.
    pub(crate) stats: Option<Arc<HostSlot>>,
    /// The recorder its handles are registered with ([`recorder_id`](crate::util::recorder_id)).
    pub(crate) recorder: usize,
}

impl Endpoint {
    /// Its `server.address` label.
    fn address(&self) -> &str {
        if self.folded {
            OTHER_SERVER_ADDRESS
        } else {
            &self.host_port[..self.host_len]
        }
    }

    /// Whether it is the endpoint of `method`, `host` and `port` (its map's
    /// key is only a hash of them).
    fn is(&self, method: &str, host: &str, port: u16) -> bool {
        self.method == method && self.port == port && &self.host_port[..self.host_len] == host
    }

    fn labels(&self, outcome: Outcome, template: Option<&str>) -> Vec<metrics::Label> {
        let mut labels = vec![
            metrics::Label::new("http.request.method", self.method),
            metrics::Label::new("server.address", self.address().to_owned()),
            metrics::Label::new("server.port", self.port.to_string()),
            metrics::Label::new("network.protocol.version", VERSIONS[usize::from(outcome.version)]),
        ];
        if let Some(template) = template {
            labels.push(metrics::Label::new("url.template", template.to_owned()));
        }
        if outcome.status != 0 {
            labels.push(metrics::Label::new(
                "http.response.status_code",
                outcome.status.to_string(),
            ));
        }
        let error: Option<metrics::SharedString> = match outcome.error {
            ErrorType::None => None,
            ErrorType::Status => Some(outcome.status.to_string().into()),
            ErrorType::Body => Some("body".into()),
            ErrorType::CircuitOpen => Some("circuit_open".into()),
            ErrorType::Timeout => Some("timeout".into()),
            ErrorType::ConnectionRefused => Some("connection_refused".into()),
            ErrorType::ConnectionReset => Some("connection_reset".into()),
            ErrorType::Io => Some("io".into()),
            ErrorType::Overloaded => Some("overloaded".into()),
            ErrorType::Grpc => GrpcCode::ALL
                .get(usize::from(outcome.grpc.saturating_sub(1)))
                .map(|code| code.name().into()),
            ErrorType::Other => Some("_OTHER".into()),
        };
        if let Some(error) = error {
            labels.push(metrics::Label::new("error.type", error));
        }
        if outcome.grpc != 0 {
            // `rpc.grpc.status_code` is an int in OpenTelemetry's gRPC
            // conventions: the code's digits.
            let code = usize::from(outcome.grpc - 1);
            labels.push(metrics::Label::new("rpc.grpc.status_code", GRPC_CODES[code]));
        }
        if outcome.cache != 0 {
            let cache = CACHE_STATUSES[usize::from(outcome.cache)];
            labels.push(metrics::Label::new("tower_optimizer.cache.status", cache));
        }
        if outcome.rejected {
            labels.push(metrics::Label::new(
                "tower_optimizer.circuit_breaker.outcome",
                "rejected",
            ));
        }
        labels
    }

    /// Records `seconds` in the duration histogram for `outcome`.
    pub(crate) fn record_duration(&self, outcome: Outcome, template: Option<&str>, seconds: f64) {
        self.record(&self.durations, REQUEST_DURATION, outcome, template, seconds);
    }

    /// Records `bytes` in the body-size histogram for `outcome`.
    pub(crate) fn record_body_size(&self, outcome: Outcome, template: Option<&str>, bytes: f64) {
        self.record(&self.sizes, RESPONSE_BODY_SIZE, outcome, template, bytes);
    }

    /// Records `value` in the histogram `name` for `outcome`, registered
    /// with the recorder the first time that label set is seen.
    fn record(&self, histograms: &ByOutcome, name: &'static str, outcome: Outcome, template: Option<&str>, value: f64) {
        histograms.with(
            outcome.key(template),
            || metrics::histogram!(name, self.labels(outcome, template)),
            |histogram| histogram.record(value),
        );
    }
}

/// Outcomes whose handles are found without a lock: an endpoint sees a
/// handful (a status or two, each with a cache status), and a lock's
/// reader count would bounce between the threads recording them.
const SLOTS: usize = 8;

/// An endpoint's histograms by outcome key: the first [`SLOTS`] outcomes in
/// slots read with a plain load, the rest (up to [`MAX_OUTCOMES`]) in a map.
#[derive(Debug, Default)]
struct ByOutcome {
    slots: [OnceLock<(u64, Histogram)>; SLOTS],
    rest: RwLock<ByHash<Histogram>>,
}

impl ByOutcome {
    /// Runs `use_it` on the histogram of `key`, made by `make` (and
    /// remembered) on first use.
    fn with(&self, key: u64, make: impl FnOnce() -> Histogram, use_it: impl FnOnce(&Histogram)) {
        // `make` runs at most once: a slot it fills holds this key.
        let mut make = Some(make);
        let mut made = || make.take().map_or_else(Histogram::noop, |make| make());
        for slot in &self.slots {
            let (found, histogram) = match slot.get() {
                Some(pair) => pair,
                // Claim the free slot; another thread may fill it first,
                // with this key or another.
                None => slot.get_or_init(|| (key, made())),
            };
            if *found == key {
                return use_it(histogram);
            }
        }
        with_cached(&self.rest, key, MAX_OUTCOMES, made, use_it);
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
    let mut hasher = crate::util::Fx::default();
    value.hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug)]
pub(crate) struct Handles {
    endpoints: RwLock<ByHash<Arc<Endpoint>>>,
    /// The hosts labelled as themselves, at most `max_addresses`.
    addresses: Mutex<HashSet<Box<str>>>,
    max_addresses: usize,
}

impl Default for Handles {
    fn default() -> Self {
        Handles::new(DEFAULT_MAX_SERVER_ADDRESSES)
    }
}

impl Handles {
    /// Handles labelling at most `max_addresses` hosts as themselves.
    pub(crate) fn new(max_addresses: usize) -> Self {
        Handles {
            endpoints: RwLock::default(),
            addresses: Mutex::default(),
            max_addresses,
        }
    }

    /// Whether `host` is labelled as itself: it is, or there is room for
    /// it, among the hosts so labelled. Decided once per endpoint.
    fn admit(&self, host: &str) -> bool {
        let mut addresses = self.addresses.lock().unwrap_or_else(PoisonError::into_inner);
        if addresses.contains(host) {
            return true;
        }
        if addresses.len() >= self.max_addresses {
            return false;
        }
        addresses.insert(host.into());
        true
    }

    pub(crate) fn describe() {
        metrics::describe_histogram!(
            REQUEST_DURATION,
            Unit::Seconds,
            "Duration of HTTP client requests, until the response body ends."
        );
        metrics::describe_gauge!(ACTIVE_REQUESTS, "Number of outbound HTTP requests in flight.");
        metrics::describe_histogram!(RESPONSE_BODY_SIZE, Unit::Bytes, "Size of HTTP client response bodies.");
    }

    /// The endpoint of `method`, `host` and `port`, with handles of the
    /// recorder in place now (`recorder`, from [`recorder_id`](crate::util::recorder_id)).
    pub(crate) fn endpoint(
        &self,
        (method, host, port): (&'static str, &str, u16),
        recorder: usize,
        stats: Option<&Stats>,
        body_sizes: BodySizes,
    ) -> Arc<Endpoint> {
        let key = hash_of(&(method, host, port));
        let mut collided = false;
        if let Some(found) = self.endpoints.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            // Another endpoint under the same hash (host names may be
            // anyone's choosing) is not this one.
            collided = !found.is(method, host, port);
            if found.recorder == recorder && !collided {
                return found.clone();
            }
        }
        // Descriptions, like handles, reach only the recorder in place: one
        // installed after the layer was made has not seen them yet.
        Self::describe();
        let host_port: Arc<str> = format!("{host}:{port}").into();
        let folded = !self.admit(host);
        let address = if folded { OTHER_SERVER_ADDRESS } else { host };
        let endpoint = Arc::new(Endpoint {
            gauge: metrics::gauge!(
                ACTIVE_REQUESTS,
                "http.request.method" => method,
                "server.address" => address.to_owned(),
                "server.port" => port.to_string()
            ),
            stats: stats.map(|stats| stats.host(&host_port)),
            host_port,
            host_len: host.len(),
            folded,
            method,
            port,
            durations: ByOutcome::default(),
            sizes: ByOutcome::default(),
            body_sizes,
            recorder,
        });
        let mut endpoints = self.endpoints.write().unwrap_or_else(PoisonError::into_inner);
        // A new recorder replaces the endpoint's handles in place.
        // A colliding one keeps its place: this one is made afresh each
        // time, which is correct, only slower.
        if !collided && (endpoints.len() < MAX_CACHED || endpoints.contains_key(&key)) {
            endpoints.insert(key, endpoint.clone());
        }
        endpoint
    }
}

/// Runs `use_it` on the handle of `key`, made and remembered (up to `cap`
/// of them) on first use. A found handle is used under the read lock, so
/// the handle's own count is not bumped per request.
fn with_cached<T: Clone, R>(
    map: &RwLock<ByHash<T>>,
    key: u64,
    cap: usize,
    make: impl FnOnce() -> T,
    use_it: impl FnOnce(&T) -> R,
) -> R {
    if let Some(found) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return use_it(found);
    }
    let made = make();
    let result = use_it(&made);
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    if map.len() < cap {
        map.insert(key, made);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A histogram that logs `(its key, value)`.
    struct Logged(u64, Arc<Mutex<Vec<(u64, f64)>>>);

    impl metrics::HistogramFn for Logged {
        fn record(&self, value: f64) {
            self.1.lock().unwrap().push((self.0, value));
        }
    }

    /// Each version's label is at its code.
    #[test]
    fn version_labels_follow_the_version_codes() {
        for (i, version) in crate::util::HTTP_VERSIONS.iter().enumerate() {
            let text = format!("{version:?}");
            // OpenTelemetry's labels: "1.1", but "2" for HTTP/2.0.
            let label = text.trim_start_matches("HTTP/");
            let label = if label > "2" {
                label.trim_end_matches(".0")
            } else {
                label
            };
            assert_eq!(VERSIONS[i], label);
            assert_eq!(usize::from(crate::util::version_code(*version)), i);
        }
        assert_eq!(
            crate::util::HTTP_VERSIONS[usize::from(VERSION_1_1)],
            http::Version::HTTP_11
        );
    }

    #[test]
    fn outcomes_past_the_slots_are_kept_too_and_each_is_made_once() {
        let by = ByOutcome::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let made = std::cell::Cell::new(0);
        // Twice as many outcomes as slots, each recorded twice.
        for round in 0..2 {
            for key in 0..2 * SLOTS as u64 {
                let make = || {
                    made.set(made.get() + 1);
                    Histogram::from_arc(Arc::new(Logged(key, log.clone())))
                };
                by.with(key, make, |h| h.record(f64::from(round)));
            }
        }
        assert_eq!(made.get(), 2 * SLOTS, "one handle per outcome");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 4 * SLOTS);
        assert!(
            log.iter()
                .enumerate()
                .all(|(i, &(key, _))| key == (i % (2 * SLOTS)) as u64),
            "each value reached its own outcome's handle: {log:?}"
        );
    }

    #[test]
    fn the_last_grpc_status_read_stands() {
        let status = |code: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from_static(code));
            headers
        };
        let mut outcome = Outcome::default();
        outcome.note_grpc(&http::HeaderMap::new());
        assert_eq!(
            (outcome.grpc, outcome.error),
            (0, ErrorType::None),
            "no status, no label"
        );
        outcome.note_grpc(&status("0"));
        assert_eq!((outcome.grpc, outcome.error), (1, ErrorType::None));
        outcome.note_grpc(&status("14"));
        assert_eq!((outcome.grpc, outcome.error), (15, ErrorType::Grpc));
        outcome.note_grpc(&status("0"));
        assert_eq!((outcome.grpc, outcome.error), (1, ErrorType::None), "OK after all");
        outcome.error = ErrorType::Body;
        outcome.note_grpc(&status("14"));
        assert_eq!(
            (outcome.grpc, outcome.error),
            (15, ErrorType::Body),
            "the first error stands"
        );
    }

    #[test]
    fn an_endpoint_found_under_another_hosts_hash_is_not_taken() {
        let handles = Handles::new(8);
        let recorder = crate::util::recorder_id();
        let a = handles.endpoint(("GET", "a.test", 80), recorder, None, BodySizes::Off);
        // As if b.test's hash were a.test's: its slot holds a.test's endpoint.
        let b_key = hash_of(&("GET", "b.test", 80u16));
        handles.endpoints.write().unwrap().insert(b_key, a.clone());
        let b = handles.endpoint(("GET", "b.test", 80), recorder, None, BodySizes::Off);
        assert_eq!(&*b.host_port, "b.test:80");
        assert_eq!(b.address(), "b.test");
        assert!(
            Arc::ptr_eq(&handles.endpoints.read().unwrap()[&b_key], &a),
            "the slot is kept"
        );
        assert!(a.is("GET", "a.test", 80));
        assert!(!a.is("POST", "a.test", 80) && !a.is("GET", "a.test", 81) && !a.is("GET", "a.tes", 80));
    }

    #[test]
    fn hosts_past_the_cap_are_folded_and_admitted_ones_stay() {
        let handles = Handles::new(1);
        let recorder = crate::util::recorder_id();
        let endpoint = |host| handles.endpoint(("GET", host, 80), recorder, None, BodySizes::Off);
        assert_eq!(endpoint("a.test").address(), "a.test");
        assert_eq!(endpoint("b.test").address(), OTHER_SERVER_ADDRESS);
        assert_eq!(
            endpoint("b.test").host_port.as_ref(),
            "b.test:80",
            "its own statistics key"
        );
        assert_eq!(endpoint("a.test").address(), "a.test");
        let none = Handles::new(0);
        let folded = none.endpoint(("GET", "a.test", 80), recorder, None, BodySizes::Off);
        assert_eq!(folded.address(), OTHER_SERVER_ADDRESS, "a cap of 0 folds every host");
    }
}
