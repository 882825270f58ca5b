//! The stack's limits with a bounded wait (`Overload::WaitAtMost`), on the
//! paused clock with an in-process upstream (no sockets, so its times are
//! exact): a call waits for a slot at most so long, then is refused with
//! tower's `Overloaded`; a slot freed within the wait is taken.
#![cfg(feature = "stack")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::load_shed::error::Overloaded;
use tower::{Layer, ServiceExt};
use tower_optimizer::stack::{OptimizerStack, OptimizerStackBuilder, Overload};

const UPSTREAM: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_millis(100);

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://api.test{path}"))
        .body(Full::default())
        .unwrap()
}

/// Each limit in turn, one slot, waiting at most `MAX_WAIT` for it.
fn limits() -> [(&'static str, OptimizerStackBuilder); 2] {
    let wait = Overload::WaitAtMost(MAX_WAIT);
    [
        ("global", OptimizerStack::builder().concurrency_limit(1, wait)),
        ("per host", OptimizerStack::builder().per_host_limit(1, wait)),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_slot_at_most_max_wait() {
    for (limit, builder) in limits() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(UPSTREAM).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow"))))
            }
        });
        let (layer, _optimizer) = builder.build::<Full<Bytes>>().unwrap();
        let client = layer.layer(upstream);
        let t0 = Instant::now();
        // The one slot, taken for the upstream's second, body read.
        let first = tokio::spawn(client.clone().oneshot(get("/a")).then_read());
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{limit}");

        let refused = client.clone().oneshot(get("/a")).await.unwrap_err();
        assert!(refused.is::<Overloaded>(), "{limit}: {refused}");
        assert_eq!(t0.elapsed(), MAX_WAIT, "{limit}: refused when the wait ran out");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{limit}: the refused call never went upstream"
        );

        // 50 ms before the slot frees, a call waits for it and is served.
        tokio::time::sleep_until(t0 + UPSTREAM - MAX_WAIT / 2).await;
        let waited = Instant::now();
        let body = client.clone().oneshot(get("/a")).then_read().await.unwrap();
        assert_eq!(body, "slow", "{limit}");
        assert_eq!(
            waited.elapsed(),
            MAX_WAIT / 2 + UPSTREAM,
            "{limit}: waited 50 ms, then its own call"
        );
        assert_eq!(first.await.unwrap().unwrap(), "slow", "{limit}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{limit}");
    }
}

/// The per-host limit's wait is per host: a full host's waiters are
/// refused while another host is answered at once.
#[tokio::test(start_paused = true)]
async fn a_full_host_does_not_hold_up_another() {
    let upstream = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        tokio::time::sleep(UPSTREAM).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow"))))
    });
    let (layer, _optimizer) = OptimizerStack::builder()
        .per_host_limit(1, Overload::WaitAtMost(MAX_WAIT))
        .build::<Full<Bytes>>()
        .unwrap();
    let client = layer.layer(upstream);
    let t0 = Instant::now();
    let busy = tokio::spawn(client.clone().oneshot(get("/a")).then_read());
    tokio::task::yield_now().await;
    let other = Request::get("http://other.test/").body(Full::default()).unwrap();
    let (refused, answered) = tokio::join!(
        client.clone().oneshot(get("/a")),
        client.clone().oneshot(other).then_read()
    );
    assert!(refused.unwrap_err().is::<Overloaded>());
    assert_eq!(answered.unwrap(), "slow");
    assert_eq!(t0.elapsed(), UPSTREAM, "the other host waited for nothing");
    assert_eq!(busy.await.unwrap().unwrap(), "slow");
}

/// A gRPC call's deadline reaches the server as the time the call has
/// left when it is sent: after 150 ms waiting for its host's slot, a call
/// asking for a second is sent with 850 ms, not with the second it asked
/// for. (A wait for a global slot happens at readiness, before the call
/// and its deadline are known.)
#[tokio::test(start_paused = true)]
async fn a_grpc_call_is_sent_with_the_time_it_has_left() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_owned());
        log.lock().unwrap().push(timeout);
        async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    });
    let (layer, _optimizer) = OptimizerStack::builder()
        .per_host_limit(1, Overload::Wait)
        .build::<Full<Bytes>>()
        .unwrap();
    let client = layer.layer(upstream);
    let call = || {
        Request::post("http://api.test/items.Items/Get")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "1S")
            .body(Full::default())
            .unwrap()
    };
    let first = tokio::spawn(client.clone().oneshot(call()).then_read());
    tokio::task::yield_now().await;
    let second = client.clone().oneshot(call()).then_read().await.unwrap();
    assert_eq!(second, "done");
    first.await.unwrap().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [Some("1000m".to_owned()), Some("850m".to_owned())],
        "each as it was sent"
    );
}

/// Reads a response's body to the end (giving its slot back).
trait ThenRead {
    async fn then_read(self) -> Result<Bytes, tower_optimizer::BoxError>;
}

impl<F, B> ThenRead for F
where
    F: Future<Output = Result<Response<B>, tower_optimizer::BoxError>> + Send,
    B: http_body::Body<Data = Bytes, Error = tower_optimizer::BoxError> + Send,
{
    async fn then_read(self) -> Result<Bytes, tower_optimizer::BoxError> {
        Ok(self.await?.into_body().collect().await?.to_bytes())
    }
}
