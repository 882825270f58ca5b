//! A mergeable quantile sketch with bounded memory and bounded relative
//! error (log-spaced buckets, as DDSketch does).
//!
//! Pure logic. Values are seconds; below [`MIN_VALUE`] they fall in the
//! first bucket and above [`MAX_VALUE`] in the last.

/// Smallest value told apart (1 µs).
pub const MIN_VALUE: f64 = 1e-6;
/// Largest value told apart (about 17 minutes).
pub const MAX_VALUE: f64 = 1000.0;
/// Relative accuracy of quantiles: 2% is finer than any latency alert needs
/// and keeps the sketch at about 520 buckets.
pub const RELATIVE_ACCURACY: f64 = 0.02;

/// Counts of values in log-spaced buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    counts: Vec<u32>,
    total: u64,
    sum: f64,
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn buckets() -> usize {
    ((MAX_VALUE / MIN_VALUE).ln() / gamma().ln()).ceil() as usize + 1
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            counts: Vec::new(),
            total: 0,
            sum: 0.0,
        }
    }
}

impl Sketch {
    /// An empty sketch (allocates its buckets on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn index(value: f64) -> usize {
        if value.is_nan() || value <= MIN_VALUE {
            return 0;
        }
        let i = ((value / MIN_VALUE).ln() / gamma().ln()).ceil() as usize;
        i.min(buckets() - 1)
    }

    /// Adds one value.
    pub fn add(&mut self, value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets()];
        }
        let i = Self::index(value);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
        self.sum += value.clamp(0.0, MAX_VALUE);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; buckets()];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.sum += other.sum;
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean of the values added (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum / self.total as f64
        }
    }

    /// The `q` quantile (0..=1), within [`RELATIVE_ACCURACY`]; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.total - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen > rank {
                if i == 0 {
                    return Some(MIN_VALUE);
                }
                // The bucket's midpoint in relative terms.
                let g = gamma();
                return Some(MIN_VALUE * g.powi(i as i32) * 2.0 / (1.0 + g));
            }
        }
        Some(MAX_VALUE)
    }

    /// Empties the sketch (keeping its buckets).
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.sum = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quantiles_are_within_the_relative_accuracy(mut values in proptest::collection::vec(1e-5f64..100.0, 1..500), q in 0.0f64..1.0) {
            let mut sketch = Sketch::new();
            for v in &values {
                sketch.add(*v);
            }
            values.sort_by(f64::total_cmp);
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let got = sketch.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= exact * RELATIVE_ACCURACY * 1.01, "q={q} exact={exact} got={got}");
        }

        #[test]
        fn merging_equals_adding_everything(a in proptest::collection::vec(1e-5f64..10.0, 0..100), b in proptest::collection::vec(1e-5f64..10.0, 0..100)) {
            let (mut left, mut right, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
            for v in &a { left.add(*v); all.add(*v); }
            for v in &b { right.add(*v); all.add(*v); }
            left.merge(&right);
            prop_assert_eq!(left.count(), all.count());
            for q in [0.5, 0.9, 0.99] {
                prop_assert_eq!(left.quantile(q), all.quantile(q));
            }
        }
    }

    #[test]
    fn bounded_memory_and_edges() {
        assert!(buckets() < 600, "{} buckets", buckets());
        let mut s = Sketch::new();
        for v in [0.0, -1.0, f64::NAN, 1e9, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!(s.count(), 5);
        assert_eq!(s.quantile(0.0), Some(MIN_VALUE));
        assert!(s.quantile(1.0).unwrap() > MAX_VALUE * 0.9);
        assert_eq!(Sketch::new().quantile(0.5), None);
    }
}
