//! [`RequestTimeout`]: a caller's limit for one request, and the two
//! stages of the stack that keep it, one on each side of the breaker.
//!
//! The stack's `.timeout(..)` is the host's limit: it sits inside the
//! breaker, so a call that outlasts it counts as a failure. A caller's
//! limit is the caller's business, not the host's: a latency-sensitive
//! path that gives a healthy host 50 ms must not open its circuit for
//! everyone. So a limit shorter than the stack's (or one with no stack
//! limit at all) is kept by the outer stage, outside the cache and the
//! retries: it bounds the whole request (waiting for a coalesced answer,
//! for a slot, between attempts), and when it passes the call below is
//! dropped, which the breaker counts as a cancelled call, neither success
//! nor failure. A limit longer than the stack's lengthens it for this
//! request in the inner stage, where passing it still counts as the
//! host's failure.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::timeout::error::Elapsed;
use tower_service::Service;

use crate::BoxError;

/// A limit for one request through the stack, set in its extensions:
/// its answer's head must come within this long, or the call fails with
/// tower's [`Elapsed`] (`request timed out`), as the stack's own
/// [`timeout`](super::OptimizerStackBuilder::timeout) does.
///
/// Shorter than the stack's timeout (or without one), it bounds the whole
/// request, retries and waits in the call included (a wait for a global
/// concurrency slot is at readiness, before the call), and passing it
/// counts for the circuit breaker as a cancelled call. Longer, it replaces the stack's
/// timeout for each of this request's upstream calls, which count as
/// failures when they outlast it. Like the stack's timeout, it does not
/// limit the reading of the body.
///
/// ```
/// use std::time::Duration;
/// use tower_optimizer::stack::RequestTimeout;
///
/// let mut request = http::Request::get("http://api.test/search").body(()).unwrap();
/// request.extensions_mut().insert(RequestTimeout(Duration::from_millis(250)));
/// assert_eq!(RequestTimeout::of(&request), Some(Duration::from_millis(250)));
/// ```
///
/// A gRPC call's deadline, the `grpc-timeout` header (tonic's
/// `Request::set_timeout`), is read the same way when the request carries
/// no `RequestTimeout`: through the stack, a client's tight deadline ends
/// the call on time and does not count against the host. Each attempt is
/// sent with the time the call has left in its `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

impl RequestTimeout {
    /// The limit `request` carries, if any.
    pub fn of<B>(request: &Request<B>) -> Option<Duration> {
        request.extensions().get::<RequestTimeout>().map(|t| t.0)
    }
}

/// The deadline header of gRPC over HTTP/2.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The limit `request` asks for: its [`RequestTimeout`], else its
/// `grpc-timeout`.
fn asked<B>(request: &Request<B>) -> Option<Duration> {
    RequestTimeout::of(request).or_else(|| {
        let headers = request.headers();
        // Most requests are not gRPC: a scan of their few names, no hash.
        if crate::util::has_none_of(headers, &[&GRPC_TIMEOUT]) {
            return None;
        }
        headers
            .get(GRPC_TIMEOUT)
            .and_then(|value| grpc_timeout(value.as_bytes()))
    })
}

/// A `grpc-timeout` value: one to eight ASCII digits and a unit, `H`, `M`,
/// `S`, `m`, `u` or `n` (gRPC's `PROTOCOL-HTTP2.md`). Anything else is no
/// deadline, as gRPC servers read it.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When a gRPC call's deadline passes: set in its extensions by the
/// caller's stage, read by the host's, just before each attempt is sent.
#[derive(Debug, Clone, Copy)]
struct GrpcDeadline(Instant);

