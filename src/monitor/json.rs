//! How the monitor's figures look in JSON (`/stats`, `/alerts`): durations
//! as seconds in fields named `_seconds`, as Prometheus names its units,
//! rather than serde's `{"secs", "nanos"}` pairs, which no dashboard or
//! `jq` filter wants to add up.

use std::time::Duration;

use serde::Serializer;
use serde::ser::SerializeMap;

/// A duration as seconds.
pub(super) fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// An optional duration as seconds, or `null`.
// serde's `serialize_with` hands the field by reference.
#[allow(clippy::ref_option)]
pub(super) fn optional_seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, serializer),
        None => serializer.serialize_none(),
    }
}

/// Name-value pairs as one JSON object, in their order (an array of
/// two-element arrays is what serde makes of them otherwise).
pub(super) fn object<S, V>(pairs: &[(String, V)], serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    V: serde::Serialize,
{
    let mut map = serializer.serialize_map(Some(pairs.len()))?;
    for (name, value) in pairs {
        map.serialize_entry(name, value)?;
    }
    map.end()
}
