use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::circuit_breaker::config::{CircuitBreakerConfig, WindowKind};

fn cfg() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder().jitter(0.0).build().unwrap()
}

struct Run {
    config: CircuitBreakerConfig,
    breaker: Breaker,
    now: Instant,
    transitions: Vec<Transition>,
}

impl Run {
    fn new(config: CircuitBreakerConfig) -> Self {
        let now = Instant::now();
        Run {
            breaker: Breaker::new(&config, now, 42),
            config,
            now,
            transitions: Vec::new(),
        }
    }

    fn call(&mut self, outcome: Outcome) -> Result<(), Duration> {
        self.call_with(outcome, Duration::from_millis(10), None)
    }

    fn call_with(
        &mut self,
        outcome: Outcome,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Result<(), Duration> {
        let permit = self.breaker.admit(&self.config, self.now, &mut self.transitions)?;
        self.breaker.record(
            &self.config,
            permit,
            outcome,
            elapsed,
            retry_after,
            self.now,
            &mut self.transitions,
        );
        Ok(())
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn state(&mut self) -> State {
        self.breaker.tick(&self.config, self.now, &mut self.transitions);
        self.breaker.state()
    }
}

#[test]
fn a_host_answering_only_failures_is_cut_off_within_twenty_calls() {
    let mut run = Run::new(CircuitBreakerConfig::default());
    let mut calls = 0;
    while run.call(Outcome::Failure).is_ok() {
        calls += 1;
        assert!(calls <= 20);
    }
    assert_eq!(calls, 10, "trips when the minimum of 10 calls is reached");
    assert_eq!(run.breaker.state(), State::Open);
    let wait = run.call(Outcome::Success).unwrap_err();
    assert!(
        wait <= Duration::from_secs(10) && wait >= Duration::from_secs(9),
        "first open period 10 s, minus jitter: {wait:?}"
    );
}

#[test]
fn rates_need_the_minimum_calls_and_half_failures() {
    let mut run = Run::new(cfg());
    for i in 0..10 {
        run.call(if i % 2 == 0 { Outcome::Success } else { Outcome::Failure })
            .unwrap();
        if i < 9 {
            assert_eq!(
                run.breaker.state(),
                State::Closed,
                "below the minimum of 10 calls at call {i}"
            );
        }
    }
    assert_eq!(run.breaker.state(), State::Open, "5 failures in 10 calls is 50%");
    let mut run = Run::new(cfg());
    for i in 0..40 {
        run.call(if i % 3 == 0 { Outcome::Failure } else { Outcome::Success })
            .unwrap();
    }
    assert_eq!(run.breaker.state(), State::Closed, "a third failing stays under 50%");
}

#[test]
fn half_open_probes_close_or_reopen_with_growing_backoff() {
    let mut run = Run::new(cfg());
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    assert_eq!(run.state(), State::Open);
    run.advance(Duration::from_secs(10));
    assert_eq!(run.state(), State::HalfOpen);
    // A probe fails: open again, for twice as long.
    run.call(Outcome::Failure).unwrap();
    assert_eq!(run.breaker.state(), State::Open);
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(20));
    run.advance(Duration::from_secs(20));
    run.call(Outcome::Failure).unwrap();
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(40));
    // Backoff is capped at five minutes.
    for _ in 0..10 {
        run.advance(Duration::from_secs(400));
        run.call(Outcome::Failure).unwrap();
    }
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(300));
    // Three successful probes close it, and the next open starts at 10 s again.
    run.advance(Duration::from_secs(300));
    for _ in 0..3 {
        run.call(Outcome::Success).unwrap();
    }
    assert_eq!(run.breaker.state(), State::Closed);
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(10));
}

