//! Unit tests of the openings sender, on paused time: what it sends, to
//! whom, what it leaves alone, and what it counts.
use std::sync::atomic::AtomicU16;

use super::*;
use crate::monitor::post::fake;

fn opened(key: &str, secs: u64, cause: OpenCause) -> Event {
    Event::Opened {
        key: key.into(),
        open_for: Duration::from_secs(secs),
        cause,
    }
}

/// Lets the spawned posts run (the paused clock moves only when all idle).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_opening_by_calls_goes_to_every_peer_as_a_trip() {
    let (client, got) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://10.0.0.2:9000")
        .peer("http://peer.test:8080/admin/")
        .token("s3cret")
        .build(client)
        .unwrap();
    let listener = share.listener();
    listener(&opened("https://api.example", 20, OpenCause::Calls));
    settle().await;
    let mut got = got.lock().unwrap().clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let body = serde_json::json!({"key": "https://api.example", "action": "trip", "open_for_ms": 20_000});
    let auth = Some("Bearer s3cret".to_owned());
    assert_eq!(
        got,
        [
            ("http://10.0.0.2:9000/breakers".to_owned(), auth.clone(), body.clone()),
            ("http://peer.test:8080/admin/breakers".to_owned(), auth, body),
        ]
    );
    assert_eq!(
        share.stats(),
        SharedOpeningsStats {
            delivered: 2,
            failed: 0,
            dropped: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn trips_probes_and_other_events_are_not_sent() {
    let (client, got) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://peer.test")
        .build(client)
        .unwrap();
    let listener = share.listener();
    listener(&opened("https://api.example", 20, OpenCause::Trip));
    listener(&opened("https://api.example", 40, OpenCause::Probe));
    listener(&Event::Rejected {
        key: "https://api.example".into(),
        retry_after: Duration::from_secs(3),
    });
    settle().await;
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(share.stats(), SharedOpeningsStats::default());
}

#[tokio::test(start_paused = true)]
async fn refusals_and_silence_count_as_failed_within_the_timeout() {
    let status = Arc::new(AtomicU16::new(401));
    let (client, got) = fake::server(status.clone(), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://peer.test")
        .timeout(Duration::from_secs(1))
        .build(client)
        .unwrap();
    let listener = share.listener();
    listener(&opened("https://a.example", 10, OpenCause::Calls));
    settle().await;
    assert_eq!(share.stats().failed, 1, "a 401 is a refusal");
    assert_eq!(got.lock().unwrap()[0].1, None, "no token, no Authorization");

    status.store(0, Ordering::SeqCst);
    listener(&opened("https://b.example", 10, OpenCause::Calls));
    settle().await;
    assert_eq!(share.stats().failed, 1, "still waiting");
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        share.stats(),
        SharedOpeningsStats {
            delivered: 0,
            failed: 2,
            dropped: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn posts_past_the_in_flight_bound_are_dropped_until_slots_free() {
    let (client, _) = fake::server(Arc::new(AtomicU16::new(0)), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://peer.test")
        .timeout(Duration::from_secs(2))
        .build(client)
        .unwrap();
    let listener = share.listener();
    for i in 0..MAX_SHARES_IN_FLIGHT + 10 {
        listener(&opened(&format!("https://{i}.example"), 10, OpenCause::Calls));
    }
    settle().await;
    assert_eq!(share.stats().dropped, 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        share.stats().failed,
        MAX_SHARES_IN_FLIGHT as u64,
        "each ended by the timeout"
    );
    listener(&opened("https://later.example", 10, OpenCause::Calls));
    settle().await;
    assert_eq!(share.stats().dropped, 10, "a slot was free again");
}

#[tokio::test(start_paused = true)]
async fn a_monitor_samples_the_sends_and_alerts_on_those_that_did_not_reach_a_peer() {
    use crate::monitor::{AlertManager, AlertState, Monitor, SharedOpeningsSample};
    let status = Arc::new(AtomicU16::new(200));
    let (client, _) = fake::server(status.clone(), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://a.test")
        .peer("http://b.test")
        .build(client)
        .unwrap();
    let monitor = Monitor::builder()
        .shared_openings(share.clone())
        .alerts(AlertManager::with_default_rules(f64::MAX))
        .build();
    let not_shared = |monitor: &Monitor| {
        let alerts = monitor.snapshot().alerts;
        let alert = alerts.iter().find(|a| a.rule.name == "OpeningsNotShared").unwrap();
        (alert.state, alert.value)
    };
    let listener = share.listener();
    listener(&opened("https://api.example", 10, OpenCause::Calls));
    settle().await;
    let sample = monitor.sample_now().shared_openings.unwrap();
    let delivered = SharedOpeningsSample {
        delivered: 2,
        ..SharedOpeningsSample::default()
    };
    assert_eq!(sample, delivered);
    assert_eq!(not_shared(&monitor), (AlertState::Inactive, Some(0.0)));

    // One peer refuses (a wrong token, say): the sample counts it, and the
    // alert fires at once, since nothing else tells of it.
    status.store(401, Ordering::SeqCst);
    listener(&opened("https://api.example", 10, OpenCause::Calls));
    settle().await;
    let sample = monitor.sample_now().shared_openings.unwrap();
    assert_eq!((sample.delivered, sample.failed, sample.unshared), (2, 2, 2));
    assert_eq!(not_shared(&monitor), (AlertState::Firing, Some(2.0)));

    // Nothing more fails: the figure is back to zero, and the alert keeps
    // firing for its minute before it resolves.
    assert_eq!(monitor.sample_now().shared_openings.unwrap().unshared, 0);
    assert_eq!(not_shared(&monitor), (AlertState::Firing, Some(0.0)));
    tokio::time::advance(Duration::from_secs(61)).await;
    monitor.sample_now();
    assert_eq!(not_shared(&monitor).0, AlertState::Resolved);
    let json = serde_json::to_value(monitor.sample_now()).unwrap();
    assert_eq!(
        json["shared_openings"],
        serde_json::json!({"delivered": 2, "failed": 2, "dropped": 0, "unshared": 0})
    );
}

#[test]
fn without_a_runtime_an_opening_is_dropped_not_lost_silently() {
    let (client, _) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peer("http://a.test")
        .peer("http://b.test")
        .build(client)
        .unwrap();
    share.listener()(&opened("https://api.example", 10, OpenCause::Calls));
    assert_eq!(share.stats().dropped, 2);
}

#[test]
fn bad_settings_are_refused_by_name() {
    let (client, _) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    let build = |builder: SharedOpeningsBuilder| builder.build(client.clone()).unwrap_err();
    for url in ["peer.test:9000", "/breakers", "ftp://peer.test", "http://bad host", ""] {
        let error = build(SharedOpenings::builder().peer("http://fine.test").peer(url));
        assert_eq!(error.setting(), "peer", "{url}: {error}");
    }
    let error = build(SharedOpenings::builder().timeout(Duration::ZERO));
    assert_eq!(error.setting(), "timeout");
    let error = build(SharedOpenings::builder().token("two\nlines"));
    assert_eq!(error.setting(), "token");
    assert!(!error.to_string().contains("two"), "the token is not shown: {error}");
    let builder = SharedOpenings::builder().token("s3cret");
    assert!(!format!("{builder:?}").contains("s3cret"));
}

/// A name's every address gets the opening. On the real clock: the name is
/// resolved on a blocking thread, which a paused clock would not wait for
/// (its timeout would fire first). Nothing sleeps; the wait is bounded.
#[tokio::test]
async fn a_resolved_name_sends_to_each_of_its_addresses() {
    let (client, got) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    let share = SharedOpenings::builder()
        .peers_resolved("http://localhost:9464/admin")
        .build(client)
        .unwrap();
    let mut expected: Vec<String> = tokio::net::lookup_host(("localhost", 9464))
        .await
        .unwrap()
        .map(|address| format!("http://{address}/admin/breakers"))
        .collect();
    expected.sort();
    expected.dedup();
    assert!(!expected.is_empty());
    share.listener()(&opened("https://api.example", 10, OpenCause::Calls));
    tokio::time::timeout(Duration::from_secs(10), async {
        while share.stats().delivered < expected.len() as u64 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every address got it");
    let mut sent: Vec<String> = got.lock().unwrap().iter().map(|(url, ..)| url.clone()).collect();
    sent.sort();
    assert_eq!(sent, expected);
    assert_eq!(share.stats().failed, 0);
}

#[test]
fn a_resolved_name_must_be_an_http_url() {
    let (client, _) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
    for url in ["https://optimizer.test:9464", "optimizer.test:9464", "http://"] {
        let error = SharedOpenings::builder()
            .peers_resolved(url)
            .build(client.clone())
            .unwrap_err();
        assert_eq!(error.setting(), "peers_resolved", "{url}: {error}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    /// Any text as a peer, a resolved name or a token builds or is refused
    /// by name; nothing panics, and a refusal never shows the token.
    #[test]
    fn any_settings_build_or_are_refused_by_name(
        peer in "(https?://)?[ -~]{0,24}",
        name in "(https?://)?[ -~]{0,24}",
        token in "[ -~\\n\\r\\t\\x00-\\x1f]{0,12}",
    ) {
        let (client, _) = fake::server(Arc::new(AtomicU16::new(200)), http::header::AUTHORIZATION);
        let built = SharedOpenings::builder()
            .peer(&peer)
            .peers_resolved(&name)
            .token(&token)
            .build(client);
        if let Err(error) = built {
            proptest::prop_assert!(
                ["peer", "peers_resolved", "token"].contains(&error.setting()),
                "{error}"
            );
            if error.setting() == "token" && token.len() > 3 {
                proptest::prop_assert!(!error.to_string().contains(&token), "{error}");
            }
        }
    }
}
