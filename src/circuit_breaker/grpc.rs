//! gRPC-aware classification: a gRPC call fails in its `grpc-status`, not in
//! its HTTP status, which is `200` whatever happened.
//!
//! A gRPC response carries its status in the trailers after the messages,
//! or, when it has no message (a "Trailers-Only" response), in its head
//! (gRPC over HTTP/2, `PROTOCOL-HTTP2.md`). [`GrpcClassifier`] reads it in
//! either place, so a breaker in front of a tonic channel opens on
//! `UNAVAILABLE`s as it would on `503`s.
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_optimizer::circuit_breaker::{CallResult, Classify, GrpcClassifier, GrpcCode, Outcome};
//!
//! let grpc = GrpcClassifier::new();
//! let mut trailers = HeaderMap::new();
//! trailers.insert("grpc-status", "14".parse().unwrap());
//! assert_eq!(GrpcCode::of(&trailers), Some(GrpcCode::Unavailable));
//! assert_eq!(grpc.classify(&CallResult::Trailers(&trailers)), Outcome::Failure);
//! // The host answered; the caller asked for something that is not there.
//! trailers.insert("grpc-status", "5".parse().unwrap());
//! assert_eq!(grpc.classify(&CallResult::Trailers(&trailers)), Outcome::Success);
//! // A head without `grpc-status` waits for the trailers.
//! let head = HeaderMap::new();
//! let ok = CallResult::Response { status: StatusCode::OK, headers: &head };
//! assert_eq!(grpc.classify(&ok), Outcome::Success);
//! ```

use super::classify::{CallResult, Classify, HttpClassifier, Outcome};
use crate::grpc::GrpcCode;

/// The codes [`GrpcClassifier`] counts as failures unless told otherwise:
/// those that say the server is unwell or overloaded, as the statuses of
/// [`FAILURE_STATUSES`](super::FAILURE_STATUSES) do for HTTP (`UNKNOWN` and
/// `INTERNAL` as a 500, `DEADLINE_EXCEEDED` as a 504, `RESOURCE_EXHAUSTED`
/// as a 429, `UNAVAILABLE` as a 503, and `DATA_LOSS`). The other codes say
/// the server answered the call as asked, if not as hoped (`NOT_FOUND`,
/// `INVALID_ARGUMENT` ...), and count as successes, as other 4xx do;
/// `CANCELLED` counts as nothing, as a call its caller dropped does.
pub const DEFAULT_GRPC_FAILURES: [GrpcCode; 6] = [
    GrpcCode::Unknown,
    GrpcCode::DeadlineExceeded,
    GrpcCode::ResourceExhausted,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
];

/// Classifies gRPC calls by their `grpc-status` (in the head of a
/// Trailers-Only response, otherwise in the trailers), and anything else
/// as [`HttpClassifier`] does: a response with no `grpc-status` in its
/// head (a gRPC call with messages to come, or plain HTTP) by its HTTP
/// status, pending its body; errors, and bodies that fail, as failures.
/// Trailers without `grpc-status` change nothing (plain HTTP trailers).
///
/// Set it with
/// [`CircuitBreakerConfigBuilder::classifier`](super::CircuitBreakerConfigBuilder::classifier),
/// or `classifier = "grpc"` in the stack's `[circuit_breaker]` section.
/// Each code's outcome can be changed:
///
/// ```
/// use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, GrpcClassifier, GrpcCode, Outcome};
///
/// // A backend whose `NOT_FOUND`s mean it lost its data.
/// let grpc = GrpcClassifier::new().outcome(GrpcCode::NotFound, Outcome::Failure);
/// assert_eq!(grpc.outcome_of(GrpcCode::NotFound), Outcome::Failure);
/// let config = CircuitBreakerConfig::builder().classifier(grpc).build().unwrap();
/// # drop(config);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    /// Indexed by code.
    outcomes: [Outcome; GrpcCode::ALL.len()],
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        let mut outcomes = [Outcome::Success; GrpcCode::ALL.len()];
        outcomes[GrpcCode::Cancelled as usize] = Outcome::Ignored;
        for code in DEFAULT_GRPC_FAILURES {
            outcomes[code as usize] = Outcome::Failure;
        }
        GrpcClassifier { outcomes }
    }
}

