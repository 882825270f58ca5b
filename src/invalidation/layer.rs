//! [`InvalidationLayer`]: a small config value over a shared [`Invalidator`].

use std::sync::Arc;

use http::{request, response};
use tower_layer::Layer;

use super::handle::Invalidator;
use super::rules::Rule;
use super::service::InvalidationService;
use crate::cache::Node;

/// Which tag headers of responses are read, and whether they reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeaders {
    /// RFC 9875 `Cache-Groups` (tags scoped to the response's origin).
    pub cache_groups: bool,
    /// `Surrogate-Key`.
    pub surrogate_key: bool,
    /// `Cache-Tag`.
    pub cache_tag: bool,
    /// Keep them on the response or strip them before the caller sees it.
    pub visibility: HeaderVisibility,
}

/// Whether tag headers are left on responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderVisibility {
    /// Leave them.
    Keep,
    /// Remove them once read.
    Strip,
}

impl Default for TagHeaders {
    /// All three headers read, and kept: stripping surprises callers that
    /// read them themselves, so it is opt-in.
    fn default() -> Self {
        TagHeaders {
            cache_groups: true,
            surrogate_key: true,
            cache_tag: true,
            visibility: HeaderVisibility::Keep,
        }
    }
}

pub(crate) type TagFn = Arc<dyn Fn(&request::Parts, &response::Parts) -> Vec<String> + Send + Sync>;
pub(crate) type NamespaceFn = Arc<dyn Fn(&request::Parts) -> Option<String> + Send + Sync>;
pub(crate) type DependencyFn = Arc<dyn Fn(&request::Parts, &response::Parts) -> Vec<Node> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) invalidator: Invalidator,
    pub(crate) headers: TagHeaders,
    pub(crate) tag_fn: Option<TagFn>,
    pub(crate) namespace_fn: Option<NamespaceFn>,
    pub(crate) dependency_fn: Option<DependencyFn>,
    pub(crate) rules: Vec<Rule>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("headers", &self.headers)
            .field("rules", &self.rules.len())
            .field("tag_fn", &self.tag_fn.is_some())
            .field("namespace_fn", &self.namespace_fn.is_some())
            .finish_non_exhaustive()
    }
}

/// Invalidates the cache on writes (RFC 9111 §4.4, RFC 9875
/// `Cache-Group-Invalidation`, CRUD rules, custom strategies) and labels
/// responses to safe requests with tags, version stamps and dependencies so
/// the cache layer outside it indexes them when it stores them.
#[derive(Clone, Debug)]
pub struct InvalidationLayer {
    config: Arc<Config>,
}

impl InvalidationLayer {
    /// A layer over `invalidator`, reading all tag headers.
    pub fn new(invalidator: Invalidator) -> Self {
        InvalidationLayer {
            config: Arc::new(Config {
                invalidator,
                headers: TagHeaders::default(),
                tag_fn: None,
                namespace_fn: None,
                dependency_fn: None,
                rules: Vec::new(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Which tag headers to read and whether to strip them.
    #[must_use]
    pub fn tag_headers(self, headers: TagHeaders) -> Self {
        self.edit(|c| c.headers = headers)
    }

    /// Extra tags for a response, from the request and response.
    #[must_use]
    pub fn tag_with(
        self,
        f: impl Fn(&request::Parts, &response::Parts) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|c| c.tag_fn = Some(Arc::new(f)))
    }

    /// The namespace a response is stamped with (see
    /// [`Invalidator::bump_version`]), from the request.
    #[must_use]
    pub fn namespace(self, f: impl Fn(&request::Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.edit(|c| c.namespace_fn = Some(Arc::new(f)))
    }

    /// The keys and tags a response depends on.
    #[must_use]
    pub fn depends_with(
        self,
        f: impl Fn(&request::Parts, &response::Parts) -> Vec<Node> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|c| c.dependency_fn = Some(Arc::new(f)))
    }

    /// A CRUD rule applied after successful writes.
    #[must_use]
    pub fn rule(self, rule: Rule) -> Self {
        self.edit(|c| c.rules.push(rule))
    }

    /// The invalidator this layer uses.
    pub fn invalidator(&self) -> &Invalidator {
        &self.config.invalidator
    }
}

impl<S> Layer<S> for InvalidationLayer {
    type Service = InvalidationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvalidationService::new(inner, self.config.clone())
    }
}
