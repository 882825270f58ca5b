//! Header text a hit copies without touching a shared count: static
//! decimal digits, and a bounded process-wide table of the values that
//! recur across responses (`Content-Type`, `Cache-Control`, `Vary` ...).
//!
//! A stored value is otherwise a slice of its entry's buffer, and every hit
//! bumps and drops that buffer's count once per value: on a hot entry
//! served from several threads, that one cache line bounces between cores.
//! A value backed by static bytes clones for free.

use std::collections::HashSet;
use std::sync::{LazyLock, PoisonError, RwLock};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};

/// Numbers below this have static decimal text: every age under 2¾ hours
/// and every `Content-Length` under 10 kB (38,890 bytes of read-only data).
pub(crate) const STATIC_NUMBERS: u64 = 10_000;

/// The decimal text of `0..STATIC_NUMBERS`, back to back.
static DIGITS: [u8; 38_890] = digits();

// Evaluated at compile time only (it initialises a static), so the array
// never sits on a stack at run time.
#[allow(clippy::large_stack_arrays)]
const fn digits() -> [u8; 38_890] {
    let mut out = [0u8; 38_890];
    let (mut n, mut i) = (0u64, 0usize);
    while n < STATIC_NUMBERS {
        let mut div = if n >= 1000 {
            1000
        } else if n >= 100 {
            100
        } else if n >= 10 {
            10
        } else {
            1
        };
        while div > 0 {
            out[i] = b'0' + (n / div % 10) as u8;
            i += 1;
            div /= 10;
        }
        n += 1;
    }
    out
}

/// `n` as a header value backed by static text, if `n < STATIC_NUMBERS`.
pub(crate) fn decimal(n: u64) -> Option<HeaderValue> {
    let n = usize::try_from(n).ok().filter(|&n| (n as u64) < STATIC_NUMBERS)?;
    let (start, len) = match n {
        0..10 => (n, 1),
        10..100 => (10 + (n - 10) * 2, 2),
        100..1000 => (190 + (n - 100) * 3, 3),
        _ => (2890 + (n - 1000) * 4, 4),
    };
    HeaderValue::from_maybe_shared(Bytes::from_static(&DIGITS[start..start + len])).ok()
}

/// Values longer than this are never shared: the ones that recur are short
/// media types and directive lists.
const MAX_SHARED_LEN: usize = 64;

/// The table stops growing at this many bytes (about 1,000 distinct values),
/// so a server sending endless distinct values costs at most this much; past
/// it, values are stored per entry as before.
const MAX_SHARED_BYTES: usize = 64 * 1024;

/// Fields whose values typically recur across responses. Validators, dates
/// and lengths are unique per response and stay in the entry.
const SHAREABLE: [HeaderName; 13] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::VARY,
    header::SERVER,
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
    header::REFERRER_POLICY,
    header::STRICT_TRANSPORT_SECURITY,
];

#[derive(Default)]
struct Table {
    values: HashSet<&'static [u8]>,
    bytes: usize,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(RwLock::default);

/// `value` backed by the shared table, if `name` is one whose values recur
/// and the table has (or has room for) it. Called when storing, never on a
/// hit.
pub(crate) fn shared(name: &HeaderName, value: &HeaderValue) -> Option<HeaderValue> {
    if !SHAREABLE.contains(name) {
        return None;
    }
    let text = intern(&TABLE, value.as_bytes())?;
    let mut shared = HeaderValue::from_maybe_shared(Bytes::from_static(text)).ok()?;
    shared.set_sensitive(value.is_sensitive());
    Some(shared)
}

/// The table's copy of `text`, added if there is room.
fn intern(table: &RwLock<Table>, text: &[u8]) -> Option<&'static [u8]> {
    if text.len() > MAX_SHARED_LEN {
        return None;
    }
    let found = table
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values
        .get(text)
        .copied();
    if found.is_some() {
        return found;
    }
    let mut table = table.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(text) = table.values.get(text) {
        return Some(text);
    }
    if table.bytes + text.len() > MAX_SHARED_BYTES {
        return None;
    }
    // Bounded by MAX_SHARED_BYTES for the life of the process: that bound
    // is what lets a hit clone it for free.
    let leaked: &'static [u8] = Box::leak(text.to_vec().into_boxed_slice());
    table.bytes += leaked.len();
    table.values.insert(leaked);
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_of_every_static_number() {
        for n in 0..STATIC_NUMBERS {
            assert_eq!(decimal(n).unwrap(), n.to_string().as_str(), "{n}");
        }
        assert!(decimal(STATIC_NUMBERS).is_none());
        assert!(decimal(u64::MAX).is_none());
    }

    #[test]
    fn recurring_values_share_one_copy_and_others_are_left_alone() {
        let value = HeaderValue::from_static("application/x-text-test");
        let a = shared(&header::CONTENT_TYPE, &value).unwrap();
        let b = shared(
            &header::CONTENT_TYPE,
            &HeaderValue::from_static("application/x-text-test"),
        )
        .unwrap();
        assert_eq!(a, value);
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr(), "one copy");
        assert!(shared(&header::ETAG, &HeaderValue::from_static("\"v1\"")).is_none());
        let long = HeaderValue::from_str(&"x".repeat(MAX_SHARED_LEN + 1)).unwrap();
        assert!(shared(&header::CONTENT_TYPE, &long).is_none());
    }

    #[test]
    fn the_table_stops_growing_at_its_bound() {
        let table = RwLock::default();
        let mut refused = 0;
        for i in 0..(MAX_SHARED_BYTES / 16 + 100) {
            if intern(&table, format!("max-age={i:08}").as_bytes()).is_none() {
                refused += 1;
            }
        }
        assert!(refused >= 100, "{refused} refused");
        let table = table.read().unwrap();
        assert!(table.bytes <= MAX_SHARED_BYTES);
        assert!(table.bytes > MAX_SHARED_BYTES - 16, "filled up to the bound");
    }
}
