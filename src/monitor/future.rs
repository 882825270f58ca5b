//! Response future of [`MetricsService`](super::MetricsService).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_optimizer::monitor::{MetricsLayer, Stats, future::ResponseFuture};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let stats = Stats::default();
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hi"))))
//! });
//! let mut svc = MetricsLayer::new().stats(stats.clone()).layer(upstream);
//! let future: ResponseFuture<_> = svc.ready().await.unwrap().call(http::Request::get("http://api.example/").body(()).unwrap());
//! let response = future.await.unwrap();
//! // Measured when its body ends, not at its head.
//! assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hi");
//! assert_eq!(stats.snapshot(tokio::time::Instant::now()).overall.requests, 1);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::MetricsBody;
use super::handles::{Endpoint, ErrorType, Outcome, VERSION_1_1};
use super::layer::BodySizes;
use crate::BoxError;

/// What a request carries until it is measured. Kept small: it moves with
/// the response through every layer outside this one.
#[derive(Debug)]
pub(crate) struct Guard {
    endpoint: Arc<Endpoint>,
    template: Option<Arc<str>>,
    start: Instant,
    outcome: Outcome,
    done: bool,
}

impl Guard {
    pub(crate) fn new(endpoint: Arc<Endpoint>, template: Option<Arc<str>>, start: Instant) -> Self {
        Guard {
            endpoint,
            template,
            start,
            outcome: Outcome {
                version: VERSION_1_1,
                ..Outcome::default()
            },
            done: false,
        }
    }

    /// `response` measured until its body ends.
    #[inline]
    pub(crate) fn respond<B: http_body::Body>(self, response: Response<B>) -> Response<MetricsBody<B>> {
        // The extension is the cheap read; the header is there when a
        // layer between rebuilt the response without it.
        #[cfg(feature = "cache")]
        let cache = crate::cache::CacheStatus::of(response.extensions(), response.headers()).map(|s| s.outcome());
        #[cfg(not(feature = "cache"))]
        let cache = None;
        self.respond_as(response, cache)
    }

    /// `response` measured until its body ends, its cache outcome known.
    #[inline]
    pub(crate) fn respond_as<B: http_body::Body>(
        mut self,
        response: Response<B>,
        cache: Option<CacheOutcome>,
    ) -> Response<MetricsBody<B>> {
        self.outcome.status = response.status().as_u16();
        // Index of the version in `handles::VERSIONS`, which lists them
        // in `util::HTTP_VERSIONS`' order.
        self.outcome.version = crate::util::version_code(response.version());
        // A gRPC answer with no message has its status in its head
        // (Trailers-Only) and a body already at its end; any other body may
        // bring trailers, which the body reads, and an ordinary answer costs
        // no header lookup here.
        if response.body().is_end_stream() {
            self.outcome.note_grpc(response.headers());
        }
        self.outcome.cache = cache_code(cache);
        response.map(|body| MetricsBody::new(body, self))
    }

    /// Notes a gRPC status in the response's trailers.
    pub(crate) fn note_trailers(&mut self, trailers: &http::HeaderMap) {
        self.outcome.note_grpc(trailers);
    }

