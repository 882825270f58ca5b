//! [`CircuitBreakerService`]: per-key breakers around any HTTP service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use tokio::time::Instant;
use tower_service::Service;

use super::body::{BreakerBody, Guard};
use super::config::KeyBy;
use super::error::Open;
use super::events::{Event, emit};
use super::fallback::{Fallback, NoFallback};
use super::future::ResponseFuture;
use super::registry::{CellRef, CircuitBreakers};
use crate::BoxError;
use crate::util::with_authority_key;

/// Middleware built by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, F = NoFallback> {
    inner: S,
    breakers: CircuitBreakers,
    fallback: F,
    /// The breaker of the last request's key: consecutive requests to one
    /// host skip the registry lookup, and their guards share this service's
    /// reference rather than the cell's own count, which every thread
    /// calling that host would otherwise bounce between cores.
    last: Option<Arc<CellRef>>,
}

impl<S, F> CircuitBreakerService<S, F> {
    pub(crate) fn new(inner: S, breakers: CircuitBreakers, fallback: F) -> Self {
        CircuitBreakerService {
            inner,
            breakers,
            fallback,
            last: None,
        }
    }

    inner_service_accessors!();

    /// The breakers this service shares with its layer.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    fn cell_for<B>(&mut self, request: &Request<B>, now: &mut Now) -> Arc<CellRef> {
        let recorder = crate::util::recorder_id();
        let cell = match &self.breakers.inner.config.key {
            KeyBy::Authority => {
                if let Some(last) = reuse(self.last.as_ref(), recorder, |key| same_authority(key, request.uri())) {
                    return last;
                }
                with_authority_key(request.uri(), |key| self.breakers.cell(key, now.get()))
            }
            KeyBy::Global => {
                if let Some(last) = reuse(self.last.as_ref(), recorder, |_| true) {
                    return last;
                }
                self.breakers.cell("*", now.get())
            }
            KeyBy::Custom(f) => {
                let key = f(&crate::util::request_head(request));
                if let Some(last) = reuse(self.last.as_ref(), recorder, |last| last == key) {
                    return last;
                }
                self.breakers.cell(&key, now.get())
            }
        };
        let cell = Arc::new(CellRef::new(cell, recorder));
        self.last = Some(cell.clone());
        cell
    }
}

/// The remembered breaker, if it still serves: the key is the same, the
/// registry still holds it and its counters are `recorder`'s.
#[inline]
fn reuse(last: Option<&Arc<CellRef>>, recorder: usize, same_key: impl FnOnce(&str) -> bool) -> Option<Arc<CellRef>> {
    last.filter(|last| same_key(&last.key) && last.metrics.recorder == recorder && last.touch())
        .cloned()
}

/// The clock, read at most once per call and only if the call needs it: a
/// closed breaker's call through a known key reads none (two reads would
/// cost a sixth of a fast inner service).
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

#[inline]
fn same_authority(key: &str, uri: &Uri) -> bool {
    let authority = uri.authority().map_or("", |a| a.as_str()).as_bytes();
    let Some(at) = key.len().checked_sub(authority.len()) else {
        return false;
    };
    let (prefix, rest) = key.as_bytes().split_at(at);
    // The common schemes against constants, which compile to a compare
    // in place rather than a call.
    rest == authority
        && match uri.scheme_str() {
            None | Some("http") => prefix == b"http://",
            Some("https") => prefix == b"https://",
            Some(scheme) => {
                prefix.len() == scheme.len() + 3 && prefix.starts_with(scheme.as_bytes()) && prefix.ends_with(b"://")
            }
        }
}

impl<S, F, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreakerService<S, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    F: Fallback<Request<ReqBody>, Response<ResBody>>,
{
    type Response = Response<BreakerBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F::Future>;

    /// Only delegates: an open circuit is never a readiness error (that
    /// would be terminal for `Buffer` and balancers); it fails in `call`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut now = Now::default();
        let cell = self.cell_for(&request, &mut now);
        let config = &self.breakers.inner.config;
        let mut transitions = Vec::new();
        let admitted = match cell.fast_permit() {
            Some(permit) => Ok(permit),
            None => cell.lock().admit(config, now.get(), &mut transitions),
        };
        if !transitions.is_empty() {
            self.breakers.emit_transitions(&cell, &transitions);
        }
        let config = &cell.config;
        match admitted {
            Ok(permit) => {
                let start = config.times_calls().then(|| now.get());
                let guard = Guard {
                    cell,
                    permit,
                    start,
                    on_drop: None,
                };
                ResponseFuture::called(self.inner.call(request), guard)
            }
            Err(retry_after) => {
                cell.metrics.rejected.increment(1);
                if !config.listeners.is_empty() {
                    emit(
                        &config.listeners,
                        &Event::Rejected {
                            key: cell.key.clone(),
                            retry_after,
                        },
                    );
                }
                match self.fallback.try_call(request) {
                    Ok(future) => ResponseFuture::fallback(future),
                    Err(_request) => ResponseFuture::rejected(Open::new(cell.key.clone(), retry_after)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_authority;

    #[test]
    fn a_remembered_key_serves_its_own_scheme_and_authority_only() {
        let same = |key: &str, uri: &str| same_authority(key, &uri.parse().unwrap());
        assert!(same("http://a.test", "http://a.test/x?y"));
        assert!(same("https://a.test:8443", "https://a.test:8443/"));
        assert!(same("ws://a.test", "ws://a.test/chat"));
        assert!(same("http://", "/relative"), "no authority keys as plain http");
        assert!(!same("http://a.test", "https://a.test/"), "another scheme");
        assert!(!same("https://a.test", "http://a.test/"));
        assert!(!same("http://a.test", "http://b.test/"), "another host");
        assert!(!same("http://a.test", "http://a.test:81/"), "another port");
        assert!(!same("http://a.test", "http://xa.test/"), "a longer host ending alike");
        assert!(!same("ws://a.test", "wss://a.test/"));
        assert!(!same("a", "http://a.test/"), "a key shorter than the authority");
    }
}
