//! Openings shared between instances of a client: two breaker layers, each
//! over its own hyper HTTP/2 client (two processes behind one load
//! balancer, in one test), calling one real server on 127.0.0.1. When one
//! instance's circuit opens, the other's opens too without spending a
//! request on the failing host, and nothing is sent back and forth twice;
//! then the same between two whole stacks from their TOML files, through
//! the receiving stack's admin server.
#![cfg(feature = "circuit-breaker")]

#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{
    BreakerBody, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakers, Event, OpenCause, State, error::Open,
};

/// A host that answers 503 while `failing`, counting the requests it saw.
struct Upstream {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

async fn upstream() -> Upstream {
    let (failing, requests) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (f, r) = (failing.clone(), requests.clone());
    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
        r.fetch_add(1, Ordering::SeqCst);
        let status = if f.load(Ordering::SeqCst) { 503 } else { 200 };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .unwrap(),
            )
        }
    });
    let addr = server::serve(server::Protocol::H2c, service).await;
    Upstream {
        addr,
        failing,
        requests,
    }
}

type Svc = tower_optimizer::circuit_breaker::CircuitBreakerService<Client<HttpConnector, Full<Bytes>>>;

/// One instance of the client: its breakers, its service, and what its
/// listener sent to the others.
struct Instance {
    breakers: CircuitBreakers,
    svc: Svc,
    events: Arc<Mutex<Vec<Event>>>,
}

/// An instance whose openings by its own calls go to `share`, the way a
/// user wires any transport (a channel here; a message bus or HTTP between
/// processes).
fn instance(share: mpsc::UnboundedSender<(Arc<str>, Duration)>) -> Instance {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .open_period(Duration::from_secs(10), Duration::from_secs(60), 2.0)
        .jitter(0.0)
        .half_open(1, Duration::from_secs(30))
        .on_event(move |event| {
            seen.lock().unwrap().push(event.clone());
            if let Event::Opened {
                key,
                open_for,
                cause: OpenCause::Calls,
            } = event
            {
                let _ = share.send((key.clone(), *open_for));
            }
        })
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
    Instance {
        breakers: layer.breakers(),
        svc: tower::Layer::layer(&layer, client),
        events,
    }
}

/// Passes what one instance shares to the other's breakers.
fn deliver(mut from: mpsc::UnboundedReceiver<(Arc<str>, Duration)>, to: CircuitBreakers) -> Arc<AtomicUsize> {
    let delivered = Arc::new(AtomicUsize::new(0));
    let count = delivered.clone();
    tokio::spawn(async move {
        while let Some((key, open_for)) = from.recv().await {
            count.fetch_add(1, Ordering::SeqCst);
            to.trip(&key, open_for);
        }
    });
    delivered
}

