//! Cache-Control parsing (RFC 9111 §5.2), tolerant of whatever the network sends.
//!
//! Pure logic: no tower, no clock. Malformed input never panics; it gets the
//! RFC's conservative reading (an unusable freshness directive makes the
//! response stale, an unusable request directive forces validation).

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// The largest delta-seconds value we keep; RFC 9111 §1.2.2 says a recipient
/// that sees a larger one uses 2^31.
pub(crate) const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// Value of a `max-stale` request directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxStale {
    /// `max-stale` with no value: any staleness is acceptable.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// The directives of one message's `Cache-Control` header lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one flag per RFC directive
pub(crate) struct CacheControl {
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) max_stale: Option<MaxStale>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) only_if_cached: bool,
    /// `must-understand` (§5.2.2.3): store only if the cache understands
    /// the status, and then regardless of `no-store`.
    pub(crate) must_understand: bool,
    /// `immutable` (RFC 8246): the response will not change while fresh.
    pub(crate) immutable: bool,
    /// A freshness directive (`max-age`, `s-maxage`) was present but unusable:
    /// garbage, or repeated with different values. §4.2.1 lets us treat the
    /// response as stale, which is the safe reading.
    pub(crate) malformed_freshness: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers`. On a request, a
    /// `Pragma: no-cache` without any `Cache-Control` counts as `no-cache`
    /// (RFC 9111 §5.4).
    #[inline]
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        // Most requests carry neither field, and every hit parses its
        // request's directives.
        if crate::util::has_none_of(headers, &[&CACHE_CONTROL, &PRAGMA]) {
            return CacheControl::default();
        }
        Self::parse(headers)
    }

    /// [`from_headers`](Self::from_headers) past its check. Out of line, so
    /// that a hit whose request has no directives runs only the check, in
    /// a few lines of code rather than amid the parser's.
    #[inline(never)]
    fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        let mut seen_cc = false;
        for value in headers.get_all(CACHE_CONTROL) {
            seen_cc = true;
            // Non-UTF-8 bytes cannot form a directive; skip the line but keep
            // the rest (a lossy reading would invent directives).
            if let Ok(text) = value.to_str() {
                for (name, arg) in split_directives(text) {
                    cc.apply(name, arg);
                }
            } else {
                cc.malformed_freshness = true;
            }
        }
        if !seen_cc {
            let pragma_no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache")));
            cc.no_cache = pragma_no_cache;
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        // Lowercased on the stack: every directive we know fits (the longest
        // is `stale-while-revalidate`), and longer names are ones we ignore.
        let mut lower = [0u8; 24];
        let Some(buf) = lower.get_mut(..name.len()) else {
            return;
        };
        buf.copy_from_slice(name.as_bytes());
        buf.make_ascii_lowercase();
        match &*buf {
            b"max-age" => set_delta(&mut self.max_age, arg, &mut self.malformed_freshness),
            b"s-maxage" => set_delta(&mut self.s_maxage, arg, &mut self.malformed_freshness),
            b"min-fresh" => {
                let mut bad = false;
                set_delta(&mut self.min_fresh, arg, &mut bad);
                if bad {
                    // An unusable min-fresh asks for more freshness than we
                    // can promise: demand the maximum, which forces a fetch.
                    self.min_fresh = Some(MAX_DELTA_SECONDS);
                }
            }
            b"max-stale" => {
                self.max_stale = match arg.map(parse_delta) {
                    None => Some(MaxStale::Any),
                    Some(Some(n)) => Some(match self.max_stale {
                        Some(MaxStale::Seconds(old)) => MaxStale::Seconds(old.min(n)),
                        _ => MaxStale::Seconds(n),
                    }),
                    // Garbage: accept no staleness rather than guess.
                    Some(None) => Some(MaxStale::Seconds(0)),
                };
            }
            b"stale-while-revalidate" => {
                let mut bad = false;
                set_delta(&mut self.stale_while_revalidate, arg, &mut bad);
                if bad {
                    self.stale_while_revalidate = None;
                }
            }
            b"stale-if-error" => {
                let mut bad = false;
                set_delta(&mut self.stale_if_error, arg, &mut bad);
                if bad {
                    self.stale_if_error = None;
                }
            }
            // `no-cache="Set-Cookie"` and `private="x"` name fields; we treat
            // the qualified forms like the unqualified ones, which is stricter.
            b"no-store" => self.no_store = true,
            b"no-cache" => self.no_cache = true,
            b"private" => self.private = true,
            b"public" => self.public = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"only-if-cached" => self.only_if_cached = true,
            b"must-understand" => self.must_understand = true,
            b"immutable" => self.immutable = true,
            _ => {}
        }
    }
}

/// Sets a delta-seconds directive; a repeat with another value or a value
/// that is not delta-seconds marks `malformed`.
fn set_delta(slot: &mut Option<u64>, arg: Option<&str>, malformed: &mut bool) {
    if let Some(n) = arg.and_then(parse_delta) {
        if slot.is_some_and(|old| old != n) {
            *malformed = true;
        }
        *slot = Some(slot.map_or(n, |old| old.min(n)));
    } else {
        *malformed = true;
        // Keep an explicit zero so callers see "stale now".
        *slot = Some(0);
    }
}

/// Parses delta-seconds (RFC 9111 §1.2.2): ASCII digits only, saturating at
/// 2^31. A quoted form (`"60"`) is accepted as §5.2 asks recipients to.
pub(crate) fn parse_delta(arg: &str) -> Option<u64> {
    let arg = arg.trim();
    let arg = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg);
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: u64 = 0;
    for b in arg.bytes() {
        value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if value >= MAX_DELTA_SECONDS {
            return Some(MAX_DELTA_SECONDS);
        }
    }
    Some(value)
}

/// Splits a header line into `(name, argument)` pairs, honouring quoted
/// strings so a comma inside quotes does not split. Lazily: parsing the
/// directives of every request and response allocates nothing.
fn split_directives(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = Some(text);
    std::iter::from_fn(move || rest.map(|t| next_part(t, &mut rest))).filter_map(|part| {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        Some(match part.split_once('=') {
            Some((name, arg)) => (name.trim(), Some(arg.trim())),
            None => (part, None),
        })
    })
}

/// The part of `text` before its first comma outside quotes; `rest` becomes
/// what follows that comma (`None` when there is none).
fn next_part<'a>(text: &'a str, rest: &mut Option<&'a str>) -> &'a str {
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            *rest = Some(&text[i + 1..]);
            return &text[..i];
        }
    }
    *rest = None;
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&[u8]]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_bytes(line).unwrap());
        }
        CacheControl::from_headers(&headers)
    }

    #[test]
    fn table_of_directives() {
        struct Case {
            lines: &'static [&'static [u8]],
            max_age: Option<u64>,
            malformed: bool,
            no_store: bool,
            no_cache: bool,
        }
        let cases = [
            Case {
                lines: &[b"max-age=60"],
                max_age: Some(60),
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"MAX-AGE=60, Public"],
                max_age: Some(60),
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=\"60\""],
                max_age: Some(60),
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=60", b"max-age=60"],
                max_age: Some(60),
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=60", b"max-age=10"],
                max_age: Some(10),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=99999999999999999999999999"],
                max_age: Some(MAX_DELTA_SECONDS),
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=-5"],
                max_age: Some(0),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age=1.5"],
                max_age: Some(0),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age"],
                max_age: Some(0),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"max-age="],
                max_age: Some(0),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b",,, ,no-store,,"],
                max_age: None,
                malformed: false,
                no_store: true,
                no_cache: false,
            },
            Case {
                lines: &[b"no-cache=\"Set-Cookie, X-Foo\", max-age=5"],
                max_age: Some(5),
                malformed: false,
                no_store: false,
                no_cache: true,
            },
            Case {
                lines: &[b"\"unterminated, max-age=5"],
                max_age: None,
                malformed: false,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"garbage \xfe \xff"],
                max_age: None,
                malformed: true,
                no_store: false,
                no_cache: false,
            },
            Case {
                lines: &[b"=,=,==,max-age==5"],
                max_age: Some(0),
                malformed: true,
                no_store: false,
                no_cache: false,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let parsed = cc(case.lines);
            assert_eq!(parsed.max_age, case.max_age, "case {i} max_age");
            assert_eq!(parsed.malformed_freshness, case.malformed, "case {i} malformed");
            assert_eq!(parsed.no_store, case.no_store, "case {i} no_store");
            assert_eq!(parsed.no_cache, case.no_cache, "case {i} no_cache");
        }
    }

    #[test]
    fn request_directives() {
        let parsed = cc(&[b"max-stale, min-fresh=10, only-if-cached"]);
        assert_eq!(parsed.max_stale, Some(MaxStale::Any));
        assert_eq!(parsed.min_fresh, Some(10));
        assert!(parsed.only_if_cached);
        assert_eq!(cc(&[b"max-stale=5"]).max_stale, Some(MaxStale::Seconds(5)));
        assert_eq!(cc(&[b"max-stale=x"]).max_stale, Some(MaxStale::Seconds(0)));
        assert_eq!(cc(&[b"min-fresh=x"]).min_fresh, Some(MAX_DELTA_SECONDS));
        assert_eq!(cc(&[b"stale-while-revalidate=x"]).stale_while_revalidate, None);
        assert_eq!(cc(&[b"stale-if-error=30"]).stale_if_error, Some(30));
    }

    #[test]
    fn must_understand_and_immutable() {
        let parsed = cc(&[b"max-age=60, Must-Understand, no-store", b"IMMUTABLE"]);
        assert!(parsed.must_understand && parsed.no_store && parsed.immutable);
        assert_eq!(parsed.max_age, Some(60));
        let plain = cc(&[b"max-age=60"]);
        assert!(!plain.must_understand && !plain.immutable);
    }

    #[test]
    fn pragma_only_without_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(PRAGMA, HeaderValue::from_static("No-Cache"));
        assert!(CacheControl::from_headers(&headers).no_cache);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::from_headers(&headers).no_cache);
    }

    #[test]
    fn directives_split_at_commas_outside_quotes_only() {
        let line = r#"a, B="x,\"y\",z" , ,c=1,"#;
        let parts: Vec<_> = split_directives(line).collect();
        assert_eq!(parts, [("a", None), ("B", Some(r#""x,\"y\",z""#)), ("c", Some("1"))]);
        assert_eq!(split_directives("").count(), 0);
        // An unclosed quote runs to the end of the line.
        let open: Vec<_> = split_directives(r#"x="a,b"#).collect();
        assert_eq!(open, [("x", Some(r#""a,b"#))]);
    }

    #[test]
    fn huge_line_does_not_panic() {
        let line = "max-age=1,".repeat(10_000) + "max-age=" + &"9".repeat(5_000);
        let parsed = cc(&[line.as_bytes()]);
        assert_eq!(parsed.max_age, Some(1));
        assert!(parsed.malformed_freshness);
    }
}
