//! The breaker in front of gRPC calls, over real HTTP/2: a hyper server on
//! 127.0.0.1 answering as a gRPC server does (`200`, `application/grpc`,
//! a length-prefixed message, then `grpc-status` in the trailers; or a
//! Trailers-Only head), `GrpcClassifier` judging each call by its
//! `grpc-status`, the metrics labelling it, and tonic's own client over the
//! whole stack.
#![cfg(feature = "circuit-breaker")]

#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::circuit_breaker::{
    BreakerBody, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakers, GrpcClassifier, State, error::Open,
};

use server::{Protocol, serve};

type Breaker = BoxCloneService<Request<Full<Bytes>>, Response<BreakerBody<Incoming>>, BoxError>;

/// A gRPC-shaped server: the request's `x-code` header is the
/// `grpc-status` it answers with, in the trailers after one message, or
/// in the head alone with `x-trailers-only`; with `x-hold` it never
/// answers.
async fn grpc_server() -> SocketAddr {
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        if req.headers().contains_key("x-hold") {
            std::future::pending::<()>().await;
        }
        let code = req
            .headers()
            .get("x-code")
            .cloned()
            .unwrap_or_else(|| "0".parse().unwrap());
        let head = Response::builder().header("content-type", "application/grpc");
        let response = if req.headers().contains_key("x-trailers-only") {
            let body = Full::new(Bytes::new()).boxed();
            head.header("grpc-status", code).body(body).unwrap()
        } else {
            // One message: a zero compression flag, its length, its bytes.
            let message = Bytes::from_static(b"\0\0\0\0\x02hi");
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", code);
            let body = Full::new(message).with_trailers(async move { Some(Ok(trailers)) });
            head.body(body.boxed()).unwrap()
        };
        Ok::<Response<BoxBody<Bytes, Infallible>>, Infallible>(response)
    });
    serve(Protocol::H2c, service).await
}

fn breaker(config: CircuitBreakerConfig) -> (Breaker, CircuitBreakers) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let layer = CircuitBreakerLayer::new(config);
    let breakers = layer.breakers();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(client.map_err(BoxError::from));
    (BoxCloneService::new(service), breakers)
}

/// Three failures in a row open it.
fn config(grpc: bool) -> CircuitBreakerConfig {
    let builder = CircuitBreakerConfig::builder().consecutive_failures(Some(3));
    let builder = if grpc {
        builder.classifier(GrpcClassifier::new())
    } else {
        builder
    };
    builder.build().unwrap()
}

