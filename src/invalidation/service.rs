//! [`InvalidationService`]: invalidates on writes, labels safe responses.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HOST;
use http::{HeaderMap, Request, Response, Uri};
use tower_service::Service;

use super::future::{Ctx, ResponseFuture, SafeCtx, WriteCtx};
use super::layer::Config;
use crate::cache::write::{is_safe, split_origin};

/// Middleware built by [`InvalidationLayer`](super::InvalidationLayer).
#[derive(Clone, Debug)]
pub struct InvalidationService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> InvalidationService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        InvalidationService { inner, config }
    }

    inner_service_accessors!();
}

/// `scheme://authority` of a request for `uri` (`headers` name the host of
/// an origin-form one), as cache keys spell it.
pub(crate) fn origin_of(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    // The origin alone: the query is cut off, whatever keys keep of it.
    let query = crate::cache::QueryKey::as_sent();
    crate::cache::key::with_primary_key(uri, headers, &query, |key| {
        key.map(|key| split_origin(key).0.to_owned())
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InvalidationService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    // Looked at (as a `BoxError`) to tell a write refused before it left.
    S::Error: 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = self.config.clone();
        let ctx = if is_safe(request.method()) {
            let needs_parts =
                config.tag_fn.is_some() || config.namespace_fn.is_some() || config.dependency_fn.is_some();
            let parts = needs_parts.then(|| Box::new(crate::util::request_head(&request)));
            // The origin is spelled out only if the response names groups
            // (rare); until then the URI and `Host` are cheap to keep.
            Ctx::Safe(SafeCtx {
                config,
                uri: request.uri().clone(),
                host: request.headers().get(HOST).cloned(),
                parts,
            })
        } else {
            Ctx::Write(WriteCtx {
                config,
                origin: origin_of(request.uri(), request.headers()),
                method: request.method().clone(),
                uri: request.uri().clone(),
            })
        };
        ResponseFuture::new(self.inner.call(request), ctx)
    }
}
