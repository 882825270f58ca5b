//! What to invalidate: keys, tags, namespaces and patterns.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

use super::error::InvalidationError;

/// One thing to invalidate.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every variant stored under a key (a normalised absolute URI).
    Key(Arc<str>),
    /// Every entry carrying a tag.
    Tag(Arc<str>),
    /// Every entry stamped with a namespace (a version bump, O(1)).
    Namespace(Arc<str>),
    /// Every entry whose key matches a pattern (a chunked scan).
    Pattern(Pattern),
}

/// What part of the key a [`Pattern`] is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternScope {
    /// The whole key: `scheme://authority/path?query`.
    Key,
    /// Path and query only (`/users/7?x=1`), optionally limited to one origin.
    PathAndQuery,
}

/// A compiled regex over cache keys, reusable across invalidations.
#[derive(Clone)]
pub struct Pattern {
    regex: Arc<Regex>,
    scope: PatternScope,
    origin: Option<Arc<str>>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("regex", &self.regex.as_str())
            .field("scope", &self.scope)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Pattern {
    /// A regex over the whole key; an invalid regex is an error.
    pub fn key(regex: &str) -> Result<Pattern, InvalidationError> {
        Self::compile(regex, PatternScope::Key)
    }

    /// A regex over path and query.
    pub fn path(regex: &str) -> Result<Pattern, InvalidationError> {
        Self::compile(regex, PatternScope::PathAndQuery)
    }

    fn compile(regex: &str, scope: PatternScope) -> Result<Pattern, InvalidationError> {
        let compiled = Regex::new(regex).map_err(|e| InvalidationError::pattern(regex, e))?;
        Ok(Pattern {
            regex: Arc::new(compiled),
            scope,
            origin: None,
        })
    }

    /// Limits the pattern to keys of one origin (`scheme://authority`).
    #[must_use]
    pub fn on_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Whether `key` matches.
    pub fn is_match(&self, key: &str) -> bool {
        let (origin, rest) = split_origin(key);
        if self.origin.as_deref().is_some_and(|o| o != origin) {
            return false;
        }
        match self.scope {
            PatternScope::Key => self.regex.is_match(key),
            PatternScope::PathAndQuery => self.regex.is_match(rest),
        }
    }
}

/// Splits a key into its origin and its path-and-query.
pub(crate) fn split_origin(key: &str) -> (&str, &str) {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    match key[after_scheme..].find('/') {
        Some(i) => key.split_at(after_scheme + i),
        None => (key, "/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_origins() {
        let p = Pattern::path(r"^/users/\d+$").unwrap();
        assert!(p.is_match("http://a.test/users/7"));
        assert!(!p.is_match("http://a.test/users/7?x"));
        let p = p.on_origin("http://a.test");
        assert!(!p.is_match("http://b.test/users/7"));
        let k = Pattern::key(r"^https://[^/]+/v2/").unwrap();
        assert!(k.is_match("https://x.test/v2/a") && !k.is_match("http://x.test/v2/a"));
        assert!(Pattern::key("(").unwrap_err().is_pattern());
        assert_eq!(split_origin("http://a.test"), ("http://a.test", "/"));
    }
}
