//! Breaker events, for listeners and the `metrics` facade.

use std::sync::Arc;
use std::time::Duration;

use super::state::State;

/// Something a breaker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The breaker for `key` moved between states.
    StateChanged {
        /// Breaker key.
        key: Arc<str>,
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
    /// A call was refused because the circuit is open.
    Rejected {
        /// Breaker key.
        key: Arc<str>,
        /// Time until the breaker lets calls through again.
        retry_after: Duration,
    },
    /// A call succeeded.
    Success {
        /// Breaker key.
        key: Arc<str>,
        /// How long it took.
        elapsed: Duration,
    },
    /// A call failed.
    Failure {
        /// Breaker key.
        key: Arc<str>,
        /// How long it took.
        elapsed: Duration,
    },
    /// A call was slower than the slow-call threshold.
    SlowCall {
        /// Breaker key.
        key: Arc<str>,
        /// How long it took.
        elapsed: Duration,
    },
}

/// Sends an event to the listeners and the `metrics` facade.
pub(crate) fn emit(listeners: &[super::config::Listener], event: &Event) {
    for listener in listeners {
        crate::util::guarded("circuit breaker listener", || listener(event));
    }
    // Per-call counters go through handles cached in each breaker; only
    // the rare state changes register here.
    if let Event::StateChanged { key, to, .. } = event {
        let key = key.to_string();
        metrics::counter!("tower_optimizer.circuit_breaker.transitions", "key" => key.clone(), "to" => to.as_str())
            .increment(1);
        metrics::gauge!("tower_optimizer.circuit_breaker.state", "key" => key).set(f64::from(to.code()));
    }
}