    /// Records the request as finished now, with `body_bytes` read.
    pub(crate) fn finish(&mut self, body_bytes: u64, body_failed: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let mut outcome = self.outcome;
        if body_failed {
            outcome.error = ErrorType::Body;
        } else if outcome.error == ErrorType::None && outcome.status >= 400 {
            outcome.error = ErrorType::Status;
        }
        let template = self.template.as_deref();
        self.endpoint.record_duration(outcome, template, elapsed.as_secs_f64());
        if self.endpoint.body_sizes == BodySizes::Record && outcome.status != 0 {
            self.endpoint.record_body_size(outcome, template, body_bytes as f64);
        }
        if let Some(stats) = &self.endpoint.stats {
            let failed = outcome.error != ErrorType::None;
            stats.record(elapsed, failed, now);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A cancelled request is not measured, but it is no longer active.
        self.endpoint.gauge.decrement(1.0);
    }
}

/// The cache's outcome, where the crate has a cache.
#[cfg(feature = "cache")]
pub(crate) type CacheOutcome = crate::cache::Outcome;
/// The cache's outcome, where the crate has a cache.
#[cfg(not(feature = "cache"))]
pub(crate) type CacheOutcome = std::convert::Infallible;

/// Index of `outcome` in `CACHE_STATUSES` (0: no cache answered).
fn cache_code(outcome: Option<CacheOutcome>) -> u8 {
    #[cfg(feature = "cache")]
    {
        use crate::cache::Outcome;
        match outcome {
            None => 0,
            Some(Outcome::Hit) => 1,
            Some(Outcome::StaleHit) => 2,
            Some(Outcome::Revalidated) => 3,
            Some(Outcome::Miss) => 4,
            Some(Outcome::Bypass) => 5,
        }
    }
    #[cfg(not(feature = "cache"))]
    match outcome {
        None => 0,
        Some(never) => match never {},
    }
}

/// `error.type` for a failed call, from a fixed set (bounded labels), and
/// whether the breaker refused it.
fn error_type(error: &(dyn std::error::Error + 'static)) -> (ErrorType, bool) {
    #[cfg(feature = "circuit-breaker")]
    if crate::circuit_breaker::error::Open::find(error).is_some() {
        return (ErrorType::CircuitOpen, true);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        #[cfg(feature = "stack")]
        if e.is::<tower::load_shed::error::Overloaded>() {
            return (ErrorType::Overloaded, false);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let kind = match io.kind() {
                std::io::ErrorKind::TimedOut => ErrorType::Timeout,
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset => ErrorType::ConnectionReset,
                _ => ErrorType::Io,
            };
            return (kind, false);
        }
        if e.to_string().contains("timed out") {
            return (ErrorType::Timeout, false);
        }
        source = e.source();
    }
    (ErrorType::Other, false)
}

pin_project! {
    /// Response future of [`MetricsService`](super::MetricsService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        guard: Option<Guard>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, guard: Guard) -> Self {
        ResponseFuture {
            future,
            guard: Some(guard),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body,
{
    type Output = Result<Response<MetricsBody<B>>, BoxError>;

    // Inlined into its caller's poll (with the call and the body's
    // poll): the response moves once less on its way out; 115 fewer
    // instructions a call by callgrind.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let mut guard = this
            .guard
            .take()
            .expect("metrics ResponseFuture polled after completion");
        match result {
            Ok(response) => Poll::Ready(Ok(guard.respond(response))),
            Err(error) => {
                let error: BoxError = error.into();
                let (kind, rejected) = error_type(&*error);
                guard.outcome.error = kind;
                guard.outcome.rejected = rejected;
                guard.finish(0, false);
                Poll::Ready(Err(error))
            }
        }
    }
}

#[cfg(all(test, feature = "circuit-breaker"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::circuit_breaker::error::Open;
    use crate::util::Wrapped;

    #[test]
    fn a_refusal_is_circuit_open_wrapped_or_not() {
        let open = || Box::new(Open::new("http://a.test".into(), Duration::from_secs(1)));
        assert_eq!(error_type(&*open()), (ErrorType::CircuitOpen, true));
        assert_eq!(error_type(&Wrapped(open())), (ErrorType::CircuitOpen, true));
        let other = Wrapped("reset".into());
        assert_eq!(error_type(&other), (ErrorType::Other, false));
    }

    #[cfg(feature = "stack")]
    #[test]
    fn a_shed_request_is_overloaded_wrapped_or_not() {
        let shed = || Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(error_type(&*shed()), (ErrorType::Overloaded, false));
        assert_eq!(error_type(&Wrapped(shed())), (ErrorType::Overloaded, false));
    }
}
