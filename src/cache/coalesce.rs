//! Coalescing of concurrent misses: one leader goes upstream per key, the
//! others wait for its outcome.
//!
//! A leader that finishes, fails, finds the response not storable or is
//! dropped (cancelled) completes its flight, so waiters are released at once.
//! A flight also has a deadline, the lock timeout after its first waiter
//! joined: one waiter at a time runs the timer for all of them (a timer per
//! waiter cost each one a timer registration, and often a wake-up of the
//! time driver), and when it fires every waiter, and anyone joining later,
//! goes upstream alone. Nothing here holds a lock across an `.await`.
//!
//! A key whose answer turned out not storable for a reason of the
//! response's own (`no-store`, `private`, no freshness, too large ...) is
//! remembered for a while (Varnish's hit-for-miss): requests for it go
//! upstream at once instead of queueing behind a leader whose answer they
//! could not share anyway. A storable answer for the key ends that early.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::broadcast::Broadcast;
use super::entry::SharedEntry;
use super::epochs::{Epochs, Stamp};

/// What a flight ended with: the stored entry, or `None` (failed, not
/// storable, cancelled), which sends each waiter upstream on its own.
type Outcome = Option<SharedEntry>;

#[derive(Default)]
struct FlightState {
    outcome: Option<Outcome>,
    /// The leader's body, shared as it arrives (see `broadcast.rs`):
    /// waiters read it at once instead of waiting for its end.
    streaming: Option<Arc<Broadcast>>,
    wakers: Vec<(u64, Waker)>,
    next_waiter: u64,
    /// When waiting stops: set by the first waiter to join.
    deadline: Option<Instant>,
    /// A waiter runs the flight's timer.
    timer_held: bool,
    /// The deadline passed before the leader finished.
    expired: bool,
}

impl FlightState {
    /// Wakes one waiter other than `id` (to take over the timer).
    fn wake_one(&mut self, id: u64) {
        if let Some(pos) = self.wakers.iter().position(|(w, _)| *w != id) {
            self.wakers.swap_remove(pos).1.wake();
        }
    }
}

/// What a waiter gets.
pub(crate) enum Wait {
    /// The leader finished: its outcome.
    Done(Outcome),
    /// The leader's body is arriving: read it too.
    Streaming(Arc<Broadcast>),
    /// The flight's deadline passed first: go upstream alone.
    Expired,
}

struct Flight {
    state: Mutex<FlightState>,
    /// The leader's key stripe when it started: a request made after an
    /// invalidation moved it does not wait for this flight.
    stamp: Stamp,
}

impl Flight {
    fn new(stamp: Stamp) -> Arc<Self> {
        Arc::new(Flight {
            state: Mutex::default(),
            stamp,
        })
    }

    fn lock(&self) -> MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the table holds for a key.
enum Slot {
    /// A request is upstream for it.
    Flight(Arc<Flight>),
    /// Its last answer was not storable: until this instant, requests for
    /// it are not coalesced.
    Uncacheable(Instant),
}

/// Keys with a request in flight or learned uncacheable. Hashed with the
/// LRU store's seeded hasher (foldhash): SipHash cost each miss two lookups
/// of a long URI key for nothing this table needs.
type FlightMap = HashMap<Arc<str>, Slot, hashbrown::DefaultHashBuilder>;

/// Keys remembered as uncacheable at most: each costs its key and a slot
/// (about 100 B), so the table stays under half a MiB whatever the
/// upstream answers. Past it, a new mark replaces an arbitrary old one: a
/// mark is only a hint, and finding the oldest would cost a scan of the
/// table under its lock.
pub(crate) const MAX_UNCACHEABLE_KEYS: usize = 4096;

/// The table of keys with a request in flight.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<FlightMap>,
    /// Keys marked uncacheable in `map`: read without the lock, so a store
    /// skips it when nothing is marked.
    marked: AtomicUsize,
    epochs: Epochs,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.len())
            .field("uncacheable", &self.marked.load(Ordering::Relaxed))
            .finish()
    }
}

