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

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::entry::Entry;
use super::epochs::{Epochs, Stamp};

/// What a flight ended with: the stored entry, or `None` (failed, not
/// storable, cancelled), which sends each waiter upstream on its own.
type Outcome = Option<Arc<Entry>>;

#[derive(Default)]
struct FlightState {
    outcome: Option<Outcome>,
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

/// Keys with a request in flight, and their flights. Hashed with the LRU
/// store's seeded hasher (foldhash): SipHash cost each miss two lookups of
/// a long URI key for nothing this table needs.
type FlightMap = HashMap<Arc<str>, Arc<Flight>, lru::DefaultHasher>;

/// The table of keys with a request in flight.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<FlightMap>,
    epochs: Epochs,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").field("in_flight", &self.len()).finish()
    }
}

/// The caller's role for one key.
pub(crate) enum Join {
    /// Nobody is fetching this key: go upstream and complete the flight.
    Leader(Leader),
    /// Someone is: wait for their outcome.
    Waiter(Waiter),
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
    /// flight's first sets its `deadline`. `stamp` is this request's.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>, deadline: Instant, stamp: Stamp) -> Join {
        let mut map = self.lock();
        // One lookup (one hash of the key) whichever way it goes.
        let flight = match map.entry(key.clone()) {
            Slot::Occupied(entry) if self.epochs.is_current(entry.get().stamp) => {
                let flight = entry.get().clone();
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
            // Replacing an outdated flight: its leader, when done, leaves
            // this one in the table (it removes only its own).
            Slot::Occupied(mut entry) => {
                let flight = Flight::new(stamp);
                entry.insert(flight.clone());
                flight
            }
            Slot::Vacant(entry) => entry.insert(Flight::new(stamp)).clone(),
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
        if map.contains_key(key) {
            return None;
        }
        let flight = Flight::new(stamp);
        map.insert(key.clone(), flight.clone());
        Some(Leader {
            flights: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        })
    }

    /// Keys with a request in flight.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Flights that finished but are still in the table (must be zero).
    pub(crate) fn orphans(&self) -> usize {
        self.lock().values().filter(|f| f.lock().outcome.is_some()).count()
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
    /// Ends the flight with `outcome` and wakes every waiter.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        {
            // Removed with one lookup; put back in the rare case that a newer
            // flight replaced this one (see `join`).
            let mut map = self.flights.lock();
            if let Some((key, flight)) = map.remove_entry(&self.key) {
                if !Arc::ptr_eq(&flight, &self.flight) {
                    map.insert(key, flight);
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
        self.finish(None);
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
        if state.timer_held || state.outcome.is_some() || state.expired {
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
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    fn stamp(flights: &Flights) -> Stamp {
        flights.epochs().stamp("k")
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_a_dropped_leader_releases_them() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let Join::Leader(leader) = flights.join(&key, deadline(), stamp(&flights)) else {
            panic!("first is leader")
        };
        let Join::Waiter(mut waiter) = flights.join(&key, deadline(), stamp(&flights)) else {
            panic!("second waits")
        };
        assert!(flights.try_lead(&key, stamp(&flights)).is_none());
        let task = tokio::spawn(async move { poll_fn(|cx| waiter.poll_wait(cx)).await });
        tokio::task::yield_now().await;
        drop(leader);
        assert!(matches!(task.await.unwrap(), Wait::Done(None)));
        assert_eq!(flights.len(), 0);
        assert_eq!(flights.orphans(), 0);
        assert!(
            matches!(flights.join(&key, deadline(), stamp(&flights)), Join::Leader(_)),
            "a new flight can start"
        );
    }

    #[test]
    fn an_outdated_flights_leader_leaves_the_newer_flight_in_place() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let Join::Leader(outdated) = flights.join(&key, deadline(), stamp(&flights)) else {
            panic!("first is leader")
        };
        flights.epochs().invalidate(&key);
        let Join::Leader(newer) = flights.join(&key, deadline(), stamp(&flights)) else {
            panic!("an invalidated flight is not joined but replaced")
        };
        drop(outdated);
        assert_eq!(flights.len(), 1, "the newer flight is still in the table");
        assert!(
            matches!(flights.join(&key, deadline(), stamp(&flights)), Join::Waiter(_)),
            "and later requests join it"
        );
        drop(newer);
        assert_eq!((flights.len(), flights.orphans()), (0, 0));
    }

    #[tokio::test]
    async fn one_waiter_runs_the_timer_and_hands_it_on_when_it_leaves() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let first_deadline = deadline();
        let Join::Leader(_leader) = flights.join(&key, first_deadline, stamp(&flights)) else {
            panic!("first is leader")
        };
        let waiter = |flights: &Arc<Flights>, at| match flights.join(&key, at, stamp(flights)) {
            Join::Waiter(w) => w,
            Join::Leader(_) => panic!("a flight is running"),
        };
        let mut a = waiter(&flights, first_deadline);
        let mut b = waiter(&flights, first_deadline + Duration::from_secs(5));
        assert_eq!(a.claim_timer(), Some(first_deadline), "the first waiter's deadline");
        assert_eq!(b.claim_timer(), None, "one timer per flight");
        // `b` is pending (its waker registered); `a` leaves with the timer.
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = waker_fn(woken.clone());
        assert!(b.poll_wait(&mut Context::from_waker(&waker)).is_pending());
        drop(a);
        assert!(
            woken.load(std::sync::atomic::Ordering::SeqCst),
            "b is told to take over"
        );
        assert_eq!(b.claim_timer(), Some(first_deadline));
        b.expire();
        assert!(matches!(
            b.poll_wait(&mut Context::from_waker(&waker)),
            Poll::Ready(Wait::Expired)
        ));
        let mut late = waiter(&flights, deadline());
        assert!(matches!(
            late.poll_wait(&mut Context::from_waker(&waker)),
            Poll::Ready(Wait::Expired)
        ));
    }

    fn waker_fn(flag: Arc<std::sync::atomic::AtomicBool>) -> Waker {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Waker::from(Arc::new(Flag(flag)))
    }
}
