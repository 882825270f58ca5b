//! Cache keys: the normalised target URI (primary key) and the `Vary`
//! secondary key (RFC 9111 §4.1). Pure logic.

use std::cell::RefCell;
use std::fmt::Write as _;

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::query::QueryKey;

/// Builds the primary key of a request: `scheme://authority/path?query`,
/// with scheme and host lowercased, the default port dropped, an empty path
/// made `/`, and percent-escapes normalised (unreserved characters decoded,
/// hex digits uppercased) as RFC 3986 §6.2.2 allows.
///
/// GET and HEAD share a key (HEAD is answered from a stored GET), so the
/// method is not part of it. `None` when the request names no authority,
/// neither in its URI nor in `Host`.
pub(crate) fn primary_key(uri: &Uri, headers: &HeaderMap, query: &QueryKey) -> Option<String> {
    let mut key = String::new();
    write_primary_key(uri, headers, query, &mut key).then_some(key)
}

/// Runs `f` with the primary key of a request built in a reused per-thread
/// buffer: the hit path then allocates nothing for its key.
pub(crate) fn with_primary_key<R>(
    uri: &Uri,
    headers: &HeaderMap,
    query: &QueryKey,
    f: impl FnOnce(Option<&str>) -> R,
) -> R {
    thread_local! {
        static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
    }
    BUFFER.with(|cell| {
        // Re-entered from inside `f` (an eviction listener that builds a
        // key, say): fall back to a buffer of its own.
        let Ok(mut buffer) = cell.try_borrow_mut() else {
            let mut own = String::new();
            let ok = write_primary_key(uri, headers, query, &mut own);
            return f(ok.then_some(own.as_str()));
        };
        buffer.clear();
        let ok = write_primary_key(uri, headers, query, &mut buffer);
        let result = f(ok.then_some(buffer.as_str()));
        // One huge URI must not pin a huge buffer on this thread.
        if buffer.capacity() > MAX_RETAINED_KEY_BUFFER {
            *buffer = String::new();
        }
        result
    })
}

/// Largest key buffer kept per thread between requests.
const MAX_RETAINED_KEY_BUFFER: usize = 4096;

/// Writes the primary key into `key` (which must be empty), its query as
/// `policy` keeps it; `false` when the request names no authority.
fn write_primary_key(uri: &Uri, headers: &HeaderMap, policy: &QueryKey, key: &mut String) -> bool {
    // The two schemes nearly every request has compare as small integers.
    // Either may also come spelled in capitals (built with `Uri::builder`).
    let (scheme, default_port, known_lowercase) = match uri.scheme() {
        None => ("http", ":80", true),
        Some(s) if *s == Scheme::HTTP => ("http", ":80", true),
        Some(s) if *s == Scheme::HTTPS => ("https", ":443", true),
        Some(s) if s.as_str().eq_ignore_ascii_case("http") => (s.as_str(), ":80", false),
        Some(s) if s.as_str().eq_ignore_ascii_case("https") => (s.as_str(), ":443", false),
        Some(s) => (s.as_str(), "", false),
    };
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => match host_field(headers) {
            Some(host) => host,
            None => return false,
        },
    };
    // Userinfo never reaches a server in HTTP; drop it from the key.
    let host_port = match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if host_port.is_empty() {
        return false;
    }
    let host_port = match host_port.strip_suffix(default_port) {
        Some(host) if !default_port.is_empty() => host,
        _ => host_port,
    };
    let path = uri.path();
    let query = uri.query();
    key.reserve(scheme.len() + 3 + host_port.len() + path.len() + 2 + query.map_or(0, str::len));
    if known_lowercase {
        // Already lowercase.
        key.push_str(scheme);
    } else {
        push_lowercase(key, scheme);
    }
    key.push_str("://");
    push_lowercase(key, host_port);
    if path.is_empty() {
        key.push('/');
    } else {
        push_normalised(key, path);
    }
    if let Some(query) = query {
        if policy.is_as_sent() {
            key.push('?');
            push_normalised(key, query);
        } else {
            push_query_by(policy, key, query);
        }
    }
    true
}

