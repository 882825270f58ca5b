//! Tags from response headers: RFC 9875 `Cache-Groups` and
//! `Cache-Group-Invalidation` (structured-field lists of strings),
//! `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated).
//!
//! Pure logic. Input from the network is bounded: at most
//! [`MAX_TAGS_PER_RESPONSE`] tags of at most [`MAX_TAG_LEN`] bytes each;
//! a structured field that does not parse is ignored whole (RFC 8941 §4.2).
//!
//! ```
//! use http::HeaderMap;
//! use tower_optimizer::invalidation::headers::{CACHE_GROUPS, ParsedTags, TagSyntax, read_tags};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(CACHE_GROUPS, r#""users", "teams";x=1"#.parse().unwrap());
//! let mut parsed = ParsedTags::default();
//! read_tags(&headers, &CACHE_GROUPS, TagSyntax::StructuredStrings, &mut parsed);
//! assert_eq!(parsed.tags, ["users", "teams"]);
//! assert!(!parsed.malformed);
//! ```

use http::{HeaderMap, HeaderName};

/// `Cache-Groups` (RFC 9875 §2).
pub const CACHE_GROUPS: HeaderName = HeaderName::from_static("cache-groups");
/// `Cache-Group-Invalidation` (RFC 9875 §3).
pub const CACHE_GROUP_INVALIDATION: HeaderName = HeaderName::from_static("cache-group-invalidation");
/// `Surrogate-Key` (Fastly and others): space-separated keys.
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// `Cache-Tag` (Cloudflare and others): comma-separated tags.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Most tags taken from one response: CDNs cap the header near 16 KB, and an
/// entry's tags are charged to the cache budget, so a hostile upstream must
/// not be able to attach thousands.
pub const MAX_TAGS_PER_RESPONSE: usize = 64;
/// Longest tag kept, in bytes (Fastly's surrogate-key limit).
pub const MAX_TAG_LEN: usize = 1024;

/// How a header lists its tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSyntax {
    /// RFC 8941 list of strings (`"a", "b"`), as RFC 9875 defines.
    StructuredStrings,
    /// Tokens separated by spaces (`Surrogate-Key`).
    SpaceSeparated,
    /// Tokens separated by commas (`Cache-Tag`).
    CommaSeparated,
}

/// What parsing a tag header produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedTags {
    /// The tags, deduplicated, in order of appearance.
    pub tags: Vec<String>,
    /// Tags dropped for being too long or past the per-response cap.
    pub dropped: usize,
    /// Whether a structured field failed to parse (and was ignored).
    pub malformed: bool,
}

/// Reads every line of `name` in `headers` with `syntax`, appending to `out`.
pub fn read_tags(headers: &HeaderMap, name: &HeaderName, syntax: TagSyntax, out: &mut ParsedTags) {
    for value in headers.get_all(name) {
        let Ok(text) = value.to_str() else {
            out.malformed = true;
            continue;
        };
        let members: Vec<String> = match syntax {
            TagSyntax::StructuredStrings => {
                let Some(members) = parse_sf_strings(text) else {
                    out.malformed = true;
                    continue;
                };
                members
            }
            TagSyntax::SpaceSeparated => text.split_ascii_whitespace().map(str::to_owned).collect(),
            TagSyntax::CommaSeparated => text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        for tag in members {
            if tag.len() > MAX_TAG_LEN || out.tags.len() >= MAX_TAGS_PER_RESPONSE {
                out.dropped += 1;
            } else if !out.tags.contains(&tag) {
                out.tags.push(tag);
            }
        }
    }
}

/// Parses an RFC 8941 list whose members are strings (parameters allowed and
/// ignored). `None` if the field is not such a list.
fn parse_sf_strings(text: &str) -> Option<Vec<String>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == bytes.len() {
        return Some(out);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let mut member = String::new();
        loop {
            let &b = bytes.get(i)?;
            i += 1;
            match b {
                b'\\' => {
                    let &escaped = bytes.get(i)?;
                    if escaped != b'"' && escaped != b'\\' {
                        return None;
                    }
                    member.push(escaped as char);
                    i += 1;
                }
                b'"' => break,
                0x20..=0x7e => member.push(b as char),
                _ => return None,
            }
        }
        // Parameters: `;key` or `;key=value`, skipped.
        while bytes.get(i) == Some(&b';') {
            i += 1;
            while i < bytes.len() && bytes[i] != b',' && bytes[i] != b';' {
                if bytes[i] == b'"' {
                    return None;
                }
                i += 1;
            }
        }
        out.push(member);
        skip_ws(&mut i);
        if i == bytes.len() {
            return Some(out);
        }
        if bytes[i] != b',' {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        if i == bytes.len() {
            // A trailing comma is a parse error in RFC 8941.
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(name: &HeaderName, syntax: TagSyntax, lines: &[&[u8]]) -> ParsedTags {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
        }
        let mut out = ParsedTags::default();
        read_tags(&headers, name, syntax, &mut out);
        out
    }

    #[test]
    fn structured_lists() {
        let s = TagSyntax::StructuredStrings;
        let cases: [(&[u8], Option<&[&str]>); 10] = [
            (b"\"a\", \"b\"", Some(&["a", "b"])),
            (b"\"a\";p=1, \"b\";q", Some(&["a", "b"])),
            (b"\"with \\\"quote\\\" and \\\\\"", Some(&["with \"quote\" and \\"])),
            (b"", Some(&[])),
            (b"a, \"b\"", None),
            (b"\"a\",", None),
            (b"\"unterminated", None),
            (b"\"bad \\n escape\"", None),
            (b"\"a\" \"b\"", None),
            (b"\"\xff\"", None),
        ];
        for (line, want) in cases {
            let got = parse(&CACHE_GROUPS, s, &[line]);
            match want {
                Some(tags) => {
                    assert_eq!(got.tags, tags, "{:?}", String::from_utf8_lossy(line));
                    assert!(!got.malformed);
                }
                None => assert!(
                    got.malformed && got.tags.is_empty(),
                    "{:?} should be ignored",
                    String::from_utf8_lossy(line)
                ),
            }
        }
    }

    #[test]
    fn plain_lists_and_limits() {
        let got = parse(&SURROGATE_KEY, TagSyntax::SpaceSeparated, &[b"  a b\tc  a "]);
        assert_eq!(got.tags, ["a", "b", "c"]);
        let got = parse(&CACHE_TAG, TagSyntax::CommaSeparated, &[b"x, y,,z", b"x"]);
        assert_eq!(got.tags, ["x", "y", "z"]);
        let many = (0..200).map(|i| format!("t{i}")).collect::<Vec<_>>().join(" ");
        let long = "L".repeat(MAX_TAG_LEN + 1);
        let got = parse(
            &SURROGATE_KEY,
            TagSyntax::SpaceSeparated,
            &[long.as_bytes(), many.as_bytes()],
        );
        assert_eq!(got.tags.len(), MAX_TAGS_PER_RESPONSE);
        assert_eq!(got.dropped, 1 + 200 - MAX_TAGS_PER_RESPONSE);
    }
}
