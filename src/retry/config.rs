//! [`RetryConfig`]: how often, how soon and for which requests to retry,
//! checked by [`RetryConfigBuilder::build`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::budget::BudgetConfig;
use super::decide::{HttpRetry, RetryOn};
use super::replay::{Replayer, by_clone};

/// Default attempts per request: the first try and two retries. A third
/// retry rarely succeeds where two failed, and each one is more load on a
/// host that is already failing.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default first backoff ceiling: 50 ms, about a loopback-to-datacentre
/// round trip, so a blip is retried before the caller notices.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(50);
/// Default backoff cap: 2 s; a client request that waits longer for a
/// retry is usually better answered with the failure (or a stale entry).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);
/// Default longest `Retry-After` waited for: 5 s. A server asking for
/// longer gets its response passed on, `Retry-After` and all, for the
/// caller to decide.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Which methods [`Decision::Retry`](super::Decision::Retry) and
/// [`Decision::RetryAfter`](super::Decision::RetryAfter) apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Methods {
    /// Only idempotent methods (RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`,
    /// `TRACE`, `PUT`, `DELETE`) and requests with an `Idempotency-Key`
    /// header or marked [`RequestRetry::Idempotent`](super::RequestRetry):
    /// a `POST` that timed out may have been carried out, and sending it
    /// again may carry it out twice.
    #[default]
    Idempotent,
    /// Every method: for upstreams whose writes are idempotent by design
    /// (idempotency keys).
    All,
}

/// Retry settings; [`RetryConfig::default`] is the documented defaults.
#[derive(Clone)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) deadline: Option<Duration>,
    pub(crate) methods: Methods,
    pub(crate) budget: BudgetConfig,
    pub(crate) retry_on: Arc<dyn RetryOn>,
    pub(crate) replay: Vec<Replayer>,
}

impl fmt::Debug for RetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("max_retry_after", &self.max_retry_after)
            .field("deadline", &self.deadline)
            .field("methods", &self.methods)
            .field("budget", &self.budget)
            .field("replay_types", &self.replay.len())
            .finish_non_exhaustive()
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            deadline: None,
            methods: Methods::Idempotent,
            budget: BudgetConfig::default(),
            retry_on: Arc::new(HttpRetry),
            replay: Vec::new(),
        }
    }
}

impl RetryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder {
            config: RetryConfig::default(),
        }
    }

    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The budget's settings.
    pub fn budget(&self) -> BudgetConfig {
        self.budget
    }
}

/// Builds a checked [`RetryConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryConfigBuilder {
    config: RetryConfig,
}

impl RetryConfigBuilder {
    fn with(mut self, f: impl FnOnce(&mut RetryConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Attempts per request, the first included (1: never retry).
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|c| c.max_attempts = attempts)
    }

    /// Backoff: retry `n` waits a random time up to `base * 2^(n-1)`,
    /// capped at `max`.
    pub fn backoff(self, base: Duration, max: Duration) -> Self {
        self.with(|c| {
            c.base_delay = base;
            c.max_delay = max;
        })
    }

    /// The longest `Retry-After` waited for; a response asking for longer
    /// is passed on as it is.
    pub fn max_retry_after(self, max: Duration) -> Self {
        self.with(|c| c.max_retry_after = max)
    }

    /// No retry starts later than this after the request's first attempt
    /// began (its wait included), so that retries add a known bound to a
    /// request's time: the failure at hand is passed on instead. Off by
    /// default: the attempts and their waits bound it already.
    pub fn deadline(self, deadline: Duration) -> Self {
        self.with(|c| c.deadline = Some(deadline))
    }

    /// Which methods are retried on failures that may have reached the
    /// server.
    pub fn methods(self, methods: Methods) -> Self {
        self.with(|c| c.methods = methods)
    }

    /// The retry budget shared by every request of the policy.
    pub fn budget(self, budget: BudgetConfig) -> Self {
        self.with(|c| c.budget = budget)
    }

    /// The rule deciding what is retried (default [`HttpRetry`]).
    pub fn retry_on(self, rule: impl RetryOn) -> Self {
        self.with(|c| c.retry_on = Arc::new(rule))
    }

    /// Also retries requests whose body is of type `T`, copied by its
    /// `Clone` (`http-body-util`'s `Full` and `Empty`, `Bytes`, `String`,
    /// `Vec<u8>`, `&'static str`, `()` and, with the `reqwest` feature, a
    /// buffered `reqwest::Body` are known already).
    pub fn replay_body<T: Clone + Send + 'static>(self) -> Self {
        self.with(|c| c.replay.push(by_clone::<T>))
    }

    /// The checked settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the setting: no attempt at all, a backoff
    /// whose cap is below its base, or a budget that is negative, not a
    /// number, or over no time.
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        let c = self.config;
        if c.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "max_attempts must be at least 1 (the first try)",
            ));
        }
        if c.max_delay < c.base_delay {
            return Err(ConfigError::new("backoff", "the backoff cap must be at least its base"));
        }
        if !(c.budget.ratio.is_finite() && c.budget.ratio >= 0.0) {
            return Err(ConfigError::new(
                "budget.ratio",
                "the budget ratio must be a number >= 0",
            ));
        }
        if c.budget.window < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "budget.window",
                "the budget window must be at least 10 ms",
            ));
        }
        Ok(c)
    }
}

/// Invalid retry settings, from [`RetryConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    message: &'static str,
}

impl ConfigError {
    const fn new(setting: &'static str, message: &'static str) -> Self {
        ConfigError { setting, message }
    }

    /// The builder setting at fault, by its method's name (`"max_attempts"`,
    /// `"backoff"`), or a field of its argument (`"budget.ratio"`,
    /// `"budget.window"`), for a caller that maps it back to where the
    /// value came from.
    #[must_use]
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let err = |b: RetryConfigBuilder| b.build().unwrap_err().to_string();
        assert!(err(RetryConfig::builder().max_attempts(0)).contains("max_attempts"));
        assert!(
            err(RetryConfig::builder().backoff(Duration::from_secs(2), Duration::from_secs(1))).contains("backoff cap")
        );
        let budget = |ratio, window| BudgetConfig {
            ratio,
            min_per_second: 1,
            window,
        };
        assert!(err(RetryConfig::builder().budget(budget(f64::NAN, Duration::from_secs(1)))).contains("ratio"));
        assert!(err(RetryConfig::builder().budget(budget(-0.1, Duration::from_secs(1)))).contains("ratio"));
        assert!(err(RetryConfig::builder().budget(budget(0.1, Duration::ZERO))).contains("window"));
        let setting = |b: RetryConfigBuilder| b.build().unwrap_err().setting();
        assert_eq!(setting(RetryConfig::builder().max_attempts(0)), "max_attempts");
        assert_eq!(
            setting(RetryConfig::builder().backoff(Duration::from_secs(2), Duration::from_secs(1))),
            "backoff"
        );
        assert_eq!(
            setting(RetryConfig::builder().budget(budget(-0.1, Duration::from_secs(1)))),
            "budget.ratio"
        );
        assert_eq!(
            setting(RetryConfig::builder().budget(budget(0.1, Duration::ZERO))),
            "budget.window"
        );
        let ok = RetryConfig::builder().max_attempts(1).build().unwrap();
        assert_eq!(ok.max_attempts(), 1);
    }
}
