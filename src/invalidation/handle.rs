//! [`Invalidator`]: the cheap-to-clone handle that invalidates cache entries
//! by key, tag, pattern, dependency, version, predicate or age.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use tokio::time::Instant;

use super::error::InvalidationError;
use super::report::InvalidationReport;
use super::scan::{Matcher, Scan};
use super::strategy::{InvalidationEvent, InvalidationStrategy};
use super::target::{Pattern, Target};
use crate::cache::{Cache, EntryMeta, InvalidationKind, Node, Purge, VersionStamp};

/// Invalidates entries of a [`Cache`]. Clones share the registered
/// strategies; the namespace versions and tag dependencies live in the cache,
/// so every `Invalidator` over one cache sees the same ones.
///
/// ```
/// use tower_optimizer::cache::{Cache, Node};
/// use tower_optimizer::invalidation::Invalidator;
///
/// let cache = Cache::builder().build().unwrap();
/// let inv = Invalidator::new(cache);
/// assert_eq!(inv.tag("user:7").entries, 0, "nothing tagged yet");
/// let bumped = inv.bump_version("users");
/// assert_eq!(bumped.version, Some(1));
/// assert!(inv.depends_on(Node::Key("http://a.test/x".into()), Node::Tag("t".into())).unwrap_err().is_not_cached());
/// ```
#[derive(Clone)]
pub struct Invalidator {
    cache: Cache,
    strategies: Arc<RwLock<Vec<Arc<dyn InvalidationStrategy>>>>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidator")
            .field("cache", &self.cache)
            .field("strategies", &self.strategies.read().map_or(0, |s| s.len()))
            .finish()
    }
}

impl Invalidator {
    /// An invalidator over `cache`.
    pub fn new(cache: Cache) -> Self {
        Invalidator {
            cache,
            strategies: Arc::default(),
        }
    }

    /// The cache this invalidates.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Removes every variant stored under `key` (a normalised absolute URI,
    /// see [`Cache::key_for`]) and, transitively, what depends on it.
    pub fn key(&self, key: &str) -> InvalidationReport {
        self.purge_nodes(&[Node::Key(key.into())], Purge::Hard, InvalidationKind::Key)
    }

    /// Removes every variant stored for `uri` (normalised like request keys).
    pub fn uri(&self, uri: &Uri) -> InvalidationReport {
        match self.cache.key_for_uri(uri) {
            Some(key) => self.key(&key),
            None => InvalidationReport::new(InvalidationKind::Key, Purge::Hard),
        }
    }

    /// Removes every entry tagged `tag` and, transitively, what depends on it.
    /// Costs O(entries with the tag).
    pub fn tag(&self, tag: &str) -> InvalidationReport {
        self.purge_nodes(&[Node::Tag(tag.into())], Purge::Hard, InvalidationKind::Tag)
    }

    /// Removes every entry of an RFC 9875 cache group on `origin`
    /// (`scheme://authority`).
    pub fn group(&self, origin: &str, group: &str) -> InvalidationReport {
        self.tag(&group_tag(origin, group))
    }

    /// Invalidates `node` and everything that depends on it, transitively,
    /// soft or hard. Cycles end: each key and tag is visited once.
    pub fn dependents_of(&self, node: Node, mode: Purge) -> InvalidationReport {
        self.purge_nodes(&[node], mode, InvalidationKind::Dependency)
    }

    /// Invalidates keys and tags, soft or hard, with their dependents.
    pub fn purge(&self, nodes: &[Node], mode: Purge) -> InvalidationReport {
        let kind = match nodes.first() {
            Some(Node::Tag(_)) => InvalidationKind::Tag,
            _ => InvalidationKind::Key,
        };
        self.purge_nodes(nodes, mode, kind)
    }

    /// Declares that `dependent` must be invalidated whenever `dependency`
    /// is. A key dependent must be stored now (the index only holds live
    /// entries, and forgets the dependency when the entry goes); a tag
    /// dependent is a name and stays until the cache is dropped.
    pub fn depends_on(&self, dependent: Node, dependency: Node) -> Result<(), InvalidationError> {
        match dependent {
            Node::Key(key) => {
                if self.cache.inner.store.add_dependency(&key, dependency) {
                    Ok(())
                } else {
                    Err(InvalidationError::not_cached(&key))
                }
            }
            Node::Tag(tag) => {
                let mut map = self
                    .cache
                    .inner
                    .tag_dependents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                map.entry(dependency).or_default().insert(tag);
                Ok(())
            }
        }
    }

    /// Makes every entry stamped with an older version of `namespace`
    /// invalid, in O(1): they are dropped on their next use or sweep.
    pub fn bump_version(&self, namespace: &str) -> InvalidationReport {
        let started = Instant::now();
        let counter = self.counter(namespace);
        // A response in flight may be stamped with the version after this
        // bump (stamps are taken when it arrives): keep it out.
        self.cache.inner.flights.epochs().invalidate_all();
        let version = counter.fetch_add(1, Ordering::AcqRel) + 1;
        let mut report = InvalidationReport::new(InvalidationKind::Version, Purge::Hard);
        report.version = Some(version);
        report.elapsed = started.elapsed();
        report
    }

