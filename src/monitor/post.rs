//! One JSON `POST` through any HTTP client service, bounded by a timeout:
//! how the Alertmanager push and the shared openings reach their servers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::BoxError;

/// Posts a JSON body to a URL; the answer's status, or why there is none.
pub(crate) type Poster = Arc<
    dyn Fn(http::Uri, Bytes) -> Pin<Box<dyn Future<Output = Result<http::StatusCode, BoxError>> + Send>> + Send + Sync,
>;

/// A [`Poster`] over `client`, sending `authorization` (if any) with each
/// post, each given `timeout` from the wait for the client's readiness to
/// the answer's head. The answer's body is not read: the servers posted to
/// say what they mean in the status.
pub(crate) fn json_poster<S, B, R>(client: S, authorization: Option<http::HeaderValue>, timeout: Duration) -> Poster
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: From<Bytes> + Send + 'static,
{
    Arc::new(move |url: http::Uri, body: Bytes| {
        let mut client = client.clone();
        let authorization = authorization.clone();
        Box::pin(async move {
            let mut request = http::Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(B::from(body))?;
            if let Some(value) = authorization {
                request.headers_mut().insert(http::header::AUTHORIZATION, value);
            }
            let answer = async {
                std::future::poll_fn(|cx| client.poll_ready(cx)).await?;
                client.call(request).await
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => Ok(response.status()),
                Ok(Err(e)) => Err(e.into()),
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    })
}

/// `path` under the base URL `base` and whatever path prefix it has
/// (`http://host:9093/prefix` and `/api/v2/alerts` give
/// `http://host:9093/prefix/api/v2/alerts`), or why `base` is no absolute
/// `http` or `https` URL.
pub(crate) fn url_under(base: &str, path: &str) -> Result<http::Uri, String> {
    let parsed: http::Uri = base.parse().map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    let (Some(scheme @ ("http" | "https")), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(format!("{base:?} is not an absolute http or https URL"));
    };
    format!("{scheme}://{authority}{}{path}", parsed.path().trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("{base:?}: {e}"))
}

#[cfg(test)]
pub(crate) mod fake;
