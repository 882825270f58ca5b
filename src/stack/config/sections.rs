//! The sections of an [`OptimizerConfig`] as the file holds them: plain
//! values (durations and choices as text), checked and turned into the
//! stack's settings by `OptimizerConfig::into_builder`.

use serde::Deserialize;

#[cfg(doc)]
use super::super::{OptimizerStackBuilder, WhenOpen};

/// The stack's settings as a file holds them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Timeout of each upstream call.
    pub timeout: Option<String>,
    /// Most upstream calls at once.
    pub concurrency_limit: Option<usize>,
    /// Most upstream calls at once to each host (`scheme://authority`).
    pub per_host_limit: Option<usize>,
    /// Refuse calls beyond the limits instead of waiting.
    pub load_shed: Option<bool>,
    /// Wait for a slot under the limits at most this long, then refuse
    /// (instead of `load_shed`, which refuses at once).
    pub max_wait: Option<String>,
    /// `scheme://authority` to use while a circuit is open.
    pub secondary_upstream: Option<String>,
    /// URLs fetched into the cache on start.
    pub warm_up: Option<Vec<String>>,
    /// How long each warm-up fetch may take.
    pub warm_up_timeout: Option<String>,
    /// Warm-up fetches at once (default 8).
    pub warm_up_parallelism: Option<usize>,
    /// The cache.
    pub cache: Option<CacheSection>,
    /// The circuit breaker.
    pub circuit_breaker: Option<BreakerSection>,
    /// Retries.
    pub retry: Option<RetrySection>,
    /// Monitoring.
    pub monitor: Option<MonitorSection>,
    /// The admin server.
    pub admin: Option<AdminSection>,
    /// The built-in client.
    pub client: Option<ClientSection>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Budget in MiB.
    pub max_memory_mb: Option<u64>,
    /// Largest cached body in KiB.
    pub max_entry_kb: Option<u64>,
    /// Length in KiB above which a stored miss reaches its caller as it
    /// arrives (see [`CacheBuilder::stream_above`](crate::cache::CacheBuilder::stream_above)).
    pub stream_above_kb: Option<u64>,
    /// Lifetime of responses without freshness.
    pub default_ttl: Option<String>,
    /// Cap on lifetimes.
    pub max_ttl: Option<String>,
    /// Default stale-if-error window.
    pub stale_if_error: Option<String>,
    /// `"private"` (default) or `"shared"`.
    pub mode: Option<String>,
    /// `"insert"` (default) or `"omit"`: whether responses carry the
    /// `CacheStatus` extension as well as the `Cache-Status` header (see
    /// [`CacheBuilder::status_extension`](crate::cache::CacheBuilder::status_extension)).
    pub status_extension: Option<String>,
    /// Regexes of URIs never cached.
    pub exclude: Option<Vec<String>>,
    /// Request headers every entry is keyed by, as if named in `Vary`.
    pub vary_on: Option<Vec<String>>,
    /// Query parameters keys leave out: names, or prefixes ending with `*`
    /// (see [`QueryKey::ignoring`](crate::cache::QueryKey::ignoring)).
    pub ignore_query: Option<Vec<String>>,
    /// `"as-sent"` (default) or `"sorted"`: the order of the query
    /// parameters keys keep (see [`QueryOrder`](crate::cache::QueryOrder)).
    pub query_order: Option<String>,
    /// Lifetimes by path for successful (2xx) answers, the first match
    /// winning, over what the upstream's headers say (see
    /// [`CacheBuilder::ttl_with`](crate::cache::CacheBuilder::ttl_with)).
    pub ttl_for: Option<Vec<TtlRoute>>,
    /// Cap in MiB on what all in-flight misses buffer together (default: a
    /// quarter of the budget).
    pub max_inflight_mb: Option<u64>,
    /// Most `Vary` variants kept per URI (default 8).
    pub max_variants: Option<usize>,
    /// Requests that carry `Authorization`: `"bypass"` (the private
    /// mode's default), `"rfc"` (RFC 9111 §3.5, the shared mode's) or
    /// `"store"` (see [`AuthorizationPolicy`](crate::cache::AuthorizationPolicy)).
    pub authorization: Option<String>,
    /// Responses that carry `Set-Cookie`: `"do-not-store"` (default) or
    /// `"store"` (see [`SetCookiePolicy`](crate::cache::SetCookiePolicy)).
    pub set_cookie: Option<String>,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with
    /// `Last-Modified` and no explicit lifetime: this percent of the time
    /// since it (10 is the RFC's example). Off unless set.
    pub heuristic_freshness: Option<u8>,
    /// How long a request waits for another's upstream call for the same
    /// key before going upstream itself (default 5 s).
    pub lock_timeout: Option<String>,
    /// How long a key whose answer could not be stored is left out of
    /// coalescing (default 2 m), or `"off"` to coalesce every miss.
    pub remember_uncacheable: Option<String>,
    /// How long a stale entry is kept for revalidation after nothing
    /// allows serving it any more (default 10 m).
    pub stale_retention: Option<String>,
    /// Period of the sweep of expired entries (default 30 s), or `"off"`.
    pub sweep_interval: Option<String>,
    /// Eviction under memory pressure (off unless given).
    pub memory_pressure: Option<PressureSection>,
    /// A file the cache is kept in between runs: loaded at start, saved
    /// at shutdown (see
    /// [`OptimizerStackBuilder::persist_cache`](crate::stack::OptimizerStackBuilder::persist_cache)).
    pub persist: Option<String>,
    /// How often the cache is saved to that file as well (off unless given).
    pub save_every: Option<String>,
}

