//! The cache's memory and housekeeping, on paused time: the eviction
//! listener and the byte budget, the background sweep, and the memory
//! pressure watcher.
#![cfg(feature = "cache")]

#[path = "support/logs.rs"]
mod logs;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::time::advance;
use tower_optimizer::cache::{Cache, RemovalCause};

#[tokio::test(start_paused = true)]
async fn eviction_listener_and_budget() {
    let causes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = causes.clone();
    let cache = Cache::builder()
        .max_bytes(16 << 10)
        .max_entry_bytes(2 << 10)
        .shards(1)
        .stale_retention(Duration::ZERO)
        .eviction_listener(move |meta, cause| log.lock().unwrap().push((meta.key.to_string(), cause)))
        .build()
        .unwrap();
    let upstream = Upstream::new(|_, _| async {
        Ok(ok(
            "max-age=5",
            std::str::from_utf8(&[b'x'; 1500]).unwrap().to_owned().leak(),
        ))
    });
    let mut c = client(&cache, &upstream);
    for i in 0..40 {
        get(&mut c, &format!("http://api.test/{i}")).await;
        assert!(cache.stats().bytes <= 16 << 10);
    }
    assert!(causes.lock().unwrap().iter().any(|(_, c)| *c == RemovalCause::Capacity));
    advance(Duration::from_secs(6)).await;
    let swept = cache.sweep();
    assert!(swept.entries > 0);
    assert_eq!(cache.stats().entries, 0);
    assert!(causes.lock().unwrap().iter().any(|(_, c)| *c == RemovalCause::Expired));
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn background_sweep_runs_and_stops_with_the_last_handle() {
    let cache = Cache::builder()
        .sweep_interval(Some(Duration::from_secs(1)))
        .stale_retention(Duration::from_secs(1))
        .build()
        .unwrap();
    let upstream = Upstream::fixed("max-age=2", "x");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/s").await;
    assert_eq!(cache.stats().entries, 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0, "swept without any access");
    let token = cache.background_token();
    assert!(token.upgrade().is_some(), "the sweeper runs");
    drop(c);
    drop(cache);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        token.upgrade().is_none(),
        "the sweeper ended after the last handle went"
    );
}

// An eviction listener that panics is the user's bug; the sweep that
// called it must go on (and count what it removed), or expired entries
// would pile up with nothing said.
#[tokio::test(start_paused = true)]
async fn a_panicking_eviction_listener_does_not_stop_the_sweep() {
    let cache = Cache::builder()
        .sweep_interval(Some(Duration::from_secs(1)))
        .stale_retention(Duration::ZERO)
        .eviction_listener(|_, _| panic!("listener bug"))
        .build()
        .unwrap();
    let upstream = Upstream::fixed("max-age=2", "x");
    let mut c = client(&cache, &upstream);
    get(&mut c, "http://api.test/1").await;
    get(&mut c, "http://api.test/2").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0, "both swept, the listener's panics aside");
    // The sweeper survived: a later entry is swept too.
    get(&mut c, "http://api.test/3").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().evictions(RemovalCause::Expired), 3);
    assert!(cache.audit().is_clean());
}

#[tokio::test(start_paused = true)]
async fn memory_pressure_evicts_down_to_the_low_watermark() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let reading = Arc::new(AtomicUsize::new(0));
    let source = reading.clone();
    let pressure = MemoryPressure::new(
        MemorySource::Custom(Arc::new(move || Some(source.load(Ordering::SeqCst) as u64))),
        1_000_000,
        995_000,
    )
    .interval(Duration::from_millis(100));
    let cache = Cache::builder().memory_pressure(pressure).build().unwrap();
    let upstream = Upstream::fixed("max-age=600", "some body");
    let mut c = client(&cache, &upstream);
    for i in 0..50 {
        get(&mut c, &format!("http://api.test/{i}")).await;
    }
    let before = cache.stats().bytes;
    reading.store(1_005_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let stats = cache.stats();
    assert!(stats.evictions(RemovalCause::Pressure) > 0);
    let freed = before - stats.bytes;
    assert!(freed >= 10_000, "freed usage - low: {freed}");
    assert!(
        freed < 12_000 && stats.bytes > 0,
        "one eviction while the reading lags, not the whole cache"
    );
    reading.store(0, Ordering::SeqCst);
}

// A memory figure that cannot be read is said once, not every tick; a
// reader that panics is an unreadable figure, not the end of the watcher,
// which evicts once the figure is back and too high.
#[tokio::test(start_paused = true)]
async fn memory_pressure_says_once_it_is_blind_and_outlives_a_panicking_reader() {
    use tower_optimizer::cache::{MemoryPressure, MemorySource};
    let (logs, _guard) = logs::Logs::capture();
    let ticks = Arc::new(AtomicUsize::new(0));
    let seen = ticks.clone();
    let source = MemorySource::Custom(Arc::new(move || match seen.fetch_add(1, Ordering::SeqCst) {
        0..=4 => None,
        5 => panic!("reader bug"),
        _ => Some(1_005_000),
    }));
    let pressure = MemoryPressure::new(source, 1_000_000, 995_000).interval(Duration::from_millis(100));
    let cache = Cache::builder().memory_pressure(pressure).build().unwrap();
    let upstream = Upstream::fixed("max-age=600", "some body");
    let mut c = client(&cache, &upstream);
    for i in 0..50 {
        get(&mut c, &format!("http://api.test/{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ticks.load(Ordering::SeqCst) >= 7, "the watcher kept ticking");
    assert!(cache.stats().evictions(RemovalCause::Pressure) > 0);
    let logged = logs.text();
    let blind = logged
        .lines()
        .filter(|l| l.contains("cannot read memory usage"))
        .count();
    assert_eq!(blind, 1, "said once, not every tick: {logged}");
    assert!(
        logged.contains("callback=\"memory source\"") && logged.contains("reader bug"),
        "{logged}"
    );
}