async fn get(svc: &mut Svc, url: &str) -> Result<u16, BoxError> {
    let res: Response<BreakerBody<Incoming>> = svc
        .ready()
        .await?
        .call(Request::get(url).body(Full::default())?)
        .await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

#[tokio::test(start_paused = true)]
async fn one_instances_opening_opens_the_others_without_a_request() {
    let host = upstream().await;
    let key = format!("http://{}", host.addr);
    let url = format!("{key}/items");
    let (to_b, from_a) = mpsc::unbounded_channel();
    let (to_a, from_b) = mpsc::unbounded_channel();
    let mut a = instance(to_b);
    let mut b = instance(to_a);
    let (a_to_b, b_to_a) = (deliver(from_a, b.breakers.clone()), deliver(from_b, a.breakers.clone()));

    assert_eq!(get(&mut b.svc, &url).await.unwrap(), 200);
    host.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get(&mut a.svc, &url).await.unwrap(), 503);
    }
    assert_eq!(a.breakers.state(&key), Some(State::Open));
    tokio::task::yield_now().await;
    assert_eq!(a_to_b.load(Ordering::SeqCst), 1);
    assert_eq!(b.breakers.state(&key), Some(State::Open), "B opened on A's word");
    let opened_by = |breakers: &CircuitBreakers| breakers.snapshot()[0].opened_by;
    assert_eq!(
        (opened_by(&a.breakers), opened_by(&b.breakers)),
        (Some(OpenCause::Calls), Some(OpenCause::Trip)),
        "each says why it is open"
    );

    let seen = host.requests.load(Ordering::SeqCst);
    let refused = get(&mut b.svc, &url).await.unwrap_err();
    let open = Open::find(refused.as_ref()).expect("B fails fast");
    assert_eq!(open.retry_after(), Duration::from_secs(10), "for A's period");
    assert_eq!(
        host.requests.load(Ordering::SeqCst),
        seen,
        "B spent no request on the host"
    );
    assert!(
        b.events.lock().unwrap().contains(&Event::Opened {
            key: key.as_str().into(),
            open_for: Duration::from_secs(10),
            cause: OpenCause::Trip,
        }),
        "B says why it opened"
    );
    tokio::task::yield_now().await;
    assert_eq!(b_to_a.load(Ordering::SeqCst), 0, "B's opening is not sent back");

    // Both go half-open after the period; the host is back, and B's one
    // probe call closes B's circuit on its own.
    host.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(get(&mut b.svc, &url).await.unwrap(), 200);
    assert_eq!(b.breakers.state(&key), Some(State::Closed));
    assert_eq!(a.breakers.state(&key), Some(State::HalfOpen), "A decides for itself");

    // B's own failures later are shared the other way.
    host.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get(&mut b.svc, &url).await.unwrap(), 503);
    }
    tokio::task::yield_now().await;
    assert_eq!(b_to_a.load(Ordering::SeqCst), 1);
    assert_eq!(a_to_b.load(Ordering::SeqCst), 1, "A's trip, by B's word, went nowhere");
    assert!(get(&mut a.svc, &url).await.unwrap_err().is::<Open>());
}

/// Two stacks from their files: A sends its openings to B's admin server
/// (`[circuit_breaker.share]`, the token from a variable), and B stops
/// calling the failing host at once; A's monitor samples what it sent.
#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn a_stacks_openings_reach_its_peers_admin_server() {
    use tower_optimizer::stack::{OptimizedService, OptimizerConfig, OptimizerStackBuilder};

    async fn get(client: &OptimizedService<Full<Bytes>>, url: &str) -> Result<u16, BoxError> {
        let res = client.clone().oneshot(Request::get(url).body(Full::default())?).await?;
        let status = res.status().as_u16();
        res.into_body().collect().await?;
        Ok(status)
    }
    let stack = |toml: String| {
        OptimizerConfig::from_toml(&toml)
            .and_then(OptimizerConfig::into_builder)
            .and_then(OptimizerStackBuilder::build_http2_client)
            .unwrap()
    };
    let host = upstream().await;
    let key = format!("http://{}", host.addr);
    let url = format!("{key}/items");
    let breaker = "[circuit_breaker]\nconsecutive_failures = 3\njitter = 0.0\n";
    // The token is the one cargo puts in CARGO_PKG_NAME for A to read.
    let (client_b, b) = stack(format!(
        "{breaker}[monitor]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"tower-optimizer\"\n"
    ));
    let admin_b = b.start().await.unwrap().admin.unwrap();
    // A long post timeout: the paused clock jumps ahead while the post's
    // bytes cross the loopback.
    let (client_a, a) = stack(format!(
        "{breaker}[circuit_breaker.share]\npeers = [\"http://{admin_b}\"]\ntoken_env = \"CARGO_PKG_NAME\"\ntimeout = \"1h\"\n[monitor]\n"
    ));

    assert_eq!(get(&client_b, &url).await.unwrap(), 200);
    host.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get(&client_a, &url).await.unwrap(), 503);
    }
    for _ in 0..50 {
        if b.breakers().unwrap().state(&key) == Some(State::Open) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        b.breakers().unwrap().state(&key),
        Some(State::Open),
        "B opened on A's word"
    );
    let sent = a.stats().shared_openings.expect("A shares");
    assert_eq!((sent.delivered, sent.failed, sent.dropped), (1, 0, 0));
    // A's monitor samples the same, and its built-in alert stays quiet.
    let monitor = a.monitor().unwrap();
    let sampled = monitor
        .sample_now()
        .shared_openings
        .expect("A's monitor samples its sends");
    assert_eq!((sampled.delivered, sampled.failed, sampled.unshared), (1, 0, 0));
    let alerts = monitor.snapshot().alerts;
    let alert = alerts.iter().find(|a| a.rule.name == "OpeningsNotShared").unwrap();
    assert_eq!(
        (alert.state, alert.value),
        (tower_optimizer::monitor::AlertState::Inactive, Some(0.0))
    );
    assert_eq!(
        b.monitor().unwrap().sample_now().shared_openings,
        None,
        "B shares with no one"
    );
    let seen = host.requests.load(Ordering::SeqCst);
    let refused = get(&client_b, &url).await.unwrap_err();
    let open = Open::find(refused.as_ref()).expect("B fails fast");
    assert!(open.retry_after() <= Duration::from_secs(10), "{open:?}");
    assert_eq!(
        host.requests.load(Ordering::SeqCst),
        seen,
        "B spent no request on the host"
    );
    assert_eq!(b.stats().shared_openings, None, "B shares with no one");
    b.shutdown(Duration::from_secs(1)).await;
}

