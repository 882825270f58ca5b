//! A ready-made recovery probe: an HTTP request to the breaker's host.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tower_service::Service;

/// A recovery probe that sends `GET {key}{path}` (the key is
/// `scheme://authority` by default) through `client` and counts a 2xx or 3xx
/// answer within `timeout` as healthy. Pass it to
/// [`CircuitBreakerConfigBuilder::probe`](super::CircuitBreakerConfigBuilder::probe).
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower_optimizer::circuit_breaker::{http_probe, CircuitBreakerConfig, ProbeSuccess};
///
/// let client = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
///     let status = if req.uri().path() == "/health" { 200 } else { 404 };
///     Ok::<_, Infallible>(http::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
/// });
/// let probe = http_probe(client, "/health", Duration::from_secs(2));
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// assert!(probe("http://api.test".into()).await);
/// # });
/// let config = CircuitBreakerConfig::builder().probe(probe, ProbeSuccess::HalfOpen).build().unwrap();
/// # let _ = config;
/// ```
pub fn http_probe<S, B, R>(
    client: S,
    path: &str,
    timeout: Duration,
) -> impl Fn(Arc<str>) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    B: Default + Send + 'static,
{
    let path: Arc<str> = path.into();
    move |key: Arc<str>| {
        let mut client = client.clone();
        let path = path.clone();
        Box::pin(async move {
            let Ok(request) = Request::get(format!("{key}{path}")).body(B::default()) else {
                return false;
            };
            let call = async move {
                poll_fn(|cx| client.poll_ready(cx)).await.ok()?;
                client.call(request).await.ok()
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Some(response)) => response.status().is_success() || response.status().is_redirection(),
                _ => false,
            }
        })
    }
}
