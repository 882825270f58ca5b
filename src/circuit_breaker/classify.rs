//! Deciding whether a call succeeded, for the breaker.

use std::time::{Duration, SystemTime};

use http::header::{DATE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

/// What a call counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Counts as nothing (and gives a half-open probe slot back).
    Ignored,
}

/// A finished call, as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub enum CallResult<'a> {
    /// The inner service answered (the body may still fail later).
    Response {
        /// Status of the response.
        status: StatusCode,
        /// Its headers.
        headers: &'a HeaderMap,
    },
    /// The inner service failed: connect errors, timeouts
    /// (`tower::timeout::error::Elapsed`), HTTP/2 `REFUSED_STREAM` or
    /// `GOAWAY`, resets ...
    Error(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// A success-classified response whose body then failed mid-stream.
    BodyError(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// The trailers that ended a success-classified response's body: where
    /// gRPC puts a call's `grpc-status` (see [`GrpcClassifier`]).
    ///
    /// [`GrpcClassifier`]: super::GrpcClassifier
    Trailers(&'a HeaderMap),
}

/// Decides outcomes; implemented for closures, so a user rule can wrap the
/// default:
///
/// ```
/// use tower_optimizer::circuit_breaker::{CallResult, Classify, HttpClassifier, Outcome};
///
/// // Also count 404s as failures (a misrouted upstream), otherwise as usual.
/// let strict = |result: &CallResult<'_>| match result {
///     CallResult::Response { status, .. } if status.as_u16() == 404 => Outcome::Failure,
///     other => HttpClassifier.classify(other),
/// };
/// let headers = http::HeaderMap::new();
/// assert_eq!(strict.classify(&CallResult::Response { status: http::StatusCode::NOT_FOUND, headers: &headers }), Outcome::Failure);
/// ```
pub trait Classify: Send + Sync + 'static {
    /// The outcome of `result`.
    fn classify(&self, result: &CallResult<'_>) -> Outcome;
}

impl<F> Classify for F
where
    F: Fn(&CallResult<'_>) -> Outcome + Send + Sync + 'static,
{
    fn classify(&self, result: &CallResult<'_>) -> Outcome {
        self(result)
    }
}

/// The default: 500, 502, 503, 504, 408 and 429 fail, other statuses
/// (other 4xx included: the host answered correctly) succeed; every error
/// from the inner service fails, and so does a body that fails mid-stream.
/// Trailers change nothing (HTTP gives them no verdict; for gRPC's, use
/// [`GrpcClassifier`](super::GrpcClassifier)).
///
/// One kind of error counts as nothing: the caller's own, where the
/// request's body failed while hyper sent it (a proxy's client hanging up
/// mid-upload) or hyper refused the request as malformed. Over HTTP/1.1
/// hyper says so in a user error; over HTTP/2 it resets the stream itself,
/// a reset that came neither from the server nor from h2. Telling these
/// apart needs hyper's and h2's error types, which the `stack` and `retry`
/// features (and the default features) bring.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

/// Statuses the default classifier counts as failures.
pub const FAILURE_STATUSES: [u16; 6] = [500, 502, 503, 504, 408, 429];

impl Classify for HttpClassifier {
    fn classify(&self, result: &CallResult<'_>) -> Outcome {
        match result {
            CallResult::Response { status, .. } if FAILURE_STATUSES.contains(&status.as_u16()) => Outcome::Failure,
            CallResult::Response { .. } | CallResult::Trailers(_) => Outcome::Success,
            CallResult::Error(error) if crate::util::callers_fault(*error) => Outcome::Ignored,
            CallResult::Error(_) | CallResult::BodyError(_) => Outcome::Failure,
        }
    }
}

/// A `Retry-After` on a 429 or 503: delta-seconds or an HTTP-date.
pub(crate) fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    // A date is read against the response's own `Date` where it has one:
    // the server's clock may be off from ours, and the difference of two
    // of its readings is not.
    let date = headers
        .get(DATE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
        .unwrap_or_else(SystemTime::now);
    Some(at.duration_since(date).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classification_and_retry_after() {
        let h = HeaderMap::new();
        for (status, want) in [
            (500, Outcome::Failure),
            (429, Outcome::Failure),
            (408, Outcome::Failure),
            (404, Outcome::Success),
            (200, Outcome::Success),
            (501, Outcome::Success),
        ] {
            let got = HttpClassifier.classify(&CallResult::Response {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &h,
            });
            assert_eq!(got, want, "{status}");
        }
        let err: Box<dyn std::error::Error + Send + Sync> = "boom".into();
        assert_eq!(HttpClassifier.classify(&CallResult::Error(&*err)), Outcome::Failure);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(StatusCode::INTERNAL_SERVER_ERROR, &h), None);
        h.insert(RETRY_AFTER, "garbage".parse().unwrap());
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h), None);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        let got = retry_after(StatusCode::TOO_MANY_REQUESTS, &h).unwrap();
        assert!(got > Duration::from_secs(3590) && got <= Duration::from_secs(3600));
        // A server whose clock runs a day ahead: its `Date` says when.
        let ahead = SystemTime::now() + Duration::from_secs(86_400);
        h.insert(DATE, httpdate::fmt_http_date(ahead).parse().unwrap());
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(ahead + Duration::from_secs(30))
                .parse()
                .unwrap(),
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(Duration::from_secs(30))
        );
        h.insert(DATE, "not a date".parse().unwrap());
        let got = retry_after(StatusCode::SERVICE_UNAVAILABLE, &h).unwrap();
        assert!(got > Duration::from_secs(86_000), "no usable Date: our clock");
    }
}
