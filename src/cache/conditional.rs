//! A caller's own conditional GET or HEAD answered from a stored response
//! (RFC 9111 §4.3.2): `If-None-Match`, else `If-Modified-Since`, evaluated
//! against the response the cache would serve, as RFC 9110 §13.2.2 orders
//! them. Pure logic.
//!
//! A browser behind a proxy built on this crate, or a client with a cache
//! of its own, asks this way on every reuse; answered here, a match costs
//! a 304 of a few header lines instead of a trip upstream and a full body.
//! Where the cache must go upstream first (a miss, a stale entry), it asks
//! for itself, without the caller's validators, and judges them against
//! what it then answers from.

use std::time::SystemTime;

use http::header::{
    AGE, CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, HeaderName, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderValue};

use super::status::CACHE_STATUS;

/// The fields a 304 carries from the stored response: those RFC 9110
/// §15.4.5 asks for, `Last-Modified` (it guides the caller's cache when
/// there is no `ETag`), and the cache's own `Age` and `Cache-Status`. The
/// rest describe a body the 304 does not have.
const NOT_MODIFIED_FIELDS: [HeaderName; 9] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    VARY,
    LAST_MODIFIED,
    AGE,
    CACHE_STATUS,
];

/// The opaque part of an entity tag, for weak comparison (RFC 9110
/// §8.8.3.2): two tags match weakly when these are equal.
pub(crate) fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Whether the request's precondition is false for the stored response
/// (`stored` its headers), so the answer is a 304 rather than the response.
///
/// `If-None-Match` is false when one of its tags matches the stored `ETag`
/// weakly, or when it is `*` (a stored response exists). When it is
/// present, `If-Modified-Since` is ignored; otherwise that is false when the
/// stored `Last-Modified` (or, lacking one, its `Date`) is no later than
/// the given date. A field that cannot be read, or a date that is not one,
/// makes the precondition true: the full response is never wrong, a 304
/// to a question misread would be.
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        // Without a stored `ETag`, only `*` matches.
        let stored_tag = stored.get(ETAG).map(|etag| opaque_tag(etag.as_bytes()));
        return request.get_all(IF_NONE_MATCH).iter().any(|line| {
            let mut found = false;
            let listed = each_tag(line.as_bytes(), |tag| {
                found |= tag == b"*" || stored_tag == Some(opaque_tag(tag));
            });
            listed && found
        });
    }
    let mut since = request.get_all(IF_MODIFIED_SINCE).iter();
    // More than one line is more than one member: ignored (§13.1.3).
    let (Some(since), None) = (since.next(), since.next()) else {
        return false;
    };
    let (Some(since), Some(modified)) = (http_date(since), stored.get(LAST_MODIFIED).or_else(|| stored.get(DATE)))
    else {
        return false;
    };
    http_date(modified).is_some_and(|modified| modified <= since)
}

/// Takes the caller's own `If-None-Match` and `If-Modified-Since` off a
/// request the cache sends upstream: it asks for the whole response (or
/// validates its own copy) and judges them itself against its answer.
/// Empty, without allocating, when there are none.
pub(crate) fn take(headers: &mut HeaderMap) -> HeaderMap {
    let mut asked = HeaderMap::new();
    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE] {
        // `entry` makes room for a line first, allocating a table in a map
        // that had none: only a field that is there is taken.
        if !headers.contains_key(&name) {
            continue;
        }
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            let (name, values) = entry.remove_entry_mult();
            for value in values {
                asked.append(name.clone(), value);
            }
        }
    }
    asked
}