    /// The current version of `namespace` (0 until first bumped).
    pub fn version(&self, namespace: &str) -> u64 {
        self.counter(namespace).load(Ordering::Acquire)
    }

    /// A stamp of the current version of `namespace`, to put in a response's
    /// [`Versions`](crate::cache::Versions) extension.
    pub fn stamp(&self, namespace: &str) -> VersionStamp {
        VersionStamp::current(&self.counter(namespace))
    }

    fn counter(&self, namespace: &str) -> Arc<AtomicU64> {
        let mut map = self
            .cache
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(namespace.into()).or_default().clone()
    }

    /// Removes entries whose key matches `regex` (compiled once here; an
    /// invalid regex is an error). A regex anchored at a path (`^/users/\d+$`)
    /// is matched against path and query, on every origin; any other against
    /// the whole key (see [`Pattern::new`]). The scan yields between chunks
    /// and, inside a Tokio runtime, runs as a task of its own: dropping this
    /// future stops only the wait for the report, not the purge.
    pub async fn pattern(&self, regex: &str) -> Result<InvalidationReport, InvalidationError> {
        let pattern = Pattern::new(regex)?;
        Ok(self.purge_pattern(&pattern, Purge::Hard).await)
    }

    /// Invalidates entries whose key matches `pattern`, soft or hard.
    pub async fn purge_pattern(&self, pattern: &Pattern, mode: Purge) -> InvalidationReport {
        self.scan_and_purge(
            Matcher::Patterns(vec![pattern.clone()]),
            mode,
            InvalidationKind::Pattern,
        )
        .await
    }

    /// Invalidates entries for which `predicate` holds over their metadata.
    pub async fn purge_where(
        &self,
        predicate: impl Fn(&EntryMeta) -> bool + Send + Sync + 'static,
        mode: Purge,
    ) -> InvalidationReport {
        self.scan_and_purge(Matcher::Meta(Arc::new(predicate)), mode, InvalidationKind::Conditional)
            .await
    }

    /// Invalidates entries stored more than `age` ago.
    pub async fn purge_older_than(&self, age: Duration, mode: Purge) -> InvalidationReport {
        let cutoff = Instant::now().checked_sub(age);
        let older = move |m: &EntryMeta| cutoff.is_some_and(|c| m.stored_at < c);
        self.scan_and_purge(Matcher::Meta(Arc::new(older)), mode, InvalidationKind::Time)
            .await
    }

