//! One key's breaker as the registry holds it: its lock, the lock-free
//! mirror and success tally a closed breaker's calls use instead, its
//! eviction marks and its metric handles.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::super::config::CircuitBreakerConfig;
use super::super::events::{CALLS, describe_metrics};
use super::super::state::{Breaker, Permit, State, Transition};
use super::super::tally::Tally;
use super::{CircuitBreakers, Registry};

/// One key's breaker.
#[derive(Debug)]
pub(crate) struct Cell {
    pub(crate) key: Arc<str>,
    /// Its metrics' `key` label: the key, or
    /// [`OTHER_KEY`](crate::circuit_breaker::OTHER_KEY) past the registry's
    /// labelled keys.
    pub(crate) label: Arc<str>,
    /// The registry's settings, held here so a call touches only its cell.
    pub(crate) config: Arc<CircuitBreakerConfig>,
    pub(super) registry: Weak<Registry>,
    /// Metric handles registered once per recorder, so a call allocates
    /// nothing for them (see [`Cell::metrics_for`]).
    pub(super) call_metrics: Mutex<Arc<CallMetrics>>,
    pub(super) breaker: Mutex<Breaker>,
    /// `generation << 4 | successes-cannot-trip << 3 | state` of the
    /// breaker, kept in step on every unlock, so a closed breaker admits
    /// calls and counts successes without taking its lock.
    pub(super) mirror: AtomicU64,
    /// Successes counted without the lock, folded in by `lock`.
    pub(super) tally: Tally,
    /// Milliseconds since the registry's epoch at last use: set by a
    /// registry lookup, and by an eviction scan for a cell touched since.
    pub(super) last_used: AtomicU64,
    /// [`EVICTED`] once the registry dropped this cell (services
    /// remembering it look again), and [`TOUCHED`] when used since the last
    /// eviction scan without a registry lookup: such calls read no clock,
    /// so they leave this mark for the scan to turn into a time. One word,
    /// so the remembered-breaker check reads both at once.
    pub(super) flags: AtomicU8,
    pub(super) probe_running: AtomicBool,
}

impl Cell {
    /// The breaker, with the successes counted without the lock folded in.
    pub(crate) fn lock(&self) -> Locked<'_> {
        let mut guard = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = guard.generation();
        guard.record_successes(self.tally.take(generation));
        Locked {
            guard,
            generation,
            cell: self,
        }
    }

    /// Counts a success (in time, not a probe) of `generation` without the
    /// lock, if the breaker is still in that generation and no number of
    /// successes could trip it. False: record it under the lock.
    pub(crate) fn fast_success(&self, generation: u64) -> bool {
        let mirror = self.mirror.load(Ordering::Acquire);
        mirror & SAFE != 0 && mirror >> 4 == generation && self.tally.add(generation)
    }

    /// A permit without the lock when the breaker is closed (or records
    /// only, or is disabled). A call admitted just before the breaker opens
    /// carries the old generation, so its result is discarded.
    pub(crate) fn fast_permit(&self) -> Option<Permit> {
        let mirror = self.mirror.load(Ordering::Acquire);
        let generation = mirror >> 4;
        match State::from_code((mirror & 7) as u8) {
            State::Closed | State::MetricsOnly => Some(Permit {
                generation,
                probe: false,
                recorded: true,
            }),
            State::Disabled => Some(Permit {
                generation,
                probe: false,
                recorded: false,
            }),
            _ => None,
        }
    }

    /// Whether the registry still holds this cell; if so, marks it used
    /// now, for a caller that skips the registry. The mark is written only
    /// when clear (once per eviction scan at most), so a busy breaker's
    /// line stays shared between threads.
    pub(crate) fn touch(&self) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & TOUCHED == 0 && flags & EVICTED == 0 {
            self.flags.fetch_or(TOUCHED, Ordering::Relaxed);
        }
        flags & EVICTED == 0
    }

    /// The cell's counters, registered with `recorder` (from
    /// [`recorder_id`](crate::util::recorder_id)): registered again if the
    /// recorder changed since. Called per lookup, not per call.
    pub(crate) fn metrics_for(&self, recorder: usize) -> Arc<CallMetrics> {
        let mut metrics = self.call_metrics.lock().unwrap_or_else(PoisonError::into_inner);
        if metrics.recorder != recorder {
            *metrics = Arc::new(CallMetrics::new(&self.label, recorder));
        }
        metrics.clone()
    }

    /// Emits state-change events (and starts a probe on open) through the
    /// registry, if it still exists.
    pub(crate) fn transitions(self: &Arc<Self>, transitions: &[Transition]) {
        if transitions.is_empty() {
            return;
        }
        if let Some(inner) = self.registry.upgrade() {
            CircuitBreakers { inner }.emit_transitions(self, transitions);
        }
    }
}

/// A service's own reference to a cell, shared by the guards of its calls,
/// with the cell's counters for the recorder in place when it was made.
#[derive(Debug)]
pub(crate) struct CellRef {
    cell: Arc<Cell>,
    pub(crate) metrics: Arc<CallMetrics>,
}

impl CellRef {
    pub(crate) fn new(cell: Arc<Cell>, recorder: usize) -> Self {
        let metrics = cell.metrics_for(recorder);
        CellRef { cell, metrics }
    }
}

impl std::ops::Deref for CellRef {
    type Target = Arc<Cell>;
    fn deref(&self) -> &Arc<Cell> {
        &self.cell
    }
}

/// Bits of `Cell::flags`.
pub(super) const EVICTED: u8 = 1;
pub(super) const TOUCHED: u8 = 2;

/// Bit of the mirror: successes cannot trip the breaker.
const SAFE: u64 = 8;

/// A locked breaker; on unlock the cell's mirror is brought up to date.
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, Breaker>,
    /// The generation when locked.
    generation: u64,
    cell: &'a Cell,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Breaker;
    fn deref(&self) -> &Breaker {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Breaker {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let generation = self.guard.generation();
        if generation != self.generation {
            // Stripes count for the new generation before the mirror
            // announces it; what they held of the old one is discarded.
            self.cell.tally.take(generation);
        }
        let safe = if self.guard.success_cannot_trip(&self.cell.config) {
            SAFE
        } else {
            0
        };
        let packed = (generation << 4) | safe | u64::from(self.guard.state().code());
        // Written only when it changed: a closed breaker's line stays shared.
        let mirror = &self.cell.mirror;
        if mirror.load(Ordering::Relaxed) != packed {
            mirror.store(packed, Ordering::Release);
        }
    }
}

/// Per-key call counters of the `metrics` facade.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    /// The recorder these are registered with.
    pub(crate) recorder: usize,
    pub(crate) success: metrics::Counter,
    pub(crate) failure: metrics::Counter,
    pub(crate) slow: metrics::Counter,
    pub(crate) rejected: metrics::Counter,
}

impl CallMetrics {
    pub(super) fn new(key: &str, recorder: usize) -> Self {
        describe_metrics();
        let counter = |outcome: &'static str| metrics::counter!(CALLS, "key" => key.to_owned(), "outcome" => outcome);
        CallMetrics {
            recorder,
            success: counter("success"),
            failure: counter("failure"),
            slow: counter("slow"),
            rejected: counter("rejected"),
        }
    }
}
