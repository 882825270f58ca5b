//! Response future of [`MetricsService`](super::MetricsService).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode, Version};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::MetricsBody;
use super::handles::{Active, RequestLabels};
use super::layer::{BodySizes, Config};
use crate::BoxError;

/// What a request carries until it is measured.
#[derive(Debug)]
pub(crate) struct Guard {
    config: Arc<Config>,
    active: Active,
    method: &'static str,
    port: u16,
    template: Option<Arc<str>>,
    start: Instant,
    status: Option<u16>,
    version: &'static str,
    cache: Option<&'static str>,
    breaker: Option<&'static str>,
    error: Option<&'static str>,
    done: bool,
}

impl Guard {
    pub(crate) fn new(
        config: Arc<Config>,
        active: Active,
        method: &'static str,
        port: u16,
        template: Option<Arc<str>>,
        start: Instant,
    ) -> Self {
        Guard {
            config,
            active,
            method,
            port,
            template,
            start,
            status: None,
            version: "1.1",
            cache: None,
            breaker: None,
            error: None,
            done: false,
        }
    }

    /// Records the request as finished now, with `body_bytes` read.
    pub(crate) fn finish(&mut self, body_bytes: u64, body_failed: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let status_text;
        let error = if body_failed {
            Some("body")
        } else if self.error.is_some() {
            self.error
        } else if let Some(status) = self.status.filter(|s| *s >= 400) {
            status_text = StatusCode::from_u16(status)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            Some(status_text.as_str())
        } else {
            None
        };
        let labels = RequestLabels {
            method: self.method,
            host: self.host(),
            port: self.port,
            template: self.template.as_deref(),
            status: self.status,
            error,
            version: self.version,
            cache: self.cache,
            breaker: self.breaker,
        };
        let handles = &self.config.handles;
        handles.duration(&labels).record(elapsed.as_secs_f64());
        if self.config.body_sizes == BodySizes::Record && self.status.is_some() {
            handles.body_size(&labels).record(body_bytes as f64);
        }
        if let Some(stats) = &self.config.stats {
            stats.record(&self.active.host, elapsed, error.is_some(), now);
        }
    }

    fn host(&self) -> &str {
        // `Active::host` is `host:port`; the label wants the host alone.
        let text: &str = &self.active.host;
        text.rsplit_once(':').map_or(text, |(h, _)| h)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A cancelled request is not measured, but it is no longer active.
        self.active.gauge.decrement(1.0);
    }
}

fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `error.type` for a failed call, from a fixed set (bounded labels).
fn error_type(error: &(dyn std::error::Error + 'static)) -> (&'static str, Option<&'static str>) {
    #[cfg(feature = "circuit-breaker")]
    if error.is::<crate::circuit_breaker::error::Open>() {
        return ("circuit_open", Some("rejected"));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => ("timeout", None),
                std::io::ErrorKind::ConnectionRefused => ("connection_refused", None),
                std::io::ErrorKind::ConnectionReset => ("connection_reset", None),
                _ => ("io", None),
            };
        }
        if e.to_string().contains("timed out") {
            return ("timeout", None);
        }
        source = e.source();
    }
    ("_OTHER", None)
}

pin_project! {
    /// Response future of [`MetricsService`](super::MetricsService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        guard: Option<Guard>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, guard: Guard) -> Self {
        ResponseFuture {
            future,
            guard: Some(guard),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<MetricsBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let mut guard = this
            .guard
            .take()
            .expect("metrics ResponseFuture polled after completion");
        match result {
            Ok(response) => {
                guard.status = Some(response.status().as_u16());
                guard.version = version_label(response.version());
                #[cfg(feature = "cache")]
                {
                    guard.cache = response
                        .extensions()
                        .get::<crate::cache::CacheStatus>()
                        .map(|s| match s.outcome() {
                            crate::cache::Outcome::Hit => "hit",
                            crate::cache::Outcome::StaleHit => "stale",
                            crate::cache::Outcome::Revalidated => "revalidated",
                            crate::cache::Outcome::Miss => "miss",
                            crate::cache::Outcome::Bypass => "bypass",
                        });
                }
                Poll::Ready(Ok(response.map(|body| MetricsBody::new(body, guard))))
            }
            Err(error) => {
                let error: BoxError = error.into();
                let (kind, breaker) = error_type(&*error);
                guard.error = Some(kind);
                guard.breaker = breaker;
                guard.finish(0, false);
                Poll::Ready(Err(error))
            }
        }
    }
}
