//! Response future of [`InvalidationService`](super::InvalidationService).
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_optimizer::cache::Cache;
//! use tower_optimizer::invalidation::{InvalidationLayer, Invalidator, future::ResponseFuture};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inv = Invalidator::new(Cache::builder().build().unwrap());
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     let response = http::Response::builder().header("cache-group-invalidation", "\"users\"");
//!     Ok::<_, Infallible>(response.body(()).unwrap())
//! });
//! let mut svc = InvalidationLayer::new(inv.clone()).layer(upstream);
//! let request = http::Request::post("http://api.example/users").body(()).unwrap();
//! let future: ResponseFuture<_, ()> = svc.ready().await.unwrap().call(request);
//! assert_eq!(future.await.unwrap().status(), 200);
//! # }
//! ```

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{Method, Response, Uri, request};
use pin_project_lite::pin_project;

use super::handle::group_tag;
use super::headers::{self, ParsedTags, TagSyntax};
use super::layer::{Config, HeaderVisibility};
use super::report::InvalidationReport;
use super::scan::Matcher;
use super::service::origin_of;
use super::strategy::InvalidationEvent;
use super::target::{Pattern, Target};
use crate::BoxError;
use crate::cache::write::same_origin_key;
use crate::cache::{Dependencies, InvalidationKind, Purge, Tags, Versions};

pub(crate) struct SafeCtx {
    pub(crate) config: Arc<Config>,
    pub(crate) uri: Uri,
    /// The request's `Host`, which names the origin of an origin-form URI.
    pub(crate) host: Option<http::HeaderValue>,
    /// The request's head, kept only for the user's closures (boxed: most
    /// stacks have none, and the context is boxed per request).
    pub(crate) parts: Option<Box<request::Parts>>,
}

impl SafeCtx {
    fn origin(&self) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        if let Some(host) = &self.host {
            headers.insert(http::header::HOST, host.clone());
        }
        origin_of(&self.uri, &headers)
    }
}

pub(crate) struct WriteCtx {
    pub(crate) config: Arc<Config>,
    pub(crate) origin: Option<String>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

pub(crate) enum Ctx {
    Safe(SafeCtx),
    Write(WriteCtx),
}

pin_project! {
    /// Response future of [`InvalidationService`](super::InvalidationService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Calling { #[pin] future: F, ctx: Armed },
        // A write's pattern targets are scanned before the response is
        // released, so the caller's next read cannot see what it replaced.
        // The scan runs as a task of its own (see `scan_and_purge`): it
        // finishes even if this future is dropped.
        Scanning { purge: Pin<Box<dyn Future<Output = InvalidationReport> + Send>>, response: Option<Response<R>>, report: InvalidationReport },
        Done,
    }
}

impl<F, R> std::fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn new(future: F, ctx: Ctx) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                ctx: Armed(Some(Box::new(ctx))),
            },
        }
    }
}

const POLLED_AFTER_DONE: &str = "invalidation ResponseFuture polled after completion";

/// A request's context until its answer comes. Dropped before (the caller
/// stopped waiting), a write's outcome is unknown: see [`unknown_outcome`].
pub(crate) struct Armed(Option<Box<Ctx>>);

impl Armed {
    fn take(&mut self) -> Box<Ctx> {
        self.0.take().expect(POLLED_AFTER_DONE)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            if let Ctx::Write(write) = *ctx {
                unknown_outcome(&write);
            }
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: 'static,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future, ctx } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => {
                            // Sent, perhaps applied, but unanswered: what it
                            // may have changed is marked stale, unless the
                            // error says it never left.
                            if let Ctx::Write(write) = *ctx.take() {
                                let any: &dyn Any = &error;
                                if !any
                                    .downcast_ref::<BoxError>()
                                    .is_some_and(|e| crate::util::never_sent(&**e))
                                {
                                    unknown_outcome(&write);
                                }
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    };
                    match *ctx.take() {
                        Ctx::Safe(ctx) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(label(response, &ctx)));
                        }
                        Ctx::Write(ctx) => {
                            let (response, report, patterns) = invalidate(response, &ctx);
                            if patterns.is_empty() {
                                this.state.set(State::Done);
                                return Poll::Ready(Ok(with_report(response, report)));
                            }
                            let purge = ctx.config.invalidator.scan_and_purge(
                                Matcher::Patterns(patterns),
                                Purge::Hard,
                                InvalidationKind::Pattern,
                            );
                            this.state.set(State::Scanning {
                                purge: Box::pin(purge),
                                response: Some(response),
                                report,
                            });
                        }
                    }
                }
                StateProj::Scanning {
                    purge,
                    response,
                    report,
                } => {
                    let found = ready!(purge.as_mut().poll(cx));
                    report.merge(&found);
                    let response = with_report(response.take().expect(POLLED_AFTER_DONE), *report);
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("{POLLED_AFTER_DONE}"),
            }
        }
    }
}