/// The head of the 304 for a stored response's head `stored` (already
/// carrying the `Age` and `Cache-Status` of this answer).
pub(crate) fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(NOT_MODIFIED_FIELDS.len());
    for name in &NOT_MODIFIED_FIELDS {
        for value in stored.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// Calls `each` with every entity tag of one `If-None-Match` line (`*` as
/// itself), in order, without collecting them (a browser revalidating
/// through a proxy asks this on every hit); `false` if the line is not a
/// list of them, whatever came before the fault. A comma inside a tag's
/// quotes is part of the tag.
fn each_tag<'a>(line: &'a [u8], mut each: impl FnMut(&'a [u8])) -> bool {
    let mut rest = line.trim_ascii();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
            continue;
        }
        let start = usize::from(rest.starts_with(b"W/")) * 2;
        let len = if rest[start..].starts_with(b"*") && start == 0 {
            1
        } else {
            let Some(quoted) = rest[start..].strip_prefix(b"\"") else {
                return false;
            };
            let Some(end) = quoted.iter().position(|&b| b == b'"') else {
                return false;
            };
            start + 2 + end
        };
        each(&rest[..len]);
        rest = rest[len..].trim_ascii_start();
        if !rest.is_empty() && !rest.starts_with(b",") {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    const MON: &str = "Mon, 02 Nov 2026 10:00:00 GMT";
    const TUE: &str = "Tue, 03 Nov 2026 10:00:00 GMT";

    #[test]
    fn entity_tag_lists() {
        fn tags(line: &str) -> Option<Vec<&[u8]>> {
            let mut tags = Vec::new();
            each_tag(line.as_bytes(), |tag| tags.push(tag)).then_some(tags)
        }
        assert_eq!(tags("\"a\""), Some(vec![&b"\"a\""[..]]));
        assert_eq!(
            tags(" W/\"a\" ,\"b,c\",, *"),
            Some(vec![&b"W/\"a\""[..], b"\"b,c\"", b"*"])
        );
        assert_eq!(tags(""), Some(vec![]));
        for junk in ["a", "\"a", "\"a\"x", "W/", "W/*", "\"a\" \"b\""] {
            assert_eq!(tags(junk), None, "{junk}");
        }
    }

    #[test]
    fn if_none_match_by_weak_comparison() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", MON)]);
        let ask = |inm: &str| not_modified(&headers(&[("if-none-match", inm)]), &stored);
        assert!(ask("\"v1\""));
        assert!(ask("\"v0\", W/\"v1\""));
        assert!(ask("*"));
        assert!(!ask("\"v2\""));
        assert!(!ask("v1"), "not a tag: the full response");
        // Two lines are one list.
        let two = headers(&[("if-none-match", "\"x\""), ("if-none-match", "\"v1\"")]);
        assert!(not_modified(&two, &stored));
        // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        let both = headers(&[("if-none-match", "\"v2\""), ("if-modified-since", TUE)]);
        assert!(!not_modified(&both, &stored));
        // No stored ETag: only `*` matches.
        let untagged = headers(&[("last-modified", MON)]);
        assert!(!not_modified(&headers(&[("if-none-match", "\"v1\"")]), &untagged));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &untagged));
        // A match before a fault in the list does not count.
        assert!(!ask("W/\"v1\", junk"));
    }

    #[test]
    fn if_modified_since_against_last_modified_or_date() {
        let ask = |ims: &str, stored: &[(&str, &str)]| {
            not_modified(&headers(&[("if-modified-since", ims)]), &headers(stored))
        };
        assert!(ask(MON, &[("last-modified", MON)]));
        assert!(ask(TUE, &[("last-modified", MON)]));
        assert!(!ask(MON, &[("last-modified", TUE)]));
        assert!(ask(TUE, &[("date", MON)]), "Date stands in for Last-Modified");
        assert!(!ask(MON, &[("last-modified", TUE), ("date", MON)]));
        assert!(!ask(TUE, &[]), "nothing to compare with");
        assert!(!ask("yesterday", &[("last-modified", MON)]), "not a date: ignored");
        assert!(!ask(TUE, &[("last-modified", "garbage")]));
        let twice = headers(&[("if-modified-since", TUE), ("if-modified-since", TUE)]);
        assert!(
            !not_modified(&twice, &headers(&[("last-modified", MON)])),
            "two members: ignored"
        );
    }

    #[test]
    fn taking_the_callers_validators_leaves_the_rest() {
        let mut request = headers(&[
            ("if-none-match", "\"a\""),
            ("accept", "*/*"),
            ("if-none-match", "\"b\""),
            ("if-modified-since", MON),
        ]);
        let asked = take(&mut request);
        assert_eq!(asked.get_all(IF_NONE_MATCH).iter().count(), 2);
        assert_eq!(asked.get(IF_MODIFIED_SINCE).unwrap(), MON);
        assert_eq!(request.len(), 1);
        let mut bare = HeaderMap::new();
        assert!(take(&mut bare).is_empty());
        assert_eq!(bare.capacity(), 0, "a map without them is left unallocated");
    }

    #[test]
    fn a_304_keeps_what_guides_caches_and_drops_what_describes_the_body() {
        let stored = headers(&[
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("vary", "accept"),
            ("vary", "accept-language"),
            ("age", "5"),
            ("cache-status", "tower-optimizer; hit"),
            ("x-custom", "1"),
        ]);
        let head = not_modified_headers(&stored);
        let names: Vec<&str> = head.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["cache-control", "etag", "vary", "age", "cache-status"]);
        assert_eq!(head.get_all(VARY).iter().count(), 2);
    }
}
