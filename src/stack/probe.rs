//! The stack's recovery probe: the circuit breaker's health request, sent
//! at the end of each open period straight over the stack's own client,
//! past its layers (through them, an open circuit would refuse it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::settings::StackError;
use crate::circuit_breaker::{CircuitBreakerConfig, KeyBy, ProbeSuccess, http_probe};

/// The probe's timeout when a configuration file names none: a health
/// endpoint answers in well under a second, and five tolerate a host
/// still warming up without waiting on one that is gone for long.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `path` can follow a breaker's key in the probe's URL: an
/// absolute path, with a query if it likes (`/health`, `/ping?deep=1`).
pub(crate) fn is_path(path: &str) -> bool {
    path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok()
}

/// What `OptimizerStackBuilder::recovery_probe` asked for.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSettings {
    pub(crate) path: String,
    pub(crate) timeout: Duration,
    pub(crate) on_success: ProbeSuccess,
}

const FIELD: &str = "recovery_probe";

impl ProbeSettings {
    /// Checks the settings against the breaker they are for.
    pub(crate) fn check(&self, breaker: Option<&CircuitBreakerConfig>) -> Result<(), StackError> {
        let Some(breaker) = breaker else {
            return Err(StackError::new(FIELD, "needs a circuit breaker to probe for"));
        };
        if breaker.probe.is_some() {
            return Err(StackError::new(
                FIELD,
                "the circuit breaker's config has a probe of its own: keep one of the two",
            ));
        }
        if !matches!(breaker.key, KeyBy::Authority) {
            // The probe goes to `{key}{path}`: only an authority key names a host.
            return Err(StackError::new(
                FIELD,
                "needs breakers keyed by scheme and authority (the default key)",
            ));
        }
        if !is_path(&self.path) {
            return Err(StackError::new(
                FIELD,
                format!("{:?} is not a path (like \"/health\")", self.path),
            ));
        }
        if self.timeout.is_zero() {
            return Err(StackError::new(FIELD, "the probe's timeout must be greater than zero"));
        }
        Ok(())
    }

    /// `breaker` with this probe over `client`.
    pub(crate) fn attach<S, R>(&self, breaker: &mut CircuitBreakerConfig, client: S)
    where
        S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
        S::Future: Send,
    {
        breaker.probe = Some(Arc::new(http_probe(client, &self.path, self.timeout)));
        breaker.probe_success = self.on_success;
    }
}