impl GrpcClassifier {
    /// The default outcomes (see [`DEFAULT_GRPC_FAILURES`]).
    pub fn new() -> Self {
        GrpcClassifier::default()
    }

    /// `code` counts as `outcome`.
    #[must_use]
    pub fn outcome(mut self, code: GrpcCode, outcome: Outcome) -> Self {
        self.outcomes[code as usize] = outcome;
        self
    }

    /// What `code` counts as.
    pub fn outcome_of(&self, code: GrpcCode) -> Outcome {
        self.outcomes[code as usize]
    }
}

impl Classify for GrpcClassifier {
    fn classify(&self, result: &CallResult<'_>) -> Outcome {
        match result {
            CallResult::Response { headers, .. } | CallResult::Trailers(headers) => match GrpcCode::of(headers) {
                Some(code) => self.outcome_of(code),
                None => HttpClassifier.classify(result),
            },
            CallResult::Error(_) | CallResult::BodyError(_) => HttpClassifier.classify(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    fn headers(status: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(status) = status {
            headers.insert("grpc-status", HeaderValue::from_static(status));
        }
        headers
    }

    #[test]
    fn outcomes_by_code_head_and_trailers() {
        let grpc = GrpcClassifier::new();
        let failing: Vec<GrpcCode> = GrpcCode::ALL
            .into_iter()
            .filter(|c| grpc.outcome_of(*c) == Outcome::Failure)
            .collect();
        assert_eq!(failing, DEFAULT_GRPC_FAILURES);
        assert_eq!(grpc.outcome_of(GrpcCode::Cancelled), Outcome::Ignored);
        assert_eq!(grpc.outcome_of(GrpcCode::InvalidArgument), Outcome::Success);

        let unavailable = headers(Some("14"));
        let ok = StatusCode::OK;
        // Trailers-Only: the head decides.
        let head = CallResult::Response {
            status: ok,
            headers: &unavailable,
        };
        assert_eq!(grpc.classify(&head), Outcome::Failure);
        assert_eq!(grpc.classify(&CallResult::Trailers(&unavailable)), Outcome::Failure);
        // No status yet: success pending the trailers; an HTTP failure
        // status still fails.
        let none = headers(None);
        assert_eq!(
            grpc.classify(&CallResult::Response {
                status: ok,
                headers: &none
            }),
            Outcome::Success
        );
        let bad_gateway = CallResult::Response {
            status: StatusCode::BAD_GATEWAY,
            headers: &none,
        };
        assert_eq!(grpc.classify(&bad_gateway), Outcome::Failure);
        assert_eq!(grpc.classify(&CallResult::Trailers(&none)), Outcome::Success);
        let malformed = headers(Some("fourteen"));
        assert_eq!(
            grpc.classify(&CallResult::Trailers(&malformed)),
            Outcome::Failure,
            "UNKNOWN"
        );
        let error: Box<dyn std::error::Error + Send + Sync> = "reset".into();
        assert_eq!(grpc.classify(&CallResult::BodyError(&*error)), Outcome::Failure);

        let changed = grpc
            .outcome(GrpcCode::Unavailable, Outcome::Ignored)
            .outcome(GrpcCode::NotFound, Outcome::Failure);
        assert_eq!(changed.classify(&CallResult::Trailers(&unavailable)), Outcome::Ignored);
        assert_eq!(
            changed.classify(&CallResult::Trailers(&headers(Some("5")))),
            Outcome::Failure
        );
        // The plain HTTP classifier gives trailers no verdict.
        assert_eq!(
            HttpClassifier.classify(&CallResult::Trailers(&unavailable)),
            Outcome::Success
        );
    }
}
