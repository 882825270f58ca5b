//! [`Optional`]: a stage of the stack that may or may not be configured,
//! as one concrete type, so the assembled stack is boxed once at its outer
//! edge instead of once per stage (each box is an allocation per call, and
//! each boxed body another one per response).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// The configured stage (`On`) or the service below it (`Off`).
#[derive(Debug, Clone)]
pub(crate) enum Optional<A, B> {
    On(A),
    Off(B),
}

impl<A, B> Optional<A, B> {
    /// `make(config, inner)` when a configuration is given, else `inner`.
    pub(crate) fn new<C>(config: Option<C>, inner: B, make: impl FnOnce(C, B) -> A) -> Self {
        match config {
            Some(config) => Optional::On(make(config, inner)),
            None => Optional::Off(inner),
        }
    }
}

pin_project! {
    /// Response future of [`Optional`].
    #[project = OptionalProj]
    pub(crate) enum OptionalFuture<A, B> {
        On { #[pin] future: A },
        Off { #[pin] future: B },
    }
}

impl<A, B, RA, RB, EA, EB> Future for OptionalFuture<A, B>
where
    A: Future<Output = Result<Response<RA>, EA>>,
    B: Future<Output = Result<Response<RB>, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<Response<Either<RA, RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OptionalProj::On { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(Either::Left)).map_err(Into::into)),
            OptionalProj::Off { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(Either::Right)).map_err(Into::into)),
        }
    }
}

impl<A, B, Req, RA, RB> Service<Req> for Optional<A, B>
where
    A: Service<Req, Response = Response<RA>>,
    B: Service<Req, Response = Response<RB>>,
    A::Error: Into<BoxError>,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<RA, RB>>;
    type Error = BoxError;
    type Future = OptionalFuture<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Optional::On(a) => a.poll_ready(cx).map_err(Into::into),
            Optional::Off(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            Optional::On(a) => OptionalFuture::On {
                future: a.call(request),
            },
            Optional::Off(b) => OptionalFuture::Off {
                future: b.call(request),
            },
        }
    }
}

/// The service below a stage whose own future is small (the cache's, on a
/// hit), with its future boxed: `Optional`'s future is as large as its
/// larger side, so without the cache the whole future of the stack below
/// would sit inline in every future above and be copied at each step.
#[derive(Debug, Clone)]
pub(crate) struct BoxedFuture<S>(pub(crate) S);

impl<S, Req> Service<Req> for BoxedFuture<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;

    fn answer(
        text: &'static str,
    ) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone {
        service_fn(
            move |_req: Request<()>| async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) },
        )
    }

    async fn body_of<S>(svc: S) -> Bytes
    where
        S: Service<Request<()>, Response = Response<Either<Full<Bytes>, Full<Bytes>>>, Error = BoxError>,
    {
        let response = svc.oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn on_uses_the_stage_and_off_the_inner_service() {
        let on = Optional::new(Some("stage"), answer("inner"), |text, _inner| answer(text));
        assert_eq!(body_of(on).await, "stage");
        let off = Optional::new(None::<&'static str>, answer("inner"), |text, _inner| answer(text));
        assert_eq!(body_of(off).await, "inner");
    }
}
