//! The response body: a success is recorded when the body ends (or is
//! dropped), a body that fails mid-stream counts as a failure, and
//! trailers are classified as they arrive.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::classify::{CallResult, Outcome};
use super::events::{Event, emit};
use super::registry::CellRef;
use super::state::Permit;
use crate::BoxError;
use crate::util::{Seen, watch};
use std::sync::Arc;

/// A permit in use: records the call's outcome once, or gives the permit
/// back if the call is dropped unfinished (a cancelled call counts as
/// neither success nor failure).
pub(crate) struct Guard {
    pub(crate) cell: Arc<CellRef>,
    pub(crate) permit: Permit,
    /// When the call began, if the breaker times calls
    /// ([`CircuitBreakerConfig::times_calls`](super::CircuitBreakerConfig)):
    /// otherwise a closed breaker's success reads no clock at all.
    pub(crate) start: Option<Instant>,
    /// Recorded on drop instead of releasing (a success waiting for its body).
    pub(crate) on_drop: Option<Outcome>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("key", &self.cell.key)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Records `outcome` (with a `Retry-After` hint) and ends the guard.
    pub(crate) fn finish(mut self, outcome: Outcome, retry_after: Option<Duration>) {
        self.on_drop = None;
        self.record(outcome, retry_after);
        // Drop now runs with `on_drop` empty and the permit already used.
        self.permit.recorded = false;
        self.permit.probe = false;
    }

    /// Ends the guard of a call whose body ended well: the closed path's
    /// common case (an untimed call, so no slow-call rule and no listener
    /// to tell, and not a probe) counted without the lock in a few
    /// instructions; anything else through [`Guard::finish`].
    #[inline]
    pub(crate) fn succeed(mut self) {
        let cell = &self.cell;
        let quick = self.start.is_none()
            && self.permit.recorded
            && !self.permit.probe
            && cell.fast_success(self.permit.generation);
        if quick {
            cell.metrics.success.increment(1);
            // Counted: the drop has nothing left to record or release.
            self.on_drop = None;
            return;
        }
        self.finish(Outcome::Success, None);
    }

    fn record(&self, outcome: Outcome, retry_after: Option<Duration>) {
        let cell = &self.cell;
        let config = &cell.config;
        let timed = self.start.map(|start| {
            let now = Instant::now();
            (now, now.saturating_duration_since(start))
        });
        // An untimed call is never slow: no slow-call rule is set and no
        // listener asks how long it took.
        let elapsed = timed.map_or(Duration::ZERO, |(_, elapsed)| elapsed);
        let mut transitions = Vec::new();
        // The common case, a closed breaker's success in time, is counted
        // without the lock (see `tally.rs`).
        let fast = outcome == Outcome::Success
            && self.permit.recorded
            && !self.permit.probe
            && retry_after.is_none()
            && elapsed < config.slow_call
            && cell.fast_success(self.permit.generation);
        if !fast {
            let now = timed.map_or_else(Instant::now, |(now, _)| now);
            cell.lock().record(
                config,
                self.permit,
                outcome,
                elapsed,
                retry_after,
                now,
                &mut transitions,
            );
        }
        if self.permit.recorded && outcome != Outcome::Ignored {
            let slow = timed.is_some() && elapsed >= config.slow_call;
            match outcome {
                Outcome::Failure => cell.metrics.failure.increment(1),
                _ => cell.metrics.success.increment(1),
            }
            if slow {
                cell.metrics.slow.increment(1);
            }
            if !config.listeners.is_empty() {
                let key = cell.key.clone();
                let event = match outcome {
                    Outcome::Failure => Event::Failure {
                        key: key.clone(),
                        elapsed,
                    },
                    _ => Event::Success {
                        key: key.clone(),
                        elapsed,
                    },
                };
                emit(&config.listeners, &event);
                if slow {
                    emit(&config.listeners, &Event::SlowCall { key, elapsed });
                }
            }
        }
        cell.transitions(&transitions);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self.on_drop.take() {
            Some(outcome) => self.record(outcome, None),
            None => {
                if self.permit.probe {
                    self.cell.lock().release(self.permit);
                }
            }
        }
    }
}

pin_project! {
    /// Response body of [`CircuitBreakerService`](super::CircuitBreakerService).
    pub struct BreakerBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
    }
}

impl<B> std::fmt::Debug for BreakerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerBody").finish_non_exhaustive()
    }
}

/// An empty body with no call attached (the body of an answer made in
/// place of a call, such as [`RespondOpen`](super::RespondOpen)'s `503`).
impl<B: Default> Default for BreakerBody<B> {
    fn default() -> Self {
        BreakerBody::new(B::default(), None)
    }
}

impl<B> BreakerBody<B> {
    pub(crate) fn new(inner: B, guard: Option<Guard>) -> Self {
        BreakerBody { inner, guard }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for BreakerBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        watch(this.inner.poll_frame(cx), |seen| {
            let Some(guard) = this.guard.as_ref() else {
                return;
            };
            let classify = |result| guard.cell.config.classifier.classify(&result);
            let outcome = match seen {
                Seen::Data(_) => return,
                Seen::End => Outcome::Success,
                Seen::Trailers(trailers) => classify(CallResult::Trailers(trailers)),
                Seen::Failed(error) => classify(CallResult::BodyError(&**error)),
            };
            if let Some(guard) = this.guard.take() {
                if outcome == Outcome::Success {
                    guard.succeed();
                } else {
                    guard.finish(outcome, None);
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