/// Sharing needs a breaker whose openings it shares.
#[cfg(feature = "stack")]
#[test]
fn sharing_without_a_breaker_is_refused_by_name() {
    let share = tower_optimizer::monitor::SharedOpenings::builder()
        .peer("http://127.0.0.1:9464")
        .build(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>())
        .unwrap();
    let error = tower_optimizer::stack::OptimizerStack::builder()
        .share_openings(share)
        .build::<Full<Bytes>>()
        .unwrap_err();
    assert_eq!(error.field(), "share_openings", "{error}");
}

/// Each post is counted through the `metrics` facade by outcome: one peer
/// takes the opening, one refuses it.
#[cfg(feature = "monitor")]
#[test]
fn shared_openings_are_counted_through_the_metrics_facade() {
    let recorder = recorder::Recorder::default();
    let counts = recorder.counts.clone();
    let to_peers = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let status = if req.uri().host() == Some("a.test") { 200 } else { 401 };
        Ok::<_, Infallible>(
            Response::builder()
                .status(status)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
    });
    let share = tower_optimizer::monitor::SharedOpenings::builder()
        .peer("http://a.test:9464")
        .peer("http://b.test:9464")
        .build(to_peers)
        .unwrap();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(1))
        .on_state_change(share.listener())
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let failing = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::builder().status(503).body(Full::<Bytes>::default()).unwrap())
    });
    let mut svc = tower::Layer::layer(&layer, failing);
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let request = Request::get("http://api.test/").body(Full::default()).unwrap();
                let res = svc.ready().await.unwrap().call(request).await.unwrap();
                assert_eq!(res.status(), 503);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            });
    });
    let stats = share.stats();
    assert_eq!((stats.delivered, stats.failed, stats.dropped), (1, 1, 0));
    let mut seen: Vec<(String, String, u64)> = counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, ..)| name == "tower_optimizer.circuit_breaker.shared_openings")
        .cloned()
        .collect();
    seen.sort();
    let name = "tower_optimizer.circuit_breaker.shared_openings".to_owned();
    assert_eq!(
        seen,
        [
            (name.clone(), "outcome=delivered".to_owned(), 1),
            (name, "outcome=failed".to_owned(), 1)
        ]
    );
}

/// A trip that makes an open period longer holds the recovery probe back
/// until the longer period ends: the host another instance found down is
/// not probed early.
#[tokio::test(start_paused = true)]
async fn a_longer_trip_holds_the_recovery_probe_back() {
    use tower_optimizer::circuit_breaker::ProbeSuccess;
    let probes = Arc::new(AtomicUsize::new(0));
    let count = probes.clone();
    let config = CircuitBreakerConfig::builder()
        .open_period(Duration::from_secs(10), Duration::from_secs(300), 2.0)
        .jitter(0.0)
        .probe(
            move |_key| {
                count.fetch_add(1, Ordering::SeqCst);
                async { true }
            },
            ProbeSuccess::Closed,
        )
        .build()
        .unwrap();
    let breakers = CircuitBreakerLayer::new(config).breakers();
    let key = "http://api.test";
    assert!(breakers.trip(key, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(breakers.trip(key, Duration::from_secs(60)), "60 s from now ends later");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        0,
        "the first 10 s ended, the trip's 60 s did not"
    );
    assert_eq!(breakers.state(key), Some(State::Open));
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert_eq!(
        breakers.state(key),
        Some(State::Closed),
        "the probe found the host back"
    );
}
