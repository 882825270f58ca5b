//! Custom invalidation strategies: user code consulted on invalidation events.

use http::{HeaderMap, Method, StatusCode, Uri};

use super::target::Target;
use crate::cache::{Node, Purge};

/// Something that happened that may call for more invalidation.
#[derive(Debug, Clone, Copy)]
pub enum InvalidationEvent<'a> {
    /// A response to an unsafe request passed the invalidation layer.
    Write {
        /// The request method.
        method: &'a Method,
        /// The request URI.
        uri: &'a Uri,
        /// The response status.
        status: StatusCode,
        /// The response headers.
        headers: &'a HeaderMap,
    },
    /// A key or tag was invalidated through the `Invalidator`.
    Invalidated {
        /// What was invalidated.
        node: &'a Node,
        /// How.
        mode: Purge,
    },
}

/// A user strategy: told about every invalidation event, it returns more
/// targets to invalidate. Targets it returns are not fed back to the
/// strategies, so strategies cannot loop.
///
/// ```
/// use std::sync::Arc;
/// use tower_optimizer::invalidation::{InvalidationEvent, InvalidationStrategy, Target};
///
/// /// Every write under /admin/ drops the "dashboard" tag.
/// struct Dashboard;
/// impl InvalidationStrategy for Dashboard {
///     fn name(&self) -> &str { "dashboard" }
///     fn targets(&self, event: &InvalidationEvent<'_>) -> Vec<Target> {
///         match event {
///             InvalidationEvent::Write { uri, .. } if uri.path().starts_with("/admin/") => {
///                 vec![Target::Tag(Arc::from("dashboard"))]
///             }
///             _ => Vec::new(),
///         }
///     }
/// }
/// # let _ = Dashboard;
/// ```
pub trait InvalidationStrategy: Send + Sync + 'static {
    /// A name for logs.
    #[allow(clippy::unnecessary_literal_bound)] // implementors may name themselves at run time
    fn name(&self) -> &str {
        "custom"
    }

    /// More targets to invalidate because of `event`.
    fn targets(&self, event: &InvalidationEvent<'_>) -> Vec<Target>;
}

impl<F> InvalidationStrategy for F
where
    F: Fn(&InvalidationEvent<'_>) -> Vec<Target> + Send + Sync + 'static,
{
    fn targets(&self, event: &InvalidationEvent<'_>) -> Vec<Target> {
        self(event)
    }
}