// The helpers below are the rare turns of `write_primary_key`, each out of
// line: every lookup (every hit) runs that function, and its common path
// stays a few lines of code where these would spread it.

/// The `Host` field's value, for a request whose URI has no authority.
#[cold]
#[inline(never)]
fn host_field(headers: &HeaderMap) -> Option<&str> {
    headers.get(HOST).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `query` as a query policy other than "as sent" keeps it.
#[cold]
#[inline(never)]
fn push_query_by(policy: &QueryKey, key: &mut String, query: &str) {
    let mut normalised = String::with_capacity(query.len());
    push_normalised(&mut normalised, query);
    policy.push(key, &normalised);
}

fn push_lowercase(out: &mut String, text: &str) {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        push_lowercased(out, text);
    } else {
        out.push_str(text);
    }
}

#[cold]
#[inline(never)]
fn push_lowercased(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| c.to_ascii_lowercase()));
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Copies `text`, decoding percent-escapes of unreserved characters and
/// uppercasing the hex digits of the others.
fn push_normalised(out: &mut String, text: &str) {
    if !text.contains('%') {
        out.push_str(text);
        return;
    }
    push_unescaped(out, text);
}

/// [`push_normalised`] for text with escapes (out of line, see above).
#[cold]
#[inline(never)]
fn push_unescaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let decoded = (h * 16 + l) as u8;
                if is_unreserved(decoded) {
                    out.push(decoded as char);
                } else {
                    let _ = write!(out, "%{decoded:02X}");
                }
                i += 3;
                continue;
            }
        }
        // `http::Uri` only holds ASCII in path and query.
        out.push(bytes[i] as char);
        i += 1;
    }
}

/// A primary key as the crate's logs show it: without its query, which may
/// carry a credential (`?api_key=`, a signed URL's signature). Logs are
/// read by more people than the cache's own callers, so they get the
/// scheme, host and path only.
pub(crate) struct Logged<'a>(pub(crate) &'a str);

impl std::fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once('?') {
            Some((before, _)) => write!(f, "{before}?(query not logged)"),
            None => f.write_str(self.0),
        }
    }
}

/// The request header values a stored response's `Vary` selects, in the
/// order of its names. A name the request lacks is `None`. One thin pointer,
/// null for the many responses that vary on nothing (a boxed slice would
/// cost every entry twice that).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Secondary(Option<Box<Box<[VaryValue]>>>);

/// One `Vary`-selected request field and its normalised value.
type VaryValue = (HeaderName, Option<HeaderValue>);

impl Secondary {
    /// The key of a response that varies on nothing.
    pub(crate) const NONE: Secondary = Secondary(None);

    /// A secondary key of these fields (none: varies on nothing).
    pub(crate) fn new(fields: Vec<VaryValue>) -> Self {
        Secondary((!fields.is_empty()).then(|| Box::new(fields.into_boxed_slice())))
    }
}

impl std::ops::Deref for Secondary {
    type Target = [VaryValue];

    fn deref(&self) -> &Self::Target {
        self.0.as_deref().map_or(&[], |b| b)
    }
}

/// Captures the secondary key of `request_headers` for the `names` a
/// response varies on. Values are normalised (lines joined by `,`, spaces
/// around commas dropped) so equivalent requests match.
pub(crate) fn secondary_key(names: &[HeaderName], request_headers: &HeaderMap) -> Secondary {
    Secondary::new(
        names
            .iter()
            .map(|name| (name.clone(), normalised_value(request_headers, name)))
            .collect(),
    )
}

/// Whether a request matches a stored response's secondary key (§4.1).
pub(crate) fn matches(secondary: &[(HeaderName, Option<HeaderValue>)], request_headers: &HeaderMap) -> bool {
    secondary.iter().all(|(name, stored)| {
        let mut lines = request_headers.get_all(name).iter();
        match (stored, lines.next()) {
            (None, None) => true,
            (Some(stored), Some(first)) => {
                // Fast path: one line already in normal form.
                if lines.next().is_none() && first.as_bytes() == stored.as_bytes() {
                    return true;
                }
                normalised_value(request_headers, name).as_ref() == Some(stored)
            }
            _ => false,
        }
    })
}

