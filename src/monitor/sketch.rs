//! A mergeable quantile sketch with bounded memory and bounded relative
//! error (log-linear buckets: each power of two split in equal parts, as
//! HdrHistogram does, so a value's bucket comes from its bits alone).
//!
//! Pure logic. Values are seconds; below [`MIN_VALUE`] they fall in the
//! first bucket and above [`MAX_VALUE`] in the last.
//!
//! ```
//! use tower_optimizer::monitor::{RELATIVE_ACCURACY, Sketch};
//!
//! let mut sketch = Sketch::new();
//! for ms in 1..=100 {
//!     sketch.add(f64::from(ms) / 1000.0);
//! }
//! let p99 = sketch.quantile(0.99).unwrap();
//! assert!((p99 - 0.099).abs() <= 0.099 * RELATIVE_ACCURACY, "{p99}");
//! ```

/// Smallest value told apart (1 µs).
pub const MIN_VALUE: f64 = 1e-6;
/// Largest value told apart (about 17 minutes).
pub const MAX_VALUE: f64 = 1000.0;
/// Relative accuracy of quantiles: 2% is finer than any latency alert needs.
/// Each power of two is split in 32 buckets, each at most 1/32 as
/// wide as its lower bound, whose representative (their harmonic mean) is
/// within 1/65 (1.54 %) of any value in it.
pub const RELATIVE_ACCURACY: f64 = 0.02;

/// Buckets per power of two (see [`RELATIVE_ACCURACY`]): a value's bucket
/// is its binary exponent and the top five bits of its mantissa, a few
/// integer operations where a logarithm (and a rounding) cost about 70
/// instructions per request measured, and their library code.
const PARTS: usize = 32;
const PART_BITS: u32 = PARTS.trailing_zeros();

/// The binary exponent of a positive, normal `value`.
const fn exponent(value: f64) -> i64 {
    // An 11-bit field: it fits.
    #[allow(clippy::cast_possible_wrap)]
    let biased = ((value.to_bits() >> 52) & 0x7ff) as i64;
    biased - 1023
}

/// The bucket of a positive, normal `value` whose exponent is at least
/// [`MIN_VALUE`]'s, before the clamps of [`Sketch::index`].
const fn bucket(value: f64) -> usize {
    let bits = value.to_bits();
    // At most 2^5 - 1; the exponent difference is at most 2^11.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let part = ((bits >> (52 - PART_BITS)) & (PARTS as u64 - 1)) as usize;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let octave = (exponent(value) - exponent(MIN_VALUE)) as usize;
    octave * PARTS + part
}

/// The last bucket: [`MAX_VALUE`]'s, where larger values go too.
const LAST: usize = bucket(MAX_VALUE);

/// Buckets of a sketch (about 960, 3.8 KiB, allocated on first use).
const BUCKETS: usize = LAST + 1;

/// Counts of values in log-linear buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    counts: Vec<u32>,
    total: u64,
    sum: f64,
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
        if value >= MAX_VALUE {
            return LAST;
        }
        bucket(value)
    }

    /// Adds one value.
    pub fn add(&mut self, value: f64) {
        if self.counts.is_empty() {
            self.allocate();
        }
        let i = Self::index(value);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
        self.sum += value.clamp(0.0, MAX_VALUE);
    }

    /// Its buckets, on first use. Out of line: once per sketch, where
    /// every request adds.
    #[cold]
    #[inline(never)]
    fn allocate(&mut self) {
        self.counts = vec![0; BUCKETS];
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.allocate();
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
                return Some(representative(i));
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

/// The value bucket `i` stands for: the harmonic mean of its bounds, whose
/// relative distance to either bound is the same.
fn representative(i: usize) -> f64 {
    // Both below 2^11: exact in any float.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let octave = (i / PARTS) as i32 + exponent(MIN_VALUE) as i32;
    #[allow(clippy::cast_precision_loss)]
    let (part, parts) = ((i % PARTS) as f64, PARTS as f64);
    let low = 2f64.powi(octave) * (1.0 + part / parts);
    let high = 2f64.powi(octave) * (1.0 + (part + 1.0) / parts);
    2.0 * low * high / (low + high)
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
        const { assert!(BUCKETS < 1000, "bounded memory") };
        assert_eq!(BUCKETS, 959);
        let mut s = Sketch::new();
        for v in [0.0, -1.0, f64::NAN, 1e9, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!(s.count(), 5);
        assert_eq!(s.quantile(0.0), Some(MIN_VALUE));
        assert!(s.quantile(1.0).unwrap() > MAX_VALUE * 0.9);
        assert_eq!(Sketch::new().quantile(0.5), None);
    }

    /// Every bucket from MIN_VALUE's to the last: its representative is
    /// within the accuracy of both its bounds, it is its own bucket, and
    /// the buckets follow the values' order.
    #[test]
    fn each_bucket_stands_for_its_values() {
        // The bucket MIN_VALUE falls in straddles it (values below go to
        // the first bucket): the checks start at the next.
        let first = Sketch::index(MIN_VALUE * 1.000_001) + 1;
        assert!(first > 1);
        for i in first..=LAST {
            let r = representative(i);
            assert_eq!(Sketch::index(r), i.min(LAST), "bucket {i}");
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            let octave = (i / PARTS) as i32 + exponent(MIN_VALUE) as i32;
            #[allow(clippy::cast_precision_loss)]
            let low = 2f64.powi(octave) * (1.0 + (i % PARTS) as f64 / PARTS as f64);
            let high = low + 2f64.powi(octave) / PARTS as f64;
            assert!((r - low) / low <= 1.0 / 65.0 + 1e-12, "bucket {i}");
            assert!((high - r) / high <= 1.0 / 65.0 + 1e-12, "bucket {i}");
            assert_eq!(Sketch::index(low), i, "its lower bound");
            assert_eq!(Sketch::index(high), (i + 1).min(LAST), "the next one's lower bound");
        }
        let mut last = 0;
        let mut v = MIN_VALUE / 2.0;
        while v < MAX_VALUE * 2.0 {
            let i = Sketch::index(v);
            assert!(i >= last, "{v}");
            last = i;
            v *= 1.003;
        }
        assert_eq!(last, LAST);
    }
}
