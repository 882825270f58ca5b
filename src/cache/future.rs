//! Response future of [`CacheService`](super::CacheService).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, future::ResponseFuture};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     let response = http::Response::builder().header("cache-control", "max-age=60");
//!     Ok::<_, Infallible>(response.body(Full::new(Bytes::from_static(b"hi"))).unwrap())
//! });
//! let mut svc = CacheLayer::new(Cache::builder().build().unwrap()).layer(upstream);
//! let request = || http::Request::get("http://api.example/x").body(Full::default()).unwrap();
//! let future: ResponseFuture<_, Full<Bytes>, Full<Bytes>> = svc.ready().await.unwrap().call(request());
//! let first = future.await.unwrap();
//! assert!(!first.extensions().get::<CacheStatus>().unwrap().hit);
//! # drop(first);
//! let second = svc.ready().await.unwrap().call(request()).await.unwrap();
//! assert!(second.extensions().get::<CacheStatus>().unwrap().hit);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::buffer::{Buffer, Step};
use super::coalesce::{Wait, Waiter};
use super::fetch::{self, Fetch, Next};
use super::key;
use super::stats::bump;
use super::status::{CacheStatus, StatusExtension};
use super::write::Write;
use crate::BoxError;
use crate::body::OptimizerBody;

/// A request waiting on another's upstream call, ready to go upstream itself.
pub(crate) struct Pending<S, ReqBody> {
    pub(crate) service: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) fetch: Fetch,
}

pin_project! {
    /// Response future of [`CacheService`](super::CacheService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Answered without upstream (hit, 504 for only-if-cached).
        Ready { response: Option<Response<OptimizerBody<ResBody>>> },
        // The cache steps aside; the response is only stamped. Upstream
        // futures are boxed: they can be a whole stack of layers, and a hit
        // would otherwise build (and move) a future of that size too.
        // A write (an unsafe method) also carries what it may invalidate.
        Passing { future: Pin<Box<S::Future>>, status: (CacheStatus, StatusExtension), write: Option<Box<Write>> },
        // Another request for this key is upstream. One waiter per flight
        // runs the flight's timer (see `coalesce`); the others have none.
        Waiting {
            waiter: Waiter,
            #[pin]
            timeout: Option<Sleep>,
            pending: Option<Box<Pending<S, ReqBody>>>,
        },
        // Upstream call whose response may be stored.
        Calling { future: Pin<Box<S::Future>>, fetch: Option<Box<Fetch>> },
        // Reading a storable body into memory.
        Buffering { body: Option<Pin<Box<ResBody>>>, buffer: Option<Box<Buffer>> },
        Done,
    }
}

impl<S, ReqBody, ResBody> std::fmt::Debug for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn ready(response: Response<OptimizerBody<ResBody>>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn passing(
        future: S::Future,
        status: (CacheStatus, StatusExtension),
        write: Option<Box<Write>>,
    ) -> Self {
        ResponseFuture {
            state: State::Passing {
                future: Box::pin(future),
                status,
                write,
            },
        }
    }

    pub(crate) fn calling(future: S::Future, fetch: Fetch) -> Self {
        ResponseFuture {
            state: State::Calling {
                future: Box::pin(future),
                fetch: Some(Box::new(fetch)),
            },
        }
    }

    pub(crate) fn waiting(waiter: Waiter, pending: Pending<S, ReqBody>) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiter,
                timeout: None,
                pending: Some(Box::new(pending)),
            },
        }
    }
}

