//! [`RetryPolicy`]: the handle, and its `tower::retry::Policy`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::{Instant, Sleep};
use tower::retry::{Policy, RetryLayer};

use super::budget::Budget;
use super::config::{Methods, RetryConfig};
use super::decide::{Attempt, Decision, RequestRetry, Resent, backoff, idempotent};
use super::replay;
use crate::BoxError;
use crate::circuit_breaker::CallResult;
use crate::circuit_breaker::error::Open;
use crate::util::Xorshift;

/// A retry policy for [`tower::retry::Retry`], and the handle to its
/// shared budget and figures. Cheap to clone: clones share both.
///
/// Put it outside the circuit breaker, so that each attempt passes the
/// breaker (and counts in its window), and an open circuit ends the
/// retries at once; and inside the cache, so that a hit is never retried
/// and a failure after the last attempt can still be answered stale.
#[derive(Clone)]
pub struct RetryPolicy {
    shared: Arc<Shared>,
    /// Attempts made for the request this clone serves (tower clones the
    /// policy per request).
    attempts: u32,
    /// When its first attempt began (for the deadline).
    started: Option<Instant>,
    rng: Option<Xorshift>,
}

struct Shared {
    config: RetryConfig,
    budget: Budget,
    seed: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    attempts_exhausted: AtomicU64,
    deadline_exceeded: AtomicU64,
    answered_otherwise: AtomicU64,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What a [`RetryPolicy`] did, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RetryStats {
    /// Requests whose first attempt went upstream and could have been
    /// retried (their body is of a type the policy can resend); a request
    /// an open circuit refused is not one, and adds nothing to the budget.
    pub requests: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused: the failure went back to the caller.
    pub budget_exhausted: u64,
    /// Failures after the last attempt allowed.
    pub attempts_exhausted: u64,
    /// Retries not sent because they would have started past the
    /// [deadline](super::RetryConfigBuilder::deadline).
    pub deadline_exceeded: u64,
    /// Retries not sent because the failure had another answer: in
    /// `OptimizerStack`, a stale entry the cache serves on error at once.
    pub answered_otherwise: u64,
}

/// A policy with the documented defaults ([`RetryConfig::default`]).
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(RetryConfig::default())
    }
}

impl RetryPolicy {
    /// A policy with `config`, and a budget of its own.
    pub fn new(config: RetryConfig) -> Self {
        let budget = Budget::new(config.budget, Instant::now());
        RetryPolicy {
            shared: Arc::new(Shared {
                config,
                budget,
                seed: AtomicU64::new(0x2545_F491_4F6C_DD1D),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                budget_exhausted: AtomicU64::new(0),
                attempts_exhausted: AtomicU64::new(0),
                deadline_exceeded: AtomicU64::new(0),
                answered_otherwise: AtomicU64::new(0),
            }),
            attempts: 0,
            started: None,
            rng: None,
        }
    }

    /// `tower`'s retry layer with this policy.
    pub fn layer(&self) -> RetryLayer<RetryPolicy> {
        RetryLayer::new(self.fresh())
    }

    /// This policy's settings.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// Counters so far.
    pub fn stats(&self) -> RetryStats {
        let s = &self.shared;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RetryStats {
            requests: get(&s.requests),
            retries: get(&s.retries),
            budget_exhausted: get(&s.budget_exhausted),
            attempts_exhausted: get(&s.attempts_exhausted),
            deadline_exceeded: get(&s.deadline_exceeded),
            answered_otherwise: get(&s.answered_otherwise),
        }
    }

    /// A clone with no attempts counted.
    pub(crate) fn fresh(&self) -> Self {
        RetryPolicy {
            shared: self.shared.clone(),
            attempts: 0,
            started: None,
            rng: None,
        }
    }