/// `[cache.memory_pressure]`: when memory reads above the high watermark,
/// the cache evicts until it would be back at the low one (see
/// [`MemoryPressure`](crate::cache::MemoryPressure)). Watermarks in MiB, or as fractions of the cgroup's
/// memory limit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PressureSection {
    /// `"process"` (the resident set; the default with MiB watermarks) or
    /// `"cgroup"` (the cgroup's working set; the default with fractions).
    pub source: Option<String>,
    /// High watermark in MiB.
    pub high_mb: Option<u64>,
    /// Low watermark in MiB.
    pub low_mb: Option<u64>,
    /// High watermark as a fraction of the cgroup's limit (`0.9`).
    pub high_fraction: Option<f64>,
    /// Low watermark as a fraction of the cgroup's limit (`0.8`).
    pub low_fraction: Option<f64>,
    /// How often memory is read (default 1 s).
    pub interval: Option<String>,
}

/// One entry of `[cache] ttl_for`: `{ path = "^/rates$", ttl = "60s" }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TtlRoute {
    /// A regex over the request's path.
    pub path: String,
    /// The lifetime of a successful answer on a matching path.
    pub ttl: String,
}

/// `[circuit_breaker]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Calls in the count window.
    pub window_calls: Option<usize>,
    /// Failure rate (percent) that trips.
    pub failure_rate: Option<f64>,
    /// Calls before rates count.
    pub minimum_calls: Option<u32>,
    /// Failures in a row that trip.
    pub consecutive_failures: Option<u32>,
    /// First open period.
    pub open: Option<String>,
    /// Cap of the open period.
    pub max_open: Option<String>,
    /// Probe calls in half-open.
    pub half_open_calls: Option<u32>,
    /// What callers get while a circuit is open: `"error"` (the default)
    /// or `"respond_503"` (see [`WhenOpen`]).
    pub when_open: Option<String>,
    /// What counts as a failure: `"http"` (the default,
    /// [`HttpClassifier`](crate::circuit_breaker::HttpClassifier)) or
    /// `"grpc"` (also a call's `grpc-status`, see
    /// [`GrpcClassifier`](crate::circuit_breaker::GrpcClassifier)).
    pub classifier: Option<String>,
    /// A time window of this length instead of the count window
    /// (`window_calls`): rates over the calls of the last `window`.
    pub window: Option<String>,
    /// Buckets of the time window (default 10): it slides by a tenth.
    pub window_buckets: Option<usize>,
    /// Slow-call rate (percent) that trips; off unless set.
    pub slow_call_rate: Option<f64>,
    /// A call slower than this is slow (default 5 s); needs
    /// `slow_call_rate`.
    pub slow_call_duration: Option<String>,
    /// Growth of the open period on each repeated open (default 2).
    pub open_backoff: Option<f64>,
    /// Random shortening of each open period, a fraction in `[0, 1)`
    /// (default 0.1).
    pub jitter: Option<f64>,
    /// How long a half-open probe call may take before it is released
    /// (default 30 s).
    pub max_half_open: Option<String>,
    /// `"authority"` (default: a breaker per `scheme://host:port`) or
    /// `"global"` (one breaker for every request).
    pub key: Option<String>,
    /// Most breakers kept (default 1,024); also the metrics' `key` labels.
    pub max_keys: Option<usize>,
    /// How long an unused closed breaker is kept (default 10 m).
    pub idle: Option<String>,
    /// The recovery probe's path, like `"/health"`: at the end of each
    /// open period the stack's own client sends `GET` to it on the host
    /// (see [`OptimizerStackBuilder::recovery_probe`]). Off unless set.
    pub probe_path: Option<String>,
    /// How long the probe may take (default
    /// [`DEFAULT_PROBE_TIMEOUT`](crate::stack::DEFAULT_PROBE_TIMEOUT), 5 s).
    pub probe_timeout: Option<String>,
    /// Where a healthy probe moves the breaker: `"half-open"` (default: a
    /// few user calls still confirm) or `"closed"`.
    pub probe_success: Option<String>,
    /// `[circuit_breaker.share]`: send openings to other instances.
    pub share: Option<ShareSection>,
}

