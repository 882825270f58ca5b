//! Unit tests of the Alertmanager push, on paused time: when it sends,
//! what, and what a failed push keeps.
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, Ordering};

use http_body_util::Full;

use super::*;
use crate::monitor::post::fake;
use crate::monitor::{AlertManager, AlertRule};

/// Lets the spawned pushes run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

/// One evaluation of `alerts` over `figures`, then the push.
fn step(alerts: &mut AlertManager, push: &AlertmanagerPush, value: f64, now: Instant) {
    alerts.evaluate(&|_: &str| Some(value), now);
    push.observe(&alerts.statuses(), Duration::from_secs(5), now);
}

/// Names and `endsAt` of one push's alerts.
fn alerts_of(push: &serde_json::Value) -> Vec<(String, String)> {
    push.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["endsAt"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn fires_at_once_resends_while_firing_and_sends_the_resolution() {
    let status = Arc::new(AtomicU16::new(200));
    let (service, got) = fake::server(status.clone(), http::header::CONTENT_TYPE);
    let push = AlertmanagerPush::builder("http://am.test:9093/prefix/")
        .label("instance", "checkout-1")
        .label("alertname", "overridden")
        .generator_url("http://10.0.0.2:9464/dashboard")
        .build(service)
        .unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    let t0 = Instant::now();

    // Quiet: nothing is sent.
    step(&mut alerts, &push, 1.0, t0);
    settle().await;
    assert!(got.lock().unwrap().is_empty());

    // Fires: sent at once, to the API under the base's path.
    let before = rfc3339(SystemTime::now());
    step(&mut alerts, &push, 50.0, at(t0, 5));
    settle().await;
    let first = got.lock().unwrap().pop().unwrap();
    assert_eq!(first.0, "http://am.test:9093/prefix/api/v2/alerts");
    assert_eq!(first.1.as_deref(), Some("application/json"));
    let alert = &first.2[0];
    assert_eq!(alert["labels"]["alertname"], "Deep", "the alert's own label wins");
    assert_eq!(alert["labels"]["instance"], "checkout-1");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["annotations"]["value"], "50.0000");
    assert_eq!(alert["generatorURL"], "http://10.0.0.2:9464/dashboard");
    let starts = alert["startsAt"].as_str().unwrap().to_owned();
    assert!(starts >= before, "{starts} >= {before}");
    assert!(
        alert["endsAt"].as_str().unwrap() > starts.as_str(),
        "a firing alert ends ahead"
    );

    // Still firing, within the resend period: not sent again.
    step(&mut alerts, &push, 50.0, at(t0, 30));
    settle().await;
    assert!(got.lock().unwrap().is_empty());
    // Past it: sent again, with the same start.
    step(&mut alerts, &push, 50.0, at(t0, 65));
    settle().await;
    let again = got.lock().unwrap().pop().unwrap();
    assert_eq!(again.2[0]["startsAt"].as_str(), Some(starts.as_str()));

    // Resolves: sent at once, ending now (not ahead).
    step(&mut alerts, &push, 1.0, at(t0, 70));
    let after = rfc3339(SystemTime::now());
    settle().await;
    let resolved = got.lock().unwrap().pop().unwrap();
    let sent = alerts_of(&resolved.2);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "Deep");
    assert!(sent[0].1 <= after, "{} <= {after}", sent[0].1);
    // Then quiet again.
    step(&mut alerts, &push, 1.0, at(t0, 200));
    settle().await;
    assert!(got.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_push_is_sent_again_at_the_next_evaluation() {
    let status = Arc::new(AtomicU16::new(503));
    let (service, got) = fake::server(status.clone(), http::header::CONTENT_TYPE);
    let push = AlertmanagerPush::builder("http://am.test").build(service).unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    let t0 = Instant::now();
    step(&mut alerts, &push, 50.0, t0);
    // A push still running is not doubled.
    step(&mut alerts, &push, 50.0, at(t0, 1));
    settle().await;
    assert_eq!(got.lock().unwrap().len(), 1);
    step(&mut alerts, &push, 1.0, at(t0, 5));
    settle().await;
    // Refused twice: the firing, then its resolution.
    assert_eq!(got.lock().unwrap().len(), 2);
    got.lock().unwrap().clear();
    // The resolution is sent again until one is taken.
    status.store(200, Ordering::SeqCst);
    step(&mut alerts, &push, 1.0, at(t0, 10));
    settle().await;
    let sent = got.lock().unwrap().pop().unwrap();
    assert_eq!(alerts_of(&sent.2).len(), 1);
    step(&mut alerts, &push, 1.0, at(t0, 15));
    settle().await;
    assert!(got.lock().unwrap().is_empty(), "delivered once is enough");
}

#[tokio::test(start_paused = true)]
async fn held_back_alerts_are_not_sent_and_hosts_are_labelled() {
    use crate::monitor::FigureSet;
    let (service, got) = fake::server(Arc::new(AtomicU16::new(200)), http::header::CONTENT_TYPE);
    let push = AlertmanagerPush::builder("http://am.test").build(service).unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Open", "circuit_breaker.open", 0.0).per_host());
    alerts.add_rule(AlertRule::above("Errors", "http.error_rate", 0.5).per_host());
    alerts.inhibit_same_host("Open", ["Errors"]);
    let figures = FigureSet::new()
        .with_host("a.test:443", "circuit_breaker.open", 1.0)
        .with_host("a.test:443", "http.error_rate", 1.0)
        .with_host("b.test:443", "http.error_rate", 1.0);
    alerts.evaluate_figures(&figures, Instant::now());
    push.observe(&alerts.statuses(), Duration::from_secs(5), Instant::now());
    settle().await;
    let sent = got.lock().unwrap().pop().unwrap().2;
    let mut labels: Vec<(String, String)> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["labels"]["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            ("Errors".to_owned(), "b.test:443".to_owned()),
            ("Open".to_owned(), "a.test:443".to_owned())
        ]
    );
    assert!(
        sent[0].get("generatorURL").is_none(),
        "none unless set: Alertmanager refuses an empty one"
    );
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let (service, _) = fake::server(Arc::new(AtomicU16::new(200)), http::header::CONTENT_TYPE);
    for (builder, setting, words) in [
        (AlertmanagerPush::builder("am.test:9093"), "builder", "absolute"),
        (AlertmanagerPush::builder("/api"), "builder", "absolute"),
        (AlertmanagerPush::builder("ftp://am.test"), "builder", "absolute"),
        (AlertmanagerPush::builder("http://a m"), "builder", "not a URL"),
        (
            AlertmanagerPush::builder("http://am.test").label("team-name", "x"),
            "label",
            "label name",
        ),
        (
            AlertmanagerPush::builder("http://am.test").label("", "x"),
            "label",
            "label name",
        ),
        (
            AlertmanagerPush::builder("http://am.test").resend_every(Duration::ZERO),
            "resend_every",
            "resend_every must be longer than zero",
        ),
        (
            AlertmanagerPush::builder("http://am.test").timeout(Duration::ZERO),
            "timeout",
            "timeout must be longer than zero",
        ),
        (
            AlertmanagerPush::builder("http://am.test").generator_url("/dashboard"),
            "generator_url",
            "absolute",
        ),
    ] {
        let e = builder.build(service.clone()).unwrap_err();
        assert!(e.to_string().contains(words), "{e}");
        assert_eq!(e.setting(), setting, "{e}");
    }
}

#[test]
fn times_are_rfc3339_in_utc() {
    let t = |secs: u64, millis: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
    assert_eq!(rfc3339(t(0, 0)), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(t(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
    assert_eq!(rfc3339(t(1_798_761_599, 999)), "2026-12-31T23:59:59.999Z");
    assert_eq!(rfc3339(t(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
}

/// An Alertmanager that never answers holds one push for `timeout`, no
/// longer; the next evaluation after it sends again.
#[tokio::test(start_paused = true)]
async fn a_push_that_never_ends_is_given_up_after_its_timeout() {
    let calls = Arc::new(AtomicU16::new(0));
    let count = calls.clone();
    let silent = tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
        count.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>()
    });
    let push = AlertmanagerPush::builder("http://am.test")
        .timeout(Duration::from_secs(3))
        .build(silent)
        .unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    let t0 = Instant::now();
    step(&mut alerts, &push, 50.0, t0);
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Still waiting: not doubled.
    step(&mut alerts, &push, 50.0, at(t0, 1));
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Past the timeout it is given up, and sent again.
    tokio::time::advance(Duration::from_secs(3)).await;
    settle().await;
    step(&mut alerts, &push, 50.0, Instant::now());
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// `authorization`: sent with every push, marked sensitive.
#[tokio::test(start_paused = true)]
async fn the_authorization_goes_with_every_push_marked_sensitive() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let service = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let value = req.headers().get(http::header::AUTHORIZATION).cloned();
        keep.lock().unwrap().push(value);
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default())))
    });
    let push = AlertmanagerPush::builder("http://am.test")
        .authorization(http::HeaderValue::from_static("Basic dXNlcjpwYXNz"))
        .build(service)
        .unwrap();
    assert!(!format!("{push:?}").contains("dXNlcjpwYXNz"), "{push:?}");
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    step(&mut alerts, &push, 50.0, Instant::now());
    settle().await;
    let value = seen.lock().unwrap().pop().flatten().expect("an Authorization header");
    assert_eq!(value, "Basic dXNlcjpwYXNz");
    assert!(value.is_sensitive());
}

