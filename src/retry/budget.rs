//! The retry budget: retries may add at most a share of the requests seen
//! over a sliding window, plus a small reserve, so that when a host fails
//! for everyone the retries cannot multiply its load (Finagle's and
//! linkerd's answer to retry storms). Pure logic: the caller passes `now`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets of the sliding window: the window moves a tenth at a time.
const BUCKETS: usize = 10;

/// Budget settings (see [`RetryConfigBuilder::budget`](super::RetryConfigBuilder::budget)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per request in the window (0.2: one retry per five
    /// requests).
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic, so a client that
    /// sends little can still retry.
    pub min_per_second: u32,
    /// How far back requests and retries count.
    pub window: Duration,
}

/// Default share: 20 % more load at most, Finagle's and linkerd's default.
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// Default reserve: 10 retries a second, Finagle's default.
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;
/// Default window: 10 s, long enough to smooth bursts, short enough that a
/// quiet spell does not leave a large allowance behind.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: DEFAULT_BUDGET_RATIO,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            window: DEFAULT_BUDGET_WINDOW,
        }
    }
}

/// The counts of one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    requests: u64,
    retries: u64,
}

/// The window: `BUCKETS` buckets of `window / BUCKETS` each, the current
/// one at `tick % BUCKETS`.
#[derive(Debug)]
struct Ring {
    buckets: [Bucket; BUCKETS],
    start: Instant,
    tick: u64,
}

/// A shared retry budget.
#[derive(Debug)]
pub(crate) struct Budget {
    config: BudgetConfig,
    /// One bucket's span in nanoseconds, worked out once: every request
    /// finds its bucket with it, and a 64-bit division is several times
    /// cheaper than `Duration`'s 128-bit one.
    bucket_nanos: u64,
    ring: Mutex<Ring>,
}

impl Budget {
    pub(crate) fn new(config: BudgetConfig, now: Instant) -> Self {
        let bucket = (config.window / BUCKETS as u32).max(Duration::from_millis(1));
        Budget {
            config,
            bucket_nanos: u64::try_from(bucket.as_nanos()).unwrap_or(u64::MAX),
            ring: Mutex::new(Ring {
                buckets: [Bucket::default(); BUCKETS],
                start: now,
                tick: 0,
            }),
        }
    }

    fn with_ring<T>(&self, now: Instant, f: impl FnOnce(&mut Ring) -> T) -> T {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        // Past 584 years the clock reads the last tick: nothing overflows.
        let since = u64::try_from(now.saturating_duration_since(ring.start).as_nanos()).unwrap_or(u64::MAX);
        let tick = since / self.bucket_nanos;
        // Clear the buckets the window moved past (all of them after a
        // long quiet spell).
        let passed = tick.saturating_sub(ring.tick).min(BUCKETS as u64);
        for step in 1..=passed {
            let index = usize::try_from((ring.tick + step) % BUCKETS as u64).unwrap_or(0);
            ring.buckets[index] = Bucket::default();
        }
        ring.tick = ring.tick.max(tick);
        f(&mut ring)
    }

    /// Counts a request (its first attempt).
    pub(crate) fn deposit(&self, now: Instant) {
        self.with_ring(now, |ring| ring.current().requests += 1);
    }

    /// Takes a retry from the budget, if it has one left.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let config = self.config;
        self.with_ring(now, |ring| {
            let (requests, retries) = ring
                .buckets
                .iter()
                .fold((0u64, 0u64), |(q, r), b| (q + b.requests, r + b.retries));
            let reserve = f64::from(config.min_per_second) * config.window.as_secs_f64();
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let allowed = reserve + config.ratio * requests as f64;
            #[allow(clippy::cast_precision_loss)]
            let ok = (retries as f64) + 1.0 <= allowed;
            if ok {
                ring.current().retries += 1;
            }
            ok
        })
    }
}

