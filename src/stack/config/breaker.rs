//! `[circuit_breaker]` of an [`OptimizerConfig`](super::OptimizerConfig):
//! the section as a checked [`CircuitBreakerConfig`], each error naming its
//! key.

use std::time::Duration;

use super::{BreakerSection, ShareSection, StackError, choice, duration, env_secret, is_https, own_http1_client};
use crate::circuit_breaker::{
    CircuitBreakerConfig, DEFAULT_OPEN_BACKOFF, DEFAULT_WINDOW_BUCKETS, KeyBy, ProbeSuccess, WindowKind,
};

/// `[circuit_breaker]` as a checked [`CircuitBreakerConfig`].
pub(super) fn build(s: &BreakerSection) -> Result<CircuitBreakerConfig, StackError> {
    let mut cb = CircuitBreakerConfig::builder();
    match (s.window_calls, duration("circuit_breaker.window", s.window.as_ref())?) {
        (Some(_), Some(_)) => {
            return Err(StackError::new(
                "circuit_breaker.window",
                "a count window (window_calls) or a time window (window), not both",
            ));
        }
        (Some(n), None) => cb = cb.window(WindowKind::Count(n)),
        (None, Some(length)) => {
            cb = cb.window(WindowKind::Time {
                length,
                buckets: s.window_buckets.unwrap_or(DEFAULT_WINDOW_BUCKETS),
            });
        }
        (None, None) if s.window_buckets.is_some() => {
            return Err(StackError::new(
                "circuit_breaker.window_buckets",
                "buckets divide a time window: set window too",
            ));
        }
        (None, None) => {}
    }
    if s.failure_rate.is_some() {
        cb = cb.failure_rate(s.failure_rate);
    }
    let slow_call = duration("circuit_breaker.slow_call_duration", s.slow_call_duration.as_ref())?;
    match (s.slow_call_rate, slow_call) {
        (Some(rate), slower_than) => {
            cb = cb.slow_calls(
                Some(rate),
                slower_than.unwrap_or(crate::circuit_breaker::DEFAULT_SLOW_CALL),
            );
        }
        (None, Some(_)) => {
            return Err(StackError::new(
                "circuit_breaker.slow_call_rate",
                "slow_call_duration needs the slow-call rate that trips",
            ));
        }
        (None, None) => {}
    }
    if let Some(n) = s.minimum_calls {
        cb = cb.minimum_calls(n);
    }
    if s.consecutive_failures.is_some() {
        cb = cb.consecutive_failures(s.consecutive_failures);
    }
    let open = duration("circuit_breaker.open", s.open.as_ref())?.unwrap_or(crate::circuit_breaker::DEFAULT_OPEN);
    let max_open =
        duration("circuit_breaker.max_open", s.max_open.as_ref())?.unwrap_or(crate::circuit_breaker::DEFAULT_MAX_OPEN);
    let backoff = s.open_backoff.unwrap_or(DEFAULT_OPEN_BACKOFF);
    if !(backoff >= 1.0 && backoff.is_finite()) {
        return Err(StackError::new(
            "circuit_breaker.open_backoff",
            format!("{backoff}: the open period's growth must be at least 1"),
        ));
    }
    cb = cb.open_period(open, max_open, backoff);
    if let Some(fraction) = s.jitter {
        cb = cb.jitter(fraction);
    }
    let max_half_open = duration("circuit_breaker.max_half_open", s.max_half_open.as_ref())?;
    if s.half_open_calls.is_some() || max_half_open.is_some() {
        cb = cb.half_open(
            s.half_open_calls
                .unwrap_or(crate::circuit_breaker::DEFAULT_HALF_OPEN_CALLS),
            max_half_open.unwrap_or(crate::circuit_breaker::DEFAULT_MAX_HALF_OPEN),
        );
    }
    cb = cb.key_by(choice(
        "circuit_breaker.key",
        s.key.as_deref(),
        [("authority", KeyBy::Authority), ("global", KeyBy::Global)],
    )?);
    let idle = duration("circuit_breaker.idle", s.idle.as_ref())?;
    if s.max_keys.is_some() || idle.is_some() {
        cb = cb.registry(
            s.max_keys.unwrap_or(crate::circuit_breaker::DEFAULT_MAX_KEYS),
            idle.unwrap_or(crate::circuit_breaker::DEFAULT_IDLE),
        );
    }
    let grpc = Some(crate::circuit_breaker::GrpcClassifier::new());
    let classifier = choice(
        "circuit_breaker.classifier",
        s.classifier.as_deref(),
        [("http", None), ("grpc", grpc)],
    )?;
    if let Some(grpc) = classifier {
        cb = cb.classifier(grpc);
    }
    // Where each of the builder's combined checks points in this file.
    let window = match (s.window.is_some(), s.window_buckets) {
        (true, Some(0)) => "circuit_breaker.window_buckets",
        (true, _) => "circuit_breaker.window",
        (false, _) => "circuit_breaker.window_calls",
    };
    // With the cap left at its default, a long first period is what is wrong.
    let open_period = if open.is_zero() || s.max_open.is_none() {
        "circuit_breaker.open"
    } else {
        "circuit_breaker.max_open"
    };
    let half_open = if max_half_open.is_some_and(|d| d.is_zero()) {
        "circuit_breaker.max_half_open"
    } else {
        "circuit_breaker.half_open_calls"
    };
    cb.build().map_err(|e| {
        let field = match e.setting() {
            "failure_rate" => "circuit_breaker.failure_rate",
            "slow_calls" => "circuit_breaker.slow_call_rate",
            "window" => window,
            "consecutive_failures" => "circuit_breaker.consecutive_failures",
            "half_open" => half_open,
            "registry" => "circuit_breaker.max_keys",
            "jitter" => "circuit_breaker.jitter",
            "open_period" => open_period,
            _ => "circuit_breaker",
        };
        StackError::new(field, e.to_string())
    })
}

