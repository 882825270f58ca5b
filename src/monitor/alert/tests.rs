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
    assert_eq!(m.statuses().len(), 7);
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

/// Inhibition: while the source fires, a target's firing goes unheard
/// (its state still changes); once the source stops, a target still
/// firing is told; a resolution is told only of a firing that was.
#[tokio::test(start_paused = true)]
async fn a_firing_source_holds_back_its_targets() {
    let mut m = AlertManager::new();
    m.add_rule(AlertRule::above("CircuitOpen", "open", 0.0));
    m.add_rule(AlertRule::above("HighErrorRate", "errors", 0.05).repeat_interval(Duration::from_secs(60)));
    m.add_rule(AlertRule::above("Other", "other", 0.0));
    m.inhibit("CircuitOpen", ["HighErrorRate", "CircuitOpen"]);
    assert!(m.has_rule("HighErrorRate") && !m.has_rule("Nope"));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    m.on_alert(move |a| log.lock().unwrap().push((a.name.clone(), a.state)));
    let figures = |open: f64, errors: f64, other: f64| {
        move |name: &str| match name {
            "open" => Some(open),
            "errors" => Some(errors),
            _ => Some(other),
        }
    };
    let names =
        |alerts: Vec<Alert>| -> Vec<(String, AlertState)> { alerts.into_iter().map(|a| (a.name, a.state)).collect() };
    let status = |m: &AlertManager, name: &str| m.statuses().into_iter().find(|s| s.rule.name == name).unwrap();
    let t0 = Instant::now();

    // Both fire at once: only the source is told; the target fires held back.
    let told = names(m.evaluate(&figures(1.0, 0.5, 1.0), t0));
    assert_eq!(
        told,
        [
            ("CircuitOpen".to_owned(), AlertState::Firing),
            ("Other".to_owned(), AlertState::Firing)
        ],
        "a rule does not inhibit itself, nor one it does not name"
    );
    let target = status(&m, "HighErrorRate");
    assert_eq!(target.state, AlertState::Firing);
    assert_eq!(target.inhibited_by.as_deref(), Some("CircuitOpen"));
    assert_eq!(status(&m, "CircuitOpen").inhibited_by, None);
    // Past its repeat interval, still held back.
    assert!(
        names(m.evaluate(&figures(1.0, 0.5, 1.0), at(t0, 120)))
            .iter()
            .all(|(n, _)| n != "HighErrorRate")
    );
    // The source stops; the target, still firing, is told now.
    let told = names(m.evaluate(&figures(0.0, 0.5, 1.0), at(t0, 130)));
    assert!(
        told.contains(&("CircuitOpen".to_owned(), AlertState::Resolved)),
        "{told:?}"
    );
    assert!(
        told.contains(&("HighErrorRate".to_owned(), AlertState::Firing)),
        "{told:?}"
    );
    assert_eq!(status(&m, "HighErrorRate").inhibited_by, None);
    // The source fires again: the target's resolution, of a firing told,
    // is told all the same.
    m.evaluate(&figures(1.0, 0.5, 1.0), at(t0, 140));
    let told = names(m.evaluate(&figures(1.0, 0.0, 1.0), at(t0, 150)));
    assert_eq!(told, [("HighErrorRate".to_owned(), AlertState::Resolved)]);
    // A target that fires and resolves within the source's firing is
    // never heard of.
    assert!(names(m.evaluate(&figures(1.0, 0.5, 1.0), at(t0, 160))).is_empty());
    assert!(names(m.evaluate(&figures(1.0, 0.0, 1.0), at(t0, 170))).is_empty());
    let heard = heard.lock().unwrap();
    let target_heard: Vec<AlertState> = heard
        .iter()
        .filter(|(name, _)| name == "HighErrorRate")
        .map(|(_, state)| *state)
        .collect();
    assert_eq!(target_heard, [AlertState::Firing, AlertState::Resolved]);
}

