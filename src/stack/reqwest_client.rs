//! [`ReqwestService`]: a `reqwest::Client` as a tower `Service` over `http`
//! types, so the stack can wrap a reqwest client (feature `reqwest`).
//!
//! ```
//! use tower_optimizer::cache::Cache;
//! use tower_optimizer::stack::{OptimizerStack, ReqwestService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let reqwest = reqwest::Client::builder().http2_prior_knowledge().build()?;
//! let (client, optimizer) = OptimizerStack::builder()
//!     .cache(Cache::builder().build()?)
//!     .build_reqwest_client(reqwest)?;
//! assert!(optimizer.cache().is_some());
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// A reqwest client as `Service<http::Request<B>>`, answering
/// `http::Response<reqwest::Body>` (the body streams; nothing is buffered
/// here). Requests keep their method, headers, version and extensions.
/// Cheap to clone: a `reqwest::Client` is a handle to its pool.
#[derive(Debug, Clone)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }

    /// The wrapped client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

pin_project! {
    /// Response future of [`ReqwestService`].
    #[project = StateProj]
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = InnerProj]
    enum State {
        Sent { #[pin] pending: Pending },
        // The request could not become a reqwest request (say, a relative URI).
        Refused { error: Option<reqwest::Error> },
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<reqwest::Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            InnerProj::Sent { pending } => pending
                .poll(cx)
                .map(|result| result.map(Response::from).map_err(Into::into)),
            InnerProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .map_or_else(|| "reqwest ResponseFuture polled after completion".into(), Into::into))),
        }
    }
}

impl<B> Service<Request<B>> for ReqwestService
where
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // reqwest's client is always ready: its pool queues internally.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let state = match reqwest::Request::try_from(request.map(reqwest::Body::wrap)) {
            Ok(request) => State::Sent {
                pending: self.client.call(request),
            },
            Err(error) => State::Refused { error: Some(error) },
        };
        ResponseFuture { state }
    }
}
