//! Route templates for the `url.template` label: a request's path reduced to
//! the route it matched (`/users/{id}`), so labels stay bounded. Raw paths
//! are never labels; a request no template matches gets no `url.template`.
//!
//! ```
//! use http::{Method, Uri};
//! use tower_optimizer::monitor::{RouteTemplate, RouteTemplates};
//!
//! let routes = RouteTemplates::new(["/users/me", "/users/{id}", "/files/{*path}"])?;
//! let uri: Uri = "http://api.test/users/42?full=1".parse()?;
//! assert_eq!(routes.template(&Method::GET, &uri).as_deref(), Some("/users/{id}"));
//! let uri: Uri = "http://api.test/users/me".parse()?;
//! assert_eq!(routes.template(&Method::GET, &uri).as_deref(), Some("/users/me"));
//! let uri: Uri = "http://api.test/files/a/b.txt".parse()?;
//! assert_eq!(routes.template(&Method::GET, &uri).as_deref(), Some("/files/{*path}"));
//! let uri: Uri = "http://api.test/other".parse()?;
//! assert_eq!(routes.template(&Method::GET, &uri), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use http::{Method, Uri};

/// Names the route template of a request, for the `url.template` label.
///
/// Implemented for [`RouteTemplates`] and for closures
/// `Fn(&Method, &Uri) -> Option<Arc<str>>`. Whatever it returns becomes a
/// label value: return templates from a fixed set, never the raw path.
pub trait RouteTemplate: Send + Sync + 'static {
    /// The template `uri` matched, if any.
    fn template(&self, method: &Method, uri: &Uri) -> Option<Arc<str>>;
}

impl<F> RouteTemplate for F
where
    F: Fn(&Method, &Uri) -> Option<Arc<str>> + Send + Sync + 'static,
{
    fn template(&self, method: &Method, uri: &Uri) -> Option<Arc<str>> {
        self(method, uri)
    }
}

/// A template that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTemplate {
    template: String,
    reason: &'static str,
}

impl fmt::Display for InvalidTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route template {:?}: {}", self.template, self.reason)
    }
}

impl std::error::Error for InvalidTemplate {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// `{*name}`: the rest of the path (one segment or more), last only.
    Rest,
}

#[derive(Debug, Clone)]
struct Route {
    name: Arc<str>,
    segments: Vec<Segment>,
}

/// Route templates in axum's syntax (`/users/{id}`, `/files/{*path}`),
/// matched against the request path in the order given: list literal routes
/// before the parameterised ones they overlap. The query is ignored.
#[derive(Debug, Clone, Default)]
pub struct RouteTemplates {
    routes: Vec<Route>,
}

impl RouteTemplates {
    /// Parses `templates`; each must start with `/`, and a parameter must be
    /// a whole segment (`{id}`), a catch-all (`{*rest}`) only the last one.
    ///
    /// # Errors
    ///
    /// [`InvalidTemplate`] naming the first template that breaks a rule.
    pub fn new<I, T>(templates: I) -> Result<Self, InvalidTemplate>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let routes = templates
            .into_iter()
            .map(|t| parse(t.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(RouteTemplates { routes })
    }

    /// How many templates there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first template `path` matches.
    pub fn matching(&self, path: &str) -> Option<&Arc<str>> {
        self.routes
            .iter()
            .find(|route| matches(&route.segments, path))
            .map(|route| &route.name)
    }
}

impl RouteTemplate for RouteTemplates {
    fn template(&self, _method: &Method, uri: &Uri) -> Option<Arc<str>> {
        self.matching(uri.path()).cloned()
    }
}

fn parse(template: &str) -> Result<Route, InvalidTemplate> {
    let fail = |reason| InvalidTemplate {
        template: template.to_owned(),
        reason,
    };
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| fail("it must start with '/'"))?;
    let mut segments = Vec::new();
    if !rest.is_empty() {
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.is_empty() || name == "*" => return Err(fail("a parameter needs a name")),
                Some(name) if name.contains(['{', '}']) => return Err(fail("unbalanced braces")),
                Some(name) if name.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(fail("a catch-all parameter must be the last segment"));
                    }
                    Segment::Rest
                }
                Some(_) => Segment::Param,
                None if part.contains(['{', '}']) => {
                    return Err(fail("a parameter must be a whole segment, like {id}"));
                }
                None => Segment::Literal((*part).into()),
            };
            segments.push(segment);
        }
    }
    Ok(Route {
        name: template.into(),
        segments,
    })
}