#[test]
fn half_open_admits_a_bounded_number_and_releases_stuck_probes() {
    let mut run = Run::new(cfg());
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    run.advance(Duration::from_secs(10));
    let mut t = Vec::new();
    let permits: Vec<_> = (0..3)
        .map(|_| run.breaker.admit(&run.config, run.now, &mut t).unwrap())
        .collect();
    assert!(permits.iter().all(|p| p.probe));
    assert!(
        run.breaker.admit(&run.config, run.now, &mut t).is_err(),
        "only three probes"
    );
    // A cancelled probe gives its slot back.
    run.breaker.release(permits[0]);
    let again = run.breaker.admit(&run.config, run.now, &mut t).unwrap();
    // The probes hang: after 30 s their slots are freed, and their late
    // answers no longer count.
    run.advance(Duration::from_secs(30));
    let fresh = run.breaker.admit(&run.config, run.now, &mut t).unwrap();
    run.breaker.record(
        &run.config,
        permits[1],
        Outcome::Failure,
        Duration::ZERO,
        None,
        run.now,
        &mut t,
    );
    run.breaker.record(
        &run.config,
        again,
        Outcome::Failure,
        Duration::ZERO,
        None,
        run.now,
        &mut t,
    );
    assert_eq!(
        run.breaker.state(),
        State::HalfOpen,
        "late failures from stuck probes are discarded"
    );
    run.breaker.record(
        &run.config,
        fresh,
        Outcome::Success,
        Duration::ZERO,
        None,
        run.now,
        &mut t,
    );
    run.call(Outcome::Success).unwrap();
    run.call(Outcome::Success).unwrap();
    assert_eq!(run.breaker.state(), State::Closed);
}

#[test]
fn late_results_from_before_an_open_are_discarded() {
    let mut run = Run::new(cfg());
    let mut t = Vec::new();
    let early = run.breaker.admit(&run.config, run.now, &mut t).unwrap();
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    run.advance(Duration::from_secs(10));
    run.breaker.record(
        &run.config,
        early,
        Outcome::Success,
        Duration::ZERO,
        None,
        run.now,
        &mut t,
    );
    assert_eq!(run.state(), State::HalfOpen, "the old success did not count as a probe");
}

