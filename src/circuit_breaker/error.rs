//! Error types of the circuit breaker.
//!
//! ```
//! use std::time::Duration;
//! use tower_optimizer::BoxError;
//! use tower_optimizer::circuit_breaker::CircuitBreakerConfig;
//! use tower_optimizer::circuit_breaker::error::Open;
//!
//! // Refused calls come back as a `BoxError` that downcasts to `Open`.
//! let error: BoxError = Box::new(Open::new("https://api.example".into(), Duration::from_secs(10)));
//! let open = error.downcast_ref::<Open>().unwrap();
//! assert_eq!((open.key(), open.retry_after_secs()), ("https://api.example", 10));
//! // Bad settings are an error from `build()`, never a panic later.
//! let bad = CircuitBreakerConfig::builder().failure_rate(Some(150.0)).build().unwrap_err();
//! assert!(bad.to_string().starts_with("invalid circuit breaker configuration"));
//! ```

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

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up, as
    /// a `Retry-After` header gives it (RFC 9110 §10.2.3): a client that
    /// waits that long finds the circuit no longer open.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
    }

    /// The answer an HTTP hop (a proxy, a gateway, a handler) gives in place
    /// of this error: `503 Service Unavailable` with a `Retry-After`, so its
    /// own clients back off for as long as the circuit stays open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_optimizer::circuit_breaker::error::Open;
    ///
    /// let open = Open::new("https://api.example".into(), Duration::from_millis(2500));
    /// let response: http::Response<String> = open.to_response();
    /// assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
    /// ```
    pub fn to_response<B: Default>(&self) -> http::Response<B> {
        let mut response = http::Response::new(B::default());
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(self.retry_after_secs()),
        );
        response
    }

    /// The `Open` in `error` or anywhere in its `source()` chain, for an
    /// error that came through a layer that wraps errors (such as
    /// `tower::buffer`) on its way out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_optimizer::BoxError;
    /// use tower_optimizer::circuit_breaker::error::Open;
    ///
    /// #[derive(Debug)]
    /// struct Wrapped(BoxError);
    /// impl std::fmt::Display for Wrapped {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("service failed")
    ///     }
    /// }
    /// impl std::error::Error for Wrapped {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         Some(&*self.0)
    ///     }
    /// }
    ///
    /// let error: BoxError = Box::new(Wrapped(Box::new(Open::new("http://a.test".into(), Duration::from_secs(1)))));
    /// assert!(error.downcast_ref::<Open>().is_none());
    /// assert_eq!(Open::find(&*error).unwrap().key(), "http://a.test");
    /// ```
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Open> {
        let mut source = Some(error);
        while let Some(e) = source {
            if let Some(open) = e.downcast_ref::<Open>() {
                return Some(open);
            }
            source = e.source();
        }
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |d| Open::new("k".into(), d).retry_after_secs();
        assert_eq!(secs(Duration::ZERO), 0);
        assert_eq!(secs(Duration::from_nanos(1)), 1);
        assert_eq!(secs(Duration::from_secs(10)), 10);
        assert_eq!(secs(Duration::from_millis(10_001)), 11);
        assert_eq!(secs(Duration::MAX), u64::MAX);
        let response: http::Response<()> = Open::new("k".into(), Duration::from_secs(7)).to_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "7");
    }
}

/// Invalid breaker settings, from `CircuitBreakerConfig::builder().build()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    message: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(setting: &'static str, message: &'static str) -> Self {
        ConfigError { setting, message }
    }

    /// The builder setting at fault, by its method's name
    /// (`"failure_rate"`, `"window"`, `"open_period"`, ...), for a caller
    /// that maps it back to where the value came from.
    #[must_use]
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