fn call(addr: SocketAddr, code: &'static str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/items.Items/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-code", code)
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

/// Sends `request` and reads its body to the end, as a gRPC client does;
/// the trailers' `grpc-status`.
async fn grpc_status(client: &mut Breaker, request: Request<Full<Bytes>>) -> Result<String, BoxError> {
    let response = client.ready().await?.call(request).await?;
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().expect("trailers");
    Ok(trailers["grpc-status"].to_str().unwrap().to_owned())
}

#[tokio::test(start_paused = true)]
async fn unavailable_in_the_trailers_opens_the_circuit() {
    let addr = grpc_server().await;
    let (mut client, breakers) = breaker(config(true));
    let key = format!("http://{addr}");
    for _ in 0..3 {
        assert_eq!(grpc_status(&mut client, call(addr, "14")).await.unwrap(), "14");
    }
    assert_eq!(breakers.state(&key), Some(State::Open));
    let refused = grpc_status(&mut client, call(addr, "0")).await.unwrap_err();
    assert!(refused.downcast_ref::<Open>().is_some(), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn answers_the_caller_got_wrong_are_successes_and_cancelled_counts_as_nothing() {
    let addr = grpc_server().await;
    let (mut client, breakers) = breaker(config(true));
    // NOT_FOUND, INVALID_ARGUMENT, OK: the server did its job.
    for code in ["5", "3", "0", "5", "3"] {
        assert_eq!(grpc_status(&mut client, call(addr, code)).await.unwrap(), code);
    }
    // Two failures, a cancelled call, a success, a failure: not three in
    // a row, and the cancelled call is in no figure.
    for code in ["13", "14", "1", "0", "4"] {
        grpc_status(&mut client, call(addr, code)).await.unwrap();
    }
    let snapshot = &breakers.snapshot()[0];
    assert_eq!(snapshot.state, State::Closed, "{snapshot:?}");
    assert_eq!((snapshot.figures.calls, snapshot.figures.failures), (9, 3));
    // Nor does a cancelled call break a run of failures: the third opens.
    for code in ["14", "1", "8"] {
        grpc_status(&mut client, call(addr, code)).await.unwrap();
    }
    assert_eq!(breakers.snapshot()[0].state, State::Open, "{:?}", breakers.snapshot());
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_answer_is_judged_by_its_head() {
    let addr = grpc_server().await;
    let (mut client, breakers) = breaker(config(true));
    for _ in 0..3 {
        let mut request = call(addr, "14");
        request.headers_mut().insert("x-trailers-only", "1".parse().unwrap());
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "14");
        // Dropped unread: the head alone decided.
        drop(response);
    }
    assert_eq!(breakers.snapshot()[0].state, State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_http_classifier_sees_only_successes() {
    let addr = grpc_server().await;
    let (mut client, breakers) = breaker(config(false));
    for _ in 0..5 {
        grpc_status(&mut client, call(addr, "14")).await.unwrap();
    }
    let snapshot = &breakers.snapshot()[0];
    assert_eq!((snapshot.state, snapshot.figures.failures), (State::Closed, 0));
}

/// tower-http's gRPC classifier judges calls as the crate's own does:
/// by the trailers after a message, by the head of a Trailers-Only answer.
#[cfg(feature = "tower-http")]
#[tokio::test(start_paused = true)]
async fn tower_http_grpc_classifier_judges_trailers_and_heads() {
    use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};
    use tower_optimizer::circuit_breaker::TowerHttpClassifier;

    let addr = grpc_server().await;
    let config = || {
        let rule = GrpcErrorsAsFailures::new().with_success(GrpcCode::NotFound);
        CircuitBreakerConfig::builder()
            .consecutive_failures(Some(3))
            .classifier(TowerHttpClassifier::new(rule))
            .build()
            .unwrap()
    };
    let (mut client, breakers) = breaker(config());
    // OK and (by `with_success`) NOT_FOUND succeed; UNAVAILABLE fails.
    for code in ["0", "5", "14", "5", "14", "14"] {
        assert_eq!(grpc_status(&mut client, call(addr, code)).await.unwrap(), code);
    }
    let snapshot = &breakers.snapshot()[0];
    assert_eq!(
        (snapshot.figures.calls, snapshot.figures.failures),
        (6, 3),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.state, State::Closed, "not three in a row");
    grpc_status(&mut client, call(addr, "14")).await.unwrap();
    assert_eq!(breakers.snapshot()[0].state, State::Open);

    let (mut client, breakers) = breaker(config());
    for _ in 0..3 {
        let mut request = call(addr, "14");
        request.headers_mut().insert("x-trailers-only", "1".parse().unwrap());
        drop(client.ready().await.unwrap().call(request).await.unwrap());
    }
    assert_eq!(breakers.snapshot()[0].state, State::Open);
}

#[cfg(feature = "stack")]
#[tokio::test(start_paused = true)]
async fn the_stack_takes_the_grpc_classifier_from_toml() {
    use tower_optimizer::stack::OptimizerConfig;

    let addr = grpc_server().await;
    let config = "[circuit_breaker]\nclassifier = \"grpc\"\nconsecutive_failures = 3\n";
    let (client, optimizer) = OptimizerConfig::from_toml(config)
        .unwrap()
        .into_builder()
        .unwrap()
        .build_http2_client()
        .unwrap();
    for _ in 0..3 {
        let response = client.clone().oneshot(call(addr, "14")).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    }
    // The open circuit refuses the call as gRPC says a client-side
    // refusal reads: `UNAVAILABLE` in a Trailers-Only answer, with the
    // wait until the circuit lets calls through as the retry pushback.
    let refused = client.clone().oneshot(call(addr, "0")).await.unwrap();
    let headers = refused.headers();
    assert_eq!(headers["grpc-status"], "14", "{headers:?}");
    assert!(
        headers["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("circuit open for http://")
    );
    let pushback: u64 = headers["grpc-retry-pushback-ms"].to_str().unwrap().parse().unwrap();
    assert!((5_000..=30_000).contains(&pushback), "the open period: {pushback} ms");
    assert_eq!(optimizer.stats().breakers[0].state, State::Open);
}

/// The metrics layer labels a gRPC call with its status, in the trailers
/// or a Trailers-Only head, and counts a code other than `OK` as an error.
#[cfg(feature = "monitor")]
#[tokio::test]
async fn metrics_label_the_grpc_status_and_count_failures() {
    use tower_optimizer::monitor::{MetricsLayer, Stats};

    let addr = grpc_server().await;
    // The test's runtime polls on this thread: the metrics land here.
    let recorder = recorder::Recorder::default();
    let counts = recorder.counts.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let stats = Stats::default();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut client = ServiceBuilder::new()
        .layer(MetricsLayer::new().stats(stats.clone()))
        .service(client);
    for (code, trailers_only) in [("0", false), ("14", false), ("5", true)] {
        let mut request = call(addr, code);
        if trailers_only {
            request.headers_mut().insert("x-trailers-only", "1".parse().unwrap());
        }
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    let overall = stats.snapshot(tokio::time::Instant::now()).overall;
    assert_eq!((overall.requests, overall.errors), (3, 2), "{overall:?}");
    let durations: Vec<String> = counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, ..)| name == "http.client.request.duration")
        .map(|(_, labels, _)| labels.clone())
        .collect();
    assert_eq!(durations.len(), 3, "{durations:#?}");
    let with = |part: &str| durations.iter().filter(|l| l.contains(part)).count();
    assert_eq!(with("rpc.grpc.status_code=0"), 1, "{durations:#?}");
    assert_eq!(with("rpc.grpc.status_code=14"), 1, "{durations:#?}");
    assert_eq!(with("rpc.grpc.status_code=5"), 1, "{durations:#?}");
    assert_eq!(with("error.type=UNAVAILABLE"), 1, "{durations:#?}");
    assert_eq!(with("error.type=NOT_FOUND"), 1, "{durations:#?}");
    assert_eq!(with("error.type"), 2, "OK is no error: {durations:#?}");
}

/// tonic's client (its `Grpc` dispatcher, without its transport) over the
/// stack's layer.
#[cfg(feature = "stack")]
mod tonic_client {
    use super::*;

    /// tonic's message codec for raw bytes: the tests need no protobuf.
    #[derive(Debug, Default, Clone, Copy)]
    struct RawCodec;

    impl tonic::codec::Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = RawCodec;
        type Decoder = RawCodec;

        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }

        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl tonic::codec::Encoder for RawCodec {
        type Item = Bytes;
        type Error = tonic::Status;

        fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put(dst, item);
            Ok(())
        }
    }

    impl tonic::codec::Decoder for RawCodec {
        type Item = Bytes;
        type Error = tonic::Status;

        fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
            use bytes::Buf;
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }

    /// tonic's client over the stack `builder` makes, around a hyper-util
    /// h2c client to a fresh [`grpc_server`]; and the stack's handle.
    async fn tonic_over(
        builder: tower_optimizer::stack::OptimizerStackBuilder,
    ) -> (
        tonic::client::Grpc<tower_optimizer::stack::OptimizedService<tonic::body::Body>>,
        tower_optimizer::Optimizer,
    ) {
        let addr = grpc_server().await;
        let (layer, optimizer) = builder.build::<tonic::body::Body>().unwrap();
        let channel: Client<HttpConnector, tonic::body::Body> =
            Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        let origin: http::Uri = format!("http://{addr}").parse().unwrap();
        let grpc = tonic::client::Grpc::with_origin(tower::Layer::layer(&layer, channel), origin);
        (grpc, optimizer)
    }

    /// tonic's own client through the whole stack: it reads the status the
    /// breaker counted, and an open circuit reaches it as an error it can
    /// tell apart.
    #[tokio::test(start_paused = true)]
    async fn a_tonic_client_through_the_stack() {
        use tower_optimizer::stack::{MonitorSettings, OptimizerStack};

        let builder = OptimizerStack::builder()
            .circuit_breaker(config(true))
            .monitor(MonitorSettings::default());
        let (mut grpc, optimizer) = tonic_over(builder).await;
        let path = http::uri::PathAndQuery::from_static("/items.Items/Get");
        let mut call = async |code: &'static str| {
            let mut request = tonic::Request::new(Bytes::from_static(b"id"));
            request.metadata_mut().insert("x-code", code.parse().unwrap());
            grpc.ready().await.unwrap();
            grpc.unary::<Bytes, Bytes, _>(request, path.clone(), RawCodec).await
        };

        let answer = call("0").await.unwrap();
        assert_eq!(answer.into_inner(), "hi");
        for _ in 0..3 {
            let status = call("14").await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
        assert_eq!(optimizer.stats().breakers[0].state, State::Open);
        // tonic reads the refusal as the code a gRPC client-side refusal
        // has, not as `UNKNOWN`.
        let refused = call("0").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(refused.message().starts_with("circuit open for http://"), "{refused:?}");
        assert!(refused.metadata().contains_key("grpc-retry-pushback-ms"), "{refused:?}");
        let requests = optimizer.stats().requests.unwrap().overall;
        assert_eq!((requests.requests, requests.errors), (5, 4), "{requests:?}");
    }

    /// A tonic deadline (`grpc-timeout`) through the stack is the caller's
    /// limit: the call ends when it passes, though the server never
    /// answers, with `DEADLINE_EXCEEDED`, and the breaker counts nothing
    /// against the host.
    #[tokio::test(start_paused = true)]
    async fn a_tonic_deadline_is_the_callers_limit() {
        use std::time::Duration;
        use tower_optimizer::stack::OptimizerStack;

        let builder = OptimizerStack::builder()
            .circuit_breaker(config(true))
            .timeout(Duration::from_secs(30));
        let (mut grpc, optimizer) = tonic_over(builder).await;
        let path = http::uri::PathAndQuery::from_static("/items.Items/Get");
        for _ in 0..3 {
            let mut request = tonic::Request::new(Bytes::from_static(b"id"));
            request.metadata_mut().insert("x-hold", "1".parse().unwrap());
            request.set_timeout(Duration::from_millis(200));
            let start = tokio::time::Instant::now();
            grpc.ready().await.unwrap();
            let status = grpc
                .unary::<Bytes, Bytes, _>(request, path.clone(), RawCodec)
                .await
                .unwrap_err();
            assert_eq!(start.elapsed(), Duration::from_millis(200), "{status:?}");
            // As gRPC's own clients report a passed deadline.
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        }
        let breaker = &optimizer.stats().breakers[0];
        assert_eq!(
            (breaker.figures.calls, breaker.state),
            (0, State::Closed),
            "{breaker:?}"
        );
    }

    /// A host that refuses connections: tonic reads hyper-util's connect
    /// error as `UNKNOWN`; through the stack it is `UNAVAILABLE`, as gRPC
    /// says a connection failure reads, with the reason in the message.
    #[tokio::test]
    async fn a_host_that_cannot_be_reached_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (layer, _optimizer) = tower_optimizer::stack::OptimizerStack::builder()
            .build::<tonic::body::Body>()
            .unwrap();
        let channel: Client<HttpConnector, tonic::body::Body> =
            Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        let origin: http::Uri = format!("http://{addr}").parse().unwrap();
        let mut grpc = tonic::client::Grpc::with_origin(tower::Layer::layer(&layer, channel), origin);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/items.Items/Get");
        let request = tonic::Request::new(Bytes::from_static(b"id"));
        let status = grpc
            .unary::<Bytes, Bytes, _>(request, path, RawCodec)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("Connection refused"), "{status:?}");
    }
}