    /// How long to wait before retrying after `decision`, or `None` to let
    /// the result stand. Counts the attempt.
    /// `repeatable` says whether the request may be sent twice, and
    /// `answered_otherwise` whether its failure has another answer (a
    /// stale entry); both are asked only of a result that could be retried
    /// (most are not).
    fn next(
        &mut self,
        repeatable: impl Fn() -> bool,
        answered_otherwise: impl FnOnce() -> bool,
        decision: Decision,
        refused: bool,
    ) -> Option<Duration> {
        let shared = &*self.shared;
        let config = &shared.config;
        let now = Instant::now();
        self.attempts += 1;
        // A request the breaker refused never reached the host: counted,
        // it would let the retries of those that do grow with the outage.
        if self.attempts == 1 && !refused {
            shared.budget.deposit(now);
            shared.requests.fetch_add(1, Ordering::Relaxed);
        }
        let method_ok = || config.methods == Methods::All || repeatable();
        let at_least = match decision {
            Decision::Retry if method_ok() => Duration::ZERO,
            Decision::RetryAfter(wait) if wait <= config.max_retry_after && method_ok() => wait,
            Decision::RetryAnyMethod => Duration::ZERO,
            // A method that may not be repeated, a wait too long, or a
            // result that stands.
            Decision::Stop | Decision::Retry | Decision::RetryAfter(_) => return None,
        };
        if answered_otherwise() {
            shared.answered_otherwise.fetch_add(1, Ordering::Relaxed);
            gave_up("answered_otherwise");
            return None;
        }
        if self.attempts >= config.max_attempts {
            shared.attempts_exhausted.fetch_add(1, Ordering::Relaxed);
            gave_up("attempts");
            return None;
        }
        let seed = || Xorshift::new(shared.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        let random = self.rng.get_or_insert_with(seed).next_f64();
        let wait = backoff(self.attempts, config.base_delay, config.max_delay, random).max(at_least);
        let started = *self.started.get_or_insert(now);
        // In durations, saturating: the wait may be a server's `Retry-After`
        // under a cap set without bound, too far off to add to an instant.
        let by_then = now.saturating_duration_since(started).saturating_add(wait);
        if config.deadline.is_some_and(|deadline| by_then > deadline) {
            shared.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
            gave_up("deadline");
            return None;
        }
        if !shared.budget.withdraw(now) {
            shared.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            gave_up("budget");
            return None;
        }
        shared.retries.fetch_add(1, Ordering::Relaxed);
        describe_metrics();
        metrics::counter!(RETRIES).increment(1);
        Some(wait)
    }
}

/// Retries sent.
const RETRIES: &str = "tower_optimizer.retry.retries";
/// Retries wanted but not sent, by why.
const GIVEN_UP: &str = "tower_optimizer.retry.given_up";

/// Describes the retry metrics to the recorder in place (help text for
/// exporters). Called as they are counted: a retry waits out a backoff
/// anyway, and a recorder installed after the policy was built (as the
/// stack's is) still gets them.
fn describe_metrics() {
    metrics::describe_counter!(RETRIES, "Retries sent.");
    metrics::describe_counter!(
        GIVEN_UP,
        "Retries wanted but not sent, by why (budget, attempts, deadline, answered_otherwise)."
    );
}

/// Counts a retry not sent, by why.
fn gave_up(why: &'static str) {
    describe_metrics();
    metrics::counter!(GIVEN_UP, "why" => why).increment(1);
}

impl RetryPolicy {
    /// The wait before the next attempt after `result`, or `None` to let it
    /// stand: the one decision behind every error type's `Policy`.
    pub(crate) fn after<B, R>(
        &mut self,
        request: &Request<B>,
        result: Result<&Response<R>, &(dyn std::error::Error + Send + Sync + 'static)>,
        answered_otherwise: impl FnOnce() -> bool,
    ) -> Option<Sleep> {
        let call = match result {
            Ok(response) => CallResult::Response {
                status: response.status(),
                headers: response.headers(),
            },
            Err(error) => CallResult::Error(error),
        };
        let refused = matches!(call, CallResult::Error(error) if Open::find(error).is_some());
        let attempt = Attempt {
            method: request.method(),
            uri: request.uri(),
            number: self.attempts + 1,
            result: call,
        };
        let decision = self.shared.config.retry_on.decide(&attempt);
        let wait = self.next(|| idempotent(request), answered_otherwise, decision, refused)?;
        // The host and path, not the query, which may carry a credential.
        tracing::debug!(
            host = request.uri().host().unwrap_or(""),
            path = request.uri().path(),
            attempt = self.attempts,
            wait_ms = wait.as_millis(),
            "retrying"
        );
        Some(tokio::time::sleep(wait))
    }

    /// The wait before the next attempt after `result`, as [`after`]
    /// decides; when the result stands, an answer after retries is marked
    /// with how many ([`Resent`]).
    ///
    /// [`after`]: RetryPolicy::after
    pub(crate) fn settle<B, R, E>(
        &mut self,
        request: &Request<B>,
        result: &mut Result<Response<R>, E>,
        as_error: impl Fn(&E) -> &(dyn std::error::Error + Send + Sync + 'static),
        answered_otherwise: impl FnOnce() -> bool,
    ) -> Option<Sleep> {
        let wait = self.after(request, result.as_ref().map_err(&as_error), answered_otherwise);
        if wait.is_none() && self.attempts > 1 {
            if let Ok(response) = result {
                response.extensions_mut().insert(Resent(self.attempts - 1));
            }
        }
        wait
    }

    /// A copy of `request` for the next attempt, if it may have one.
    pub(crate) fn copy<B: 'static>(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if self.shared.config.max_attempts <= 1 || request.extensions().get() == Some(&RequestRetry::Never) {
            return None;
        }
        if self.attempts == 0 && self.shared.config.deadline.is_some() {
            // The first attempt is about to be sent: tower's `Retry` asks
            // for the copy just before it calls, and clones this policy
            // (and so this time) into the request's future just after.
            self.started = Some(Instant::now());
        }
        replay::copy(request, &self.shared.config.replay)
    }
}

/// Over this crate's layers (and any service whose error is `BoxError`).
impl<B, R> Policy<Request<B>, Response<R>, BoxError> for RetryPolicy
where
    B: 'static,
{
    type Future = Sleep;

    fn retry(&mut self, request: &mut Request<B>, result: &mut Result<Response<R>, BoxError>) -> Option<Sleep> {
        self.settle(request, result, |e| &**e, || false)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.copy(request)
    }
}

/// Straight over hyper-util's client, whose error is its own.
#[cfg(feature = "stack")]
impl<B, R> Policy<Request<B>, Response<R>, hyper_util::client::legacy::Error> for RetryPolicy
where
    B: 'static,
{
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, hyper_util::client::legacy::Error>,
    ) -> Option<Sleep> {
        self.settle(request, result, |e| e as _, || false)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.copy(request)
    }
}
