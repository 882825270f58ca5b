//! The circuit breaker side by side with `tower-resilience-circuitbreaker`
//! (resilience4j's model, the nearest tower peer): the same calls through
//! each, in front of an in-process upstream that counts its calls. Prints
//! what each does in each case, and exits 1 if ours misses one (CI runs it).
//!
//! `cargo run --example breaker_side_by_side`
//!
//! Ours runs with its defaults; the peer trips at a 50 % failure rate over
//! its last 20 calls once it has 10, and is given the classifier its docs
//! show for HTTP (a 5xx is a failure), since its default counts only
//! errors. No case needs time to pass: each drives a breaker open with
//! failing calls and looks at what happens next.

#[path = "support/side_by_side.rs"]
mod side_by_side;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use side_by_side::Case;
use tower::{BoxError, Layer, ServiceExt};
use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, error::Open};
use tower_resilience_circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer as PeerLayer};

const OURS: &str = "tower-optimizer";
const PEER: &str = "tower-resilience-circuitbreaker";

/// A response body: whole, or one that fails after its first bytes.
enum TestBody {
    Whole(Option<Bytes>),
    FailsMidway(bool),
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(match &mut *self {
            TestBody::Whole(data) => data.take().map(|d| Ok(Frame::data(d))),
            TestBody::FailsMidway(sent) if !*sent => {
                *sent = true;
                Some(Ok(Frame::data(Bytes::from_static(b"partial"))))
            }
            TestBody::FailsMidway(_) => Some(Err("connection reset mid-body".into())),
        })
    }
}

type Answer = Response<TestBody>;

/// What the upstream answers for a request.
type Respond = Arc<dyn Fn(&Request<Full<Bytes>>) -> Answer + Send + Sync>;

type Boxed = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>,
    BoxError,
>;

/// A breaker under test: its service and its upstream's call count.
struct Subject {
    svc: Boxed,
    calls: Arc<AtomicU64>,
}

impl Subject {
    fn new(name: &str, respond: Respond) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let upstream = tower::service_fn(move |req: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let res = respond(&req);
            async move { Ok::<_, Infallible>(res) }
        });
        let svc = if name == OURS {
            let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
            boxed(layer.layer(upstream))
        } else {
            let layer = PeerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_size(20)
                .minimum_number_of_calls(10)
                .failure_classifier(
                    |result: &Result<Answer, Infallible>| matches!(result, Ok(res) if res.status().is_server_error()),
                )
                .build()
                .unwrap();
            boxed(layer.layer(upstream))
        };
        Subject { svc, calls }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// A GET of `uri`, its body read to the end.
    async fn get(&self, uri: &str) -> Result<StatusCode, BoxError> {
        let res = self
            .svc
            .clone()
            .oneshot(Request::get(uri).body(Full::default())?)
            .await?;
        let status = res.status();
        res.into_body().collect().await?;
        Ok(status)
    }

    /// `n` GETs of `uri`, whatever each gives.
    async fn drive(&self, uri: &str, n: usize) {
        for _ in 0..n {
            let _ = self.get(uri).await;
        }
    }
}

fn boxed<S, B>(svc: S) -> Boxed
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tower::util::BoxCloneSyncService::new(
        svc.map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// Answers with `status` (and `Retry-After`, if given), whole.
fn status(status: u16, retry_after: Option<&'static str>) -> Respond {
    Arc::new(move |_| {
        let mut res = Response::builder().status(status);
        if let Some(after) = retry_after {
            res = res.header("retry-after", after);
        }
        res.body(TestBody::Whole(Some(Bytes::from_static(b"body")))).unwrap()
    })
}

/// Whether `error` is either breaker's refusal.
fn refused(error: &BoxError) -> bool {
    Open::find(&**error).is_some()
        || error
            .downcast_ref::<CircuitBreakerError<Infallible>>()
            .is_some_and(CircuitBreakerError::is_circuit_open)
}

/// Enough failing calls to open either breaker.
const FAILURES: usize = 30;

/// The call after [`FAILURES`] to `http://a.test/`: refused, and how.
async fn after_failures(s: &Subject) -> Result<BoxError, String> {
    s.drive("http://a.test/", FAILURES).await;
    let before = s.calls();
    match s.get("http://a.test/").await {
        Err(error) if refused(&error) && s.calls() == before => Ok(error),
        Err(error) => Err(format!("an error, not a refusal: {error}")),
        Ok(status) => Err(format!("not refused: {status}")),
    }
}

const CASES: &[Case] = &[
    Case {
        refs: "",
        what: "503 answers open the circuit; the next call is refused without reaching the upstream",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, status(503, None));
                after_failures(&s).await.map(drop)
            })
        },
    },
    Case {
        refs: "",
        what: "an open circuit leaves the service ready (`poll_ready` never fails)",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, status(503, None));
                after_failures(&s).await?;
                let mut svc = s.svc.clone();
                svc.ready()
                    .await
                    .map(drop)
                    .map_err(|e| format!("poll_ready failed: {e}"))
            })
        },
    },
    Case {
        refs: "",
        what: "one failing host leaves another's calls through (a breaker per host)",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|req| {
                    let code = if req.uri().host() == Some("a.test") { 503 } else { 200 };
                    Response::builder().status(code).body(TestBody::Whole(None)).unwrap()
                });
                let s = Subject::new(name, respond);
                after_failures(&s).await?;
                match s.get("http://b.test/").await {
                    Ok(code) if code == StatusCode::OK => Ok(()),
                    Ok(code) => Err(format!("b.test answered {code}")),
                    Err(error) => Err(format!("b.test refused: {error}")),
                }
            })
        },
    },
    Case {
        refs: "",
        what: "the refusal says when calls will be let through again",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, status(503, None));
                let error = after_failures(&s).await?;
                match Open::find(&*error) {
                    Some(open) if open.retry_after() > Duration::ZERO => Ok(()),
                    _ => Err(format!("no time in the refusal: {error}")),
                }
            })
        },
    },
    Case {
        refs: "",
        what: "a 503's `Retry-After: 120` keeps the circuit open that long",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, status(503, Some("120")));
                let error = after_failures(&s).await?;
                match Open::find(&*error) {
                    Some(open) if open.retry_after() >= Duration::from_secs(100) => Ok(()),
                    Some(open) => Err(format!("open for {:?}", open.retry_after())),
                    None => Err(format!("no time in the refusal: {error}")),
                }
            })
        },
    },
    Case {
        refs: "",
        what: "a body that fails after a 200 head counts as a failure",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|_| Response::new(TestBody::FailsMidway(false)));
                let s = Subject::new(name, respond);
                after_failures(&s).await.map(drop)
            })
        },
    },
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    side_by_side::run(None, &[OURS, PEER], CASES).await;
}
