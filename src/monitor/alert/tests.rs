//! Unit tests of the alert manager on paused time: every state change and the cooldown.
use super::*;
use std::sync::Mutex;

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[tokio::test(start_paused = true)]
async fn every_state_change_and_the_cooldown() {
    let mut m = AlertManager::new();
    m.add_rule(
        AlertRule::above("errors", "e", 0.1)
            .for_duration(Duration::from_secs(30))
            .keep_firing_for(Duration::from_secs(20))
            .repeat_interval(Duration::from_secs(100)),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    m.on_alert(move |a| log.lock().unwrap().push(a.state));
    let high = |_: &str| Some(0.5);
    let low = |_: &str| Some(0.0);
    let t0 = Instant::now();
    assert!(m.evaluate(&high, t0).is_empty());
    assert_eq!(m.statuses()[0].state, AlertState::Pending);
    assert!(m.evaluate(&low, at(t0, 10)).is_empty(), "pending drops back");
    assert_eq!(m.statuses()[0].state, AlertState::Inactive);
    m.evaluate(&high, at(t0, 20));
    assert!(m.evaluate(&high, at(t0, 49)).is_empty(), "29 s < for 30 s");
    let fired = m.evaluate(&high, at(t0, 50));
    assert_eq!(fired[0].state, AlertState::Firing);
    assert!(fired[0].summary.contains("errors is firing"));
    assert!(m.evaluate(&high, at(t0, 100)).is_empty(), "cooldown");
    assert_eq!(
        m.evaluate(&high, at(t0, 150))[0].state,
        AlertState::Firing,
        "re-notified after 100 s"
    );
    assert!(m.evaluate(&low, at(t0, 160)).is_empty(), "keeps firing 20 s");
    assert!(
        m.evaluate(&high, at(t0, 170)).is_empty(),
        "cleared and back: still the same firing"
    );
    assert!(m.evaluate(&low, at(t0, 175)).is_empty());
    let resolved = m.evaluate(&low, at(t0, 195));
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert_eq!(m.firing(), 0);
    assert!(
        m.evaluate(&|_| None, at(t0, 200)).is_empty(),
        "missing figures do not fire"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [AlertState::Firing, AlertState::Firing, AlertState::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn below_rules_defaults_and_async_handlers() {
    let mut m = AlertManager::with_default_rules(1e9);
    assert_eq!(m.statuses().len(), 6);
    m.add_rule(AlertRule::below("hit ratio", "cache.hit_ratio", 0.5));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    m.on_alert_async(move |alert| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(alert.name);
        }
    });
    let figures = |name: &str| match name {
        "cache.hit_ratio" => Some(0.2),
        "circuit_breaker.open" => Some(1.0),
        _ => Some(0.0),
    };
    let fired = m.evaluate(&figures, Instant::now());
    let mut names: Vec<_> = fired.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["CircuitOpen", "hit ratio"]);
    let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort();
    assert_eq!(got, ["CircuitOpen", "hit ratio"]);
}

/// A log buffer for a scoped subscriber: this test alone reaches the
/// callsite it asserts on.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn async_handlers_without_a_runtime_are_reported_not_dropped_unseen() {
    let mut m = AlertManager::new();
    m.add_rule(AlertRule::above("Depth", "depth", 1.0));
    m.on_alert_async(|_| async {});
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let fired = tracing::subscriber::with_default(subscriber, || m.evaluate(&|_| Some(5.0), Instant::now()));
    assert_eq!(fired.len(), 1);
    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("the async alert handlers did not run"), "{logged}");
}