/// The push in flight ends with the last handle: no task outlives the
/// monitor that made it.
#[tokio::test(start_paused = true)]
async fn a_push_in_flight_ends_with_the_last_handle() {
    /// Flags its drop.
    struct Dropped(Arc<AtomicU16>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicU16::new(0));
    let flag = dropped.clone();
    let silent = tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
        let guard = Dropped(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>().await
        }
    });
    let push = AlertmanagerPush::builder("http://am.test").build(silent).unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    step(&mut alerts, &push, 50.0, Instant::now());
    settle().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 0, "the push waits");
    let other = push.clone();
    drop(push);
    settle().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 0, "a handle is left");
    drop(other);
    settle().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the push ended with the last handle");
}

/// Periods past what a date holds: an `endsAt` at most a year ahead, and
/// no overflow.
#[tokio::test(start_paused = true)]
async fn a_huge_resend_period_ends_alerts_within_a_year() {
    let (service, got) = fake::server(Arc::new(AtomicU16::new(200)), http::header::CONTENT_TYPE);
    let push = AlertmanagerPush::builder("http://am.test")
        .resend_every(Duration::MAX)
        .build(service)
        .unwrap();
    let mut alerts = AlertManager::new();
    alerts.add_rule(AlertRule::above("Deep", "queue.depth", 10.0));
    alerts.evaluate(&|_: &str| Some(50.0), Instant::now());
    push.observe(&alerts.statuses(), Duration::MAX, Instant::now());
    settle().await;
    let sent = got.lock().unwrap().pop().unwrap().2;
    let ends = sent[0]["endsAt"].as_str().unwrap().to_owned();
    let year_on = rfc3339(SystemTime::now() + MAX_AHEAD + Duration::from_secs(60));
    assert!(ends <= year_on, "{ends} <= {year_on}");
    assert_eq!(ends.len(), "2026-11-29T12:00:00.000Z".len(), "{ends}");
}
