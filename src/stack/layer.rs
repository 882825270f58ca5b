//! [`OptimizerLayer`]: every configured layer, in the order DESIGN.md draws,
//! around any client service, behind one boxed service type.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::deadline::{Deadline, Side};
use super::gate::{Gate, GateState};
use super::grpc_refusals::GrpcRefusals;
use super::hit_first::HitFirst;
use super::optional::{BoxedFuture, Optional};
use crate::BoxError;
use crate::cache::CacheLayer;
use crate::circuit_breaker::{CircuitBreakerLayer, Fallback, RespondOpen, WithFallback};
use crate::invalidation::InvalidationLayer;
use crate::monitor::MetricsLayer;

/// The one response body type of the assembled stack.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The assembled client service.
pub type OptimizedService<B> = BoxCloneSyncService<Request<B>, Response<ResponseBody>, BoxError>;

/// Whether requests beyond the concurrency limit are refused (load
/// shedding) or wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overload {
    /// Wait for a slot (cache hits may wait too, since readiness is shared).
    #[default]
    Wait,
    /// Refuse at once with `tower::load_shed::error::Overloaded` (hits are
    /// still answered: the cache answers before the limit is consulted).
    Shed,
    /// Wait for a slot at most this long, then refuse with `Overloaded`:
    /// resilience4j's bulkhead `maxWaitDuration`, a short queue that rides
    /// out a burst without letting a slow upstream pile up waiters for
    /// good. Under the global limit, readiness is shared, so a cache hit
    /// waits at most this long too.
    WaitAtMost(Duration),
}

impl Overload {
    /// The longest a call waits for a slot before it is refused: `None`
    /// for as long as it takes.
    pub(crate) fn max_wait(self) -> Option<Duration> {
        match self {
            Overload::Wait => None,
            Overload::Shed => Some(Duration::ZERO),
            Overload::WaitAtMost(wait) => Some(wait),
        }
    }
}

/// What a caller of the stack gets for a request whose circuit is open and
/// that neither a stale entry nor the secondary upstream could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenOpen {
    /// The error [`circuit_breaker::error::Open`](crate::circuit_breaker::error::Open)
    /// (downcast it from the `BoxError`).
    #[default]
    Error,
    /// A `503 Service Unavailable` response with `Retry-After`, as
    /// [`RespondOpenLayer`](crate::circuit_breaker::RespondOpenLayer) makes
    /// it: for callers that pass responses on (a proxy, a gateway).
    Respond503,
}

pub(crate) struct Parts {
    pub(crate) gate: Arc<GateState>,
    pub(crate) metrics: Option<MetricsLayer>,
    pub(crate) cache: Option<CacheLayer>,
    pub(crate) invalidation: Option<InvalidationLayer>,
    pub(crate) concurrency_limit: Option<usize>,
    pub(crate) overload: Overload,
    pub(crate) per_host_limit: Option<(usize, Overload)>,
    pub(crate) breaker: Option<CircuitBreakerLayer>,
    pub(crate) retry: Option<crate::retry::RetryPolicy>,
    pub(crate) secondary: Option<(Scheme, Authority)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) when_open: WhenOpen,
}

/// Wraps a client service with the stack. Cheap to clone.
pub struct OptimizerLayer<B> {
    pub(crate) parts: Arc<Parts>,
    pub(crate) body: PhantomData<fn(B)>,
}

impl<B> OptimizerLayer<B> {
    /// The same stack (the same handles: cache, breakers, metrics, gate)
    /// for requests with bodies of type `C`.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn for_body<C>(&self) -> OptimizerLayer<C> {
        OptimizerLayer {
            parts: self.parts.clone(),
            body: PhantomData,
        }
    }
}

impl<B> Clone for OptimizerLayer<B> {
    fn clone(&self) -> Self {
        OptimizerLayer {
            parts: self.parts.clone(),
            body: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for OptimizerLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.parts;
        f.debug_struct("OptimizerLayer")
            .field("metrics", &p.metrics.is_some())
            .field("cache", &p.cache.is_some())
            .field("invalidation", &p.invalidation.is_some())
            .field("concurrency_limit", &p.concurrency_limit)
            .field("per_host_limit", &p.per_host_limit)
            .field("breaker", &p.breaker.is_some())
            .field("retry", &p.retry.is_some())
            .field("timeout", &p.timeout)
            .field("when_open", &p.when_open)
            .finish()
    }
}

/// `response` with its body boxed into the stack's one body type.
pub(super) fn boxed<R>(response: Response<R>) -> Response<ResponseBody>
where
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// `svc` boxed, with the open circuit's `503` outermost if asked for:
/// either way the one box is the same type.
fn outermost<S, B>(svc: S, when_open: WhenOpen) -> OptimizedService<B>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: 'static,
{
    match when_open {
        WhenOpen::Error => BoxCloneSyncService::new(svc),
        WhenOpen::Respond503 => BoxCloneSyncService::new(RespondOpen::new(svc)),
    }
}

/// Sends a request to a secondary upstream instead: same path and query,
/// other scheme and authority.
#[derive(Clone)]
struct Secondary<S> {
    inner: S,
    scheme: Scheme,
    authority: Authority,
}

impl<S, B> Service<Request<B>> for Secondary<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        self.inner.call(request)
    }
}

/// The secondary upstream (if any) as the breaker's fallback, except for
/// requests the cache can answer stale: those fail with `error::Open`, and
/// the cache outside serves them stale (stale first, then secondary, then
/// the error).
#[derive(Clone)]
struct Failover<S> {
    secondary: Option<WithFallback<Secondary<S>>>,
    cache: Option<crate::cache::Cache>,
}