/// A gRPC call's deadline travels as the time it has left: the caller's
/// stage notes when it passes, and the host's stage (the innermost, so per
/// attempt) rewrites `grpc-timeout` to the time left then, as gRPC's own
/// clients compute it when they send. Without this, time spent in the stack
/// (waiting for a slot, earlier attempts and their backoff) would give the
/// server more time than the caller waits, and it would work on past the
/// point where nobody reads its answer.
fn propagate<B>(side: Side, asked: Option<Duration>, request: &mut Request<B>) {
    match side {
        Side::Caller => {
            let Some(asked) = asked else { return };
            if crate::util::has_none_of(request.headers(), &[&GRPC_TIMEOUT]) {
                return;
            }
            // A limit too far off to be a point in time (a caller's
            // `RequestTimeout(Duration::MAX)`) leaves the header as it is.
            if let Some(at) = Instant::now().checked_add(asked) {
                request.extensions_mut().insert(GrpcDeadline(at));
            }
        }
        Side::Host => {
            let Some(&GrpcDeadline(at)) = request.extensions().get() else {
                return;
            };
            let left = at.saturating_duration_since(Instant::now());
            if let Ok(value) = HeaderValue::from_str(&grpc_timeout_text(left)) {
                request.headers_mut().insert(GRPC_TIMEOUT, value);
            }
        }
    }
}

/// `left` as a `grpc-timeout` value: whole milliseconds rounded up (a
/// deadline not yet passed never reads as zero), or a coarser unit when
/// they take more than the eight digits gRPC allows.
fn grpc_timeout_text(left: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = left.as_nanos().div_ceil(1_000_000).max(u128::from(!left.is_zero()));
    if ms <= MAX {
        return format!("{ms}m");
    }
    let secs = ms.div_ceil(1000);
    if secs <= MAX {
        return format!("{secs}S");
    }
    let minutes = secs.div_ceil(60);
    if minutes <= MAX {
        return format!("{minutes}M");
    }
    format!("{}H", minutes.div_ceil(60).min(MAX))
}

/// Which side of the breaker a [`Deadline`] stage is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Outside the cache: a caller's limit shorter than the stack's.
    Caller,
    /// Inside the breaker: the stack's limit, or a caller's longer one.
    Host,
}

/// The limit a stage on `side` keeps for a request asking `asked`, in a
/// stack whose own timeout is `stack`. The caller's side keeps an asked
/// limit shorter than the stack's (or any, without one); the host's side
/// keeps the longer of the two (the stack's, when nothing is asked). So
/// the request is cut at the limit it asked for, else at the stack's, and
/// only the host's side counts against the host.
pub(crate) fn limit(side: Side, stack: Option<Duration>, asked: Option<Duration>) -> Option<Duration> {
    match (side, asked, stack) {
        (Side::Caller, Some(asked), Some(stack)) => (asked < stack).then_some(asked),
        (Side::Caller, asked, None) => asked,
        (Side::Host, Some(asked), Some(stack)) => Some(asked.max(stack)),
        (Side::Host, None, stack) => stack,
        // Nothing asked: the host's side keeps the stack's limit. No stack
        // limit: the caller's side keeps the asked one.
        (Side::Caller, None, Some(_)) | (Side::Host, Some(_), None) => None,
    }
}

/// A stage that fails a call with [`Elapsed`] once its limit passes.
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    stack: Option<Duration>,
    side: Side,
}

impl<S> Deadline<S> {
    /// `stack` is the stack's own timeout.
    pub(crate) fn new(inner: S, stack: Option<Duration>, side: Side) -> Self {
        Deadline { inner, stack, side }
    }
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let asked = asked(&request);
        propagate(self.side, asked, &mut request);
        let limit = limit(self.side, self.stack, asked);
        DeadlineFuture {
            inner: self.inner.call(request),
            // Boxed: most requests carry no limit of their own, and the
            // timer inline would be copied with every future above it.
            sleep: limit.map(|limit| Box::pin(tokio::time::sleep(limit))),
        }
    }
}

