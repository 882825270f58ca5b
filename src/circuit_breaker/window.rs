//! Sliding windows of call outcomes: count-based (the last N calls) and
//! time-based (N buckets over a duration). Both update and read in O(1).
//!
//! Pure logic: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// How a finished call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// Window figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WindowFigures {
    /// Calls in the window.
    pub calls: u32,
    /// Failed calls in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow: u32,
}

impl WindowFigures {
    /// Failure rate in percent (0 with no calls).
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.failures) * 100.0 / f64::from(self.calls)
        }
    }

    /// Slow-call rate in percent (0 with no calls).
    pub fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.slow) * 100.0 / f64::from(self.calls)
        }
    }
}

/// The last `size` outcomes, in a ring with running totals.
#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    ring: Vec<u8>,
    next: usize,
    filled: usize,
    figures: WindowFigures,
}

const FAIL: u8 = 1;
const SLOW: u8 = 2;

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        CountWindow {
            ring: vec![0; size.max(1)],
            next: 0,
            filled: 0,
            figures: WindowFigures::default(),
        }
    }

    pub(crate) fn record(&mut self, sample: Sample) {
        if self.filled == self.ring.len() {
            let old = self.ring[self.next];
            self.figures.calls -= 1;
            self.figures.failures -= u32::from(old & FAIL != 0);
            self.figures.slow -= u32::from(old & SLOW != 0);
        } else {
            self.filled += 1;
        }
        let bits = if sample.failure { FAIL } else { 0 } | if sample.slow { SLOW } else { 0 };
        self.ring[self.next] = bits;
        self.next = (self.next + 1) % self.ring.len();
        self.figures.calls += 1;
        self.figures.failures += u32::from(sample.failure);
        self.figures.slow += u32::from(sample.slow);
    }

    /// Records `n` successes (neither failed nor slow) at once.
    pub(crate) fn record_successes(&mut self, n: u64) {
        let size = self.ring.len();
        match usize::try_from(n) {
            Ok(n) if n < size => {
                for _ in 0..n {
                    self.record(Sample {
                        failure: false,
                        slow: false,
                    });
                }
            }
            // The whole ring turns over: nothing but successes is left.
            _ => {
                self.ring.fill(0);
                self.next = usize::try_from(n % size as u64).map_or(0, |k| (self.next + k) % size);
                self.filled = size;
                self.figures = WindowFigures {
                    calls: u32::try_from(size).unwrap_or(u32::MAX),
                    failures: 0,
                    slow: 0,
                };
            }
        }
    }

    /// Calls the ring holds when full.
    pub(crate) fn size(&self) -> usize {
        self.ring.len()
    }

    pub(crate) fn figures(&self) -> WindowFigures {
        self.figures
    }

    pub(crate) fn clear(&mut self) {
        self.ring.fill(0);
        self.next = 0;
        self.filled = 0;
        self.figures = WindowFigures::default();
    }
}

/// Outcomes of the last `length`, in `buckets` buckets with running totals.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    buckets: Vec<(u64, WindowFigures)>,
    bucket_len: Duration,
    epoch: Instant,
    figures: WindowFigures,
}

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: usize, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let bucket_len = (length / buckets as u32).max(Duration::from_millis(1));
        TimeWindow {
            buckets: vec![(u64::MAX, WindowFigures::default()); buckets],
            bucket_len,
            epoch: now,
            figures: WindowFigures::default(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.bucket_len.as_nanos()) as u64
    }

    /// Drops buckets older than the window. Amortised O(1): each bucket
    /// is expired at most once per turn of the ring.
    fn advance(&mut self, now: Instant) {
        let current = self.slot(now);
        let n = self.buckets.len() as u64;
        for (slot, figures) in &mut self.buckets {
            if *slot != u64::MAX && current.saturating_sub(*slot) >= n {
                self.figures.calls -= figures.calls;
                self.figures.failures -= figures.failures;
                self.figures.slow -= figures.slow;
                *slot = u64::MAX;
                *figures = WindowFigures::default();
            }
        }
    }

    pub(crate) fn record(&mut self, sample: Sample, now: Instant) {
        self.advance(now);
        let current = self.slot(now);
        let index = (current % self.buckets.len() as u64) as usize;
        let (slot, figures) = &mut self.buckets[index];
        *slot = current;
        figures.calls += 1;
        figures.failures += u32::from(sample.failure);
        figures.slow += u32::from(sample.slow);
        self.figures.calls += 1;
        self.figures.failures += u32::from(sample.failure);
        self.figures.slow += u32::from(sample.slow);
    }

    pub(crate) fn figures(&mut self, now: Instant) -> WindowFigures {
        self.advance(now);
        self.figures
    }

    pub(crate) fn clear(&mut self) {
        for bucket in &mut self.buckets {
            *bucket = (u64::MAX, WindowFigures::default());
        }
        self.figures = WindowFigures::default();
    }
}

/// Either kind of window.
#[derive(Debug, Clone)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn record(&mut self, sample: Sample, now: Instant) {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => w.record(sample, now),
        }
    }

    pub(crate) fn figures(&mut self, now: Instant) -> WindowFigures {
        match self {
            Window::Count(w) => w.figures(),
            Window::Time(w) => w.figures(now),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both windows agree with a naive model over random outcomes.
        #[test]
        fn windows_match_a_naive_model(
            outcomes in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..3000), 1..300),
            size in 1usize..40,
            buckets in 1usize..10,
        ) {
            let start = Instant::now();
            let mut count = CountWindow::new(size);
            let length = Duration::from_secs(10);
            let mut time = TimeWindow::new(length, buckets, start);
            let bucket_len = length / buckets as u32;
            let mut now = start;
            let mut history: Vec<(Instant, Sample)> = Vec::new();
            for (failure, slow, step_ms) in outcomes {
                now += Duration::from_millis(step_ms);
                let sample = Sample { failure, slow };
                count.record(sample);
                time.record(sample, now);
                history.push((now, sample));
                let last: Vec<_> = history.iter().rev().take(size).collect();
                let want = WindowFigures {
                    calls: last.len() as u32,
                    failures: last.iter().filter(|(_, s)| s.failure).count() as u32,
                    slow: last.iter().filter(|(_, s)| s.slow).count() as u32,
                };
                prop_assert_eq!(count.figures(), want);
                // The time window keeps whole buckets: a sample counts while
                // its bucket is among the last `buckets` ones.
                let slot = |t: Instant| (t.duration_since(start).as_nanos() / bucket_len.as_nanos()) as u64;
                let current = slot(now);
                let live: Vec<_> = history.iter().filter(|(t, _)| current - slot(*t) < buckets as u64).collect();
                let want = WindowFigures {
                    calls: live.len() as u32,
                    failures: live.iter().filter(|(_, s)| s.failure).count() as u32,
                    slow: live.iter().filter(|(_, s)| s.slow).count() as u32,
                };
                prop_assert_eq!(time.figures(now), want);
            }
        }
    }
}