fn matches(segments: &[Segment], path: &str) -> bool {
    let Some(mut rest) = path.strip_prefix('/') else {
        return false;
    };
    if segments.is_empty() {
        return rest.is_empty();
    }
    for (i, segment) in segments.iter().enumerate() {
        let (part, tail) = match rest.split_once('/') {
            Some((part, tail)) => (part, Some(tail)),
            None => (rest, None),
        };
        match segment {
            Segment::Rest => return !rest.is_empty(),
            Segment::Param if part.is_empty() => return false,
            Segment::Literal(literal) if **literal != *part => return false,
            Segment::Param | Segment::Literal(_) => {}
        }
        match tail {
            Some(tail) => rest = tail,
            // The path ended: a match only if the template did too.
            None => return i + 1 == segments.len(),
        }
    }
    // Segments are used up but the path goes on.
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(routes: &RouteTemplates, path: &str) -> Option<String> {
        routes.matching(path).map(ToString::to_string)
    }

    #[test]
    fn matches_whole_segments_only() {
        let routes = RouteTemplates::new(["/", "/users/{id}", "/users/{id}/posts/{post}", "/a/{*rest}"]).unwrap();
        assert_eq!(first(&routes, "/").as_deref(), Some("/"));
        assert_eq!(first(&routes, "/users/7").as_deref(), Some("/users/{id}"));
        assert_eq!(
            first(&routes, "/users/7/posts/9").as_deref(),
            Some("/users/{id}/posts/{post}")
        );
        assert_eq!(first(&routes, "/users/"), None, "a parameter needs a non-empty segment");
        assert_eq!(first(&routes, "/users"), None);
        assert_eq!(first(&routes, "/users/7/posts"), None);
        assert_eq!(first(&routes, "/users/7/"), None, "a trailing slash is another route");
        assert_eq!(first(&routes, "/a/b/c/d").as_deref(), Some("/a/{*rest}"));
        assert_eq!(first(&routes, "/a/"), None, "a catch-all needs something to catch");
        assert_eq!(first(&routes, "/a"), None);
        assert_eq!(first(&routes, ""), None);
    }

    #[test]
    fn first_listed_wins() {
        let routes = RouteTemplates::new(["/users/me", "/users/{id}"]).unwrap();
        assert_eq!(first(&routes, "/users/me").as_deref(), Some("/users/me"));
        assert_eq!(first(&routes, "/users/you").as_deref(), Some("/users/{id}"));
    }

    #[test]
    fn bad_templates_are_named() {
        for (template, reason) in [
            ("users", "must start with '/'"),
            ("/users/{}", "needs a name"),
            ("/users/{*}", "needs a name"),
            ("/users/x{id}", "whole segment"),
            ("/users/{id", "whole segment"),
            ("/users/{{id}}", "unbalanced"),
            ("/files/{*path}/x", "last segment"),
        ] {
            let error = RouteTemplates::new(["/ok", template]).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(template) && text.contains(reason), "{template}: {text}");
        }
    }

    #[test]
    fn closures_are_templates() {
        let by_prefix = |_: &Method, uri: &Uri| uri.path().starts_with("/v1/").then(|| Arc::from("/v1/*"));
        let uri: Uri = "http://h/v1/x".parse().unwrap();
        assert_eq!(by_prefix.template(&Method::GET, &uri).as_deref(), Some("/v1/*"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_paths_never_panic(path in "[/a-z{}*%]{0,40}") {
            let routes = RouteTemplates::new(["/", "/{a}", "/{a}/{b}", "/x/{*r}"]).unwrap();
            let _ = routes.matching(&path);
            let _ = RouteTemplates::new([path.as_str()]);
        }
    }
}