pin_project! {
    /// Response future of [`Deadline`].
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> std::fmt::Debug for DeadlineFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineFuture")
            .field("limited", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The answer first: one that is ready when the limit passes wins.
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        let passed = this
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if passed {
            Poll::Ready(Err(Elapsed::new().into()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_the_spec_writes_them() {
        let cases: [(&[u8], Option<Duration>); 12] = [
            (b"1H", Some(Duration::from_secs(3600))),
            (b"2M", Some(Duration::from_secs(120))),
            (b"30S", Some(Duration::from_secs(30))),
            (b"250m", Some(Duration::from_millis(250))),
            (b"7u", Some(Duration::from_micros(7))),
            (b"0n", Some(Duration::ZERO)),
            (b"99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            (b"123456789m", None),
            (b"m", None),
            (b"10x", None),
            (b"-1S", None),
            (b"", None),
        ];
        for (value, want) in cases {
            assert_eq!(grpc_timeout(value), want, "{}", String::from_utf8_lossy(value));
        }
        let mut request = Request::get("http://api.test/x").body(()).unwrap();
        assert_eq!(asked(&request), None);
        request.headers_mut().insert(GRPC_TIMEOUT, "5S".parse().unwrap());
        assert_eq!(asked(&request), Some(Duration::from_secs(5)));
        request.extensions_mut().insert(RequestTimeout(Duration::from_secs(1)));
        assert_eq!(asked(&request), Some(Duration::from_secs(1)), "the extension first");
    }

    #[test]
    fn time_left_is_written_as_grpc_reads_it() {
        let cases = [
            (Duration::ZERO, "0m"),
            (Duration::from_nanos(1), "1m"),
            (Duration::from_micros(1500), "2m"),
            (Duration::from_millis(850), "850m"),
            (Duration::from_millis(99_999_999), "99999999m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::MAX, "99999999H"),
        ];
        for (left, text) in cases {
            assert_eq!(grpc_timeout_text(left), text, "{left:?}");
            let read = grpc_timeout(text.as_bytes()).unwrap();
            assert!(
                read >= left.min(Duration::from_secs(99_999_999 * 3600)),
                "{text} reads back short of {left:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_host_side_sends_the_time_a_grpc_call_has_left() {
        let mut request = Request::post("http://api.test/items.Items/Get")
            .header(GRPC_TIMEOUT, "1S")
            .body(())
            .unwrap();
        let limit = asked(&request);
        propagate(Side::Caller, limit, &mut request);
        tokio::time::advance(Duration::from_millis(150)).await;
        propagate(Side::Host, limit, &mut request);
        assert_eq!(request.headers()[GRPC_TIMEOUT], "850m");
        // A limit beyond any point in time: the header is left as it is.
        let mut endless = Request::post("http://api.test/items.Items/Get")
            .header(GRPC_TIMEOUT, "1S")
            .body(())
            .unwrap();
        endless.extensions_mut().insert(RequestTimeout(Duration::MAX));
        let limit = asked(&endless);
        propagate(Side::Caller, limit, &mut endless);
        propagate(Side::Host, limit, &mut endless);
        assert_eq!(endless.headers()[GRPC_TIMEOUT], "1S");
        // Not a gRPC call: nothing noted, nothing written.
        let mut plain = Request::get("http://api.test/").body(()).unwrap();
        plain.extensions_mut().insert(RequestTimeout(Duration::from_secs(1)));
        let limit = asked(&plain);
        propagate(Side::Caller, limit, &mut plain);
        propagate(Side::Host, limit, &mut plain);
        assert!(!plain.headers().contains_key(GRPC_TIMEOUT));
    }

    #[test]
    fn a_request_is_cut_at_the_limit_it_asked_for_else_the_stacks() {
        let s = Duration::from_secs;
        let cases = [
            // (stack, asked, caller side, host side)
            (None, None, None, None),
            (Some(s(10)), None, None, Some(s(10))),
            (None, Some(s(1)), Some(s(1)), None),
            (Some(s(10)), Some(s(1)), Some(s(1)), Some(s(10))),
            (Some(s(10)), Some(s(30)), None, Some(s(30))),
            (Some(s(10)), Some(s(10)), None, Some(s(10))),
        ];
        for (stack, asked, caller, host) in cases {
            assert_eq!(limit(Side::Caller, stack, asked), caller, "{stack:?} {asked:?}");
            assert_eq!(limit(Side::Host, stack, asked), host, "{stack:?} {asked:?}");
            // Whichever side keeps it, the request's effective limit is the
            // caller's when it asked, else the stack's.
            let effective = match (limit(Side::Caller, stack, asked), limit(Side::Host, stack, asked)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            assert_eq!(effective, asked.or(stack));
        }
    }
}
