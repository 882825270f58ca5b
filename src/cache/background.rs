//! Background tasks: the expiry sweep (with optional audits) and the
//! memory-pressure watcher. Each holds only a `Weak` to the cache and ends
//! at its next tick after the last handle is dropped.

use std::sync::{Arc, Weak};

use tokio::runtime::Handle;
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::handle::Inner;
use super::pressure::MemoryPressure;
use super::stats::bump;
use super::store::RemovalCause;

pub(crate) fn spawn(handle: &Handle, weak: Weak<Inner>, inner: &Inner) {
    if let Some(period) = inner.sweep_interval {
        let weak = weak.clone();
        let token = inner.task_token.clone();
        let audit_every = inner.audit_interval;
        handle.spawn(async move {
            let mut ticks = interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut last_audit = Instant::now();
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    drop(token);
                    return;
                };
                let removed = inner.store.sweep(Instant::now());
                if removed.entries > 0 {
                    tracing::debug!(entries = removed.entries, bytes = removed.bytes, "cache sweep");
                }
                if audit_every.is_some_and(|every| last_audit.elapsed() >= every) {
                    last_audit = Instant::now();
                    let mut audit = inner.store.audit();
                    audit.orphaned_keys += inner.flights.orphans();
                    if !audit.is_clean() {
                        bump(&inner.counters.audit_drift);
                        tracing::warn!(?audit, "cache accounting drift");
                    }
                }
            }
        });
    }
    if let Some(pressure) = inner.pressure.clone() {
        let token = inner.task_token.clone();
        handle.spawn(async move {
            let mut ticks = interval(pressure.interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last_eviction: Option<(u64, u32)> = None;
            let mut said_unreadable = false;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    drop(token);
                    return;
                };
                // A user's reader may panic: that is an unreadable figure,
                // not the end of the watcher.
                let Some(usage) = crate::util::guarded("memory source", || pressure.source.read()).flatten() else {
                    // Once, not every tick: configured but blind (not
                    // Linux, no cgroup memory accounting) is worth knowing, not a flood.
                    if !said_unreadable {
                        tracing::warn!(source = ?pressure.source, "memory pressure: cannot read memory usage; no eviction until it can");
                        said_unreadable = true;
                    }
                    continue;
                };
                said_unreadable = false;
                last_eviction = check_pressure(&inner, &pressure, usage, last_eviction);
            }
        });
    }
}

/// Ticks to wait after an eviction before evicting again at a reading that
/// has not grown: allocators return freed memory to the system lazily, so
/// the reading lags the eviction, and evicting on every tick would drain the
/// whole cache for memory that is already free.
const PRESSURE_COOLDOWN_TICKS: u32 = 10;

/// One watcher tick at reading `usage`. `last` is the reading at the last
/// eviction and the ticks since; returns the new value.
fn check_pressure(
    inner: &Arc<Inner>,
    pressure: &MemoryPressure,
    usage: u64,
    last: Option<(u64, u32)>,
) -> Option<(u64, u32)> {
    if let Some((at, ticks)) = last {
        if usage <= at && ticks < PRESSURE_COOLDOWN_TICKS {
            return Some((at, ticks + 1));
        }
    }
    let free = pressure.bytes_to_free(usage, inner.store.bytes() as u64);
    if free == 0 {
        return None;
    }
    let removed = inner.store.evict_bytes(free as usize, RemovalCause::Pressure);
    tracing::warn!(
        usage,
        freed = removed.bytes,
        entries = removed.entries,
        "memory pressure: cache evicted"
    );
    Some((usage, 0))
}
