//! The breaker state machine (resilience4j's, plus `Retry-After`-aware
//! open periods with backoff and jitter, stuck-probe release and a
//! generation number that discards late results).
//!
//! Pure logic: every method takes `now`.

use std::time::Duration;

use tokio::time::Instant;

use super::classify::Outcome;
use super::config::{CircuitBreakerConfig, WindowKind};
use super::events::OpenCause;
use super::window::{CountWindow, Sample, TimeWindow, Window, WindowFigures};

/// How much later than an open breaker's own end a trip must end to make
/// its open period longer. An echo of the breaker's own opening (a peer
/// list that names this instance too, as one list shared by every
/// instance does) ends moments after it, and must not count as another
/// opening.
pub(crate) const TRIP_SLACK: Duration = Duration::from_secs(1);

/// A breaker's state (serialised as [`State::as_str`] gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum State {
    /// Calls pass; outcomes are recorded; the breaker may trip.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A bounded number of probe calls decide between closed and open.
    HalfOpen,
    /// Calls pass; nothing is recorded.
    Disabled,
    /// Calls fail fast until the breaker is reset or forced closed.
    ForcedOpen,
    /// Calls pass and are recorded, but the breaker never trips.
    MetricsOnly,
}

impl State {
    /// A lowercase name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
            State::MetricsOnly => "metrics_only",
        }
    }

    pub(crate) const fn from_code(code: u8) -> State {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            4 => State::ForcedOpen,
            _ => State::MetricsOnly,
        }
    }

    /// The value of the state gauge (0 closed, 1 open, 2 half-open, 3
    /// disabled, 4 forced open, 5 metrics only).
    pub const fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
            State::MetricsOnly => 5,
        }
    }
}

/// Leave to make one call, tied to the breaker's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    pub(crate) generation: u64,
    pub(crate) probe: bool,
    /// Whether the outcome is recorded at all (not in `Disabled`).
    pub(crate) recorded: bool,
}

/// A state change, for events; or an open breaker opened again (`from`
/// and `to` both [`State::Open`]), which carries an [`Opening`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
    /// For each (re-)opening: for how long, and why.
    pub(crate) opening: Option<Opening>,
}

/// An open period that began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opening {
    pub(crate) period: Duration,
    pub(crate) cause: OpenCause,
}

#[derive(Debug, Clone, Copy)]
struct HalfOpen {
    admitted: u32,
    in_flight: u32,
    successes: u32,
    since: Instant,
}

/// One breaker.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    state: State,
    generation: u64,
    window: Window,
    consecutive_failures: u32,
    open_until: Instant,
    /// Opens since the last close: the backoff exponent.
    opens: u32,
    /// What opened it last (what the open period ends by).
    opened_by: OpenCause,
    half_open: HalfOpen,
    rng: crate::util::Xorshift,
}