/// The recovery probe `s` asks for: its path, timeout and where success
/// leads (see `OptimizerStackBuilder::recovery_probe`).
pub(super) fn probe(s: &BreakerSection) -> Result<Option<(&str, Duration, ProbeSuccess)>, StackError> {
    let timeout = duration("circuit_breaker.probe_timeout", s.probe_timeout.as_ref())?;
    let on_success = choice(
        "circuit_breaker.probe_success",
        s.probe_success.as_deref(),
        [("half-open", ProbeSuccess::HalfOpen), ("closed", ProbeSuccess::Closed)],
    )?;
    let Some(path) = s.probe_path.as_deref() else {
        if timeout.is_some() || s.probe_success.is_some() {
            return Err(StackError::new(
                "circuit_breaker.probe_path",
                "probe_timeout and probe_success set a probe: give its path too",
            ));
        }
        return Ok(None);
    };
    if !super::super::probe::is_path(path) {
        return Err(StackError::new(
            "circuit_breaker.probe_path",
            format!("{path:?} is not a path (like \"/health\")"),
        ));
    }
    if s.key.as_deref() == Some("global") {
        return Err(StackError::new(
            "circuit_breaker.probe_path",
            "a probe goes to the breaker's host: it needs key = \"authority\"",
        ));
    }
    let timeout = timeout.unwrap_or(super::super::DEFAULT_PROBE_TIMEOUT);
    if timeout.is_zero() {
        return Err(StackError::new(
            "circuit_breaker.probe_timeout",
            "must be greater than zero",
        ));
    }
    Ok(Some((path, timeout, on_success)))
}

/// `[circuit_breaker.share]` as a sender over an HTTP/1.1 client of its
/// own (any admin server speaks it; with the `tls` feature, https peers
/// are verified against the system's roots).
pub(super) fn share(s: &ShareSection) -> Result<crate::monitor::SharedOpenings, StackError> {
    let field = |name: &str| format!("circuit_breaker.share.{name}");
    if s.peers.is_empty() && s.resolve.is_empty() {
        // The table, which lacks both.
        return Err(StackError::new(
            "circuit_breaker.share",
            "name the peers: their admin URLs (peers), or a name for them (resolve)",
        ));
    }
    let mut share = crate::monitor::SharedOpenings::builder();
    for peer in &s.peers {
        share = share.peer(peer);
    }
    for name in &s.resolve {
        share = share.peers_resolved(name);
    }
    if let Some(name) = &s.token_env {
        share = share.token(&env_secret(&field("token_env"), name)?);
    }
    if let Some(timeout) = duration(&field("timeout"), s.timeout.as_ref())? {
        share = share.timeout(timeout);
    }
    let named = |e: crate::monitor::SharedOpeningsError| {
        let key = match e.setting() {
            "token" => "token_env",
            "timeout" => "timeout",
            "peers_resolved" => "resolve",
            _ => "peers",
        };
        StackError::new(field(key), e.to_string())
    };
    let client = own_http1_client(&field("peers"), s.peers.iter().any(|p| is_https(p)))?;
    share.build(client).map_err(named)
}
