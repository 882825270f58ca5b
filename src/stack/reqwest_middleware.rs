//! [`OptimizerMiddleware`]: the stack as a `reqwest_middleware::Middleware`
//! (feature `reqwest-middleware`), for code that sends through a
//! `reqwest_middleware::ClientWithMiddleware` and keeps reqwest's API.
//!
//! ```
//! use tower_optimizer::cache::Cache;
//! use tower_optimizer::stack::OptimizerStack;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_optimizer::BoxError> {
//! let reqwest = reqwest::Client::new();
//! let (middleware, optimizer) = OptimizerStack::builder()
//!     .cache(Cache::builder().build()?)
//!     .build_reqwest_middleware(reqwest.clone())?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest).with(middleware).build();
//! assert!(optimizer.cache().is_some());
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use reqwest::{ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
use tokio::sync::{mpsc, oneshot};
use tower::ServiceExt;
use tower_service::Service;

use super::deadline::RequestTimeout;
use super::gate::ShuttingDown;
use super::layer::{OptimizedService, OptimizerLayer, ResponseBody};
use super::reqwest_client::{ReqwestService, ResponseFuture as ReqwestFuture};
use crate::BoxError;
use crate::circuit_breaker::error::Open;

/// The stack as a reqwest middleware, made by
/// [`build_reqwest_middleware`](super::OptimizerStackBuilder::build_reqwest_middleware).
/// Cheap to clone.
///
/// The stack runs inside the middleware chain: a hit is answered there, and
/// a miss continues down the chain (`Next`), so middleware added after this
/// one (retries, tracing of upstream calls) runs for the requests that
/// reach the network only. Requests the cache makes on its own after the
/// caller has its answer (a `stale-while-revalidate` refresh) and warm-up
/// requests have no chain to go down: they go straight to the
/// `reqwest::Client` given to
/// [`build_reqwest_middleware`](super::OptimizerStackBuilder::build_reqwest_middleware).
///
/// Per-request settings set with `RequestBuilder::with_extension` (such as
/// a [`RequestCacheMode`](crate::cache::RequestCacheMode)) reach the layers.
/// The answer is a `reqwest::Response` whose extensions hold the
/// [`CacheStatus`](crate::cache::CacheStatus); its `url()` is the final URL
/// of an upstream answer and the request's URL for an answer from the
/// cache. Errors keep their kind: a reqwest error from below comes back as
/// `Error::Reqwest`, and the stack's own as `Error::Middleware`, whose
/// `downcast_ref` finds them: [`error::Open`](crate::circuit_breaker::error::Open),
/// [`ShuttingDown`](super::ShuttingDown), and tower's `Elapsed` (the
/// stack's timeout) and `Overloaded` (load shedding). A request's own
/// timeout (`RequestBuilder::timeout`) is kept by the stack as a
/// [`RequestTimeout`](super::RequestTimeout): a short one bounds the
/// whole call, a wait for a coalesced answer included, and is not a
/// failure for the breaker.
#[derive(Clone)]
pub struct OptimizerMiddleware {
    service: OptimizedService<reqwest::Body>,
}

impl std::fmt::Debug for OptimizerMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerMiddleware").finish_non_exhaustive()
    }
}

impl OptimizerMiddleware {
    /// The stack of `layer` around the chain below it, with `client` for
    /// the requests made outside any call.
    pub(crate) fn new(layer: &OptimizerLayer<reqwest::Body>, client: reqwest::Client) -> Self {
        let service = tower::Layer::layer(layer, ChainService::new(client));
        OptimizerMiddleware { service }
    }

    /// The chain's end for warm-up: no call to go down, the client itself.
    pub(crate) fn warm_up_service(
        layer: &OptimizerLayer<reqwest::Body>,
        client: reqwest::Client,
    ) -> OptimizedService<http_body_util::Full<Bytes>> {
        let inner = ChainService::new(client)
            .map_request(|request: Request<http_body_util::Full<Bytes>>| request.map(reqwest::Body::wrap));
        tower::Layer::layer(&layer.for_body(), inner)
    }

