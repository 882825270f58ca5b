//! The cache and invalidation layers against a model of what each
//! invalidation removes, over four URIs of one origin: random labels per
//! URI (`Surrogate-Key` tags, RFC 9875 `Cache-Groups`, and a CRUD rule: a
//! write to it also invalidates another URI and a tag), reads, writes
//! (answered 2xx or 5xx, with `Location` and `Cache-Group-Invalidation`, or
//! reset), purges by key, tag and group through the `Invalidator`, hard and
//! soft, and dependency edges between URIs and on tags.
//!
//! The model keeps which URIs are stored and which of those are marked
//! stale, and the dependency edges (held by their dependent URI while it is
//! stored). A read must be a hit exactly when the model has the URI stored
//! and not stale; after every step the stored URIs must be the model's.
#![cfg(all(feature = "cache", feature = "invalidation"))]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use support::{Req, Res, Upstream};
use tower::{Layer, Service, ServiceExt};
use tower_optimizer::BoxError;
use tower_optimizer::cache::{Cache, CacheLayer, CacheStatus, Outcome};
use tower_optimizer::invalidation::{InvalidationLayer, Invalidator, Node, Purge, Rule, group_tag};

const ORIGIN: &str = "http://api.test";
const PATHS: [&str; 4] = ["/a", "/b", "/c", "/d"];
const TAGS: [&str; 2] = ["t1", "t2"];
const GROUPS: [&str; 2] = ["g1", "g2"];

/// A path's labels: which tags and groups its responses carry, and what
/// its CRUD rule names (a path and a tag) for a write to it.
#[derive(Debug, Clone, Copy)]
struct Labels {
    tags: [bool; 2],
    groups: [bool; 2],
    rule: (Option<usize>, Option<usize>),
}

/// A node of the dependency graph: a URI, a tag or a group (a tag of its
/// own, scoped to the origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum On {
    Path(usize),
    Tag(usize),
    Group(usize),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Get(usize),
    /// A write to a path: its status (`None`: reset), a `Location` and a
    /// `Cache-Group-Invalidation`.
    Write {
        path: usize,
        status: Option<u16>,
        location: Option<usize>,
        group: Option<usize>,
    },
    PurgeKey(usize, bool),
    PurgeTag(usize, bool),
    PurgeGroup(usize),
    /// `path` depends on `on` (refused unless `path` is stored).
    Depend(usize, On),
}

fn key(path: usize) -> String {
    format!("{ORIGIN}{}", PATHS[path])
}

/// The model: stored paths (with their stale mark) and dependency edges
/// (dependent path, what it depends on).
#[derive(Debug, Default)]
struct Model {
    stored: BTreeMap<usize, bool>,
    edges: BTreeSet<(usize, On)>,
}

impl Model {
    fn remove(&mut self, path: usize) {
        self.stored.remove(&path);
        self.edges.retain(|(dependent, _)| *dependent != path);
    }

    /// Invalidates `node`, and what depends on it, transitively: hard
    /// removes, soft marks stale. Each node is visited once.
    fn invalidate(&mut self, node: On, labels: &[Labels; 4], soft: bool) {
        let mut queue = vec![node];
        let mut seen = BTreeSet::new();
        while let Some(node) = queue.pop() {
            if !seen.insert(node) {
                continue;
            }
            // A key names its URI, stored or not; a tag or group is known
            // only from the stored responses that carry it.
            let labelled = |p: &usize, l: fn(&Labels) -> bool| self.stored.contains_key(p) && l(&labels[*p]);
            let hit: Vec<usize> = match node {
                On::Path(p) => vec![p],
                On::Tag(0) => (0..4).filter(|p| labelled(p, |l| l.tags[0])).collect(),
                On::Tag(_) => (0..4).filter(|p| labelled(p, |l| l.tags[1])).collect(),
                On::Group(0) => (0..4).filter(|p| labelled(p, |l| l.groups[0])).collect(),
                On::Group(_) => (0..4).filter(|p| labelled(p, |l| l.groups[1])).collect(),
            };
            // Dependents are found before their edges leave with them.
            let dependents: Vec<usize> = hit
                .iter()
                .flat_map(|p| self.dependents(On::Path(*p)))
                .chain(if matches!(node, On::Path(_)) {
                    Vec::new()
                } else {
                    self.dependents(node)
                })
                .collect();
            for p in hit {
                if soft {
                    if let Some(stale) = self.stored.get_mut(&p) {
                        *stale = true;
                    }
                } else {
                    self.remove(p);
                }
            }
            queue.extend(dependents.into_iter().map(On::Path));
        }
    }

