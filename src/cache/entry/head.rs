//! How an entry's header lines and body are stored: the lines a cache
//! keeps, copied with the body into one buffer (`compact`), what a line is
//! charged, and setting a copy's `Age` and `Cache-Status` in place. Pure
//! logic over `http` types.

use bytes::Bytes;
use http::header::{AGE, CONNECTION, CONTENT_LENGTH};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::super::status::{CACHE_NAME, CACHE_STATUS, Memo, memoised, write_int};
use super::super::text;

/// Hop-by-hop fields (RFC 9110 §7.6.1) a cache must not store, plus `Age`,
/// which is recomputed on every use.
pub(super) const NOT_STORED: [HeaderName; 8] = [
    CONNECTION,
    http::header::TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TRAILER,
    AGE,
];

/// The placeholder lines of a copy of a stored map, found by their place:
/// `Entry::new` appends `Age`, then (when `own_status`, the line being ours
/// alone) `Cache-Status`, as the map's last lines, so a hit hashes no name
/// to find them. `None` if they are not there.
pub(super) fn placeholder_slots(
    headers: &mut HeaderMap,
    own_status: bool,
) -> Option<(&mut HeaderValue, Option<&mut HeaderValue>)> {
    let skip = headers.len().checked_sub(1 + usize::from(own_status))?;
    let mut lines = headers.iter_mut().skip(skip);
    let (name, age) = lines.next()?;
    if *name != AGE {
        return None;
    }
    if !own_status {
        return Some((age, None));
    }
    let (name, status) = lines.next()?;
    (*name == CACHE_STATUS).then_some((age, Some(status)))
}

/// Sets `name` to `value` on a copy of a stored map: the placeholder line is
/// overwritten in place, because `insert` first makes room for a new line
/// and, with the copy's table full, would grow it on every hit.
pub(crate) fn overwrite(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.get_mut(&name) {
        Some(slot) => *slot = value,
        None => {
            headers.insert(name, value);
        }
    }
}

/// The `Age` value for `secs`: static text for ages under
/// `text::STATIC_NUMBERS`, else shared per thread (see `status::memoised`).
pub(super) fn age_value(secs: u64) -> HeaderValue {
    if let Some(value) = text::decimal(secs) {
        return value;
    }
    match i64::try_from(secs) {
        Ok(n) => memoised(Memo::Age, n, HeaderValue::from),
        Err(_) => HeaderValue::from(secs),
    }
}

pub(super) fn name_cost(name: &HeaderName) -> usize {
    // Standard names are static; custom ones own a copy of their text.
    if is_standard(name) {
        0
    } else {
        name.as_str().len() + 4 * size_of::<usize>()
    }
}

fn is_standard(name: &HeaderName) -> bool {
    // `HeaderName` does not say whether it is standard; the standard ones
    // all appear in this table of the names a cache sees (the rest we count).
    use http::header as h;
    const KNOWN: [HeaderName; 24] = [
        h::CACHE_CONTROL,
        h::CONTENT_TYPE,
        h::CONTENT_LENGTH,
        h::CONTENT_ENCODING,
        h::CONTENT_LANGUAGE,
        h::DATE,
        h::ETAG,
        h::EXPIRES,
        h::LAST_MODIFIED,
        h::VARY,
        h::SERVER,
        h::ACCEPT_RANGES,
        h::ACCEPT_ENCODING,
        h::ACCEPT,
        h::ACCEPT_LANGUAGE,
        h::LOCATION,
        h::CONTENT_LOCATION,
        h::ACCESS_CONTROL_ALLOW_ORIGIN,
        h::STRICT_TRANSPORT_SECURITY,
        h::X_CONTENT_TYPE_OPTIONS,
        h::CONTENT_DISPOSITION,
        h::LINK,
        h::SET_COOKIE,
        h::AUTHORIZATION,
    ];
    KNOWN.contains(name)
}

/// A stored body: bytes to keep as they are, or chunks to copy.
#[derive(Debug)]
pub(crate) enum EntryBody {
    /// An exact buffer already owned by the cache (a stored entry's body).
    Shared(Bytes),
    /// Chunks read from upstream: copied into the entry's own buffer, so it
    /// pins none of a connection's buffers.
    Chunks(Vec<Bytes>),
}

/// Copies `headers` without the fields a cache must not store (and those
/// the `Connection` field names), with every value in one shared buffer
/// (the body's, when it is copied) and a `Content-Length` that matches the
/// stored body; the map and the stored body.
pub(super) fn compact(headers: &HeaderMap, body: EntryBody) -> (HeaderMap, Bytes) {
    let connection_named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let keep =
        |name: &HeaderName| !NOT_STORED.contains(name) && name != CONTENT_LENGTH && !connection_named.contains(name);
    // Our own placeholder from an earlier store (a 304 freshening) is not
    // an upstream cache's member.
    let keep_value =
        |name: &HeaderName, value: &HeaderValue| keep(name) && !(name == CACHE_STATUS && value == CACHE_NAME);
    // Values that recur across responses come from the shared table
    // (`text::shared`); the rest, and Content-Length's digits unless they
    // are static, are copied into the entry's buffer.
    let lines: Vec<(&HeaderName, &HeaderValue, Option<HeaderValue>)> = headers
        .iter()
        .filter(|(n, v)| keep_value(n, v))
        .map(|(n, v)| (n, v, text::shared(n, v)))
        .collect();
    let total: usize = lines
        .iter()
        .filter(|(_, _, shared)| shared.is_none())
        .map(|(_, v, _)| v.len())
        .sum();
    // The body (when it is to be copied), the values and Content-Length's
    // digits share one buffer: one allocation and one shared count for the
    // whole entry, bumped once per value per hit.
    let (copied, body_len) = match &body {
        EntryBody::Shared(body) => (0, body.len()),
        EntryBody::Chunks(chunks) => {
            let len = chunks.iter().map(Bytes::len).sum();
            (len, len)
        }
    };
    let static_length = text::decimal(body_len as u64);
    let mut digits = [0u8; 20];
    let digit_len = if static_length.is_some() {
        0
    } else {
        write_int(&mut digits, i64::try_from(body_len).unwrap_or(i64::MAX))
    };
    let mut buffer = Vec::with_capacity(copied + total + digit_len);
    if let EntryBody::Chunks(chunks) = &body {
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
        }
    }
    for (_, value, _) in lines.iter().filter(|(_, _, shared)| shared.is_none()) {
        buffer.extend_from_slice(value.as_bytes());
    }
    buffer.extend_from_slice(&digits[..digit_len]);
    let buffer = Bytes::from(buffer);
    let body = match body {
        EntryBody::Chunks(_) => buffer.slice(..copied),
        EntryBody::Shared(body) => body,
    };
    // Room for exactly the kept lines plus Content-Length, Age and
    // Cache-Status, so the map is allocated once at its final size.
    let mut out = HeaderMap::with_capacity(lines.len() + 3);
    let mut offset = copied;
    for (name, value, shared) in lines {
        let value = shared.unwrap_or_else(|| {
            let slice = buffer.slice(offset..offset + value.len());
            offset += value.len();
            // The bytes came from a valid HeaderValue, so this cannot fail;
            // fall back to a plain copy rather than panic if it ever did.
            let mut copy = HeaderValue::from_maybe_shared(slice).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            copy
        });
        out.append(
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone()),
            value,
        );
    }
    let length = static_length.unwrap_or_else(|| {
        HeaderValue::from_maybe_shared(buffer.slice(offset..)).unwrap_or_else(|_| HeaderValue::from(body_len))
    });
    out.insert(CONTENT_LENGTH, length);
    (out, body)
}
