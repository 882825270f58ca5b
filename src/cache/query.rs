//! Which of a request's query parameters its cache key keeps, and in what
//! order. Pure logic.
//!
//! By default a key keeps the query as sent: URIs that differ in their query
//! name different resources (RFC 9110 §4.2.3 leaves no room for a cache to
//! guess otherwise). Some parameters select nothing, though, and change on
//! every request: the signature and date of a presigned URL
//! (`X-Amz-Signature`, `X-Amz-Date` ...), a cache buster, tracking
//! parameters. Keyed as sent, such requests never hit. A [`QueryKey`] names
//! the parameters to leave out and can sort the rest, so that one resource
//! asked for in two orders is one entry.
//!
//! ```
//! use tower_optimizer::cache::{Cache, QueryKey, QueryOrder};
//!
//! let cache = Cache::builder()
//!     .query_key(QueryKey::as_sent().ignoring(["X-Amz-*", "utm_source"]).order(QueryOrder::Sorted))
//!     .build()
//!     .unwrap();
//! let uri = "https://bucket.test/a.png?v=2&X-Amz-Date=20261127&X-Amz-Signature=f00&a=1"
//!     .parse()
//!     .unwrap();
//! assert_eq!(cache.key_for_uri(&uri).unwrap(), "https://bucket.test/a.png?a=1&v=2");
//! ```

/// Which query parameters a cache key keeps, and in what order (set with
/// [`CacheBuilder::query_key`](super::CacheBuilder::query_key)).
///
/// By default a key keeps the query as sent: URIs that differ in their
/// query name different resources. Some parameters select nothing and
/// change on every request, though (a presigned URL's `X-Amz-Signature`
/// and `X-Amz-Date`, a cache buster, tracking): keyed as sent, such
/// requests never hit. Every key the cache builds follows this: a
/// request's, and those its invalidations name (a URI, a `Location`, the
/// admin service's `uri`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryKey {
    /// Names left out: exact, or a prefix where one ends with `*`.
    ignore: Vec<String>,
    order: QueryOrder,
}

/// The order of the parameters a cache key keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryOrder {
    /// As the request sent them (the default): an application may read
    /// `?a=1&a=2` differently from `?a=2&a=1`.
    #[default]
    AsSent,
    /// Sorted by name, then value, so that one resource asked for with its
    /// parameters in any order is one entry.
    Sorted,
}

impl QueryKey {
    /// Every parameter, in the order sent: the default.
    #[must_use]
    pub fn as_sent() -> Self {
        QueryKey::default()
    }

    /// Leaves out the parameters named: each an exact name (case matters,
    /// as in a URI), or a prefix ending with `*` (`utm_*`; `*` alone leaves
    /// out the whole query, keying by path only). Names compare
    /// with their percent-escapes of unreserved characters decoded, as in
    /// the key.
    #[must_use]
    pub fn ignoring<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ignore.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets the order of the parameters kept.
    #[must_use]
    pub fn order(mut self, order: QueryOrder) -> Self {
        self.order = order;
        self
    }

    /// Whether it keeps every query as sent.
    pub(crate) fn is_as_sent(&self) -> bool {
        self.ignore.is_empty() && self.order == QueryOrder::AsSent
    }

    /// Why it cannot be used, if it cannot: a name that is empty, holds a
    /// `*` anywhere but at its end, or a character a query name cannot
    /// carry unescaped (`&`, `=`, `#`, a space ...).
    pub(crate) fn check(&self) -> Result<(), String> {
        for name in &self.ignore {
            let stem = name.strip_suffix('*').unwrap_or(name);
            let fits = |b: u8| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#' | b'*');
            if name.is_empty() || !stem.bytes().all(fits) {
                return Err(format!(
                    "query_key: {name:?} is not a query parameter name (or a prefix ending with '*')"
                ));
            }
        }
        Ok(())
    }

    fn ignores(&self, name: &str) -> bool {
        self.ignore.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        })
    }

    /// Appends `query` (already normalised) to `key` as this keeps it,
    /// with its `?`; nothing at all when no parameter is left.
    pub(crate) fn push(&self, key: &mut String, query: &str) {
        if self.is_as_sent() {
            key.push('?');
            key.push_str(query);
            return;
        }
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|param| !param.is_empty() && !self.ignores(split(param).0))
            .collect();
        if self.order == QueryOrder::Sorted {
            // By name, then value: `a=2` before `ab=1` whatever the bytes
            // after the name say.
            // `b` and `b=` tie on both: the text breaks the tie, so that
            // any order of them sorts the same.
            kept.sort_by(|x, y| split(x).cmp(&split(y)).then_with(|| x.cmp(y)));
        }
        for (i, param) in kept.iter().enumerate() {
            key.push(if i == 0 { '?' } else { '&' });
            key.push_str(param);
        }
    }
}

