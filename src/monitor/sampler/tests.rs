//! Unit tests of the sampler: schedule, bounded history, alerts and stopping.
use super::*;
use crate::monitor::AlertRule;

#[tokio::test(start_paused = true)]
async fn samples_on_schedule_keeps_bounded_history_and_stops_when_dropped() {
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("deep queue", "queue.depth", 5.0));
    let monitor = Monitor::builder()
        .interval(Duration::from_secs(5))
        .history(Duration::from_secs(30))
        .alerts(alerts)
        .build();
    let depth = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let read = depth.clone();
    monitor.register_gauge("queue.depth", move || {
        read.load(std::sync::atomic::Ordering::SeqCst) as f64
    });
    monitor.start();
    monitor.start();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let snap = monitor.snapshot();
    assert_eq!(snap.history.len(), 6, "30 s of history at one sample per 5 s");
    assert!(snap.history.windows(2).all(|w| w[1].at_ms - w[0].at_ms == 5000));
    assert_eq!(snap.latest.as_ref().unwrap().alerts_firing, 0);
    depth.store(9, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        monitor.snapshot().latest.unwrap().alerts_firing,
        1,
        "the user gauge drives an alert"
    );
    let json = serde_json::to_value(monitor.snapshot()).unwrap();
    assert_eq!(json["alerts"][0]["state"], "firing");
    assert!(monitor.is_running());
    let weak = Arc::downgrade(&monitor.inner);
    drop(monitor);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(weak.upgrade().is_none(), "dropping the handle ended the task");
}