const POLLED_AFTER_DONE: &str = "cache ResponseFuture polled after completion";

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<OptimizerBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { response } => {
                    let response = response.take().expect(POLLED_AFTER_DONE);
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Passing { future, status, write } => {
                    let (status, extension) = *status;
                    let result = ready!(future.as_mut().poll(cx)).map_err(Into::into);
                    // Settled before the caller sees the answer, so its next
                    // read cannot meet what the write replaced.
                    if let Some(mut write) = write.take() {
                        match &result {
                            Ok(response) => write.answered(response.status(), response.headers()),
                            Err(error) => write.failed(error),
                        }
                    }
                    this.state.set(State::Done);
                    let mut response = result?.map(OptimizerBody::inner);
                    let status = CacheStatus {
                        fwd_status: Some(response.status().as_u16()),
                        ..status
                    };
                    fetch::stamp(&mut response, status, extension);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Waiting {
                    waiter,
                    mut timeout,
                    pending,
                } => {
                    let outcome = match waiter.poll_wait(cx) {
                        Poll::Ready(Wait::Done(outcome)) => Some(outcome),
                        Poll::Ready(Wait::Streaming(broadcast)) => {
                            let p = pending.as_ref().expect(POLLED_AFTER_DONE);
                            let status = CacheStatus {
                                collapsed: true,
                                ..broadcast.status(p.fetch.status)
                            };
                            let shared = key::matches(broadcast.secondary(), p.request.headers())
                                .then(|| broadcast.response(status, p.fetch.cache.status_extension))
                                .flatten();
                            if let Some(response) = shared {
                                bump(&p.fetch.cache.counters.coalesced);
                                this.state.set(State::Ready {
                                    response: Some(response),
                                });
                                continue;
                            }
                            // Another variant, or it can no longer be joined
                            // (failed or overflowed since): no answer for
                            // this request.
                            Some(None)
                        }
                        Poll::Ready(Wait::Expired) => None,
                        Poll::Pending => {
                            if timeout.is_none() {
                                if let Some(deadline) = waiter.claim_timer() {
                                    timeout.set(Some(tokio::time::sleep_until(deadline)));
                                }
                            }
                            let Some(timer) = timeout.as_mut().as_pin_mut() else {
                                return Poll::Pending;
                            };
                            ready!(timer.poll(cx));
                            waiter.expire();
                            None
                        }
                    };
                    // `None`: the flight's deadline passed; count each waiter
                    // it sent upstream.
                    let outcome = outcome.unwrap_or_else(|| {
                        let p = pending.as_ref().expect(POLLED_AFTER_DONE);
                        bump(&p.fetch.cache.counters.coalesce_timeouts);
                        None
                    });
                    let Pending {
                        mut service,
                        mut request,
                        fetch,
                    } = *pending.take().expect(POLLED_AFTER_DONE);
                    if let Some(entry) = outcome.filter(|e| key::matches(e.secondary(), request.headers())) {
                        this.state.set(State::Ready {
                            response: Some(fetch.collapsed(&entry)),
                        });
                        continue;
                    }
                    // Released without a usable answer: go upstream alone.
                    if let Some(stale) = &fetch.stale {
                        fetch::add_validators(&mut request, stale);
                    }
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future: Box::pin(future),
                        fetch: Some(Box::new(fetch)),
                    });
                }
                StateProj::Calling { future, fetch } => {
                    let result = ready!(future.as_mut().poll(cx)).map_err(Into::into);
                    let fetch = fetch.take().expect(POLLED_AFTER_DONE);
                    match fetch.on_response(result) {
                        Next::Respond(response) => this.state.set(State::Ready {
                            response: Some(response),
                        }),
                        Next::Fail(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        Next::Buffer(buffer, body) => {
                            this.state.set(State::Buffering {
                                body: Some(body),
                                buffer: Some(buffer),
                            });
                        }
                    }
                }
                StateProj::Buffering { body, buffer } => {
                    let stream = body.as_mut().expect(POLLED_AFTER_DONE);
                    let response = match ready!(stream.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => match buffer.as_mut().expect(POLLED_AFTER_DONE).push(frame) {
                            Step::More => continue,
                            Step::Stop => buffer.take().expect(POLLED_AFTER_DONE).pass_through(body.take(), None),
                            // Done already: nothing left to stream.
                            Step::Stream if stream.is_end_stream() => buffer.take().expect(POLLED_AFTER_DONE).finish(),
                            Step::Stream => buffer
                                .take()
                                .expect(POLLED_AFTER_DONE)
                                .share_or_stream(body.take().expect(POLLED_AFTER_DONE)),
                        },
                        Some(Err(error)) => buffer.take().expect(POLLED_AFTER_DONE).failed(error.into()),
                        None => buffer.take().expect(POLLED_AFTER_DONE).finish(),
                    };
                    this.state.set(State::Ready {
                        response: Some(response),
                    });
                }
                StateProj::Done => panic!("{POLLED_AFTER_DONE}"),
            }
        }
    }
}
