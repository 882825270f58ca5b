//! What to invalidate: keys, tags, namespaces and patterns.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

use super::error::InvalidationError;
use crate::cache::write::split_origin;

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
    /// A regex over the whole key, or over path and query when it is
    /// anchored at a path (`^/users/\d+$`): no key starts with `/`, so over
    /// the whole key such a regex could never match anything. An invalid
    /// regex is an error.
    ///
    /// ```
    /// use tower_optimizer::invalidation::{Pattern, PatternScope};
    ///
    /// let path = Pattern::new(r"^/users/\d+$").unwrap();
    /// assert_eq!(path.scope(), PatternScope::PathAndQuery);
    /// assert!(path.is_match("https://api.example/users/7"));
    /// let key = Pattern::new(r"^https://api\.example/").unwrap();
    /// assert_eq!(key.scope(), PatternScope::Key);
    /// assert!(!key.is_match("https://other.example/users/7"));
    /// ```
    pub fn new(regex: &str) -> Result<Pattern, InvalidationError> {
        let scope = if anchored_at_path(regex) {
            PatternScope::PathAndQuery
        } else {
            PatternScope::Key
        };
        Self::compile(regex, scope)
    }

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

    /// What part of a key it is matched against.
    pub fn scope(&self) -> PatternScope {
        self.scope
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

/// Whether `regex` only matches text that starts with `/`: it begins, after
/// any inline flag groups such as `(?i)`, with `^/` or `\A/`.
fn anchored_at_path(regex: &str) -> bool {
    let mut rest = regex;
    while let Some(after) = rest.strip_prefix("(?") {
        match after.find(')') {
            Some(end) if after[..end].chars().all(|c| c.is_ascii_alphabetic() || c == '-') => {
                rest = &after[end + 1..];
            }
            _ => break,
        }
    }
    rest.starts_with("^/") || rest.starts_with("\\A/")
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
    }

    #[test]
    fn a_regex_anchored_at_a_path_is_matched_against_the_path() {
        for (regex, scope) in [
            (r"^/users/\d+$", PatternScope::PathAndQuery),
            (r"\A/users", PatternScope::PathAndQuery),
            (r"(?i)^/Users", PatternScope::PathAndQuery),
            (r"(?i)(?-u)^/x", PatternScope::PathAndQuery),
            (r"^https://a\.test/users", PatternScope::Key),
            (r"/users/\d+$", PatternScope::Key),
            (r"(?:^/x)", PatternScope::Key),
            (r"(?i:^/x)", PatternScope::Key),
            ("^", PatternScope::Key),
            ("", PatternScope::Key),
        ] {
            assert_eq!(Pattern::new(regex).unwrap().scope(), scope, "{regex}");
        }
        let p = Pattern::new(r"(?i)^/users/\d+$").unwrap();
        assert!(p.is_match("http://a.test/USERS/7"));
        assert!(!p.is_match("http://a.test/teams/users/7"));
        let unanchored = Pattern::new(r"/users/\d+$").unwrap();
        assert!(unanchored.is_match("http://a.test/users/7"));
        assert!(Pattern::new("(?i)(").unwrap_err().is_pattern());
    }
}