    fn dependents(&self, node: On) -> Vec<usize> {
        self.edges
            .iter()
            .filter(|(_, on)| *on == node)
            .map(|(d, _)| *d)
            .collect()
    }
}

fn answer(path: usize, labels: &[Labels; 4], method: &Method, step: Option<Step>) -> Result<Res, BoxError> {
    if *method == Method::GET {
        let l = labels[path];
        let tags: Vec<&str> = (0..2).filter(|t| l.tags[*t]).map(|t| TAGS[t]).collect();
        let groups: Vec<String> = (0..2)
            .filter(|g| l.groups[*g])
            .map(|g| format!("\"{}\"", GROUPS[g]))
            .collect();
        let mut builder = Response::builder().header("cache-control", "max-age=3600");
        if !tags.is_empty() {
            builder = builder.header("surrogate-key", tags.join(" "));
        }
        if !groups.is_empty() {
            builder = builder.header("cache-groups", groups.join(", "));
        }
        return Ok(builder.body(Full::new(Bytes::from(PATHS[path]))).unwrap());
    }
    let Some(Step::Write {
        status,
        location,
        group,
        ..
    }) = step
    else {
        return Err("no write planned".into());
    };
    let Some(status) = status else {
        return Err("connection reset".into());
    };
    let mut builder = Response::builder().status(status);
    if let Some(to) = location {
        builder = builder.header("location", PATHS[to]);
    }
    if let Some(g) = group {
        builder = builder.header("cache-group-invalidation", format!("\"{}\"", GROUPS[g]));
    }
    Ok(builder.body(Full::default()).unwrap())
}

