//! Copies of a request for its next attempt. `http::Request` is `Clone`
//! when its body is, but a layer generic over any body cannot ask for
//! that without asking it of every caller (reqwest's body is not), so the
//! body is copied by its concrete type, looked up at run time: the common
//! buffered types are known, and a user adds their own with
//! [`RetryConfigBuilder::replay_body`](super::RetryConfigBuilder::replay_body).
//! The boxed bodies of `http-body-util` cannot be copied, but an empty one
//! (a `GET` a proxy forwards) is replayed as empty. A request whose body
//! is of no known type, or a boxed body with content, is sent once, never
//! retried.

use std::any::Any;

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt as _, Empty};

use crate::BoxError;

/// Writes a copy of `from` into `to` (an `Option` of the same type), if
/// both are of the type it knows.
pub(crate) type Replayer = fn(&dyn Any, &mut dyn Any) -> bool;

/// A [`Replayer`] for `T`, by its `Clone`.
pub(crate) fn by_clone<T: Clone + 'static>(from: &dyn Any, to: &mut dyn Any) -> bool {
    match (from.downcast_ref::<T>(), to.downcast_mut::<Option<T>>()) {
        (Some(body), Some(slot)) => {
            *slot = Some(body.clone());
            true
        }
        _ => false,
    }
}

/// The buffered body types of `http-body-util`, `bytes` and `std` that
/// requests are built with.
const KNOWN: &[Replayer] = &[
    by_clone::<http_body_util::Full<Bytes>>,
    by_clone::<http_body_util::Empty<Bytes>>,
    by_clone::<Bytes>,
    by_clone::<String>,
    by_clone::<Vec<u8>>,
    by_clone::<&'static str>,
    by_clone::<()>,
    empty_boxed::<UnsyncBoxBody<Bytes, BoxError>>,
    empty_boxed::<BoxBody<Bytes, BoxError>>,
    #[cfg(feature = "reqwest")]
    reqwest_body,
];

/// A boxed body that is already at its end, replayed as a new empty one.
fn empty_boxed<T>(from: &dyn Any, to: &mut dyn Any) -> bool
where
    T: http_body::Body + From<EmptyBoxed> + 'static,
{
    match (from.downcast_ref::<T>(), to.downcast_mut::<Option<T>>()) {
        (Some(body), Some(slot)) if body.is_end_stream() => {
            *slot = Some(T::from(EmptyBoxed));
            true
        }
        _ => false,
    }
}

/// An empty body, for [`empty_boxed`] to turn into the boxed type.
struct EmptyBoxed;

impl From<EmptyBoxed> for UnsyncBoxBody<Bytes, BoxError> {
    fn from(_: EmptyBoxed) -> Self {
        Empty::new().map_err(|never| match never {}).boxed_unsync()
    }
}

impl From<EmptyBoxed> for BoxBody<Bytes, BoxError> {
    fn from(_: EmptyBoxed) -> Self {
        Empty::new().map_err(|never| match never {}).boxed()
    }
}

/// reqwest's body is copied when it is buffered (not a stream).
#[cfg(feature = "reqwest")]
fn reqwest_body(from: &dyn Any, to: &mut dyn Any) -> bool {
    match (
        from.downcast_ref::<reqwest::Body>(),
        to.downcast_mut::<Option<reqwest::Body>>(),
    ) {
        (Some(body), Some(slot)) => match body.as_bytes() {
            Some(bytes) => {
                *slot = Some(reqwest::Body::from(Bytes::copy_from_slice(bytes)));
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// A copy of `request` (head, extensions and body), if its body is of a
/// type `known` or [`KNOWN`] can copy.
pub(crate) fn copy<B: 'static>(request: &Request<B>, known: &[Replayer]) -> Option<Request<B>> {
    let mut body: Option<B> = None;
    let found = KNOWN
        .iter()
        .chain(known)
        .any(|replay| replay(request.body() as &dyn Any, &mut body as &mut dyn Any));
    let body = body.filter(|_| found)?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn known_bodies_are_copied_with_the_head() {
        let request = Request::post("http://a.test/x?y=1")
            .header("x-one", "1")
            .extension(7u32)
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let copy = copy(&request, &[]).expect("Full is known");
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.uri(), "http://a.test/x?y=1");
        assert_eq!(copy.headers()["x-one"], "1");
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        assert_eq!(copy.into_body().collect().await.unwrap().to_bytes(), "payload");
        assert!(super::copy(&Request::new(String::from("s")), &[]).is_some());
        assert!(super::copy(&Request::new(()), &[]).is_some());
    }

    #[tokio::test]
    async fn an_empty_boxed_body_is_replayed_empty_and_a_full_one_not_at_all() {
        let empty: UnsyncBoxBody<Bytes, BoxError> = Empty::new().map_err(|never| match never {}).boxed_unsync();
        let copy = copy(&Request::new(empty), &[]).expect("empty: replayed");
        assert!(copy.body().is_end_stream());
        assert!(copy.into_body().collect().await.unwrap().to_bytes().is_empty());
        let full: BoxBody<Bytes, BoxError> = Full::new(Bytes::from_static(b"x"))
            .map_err(|never| match never {})
            .boxed();
        assert!(
            super::copy(&Request::new(full), &[]).is_none(),
            "content cannot be copied"
        );
        let empty: BoxBody<Bytes, BoxError> = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
        assert!(super::copy(&Request::new(empty), &[]).is_some());
    }

    #[test]
    fn unknown_bodies_are_not_copied_unless_registered() {
        #[derive(Clone, PartialEq, Debug)]
        struct Mine(u8);
        let request = Request::new(Mine(3));
        assert!(copy(&request, &[]).is_none());
        let copied = copy(&request, &[by_clone::<Mine>]).expect("registered");
        assert_eq!(copied.body(), &Mine(3));
    }
}
