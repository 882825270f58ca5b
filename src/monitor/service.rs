//! [`MetricsService`]: measures each request until its body ends.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HOST;
use http::uri::Authority;
use http::{Method, Request, Response, Uri};
use tokio::time::Instant;
use tower_service::Service;

use super::future::{Guard, ResponseFuture};
use super::handles::Endpoint;
use super::layer::Config;
use crate::BoxError;

/// Middleware built by [`MetricsLayer`](super::MetricsLayer).
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    meter: Meter,
}

/// What starts measuring a request: the layer's configuration and the
/// endpoint of the last request. Also used by the stack, which measures a
/// hit it answers at its edge with the same guard.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    config: Arc<Config>,
    /// The endpoint of the last request: consecutive requests to one host
    /// skip parsing the authority and the handle lookup.
    last: Option<Last>,
}

/// What the last request's endpoint was found from.
#[derive(Debug, Clone)]
struct Last {
    endpoint: Arc<Endpoint>,
    method: &'static str,
    https: bool,
    authority: Authority,
}

impl Last {
    fn matches(&self, method: &'static str, uri: &Uri, recorder: usize) -> bool {
        // Exact bytes first: the same client sends the same spelling, and
        // `Authority`'s own comparison ignores case byte by byte.
        // Labels from `method_label` are its literals: the same one is
        // the same address, and a compare of addresses costs no call.
        self.endpoint.recorder == recorder
            && (std::ptr::eq(self.method, method) || self.method == method)
            && (uri.scheme_str() == Some("https")) == self.https
            && uri
                .authority()
                .is_some_and(|a| a.as_str() == self.authority.as_str() || *a == self.authority)
    }
}

impl<S> MetricsService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        MetricsService {
            inner,
            meter: Meter::new(config),
        }
    }

    inner_service_accessors!();
}

impl Meter {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Meter { config, last: None }
    }

    /// Starts measuring `request`, sent at `start`: counted active until
    /// the guard is dropped.
    #[inline]
    pub(crate) fn start<B>(&mut self, request: &Request<B>, start: Instant) -> Guard {
        let method = method_label(request.method());
        let recorder = crate::util::recorder_id();
        let endpoint = match &self.last {
            Some(last) if last.matches(method, request.uri(), recorder) => last.endpoint.clone(),
            _ => {
                let (host, port) = server(request.uri(), request.headers());
                let config = &self.config;
                let endpoint =
                    config
                        .handles
                        .endpoint((method, host, port), recorder, config.stats.as_ref(), config.body_sizes);
                self.last = request.uri().authority().map(|authority| Last {
                    endpoint: endpoint.clone(),
                    method,
                    https: request.uri().scheme_str() == Some("https"),
                    authority: authority.clone(),
                });
                endpoint
            }
        };
        endpoint.gauge.increment(1.0);
        let template = self
            .config
            .routes
            .as_ref()
            .and_then(|routes| routes.template(request.method(), request.uri()));
        Guard::new(endpoint, template, start)
    }
}

/// `http.request.method`: the known methods, anything else `_OTHER` (a
/// bounded label, as OpenTelemetry asks).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// `server.address` and `server.port` from the URI, else the `Host` header.
pub(crate) fn server<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> (&'a str, u16) {
    let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    if let Some(authority) = uri.authority() {
        return (authority.host(), authority.port_u16().unwrap_or(default_port));
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) => (host, default_port),
        },
        _ => (host, default_port),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<super::body::MetricsBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let guard = self.meter.start(&request, Instant::now());
        ResponseFuture::new(self.inner.call(request), guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::handles::Handles;
    use crate::monitor::layer::BodySizes;

    #[test]
    fn the_last_endpoint_serves_the_same_authority_scheme_and_method_only() {
        let handles = Handles::default();
        let last = Last {
            endpoint: handles.endpoint(("GET", "Api.test", 8080), 1, None, BodySizes::Off),
            method: "GET",
            https: false,
            authority: "Api.test:8080".parse().unwrap(),
        };
        let matches = |method, uri: &str| last.matches(method, &uri.parse().unwrap(), 1);
        assert!(matches("GET", "http://Api.test:8080/a"));
        assert!(matches("GET", "http://api.TEST:8080/b?c"), "case");
        assert!(!matches("GET", "http://api.test:8081/"), "another port");
        assert!(!matches("GET", "https://api.test:8080/"), "another scheme");
        assert!(!matches("POST", "http://api.test:8080/"), "another method");
        assert!(!matches("GET", "http://api.test.evil:8080/"), "another host");
        assert!(!matches("GET", "/relative"), "no authority");
        assert!(
            !last.matches("GET", &"http://Api.test:8080/a".parse().unwrap(), 2),
            "another recorder"
        );
    }
}
