//! Error types of invalidation.
//!
//! ```
//! use tower_optimizer::cache::Cache;
//! use tower_optimizer::invalidation::{Invalidator, Rule};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inv = Invalidator::new(Cache::builder().build().unwrap());
//! let error = inv.pattern("([").await.unwrap_err();
//! assert!(error.is_pattern());
//! assert_eq!(error.to_string(), "invalid pattern \"([\"");
//! assert!(Rule::any_method("/x").unwrap().pattern("(").is_err());
//! # }
//! ```

use std::fmt;

/// An invalidation request that cannot be carried out as asked.
#[derive(Debug)]
pub struct InvalidationError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Pattern { pattern: String, source: regex::Error },
    Rule { template: String, reason: &'static str },
    NotCached { key: String },
}

impl InvalidationError {
    pub(crate) fn pattern(pattern: &str, source: regex::Error) -> Self {
        InvalidationError {
            kind: Kind::Pattern {
                pattern: pattern.to_owned(),
                source,
            },
        }
    }

    pub(crate) fn rule(template: &str, reason: &'static str) -> Self {
        InvalidationError {
            kind: Kind::Rule {
                template: template.to_owned(),
                reason,
            },
        }
    }

    pub(crate) fn not_cached(key: &str) -> Self {
        InvalidationError {
            kind: Kind::NotCached { key: key.to_owned() },
        }
    }

    /// Whether a regex did not compile.
    pub fn is_pattern(&self) -> bool {
        matches!(self.kind, Kind::Pattern { .. })
    }

    /// Whether a dependency named a key that is not stored.
    pub fn is_not_cached(&self) -> bool {
        matches!(self.kind, Kind::NotCached { .. })
    }
}

impl fmt::Display for InvalidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Pattern { pattern, .. } => write!(f, "invalid pattern {pattern:?}"),
            Kind::Rule { template, reason } => write!(f, "invalid rule {template:?}: {reason}"),
            Kind::NotCached { key } => write!(f, "nothing is stored under {key:?} to depend on anything"),
        }
    }
}

impl std::error::Error for InvalidationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Pattern { source, .. } => Some(source),
            _ => None,
        }
    }
}