fn with_report<R>(mut response: Response<R>, report: InvalidationReport) -> Response<R> {
    response.extensions_mut().insert(report);
    response
}

/// Labels a response to a safe request for the cache: tags from headers
/// and the user's closure, a version stamp, dependencies.
fn label<R>(response: Response<R>, ctx: &SafeCtx) -> Response<R> {
    let config = &ctx.config;
    let h = config.headers;
    // Most responses carry no tag field, and without the user's closures
    // there is nothing else to label them with: leave them as they came
    // (every miss passes here).
    let unlabelled = config.tag_fn.is_none()
        && config.namespace_fn.is_none()
        && config.dependency_fn.is_none()
        && response.extensions().get::<Tags>().is_none()
        && crate::util::has_none_of(
            response.headers(),
            &[&headers::CACHE_GROUPS, &headers::SURROGATE_KEY, &headers::CACHE_TAG],
        );
    if unlabelled {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut plain = ParsedTags::default();
    let mut groups = ParsedTags::default();
    if h.cache_groups {
        headers::read_tags(
            &parts.headers,
            &headers::CACHE_GROUPS,
            TagSyntax::StructuredStrings,
            &mut groups,
        );
    }
    if h.surrogate_key {
        headers::read_tags(
            &parts.headers,
            &headers::SURROGATE_KEY,
            TagSyntax::SpaceSeparated,
            &mut plain,
        );
    }
    if h.cache_tag {
        headers::read_tags(
            &parts.headers,
            &headers::CACHE_TAG,
            TagSyntax::CommaSeparated,
            &mut plain,
        );
    }
    if plain.malformed || groups.malformed || plain.dropped + groups.dropped > 0 {
        tracing::debug!(
            dropped = plain.dropped + groups.dropped,
            malformed = plain.malformed || groups.malformed,
            "tag headers partly ignored"
        );
    }
    let mut tags: Vec<Arc<str>> = parts.extensions.get::<Tags>().map(|t| t.0.clone()).unwrap_or_default();
    // RFC 9875 groups are scoped to the origin that named them.
    if !groups.tags.is_empty() {
        if let Some(origin) = ctx.origin() {
            tags.extend(groups.tags.iter().map(|g| Arc::from(group_tag(&origin, g))));
        }
    }
    tags.extend(plain.tags.into_iter().map(Arc::from));
    if let (Some(f), Some(req)) = (&config.tag_fn, &ctx.parts) {
        tags.extend(f(req, &parts).into_iter().map(Arc::from));
    }
    tags.sort_unstable();
    tags.dedup();
    if !tags.is_empty() {
        parts.extensions.insert(Tags(tags));
    }
    if let (Some(f), Some(req)) = (&config.namespace_fn, &ctx.parts) {
        if let Some(namespace) = f(req) {
            let mut versions = parts.extensions.remove::<Versions>().unwrap_or_default();
            versions.0.push(config.invalidator.stamp(&namespace));
            parts.extensions.insert(versions);
        }
    }
    if let (Some(f), Some(req)) = (&config.dependency_fn, &ctx.parts) {
        let nodes = f(req, &parts);
        if !nodes.is_empty() {
            let mut deps = parts.extensions.remove::<Dependencies>().unwrap_or_default();
            deps.0.extend(nodes);
            parts.extensions.insert(deps);
        }
    }
    if h.visibility == HeaderVisibility::Strip {
        parts.headers.remove(headers::CACHE_GROUPS);
        parts.headers.remove(headers::SURROGATE_KEY);
        parts.headers.remove(headers::CACHE_TAG);
    }
    Response::from_parts(parts, body)
}

/// Applies everything a response to an unsafe request invalidates; returns
/// the pattern targets still to scan.
fn invalidate<R>(response: Response<R>, ctx: &WriteCtx) -> (Response<R>, InvalidationReport, Vec<Pattern>) {
    let inv = &ctx.config.invalidator;
    let mut report = InvalidationReport::new(InvalidationKind::Http, Purge::Hard);
    let mut patterns = Vec::new();
    let status = response.status();
    let headers = response.headers();
    let Some(origin) = ctx.origin.as_deref() else {
        return (response, report, patterns);
    };
    // RFC 9875: groups named by the response, same origin only, on any
    // response to an unsafe request.
    let mut groups = ParsedTags::default();
    headers::read_tags(
        headers,
        &headers::CACHE_GROUP_INVALIDATION,
        TagSyntax::StructuredStrings,
        &mut groups,
    );
    let mut http: Vec<Target> = groups
        .tags
        .iter()
        .map(|g| Target::Tag(group_tag(origin, g).into()))
        .collect();
    // RFC 9111 §4.4: only after a non-error response.
    let success = status.is_success() || status.is_redirection();
    if success {
        if let Some(key) = inv.cache().key_for_uri(&absolute(&ctx.uri, origin)) {
            http.push(Target::Key(key.into()));
        }
        for name in [LOCATION, CONTENT_LOCATION] {
            for value in headers.get_all(name) {
                if let Some(key) = same_origin_key(origin, value, inv.cache().query_key()) {
                    http.push(Target::Key(key.into()));
                }
            }
        }
    }
    patterns.extend(inv.apply_now(http, Purge::Hard, InvalidationKind::Http, &mut report));
    if success {
        let targets = rule_targets(ctx, origin, &mut patterns);
        patterns.extend(inv.apply_now(targets, Purge::Hard, InvalidationKind::Tag, &mut report));
    }
    let event = InvalidationEvent::Write {
        method: &ctx.method,
        uri: &ctx.uri,
        status,
        headers,
    };
    let custom = inv.consult(&event);
    if !custom.is_empty() {
        patterns.extend(inv.apply_now(custom, Purge::Hard, InvalidationKind::Custom, &mut report));
    }
    (response, report, patterns)
}

/// What the CRUD rules matching a write name: tags, keys and namespaces
/// returned, patterns (with their captures filled) added to `patterns`.
fn rule_targets(ctx: &WriteCtx, origin: &str, patterns: &mut Vec<Pattern>) -> Vec<Target> {
    let mut targets = Vec::new();
    let query = ctx.config.invalidator.cache().query_key();
    for rule in &ctx.config.rules {
        let Some(hit) = rule.matches(&ctx.method, ctx.uri.path()) else {
            continue;
        };
        targets.extend(hit.tags.into_iter().map(|t| Target::Tag(t.into())));
        targets.extend(hit.keys.into_iter().filter_map(|k| {
            let key = same_origin_key(origin, &http::HeaderValue::from_str(&k).ok()?, query)?;
            Some(Target::Key(key.into()))
        }));
        targets.extend(hit.namespaces.into_iter().map(|n| Target::Namespace(n.into())));
        for pattern in hit.patterns {
            match Pattern::path(&pattern) {
                Ok(p) => patterns.push(p.on_origin(origin)),
                Err(error) => tracing::warn!(%error, "rule pattern did not compile after filling captures"),
            }
        }
    }
    targets
}

/// A write that may or may not have been applied (its caller stopped
/// waiting, or it failed after it was sent): its target URI (and what
/// depends on it) and what its rules name are marked stale, revalidated on
/// their next use; a namespace a rule names is bumped. Pattern scans run
/// as tasks of their own where there is a runtime.
fn unknown_outcome(ctx: &WriteCtx) {
    let Some(origin) = ctx.origin.as_deref() else {
        return;
    };
    let inv = &ctx.config.invalidator;
    let mut report = InvalidationReport::new(InvalidationKind::Http, Purge::Soft);
    let mut patterns = Vec::new();
    let mut targets = rule_targets(ctx, origin, &mut patterns);
    if let Some(key) = inv.cache().key_for_uri(&absolute(&ctx.uri, origin)) {
        targets.push(Target::Key(key.into()));
    }
    patterns.extend(inv.apply_now(targets, Purge::Soft, InvalidationKind::Http, &mut report));
    if !patterns.is_empty() {
        // Spawned at once (see `scan_and_purge`): nothing here can wait.
        drop(inv.scan_and_purge(Matcher::Patterns(patterns), Purge::Soft, InvalidationKind::Pattern));
    }
}

/// The request URI made absolute on `origin` (origin-form requests).
fn absolute(uri: &Uri, origin: &str) -> Uri {
    if uri.scheme().is_some() {
        return uri.clone();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{origin}{path}").parse().unwrap_or_else(|_| uri.clone())
}
