//! Breakers over real HTTP/2: two hyper servers on 127.0.0.1, one starts
//! answering 503 and then refuses connections; its circuit opens, the
//! recovery probe closes it once the server is back, and the other host's
//! breaker is untouched throughout.
#![cfg(feature = "circuit-breaker")]

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tower::{Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, ProbeSuccess, State, error::Open, http_probe,
};

/// A server that can answer 503s, be killed (connections refused) and
/// come back on the same port.
struct Server {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    user_requests: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    async fn start() -> Server {
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            failing: Arc::default(),
            user_requests: Arc::default(),
            tasks: Arc::default(),
        };
        server.addr = server.listen().await;
        server
    }

    async fn listen(&self) -> SocketAddr {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (failing, user_requests, tasks) = (self.failing.clone(), self.user_requests.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (failing, user_requests) = (failing.clone(), user_requests.clone());
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        if req.uri().path() != "/health" {
                            user_requests.fetch_add(1, Ordering::SeqCst);
                        }
                        let status = if failing.load(Ordering::SeqCst) {
                            503
                        } else if req.uri().path() == "/missing" {
                            404
                        } else {
                            200
                        };
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
        addr
    }

    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).http2_only(true).build(connector)
}

async fn get<S>(svc: &mut S, url: &str) -> Result<u16, BoxError>
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<tower_optimizer::circuit_breaker::BreakerBody<Incoming>>,
            Error = BoxError,
        >,
{
    let res = svc
        .ready()
        .await?
        .call(Request::get(url).body(Full::default())?)
        .await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

async fn wait_for(breakers: &tower_optimizer::circuit_breaker::CircuitBreakers, key: &str, state: State) {
    for _ in 0..200 {
        if breakers.state(key) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} never reached {state:?}; now {:?}", breakers.state(key));
}

// Paused clock with real sockets: open periods and probe waits pass
// instantly while the runtime idles; nothing here has a timeout that an
// early timer could break.
#[tokio::test(start_paused = true)]
async fn failing_host_opens_probe_recovers_other_host_untouched() {
    let a = Server::start().await;
    let b = Server::start().await;
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));

    let probe_client = client();
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .open_period(Duration::from_secs(2), Duration::from_secs(8), 2.0)
        .jitter(0.0)
        .probe(
            http_probe(probe_client, "/health", Duration::from_secs(60)),
            ProbeSuccess::Closed,
        )
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let breakers = layer.breakers();
    let mut svc = tower::Layer::layer(&layer, client());

    assert_eq!(get(&mut svc, &url_a).await.unwrap(), 200);
    assert_eq!(get(&mut svc, &url_b).await.unwrap(), 200);

    // A answers 503s: three of them open its circuit.
    a.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get(&mut svc, &url_a).await.unwrap(), 503);
    }
    assert!(get(&mut svc, &url_a).await.unwrap_err().is::<Open>());
    assert_eq!(get(&mut svc, &url_b).await.unwrap(), 200, "B is unaffected");

    // A dies: the probe at the end of the open period is refused, so the
    // circuit opens again (for 4 s now).
    a.kill();
    let user_before = a.user_requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(breakers.state(&url_a), Some(State::Open));
    assert!(get(&mut svc, &url_a).await.unwrap_err().is::<Open>());

    // A comes back healthy on its port: the probe closes the circuit with
    // no user request spent on it.
    a.failing.store(false, Ordering::SeqCst);
    a.listen().await;
    wait_for(&breakers, &url_a, State::Closed).await;
    assert_eq!(
        a.user_requests.load(Ordering::SeqCst),
        user_before,
        "recovery cost no user request"
    );
    assert_eq!(get(&mut svc, &url_a).await.unwrap(), 200);
    assert_eq!(breakers.state(&url_b), Some(State::Closed));

    // B's connections are refused outright: connect errors open B alone.
    b.kill();
    for _ in 0..3 {
        assert!(get(&mut svc, &url_b).await.is_err());
    }
    assert_eq!(breakers.state(&url_b), Some(State::Open));
    assert_eq!(breakers.state(&url_a), Some(State::Closed));
}

/// With tower-http's client rule, a host answering only 404s (a
/// misrouted upstream) is cut off; the default rule calls them successes.
#[cfg(feature = "tower-http")]
#[tokio::test(start_paused = true)]
async fn tower_http_client_rule_counts_404s_from_a_real_server() {
    use tower_http::classify::StatusInRangeAsFailures;
    use tower_optimizer::circuit_breaker::TowerHttpClassifier;

    let server = Server::start().await;
    let url = format!("http://{}/missing", server.addr);
    let key = format!("http://{}", server.addr);
    let strict = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .classifier(TowerHttpClassifier::new(
            StatusInRangeAsFailures::new_for_client_and_server_errors(),
        ))
        .build()
        .unwrap();
    let default = CircuitBreakerConfig::builder()
        .consecutive_failures(Some(3))
        .build()
        .unwrap();
    for (config, state) in [(default, State::Closed), (strict, State::Open)] {
        let layer = CircuitBreakerLayer::new(config);
        let breakers = layer.breakers();
        let mut svc = tower::Layer::layer(&layer, client());
        for _ in 0..3 {
            assert_eq!(get(&mut svc, &url).await.unwrap(), 404);
        }
        assert_eq!(breakers.state(&key), Some(state));
    }
}

/// An upload whose body fails on the caller's side is the caller's doing:
/// the breaker counts it as nothing, over HTTP/2 (where hyper resets the
/// stream itself) and HTTP/1.1 (where it reports a user error) alike, so
/// clients hanging up mid-upload cannot open a healthy host's circuit.
#[tokio::test(start_paused = true)]
async fn a_request_body_failing_on_the_callers_side_counts_as_nothing() {
    // Reads the whole upload before it answers, as an upload endpoint does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let status = if req.into_body().collect().await.is_ok() {
                        200
                    } else {
                        400
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let key = format!("http://{addr}");
    for http2 in [true, false] {
        let client: Client<HttpConnector, server::Upload> =
            Client::builder(TokioExecutor::new()).http2_only(http2).build_http();
        let config = CircuitBreakerConfig::builder()
            .consecutive_failures(Some(1))
            .build()
            .unwrap();
        let layer = CircuitBreakerLayer::new(config);
        let breakers = layer.breakers();
        let mut svc = tower::Layer::layer(&layer, client);
        let upload = |fail| {
            Request::post(format!("{key}/upload"))
                .body(server::Upload::new(fail))
                .unwrap()
        };
        for _ in 0..3 {
            let error = svc.ready().await.unwrap().call(upload(true)).await.unwrap_err();
            assert!(error.downcast_ref::<Open>().is_none(), "http2 {http2}: {error}");
        }
        let snapshot = &breakers.snapshot()[0];
        assert_eq!(snapshot.state, State::Closed, "http2 {http2}");
        assert_eq!(
            (snapshot.figures.calls, snapshot.figures.failures),
            (0, 0),
            "http2 {http2}: {snapshot:?}"
        );
        let ok = svc.ready().await.unwrap().call(upload(false)).await.unwrap();
        assert_eq!(ok.status(), 200);
        ok.into_body().collect().await.unwrap();
        assert_eq!(breakers.snapshot()[0].figures.calls, 1, "http2 {http2}");
    }
}
