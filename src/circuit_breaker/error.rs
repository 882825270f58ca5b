//! Error types of the circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The circuit for `key` is open: the call was refused without reaching
/// the inner service. Returned as a `BoxError`; `downcast_ref::<Open>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    key: Arc<str>,
    retry_after: Duration,
}

impl Open {
    /// An open-circuit error for `key`, open for `retry_after` more.
    pub fn new(key: Arc<str>, retry_after: Duration) -> Self {
        Open { key, retry_after }
    }

    /// The breaker's key (by default `scheme://authority`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Time until the breaker lets a call through again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit open for {}, retry in {:.1}s",
            self.key,
            self.retry_after.as_secs_f64()
        )
    }
}

impl std::error::Error for Open {}

/// Invalid breaker settings, from `CircuitBreakerConfig::builder().build()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(message: &'static str) -> Self {
        ConfigError { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
