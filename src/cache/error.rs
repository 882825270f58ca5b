//! Error types of the cache.
//!
//! ```
//! use tower_optimizer::cache::Cache;
//!
//! let error = Cache::builder().exclude("/private/(").build().unwrap_err();
//! assert!(error.to_string().starts_with("invalid cache configuration"));
//! assert!(std::error::Error::source(&error).is_some(), "the regex error is its source");
//! ```

use std::fmt;

/// The cache configuration is invalid; returned by [`CacheBuilder::build`](super::CacheBuilder::build).
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<regex::Error>,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn regex(error: regex::Error) -> Self {
        BuildError {
            message: "invalid exclusion pattern".into(),
            source: Some(error),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache configuration: {}", self.message)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
