//! Breaker settings, their defaults (chosen for an HTTP client, with the
//! reason for each) and their validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request;

use super::classify::{Classify, HttpClassifier};
use super::error::ConfigError;
use super::events::Event;

/// Calls in the default count window: enough to tell a bad host from bad
/// luck, few enough that a host answering only failures is cut off fast.
pub const DEFAULT_WINDOW_CALLS: usize = 20;
/// Calls needed before rates count: with 50% failures required, a host
/// that answers only failures trips on its 10th call (within 20).
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;
/// Failure rate (percent) that trips the breaker.
pub const DEFAULT_FAILURE_RATE: f64 = 50.0;
/// A call slower than this counts as slow: 5 s is past any healthy API
/// answer and short of common client timeouts.
pub const DEFAULT_SLOW_CALL: Duration = Duration::from_secs(5);
/// First open period: 10 s lets a restarting instance come back without
/// leaving callers failing fast for long.
pub const DEFAULT_OPEN: Duration = Duration::from_secs(10);
/// Cap of the open period after repeated opens (and of `Retry-After`):
/// five minutes, after which a host is worth another try regardless.
pub const DEFAULT_MAX_OPEN: Duration = Duration::from_secs(300);
/// Largest count window: a byte per call, so a MiB a breaker at most,
/// thousands of times the hundreds of calls a rate needs to mean
/// something; a window of billions would fail to allocate on the
/// breaker's first call.
pub const MAX_WINDOW_CALLS: usize = 1 << 20;
/// Most buckets of a time window: one a second for an hour. Each holds a
/// few counters, and a finer window slides no better for the rates it
/// gives.
pub const MAX_WINDOW_BUCKETS: usize = 3600;
/// Default growth of the open period on each repeated open: doubling
/// reaches the cap from the first period (10 s to 300 s) in five opens.
pub const DEFAULT_OPEN_BACKOFF: f64 = 2.0;
/// Default buckets of a time window: it slides by a tenth of its length,
/// near enough to a true sliding window for a tenth of the counting.
pub const DEFAULT_WINDOW_BUCKETS: usize = 10;
/// Probe calls admitted in half-open: three successes in a row are a
/// signal; one lucky call is not.
pub const DEFAULT_HALF_OPEN_CALLS: u32 = 3;
/// Longest a half-open probe may hold its slot before it is released: 30 s,
/// a generous client timeout.
pub const DEFAULT_MAX_HALF_OPEN: Duration = Duration::from_secs(30);
/// Most breakers kept (one per host): far above the hosts a client talks
/// to, low enough that a crawler cannot grow it without bound.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// A breaker unused this long (and closed) is dropped.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// Which window the rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowKind {
    /// The last N calls.
    Count(usize),
    /// The calls of the last `length`, in `buckets` buckets.
    Time {
        /// Window length.
        length: Duration,
        /// Buckets (resolution).
        buckets: usize,
    },
}

/// Where a successful recovery probe moves the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSuccess {
    /// To half-open: a few user calls still confirm recovery.
    HalfOpen,
    /// Straight to closed.
    Closed,
}

/// How requests are grouped into breakers.
#[derive(Clone)]
pub enum KeyBy {
    /// One breaker per `scheme://authority` (the default).
    Authority,
    /// One breaker for everything.
    Global,
    /// A user function of the request.
    Custom(Arc<dyn Fn(&request::Parts) -> String + Send + Sync>),
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Authority => f.write_str("Authority"),
            KeyBy::Global => f.write_str("Global"),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A synthetic health check run while a breaker is open: given the key,
/// it resolves to `true` when the host is healthy.
pub type Probe =
    Arc<dyn Fn(Arc<str>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

/// An event listener.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Breaker settings. `CircuitBreakerConfig::default()` is valid; the
/// builder checks everything in `build()`.
#[derive(Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) window: WindowKind,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) slow_call: Duration,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open: Duration,
    pub(crate) max_open: Duration,
    pub(crate) backoff: f64,
    pub(crate) jitter: f64,
    pub(crate) half_open_calls: u32,
    pub(crate) max_half_open: Duration,
    pub(crate) key: KeyBy,
    pub(crate) max_keys: usize,
    pub(crate) idle: Duration,
    pub(crate) classifier: Arc<dyn Classify>,
    /// Every event.
    pub(crate) listeners: Vec<Listener>,
    /// State events only (changes and openings): no call is timed for them.
    pub(crate) state_listeners: Vec<Listener>,
    pub(crate) probe: Option<Probe>,
    pub(crate) probe_success: ProbeSuccess,
}

impl fmt::Debug for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerConfig")
            .field("window", &self.window)
            .field("failure_rate", &self.failure_rate)
            .field("slow_rate", &self.slow_rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("open", &self.open)
            .field("max_open", &self.max_open)
            .field("half_open_calls", &self.half_open_calls)
            .field("key", &self.key)
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            window: WindowKind::Count(DEFAULT_WINDOW_CALLS),
            failure_rate: Some(DEFAULT_FAILURE_RATE),
            // Off by default: slowness is better handled by a timeout layer,
            // whose errors count as failures.
            slow_rate: None,
            slow_call: DEFAULT_SLOW_CALL,
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            consecutive_failures: None,
            open: DEFAULT_OPEN,
            max_open: DEFAULT_MAX_OPEN,
            backoff: DEFAULT_OPEN_BACKOFF,
            // Up to 10% shorter, so many clients do not return at once.
            jitter: 0.1,
            half_open_calls: DEFAULT_HALF_OPEN_CALLS,
            max_half_open: DEFAULT_MAX_HALF_OPEN,
            key: KeyBy::Authority,
            max_keys: DEFAULT_MAX_KEYS,
            idle: DEFAULT_IDLE,
            classifier: Arc::new(HttpClassifier),
            listeners: Vec::new(),
            state_listeners: Vec::new(),
            probe: None,
            probe_success: ProbeSuccess::HalfOpen,
        }
    }
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: CircuitBreakerConfig::default(),
        }
    }

    /// Whether calls are timed: only a slow-call rule or a listener of
    /// every event (whose per-call events carry each call's duration) needs
    /// it, and the closed path otherwise reads no clock.
    pub(crate) fn times_calls(&self) -> bool {
        self.slow_rate.is_some() || !self.listeners.is_empty()
    }
}

