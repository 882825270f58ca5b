//! Whether a finished attempt is tried again: the default HTTP rule and the
//! trait a user rule implements. Pure logic: no tower, no clock.

use std::time::Duration;

use http::{Method, Uri};

use crate::circuit_breaker::CallResult;
use crate::circuit_breaker::error::Open;

/// A finished attempt, as a [`RetryOn`] rule sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's URI.
    pub uri: &'a Uri,
    /// Which attempt this was: 1 for the first try.
    pub number: u32,
    /// What it came to ([`CallResult::BodyError`] and
    /// [`CallResult::Trailers`] never occur here: a response is judged
    /// before its body is read).
    pub result: CallResult<'a>,
}

/// What a [`RetryOn`] rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The result stands.
    Stop,
    /// Try again, if the request's method may be repeated (see
    /// [`Methods`](super::Methods)).
    Retry,
    /// Try again no sooner than this (the response's `Retry-After`), if
    /// the method may be repeated and the wait is within
    /// [`max_retry_after`](super::RetryConfigBuilder::max_retry_after).
    RetryAfter(Duration),
    /// Try again whatever the method: the request never reached the
    /// server (its connection was refused), so repeating it repeats
    /// nothing.
    RetryAnyMethod,
}

/// Decides whether an attempt is tried again; implemented for closures, so
/// a user rule can wrap the default:
///
/// ```
/// use tower_optimizer::retry::{Attempt, Decision, HttpRetry, RetryOn};
/// use tower_optimizer::circuit_breaker::CallResult;
///
/// // Also retry a 500, otherwise as usual.
/// let rule = |attempt: &Attempt<'_>| match attempt.result {
///     CallResult::Response { status, .. } if status == 500 => Decision::Retry,
///     _ => HttpRetry.decide(attempt),
/// };
/// # let _ = rule;
/// ```
///
/// A gRPC call answered `UNAVAILABLE` in a Trailers-Only response (the
/// status in its head; a status in the trailers comes after the answer has
/// begun, too late to retry). gRPC calls are `POST`s: configure
/// [`Methods::All`](super::Methods::All) for services whose calls are safe
/// to repeat.
///
/// ```
/// use tower_optimizer::retry::{Attempt, Decision, HttpRetry, Methods, RetryConfig, RetryOn};
/// use tower_optimizer::circuit_breaker::{CallResult, GrpcCode};
///
/// let grpc = |attempt: &Attempt<'_>| match attempt.result {
///     CallResult::Response { headers, .. } if GrpcCode::of(headers) == Some(GrpcCode::Unavailable) => {
///         Decision::Retry
///     }
///     _ => HttpRetry.decide(attempt),
/// };
/// let config = RetryConfig::builder().retry_on(grpc).methods(Methods::All).build().unwrap();
/// assert_eq!(config.max_attempts(), 3);
/// ```
pub trait RetryOn: Send + Sync + 'static {
    /// The decision for `attempt`.
    fn decide(&self, attempt: &Attempt<'_>) -> Decision;
}

