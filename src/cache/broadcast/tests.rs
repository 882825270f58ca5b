//! The broadcast alone, its task left out: chunks pushed by hand.

use super::*;
use http_body_util::BodyExt;

fn broadcast(length: u64) -> Arc<Broadcast> {
    Broadcast::for_test(length)
}

#[tokio::test]
async fn readers_get_every_chunk_from_the_start_and_the_end() {
    let b = broadcast(6);
    let mut early = b.first_reader();
    assert_eq!(b.push(Bytes::from_static(b"abc")), Pushed::Kept);
    let late = b.join().unwrap();
    assert_eq!(b.push(Bytes::from_static(b"def")), Pushed::Kept);
    let first = early.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "abc");
    assert!(!early.is_end_stream(), "not ended yet");
    b.finish(End::Done(None));
    assert_eq!(early.collect().await.unwrap().to_bytes(), "def");
    assert_eq!(
        late.collect().await.unwrap().to_bytes(),
        "abcdef",
        "a late reader starts at the first byte"
    );
    assert_eq!(
        b.push(Bytes::from_static(b"g")),
        Pushed::TooLong,
        "longer than declared"
    );
}

#[tokio::test]
async fn a_failure_reaches_every_reader_after_what_came() {
    let b = broadcast(100);
    let mut reader = b.first_reader();
    b.push(Bytes::from_static(b"part"));
    b.finish(End::Failed("reset".into()));
    assert_eq!(reader.frame().await.unwrap().unwrap().into_data().unwrap(), "part");
    assert_eq!(reader.frame().await.unwrap().unwrap_err().to_string(), "reset");
    assert!(reader.frame().await.is_none());
    assert!(reader.is_end_stream());
}

#[tokio::test]
async fn readers_of_a_body_whose_task_is_dropped_get_an_error() {
    let b = broadcast(10);
    let mut reader = b.first_reader();
    drop(Ends(b.clone()));
    let error = reader.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "the upstream body was abandoned");
    b.finish(End::Done(None));
    assert!(reader.frame().await.is_none(), "the first end stands");
}

#[tokio::test]
async fn its_room_is_held_until_it_ended_and_its_last_reader_is_gone() {
    let cache = crate::cache::Cache::builder().build().unwrap();
    let inflight = || cache.stats().inflight_bytes;
    for readers_first in [false, true] {
        let mut held = Reservation::new(cache.inner.clone());
        assert!(held.grow(10));
        let b = Broadcast::held_for_test(Some(10), u64::MAX, held);
        let (one, two) = (b.first_reader(), b.join().unwrap());
        drop(one);
        if readers_first {
            drop(two);
            assert_eq!(inflight(), 10, "not ended: a reader may still join");
            b.finish(End::Done(None));
        } else {
            b.finish(End::Done(None));
            assert_eq!(inflight(), 10, "a reader may still read it");
            drop(two);
        }
        assert_eq!(inflight(), 0);
        assert_eq!(
            Arc::strong_count(&b),
            1,
            "given back while the broadcast itself lives on"
        );
    }
}

fn chunk(n: usize) -> Bytes {
    Bytes::from(vec![u8::try_from(n % 251).unwrap(); 100])
}

/// Polls the task's room check once, as the task would.
fn room(b: &Broadcast) -> Poll<bool> {
    let waker = std::task::Waker::noop();
    b.poll_room(&mut Context::from_waker(waker))
}