#[test]
fn retry_after_extends_the_open_period_up_to_the_cap() {
    let mut run = Run::new(
        CircuitBreakerConfig::builder()
            .jitter(0.0)
            .consecutive_failures(Some(1))
            .build()
            .unwrap(),
    );
    run.call_with(Outcome::Failure, Duration::ZERO, Some(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(120));
    run.advance(Duration::from_secs(120));
    run.call_with(Outcome::Failure, Duration::ZERO, Some(Duration::from_secs(86_400)))
        .unwrap();
    assert_eq!(
        run.call(Outcome::Success).unwrap_err(),
        Duration::from_secs(300),
        "capped"
    );
}

#[test]
fn slow_calls_and_consecutive_failures_trip() {
    let slow = CircuitBreakerConfig::builder()
        .failure_rate(None)
        .slow_calls(Some(60.0), Duration::from_secs(2))
        .minimum_calls(5)
        .jitter(0.0)
        .build()
        .unwrap();
    let mut run = Run::new(slow);
    for _ in 0..2 {
        run.call_with(Outcome::Success, Duration::from_millis(10), None)
            .unwrap();
    }
    for _ in 0..3 {
        run.call_with(Outcome::Success, Duration::from_secs(3), None).unwrap();
    }
    assert_eq!(run.breaker.state(), State::Open, "3 of 5 slow = 60%");
    let consecutive = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .minimum_calls(100)
        .build()
        .unwrap();
    let mut run = Run::new(consecutive);
    run.call(Outcome::Failure).unwrap();
    run.call(Outcome::Failure).unwrap();
    run.call(Outcome::Success).unwrap();
    run.call(Outcome::Failure).unwrap();
    run.call(Outcome::Failure).unwrap();
    assert_eq!(run.breaker.state(), State::Closed);
    run.call(Outcome::Failure).unwrap();
    assert_eq!(run.breaker.state(), State::Open);
}

#[test]
fn forced_and_special_states() {
    let mut run = Run::new(cfg());
    let mut t = Vec::new();
    run.breaker.force(State::ForcedOpen, run.now, &mut t);
    assert!(run.call(Outcome::Success).is_err());
    run.advance(Duration::from_secs(3600));
    assert!(run.call(Outcome::Success).is_err(), "forced open does not time out");
    run.breaker.force(State::Disabled, run.now, &mut t);
    for _ in 0..50 {
        run.call(Outcome::Failure).unwrap();
    }
    assert_eq!(run.breaker.figures(run.now).calls, 0, "disabled records nothing");
    run.breaker.force(State::MetricsOnly, run.now, &mut t);
    for _ in 0..50 {
        run.call(Outcome::Failure).unwrap();
    }
    assert_eq!(run.breaker.state(), State::MetricsOnly);
    assert_eq!(
        run.breaker.figures(run.now).failures,
        20,
        "metrics only records, never trips"
    );
    run.breaker.force(State::Closed, run.now, &mut t);
    assert_eq!(run.breaker.figures(run.now).calls, 0);
    assert_eq!(
        t.iter().map(|x| x.to).collect::<Vec<_>>(),
        [State::ForcedOpen, State::Disabled, State::MetricsOnly, State::Closed]
    );
}

#[test]
fn ignored_outcomes_count_as_nothing_and_time_windows_forget() {
    let config = CircuitBreakerConfig::builder()
        .window(WindowKind::Time {
            length: Duration::from_secs(10),
            buckets: 10,
        })
        .jitter(0.0)
        .build()
        .unwrap();
    let mut run = Run::new(config);
    for _ in 0..9 {
        run.call(Outcome::Failure).unwrap();
        run.call(Outcome::Ignored).unwrap();
    }
    assert_eq!(run.breaker.figures(run.now).calls, 9);
    run.advance(Duration::from_secs(11));
    assert_eq!(run.breaker.figures(run.now).calls, 0, "old buckets expired");
    run.call(Outcome::Failure).unwrap();
    assert_eq!(
        run.breaker.state(),
        State::Closed,
        "the earlier failures no longer count"
    );
}

#[test]
fn jitter_shortens_by_at_most_the_fraction() {
    for seed in 0..50 {
        let config = CircuitBreakerConfig::builder()
            .consecutive_failures(Some(1))
            .jitter(0.25)
            .build()
            .unwrap();
        let now = Instant::now();
        let mut breaker = Breaker::new(&config, now, seed);
        let mut t = Vec::new();
        let p = breaker.admit(&config, now, &mut t).unwrap();
        breaker.record(&config, p, Outcome::Failure, Duration::ZERO, None, now, &mut t);
        let period = breaker.open_until().duration_since(now);
        assert!(
            period > Duration::from_millis(7499) && period <= Duration::from_secs(10),
            "{period:?}"
        );
    }
}

#[test]
fn with_a_probe_user_calls_wait_for_it_within_the_grace() {
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .jitter(0.0)
        .probe(|_key| async { true }, crate::circuit_breaker::ProbeSuccess::HalfOpen)
        .build()
        .unwrap();
    let mut run = Run::new(config);
    run.call(Outcome::Failure).unwrap();
    run.advance(Duration::from_secs(10));
    assert!(run.call(Outcome::Success).is_err(), "the probe decides first");
    run.advance(Duration::from_secs(30));
    assert_eq!(
        run.state(),
        State::HalfOpen,
        "after the grace, user calls probe themselves"
    );
    let mut t = Vec::new();
    run.breaker.probe_succeeded(true, run.now, &mut t);
    assert_eq!(
        run.breaker.state(),
        State::HalfOpen,
        "a probe result only acts on an open breaker"
    );
}

impl Run {
    fn trip(&mut self, open_for: Duration) -> bool {
        self.transitions.clear();
        self.breaker
            .trip(&self.config, open_for, self.now, &mut self.transitions)
    }

    /// The openings recorded since the transitions were last cleared.
    fn openings(&self) -> Vec<(State, Duration, OpenCause)> {
        self.transitions
            .iter()
            .filter_map(|t| t.opening.map(|o| (t.from, o.period, o.cause)))
            .collect()
    }
}

#[test]
fn an_opening_by_calls_says_so_and_for_how_long() {
    let mut run = Run::new(cfg());
    for _ in 0..9 {
        run.call(Outcome::Failure).unwrap();
    }
    run.call_with(
        Outcome::Failure,
        Duration::from_millis(10),
        Some(Duration::from_secs(42)),
    )
    .unwrap();
    assert_eq!(
        run.openings(),
        [(State::Closed, Duration::from_secs(42), OpenCause::Calls)],
        "Retry-After's 42 s, longer than the first period, is the period"
    );
    assert_eq!(run.transitions.len(), 1, "one change, carrying its opening");
}

#[test]
fn a_trip_opens_a_closed_breaker_for_its_period_capped_at_the_longest() {
    let mut run = Run::new(cfg());
    assert!(run.trip(Duration::from_secs(30)));
    assert_eq!(
        run.openings(),
        [(State::Closed, Duration::from_secs(30), OpenCause::Trip)]
    );
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(30));
    run.advance(Duration::from_secs(30));
    assert_eq!(run.state(), State::HalfOpen, "then half-open as after any open");

    let mut run = Run::new(cfg());
    assert!(run.trip(Duration::MAX), "a period from the network may be anything");
    assert_eq!(run.call(Outcome::Success).unwrap_err(), run.config.max_open);
}

