//! Error types of the cache.
//!
//! ```
//! use tower_optimizer::cache::Cache;
//!
//! let error = Cache::builder().exclude("/private/(").build().unwrap_err();
//! assert!(error.to_string().starts_with("invalid cache configuration"));
//! assert!(std::error::Error::source(&error).is_some(), "the regex error is its source");
//! assert_eq!(error.setting(), "exclude");
//! ```

use std::fmt;

/// The cache configuration is invalid; returned by [`CacheBuilder::build`](super::CacheBuilder::build).
#[derive(Debug)]
pub struct BuildError {
    setting: &'static str,
    message: String,
    source: Option<regex::Error>,
}

impl BuildError {
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        BuildError {
            setting,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn regex(error: regex::Error) -> Self {
        BuildError {
            setting: "exclude",
            message: "invalid exclusion pattern".into(),
            source: Some(error),
        }
    }

    /// The [`CacheBuilder`](super::CacheBuilder) setting at fault, by its
    /// method's name (`"max_bytes"`, `"exclude"`, `"vary_on"`, ...), for a
    /// caller that maps it back to where the value came from (as
    /// [`OptimizerConfig`](crate::stack::OptimizerConfig) names its key).
    #[must_use]
    pub fn setting(&self) -> &'static str {
        self.setting
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
