//! gRPC status codes, as a response carries them in its `grpc-status`
//! (in the trailers after the messages, or in the head of a response that
//! has none, "Trailers-Only"): what the breaker's
//! [`GrpcClassifier`](crate::circuit_breaker::GrpcClassifier) judges a call
//! by, and what the metrics layer labels it with.
//!
//! ```
//! use http::HeaderMap;
//! use tower_optimizer::grpc::GrpcCode;
//!
//! let mut trailers = HeaderMap::new();
//! trailers.insert("grpc-status", "14".parse().unwrap());
//! let code = GrpcCode::of(&trailers).unwrap();
//! assert_eq!((code, code.name()), (GrpcCode::Unavailable, "UNAVAILABLE"));
//! ```

use http::{HeaderMap, HeaderValue};

/// The header (or trailer) that carries a gRPC call's status.
const GRPC_STATUS: &str = "grpc-status";

/// A gRPC status code (gRPC's `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    /// 0: not an error.
    Ok = 0,
    /// 1: the call was cancelled, usually by its caller.
    Cancelled = 1,
    /// 2: an unknown error (also what an unknown or malformed code reads as).
    Unknown = 2,
    /// 3: the caller sent an invalid argument.
    InvalidArgument = 3,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// 5: something asked for was not found.
    NotFound = 5,
    /// 6: something to be created already exists.
    AlreadyExists = 6,
    /// 7: the caller may not do this.
    PermissionDenied = 7,
    /// 8: a resource (a quota, the server's capacity) ran out.
    ResourceExhausted = 8,
    /// 9: the system is not in a state the call requires.
    FailedPrecondition = 9,
    /// 10: aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// 11: out of the valid range.
    OutOfRange = 11,
    /// 12: not implemented or not supported by the server.
    Unimplemented = 12,
    /// 13: an internal error of the server.
    Internal = 13,
    /// 14: the service is unavailable (the usual transient failure).
    Unavailable = 14,
    /// 15: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// 16: the caller is not authenticated.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// Every code, in numeric order.
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code a `grpc-status` value gives: a code gRPC does not define,
    /// or text that is no number, reads as [`GrpcCode::Unknown`], as gRPC
    /// clients read it.
    pub fn from_value(value: &HeaderValue) -> GrpcCode {
        // At most two digits: anything longer is no code (and cannot
        // overflow the parse).
        let digits = value.as_bytes();
        if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
            return GrpcCode::Unknown;
        }
        let n = digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        GrpcCode::ALL.get(n).copied().unwrap_or(GrpcCode::Unknown)
    }

    /// The `grpc-status` in `headers` (a response's head or its trailers),
    /// if there is one.
    pub fn of(headers: &HeaderMap) -> Option<GrpcCode> {
        headers.get(GRPC_STATUS).map(GrpcCode::from_value)
    }

    /// Its name as gRPC spells it (`"UNAVAILABLE"`).
    pub const fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// The codes' names, in numeric order.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_as_grpc_clients_read_them() {
        for (text, code) in [
            ("0", GrpcCode::Ok),
            ("14", GrpcCode::Unavailable),
            ("16", GrpcCode::Unauthenticated),
            ("05", GrpcCode::NotFound),
            // Not a code gRPC defines, or not a number: UNKNOWN.
            ("17", GrpcCode::Unknown),
            ("99", GrpcCode::Unknown),
            ("999999999999999999999999", GrpcCode::Unknown),
            ("", GrpcCode::Unknown),
            (" 14", GrpcCode::Unknown),
            ("-1", GrpcCode::Unknown),
            ("unavailable", GrpcCode::Unknown),
        ] {
            assert_eq!(GrpcCode::from_value(&HeaderValue::from_static(text)), code, "{text:?}");
        }
        for code in GrpcCode::ALL {
            let text = HeaderValue::from(code as u16);
            assert_eq!(GrpcCode::from_value(&text), code);
        }
        assert_eq!(GrpcCode::of(&HeaderMap::new()), None);
    }

    #[test]
    fn names_follow_the_codes() {
        assert_eq!(GrpcCode::Ok.name(), "OK");
        assert_eq!(GrpcCode::DeadlineExceeded.name(), "DEADLINE_EXCEEDED");
        assert_eq!(GrpcCode::Unauthenticated.name(), "UNAUTHENTICATED");
        assert_eq!(NAMES.len(), GrpcCode::ALL.len());
    }
}