async fn run(labels: [Labels; 4], steps: Vec<Step>) -> Result<(), String> {
    let cache = Cache::builder().max_bytes(1 << 20).build().unwrap();
    let invalidator = Invalidator::new(cache.clone());
    let planned = std::sync::Arc::new(std::sync::Mutex::new(None::<Step>));
    let plan = planned.clone();
    let upstream = Upstream::new(move |req: Req, _| {
        let path = PATHS.iter().position(|p| *p == req.uri().path()).expect("a known path");
        let result = answer(path, &labels, req.method(), plan.lock().unwrap().take());
        async move { result }
    });
    let mut layer = InvalidationLayer::new(invalidator.clone());
    for (path, l) in labels.iter().enumerate() {
        if let (None, None) = l.rule {
            continue;
        }
        let mut rule = Rule::new(Method::POST, PATHS[path]).unwrap();
        if let Some(to) = l.rule.0 {
            rule = rule.key(PATHS[to]);
        }
        if let Some(tag) = l.rule.1 {
            rule = rule.tag(TAGS[tag]);
        }
        layer = layer.rule(rule);
    }
    let stack = layer.layer(upstream.clone());
    let mut client = CacheLayer::new(cache.clone()).layer(stack);
    let mut model = Model::default();
    for (i, step) in steps.into_iter().enumerate() {
        let context = format!("step {i}, {step:?}, model {model:?}");
        match step {
            Step::Get(path) => {
                let request = Request::get(key(path)).body(Full::default()).unwrap();
                let response = client.ready().await.unwrap().call(request).await;
                let response = response.map_err(|e| format!("{context}: error {e}"))?;
                let hit = CacheStatus::from_headers(response.headers())
                    .as_ref()
                    .map(CacheStatus::outcome)
                    == Some(Outcome::Hit);
                let want = model.stored.get(&path) == Some(&false);
                if hit != want {
                    return Err(format!("{context}: hit {hit}, the model says {want}"));
                }
                model.stored.insert(path, false);
            }
            Step::Write {
                path,
                status,
                location,
                group,
            } => {
                *planned.lock().unwrap() = Some(step);
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(key(path))
                    .body(Full::default())
                    .unwrap();
                let _ = client.ready().await.unwrap().call(request).await;
                let (rule_key, rule_tag) = labels[path].rule;
                let ruled = rule_key.map(On::Path).into_iter().chain(rule_tag.map(On::Tag));
                match status {
                    // Sent and unanswered: perhaps applied; so are its rules.
                    None => {
                        for node in std::iter::once(On::Path(path)).chain(ruled) {
                            model.invalidate(node, &labels, true);
                        }
                    }
                    Some(status) => {
                        // RFC 9875: on any answer to an unsafe request.
                        if let Some(g) = group {
                            model.invalidate(On::Group(g), &labels, false);
                        }
                        // RFC 9111 §4.4: after a non-error answer only.
                        if status < 400 {
                            let named = std::iter::once(On::Path(path)).chain(location.map(On::Path));
                            for node in named.chain(ruled) {
                                model.invalidate(node, &labels, false);
                            }
                        }
                    }
                }
            }
            Step::PurgeKey(path, soft) => {
                let mode = if soft { Purge::Soft } else { Purge::Hard };
                invalidator.purge(&[Node::Key(key(path).into())], mode);
                model.invalidate(On::Path(path), &labels, soft);
            }
            Step::PurgeTag(tag, soft) => {
                let mode = if soft { Purge::Soft } else { Purge::Hard };
                invalidator.purge(&[Node::Tag(TAGS[tag].into())], mode);
                model.invalidate(On::Tag(tag), &labels, soft);
            }
            Step::PurgeGroup(group) => {
                invalidator.group(ORIGIN, GROUPS[group]);
                model.invalidate(On::Group(group), &labels, false);
            }
            Step::Depend(path, on) => {
                let node = match on {
                    On::Path(p) => Node::Key(key(p).into()),
                    On::Tag(t) => Node::Tag(TAGS[t].into()),
                    On::Group(g) => Node::Tag(group_tag(ORIGIN, GROUPS[g]).into()),
                };
                let added = invalidator.depends_on(Node::Key(key(path).into()), node).is_ok();
                let want = model.stored.contains_key(&path);
                if added != want {
                    return Err(format!("{context}: edge added {added}, the model says {want}"));
                }
                if added {
                    model.edges.insert((path, on));
                }
            }
        }
        let stored: BTreeSet<String> = cache.entries().iter().map(|m| m.key.to_string()).collect();
        let want: BTreeSet<String> = model.stored.keys().map(|p| key(*p)).collect();
        if stored != want {
            return Err(format!(
                "after {context}: the cache holds {stored:?}, the model {want:?}"
            ));
        }
        if !cache.audit().is_clean() {
            return Err(format!("after {context}: {:?}", cache.audit()));
        }
    }
    Ok(())
}

fn labels() -> impl Strategy<Value = [Labels; 4]> {
    let rule = (
        prop::option::weighted(0.3, 0usize..4),
        prop::option::weighted(0.3, 0usize..2),
    );
    let one =
        (any::<[bool; 2]>(), any::<[bool; 2]>(), rule).prop_map(|(tags, groups, rule)| Labels { tags, groups, rule });
    [one.clone(), one.clone(), one.clone(), one]
}

fn step() -> impl Strategy<Value = Step> {
    let path = || 0usize..4;
    prop_oneof![
        6 => path().prop_map(Step::Get),
        3 => (
            path(),
            prop_oneof![3 => Just(Some(204u16)), 1 => Just(Some(500u16)), 1 => Just(None)],
            prop::option::weighted(0.3, path()),
            prop::option::weighted(0.3, 0usize..2),
        )
            .prop_map(|(path, status, location, group)| Step::Write {
                path,
                status,
                location,
                group,
            }),
        1 => (path(), any::<bool>()).prop_map(|(p, soft)| Step::PurgeKey(p, soft)),
        1 => (0usize..2, any::<bool>()).prop_map(|(t, soft)| Step::PurgeTag(t, soft)),
        1 => (0usize..2).prop_map(Step::PurgeGroup),
        2 => (
            path(),
            prop_oneof![path().prop_map(On::Path), (0usize..2).prop_map(On::Tag), (0usize..2).prop_map(On::Group)]
        )
            .prop_map(|(p, on)| Step::Depend(p, on)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn invalidations_remove_what_they_name(labels in labels(), steps in prop::collection::vec(step(), 1..48)) {
        let outcome = support::on_paused_runtime(run(labels, steps));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
