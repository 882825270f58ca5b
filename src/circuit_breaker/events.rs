//! Breaker events, for listeners and the `metrics` facade.

use std::sync::Arc;
use std::time::Duration;

use super::state::State;

/// Something a breaker did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The breaker for `key` opened, or opened again while open, for
    /// `open_for`. Comes after the [`StateChanged`](Event::StateChanged)
    /// it goes with, if any. To share openings between instances of a
    /// client (processes behind one load balancer, say), send the
    /// [`OpenCause::Calls`] ones (from a listener of
    /// [`on_state_change`](super::CircuitBreakerConfigBuilder::on_state_change),
    /// which costs calls nothing) to the others, which pass each to
    /// [`CircuitBreakers::trip`](super::CircuitBreakers::trip); an opening
    /// that came that way says [`OpenCause::Trip`] and is not sent on, so
    /// none goes round in circles.
    Opened {
        /// Breaker key.
        key: Arc<str>,
        /// The open period that began (backoff, jitter and `Retry-After`
        /// applied).
        open_for: Duration,
        /// What opened it.
        cause: OpenCause,
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

/// What opened a breaker (see [`Event::Opened`]; serialised as
/// [`OpenCause::as_str`] gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OpenCause {
    /// Calls through the breaker: its window tripped, or a half-open probe
    /// call failed.
    Calls,
    /// The recovery probe found the host still down, so the breaker opened
    /// again for a longer period.
    Probe,
    /// [`CircuitBreakers::trip`](super::CircuitBreakers::trip): another
    /// instance's breaker for the same key opened, or an operator asked.
    Trip,
}

impl OpenCause {
    /// A lowercase name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpenCause::Calls => "calls",
            OpenCause::Probe => "probe",
            OpenCause::Trip => "trip",
        }
    }
}

/// The breaker's state per key, as [`State::code`]: 0 closed, 1 open, 2
/// half-open, 3 disabled, 4 forced open, 5 metrics only.
pub(crate) const STATE_GAUGE: &str = "tower_optimizer.circuit_breaker.state";
/// State changes, by key and new state.
pub(crate) const TRANSITIONS: &str = "tower_optimizer.circuit_breaker.transitions";
/// Calls, by key and outcome.
pub(crate) const CALLS: &str = "tower_optimizer.circuit_breaker.calls";

/// Describes the breaker's metrics to the recorder in place, so an
/// exporter gives them help text (Prometheus linters flag a family
/// without). Called where the breaker registers its handles: once per key
/// and recorder, and on each (rare) state change.
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!(
        STATE_GAUGE,
        "Circuit breaker state per key: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open, 5 metrics only."
    );
    metrics::describe_counter!(TRANSITIONS, "Circuit breaker state changes, by key and new state.");
    metrics::describe_counter!(
        CALLS,
        "Calls through a circuit breaker, by key and outcome (success, failure, slow, rejected)."
    );
}

/// The `key` label of the breakers past the labelled ones (see
/// [`CircuitBreakers`](super::CircuitBreakers)), as OpenTelemetry spells a
/// value it folds.
pub const OTHER_KEY: &str = "_OTHER";

/// Sends an event to the listeners.
pub(crate) fn emit(listeners: &[super::config::Listener], event: &Event) {
    for listener in listeners {
        crate::util::guarded("circuit breaker listener", || listener(event));
    }
}

/// Counts a state change of the breaker labelled `label` through the
/// `metrics` facade (per-call counters go through handles cached in each
/// breaker; only the rare state changes register here), and sets its state
/// gauge, unless the label is [`OTHER_KEY`], which several breakers share:
/// one gauge cannot hold their states.
pub(crate) fn record_transition(label: &str, to: State) {
    describe_metrics();
    metrics::counter!(TRANSITIONS, "key" => label.to_owned(), "to" => to.as_str()).increment(1);
    if label != OTHER_KEY {
        metrics::gauge!(STATE_GAUGE, "key" => label.to_owned()).set(f64::from(to.code()));
    }
}