impl<F> RetryOn for F
where
    F: Fn(&Attempt<'_>) -> Decision + Send + Sync + 'static,
{
    fn decide(&self, attempt: &Attempt<'_>) -> Decision {
        self(attempt)
    }
}

/// Statuses the default rule retries: the gateway's and the server's way
/// of saying "not now" (502, 503, 504), a request the server timed out
/// reading (408), and rate limiting (429). A 500 is not among them: it
/// usually means the request itself broke something, and repeating it
/// repeats that.
pub const RETRY_STATUSES: [u16; 5] = [502, 503, 504, 408, 429];

/// The default rule.
///
/// - A response with a status of [`RETRY_STATUSES`] is retried, after its
///   `Retry-After` where a 429 or 503 carries one.
/// - An open circuit ([`Open`]) is never retried: the breaker says the
///   host is down, and retrying would spend the budget on requests that
///   fail at once. Nor is load shedding (`tower`'s `Overloaded`):
///   retrying adds to the overload it reports.
/// - Nor is the caller's own failure (its request's body failed while
///   hyper sent it, or hyper refused the request): sent again, it fails
///   again.
/// - A request that never reached the server (a connection not made, a
///   refused HTTP/2 stream) is retried whatever the method.
/// - Any other error (a timeout, a reset, a `GOAWAY`) is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRetry;

impl RetryOn for HttpRetry {
    fn decide(&self, attempt: &Attempt<'_>) -> Decision {
        match attempt.result {
            CallResult::Response { status, headers } if RETRY_STATUSES.contains(&status.as_u16()) => {
                crate::circuit_breaker::retry_after(status, headers).map_or(Decision::Retry, Decision::RetryAfter)
            }
            CallResult::Response { .. } | CallResult::BodyError(_) | CallResult::Trailers(_) => Decision::Stop,
            CallResult::Error(error) => {
                // Checked first: `never_sent` counts these too.
                if Open::find(error).is_some() || is_overloaded(error) || crate::util::callers_fault(error) {
                    Decision::Stop
                } else if crate::util::never_sent(error) {
                    Decision::RetryAnyMethod
                } else {
                    Decision::Retry
                }
            }
        }
    }
}

fn is_overloaded(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .any(<dyn std::error::Error>::is::<tower::load_shed::error::Overloaded>)
}

/// How many times a request was sent again before the answer it got, in
/// that answer's extensions (OpenTelemetry's `http.request.resend_count`):
/// absent from an answer to the first attempt. An error after retries
/// carries none; [`RetryStats`](super::RetryStats) counts those.
///
/// ```
/// use tower_optimizer::retry::Resent;
///
/// let response = http::Response::new(());
/// assert_eq!(Resent::of(&response), 0);
/// let mut retried = http::Response::new(());
/// retried.extensions_mut().insert(Resent(2));
/// assert_eq!(Resent::of(&retried), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resent(pub u32);

impl Resent {
    /// How many times the request of `response` was sent again (0 if never).
    pub fn of<B>(response: &http::Response<B>) -> u32 {
        response.extensions().get::<Resent>().map_or(0, |r| r.0)
    }
}

/// How one request may be retried, chosen by its caller in the request's
/// extensions; it goes no further than the retry layer.
///
/// ```
/// use tower_optimizer::retry::RequestRetry;
///
/// let mut request = http::Request::post("http://api.test/payments").body(()).unwrap();
/// // The caller retries this one itself, with its own bookkeeping.
/// request.extensions_mut().insert(RequestRetry::Never);
/// # assert_eq!(request.extensions().get(), Some(&RequestRetry::Never));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestRetry {
    /// As the policy says.
    #[default]
    Default,
    /// Sent once, never retried.
    Never,
    /// Retried whatever its method, as an idempotent one is: the caller
    /// vouches that repeating it does no harm (a request with an
    /// `Idempotency-Key` header is taken as such without being marked).
    Idempotent,
}

/// Whether `request` may be repeated without changing what it does: an
/// idempotent method (RFC 9110 §9.2.2: the safe methods, `PUT` and
/// `DELETE`), an `Idempotency-Key` header (the IETF httpapi draft: the
/// server answers a repeat with the first answer), or the caller's word
/// ([`RequestRetry::Idempotent`]).
pub(crate) fn idempotent<B>(request: &http::Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || request.extensions().get::<RequestRetry>() == Some(&RequestRetry::Idempotent)
        || request.headers().contains_key("idempotency-key")
}