    /// Runs one request through the stack, serving its upstream calls with
    /// `next` while the stack's future is polled, so the stack's timers
    /// (its timeout, the lock timeout) keep running during them.
    async fn run(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = request.url().clone();
        // reqwest's per-request timeout (`RequestBuilder::timeout`) is the
        // caller's limit: the stack keeps it, as a `RequestTimeout`.
        let asked = request.timeout().copied();
        let mut request = Request::<reqwest::Body>::try_from(request)?;
        request.extensions_mut().extend(extensions.clone());
        if let Some(limit) = asked {
            request.extensions_mut().insert(RequestTimeout(limit));
        }
        let (sender, mut receiver) = mpsc::unbounded_channel();
        request.extensions_mut().insert(Chain(sender));
        let mut call = std::pin::pin!(self.service.clone().oneshot(request));
        let mut upstream: Option<Pin<Box<dyn Future<Output = Extensions> + Send + '_>>> = None;
        let result = poll_fn(|cx| {
            loop {
                if let Poll::Ready(result) = call.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                if let Some(pending) = upstream.as_mut() {
                    let Poll::Ready(changed) = pending.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    // What the middleware below changed, the caller sees.
                    *extensions = changed;
                    upstream = None;
                    continue;
                }
                match receiver.poll_recv(cx) {
                    Poll::Ready(Some((request, reply))) => {
                        upstream = Some(Box::pin(down_the_chain(
                            next.clone(),
                            request,
                            extensions.clone(),
                            reply,
                        )));
                    }
                    // No sender left: the stack dropped its request and
                    // will answer without one.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        drop(upstream);
        // A request sent just as the call ended (a background refresh that
        // started with it) goes to the client instead.
        receiver.close();
        while let Ok((request, reply)) = receiver.try_recv() {
            let _ = reply.send(Reply::Declined(request));
        }
        match result {
            Ok(response) => Ok(into_reqwest(response, url)),
            Err(error) => Err(into_middleware_error(error)),
        }
    }
}

impl Middleware for OptimizerMiddleware {
    // `#[async_trait]`'s signature, written out: the crate needs no macro.
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: reqwest::Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.run(req, extensions, next))
    }
}

/// One upstream call of the stack, sent to the middleware call it belongs
/// to, with where to answer.
type Upstream = (Request<reqwest::Body>, oneshot::Sender<Reply>);

/// The way from the stack's innermost service back to the middleware call
/// its request belongs to, in the request's extensions.
#[derive(Clone)]
struct Chain(mpsc::UnboundedSender<Upstream>);

/// The middleware call's answer to an upstream call.
enum Reply {
    /// The chain below answered.
    Done(Result<Response<reqwest::Body>, BoxError>),
    /// The call had ended: the request goes to the client.
    Declined(Request<reqwest::Body>),
}

/// The final URL of an upstream answer, carried through the stack.
#[derive(Clone)]
struct FinalUrl(Url);

/// Sends `request` down the rest of the chain and answers `reply`; gives
/// back the extensions as the middleware below left them.
async fn down_the_chain(
    next: Next<'_>,
    request: Request<reqwest::Body>,
    mut extensions: Extensions,
    reply: oneshot::Sender<Reply>,
) -> Extensions {
    let result = match reqwest::Request::try_from(request) {
        Ok(mut request) => {
            // The stack keeps the caller's limit (see `run`): the client
            // below must not count it again from each upstream call.
            *request.timeout_mut() = None;
            match next.run(request, &mut extensions).await {
                Ok(response) => {
                    let url = response.url().clone();
                    let mut response = Response::from(response);
                    response.extensions_mut().insert(FinalUrl(url));
                    Ok(response)
                }
                Err(error) => Err(BoxError::from(error)),
            }
        }
        Err(error) => Err(BoxError::from(error)),
    };
    let _ = reply.send(Reply::Done(result));
    extensions
}

/// The stack's answer as reqwest's, with its URL.
fn into_reqwest(response: Response<ResponseBody>, url: Url) -> reqwest::Response {
    let (mut parts, body) = response.into_parts();
    let url = parts.extensions.remove::<FinalUrl>().map_or(url, |found| found.0);
    // reqwest reads the URL from an extension only its builder can set.
    if let Ok(tagged) = Response::builder().url(url).body(()) {
        parts.extensions.extend(tagged.into_parts().0.extensions);
    }
    reqwest::Response::from(Response::from_parts(parts, reqwest::Body::wrap(SyncBody::new(body))))
}

/// The stack's error as reqwest-middleware's, keeping what it was: an
/// error from the chain below as it came, a reqwest error as one, and the
/// stack's own inside `Error::Middleware`, where `downcast_ref` finds it.
fn into_middleware_error(error: BoxError) -> reqwest_middleware::Error {
    let error = match error.downcast::<reqwest_middleware::Error>() {
        Ok(error) => return *error,
        Err(error) => error,
    };
    match error.downcast::<reqwest::Error>() {
        Ok(error) => reqwest_middleware::Error::Reqwest(*error),
        Err(error) => reqwest_middleware::Error::Middleware(into_anyhow(error)),
    }
}

/// The stack's own errors moved into anyhow as themselves, so that
/// `downcast_ref` finds them: anyhow does not look inside a boxed error.
fn into_anyhow(error: BoxError) -> anyhow::Error {
    fn take<E: std::error::Error + Send + Sync + 'static>(error: BoxError) -> Result<anyhow::Error, BoxError> {
        error.downcast::<E>().map(|error| anyhow::Error::new(*error))
    }
    take::<Open>(error)
        .or_else(take::<ShuttingDown>)
        .or_else(take::<tower::timeout::error::Elapsed>)
        .or_else(take::<tower::load_shed::error::Overloaded>)
        .unwrap_or_else(anyhow::Error::from_boxed)
}

/// The stack's body, made `Sync` as reqwest's body asks: the mutex is never
/// locked, since polling has the body to itself (`&mut`); only the size
/// hint and end-of-stream, which reqwest reads through `&self`, are kept
/// beside it.
struct SyncBody {
    body: Mutex<ResponseBody>,
    hint: SizeHint,
    end: bool,
}

impl SyncBody {
    fn new(body: ResponseBody) -> Self {
        SyncBody {
            hint: body.size_hint(),
            end: body.is_end_stream(),
            body: Mutex::new(body),
        }
    }
}

impl Body for SyncBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let body = this.body.get_mut().unwrap_or_else(PoisonError::into_inner);
        let frame = Pin::new(&mut *body).poll_frame(cx);
        this.hint = body.size_hint();
        this.end = body.is_end_stream();
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// The stack's innermost service: an upstream call goes down the chain of
/// the middleware call its request came from, or to the client when it
/// has none (or it has ended).
#[derive(Clone)]
struct ChainService {
    client: ReqwestService,
}

impl ChainService {
    fn new(client: reqwest::Client) -> Self {
        ChainService {
            client: ReqwestService::new(client),
        }
    }
}

impl Service<Request<reqwest::Body>> for ChainService {
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = ChainFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both ways are always ready: the chain is driven by its call, and
        // reqwest's pool queues internally.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<reqwest::Body>) -> ChainFuture {
        let state = match request.extensions_mut().remove::<Chain>() {
            Some(Chain(chain)) => {
                let (reply, answer) = oneshot::channel();
                match chain.send((request, reply)) {
                    Ok(()) => State::Chained {
                        answer,
                        client: self.client.clone(),
                    },
                    Err(mpsc::error::SendError((request, _))) => State::Direct {
                        pending: self.client.call(request),
                    },
                }
            }
            None => State::Direct {
                pending: self.client.call(request),
            },
        };
        ChainFuture { state }
    }
}

pin_project! {
    /// Response future of [`ChainService`].
    struct ChainFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Chained { answer: oneshot::Receiver<Reply>, client: ReqwestService },
        Direct { #[pin] pending: ReqwestFuture },
    }
}

impl Future for ChainFuture {
    type Output = Result<Response<reqwest::Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let request = match this.state.as_mut().project() {
                StateProj::Direct { pending } => return pending.poll(cx),
                StateProj::Chained { answer, .. } => match std::task::ready!(Pin::new(answer).poll(cx)) {
                    Ok(Reply::Done(result)) => return Poll::Ready(result),
                    Ok(Reply::Declined(request)) => request,
                    Err(_) => {
                        return Poll::Ready(Err(
                            "the reqwest-middleware call ended before its upstream answer".into()
                        ));
                    }
                },
            };
            let StateProj::Chained { client, .. } = this.state.as_mut().project() else {
                unreachable!("matched above");
            };
            let pending = client.call(request);
            this.state.set(State::Direct { pending });
        }
    }
}