impl<S, B> Fallback<Request<B>, S::Response> for Failover<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Future = <WithFallback<Secondary<S>> as Fallback<Request<B>, S::Response>>::Future;

    fn try_call(&mut self, request: Request<B>) -> Result<Self::Future, Request<B>> {
        let Some(secondary) = &mut self.secondary else {
            return Err(request);
        };
        if self.cache.as_ref().is_some_and(|c| c.can_serve_on_error(&request)) {
            return Err(request);
        }
        secondary.try_call(request)
    }
}

/// The stack's retries: the policy's, except that a failure the cache
/// will answer stale (`stale-if-error`) is left to it at once instead of
/// retried, as the breaker's failover leaves such a request to it rather
/// than sending it to the secondary upstream.
#[derive(Clone)]
struct StackRetry {
    policy: crate::retry::RetryPolicy,
    cache: Option<crate::cache::Cache>,
}

impl<B: 'static, R> tower::retry::Policy<Request<B>, Response<R>, BoxError> for StackRetry {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, request: &mut Request<B>, result: &mut Result<Response<R>, BoxError>) -> Option<Self::Future> {
        let (cache, request) = (&self.cache, &*request);
        let stale_ready = || cache.as_ref().is_some_and(|c| c.can_serve_on_error(request));
        self.policy.settle(request, result, |e| &**e, stale_ready)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.policy.copy(request)
    }
}

impl<S, B, R> Layer<S> for OptimizerLayer<B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Service = OptimizedService<B>;

    /// Innermost first: timeout, breaker (with the secondary upstream as
    /// fallback), concurrency limit and load shedding, the per-host limit, retries, invalidation, cache,
    /// the caller's deadline, metrics, the lifecycle gate, the gRPC status of
    /// a refused gRPC call ([`GrpcRefusals`](super::GrpcRefusals)), and
    /// (with [`WhenOpen::Respond503`]) the open circuit's `503` outermost. Each stage is present or
    /// skipped within one concrete type, boxed once here. With a cache, a
    /// stored response to give at once is answered at the edge (measured
    /// and counted in flight as the stages would), not passed through them.
    fn layer(&self, inner: S) -> Self::Service {
        let p = &self.parts;
        // The stack's limit, or a caller's longer one (see `deadline`);
        // always present, as it also sends each attempt of a gRPC call with
        // the time the call has left.
        let svc = Deadline::new(inner, p.timeout, Side::Host);
        let svc = Optional::new(p.breaker.clone(), svc, |breaker, s| {
            let failover = Failover {
                secondary: p.secondary.as_ref().map(|(scheme, authority)| {
                    WithFallback(Secondary {
                        inner: s.clone(),
                        scheme: scheme.clone(),
                        authority: authority.clone(),
                    })
                }),
                cache: p.cache.as_ref().map(|c| c.cache().clone()),
            };
            breaker.with_fallback_policy(failover).layer(s)
        });
        let svc = Optional::new(p.concurrency_limit, svc, |limit, s| {
            let limited = super::limit::ConcurrencyLimit::new(s, limit);
            Optional::new(p.overload.max_wait(), limited, |wait, s| {
                super::limit::Shed::new(s, wait)
            })
        });
        // Outside the global limit, so a request waiting for its host's
        // slot holds none of the global ones (see `host_limit`).
        let svc = Optional::new(p.per_host_limit, svc, |(limit, overload), s| {
            let hosts = Arc::new(super::host_limit::Hosts::new(limit));
            super::host_limit::HostLimit::new(s, hosts, overload)
        });
        // Outside the limits, so a request waiting out its backoff holds no
        // slot. Its future (a copy of the request and of the services
        // below) is boxed, so that a stack without retries does not carry
        // it inline in every future above.
        let svc = Optional::new(p.retry.as_ref(), svc, |policy, s| {
            let policy = StackRetry {
                policy: policy.fresh(),
                cache: p.cache.as_ref().map(|c| c.cache().clone()),
            };
            BoxedFuture(tower::retry::Retry::new(policy, s))
        });
        // The body from below is boxed here, once per upstream call: it
        // nests every stage's body, and inline it would be part of every
        // response above, which each layer moves, hits included.
        let svc = Optional::new(p.invalidation.as_ref(), svc, Layer::layer).map_response(boxed);
        // On a hit only the cache's own (small) future runs; the stack
        // below is boxed inside it on a miss, and here when there is no cache.
        let svc = match &p.cache {
            Some(cache) => Optional::On(cache.layer(svc)),
            None => Optional::Off(BoxedFuture(svc)),
        };
        // A caller's limit shorter than the stack's bounds the whole
        // request, waiting for a coalesced answer included; passing it
        // drops the call below, which the breaker counts as cancelled.
        let svc = Deadline::new(svc, p.timeout, Side::Caller);
        let svc = Optional::new(p.metrics.as_ref(), svc, Layer::layer);
        // A gRPC call the stack refused gets its gRPC status, which its
        // client can read (`DEADLINE_EXCEEDED`, `UNAVAILABLE`), where the
        // error would read as `UNKNOWN`; outside the metrics, which record
        // the refusal as such.
        let gate = GrpcRefusals::new(Gate::new(svc, p.gate.clone()));
        // A hit to give at once is answered here, measured and counted as
        // the stages below would (see `hit_first`).
        match &p.cache {
            Some(cache) => {
                let meter = p.metrics.as_ref().map(MetricsLayer::meter);
                let edge = HitFirst::new(gate, cache.cache().clone(), meter, p.gate.clone());
                outermost(edge, p.when_open)
            }
            None => outermost(gate, p.when_open),
        }
    }
}