#[tokio::test]
async fn a_body_of_no_declared_length_is_kept_whole_up_to_its_limit_then_overflows() {
    let cache = crate::cache::Cache::builder().build().unwrap();
    let inflight = || cache.stats().inflight_bytes;
    // Two chunks were read before it was shared; their room comes with them.
    let mut held = Reservation::new(cache.inner.clone());
    assert!(held.grow(200));
    let b = Broadcast::held_for_test(None, 300, held);
    {
        let mut state = b.lock();
        state.chunks.extend([chunk(0), chunk(1)]);
        state.held_bytes = 200;
        state.received = 200;
    }
    let mut slow = b.first_reader();
    let mut fast = b.join().unwrap();
    assert_eq!(b.push(chunk(2)), Pushed::Kept, "300 bytes: its limit, still whole");
    assert_eq!(inflight(), 300, "reserved chunk by chunk");
    assert_eq!(room(&b), Poll::Ready(true));
    for n in 0..3 {
        assert_eq!(fast.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(n));
    }
    assert_eq!(b.push(chunk(3)), Pushed::Overflowed, "past its limit");
    assert!(
        !b.joinable() && b.join().is_none(),
        "a late reader could not start at the first byte"
    );
    assert_eq!(inflight(), 400, "the chunk that overflowed is counted too");
    // Held until the slow reader passes them: 400 bytes fill the room.
    assert_eq!(b.lock().held_bytes, 400);
    assert_eq!(room(&b), Poll::Pending, "the task waits for the slowest reader");
    for n in 0..2 {
        assert_eq!(slow.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(n));
    }
    assert_eq!(b.lock().held_bytes, 200, "what both readers passed is dropped");
    assert_eq!(room(&b), Poll::Ready(true));
    assert_eq!(b.push(chunk(4)), Pushed::Overflowed);
    assert_eq!(fast.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(3));
    drop(slow);
    assert_eq!(b.lock().held_bytes, 100, "a dropped reader holds nothing back");
    assert_eq!(fast.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(4));
    b.finish(End::Done(None));
    assert!(fast.frame().await.is_none());
    assert!(fast.is_end_stream());
    drop(fast);
    assert_eq!(inflight(), 0, "given back with its last reader");
}

#[tokio::test]
async fn a_body_out_of_in_flight_room_overflows_and_stops_once_nobody_reads() {
    let cache = crate::cache::Cache::builder().max_inflight_bytes(250).build().unwrap();
    let b = Broadcast::held_for_test(None, u64::MAX, Reservation::new(cache.inner.clone()));
    let reader = b.first_reader();
    assert_eq!(b.push(chunk(0)), Pushed::Kept);
    assert_eq!(b.push(chunk(1)), Pushed::Kept);
    assert_eq!(b.push(chunk(2)), Pushed::Overflowed, "no room for 300 bytes");
    assert_eq!(
        cache.stats().inflight_bytes,
        300,
        "the chunk read last is held, and counted, all the same"
    );
    assert_eq!(room(&b), Poll::Pending, "300 bytes held and reserved");
    drop(reader);
    assert_eq!(b.lock().held_bytes, 0);
    assert_eq!(room(&b), Poll::Ready(false), "nobody left to read the rest");
}

#[tokio::test(start_paused = true)]
async fn a_reader_kept_but_not_read_holds_the_others_only_for_a_while() {
    let cache = crate::cache::Cache::builder().build().unwrap();
    let b = Broadcast::held_for_test(None, 100, Reservation::new(cache.inner.clone()));
    let mut read = b.first_reader();
    let _kept = b.join().unwrap();
    assert_eq!(b.push(chunk(0)), Pushed::Kept);
    assert_eq!(b.push(chunk(1)), Pushed::Overflowed);
    assert_eq!(read.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(0));
    assert_eq!(read.frame().await.unwrap().unwrap().into_data().unwrap(), chunk(1));
    let start = tokio::time::Instant::now();
    assert!(b.room("k").await, "room at last, with a reader left");
    assert_eq!(start.elapsed(), b.patience, "after its patience, not before");
    for n in 2..10 {
        assert_eq!(b.push(chunk(n)), Pushed::Overflowed);
        assert_eq!(room(&b), Poll::Ready(true), "no longer waits");
    }
    assert_eq!(b.lock().held_bytes, 1000, "all kept for the reader that lags");
    assert_eq!(cache.stats().inflight_bytes, 1000, "and counted");
}
