//! [`CircuitBreakerLayer`]: a small config value over a shared registry.

use tower_layer::Layer;

use super::config::CircuitBreakerConfig;
use super::fallback::{NoFallback, WithFallback};
use super::registry::CircuitBreakers;
use super::service::CircuitBreakerService;

/// Wraps services with per-key circuit breakers. Every service built from
/// one layer (and its clones) shares the same breakers.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<F = NoFallback> {
    breakers: CircuitBreakers,
    fallback: F,
}

impl CircuitBreakerLayer {
    /// A layer with `config` (see [`CircuitBreakerConfig::builder`] for a
    /// checked one).
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer {
            breakers: CircuitBreakers::new(config),
            fallback: NoFallback,
        }
    }

    /// Sends requests whose circuit is open to `fallback` (a secondary
    /// upstream) instead of failing them.
    pub fn with_fallback<T>(self, fallback: T) -> CircuitBreakerLayer<WithFallback<T>> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            fallback: WithFallback(fallback),
        }
    }
}

impl CircuitBreakerLayer {
    /// Sends requests whose circuit is open to a custom [`Fallback`](super::Fallback)
    /// policy (which may decline a request, leaving it to fail fast).
    pub fn with_fallback_policy<F>(self, fallback: F) -> CircuitBreakerLayer<F> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            fallback,
        }
    }
}

impl<F> CircuitBreakerLayer<F> {
    /// The handle to inspect and steer the breakers.
    pub fn breakers(&self) -> CircuitBreakers {
        self.breakers.clone()
    }
}

impl<S, F: Clone> Layer<S> for CircuitBreakerLayer<F> {
    type Service = CircuitBreakerService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breakers.clone(), self.fallback.clone())
    }
}