fn normalised_value(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out: Vec<u8> = Vec::new();
    for line in lines {
        for part in line.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
    }
    // Built from bytes of valid header values minus whitespace: still valid.
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn key(uri: &str) -> Option<String> {
        let req = Request::get(uri).body(()).unwrap();
        primary_key(req.uri(), req.headers(), &QueryKey::as_sent())
    }

    #[test]
    fn a_logged_key_leaves_its_query_out() {
        let logged = |uri: &str| Logged(&key(uri).unwrap()).to_string();
        assert_eq!(
            logged("http://api.test/a?token=s3cret&x=1"),
            "http://api.test/a?(query not logged)"
        );
        assert_eq!(logged("https://API.test:443/a/b"), "https://api.test/a/b");
        // A `?` can only start the query: the path's own is escaped.
        assert_eq!(
            logged("http://api.test/%3F?k=v"),
            "http://api.test/%3F?(query not logged)"
        );
    }

    #[test]
    fn normalisation_table() {
        let cases = [
            ("http://Example.COM/a", Some("http://example.com/a")),
            ("HTTP://example.com:80/a", Some("http://example.com/a")),
            ("https://example.com:443", Some("https://example.com/")),
            (
                "https://example.com:8443/x?b=1&a=2",
                Some("https://example.com:8443/x?b=1&a=2"),
            ),
            (
                "http://example.com/%7euser/%2f%41",
                Some("http://example.com/~user/%2FA"),
            ),
            ("http://example.com/bad%zz%", Some("http://example.com/bad%zz%")),
            ("http://user:pw@example.com/x", Some("http://example.com/x")),
            ("http://[::1]:80/x", Some("http://[::1]/x")),
            ("http://[::1]:8080/x", Some("http://[::1]:8080/x")),
            ("/relative", None),
        ];
        for (uri, want) in cases {
            assert_eq!(key(uri).as_deref(), want, "{uri}");
        }
    }

    #[test]
    fn schemes_built_in_capitals_or_unknown() {
        let built = |scheme: &str, authority: &str| {
            let uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query("/a")
                .build()
                .unwrap();
            primary_key(&uri, &HeaderMap::new(), &QueryKey::as_sent())
        };
        assert_eq!(built("HTTP", "Example.com:80").as_deref(), Some("http://example.com/a"));
        assert_eq!(
            built("HTTPS", "example.com:443").as_deref(),
            Some("https://example.com/a")
        );
        assert_eq!(
            built("HTTPS", "example.com:80").as_deref(),
            Some("https://example.com:80/a")
        );
        assert_eq!(built("Ws", "example.com:80").as_deref(), Some("ws://example.com:80/a"));
    }

    #[test]
    fn host_header_for_origin_form() {
        let req = Request::get("/x?y").header("host", "Api.Test:80").body(()).unwrap();
        assert_eq!(
            primary_key(req.uri(), req.headers(), &QueryKey::as_sent()).as_deref(),
            Some("http://api.test/x?y")
        );
    }

    #[test]
    fn vary_matching() {
        let names = [
            HeaderName::from_static("accept-encoding"),
            HeaderName::from_static("x-lang"),
        ];
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", "gzip, br".parse().unwrap());
        let stored = secondary_key(&names, &a);
        assert!(matches(&stored, &a));
        let mut b = HeaderMap::new();
        b.append("accept-encoding", "gzip".parse().unwrap());
        b.append("accept-encoding", " br ".parse().unwrap());
        assert!(matches(&stored, &b), "split lines normalise to the same value");
        b.insert("x-lang", "en".parse().unwrap());
        assert!(!matches(&stored, &b), "a header the stored request lacked");
        let mut c = HeaderMap::new();
        c.insert("accept-encoding", "identity".parse().unwrap());
        assert!(!matches(&stored, &c));
    }
}
