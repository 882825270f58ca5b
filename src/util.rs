//! Small helpers shared by the layers.

use http::{Request, request};

/// A copy of a request's head (method, URI, version, headers), without its
/// extensions or body: what policies and user closures look at.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn request_head<B>(request: &Request<B>) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts
}