/// Builds a checked [`CircuitBreakerConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    fn with(mut self, f: impl FnOnce(&mut CircuitBreakerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The window rates are computed over.
    pub fn window(self, window: WindowKind) -> Self {
        self.with(|c| c.window = window)
    }

    /// Failure rate (percent) that trips the breaker; `None` disables it.
    pub fn failure_rate(self, percent: Option<f64>) -> Self {
        self.with(|c| c.failure_rate = percent)
    }

    /// Slow-call rate (percent) that trips the breaker, and what counts as slow.
    ///
    /// Calls are timed only when a slow-call rate is set or an event
    /// listener is registered ([`on_event`](Self::on_event)): otherwise no
    /// call counts as slow (in the window figures and the `slow` outcome
    /// of the calls counter alike) and the closed path reads no clock.
    pub fn slow_calls(self, percent: Option<f64>, slower_than: Duration) -> Self {
        self.with(|c| {
            c.slow_rate = percent;
            c.slow_call = slower_than;
        })
    }

    /// Calls in the window before rates are considered.
    pub fn minimum_calls(self, calls: u32) -> Self {
        self.with(|c| c.minimum_calls = calls)
    }

    /// Trip after this many failures in a row, whatever the rates.
    pub fn consecutive_failures(self, failures: Option<u32>) -> Self {
        self.with(|c| c.consecutive_failures = failures)
    }

    /// First open period, its cap, and the growth factor on repeated opens.
    pub fn open_period(self, first: Duration, max: Duration, backoff: f64) -> Self {
        self.with(|c| {
            c.open = first;
            c.max_open = max;
            c.backoff = backoff;
        })
    }

    /// Random shortening of each open period, as a fraction (0 to <1).
    pub fn jitter(self, fraction: f64) -> Self {
        self.with(|c| c.jitter = fraction)
    }

    /// Probe calls admitted in half-open, and how long one may take.
    pub fn half_open(self, calls: u32, max_time: Duration) -> Self {
        self.with(|c| {
            c.half_open_calls = calls;
            c.max_half_open = max_time;
        })
    }

    /// How requests are grouped into breakers.
    pub fn key_by(self, key: KeyBy) -> Self {
        self.with(|c| c.key = key)
    }

    /// Most breakers kept, and how long an unused closed one stays. The
    /// first `max_keys` keys seen are also the metrics' `key` labels; the
    /// breakers of later keys are labelled [`OTHER_KEY`](super::OTHER_KEY),
    /// so keys that come and go (a client sent to endless hosts) add no
    /// endless series to an exporter.
    pub fn registry(self, max_keys: usize, idle: Duration) -> Self {
        self.with(|c| {
            c.max_keys = max_keys;
            c.idle = idle;
        })
    }

    /// Replaces the outcome classifier (see [`HttpClassifier`]).
    pub fn classifier(self, classifier: impl Classify) -> Self {
        self.with(|c| c.classifier = Arc::new(classifier))
    }

    /// Adds an event listener, for every event. Per-call events carry each
    /// call's duration, so with a listener here every call reads the clock
    /// twice; [`on_state_change`](Self::on_state_change) costs calls nothing.
    pub fn on_event(self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.with(|c| c.listeners.push(Arc::new(listener)))
    }

    /// Adds a listener of state events only: [`Event::StateChanged`] and
    /// [`Event::Opened`] (what sharing openings with other instances needs,
    /// see [`SharedOpenings`](crate::monitor::SharedOpenings)). No call is
    /// timed for it, so the closed path stays as fast as with no listener.
    pub fn on_state_change(self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.with(|c| c.state_listeners.push(Arc::new(listener)))
    }

    /// A synthetic health check run at the end of each open period, and
    /// where its success leads. A probe that panics, or that has not
    /// answered within the half-open maximum time (see
    /// [`half_open`](Self::half_open)), counts as unhealthy.
    pub fn probe<F, Fut>(self, probe: F, on_success: ProbeSuccess) -> Self
    where
        F: Fn(Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        self.with(|c| {
            c.probe = Some(Arc::new(move |key| Box::pin(probe(key))));
            c.probe_success = on_success;
        })
    }

    /// Checks the settings.
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        let c = self.config;
        let percent_ok = |p: Option<f64>| p.is_none_or(|p| p > 0.0 && p <= 100.0);
        if !percent_ok(c.failure_rate) {
            return Err(ConfigError::new("failure_rate", "rates are percentages in (0, 100]"));
        }
        if !percent_ok(c.slow_rate) {
            return Err(ConfigError::new("slow_calls", "rates are percentages in (0, 100]"));
        }
        if c.failure_rate.is_none() && c.slow_rate.is_none() && c.consecutive_failures.is_none() {
            return Err(ConfigError::new(
                "failure_rate",
                "no trip condition: set a failure rate, a slow-call rate or consecutive failures",
            ));
        }
        match c.window {
            WindowKind::Count(0) => return Err(ConfigError::new("window", "a count window needs at least one call")),
            WindowKind::Count(calls) if calls > MAX_WINDOW_CALLS => {
                return Err(ConfigError::new(
                    "window",
                    "a count window holds at most MAX_WINDOW_CALLS (1,048,576) calls",
                ));
            }
            WindowKind::Time { length, buckets } if length.is_zero() || buckets == 0 => {
                return Err(ConfigError::new(
                    "window",
                    "a time window needs a length and at least one bucket",
                ));
            }
            WindowKind::Time { buckets, .. } if buckets > MAX_WINDOW_BUCKETS => {
                return Err(ConfigError::new(
                    "window",
                    "a time window has at most MAX_WINDOW_BUCKETS (3,600) buckets",
                ));
            }
            _ => {}
        }
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "consecutive failures must be at least 1",
            ));
        }
        if c.half_open_calls == 0 || c.max_half_open.is_zero() {
            return Err(ConfigError::new(
                "half_open",
                "half-open calls must be at least 1 and their time non-zero",
            ));
        }
        if c.max_keys == 0 {
            return Err(ConfigError::new("registry", "max keys must be at least 1"));
        }
        if c.open.is_zero() || c.max_open < c.open {
            return Err(ConfigError::new(
                "open_period",
                "open periods must be non-zero and the cap at least the first period",
            ));
        }
        if !(c.backoff >= 1.0 && c.backoff.is_finite()) {
            return Err(ConfigError::new("open_period", "backoff must be >= 1"));
        }
        if !(0.0..1.0).contains(&c.jitter) {
            return Err(ConfigError::new("jitter", "jitter must be in [0, 1)"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CircuitBreakerConfig, CircuitBreakerConfigBuilder, WindowKind};

    #[test]
    fn each_bad_setting_is_named() {
        let setting = |b: CircuitBreakerConfigBuilder| b.build().unwrap_err().setting();
        let b = CircuitBreakerConfig::builder;
        let s = Duration::from_secs;
        assert_eq!(setting(b().failure_rate(Some(0.0))), "failure_rate");
        assert_eq!(setting(b().failure_rate(Some(f64::NAN))), "failure_rate");
        assert_eq!(setting(b().slow_calls(Some(101.0), s(1))), "slow_calls");
        assert_eq!(
            setting(b().failure_rate(None).consecutive_failures(None)),
            "failure_rate",
            "no trip condition"
        );
        assert_eq!(setting(b().window(WindowKind::Count(0))), "window");
        let no_buckets = WindowKind::Time {
            length: s(10),
            buckets: 0,
        };
        assert_eq!(setting(b().window(no_buckets)), "window");
        // Too large to allocate on a breaker's first call (a ring of that
        // many bytes), or, past 2^32 buckets, a division by zero there.
        assert_eq!(
            setting(b().window(WindowKind::Count(super::MAX_WINDOW_CALLS + 1))),
            "window"
        );
        b().window(WindowKind::Count(super::MAX_WINDOW_CALLS)).build().unwrap();
        for buckets in [super::MAX_WINDOW_BUCKETS + 1, 1 << 32] {
            let many = WindowKind::Time { length: s(60), buckets };
            assert_eq!(setting(b().window(many)), "window", "{buckets}");
        }
        let most = WindowKind::Time {
            length: s(60),
            buckets: super::MAX_WINDOW_BUCKETS,
        };
        b().window(most).build().unwrap();
        assert_eq!(setting(b().consecutive_failures(Some(0))), "consecutive_failures");
        assert_eq!(setting(b().half_open(0, s(1))), "half_open");
        assert_eq!(setting(b().half_open(1, Duration::ZERO)), "half_open");
        assert_eq!(setting(b().registry(0, s(1))), "registry");
        assert_eq!(setting(b().open_period(Duration::ZERO, s(1), 2.0)), "open_period");
        assert_eq!(setting(b().open_period(s(10), s(1), 2.0)), "open_period");
        assert_eq!(setting(b().open_period(s(1), s(10), 0.5)), "open_period");
        assert_eq!(setting(b().jitter(1.0)), "jitter");
        assert!(b().build().is_ok(), "the defaults hold");
    }
}