/// `[circuit_breaker.share]`: each opening of a breaker by this instance's
/// own calls goes to the peers' admin servers, whose breakers open for
/// the same host and period (see
/// [`SharedOpenings`](crate::monitor::SharedOpenings)).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShareSection {
    /// The peers' admin base URLs, like `"http://10.0.0.2:9000"`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Names whose every address is a peer, looked up at each opening,
    /// like `"http://optimizer-admin.prod.svc:9464"` (a Kubernetes
    /// headless service).
    #[serde(default)]
    pub resolve: Vec<String>,
    /// The name of an environment variable holding the peers' admin token.
    pub token_env: Option<String>,
    /// How long one post to one peer may take (default 2 s).
    pub timeout: Option<String>,
}

/// `[retry]` (see [`RetryConfig`](crate::retry::RetryConfig); absent
/// fields keep its defaults).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// Ceiling of the first retry's random wait, doubling per retry.
    pub backoff: Option<String>,
    /// Cap of the wait.
    pub max_backoff: Option<String>,
    /// Longest `Retry-After` waited for.
    pub max_retry_after: Option<String>,
    /// No retry starts later than this after the first attempt.
    pub deadline: Option<String>,
    /// `"idempotent"` (default) or `"all"`: which methods are retried
    /// (see [`Methods`](crate::retry::Methods)).
    pub methods: Option<String>,
    /// Retries allowed per request over the budget window.
    pub budget_ratio: Option<f64>,
    /// Retries per second allowed whatever the traffic.
    pub budget_min_per_second: Option<u32>,
    /// How far back the budget counts.
    pub budget_window: Option<String>,
}

/// `[monitor]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    /// Sampling period.
    pub interval: Option<String>,
    /// How far back the dashboard's history goes (default 15 m).
    pub history: Option<String>,
    /// Install the Prometheus recorder (binaries only).
    pub prometheus: Option<bool>,
    /// Route templates for the `url.template` label, like `"/users/{id}"`.
    pub route_templates: Option<Vec<String>>,
    /// Hosts labelled with their own `server.address` (default 256), past
    /// which they are `_OTHER`.
    pub max_server_addresses: Option<usize>,
    /// Keep the built-in alert rules (default true); see
    /// [`AlertManager::with_default_rules`](crate::monitor::AlertManager::with_default_rules).
    pub default_alerts: Option<bool>,
    /// Alert rules, `[[monitor.alerts]]`; one named as a built-in rule
    /// replaces it.
    pub alerts: Option<Vec<AlertSection>>,
    /// Upstream readiness checks, `[[monitor.readiness]]` (see
    /// [`OptimizerStackBuilder::readiness_check`]).
    pub readiness: Option<Vec<ReadinessSection>>,
    /// Inhibitions, `[[monitor.inhibit]]`: while `source` fires, `targets`
    /// are not notified (see [`AlertManager::inhibit`](crate::monitor::AlertManager::inhibit)).
    pub inhibit: Option<Vec<InhibitSection>>,
    /// `[monitor.alertmanager]`: push the alerts to a Prometheus
    /// Alertmanager.
    pub alertmanager: Option<AlertmanagerSection>,
}

