//! tower-http's response classifiers as the breaker's [`Classify`]: one
//! rule for a `TraceLayer` and a circuit breaker alike.
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_http::classify::StatusInRangeAsFailures;
//! use tower_optimizer::circuit_breaker::{CallResult, Classify, Outcome, TowerHttpClassifier};
//!
//! // tower-http's rule for clients: every 4xx and 5xx is a failure.
//! let rule = TowerHttpClassifier::new(StatusInRangeAsFailures::new_for_client_and_server_errors());
//! let headers = HeaderMap::new();
//! let answer = |status| CallResult::Response { status, headers: &headers };
//! assert_eq!(rule.classify(&answer(StatusCode::NOT_FOUND)), Outcome::Failure);
//! assert_eq!(rule.classify(&answer(StatusCode::OK)), Outcome::Success);
//! ```

use http::Response;
use tower_http::classify::{ClassifiedResponse, ClassifyEos, ClassifyResponse};

use super::classify::{CallResult, Classify, Outcome};

/// A tower-http [`ClassifyResponse`] (`ServerErrorsAsFailures`,
/// `StatusInRangeAsFailures`, `GrpcErrorsAsFailures`, or your own) deciding
/// the breaker's outcomes, set with
/// [`CircuitBreakerConfigBuilder::classifier`](super::CircuitBreakerConfigBuilder::classifier).
///
/// How each result is read:
/// - an answer: the classifier's verdict on its status and headers
///   (`Ready(Err(_))` fails; `Ready(Ok(()))` succeeds, and so does
///   `RequiresEos`, whose verdict waits for the trailers);
/// - trailers: the end-of-stream classifier the wrapped one makes for an
///   answer with no header lines (what gRPC's makes whatever the head),
///   on those trailers; a classifier that decides on the head alone leaves
///   the success as it was;
/// - a body that ends without trailers succeeds, as tower-http's own
///   end-of-stream classifiers say of `classify_eos(None)`;
/// - an error from the inner service or the body fails: tower-http's
///   `classify_error` has no success to give; except the caller's own
///   errors (its request's body failed), which count as nothing, as with
///   [`HttpClassifier`](super::HttpClassifier).
///
/// Each answer's headers are copied once for the classifier to read (it
/// takes a `Response`); [`HttpClassifier`](super::HttpClassifier) and
/// [`GrpcClassifier`](super::GrpcClassifier) read them in place.
#[derive(Debug, Clone)]
pub struct TowerHttpClassifier<C> {
    inner: C,
}

impl<C> TowerHttpClassifier<C> {
    /// Wraps `classifier`.
    pub fn new(classifier: C) -> Self {
        TowerHttpClassifier { inner: classifier }
    }

    /// The wrapped classifier.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C> Classify for TowerHttpClassifier<C>
where
    C: ClassifyResponse + Clone + Send + Sync + 'static,
{
    fn classify(&self, result: &CallResult<'_>) -> Outcome {
        match result {
            CallResult::Response { status, headers } => {
                let mut head = Response::new(());
                *head.status_mut() = *status;
                head.headers_mut().clone_from(headers);
                match self.inner.clone().classify_response(&head) {
                    ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                    ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => Outcome::Success,
                }
            }
            CallResult::Trailers(trailers) => match self.inner.clone().classify_response(&Response::new(())) {
                ClassifiedResponse::RequiresEos(eos) => match eos.classify_eos(Some(trailers)) {
                    Ok(()) => Outcome::Success,
                    Err(_) => Outcome::Failure,
                },
                ClassifiedResponse::Ready(_) => Outcome::Success,
            },
            CallResult::Error(error) if crate::util::callers_fault(*error) => Outcome::Ignored,
            CallResult::Error(_) | CallResult::BodyError(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, StatusCode};
    use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, ServerErrorsAsFailures};

    use super::*;

    fn grpc_status(code: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static(code));
        headers
    }

    #[test]
    fn server_errors_as_failures() {
        let rule = TowerHttpClassifier::new(ServerErrorsAsFailures::new());
        let headers = HeaderMap::new();
        for (status, want) in [
            (200, Outcome::Success),
            (404, Outcome::Success),
            (429, Outcome::Success),
            (500, Outcome::Failure),
            (503, Outcome::Failure),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                rule.classify(&CallResult::Response {
                    status,
                    headers: &headers
                }),
                want,
                "{status}"
            );
        }
        // Its verdict is the head's: trailers leave a success alone.
        assert_eq!(
            rule.classify(&CallResult::Trailers(&grpc_status("14"))),
            Outcome::Success
        );
        let error: Box<dyn std::error::Error + Send + Sync> = "reset".into();
        assert_eq!(rule.classify(&CallResult::Error(&*error)), Outcome::Failure);
        assert_eq!(rule.classify(&CallResult::BodyError(&*error)), Outcome::Failure);
    }

    #[test]
    fn grpc_errors_as_failures_reads_heads_and_trailers() {
        let rule = TowerHttpClassifier::new(GrpcErrorsAsFailures::new().with_success(GrpcCode::NotFound));
        let ok = StatusCode::OK;
        let no_status = HeaderMap::new();
        // No `grpc-status` in the head: the trailers will say.
        assert_eq!(
            rule.classify(&CallResult::Response {
                status: ok,
                headers: &no_status
            }),
            Outcome::Success
        );
        for (code, want) in [
            ("0", Outcome::Success),
            ("5", Outcome::Success),
            ("14", Outcome::Failure),
        ] {
            let fields = grpc_status(code);
            assert_eq!(rule.classify(&CallResult::Trailers(&fields)), want, "trailers {code}");
            // A Trailers-Only answer carries it in the head.
            let head = CallResult::Response {
                status: ok,
                headers: &fields,
            };
            assert_eq!(rule.classify(&head), want, "head {code}");
        }
        // Trailers without `grpc-status` (plain HTTP ones) change nothing.
        assert_eq!(rule.classify(&CallResult::Trailers(&no_status)), Outcome::Success);
    }
}
