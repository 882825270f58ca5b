//! The store's copy of a URI key: its text behind one thin pointer.
//!
//! Every stored URI has one, in its LRU node; an `Arc<str>` there takes 16
//! bytes (pointer and length), this takes 8, with the length beside the
//! text in the same allocation (as large as the `Arc<str>`'s).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use triomphe::ThinArc;

/// A stored URI key, cheap to clone (one reference count). It hashes and
/// compares as its bytes, so maps keyed by it are searched with a `&[u8]`.
#[derive(Clone)]
pub(crate) struct UriKey(ThinArc<(), u8>);

impl UriKey {
    pub(crate) fn new(text: &str) -> UriKey {
        UriKey(ThinArc::from_header_and_slice((), text.as_bytes()))
    }

    /// The key's bytes: what lookups compare and hash.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0.slice
    }

    /// The key's text.
    pub(crate) fn as_str(&self) -> &str {
        // Made from a `str` and never changed, so always valid; an empty
        // key would only stand in if that ever broke.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The key as the rest of the crate shares keys (a copy of its text).
    pub(crate) fn to_arc(&self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

impl PartialEq for UriKey {
    fn eq(&self, other: &UriKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for UriKey {}

impl Hash for UriKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for UriKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<&str> for UriKey {
    fn from(text: &str) -> UriKey {
        UriKey::new(text)
    }
}

impl fmt::Display for UriKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for UriKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_pointer_and_reads_back_its_text() {
        assert_eq!(size_of::<UriKey>(), 8);
        for text in ["", "http://a.test/", "https://b.test/ü?q=1"] {
            let key = UriKey::new(text);
            assert_eq!(key.as_str(), text);
            assert_eq!(key.as_bytes(), text.as_bytes());
            assert_eq!(&*key.to_arc(), text);
            assert_eq!(key.clone(), key);
            // Hashes as its bytes, so a map finds it by them.
            let map: std::collections::HashMap<UriKey, u8> = [(key.clone(), 1)].into();
            assert_eq!(map.get(text.as_bytes()), Some(&1));
            assert_eq!(format!("{key:?}"), format!("{text:?}"));
        }
    }
}
