//! [`CacheLayer`]: a small config value that wraps services with a shared [`Cache`].

use tower_layer::Layer;

use super::handle::Cache;
use super::service::CacheService;

/// Wraps services with a [`CacheService`] over one shared [`Cache`].
/// Several layers (and services) can share the same cache.
#[derive(Clone, Debug)]
pub struct CacheLayer {
    cache: Cache,
}

impl CacheLayer {
    /// A layer over `cache`.
    pub fn new(cache: Cache) -> Self {
        CacheLayer { cache }
    }

    /// The cache this layer uses.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, self.cache.clone())
    }
}
