//! How the crate's figures look in JSON (`/stats`, `/alerts`, and any
//! serialised `OptimizerStats`, `CacheStats` or `BreakerSnapshot`):
//! durations as seconds in fields named `_seconds`, as Prometheus names its
//! units, rather than serde's `{"secs", "nanos"}` pairs, which no dashboard
//! or `jq` filter wants to add up; counters kept per cause or kind as one
//! object keyed by name rather than an array indexed by a number.

// Each helper serves the figures of one capability; a build without all
// of them leaves some unused.
#![cfg_attr(
    not(all(feature = "cache", feature = "circuit-breaker", feature = "monitor")),
    allow(dead_code)
)]

use std::time::Duration;

use serde::Serializer;
use serde::ser::SerializeMap;

/// A duration as seconds.
pub(crate) fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// An optional duration as seconds, or `null`.
// serde's `serialize_with` hands the field by reference.
#[allow(clippy::ref_option)]
pub(crate) fn optional_seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, serializer),
        None => serializer.serialize_none(),
    }
}

/// Name-value pairs as one JSON object, in their order (an array of
/// two-element arrays is what serde makes of them otherwise).
pub(crate) fn object<S, V>(pairs: &[(String, V)], serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    V: serde::Serialize,
{
    entries(pairs.iter().map(|(name, value)| (name, value)), serializer)
}

/// Counters indexed by an enum's `index()`, as one object keyed by each
/// index's name (`names` in index order).
pub(crate) fn named<S: Serializer>(names: &[&'static str], counts: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
    entries(names.iter().zip(counts), serializer)
}

/// The one way both of the above write an object.
fn entries<S, K, V>(pairs: impl ExactSizeIterator<Item = (K, V)>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    K: serde::Serialize,
    V: serde::Serialize,
{
    let mut map = serializer.serialize_map(Some(pairs.len()))?;
    for (name, value) in pairs {
        map.serialize_entry(&name, &value)?;
    }
    map.end()
}

/// Shared text as a string (serde serialises `Arc<str>` only with its
/// `rc` feature, which would change how every `Arc` it meets is written).
pub(crate) fn shared_str<S: Serializer>(text: &std::sync::Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}