impl Breaker {
    pub(crate) fn new(config: &CircuitBreakerConfig, now: Instant, seed: u64) -> Self {
        let window = match config.window {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time { length, buckets } => Window::Time(TimeWindow::new(length, buckets, now)),
        };
        Breaker {
            state: State::Closed,
            generation: 0,
            window,
            consecutive_failures: 0,
            open_until: now,
            opens: 0,
            opened_by: OpenCause::Calls,
            half_open: HalfOpen {
                admitted: 0,
                in_flight: 0,
                successes: 0,
                since: now,
            },
            rng: crate::util::Xorshift::new(seed),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn figures(&mut self, now: Instant) -> WindowFigures {
        self.window.figures(now)
    }

    /// When an open breaker lets calls through again.
    pub(crate) fn open_until(&self) -> Instant {
        self.open_until
    }

    /// What opened it last: for an open breaker, what set the end of its
    /// open period.
    pub(crate) fn opened_by(&self) -> OpenCause {
        self.opened_by
    }

    fn to(&mut self, state: State, now: Instant, out: &mut Vec<Transition>) {
        if self.state != state {
            out.push(Transition {
                from: self.state,
                to: state,
                opening: None,
            });
        }
        self.state = state;
        self.generation += 1;
        match state {
            State::HalfOpen => {
                self.half_open = HalfOpen {
                    admitted: 0,
                    in_flight: 0,
                    successes: 0,
                    since: now,
                }
            }
            State::Closed | State::MetricsOnly => {
                self.window.clear();
                self.consecutive_failures = 0;
            }
            _ => {}
        }
    }

    /// Moves an open breaker whose period ended to half-open, and frees
    /// half-open slots held by probes stuck past the maximum half-open time.
    pub(crate) fn tick(&mut self, config: &CircuitBreakerConfig, now: Instant, out: &mut Vec<Transition>) {
        // With a recovery probe, the probe decides when the open period
        // ends; user calls take over only if it has not within the
        // half-open grace (say, the probe task could not run).
        let grace = if config.probe.is_some() {
            config.max_half_open
        } else {
            Duration::ZERO
        };
        if self.state == State::Open && now >= crate::util::instant_after(self.open_until, grace) {
            self.to(State::HalfOpen, now, out);
        }
        if self.state == State::HalfOpen
            && self.half_open.in_flight > 0
            && now.saturating_duration_since(self.half_open.since) >= config.max_half_open
        {
            // New generation: the stuck probes' late answers are discarded.
            self.generation += 1;
            self.half_open.admitted = self.half_open.successes;
            self.half_open.in_flight = 0;
            self.half_open.since = now;
        }
    }

    /// Asks to make a call: a permit, or the time until one could be had.
    pub(crate) fn admit(
        &mut self,
        config: &CircuitBreakerConfig,
        now: Instant,
        out: &mut Vec<Transition>,
    ) -> Result<Permit, Duration> {
        self.tick(config, now, out);
        let permit = |probe, recorded| Permit {
            generation: self.generation,
            probe,
            recorded,
        };
        match self.state {
            State::Closed | State::MetricsOnly => Ok(permit(false, true)),
            State::Disabled => Ok(permit(false, false)),
            State::Open => Err(self.open_until.saturating_duration_since(now)),
            State::ForcedOpen => Err(config.open),
            State::HalfOpen => {
                if self.half_open.admitted < config.half_open_calls {
                    self.half_open.admitted += 1;
                    self.half_open.in_flight += 1;
                    Ok(permit(true, true))
                } else {
                    // Probes are out: try again when they may have answered.
                    let answered_by = crate::util::instant_after(self.half_open.since, config.max_half_open);
                    Err(answered_by.saturating_duration_since(now))
                }
            }
        }
    }

    /// Records `n` successes of the current generation that were counted
    /// without the lock (see `tally.rs`). No trip check: they were counted
    /// only while [`success_cannot_trip`](Self::success_cannot_trip) held,
    /// and a later recorded call checks anyway.
    pub(crate) fn record_successes(&mut self, n: u64) {
        if n == 0 || !matches!(self.state, State::Closed | State::MetricsOnly) {
            return;
        }
        self.consecutive_failures = 0;
        if let Window::Count(window) = &mut self.window {
            window.record_successes(n);
        }
    }

    /// Whether successes, any number of them, could not trip the breaker
    /// now, so they may be counted without the lock. Only count windows
    /// qualify (a time window needs each call's time).
    pub(crate) fn success_cannot_trip(&self, config: &CircuitBreakerConfig) -> bool {
        let Window::Count(window) = &self.window else {
            return false;
        };
        match self.state {
            State::MetricsOnly => true,
            State::Closed => {
                // One more success gives the highest rates successes can:
                // later ones only add calls or push failures out.
                let figures = window.figures();
                let calls = (figures.calls + 1).min(u32::try_from(window.size()).unwrap_or(u32::MAX));
                if calls < config.minimum_calls {
                    return true;
                }
                let below = |count: u32, threshold: Option<f64>| {
                    threshold.is_none_or(|t| f64::from(count) * 100.0 / f64::from(calls) < t)
                };
                below(figures.failures, config.failure_rate) && below(figures.slow, config.slow_rate)
            }
            _ => false,
        }
    }

    /// Gives back a permit whose call was cancelled: it counts as nothing.
    pub(crate) fn release(&mut self, permit: Permit) {
        if permit.probe && permit.generation == self.generation && self.state == State::HalfOpen {
            self.half_open.admitted -= 1;
            self.half_open.in_flight -= 1;
        }
    }

    /// Records a finished call. Results from an earlier generation (the
    /// state changed while the call was out) are discarded.
    #[allow(clippy::too_many_arguments)] // pure logic: the clock and the call's facts all arrive as arguments
    pub(crate) fn record(
        &mut self,
        config: &CircuitBreakerConfig,
        permit: Permit,
        outcome: Outcome,
        elapsed: Duration,
        retry_after: Option<Duration>,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        if !permit.recorded || permit.generation != self.generation {
            return;
        }
        if outcome == Outcome::Ignored {
            self.release(permit);
            return;
        }
        let failure = outcome == Outcome::Failure;
        let slow = elapsed >= config.slow_call;
        match self.state {
            State::Closed | State::MetricsOnly => {
                self.window.record(Sample { failure, slow }, now);
                self.consecutive_failures = if failure { self.consecutive_failures + 1 } else { 0 };
                if self.state == State::Closed && self.should_trip(config, now) {
                    self.open(config, retry_after, OpenCause::Calls, now, out);
                }
            }
            State::HalfOpen => {
                self.half_open.in_flight -= 1;
                let slow_fails = config.slow_rate.is_some() && slow;
                if failure || slow_fails {
                    self.open(config, retry_after, OpenCause::Calls, now, out);
                } else {
                    self.half_open.successes += 1;
                    if self.half_open.successes >= config.half_open_calls {
                        self.close(now, out);
                    }
                }
            }
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }

    fn should_trip(&mut self, config: &CircuitBreakerConfig, now: Instant) -> bool {
        if config
            .consecutive_failures
            .is_some_and(|n| self.consecutive_failures >= n)
        {
            return true;
        }
        let figures = self.window.figures(now);
        if figures.calls < config.minimum_calls {
            return false;
        }
        config.failure_rate.is_some_and(|t| figures.failure_rate() >= t)
            || config.slow_rate.is_some_and(|t| figures.slow_rate() >= t)
    }

    /// Opens for the backoff period (`open * backoff^(opens-1)`, capped,
    /// shortened by up to `jitter`), or longer if `Retry-After` asks, up to the cap.
    pub(crate) fn open(
        &mut self,
        config: &CircuitBreakerConfig,
        retry_after: Option<Duration>,
        cause: OpenCause,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        self.opens += 1;
        let exponent = i32::try_from(self.opens - 1).unwrap_or(i32::MAX);
        let base = config.open.as_secs_f64() * config.backoff.powi(exponent);
        let capped = base.min(config.max_open.as_secs_f64());
        let jittered = capped * (1.0 - config.jitter * self.rng.next_f64());
        // Under a cap set without bound, many opens pass what a `Duration`
        // holds: the cap then.
        let mut period = Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(config.max_open);
        if let Some(asked) = retry_after {
            period = period.max(asked.min(config.max_open));
        }
        self.enter_open(period, cause, now, out);
    }

    /// Opens for `period` from now, or opens again if open.
    fn enter_open(&mut self, period: Duration, cause: OpenCause, now: Instant, out: &mut Vec<Transition>) {
        let from = self.state;
        // `Retry-After` and shared trips come from the network, and the cap
        // may be none.
        self.open_until = crate::util::instant_after(now, period);
        self.opened_by = cause;
        self.to(State::Open, now, out);
        let opening = Some(Opening { period, cause });
        match out.last_mut() {
            // `to` recorded the change just now.
            Some(change) if from != State::Open => change.opening = opening,
            _ => out.push(Transition {
                from,
                to: State::Open,
                opening,
            }),
        }
    }

    /// Opens for `open_for` (at most the longest open period), because the
    /// breaker of another instance for the same key tripped (or an
    /// operator asks): a closed or half-open breaker opens, and counts it
    /// as an open for its backoff; an open one stays open until the later
    /// of its own end and this one (if that is [`TRIP_SLACK`] later). The
    /// states an operator set (forced
    /// open, disabled, metrics only) are left alone. Whether it changed
    /// anything.
    pub(crate) fn trip(
        &mut self,
        config: &CircuitBreakerConfig,
        open_for: Duration,
        now: Instant,
        out: &mut Vec<Transition>,
    ) -> bool {
        // An open period that ended is half-open by now, and a trip opens
        // it anew (an open for the backoff), as a failed probe would.
        self.tick(config, now, out);
        let period = open_for.min(config.max_open);
        match self.state {
            State::Closed | State::HalfOpen => {
                self.opens += 1;
                self.enter_open(period, OpenCause::Trip, now, out);
                true
            }
            State::Open
                if crate::util::instant_after(now, period)
                    >= crate::util::instant_after(self.open_until, TRIP_SLACK) =>
            {
                // The same generation: calls admitted before stay counted
                // (there are none while open but the probes').
                self.open_until = crate::util::instant_after(now, period);
                self.opened_by = OpenCause::Trip;
                out.push(Transition {
                    from: State::Open,
                    to: State::Open,
                    opening: Some(Opening {
                        period,
                        cause: OpenCause::Trip,
                    }),
                });
                true
            }
            _ => false,
        }
    }

    pub(crate) fn close(&mut self, now: Instant, out: &mut Vec<Transition>) {
        self.opens = 0;
        self.to(State::Closed, now, out);
    }

    /// A recovery probe succeeded while open.
    pub(crate) fn probe_succeeded(&mut self, to_closed: bool, now: Instant, out: &mut Vec<Transition>) {
        if self.state != State::Open {
            return;
        }
        if to_closed {
            self.close(now, out);
        } else {
            self.to(State::HalfOpen, now, out);
        }
    }

    pub(crate) fn force(&mut self, state: State, now: Instant, out: &mut Vec<Transition>) {
        if state == State::Closed {
            self.close(now, out);
        } else {
            self.to(state, now, out);
        }
    }
}

#[cfg(test)]
mod tests;