    /// Scans for `matcher` and purges what it selects. The work runs as a
    /// task of its own where there is a runtime, so it finishes even if the
    /// caller stops waiting (a timed-out admin request, a dropped response
    /// future): a scan dropped halfway would leave matching entries in place.
    pub(crate) fn scan_and_purge(
        &self,
        matcher: Matcher,
        mode: Purge,
        kind: InvalidationKind,
    ) -> impl Future<Output = InvalidationReport> + Send + 'static {
        let this = self.clone();
        let work = async move {
            let started = Instant::now();
            let (keys, scanned) = Scan::new(this.cache.clone(), matcher).await;
            let mut report = this.cascade(keys.into_iter().map(Node::Key).collect(), mode, kind);
            report.scanned = scanned;
            report.elapsed = started.elapsed();
            report
        };
        // Outside a runtime (another executor), the caller drives it.
        let run = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Ok(runtime.spawn(work)),
            Err(_) => Err(work),
        };
        async move {
            match run {
                Ok(task) => match task.await {
                    Ok(report) => report,
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    // The runtime is shutting down: nothing more was purged.
                    Err(_) => InvalidationReport::new(kind, mode),
                },
                Err(work) => work.await,
            }
        }
    }

    /// Registers a strategy consulted on every invalidation event.
    pub fn register(&self, strategy: impl InvalidationStrategy) {
        self.strategies
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(strategy));
    }

    /// What the registered strategies add for `event`.
    pub(crate) fn consult(&self, event: &InvalidationEvent<'_>) -> Vec<Target> {
        let strategies = self.strategies.read().unwrap_or_else(PoisonError::into_inner).clone();
        strategies.iter().flat_map(|s| s.targets(event)).collect()
    }

    /// Applies targets that need no scan; returns the patterns left over.
    pub(crate) fn apply_now(
        &self,
        targets: Vec<Target>,
        mode: Purge,
        kind: InvalidationKind,
        report: &mut InvalidationReport,
    ) -> Vec<Pattern> {
        let mut nodes = Vec::new();
        let mut patterns = Vec::new();
        for target in targets {
            match target {
                Target::Key(key) => nodes.push(Node::Key(key)),
                Target::Tag(tag) => nodes.push(Node::Tag(tag)),
                Target::Namespace(ns) => {
                    let bumped = self.bump_version(&ns);
                    report.version = bumped.version;
                }
                Target::Pattern(pattern) => patterns.push(pattern),
            }
        }
        if !nodes.is_empty() {
            report.merge(&self.cascade(nodes, mode, kind));
        }
        patterns
    }

    /// Invalidates `nodes` with their dependents, then asks the strategies.
    fn purge_nodes(&self, nodes: &[Node], mode: Purge, kind: InvalidationKind) -> InvalidationReport {
        let started = Instant::now();
        let mut report = self.cascade(nodes.to_vec(), mode, kind);
        let mut extra = Vec::new();
        for node in nodes {
            extra.extend(self.consult(&InvalidationEvent::Invalidated { node, mode }));
        }
        if !extra.is_empty() {
            let mut custom = InvalidationReport::new(InvalidationKind::Custom, mode);
            let patterns = self.apply_now(extra, mode, InvalidationKind::Custom, &mut custom);
            report.merge(&custom);
            if !patterns.is_empty() {
                self.spawn_patterns(patterns, mode);
            }
        }
        report.elapsed = started.elapsed();
        report
    }

    /// Pattern targets from strategies on a synchronous call run as a
    /// background scan (they cannot block the caller).
    fn spawn_patterns(&self, patterns: Vec<Pattern>, mode: Purge) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                count = patterns.len(),
                "pattern targets from a strategy need a Tokio runtime; skipped"
            );
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            this.scan_and_purge(Matcher::Patterns(patterns), mode, InvalidationKind::Custom)
                .await;
        });
    }

    /// Breadth-first over the dependency graph, one level at a time (each
    /// level costs one pass over the shards, not one per node): each key and
    /// tag once, so cycles end; the report says how deep it went.
    pub(crate) fn cascade(&self, starts: Vec<Node>, mode: Purge, kind: InvalidationKind) -> InvalidationReport {
        let started = Instant::now();
        let store = &self.cache.inner.store;
        let mut report = InvalidationReport::new(kind, mode);
        let mut seen: HashSet<Node> = HashSet::new();
        let mut level: Vec<Node> = starts.into_iter().filter(|n| seen.insert(n.clone())).collect();
        let mut depth = 0;
        let mut dependency_entries = 0;
        let mut all_outdated = false;
        while !level.is_empty() {
            report.depth = depth;
            report.nodes += level.len();
            // Purging a key forgets the dependencies it declared, not those
            // declared on it, so dependents can be read after purging.
            let mut probe = level.clone();
            // In-flight responses first (see `cache/epochs.rs`): a
            // response's tags are unknown until it arrives, so a tag
            // outdates every fetch in flight (once per cascade is enough:
            // it comes before every removal that follows).
            let epochs = self.cache.inner.flights.epochs();
            if !all_outdated && level.iter().any(|n| matches!(n, Node::Tag(_))) {
                epochs.invalidate_all();
                all_outdated = true;
            }
            for node in &level {
                if let (Node::Key(key), false) = (node, all_outdated) {
                    epochs.invalidate(key);
                }
                let removed = match node {
                    Node::Key(key) => store.purge_keys(std::slice::from_ref(key), mode),
                    Node::Tag(tag) => {
                        let (removed, keys) = store.purge_tag(tag, mode);
                        // Entries invalidated through a tag take their own
                        // dependents with them.
                        for key in keys {
                            let as_node = Node::Key(key);
                            if seen.insert(as_node.clone()) {
                                report.nodes += 1;
                                probe.push(as_node);
                            }
                        }
                        removed
                    }
                };
                report.entries += removed.entries;
                report.bytes += removed.bytes;
                if depth > 0 {
                    dependency_entries += removed.entries;
                }
            }
            level = self
                .dependents(&probe)
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .collect();
            depth += 1;
        }
        self.count(kind, report.entries - dependency_entries);
        self.count(InvalidationKind::Dependency, dependency_entries);
        report.elapsed = started.elapsed();
        report
    }

    fn dependents(&self, nodes: &[Node]) -> Vec<Node> {
        let mut out: Vec<Node> = self
            .cache
            .inner
            .store
            .dependents_of(nodes)
            .into_iter()
            .map(Node::Key)
            .collect();
        let tags = self
            .cache
            .inner
            .tag_dependents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !tags.is_empty() {
            for node in nodes {
                if let Some(dependent_tags) = tags.get(node) {
                    out.extend(dependent_tags.iter().cloned().map(Node::Tag));
                }
            }
        }
        out
    }

    fn count(&self, kind: InvalidationKind, entries: usize) {
        self.cache.inner.counters.invalidated(kind, entries);
    }
}

/// The tag an RFC 9875 group is stored under: groups are scoped to their
/// origin, so the tag names both (a space cannot occur in an origin).
pub fn group_tag(origin: &str, group: &str) -> String {
    format!("{origin} {group}")
}