/// The caller's role for one key.
pub(crate) enum Join {
    /// Nobody is fetching this key: go upstream and complete the flight.
    Leader(Leader),
    /// Someone is: wait for their outcome.
    Waiter(Waiter),
    /// The key is known not to be storable: go upstream without a flight.
    Alone,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, FlightMap> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The invalidation counters of fetches in flight.
    pub(crate) fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// Joins the flight for `key`, becoming its leader if there is none, or
    /// if the one there started before an invalidation of `key` (its answer
    /// is older than what this request may be given). A waiter that is the
    /// flight's first sets its `deadline`. `stamp` is this request's. A key
    /// marked uncacheable until after `now` is not coalesced.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>, now: Instant, deadline: Instant, stamp: Stamp) -> Join {
        let mut map = self.lock();
        // One lookup (one hash of the key) whichever way it goes.
        let flight = match map.entry(key.clone()) {
            MapEntry::Occupied(entry) => match entry.get() {
                Slot::Flight(flight) if self.epochs.is_current(flight.stamp) => {
                    let flight = flight.clone();
                    drop(map);
                    let id = {
                        let mut state = flight.lock();
                        state.next_waiter += 1;
                        state.deadline.get_or_insert(deadline);
                        state.next_waiter
                    };
                    return Join::Waiter(Waiter {
                        flight,
                        id,
                        holds_timer: false,
                    });
                }
                Slot::Uncacheable(until) if *until > now => return Join::Alone,
                // An expired mark, or an outdated flight (its leader, when
                // done, leaves this one in the table: it removes only its
                // own): a new flight takes the slot.
                replaced => {
                    if matches!(replaced, Slot::Uncacheable(_)) {
                        self.marked.fetch_sub(1, Ordering::Relaxed);
                    }
                    let flight = Flight::new(stamp);
                    *entry.into_mut() = Slot::Flight(flight.clone());
                    flight
                }
            },
            MapEntry::Vacant(entry) => {
                let flight = Flight::new(stamp);
                entry.insert(Slot::Flight(flight.clone()));
                flight
            }
        };
        Join::Leader(Leader {
            flights: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        })
    }

    /// Becomes leader only if nobody is fetching `key` (background refresh:
    /// at most one per key at a time).
    pub(crate) fn try_lead(self: &Arc<Self>, key: &Arc<str>, stamp: Stamp) -> Option<Leader> {
        let mut map = self.lock();
        let flight = Flight::new(stamp);
        match map.insert(key.clone(), Slot::Flight(flight.clone())) {
            Some(Slot::Flight(running)) => {
                map.insert(key.clone(), Slot::Flight(running));
                return None;
            }
            Some(Slot::Uncacheable(_)) => {
                self.marked.fetch_sub(1, Ordering::Relaxed);
            }
            None => {}
        }
        Some(Leader {
            flights: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        })
    }

    /// Remembers that `key`'s answer was not storable, until `until`, for
    /// a request that went upstream without leading a flight (a leader
    /// uses [`Leader::complete_uncacheable`]). A running flight is left
    /// alone.
    pub(crate) fn mark_uncacheable(&self, key: &Arc<str>, until: Instant) {
        let mut map = self.lock();
        if let Some(slot) = map.get_mut(key) {
            if let Slot::Uncacheable(old) = slot {
                *old = until;
            }
            return;
        }
        self.make_room(&mut map);
        map.insert(key.clone(), Slot::Uncacheable(until));
        self.marked.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets that `key` was uncacheable: a storable answer came.
    pub(crate) fn clear_uncacheable(&self, key: &str) {
        if self.marked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.lock();
        if let Some((key, slot)) = map.remove_entry(key) {
            match slot {
                Slot::Uncacheable(_) => {
                    self.marked.fetch_sub(1, Ordering::Relaxed);
                }
                flight @ Slot::Flight(_) => {
                    map.insert(key, flight);
                }
            }
        }
    }

    /// Makes room for one more mark: at the cap, the first mark the table
    /// yields goes (flights are few, so it is found at once). Called with
    /// the table locked.
    fn make_room(&self, map: &mut FlightMap) {
        if self.marked.load(Ordering::Relaxed) < MAX_UNCACHEABLE_KEYS {
            return;
        }
        let old = map
            .iter()
            .find(|(_, slot)| matches!(slot, Slot::Uncacheable(_)))
            .map(|(key, _)| key.clone());
        if let Some(old) = old {
            map.remove(&old);
            self.marked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Keys with a request in flight.
    pub(crate) fn len(&self) -> usize {
        // Every slot is a flight or a mark, and marks are counted under the
        // same lock: no need to walk up to `MAX_UNCACHEABLE_KEYS` of them.
        let map = self.lock();
        map.len() - self.marked.load(Ordering::Relaxed)
    }

    /// Keys remembered as uncacheable.
    #[cfg(test)]
    pub(crate) fn uncacheable(&self) -> usize {
        self.marked.load(Ordering::Relaxed)
    }

    /// Flights that finished but are still in the table (must be zero).
    pub(crate) fn orphans(&self) -> usize {
        self.lock()
            .values()
            .filter(|slot| matches!(slot, Slot::Flight(f) if f.lock().outcome.is_some()))
            .count()
    }
}

/// The one request per key that goes upstream.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: Arc<str>,
    flight: Arc<Flight>,
    done: bool,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

impl Leader {
    /// Shares the body as it arrives with every waiter, and every request
    /// that joins before the flight ends.
    pub(crate) fn publish(&self, broadcast: Arc<Broadcast>) {
        let wakers = {
            let mut state = self.flight.lock();
            state.streaming = Some(broadcast);
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Ends the flight with `outcome` and wakes every waiter.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        self.finish(outcome, None);
    }

    /// Ends the flight with nothing to share, because the answer was not
    /// storable for a reason of its own, and remembers the key as
    /// uncacheable until `until`: requests for it stop queueing behind a
    /// leader.
    pub(crate) fn complete_uncacheable(mut self, until: Instant) {
        self.finish(None, Some(until));
    }

    fn finish(&mut self, outcome: Outcome, uncacheable: Option<Instant>) {
        if self.done {
            return;
        }
        self.done = true;
        {
            // Removed with one lookup; put back in the rare case that a newer
            // flight replaced this one (see `join`).
            let mut map = self.flights.lock();
            if let Some((key, slot)) = map.remove_entry(&self.key) {
                match slot {
                    Slot::Flight(flight) if Arc::ptr_eq(&flight, &self.flight) => {
                        if let Some(until) = uncacheable {
                            self.flights.make_room(&mut map);
                            map.insert(key, Slot::Uncacheable(until));
                            self.flights.marked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        map.insert(key, other);
                    }
                }
            }
        }
        let wakers = {
            let mut state = self.flight.lock();
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Cancelled or failed without completing: release the waiters.
        self.finish(None, None);
    }
}

/// A request waiting for a leader.
pub(crate) struct Waiter {
    flight: Arc<Flight>,
    id: u64,
    holds_timer: bool,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

impl Waiter {
    /// Ready with the leader's outcome once the flight ends, or with
    /// `Expired` once its deadline has passed.
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Wait> {
        let mut state = self.flight.lock();
        // Before the outcome: a body being shared is read through to its end
        // even if its copy was not stored (unless it failed or overflowed:
        // then the outcome, nothing, sends this waiter upstream).
        if let Some(broadcast) = state.streaming.as_ref().filter(|b| b.joinable()) {
            return Poll::Ready(Wait::Streaming(broadcast.clone()));
        }
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(Wait::Done(outcome.clone()));
        }
        if state.expired {
            return Poll::Ready(Wait::Expired);
        }
        let id = self.id;
        match state.wakers.iter_mut().find(|(w, _)| *w == id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.wakers.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// The flight's deadline, if nobody runs its timer yet: this waiter
    /// runs it from now on and calls [`Waiter::expire`] when it fires.
    pub(crate) fn claim_timer(&mut self) -> Option<Instant> {
        let mut state = self.flight.lock();
        if state.timer_held || state.outcome.is_some() || state.streaming.is_some() || state.expired {
            return None;
        }
        state.timer_held = true;
        self.holds_timer = true;
        state.deadline
    }

    /// The flight's deadline passed: release every waiter.
    pub(crate) fn expire(&mut self) {
        let wakers = {
            let mut state = self.flight.lock();
            state.expired = true;
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let id = self.id;
        let mut state = self.flight.lock();
        state.wakers.retain(|(w, _)| *w != id);
        // Leaving with the timer (or before taking it over): another waiter
        // takes it, so the deadline still holds for the rest.
        if self.holds_timer || !state.timer_held {
            state.timer_held = false;
            state.wake_one(id);
        }
    }
}

#[cfg(test)]
mod tests;
