//! Unit tests of coalescing: leaders, waiters, the shared timer, and
//! keys remembered as uncacheable.

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
    let Join::Leader(leader) = flights.join(&key, Instant::now(), deadline(), stamp(&flights)) else {
        panic!("first is leader")
    };
    let Join::Waiter(mut waiter) = flights.join(&key, Instant::now(), deadline(), stamp(&flights)) else {
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
        matches!(
            flights.join(&key, Instant::now(), deadline(), stamp(&flights)),
            Join::Leader(_)
        ),
        "a new flight can start"
    );
}

#[test]
fn an_outdated_flights_leader_leaves_the_newer_flight_in_place() {
    let flights = Arc::new(Flights::default());
    let key: Arc<str> = "k".into();
    let Join::Leader(outdated) = flights.join(&key, Instant::now(), deadline(), stamp(&flights)) else {
        panic!("first is leader")
    };
    flights.epochs().invalidate(&key);
    let Join::Leader(newer) = flights.join(&key, Instant::now(), deadline(), stamp(&flights)) else {
        panic!("an invalidated flight is not joined but replaced")
    };
    drop(outdated);
    assert_eq!(flights.len(), 1, "the newer flight is still in the table");
    assert!(
        matches!(
            flights.join(&key, Instant::now(), deadline(), stamp(&flights)),
            Join::Waiter(_)
        ),
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
    let Join::Leader(_leader) = flights.join(&key, Instant::now(), first_deadline, stamp(&flights)) else {
        panic!("first is leader")
    };
    let waiter = |flights: &Arc<Flights>, at| match flights.join(&key, Instant::now(), at, stamp(flights)) {
        Join::Waiter(w) => w,
        Join::Leader(_) | Join::Alone => panic!("a flight is running"),
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

#[test]
fn uncacheable_keys_go_alone_until_their_mark_expires_or_is_cleared() {
    let flights = Arc::new(Flights::default());
    let key: Arc<str> = "k".into();
    let now = Instant::now();
    let until = now + Duration::from_secs(10);
    let join = |at| flights.join(&key, at, at + Duration::from_secs(1), stamp(&flights));
    let Join::Leader(leader) = join(now) else {
        panic!("first is leader")
    };
    leader.complete_uncacheable(until);
    assert_eq!((flights.len(), flights.uncacheable()), (0, 1));
    assert!(matches!(join(now), Join::Alone), "marked: no flight to join");
    let Join::Leader(after) = join(until) else {
        panic!("the mark expired: a new flight")
    };
    assert_eq!(flights.uncacheable(), 0);
    drop(after);

    // Marked by a request without a flight, then cleared by a stored answer.
    flights.mark_uncacheable(&key, until);
    assert!(matches!(join(now), Join::Alone));
    flights.clear_uncacheable(&key);
    let Join::Leader(running) = join(now) else {
        panic!("cleared: coalesced again")
    };
    // A running flight is neither replaced by a mark nor removed by a clear.
    flights.mark_uncacheable(&key, until);
    flights.clear_uncacheable(&key);
    assert!(matches!(join(now), Join::Waiter(_)));
    drop(running);
    assert_eq!((flights.len(), flights.orphans(), flights.uncacheable()), (0, 0, 0));

    // A background refresh takes over a mark.
    flights.mark_uncacheable(&key, until);
    assert!(flights.try_lead(&key, stamp(&flights)).is_some());
    assert_eq!(flights.uncacheable(), 0);
}

#[test]
fn marks_are_capped_a_new_one_replacing_an_old_one() {
    let flights = Arc::new(Flights::default());
    let later = Instant::now() + Duration::from_secs(60);
    let keys: Vec<Arc<str>> = (0..MAX_UNCACHEABLE_KEYS + 10).map(|i| format!("k{i}").into()).collect();
    for key in &keys {
        flights.mark_uncacheable(key, later);
    }
    assert_eq!(flights.uncacheable(), MAX_UNCACHEABLE_KEYS);
    assert_eq!(flights.lock().len(), MAX_UNCACHEABLE_KEYS);
    let newest = keys.last().unwrap();
    assert!(
        matches!(
            flights.join(newest, Instant::now(), later, flights.epochs().stamp(newest)),
            Join::Alone
        ),
        "the newest mark is kept"
    );
}

#[tokio::test]
async fn waiters_read_a_published_body_unless_it_failed_before_they_looked() {
    let flights = Arc::new(Flights::default());
    let key: Arc<str> = "k".into();
    let Join::Leader(leader) = flights.join(&key, Instant::now(), deadline(), stamp(&flights)) else {
        panic!("first is leader")
    };
    let join = || match flights.join(&key, Instant::now(), deadline(), stamp(&flights)) {
        Join::Waiter(waiter) => waiter,
        _ => panic!("the flight is joined"),
    };
    let (mut early, mut late) = (join(), join());
    let broadcast = super::super::broadcast::Broadcast::for_test(10);
    leader.publish(broadcast.clone());
    assert!(matches!(poll_fn(|cx| early.poll_wait(cx)).await, Wait::Streaming(_)));
    assert!(early.claim_timer().is_none(), "no deadline once the body is shared");
    // The body fails and the leader ends its flight with nothing; a waiter
    // that looks only now goes upstream itself.
    broadcast.fail("reset");
    drop(leader);
    assert!(matches!(poll_fn(|cx| late.poll_wait(cx)).await, Wait::Done(None)));
    assert_eq!(flights.len(), 0);
}