/// `[monitor.alertmanager]` (see [`AlertmanagerPush`](crate::monitor::AlertmanagerPush)):
///
/// ```toml
/// [monitor.alertmanager]
/// url = "http://127.0.0.1:9093"   # its base; alerts go to /api/v2/alerts under it
/// resend = "1m"                   # a firing alert is sent again this often
/// timeout = "10s"                 # for one push
/// labels = { instance = "checkout-1", job = "checkout" }
/// token_env = "ALERTMANAGER_TOKEN"  # or authorization_env = "ALERTMANAGER_AUTHORIZATION"
/// ```
///
/// Sent over an HTTP/1.1 client of its own (`https` needs the `tls`
/// feature; the system's roots are trusted).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    /// The Alertmanager's base URL.
    pub url: String,
    /// How often a firing alert is sent again (default 1 m).
    pub resend: Option<String>,
    /// How long one push may take (default 10 s).
    pub timeout: Option<String>,
    /// Labels on every alert sent, for the Alertmanager's routing.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Where the Alertmanager's notifications link back to (each alert's
    /// `generatorURL`), such as this instance's dashboard.
    pub generator_url: Option<String>,
    /// The name of an environment variable holding a bearer token for the
    /// Alertmanager (sent as `Authorization: Bearer ..`).
    pub token_env: Option<String>,
    /// The name of an environment variable holding a whole
    /// `Authorization` value, such as `Basic dXNlcjpwYXNz` for a hosted
    /// Alertmanager behind basic authentication.
    pub authorization_env: Option<String>,
}

/// One `[[monitor.inhibit]]`: `{ source = "CircuitOpen", targets =
/// ["HighErrorRate"] }`; each name a rule, built-in or of the file; with
/// `equal = ["host"]`, only for the same host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InhibitSection {
    /// The rule whose firing holds the others back.
    pub source: String,
    /// The rules held back.
    pub targets: Vec<String>,
    /// `["host"]`: the source firing for a host holds back only the
    /// targets' alerts for that host (see
    /// [`AlertManager::inhibit_same_host`](crate::monitor::AlertManager::inhibit_same_host));
    /// unset, it holds back every one of them.
    pub equal: Option<Vec<String>>,
}

/// One `[[monitor.readiness]]` check: `{ name = "api", url =
/// "http://api.internal/health", timeout = "1s" }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReadinessSection {
    /// The check's name in `/health/ready`.
    pub name: String,
    /// The URL asked, with `GET`.
    pub url: String,
    /// How long it may take (default 1 s: Kubernetes' probes wait that
    /// long by default, so a longer check would end after its asker gave
    /// up).
    pub timeout: Option<String>,
}

/// One `[[monitor.alerts]]` rule (see [`AlertRule`](crate::monitor::AlertRule)):
///
/// ```toml
/// [[monitor.alerts]]
/// name = "SlowUpstream"
/// figure = "http.p99"        # a built-in figure (monitor::FIGURES) or a registered gauge
/// above = 0.5                # or below = ...
/// for = "5m"                 # pending this long before it fires
/// keep_firing_for = "1m"     # and firing this long after it clears
/// repeat_interval = "4h"     # re-notified at most this often while firing
/// severity = "warning"       # or "critical"
/// scope = "per_host"         # one alert per host (monitor::HOST_FIGURES); default "overall"
/// min_requests = 20          # holds only over at least 20 requests in the window
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    /// The alert's name.
    pub name: String,
    /// The figure it watches.
    pub figure: String,
    /// Fires while the figure is above this.
    pub above: Option<f64>,
    /// Fires while the figure is below this.
    pub below: Option<f64>,
    /// How long the condition holds before the alert fires (`for`).
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// How long it keeps firing after the condition clears.
    pub keep_firing_for: Option<String>,
    /// Least time between notifications while it fires (default 4 h).
    pub repeat_interval: Option<String>,
    /// `"warning"` (default) or `"critical"`.
    pub severity: Option<String>,
    /// Holds only while the window saw at least this many requests (see
    /// [`AlertRule::min_requests`](crate::monitor::AlertRule::min_requests)).
    pub min_requests: Option<u64>,
    /// `"overall"` (default): one alert over the whole client's figure;
    /// `"per_host"`: one per host, over that host's figure (see
    /// [`Scope`](crate::monitor::Scope)).
    pub scope: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listening address (keep it on loopback).
    pub listen: String,
    /// Bearer token.
    pub token: Option<String>,
    /// The name of an environment variable holding the bearer token, in
    /// place of `token`: a secret kept out of a file that may be checked
    /// in or read by many.
    pub token_env: Option<String>,
    /// `"required"` (default): `/health/live` asks for the token too;
    /// `"exempt"`: it answers an orchestrator's probe without it.
    pub liveness: Option<String>,
}

/// `[client]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Speak HTTP/1.1 instead of h2c.
    pub http1: Option<bool>,
    /// Connect timeout.
    pub connect_timeout: Option<String>,
    /// Idle pooled connections close after this.
    pub pool_idle_timeout: Option<String>,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: Option<usize>,
    /// HTTP/2 keep-alive ping interval, or `"off"`.
    pub http2_keep_alive: Option<String>,
    /// How long an unanswered keep-alive ping waits before the connection closes.
    pub http2_keep_alive_timeout: Option<String>,
}
