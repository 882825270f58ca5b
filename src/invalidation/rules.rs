//! CRUD invalidation rules: a method and a path template with captures,
//! mapped to tags, keys, patterns and namespaces to invalidate.
//!
//! ```
//! use http::Method;
//! use tower_optimizer::invalidation::Rule;
//!
//! let rule = Rule::new(Method::PUT, "/users/{id}")
//!     .unwrap()
//!     .tag("user:{id}")
//!     .pattern(r"^/users(\?.*)?$")
//!     .unwrap();
//! let hit = rule.matches(&Method::PUT, "/users/42").unwrap();
//! assert_eq!(hit.tags, ["user:42"]);
//! assert!(rule.matches(&Method::GET, "/users/42").is_none());
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use http::Method;
use regex::Regex;

use super::error::InvalidationError;

/// A rule: when a request with `method` to a path matching the template
/// succeeds, invalidate the targets (with `{name}` filled from the path).
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<Method>,
    path: Regex,
    names: Vec<String>,
    tags: Vec<String>,
    keys: Vec<String>,
    patterns: Vec<String>,
    namespaces: Vec<String>,
}

/// The targets of a rule for one request, captures filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMatch {
    /// Tags to invalidate.
    pub tags: Vec<String>,
    /// Paths (same origin) to invalidate.
    pub keys: Vec<String>,
    /// Regexes over path and query (same origin); captures are escaped.
    pub patterns: Vec<String>,
    /// Namespaces to bump.
    pub namespaces: Vec<String>,
}

impl Rule {
    /// A rule for `method` on paths matching `template`, where `{name}`
    /// matches one path segment. Use [`Rule::any_method`] for every unsafe method.
    pub fn new(method: Method, template: &str) -> Result<Rule, InvalidationError> {
        let mut rule = Rule::any_method(template)?;
        rule.method = Some(method);
        Ok(rule)
    }

    /// A rule for every unsafe method on paths matching `template`.
    pub fn any_method(template: &str) -> Result<Rule, InvalidationError> {
        let mut regex = String::from("^");
        let mut names = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            regex.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| InvalidationError::rule(template, "unclosed '{'"))?;
            let name = &rest[open + 1..open + close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InvalidationError::rule(
                    template,
                    "capture names are letters, digits and '_'",
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(InvalidationError::rule(template, "a capture name is used twice"));
            }
            let _ = write!(regex, "(?P<{name}>[^/?]+)");
            names.push(name.to_owned());
            rest = &rest[open + close + 1..];
        }
        regex.push_str(&regex::escape(rest));
        regex.push('$');
        let path = Regex::new(&regex).map_err(|e| InvalidationError::pattern(&regex, e))?;
        Ok(Rule {
            method: None,
            path,
            names,
            tags: Vec::new(),
            keys: Vec::new(),
            patterns: Vec::new(),
            namespaces: Vec::new(),
        })
    }

    /// Also invalidate this tag (`{name}` filled from the path).
    #[must_use]
    pub fn tag(mut self, template: &str) -> Self {
        self.tags.push(template.to_owned());
        self
    }

    /// Also invalidate this path on the request's origin.
    #[must_use]
    pub fn key(mut self, template: &str) -> Self {
        self.keys.push(template.to_owned());
        self
    }

    /// Also bump this namespace.
    #[must_use]
    pub fn namespace(mut self, template: &str) -> Self {
        self.namespaces.push(template.to_owned());
        self
    }

    /// Also invalidate paths (with query) on the request's origin matching
    /// this regex. It is checked now, with every capture set to a sample
    /// value, so a bad regex is an error here rather than at request time.
    pub fn pattern(mut self, template: &str) -> Result<Self, InvalidationError> {
        let sample: HashMap<&str, &str> = self.names.iter().map(|n| (n.as_str(), "x")).collect();
        let filled = fill(template, &sample, true);
        Regex::new(&filled).map_err(|e| InvalidationError::pattern(&filled, e))?;
        self.patterns.push(template.to_owned());
        Ok(self)
    }

    /// The targets for a request, or `None` if the rule does not apply.
    pub fn matches(&self, method: &Method, path: &str) -> Option<RuleMatch> {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return None;
        }
        let captures = self.path.captures(path)?;
        let values: HashMap<&str, &str> = self
            .names
            .iter()
            .filter_map(|n| Some((n.as_str(), captures.name(n)?.as_str())))
            .collect();
        Some(RuleMatch {
            tags: self.tags.iter().map(|t| fill(t, &values, false)).collect(),
            keys: self.keys.iter().map(|t| fill(t, &values, false)).collect(),
            patterns: self.patterns.iter().map(|t| fill(t, &values, true)).collect(),
            namespaces: self.namespaces.iter().map(|t| fill(t, &values, false)).collect(),
        })
    }
}

/// Replaces `{name}` for the known names; other braces (regex repetition
/// like `\d{3}`) are left alone. Values are regex-escaped when `escape`.
fn fill(template: &str, values: &HashMap<&str, &str>, escape: bool) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        let value = if escape {
            regex::escape(value)
        } else {
            (*value).to_owned()
        };
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let rule = Rule::new(Method::DELETE, "/teams/{team}/members/{id}")
            .unwrap()
            .tag("member:{id}")
            .key("/teams/{team}")
            .namespace("team-{team}")
            .pattern(r"^/teams/{team}/members(\?.*)?$")
            .unwrap();
        let hit = rule.matches(&Method::DELETE, "/teams/a.b/members/7").unwrap();
        assert_eq!(hit.tags, ["member:7"]);
        assert_eq!(hit.keys, ["/teams/a.b"]);
        assert_eq!(hit.namespaces, ["team-a.b"]);
        assert_eq!(
            hit.patterns,
            [r"^/teams/a\.b/members(\?.*)?$"],
            "captures are escaped in patterns"
        );
        assert!(rule.matches(&Method::DELETE, "/teams/a/members/7/x").is_none());
        assert!(rule.matches(&Method::PUT, "/teams/a/members/7").is_none());
        let any = Rule::any_method("/x/{id}")
            .unwrap()
            .pattern(r"^/y/\d{3}/{id}$")
            .unwrap();
        assert_eq!(any.matches(&Method::POST, "/x/1").unwrap().patterns, [r"^/y/\d{3}/1$"]);
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(Rule::any_method("/x/{id").is_err());
        assert!(Rule::any_method("/x/{}").is_err());
        assert!(Rule::any_method("/x/{a-b}").is_err());
        assert!(Rule::any_method("/x/{a}/{a}").is_err());
        let err = Rule::any_method("/x").unwrap().pattern("(").unwrap_err();
        assert!(err.to_string().contains("invalid pattern"), "{err}");
    }
}
