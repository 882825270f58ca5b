//! An entry's small facts in as few bytes as they need: its HTTP version
//! and flags in one byte, and what changes (purge mark, recency tick) in
//! one atomic byte.

use std::sync::atomic::AtomicU8;

use http::Version;

use super::Freshness;

/// An entry's HTTP version and flags, in one byte beside its status (so
/// the entry's small fields fit one word with its size and `State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flags(u8);

impl Flags {
    /// The low three bits: the version, as `VERSIONS` lists them.
    pub(super) const VERSION: u8 = 0b111;
    /// Upstream sent no `Cache-Status` (see `Entry::own_status_line`).
    pub(super) const OWN_STATUS_LINE: u8 = 1 << 3;
    /// The response's `no-cache` (see `Packed`).
    pub(super) const NO_CACHE: u8 = 1 << 4;
    /// The response's `must-revalidate` (see `Packed`).
    pub(super) const MUST_REVALIDATE: u8 = 1 << 5;
    /// The response's `immutable` (see `Packed`).
    pub(super) const IMMUTABLE: u8 = 1 << 6;

    pub(super) const VERSIONS: [Version; 5] = [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_3,
    ];

    pub(super) fn new(version: Version, own_status_line: bool, freshness: &Freshness) -> Flags {
        // `Version` has no other values today; were one added, a stored
        // response would answer as HTTP/1.1, as the cache would build it.
        let index = Self::VERSIONS.iter().position(|v| *v == version).unwrap_or(2);
        // At most 4: fits the three bits.
        #[allow(clippy::cast_possible_truncation)]
        let mut bits = index as u8;
        for (set, flag) in [
            (own_status_line, Self::OWN_STATUS_LINE),
            (freshness.no_cache, Self::NO_CACHE),
            (freshness.must_revalidate, Self::MUST_REVALIDATE),
            (freshness.immutable, Self::IMMUTABLE),
        ] {
            if set {
                bits |= flag;
            }
        }
        Flags(bits)
    }

    pub(super) fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    pub(super) fn version(self) -> Version {
        Self::VERSIONS
            .get(usize::from(self.0 & Self::VERSION))
            .copied()
            .unwrap_or(Version::HTTP_11)
    }
}

/// What changes in a stored entry, in one atomic byte: the soft-purge mark
/// (the high bit), whether a hit has moved the entry to the front of its
/// LRU yet, and the low 6 bits of the store's recency tick when one last
/// did.
#[derive(Debug, Default)]
pub(super) struct State(pub(super) AtomicU8);

impl State {
    pub(super) const PURGED: u8 = 0x80;
    pub(super) const TOUCHED: u8 = 0x40;
    pub(super) const TICK: u8 = 0x3f;
    /// The bits `Entry::touch` compares.
    pub(super) const LAST_TOUCH: u8 = Self::TOUCHED | Self::TICK;
}