/// A per-host rule: one alert per host the figures name, each with its own
/// state; a host gone quiet from the figures is forgotten, one still
/// firing is kept until it resolves.
#[tokio::test(start_paused = true)]
async fn a_per_host_rule_alerts_for_each_host_alone() {
    use crate::monitor::FigureSet;
    let mut m = AlertManager::new();
    m.add_rule(
        AlertRule::above("HostErrors", "http.error_rate", 0.5)
            .per_host()
            .keep_firing_for(Duration::from_secs(10)),
    );
    // Seen before any host: listed once, inactive, with no host.
    let statuses = m.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].host.as_deref(), statuses[0].state),
        (None, AlertState::Inactive)
    );
    let t0 = Instant::now();
    let set = |a: f64, b: Option<f64>| {
        let set = FigureSet::new()
            .with("http.error_rate", 0.9)
            .with_host("a.test:443", "http.error_rate", a);
        match b {
            Some(b) => set.with_host("b.test:443", "http.error_rate", b),
            None => set,
        }
    };
    let hosts = |alerts: &[Alert]| -> Vec<(Option<String>, AlertState)> {
        alerts.iter().map(|a| (a.host.clone(), a.state)).collect()
    };
    let fired = m.evaluate_figures(&set(0.9, Some(0.1)), t0);
    assert_eq!(hosts(&fired), [(Some("a.test:443".to_owned()), AlertState::Firing)]);
    assert!(fired[0].summary.contains("for a.test:443"), "{}", fired[0].summary);
    assert_eq!(m.firing(), 1);
    let statuses = m.statuses();
    assert_eq!(statuses.len(), 2, "one per host: {statuses:?}");
    // The whole client's figure (0.9) is not a per-host rule's.
    assert!(m.evaluate(&|_: &str| Some(0.9), at(t0, 1)).is_empty());
    assert_eq!(
        m.firing(),
        1,
        "a host missing from the figures keeps firing for keep_firing_for"
    );
    // b fires too; a still fires and is not told again (repeat interval).
    let fired = m.evaluate_figures(&set(0.9, Some(0.8)), at(t0, 2));
    assert_eq!(hosts(&fired), [(Some("b.test:443".to_owned()), AlertState::Firing)]);
    // b leaves the figures: it resolves after keep_firing_for, is told so,
    // and then is forgotten.
    assert!(m.evaluate_figures(&set(0.9, None), at(t0, 5)).is_empty());
    let told = m.evaluate_figures(&set(0.9, None), at(t0, 15));
    assert_eq!(hosts(&told), [(Some("b.test:443".to_owned()), AlertState::Resolved)]);
    let statuses = m.statuses();
    assert_eq!(
        statuses.iter().map(|s| s.host.as_deref()).collect::<Vec<_>>(),
        [Some("a.test:443")],
        "b forgotten"
    );
    // Back again, it starts afresh.
    let fired = m.evaluate_figures(&set(0.9, Some(0.8)), at(t0, 16));
    assert_eq!(hosts(&fired), [(Some("b.test:443".to_owned()), AlertState::Firing)]);
}

/// However many hosts the figures name, a rule tracks at most
/// `MAX_ALERT_HOSTS`.
#[tokio::test(start_paused = true)]
async fn a_per_host_rule_tracks_a_bounded_number_of_hosts() {
    use crate::monitor::FigureSet;
    let mut m = AlertManager::new();
    m.add_rule(AlertRule::above("HostErrors", "http.error_rate", 0.5).per_host());
    let mut set = FigureSet::new();
    for i in 0..MAX_ALERT_HOSTS + 10 {
        set = set.with_host(&format!("h{i}.test:80"), "http.error_rate", 1.0);
    }
    let fired = m.evaluate_figures(&set, Instant::now());
    assert_eq!(fired.len(), MAX_ALERT_HOSTS);
    assert_eq!(m.statuses().len(), MAX_ALERT_HOSTS);
}