#[test]
fn a_trip_makes_an_open_period_longer_never_shorter() {
    let mut run = Run::new(cfg());
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    let generation = run.breaker.generation();
    assert_eq!(run.breaker.opened_by(), OpenCause::Calls);
    assert!(!run.trip(Duration::from_secs(5)), "open for 10 s already");
    assert_eq!(
        run.breaker.opened_by(),
        OpenCause::Calls,
        "a shorter trip changes nothing"
    );
    assert!(run.transitions.is_empty());
    assert_eq!(run.call(Outcome::Success).unwrap_err(), Duration::from_secs(10));
    run.advance(Duration::from_secs(4));
    assert!(run.trip(Duration::from_secs(60)));
    assert_eq!(
        run.openings(),
        [(State::Open, Duration::from_secs(60), OpenCause::Trip)]
    );
    assert_eq!(
        run.breaker.generation(),
        generation,
        "still the same open period's generation"
    );
    assert_eq!(
        run.breaker.opened_by(),
        OpenCause::Trip,
        "the trip's end is the period's end"
    );
    run.advance(Duration::from_secs(59));
    assert_eq!(run.state(), State::Open, "past its own 10 s, within the trip's 60 s");
    run.advance(Duration::from_secs(1));
    assert_eq!(run.state(), State::HalfOpen);
}

#[test]
fn a_trip_counts_towards_the_backoff() {
    let mut run = Run::new(cfg());
    assert!(run.trip(Duration::from_secs(10)));
    run.advance(Duration::from_secs(10));
    assert_eq!(run.state(), State::HalfOpen);
    run.call(Outcome::Failure).unwrap();
    assert_eq!(
        run.call(Outcome::Success).unwrap_err(),
        Duration::from_secs(20),
        "the second open in a row: twice the first period"
    );
}

#[test]
fn a_trip_while_half_open_discards_the_probes_answers() {
    let mut run = Run::new(cfg());
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    run.advance(Duration::from_secs(10));
    let probe = run.breaker.admit(&run.config, run.now, &mut run.transitions).unwrap();
    assert!(probe.probe);
    assert!(run.trip(Duration::from_secs(30)));
    assert_eq!(
        run.openings(),
        [(State::HalfOpen, Duration::from_secs(30), OpenCause::Trip)]
    );
    for _ in 0..run.config.half_open_calls {
        run.breaker.record(
            &run.config,
            probe,
            Outcome::Success,
            Duration::from_millis(1),
            None,
            run.now,
            &mut run.transitions,
        );
    }
    assert_eq!(
        run.state(),
        State::Open,
        "a probe admitted before the trip closes nothing"
    );
}

#[test]
fn a_trip_leaves_the_states_an_operator_set_alone() {
    for state in [State::ForcedOpen, State::Disabled, State::MetricsOnly] {
        let mut run = Run::new(cfg());
        run.breaker.force(state, run.now, &mut run.transitions);
        assert!(!run.trip(Duration::from_secs(30)), "{state:?}");
        assert!(run.transitions.is_empty());
        assert_eq!(run.state(), state);
    }
}

#[test]
fn an_echo_of_the_breakers_own_opening_changes_nothing() {
    let mut run = Run::new(cfg());
    for _ in 0..10 {
        let _ = run.call(Outcome::Failure);
    }
    // Its own 10 s opening comes back a moment later (a peer list that
    // names this instance too).
    run.advance(Duration::from_millis(30));
    assert!(!run.trip(Duration::from_secs(10)));
    assert!(run.transitions.is_empty());
    assert_eq!(run.breaker.opened_by(), OpenCause::Calls, "still its own opening");
    assert!(run.trip(Duration::from_secs(11)), "a second later is another opening");
}