/// A parameter's name and value (empty if it has none).
fn split(param: &str) -> (&str, &str) {
    param.split_once('=').unwrap_or((param, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(policy: &QueryKey, query: &str) -> String {
        let mut key = String::from("http://h/p");
        policy.push(&mut key, query);
        key
    }

    #[test]
    fn as_sent_keeps_the_query_exactly() {
        let policy = QueryKey::as_sent();
        assert_eq!(keyed(&policy, "b=2&a=1&&a"), "http://h/p?b=2&a=1&&a");
        assert_eq!(keyed(&policy, ""), "http://h/p?", "an empty query is still a query");
    }

    #[test]
    fn ignored_names_go_exact_or_by_prefix_and_the_rest_keep_their_order() {
        let policy = QueryKey::as_sent().ignoring(["X-Amz-*", "utm_source", "_"]);
        assert_eq!(
            keyed(
                &policy,
                "v=2&X-Amz-Date=1&X-Amz-Signature=ab&utm_source=x&utm_sourced=y&_=99&a=1"
            ),
            "http://h/p?v=2&utm_sourced=y&a=1"
        );
        assert_eq!(keyed(&policy, "X-Amz-Date=1&_"), "http://h/p", "none left: no '?'");
        assert_eq!(
            keyed(&policy, "x-amz-date=1"),
            "http://h/p?x-amz-date=1",
            "names are case-sensitive"
        );
        assert_eq!(keyed(&policy, "a=1&&b"), "http://h/p?a=1&b", "empty parameters go");
    }

    #[test]
    fn sorted_orders_by_name_then_value() {
        let policy = QueryKey::as_sent().order(QueryOrder::Sorted);
        assert_eq!(keyed(&policy, "b=1&ab=1&a=2&a=1&a"), "http://h/p?a&a=1&a=2&ab=1&b=1");
        assert_eq!(
            keyed(&policy, "a=2&ab=1"),
            keyed(&policy, "ab=1&a=2"),
            "one resource in any order is one key"
        );
        assert_eq!(keyed(&policy, "b=&b"), keyed(&policy, "b&b="), "ties break on the text");
    }

    #[test]
    fn names_that_cannot_be_parameter_names_are_refused() {
        for bad in ["", "**", "a*b", "a&b", "a=b", "a b", "a#"] {
            assert!(QueryKey::as_sent().ignoring([bad]).check().is_err(), "{bad:?}");
        }
        assert!(
            QueryKey::as_sent()
                .ignoring(["utm_*", "X-Amz-Date", "_", "*"])
                .check()
                .is_ok()
        );
        let path_only = QueryKey::as_sent().ignoring(["*"]);
        assert_eq!(keyed(&path_only, "a=1&b"), "http://h/p", "'*' alone: the path only");
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// Up to eight parameters over a small alphabet, so that names
        /// repeat, prefixes collide and some have no value.
        fn params() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec("[ab_][ab_]{0,2}(=[ab]{0,2})?", 0..8)
        }

        fn kept(key: &str) -> Vec<String> {
            key.split_once('?')
                .map(|(_, q)| q.split('&').map(str::to_owned).collect())
                .unwrap_or_default()
        }

        proptest! {
            /// Ignoring keeps exactly the parameters not ignored, in the
            /// order sent; sorting makes every order of them one key.
            #[test]
            fn keys_keep_what_is_not_ignored_and_sort_to_one_order(
                params in params(),
                seed in any::<u64>(),
            ) {
                let query = params.join("&");
                let ignoring = QueryKey::as_sent().ignoring(["a", "b_*"]);
                let ignored = |p: &String| {
                    let name = split(p).0;
                    name == "a" || name.starts_with("b_")
                };
                let expected: Vec<String> = params.iter().filter(|p| !p.is_empty() && !ignored(p)).cloned().collect();
                prop_assert_eq!(kept(&keyed(&ignoring, &query)), expected.clone());
                // Any other order of the same parameters: one sorted key.
                let mut shuffled = params.clone();
                let mut state = seed | 1;
                for i in (1..shuffled.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    shuffled.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
                }
                let sorted = ignoring.clone().order(QueryOrder::Sorted);
                let one = keyed(&sorted, &query);
                prop_assert_eq!(&one, &keyed(&sorted, &shuffled.join("&")));
                let mut by_name = expected;
                by_name.sort_by(|x, y| split(x).cmp(&split(y)).then_with(|| x.cmp(y)));
                prop_assert_eq!(kept(&one), by_name);
            }
        }
    }
}