/// The wait before retry `retry` (1 for the first retry): a random time up
/// to `base * 2^(retry-1)`, capped at `max` ("full jitter": callers that
/// failed together do not come back together). `random` is in [0, 1).
pub(crate) fn backoff(retry: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let ceiling = (base.as_secs_f64() * 2f64.powi(exponent)).min(max.as_secs_f64());
    // Under a cap set without bound the product may pass what a
    // `Duration` holds: the cap then.
    Duration::try_from_secs_f64((ceiling * random).max(0.0)).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::BoxError;

    fn decide(method: &Method, result: CallResult<'_>) -> Decision {
        let uri = Uri::from_static("http://a.test/x");
        HttpRetry.decide(&Attempt {
            method,
            uri: &uri,
            number: 1,
            result,
        })
    }

    fn status(code: u16, headers: &HeaderMap) -> CallResult<'_> {
        CallResult::Response {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
        }
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        for code in RETRY_STATUSES {
            assert_eq!(decide(&Method::GET, status(code, &none)), Decision::Retry, "{code}");
        }
        for code in [200, 204, 304, 400, 404, 409, 500, 501] {
            assert_eq!(decide(&Method::GET, status(code, &none)), Decision::Stop, "{code}");
        }
        let mut later = HeaderMap::new();
        later.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(
            decide(&Method::GET, status(503, &later)),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            decide(&Method::GET, status(429, &later)),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        // Only 429 and 503 give `Retry-After` that meaning (RFC 9110 §10.2.3).
        assert_eq!(decide(&Method::GET, status(502, &later)), Decision::Retry);
        let mut garbage = HeaderMap::new();
        garbage.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(decide(&Method::GET, status(503, &garbage)), Decision::Retry);
    }

    #[test]
    fn errors() {
        let open: BoxError = Box::new(Open::new("http://a.test".into(), Duration::from_secs(5)));
        assert_eq!(decide(&Method::GET, CallResult::Error(&*open)), Decision::Stop);
        let wrapped: BoxError = Box::new(crate::util::Wrapped(open));
        assert_eq!(
            decide(&Method::GET, CallResult::Error(&*wrapped)),
            Decision::Stop,
            "found in the source chain"
        );
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(decide(&Method::GET, CallResult::Error(&*shed)), Decision::Stop);
        let refused: BoxError = Box::new(crate::util::Wrapped(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(
            decide(&Method::POST, CallResult::Error(&*refused)),
            Decision::RetryAnyMethod
        );
        let reset: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(decide(&Method::GET, CallResult::Error(&*reset)), Decision::Retry);
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(decide(&Method::GET, CallResult::Error(&*elapsed)), Decision::Retry);
        assert_eq!(decide(&Method::GET, CallResult::BodyError(&*reset)), Decision::Stop);
    }

    #[test]
    fn idempotent_requests() {
        let request = |method: &str| http::Request::builder().method(method).body(()).unwrap();
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(&request(method)), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!idempotent(&request(method)), "{method}");
        }
        let mut keyed = request("POST");
        keyed
            .headers_mut()
            .insert("idempotency-key", "\"8e03978e\"".parse().unwrap());
        assert!(idempotent(&keyed));
        let mut vouched = request("PATCH");
        vouched.extensions_mut().insert(RequestRetry::Idempotent);
        assert!(idempotent(&vouched));
        vouched.extensions_mut().insert(RequestRetry::Never);
        assert!(!idempotent(&vouched));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_jittered() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        let almost_one = 1.0 - f64::EPSILON;
        let ceiling = |retry| backoff(retry, base, max, almost_one).as_secs_f64();
        assert!((ceiling(1) - 0.05).abs() < 1e-6);
        assert!((ceiling(2) - 0.1).abs() < 1e-6);
        assert!((ceiling(3) - 0.2).abs() < 1e-6);
        assert!((ceiling(6) - 1.0).abs() < 1e-6, "capped");
        assert!((ceiling(u32::MAX) - 1.0).abs() < 1e-6, "no overflow");
        assert_eq!(backoff(3, base, max, 0.0), Duration::ZERO);
        assert!((backoff(3, base, max, 0.5).as_secs_f64() - 0.1).abs() < 1e-6);
        // A cap set without bound: the doubling passes what a `Duration`
        // holds, and the longest wait is still one.
        let longest = backoff(u32::MAX, base, Duration::MAX, 1.0 - f64::EPSILON);
        assert!(longest > Duration::from_secs(1 << 60), "{longest:?}");
    }
}
