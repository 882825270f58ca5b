//! Successes counted without the breaker's lock: the closed path's common
//! case (a call that succeeded in time) adds one to a per-thread stripe,
//! and whoever takes the lock next folds the stripes into the window.
//!
//! Each stripe packs the breaker generation it counts for with its count,
//! so a success admitted before a state change can never be folded into
//! the window after it (the generation rule of `state.rs`).

// Loom's atomics in the loom model's test build only (the `loom/`
// package); std's everywhere else.
#[cfg(all(test, tower_optimizer_loom))]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(all(test, tower_optimizer_loom)))]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes per breaker: enough for the worker threads of a small runtime to
/// count on separate cache lines, small enough that a registry of 1,024
/// breakers spends half a MiB on them.
const STRIPES: usize = 4;

/// Low bits of a stripe: its count. A full stripe refuses more, so the
/// caller takes the lock, which folds it.
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One stripe on its own cache line pair (adjacent lines are fetched
/// together on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// Lock-free success counts of one breaker.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    stripes: [Stripe; STRIPES],
}

fn tag(generation: u64) -> u64 {
    // The generation's low bits suffice: a stripe is folded or reset on
    // every state change, long before the tag could wrap.
    generation << COUNT_BITS
}

/// This thread's stripe.
#[cfg(not(all(test, tower_optimizer_loom)))]
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.try_with(|i| *i).unwrap_or(0)
}

/// Under the loom model every thread counts on one stripe: the case where
/// their compare-and-swaps and a lock holder's swaps race hardest.
#[cfg(all(test, tower_optimizer_loom))]
fn stripe_index() -> usize {
    0
}

impl Tally {
    /// Counts one success of `generation`. False when the stripe counts for
    /// another generation or is full: the caller records under the lock.
    pub(crate) fn add(&self, generation: u64) -> bool {
        let stripe = &self.stripes[stripe_index()].0;
        let tag = tag(generation);
        let mut current = stripe.load(Ordering::Relaxed);
        loop {
            if current & !COUNT_MASK != tag || current & COUNT_MASK == COUNT_MASK {
                return false;
            }
            match stripe.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Takes the successes counted for `generation` and counts afresh for
    /// it; counts of any other generation are discarded. Called under the
    /// breaker's lock.
    pub(crate) fn take(&self, generation: u64) -> u64 {
        let tag = tag(generation);
        self.stripes
            .iter()
            .map(|stripe| {
                let old = stripe.0.swap(tag, Ordering::AcqRel);
                if old & !COUNT_MASK == tag { old & COUNT_MASK } else { 0 }
            })
            .sum()
    }
}

#[cfg(all(test, not(tower_optimizer_loom)))]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counts_per_generation_and_discards_others() {
        let tally = Tally::default();
        assert!(tally.add(0));
        assert!(tally.add(0));
        assert!(!tally.add(1), "a stripe of generation 0 refuses generation 1");
        assert_eq!(tally.take(0), 2);
        assert_eq!(tally.take(0), 0, "taking empties it");
        assert!(tally.add(0));
        assert_eq!(tally.take(1), 0, "a new generation discards the old count");
        assert!(!tally.add(0), "and refuses the old generation from then on");
        assert!(tally.add(1));
        assert_eq!(tally.take(1), 1);
    }

    #[test]
    fn a_full_stripe_refuses() {
        let tally = Tally::default();
        let stripe = &tally.stripes[stripe_index()].0;
        stripe.store(tag(3) | (COUNT_MASK - 1), Ordering::Relaxed);
        assert!(tally.add(3));
        assert!(!tally.add(3), "full");
        assert_eq!(tally.take(3), COUNT_MASK);
    }

    #[test]
    fn threads_lose_no_count() {
        let tally = Arc::new(Tally::default());
        // Four threads each try 10,000 successes of generation 7; how many
        // were accepted.
        let run = || -> u64 {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let tally = tally.clone();
                    std::thread::spawn(move || (0..10_000).filter(|_| tally.add(7)).count() as u64)
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        };
        // The stripes start at generation 0: generation 7 is refused until
        // a lock holder takes for it.
        assert_eq!(run(), 0, "generation 7 was never opened");
        tally.take(7);
        assert_eq!(run(), 40_000);
        assert_eq!(tally.take(7), 40_000);
    }
}

/// Every interleaving of lock-free counting against a lock holder's takes,
/// explored by loom in the package `loom/`, which includes this file:
/// `RUSTFLAGS="--cfg tower_optimizer_loom" cargo test --release
/// --manifest-path loom/Cargo.toml` (as `.ci/run` does).
#[cfg(all(test, tower_optimizer_loom))]
mod loom_model {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// Two threads count successes of one generation while a lock holder
    /// takes them: every success counted is taken exactly once.
    #[test]
    fn counts_racing_takes_are_taken_once() {
        loom::model(|| {
            let tally = Arc::new(Tally::default());
            let adders: Vec<_> = (0..2)
                .map(|_| {
                    let tally = tally.clone();
                    thread::spawn(move || u64::from(tally.add(0)) + u64::from(tally.add(0)))
                })
                .collect();
            let early = tally.take(0);
            let added: u64 = adders.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(added, 4, "a stripe of the current generation never refuses");
            assert_eq!(early + tally.take(0), added, "each success taken once");
        });
    }

    /// A lock holder moves the breaker to the next generation while a
    /// thread counts for the old one: the old count never reaches the new
    /// generation's window, and the stripe refuses the old generation after.
    #[test]
    fn a_new_generation_never_takes_the_old_ones_counts() {
        loom::model(|| {
            let tally = Arc::new(Tally::default());
            let adder = {
                let tally = tally.clone();
                thread::spawn(move || u64::from(tally.add(0)) + u64::from(tally.add(0)))
            };
            // The state change: what generation 0 had is folded, then the
            // stripes count for generation 1 (`Locked::drop`).
            let folded = tally.take(0);
            assert_eq!(tally.take(1), 0, "nothing of generation 0 counts for 1");
            let added = adder.join().unwrap();
            assert!(folded <= added);
            assert!(!tally.add(0), "generation 0 is refused from now on");
            assert!(tally.add(1));
            assert_eq!(tally.take(1), 1, "only generation 1's own success");
        });
    }
}
