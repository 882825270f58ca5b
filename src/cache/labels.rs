//! What an entry is labelled with for invalidation: tags, version stamps and
//! dependencies. Inner layers (the invalidation layer) put these in the
//! response extensions; the cache reads them when it stores the response.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The tags a response is stored under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(pub Vec<Arc<str>>);

/// A name an entry can depend on: another entry's key or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A primary key (normalised absolute URI).
    Key(Arc<str>),
    /// A tag.
    Tag(Arc<str>),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Key(key) => write!(f, "key {key}"),
            Node::Tag(tag) => write!(f, "tag {tag}"),
        }
    }
}

/// The nodes a response depends on; invalidating any of them invalidates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies(pub Vec<Node>);

/// The version of one namespace a response was produced under. Bumping the
/// namespace makes every entry stamped with an older version invalid in O(1):
/// the entry compares its stamp with the live counter on every use.
#[derive(Clone)]
pub struct VersionStamp {
    counter: Arc<AtomicU64>,
    version: u64,
}

impl VersionStamp {
    /// A stamp of `counter`'s current value.
    pub fn current(counter: &Arc<AtomicU64>) -> Self {
        VersionStamp {
            counter: counter.clone(),
            version: counter.load(Ordering::Acquire),
        }
    }

    /// Whether the namespace has not been bumped since the stamp was taken.
    pub fn is_current(&self) -> bool {
        self.counter.load(Ordering::Acquire) == self.version
    }
}

impl fmt::Debug for VersionStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionStamp")
            .field("version", &self.version)
            .field("current", &self.is_current())
            .finish()
    }
}

/// The version stamps a response is stored with.
#[derive(Debug, Clone, Default)]
pub struct Versions(pub Vec<VersionStamp>);