impl Ring {
    fn current(&mut self) -> &mut Bucket {
        &mut self.buckets[usize::try_from(self.tick % BUCKETS as u64).unwrap_or(0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32, now: Instant) -> Budget {
        Budget::new(
            BudgetConfig {
                ratio,
                min_per_second,
                window: Duration::from_secs(10),
            },
            now,
        )
    }

    fn withdrawals(budget: &Budget, now: Instant) -> usize {
        std::iter::from_fn(|| budget.withdraw(now).then_some(()))
            .take(10_000)
            .count()
    }

    #[test]
    fn a_share_of_the_requests() {
        let now = Instant::now();
        let budget = budget(0.2, 0, now);
        assert!(!budget.withdraw(now), "no request, no retry");
        for _ in 0..100 {
            budget.deposit(now);
        }
        assert_eq!(withdrawals(&budget, now), 20);
        for _ in 0..10 {
            budget.deposit(now);
        }
        assert_eq!(withdrawals(&budget, now), 2, "22 in all for 110 requests");
    }

    #[test]
    fn a_reserve_whatever_the_traffic() {
        let now = Instant::now();
        let budget = budget(0.2, 1, now);
        assert_eq!(withdrawals(&budget, now), 10, "1 a second over 10 s");
    }

    #[test]
    fn the_window_slides() {
        let start = Instant::now();
        let budget = budget(0.5, 0, start);
        for _ in 0..10 {
            budget.deposit(start);
        }
        assert_eq!(withdrawals(&budget, start), 5);
        // 9.5 s on, the requests and the retries still count.
        let later = start + Duration::from_millis(9_500);
        assert!(!budget.withdraw(later));
        // Past the window, both have left it: nothing to retry for.
        let after = start + Duration::from_millis(10_500);
        assert!(!budget.withdraw(after));
        for _ in 0..4 {
            budget.deposit(after);
        }
        assert_eq!(withdrawals(&budget, after), 2, "only the new requests count");
        // A long quiet spell clears everything at once.
        let much_later = after + Duration::from_secs(3_600);
        assert!(!budget.withdraw(much_later));
    }

    /// One step of a budget's life.
    #[derive(Debug, Clone)]
    enum Op {
        Deposit,
        Withdraw,
        Advance(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Deposit),
            3 => Just(Op::Withdraw),
            // Up to 2.5 windows of 10 s, in milliseconds.
            2 => (0u64..25_000).prop_map(Op::Advance),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Against a naive model that keeps every event with its time and
        /// counts those of the last ten buckets: the same answers.
        #[test]
        fn matches_a_naive_model(
            ops in proptest::collection::vec(op(), 1..200),
            ratio in 0.0f64..1.5,
            min_per_second in 0u32..3,
        ) {
            let start = Instant::now();
            let config = BudgetConfig { ratio, min_per_second, window: Duration::from_secs(10) };
            let budget = Budget::new(config, start);
            // (bucket of the event, is it a retry)
            let mut events: Vec<(u64, bool)> = Vec::new();
            let mut ms = 0u64;
            for op in ops {
                let now = start + Duration::from_millis(ms);
                let tick = ms / 1_000;
                match op {
                    Op::Advance(by) => ms += by,
                    Op::Deposit => {
                        budget.deposit(now);
                        events.push((tick, false));
                    }
                    Op::Withdraw => {
                        let live = events.iter().filter(|(t, _)| t + BUCKETS as u64 > tick);
                        let (requests, retries) = live.fold((0u64, 0u64), |(q, r), &(_, retry)| {
                            if retry { (q, r + 1) } else { (q + 1, r) }
                        });
                        #[allow(clippy::cast_precision_loss)]
                        let allowed = f64::from(min_per_second) * 10.0 + ratio * requests as f64;
                        #[allow(clippy::cast_precision_loss)]
                        let expected = retries as f64 + 1.0 <= allowed;
                        proptest::prop_assert_eq!(budget.withdraw(now), expected, "at {} ms", ms);
                        if expected {
                            events.push((tick, true));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_fractional_ratio_is_exact() {
        // tower's `TpsBudget` is reported to over-allocate for ratios
        // below 1 (tower-rs/tower#857); this one allows exactly the share.
        let now = Instant::now();
        let budget = budget(0.1, 0, now);
        for _ in 0..9 {
            budget.deposit(now);
        }
        assert!(!budget.withdraw(now), "0.9 of a retry is not a retry");
        budget.deposit(now);
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }
}
