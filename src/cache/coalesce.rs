//! Coalescing of concurrent misses: one leader goes upstream per key, the
//! others wait for its outcome.
//!
//! A leader that finishes, fails, finds the response not storable or is
//! dropped (cancelled) completes its flight, so waiters are released at once;
//! waiters also carry their own timeout (in the response future), so nobody
//! waits forever. Nothing here holds a lock across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::entry::Entry;

/// What a flight ended with: the stored entry, or `None` (failed, not
/// storable, cancelled), which sends each waiter upstream on its own.
type Outcome = Option<Arc<Entry>>;

#[derive(Default)]
struct FlightState {
    outcome: Option<Outcome>,
    wakers: Vec<(u64, Waker)>,
    next_waiter: u64,
}

#[derive(Default)]
struct Flight {
    state: Mutex<FlightState>,
}

impl Flight {
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

    /// Joins the flight for `key`, becoming its leader if there is none.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut map = self.lock();
        if let Some(flight) = map.get(key) {
            let flight = flight.clone();
            drop(map);
            let id = {
                let mut state = flight.lock();
                state.next_waiter += 1;
                state.next_waiter
            };
            return Join::Waiter(Waiter { flight, id });
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.clone(), flight.clone());
        Join::Leader(Leader {
            flights: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        })
    }

    /// Becomes leader only if nobody is fetching `key` (background refresh:
    /// at most one per key at a time).
    pub(crate) fn try_lead(self: &Arc<Self>, key: &Arc<str>) -> Option<Leader> {
        let mut map = self.lock();
        if map.contains_key(key) {
            return None;
        }
        let flight = Arc::new(Flight::default());
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
            let mut map = self.flights.lock();
            if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                map.remove(&self.key);
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
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

impl Waiter {
    /// Ready with the leader's outcome once the flight ends.
    pub(crate) fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut state = self.flight.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone());
        }
        let id = self.id;
        match state.wakers.iter_mut().find(|(w, _)| *w == id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.wakers.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let id = self.id;
        self.flight.lock().wakers.retain(|(w, _)| *w != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_a_dropped_leader_releases_them() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let Join::Leader(leader) = flights.join(&key) else {
            panic!("first is leader")
        };
        let Join::Waiter(mut waiter) = flights.join(&key) else {
            panic!("second waits")
        };
        assert!(flights.try_lead(&key).is_none());
        let task = tokio::spawn(async move { poll_fn(|cx| waiter.poll_outcome(cx)).await });
        tokio::task::yield_now().await;
        drop(leader);
        assert!(task.await.unwrap().is_none());
        assert_eq!(flights.len(), 0);
        assert_eq!(flights.orphans(), 0);
        assert!(matches!(flights.join(&key), Join::Leader(_)), "a new flight can start");
    }
}