/// `inhibit_same_host` holds back only the same host's alerts; `inhibit`
/// holds back every host's.
#[tokio::test(start_paused = true)]
async fn a_same_host_inhibition_holds_back_only_that_host() {
    use crate::monitor::FigureSet;
    let rules = |m: &mut AlertManager| {
        m.add_rule(AlertRule::above("CircuitOpen", "circuit_breaker.open", 0.0).per_host());
        m.add_rule(AlertRule::above("HighErrorRate", "http.error_rate", 0.5).per_host());
        m.add_rule(AlertRule::above("OverallErrors", "http.error_rate", 0.5));
    };
    // a's circuit is open and a fails; b fails with its circuit closed.
    let figures = FigureSet::new()
        .with("http.error_rate", 0.9)
        .with_host("a.test:443", "circuit_breaker.open", 1.0)
        .with_host("a.test:443", "http.error_rate", 1.0)
        .with_host("b.test:443", "circuit_breaker.open", 0.0)
        .with_host("b.test:443", "http.error_rate", 0.8);
    let told = |alerts: Vec<Alert>| -> Vec<(String, Option<String>)> {
        let mut told: Vec<_> = alerts.into_iter().map(|a| (a.name, a.host)).collect();
        told.sort();
        told
    };
    let host = |h: &str| Some(h.to_owned());

    let mut same = AlertManager::new();
    rules(&mut same);
    same.inhibit_same_host("CircuitOpen", ["HighErrorRate", "OverallErrors"]);
    assert_eq!(
        told(same.evaluate_figures(&figures, Instant::now())),
        [
            ("CircuitOpen".to_owned(), host("a.test:443")),
            ("HighErrorRate".to_owned(), host("b.test:443")),
            // No host matches only no host.
            ("OverallErrors".to_owned(), None),
        ]
    );
    let held: Vec<_> = same
        .statuses()
        .into_iter()
        .filter(|s| s.inhibited_by.is_some())
        .map(|s| (s.rule.name, s.host))
        .collect();
    assert_eq!(held, [("HighErrorRate".to_owned(), host("a.test:443"))]);

    let mut any = AlertManager::new();
    rules(&mut any);
    any.inhibit("CircuitOpen", ["HighErrorRate", "OverallErrors"]);
    assert_eq!(
        told(any.evaluate_figures(&figures, Instant::now())),
        [("CircuitOpen".to_owned(), host("a.test:443"))]
    );
}

/// `min_requests`: the condition holds only over enough requests in the
/// window, the whole client's or the host's; with no requests figure it
/// does not hold.
#[tokio::test(start_paused = true)]
async fn min_requests_keeps_a_handful_of_calls_from_firing() {
    use crate::monitor::FigureSet;
    let mut m = AlertManager::new();
    m.add_rule(AlertRule::above("Errors", "http.error_rate", 0.05).min_requests(10));
    m.add_rule(
        AlertRule::above("HostErrors", "http.error_rate", 0.05)
            .per_host()
            .min_requests(10),
    );
    let t0 = Instant::now();
    // One failure of two, everywhere: nothing fires.
    let few = FigureSet::new()
        .with("http.error_rate", 0.5)
        .with("http.requests", 2.0)
        .with_host("a.test:443", "http.error_rate", 0.5)
        .with_host("a.test:443", "http.requests", 2.0);
    assert!(m.evaluate_figures(&few, t0).is_empty());
    // No requests figure at all: nothing fires either.
    assert!(m.evaluate(&|_: &str| Some(0.5), at(t0, 1)).is_empty());
    // Enough calls overall and on b, not on a: the whole client's and b's fire.
    let enough = FigureSet::new()
        .with("http.error_rate", 0.5)
        .with("http.requests", 12.0)
        .with_host("a.test:443", "http.error_rate", 0.5)
        .with_host("a.test:443", "http.requests", 2.0)
        .with_host("b.test:443", "http.error_rate", 0.5)
        .with_host("b.test:443", "http.requests", 10.0);
    let mut fired: Vec<(String, Option<String>)> = m
        .evaluate_figures(&enough, at(t0, 2))
        .into_iter()
        .map(|a| (a.name, a.host))
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("Errors".to_owned(), None),
            ("HostErrors".to_owned(), Some("b.test:443".to_owned()))
        ]
    );
    let defaults = AlertManager::with_default_rules(1.0);
    let rule = |name: &str| {
        defaults
            .statuses()
            .into_iter()
            .find(|s| s.rule.name == name)
            .unwrap()
            .rule
    };
    assert_eq!(rule("HighErrorRate").min_requests, DEFAULT_ALERT_MIN_REQUESTS);
    assert_eq!(rule("SlowRequests").min_requests, DEFAULT_ALERT_MIN_REQUESTS);
    assert_eq!(rule("CircuitOpen").min_requests, 0);
}

mod model;
