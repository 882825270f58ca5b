//! [`MetricsLayer`]: OpenTelemetry HTTP client metrics and in-process statistics.

use std::sync::Arc;

use tower_layer::Layer;

use super::handles::Handles;
use super::route::RouteTemplate;
use super::service::MetricsService;
use super::stats::Stats;

/// Whether response body sizes are recorded (`http.client.response.body.size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodySizes {
    /// Not recorded (the default: it is an opt-in metric in OpenTelemetry).
    #[default]
    Off,
    /// Recorded when the body ends.
    Record,
}

pub(crate) struct Config {
    pub(crate) handles: Handles,
    /// The `server.address` cap the handles were made with.
    pub(crate) max_addresses: usize,
    pub(crate) stats: Option<Stats>,
    pub(crate) body_sizes: BodySizes,
    pub(crate) routes: Option<Arc<dyn RouteTemplate>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handles: Handles::default(),
            max_addresses: super::DEFAULT_MAX_SERVER_ADDRESSES,
            stats: None,
            body_sizes: BodySizes::Off,
            routes: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("max_addresses", &self.max_addresses)
            .field("stats", &self.stats.is_some())
            .field("body_sizes", &self.body_sizes)
            .field("routes", &self.routes.is_some())
            .finish_non_exhaustive()
    }
}

/// Records every request that passes (cache hits included when it sits
/// outside the cache) through the `metrics` facade, and optionally into a
/// [`Stats`] handle. The library never installs a recorder: with none, the
/// cost is a few cached no-op handles.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    config: Arc<Config>,
}

impl MetricsLayer {
    /// A layer recording through the `metrics` facade only.
    pub fn new() -> Self {
        Handles::describe();
        MetricsLayer::default()
    }

    /// Also keeps per-host statistics in `stats`.
    #[must_use]
    pub fn stats(self, stats: Stats) -> Self {
        self.with(|c| c.stats = Some(stats))
    }

    /// Records response body sizes.
    #[must_use]
    pub fn body_sizes(self, body_sizes: BodySizes) -> Self {
        self.with(|c| c.body_sizes = body_sizes)
    }

    /// Adds the `url.template` label: the route template `routes` names for
    /// each request (see [`RouteTemplates`](super::RouteTemplates)). Without
    /// it, no label carries a path, so label sets stay bounded.
    #[must_use]
    pub fn route_templates(self, routes: impl RouteTemplate) -> Self {
        let routes: Arc<dyn RouteTemplate> = Arc::new(routes);
        self.with(|c| c.routes = Some(routes))
    }

    /// Labels at most `hosts` distinct hosts' requests with their own
    /// `server.address`; the requests to any host past them are labelled
    /// [`OTHER_SERVER_ADDRESS`](super::OTHER_SERVER_ADDRESS) (default
    /// [`DEFAULT_MAX_SERVER_ADDRESSES`](super::DEFAULT_MAX_SERVER_ADDRESSES)),
    /// so a client sent to endless hosts adds no endless series. The
    /// hosts keep their own figures in [`Stats`] (which has its own cap).
    #[must_use]
    pub fn max_server_addresses(self, hosts: usize) -> Self {
        self.with(|c| c.max_addresses = hosts)
    }

    fn with(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            handles: Handles::default(),
            max_addresses: self.config.max_addresses,
            stats: self.config.stats.clone(),
            body_sizes: self.config.body_sizes,
            routes: self.config.routes.clone(),
        };
        f(&mut config);
        config.handles = Handles::new(config.max_addresses);
        MetricsLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService::new(inner, self.config.clone())
    }
}

#[cfg(feature = "stack")]
impl MetricsLayer {
    /// What the layer's services measure requests with, for a stage that
    /// measures as they do (the stack's edge, `stack::hit_first`).
    pub(crate) fn meter(&self) -> super::Meter {
        super::Meter::new(self.config.clone())
    }
}
