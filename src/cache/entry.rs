//! A stored response: headers compacted and body frozen at store time, so a
//! hit only clones reference-counted parts. Also its byte accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AGE, CONTENT_LENGTH, DATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, response};
use tokio::time::Instant;

use super::freshness::Freshness;
use super::key::Secondary;
use super::labels::VersionStamp;
use super::status::{CACHE_NAME, CACHE_STATUS};

mod flags;
mod head;
mod time;

use flags::{Flags, State};
pub(crate) use head::{EntryBody, overwrite};
use head::{NOT_STORED, age_value, compact, name_cost, placeholder_slots};
pub(crate) use time::{Keep, Stamp};
use time::{MAX_USABLE, NO_WINDOWS, Packed, Windows, at_offset, epoch, offset_of};

/// Bytes an entry costs beyond its key text, header storage and body: the
/// `SharedEntry` allocation (176), the LRU node and its hash slot (about 30),
/// the key's header (see `UriKey`) and the shared buffer's count (40), the 56-byte
/// box of its rare part when it has one (see `Rare`; the text and slots
/// inside are charged on their own), and its share of a URI's variant
/// group when `Vary` gives it several (about 32): 334 B at most as counted,
/// with the rest left for the allocator's own per-block overhead, which no
/// counting allocator sees (8 to 16 B on each of the entry's 6 to 13
/// blocks). `cargo bench --bench overhead` measures the common entry (251 B
/// of this) and the rarer shapes (`Vary` variants, stale windows, tags, long
/// heads), and fails if the budget charges any of them less than is
/// allocated. It was 600 until the store's own LRU and those measurements,
/// and 450 until the entry, its node and its key shrank by 40 B; 200,000
/// common entries grow resident memory by 2,063 B each, charged 2,310 B.
pub(crate) const ENTRY_OVERHEAD: usize = 410;

/// Bytes one stored header line costs beyond its text (its bucket in the
/// map, with links; a second value of a name costs less), charged per line.
/// Measured by the same bench.
pub(crate) const HEADER_OVERHEAD: usize = 112;

/// Bytes of hash index a `HeaderMap` holds per line of its capacity (4 per
/// index slot, and 4 slots for every 3 lines), charged on top.
pub(crate) const HEADER_INDEX_OVERHEAD: usize = 6;

/// Bytes one tag costs beyond its text, in the worst case: its `Arc` header
/// (16), its slot in the entry's tag list (16), and its share of the
/// shard's tag index. A tag only this URI carries takes a 32-byte slot of
/// the tag map, up to 76 B with its control byte just after the map grew
/// (7/16 full); a tag several URIs share costs each a 16-byte slot of the
/// tag's own map instead (up to 39 B), and the map's 48-byte box once.
/// (The index hashes with std's keyed SipHash: tags come from responses.)
/// `cargo bench --bench overhead` measures entries with 8 and 32 tags of
/// their own and fails if the budget under-counts them (96 B did, by a
/// fifth of the entry, before the index held one-URI tags inline).
pub(crate) const TAG_OVERHEAD: usize = 128;

/// Public, read-only description of one stored response, for invalidation
/// strategies, admin pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The primary key: the normalised absolute URI.
    pub key: Arc<str>,
    /// Status of the stored response.
    pub status: StatusCode,
    /// When it was stored.
    pub stored_at: Instant,
    /// When it stops being fresh.
    pub fresh_until: Instant,
    /// When the store drops it even if never used again.
    pub expires_at: Instant,
    /// Tags it was stored under.
    pub tags: Vec<Arc<str>>,
    /// Bytes it is charged in the budget.
    pub size: usize,
}

/// Tags and version stamps an entry is stored with.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    pub(crate) tags: Box<[Arc<str>]>,
    pub(crate) versions: Box<[VersionStamp]>,
}

/// What few entries have: a `Vary` secondary key, tags, version stamps
/// and stale windows. Boxed behind one pointer, null for the common entry,
/// so each of them costs nothing where it is absent.
#[derive(Debug)]
struct Rare {
    secondary: Secondary,
    labels: Labels,
    windows: Windows,
}

/// The secondary key of an entry that varies on nothing.
static NO_SECONDARY: Secondary = Secondary::NONE;

/// A stored response as the store, flights and hits share it: an `Arc`
/// without a weak count (8 bytes less per entry; nothing holds an entry
/// weakly).
pub(crate) type SharedEntry = triomphe::Arc<Entry>;

/// One stored response. Its key is the store's (the LRU node's), not kept
/// twice.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Its freshness, packed (see `Packed`); read it with `freshness()`.
    freshness: Packed,
    /// When it was stored, as signed nanoseconds from the [`epoch`]; read
    /// it with `stored_at()`. When the store drops it is not kept: it
    /// follows from its freshness and the cache's [`Keep`] (8 bytes less
    /// per entry), see `expiry`.
    stored_at: i64,
    /// Its secondary key, tags, version stamps (see `VersionStamp`) and
    /// stale windows, boxed: most entries have none of them.
    rare: Option<Box<Rare>>,
    /// Its HTTP version and four flags (see `Flags`).
    flags: Flags,
    /// Soft-purged, and the store's recency tick (see `State`).
    state: State,
    /// Bytes charged, `u32::MAX` for an entry too large to count (never
    /// stored); read it with `size()`.
    size: u32,
}

impl Entry {
    /// Builds an entry. Headers (and a body given as chunks) are copied into
    /// one fresh buffer so the entry holds no slice of a connection's read
    /// buffer (which would pin memory the accounting cannot see). `key`,
    /// the key it will be stored under, counts in its size.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: &str,
        secondary: Secondary,
        parts: &response::Parts,
        body: EntryBody,
        freshness: Freshness,
        labels: Labels,
        now: Instant,
    ) -> Entry {
        let (mut headers, body) = compact(&parts.headers, body);
        // Placeholders for the fields every hit sets, so the per-hit copy of
        // this map already has their slots and never grows.
        headers.insert(AGE, HeaderValue::from_static("0"));
        let own_status_line = !headers.contains_key(CACHE_STATUS);
        if own_status_line {
            headers.insert(CACHE_STATUS, HeaderValue::from_static(CACHE_NAME));
        }
        // A map's line storage is sized for its whole capacity (12 lines
        // for 7 to 12 of them, 24 for 13 to 24), 104 bytes each, used or
        // not; its copy holds exactly its lines. Kept, the copy saves up to
        // half the header storage of every entry.
        let headers = headers.clone();
        let windows = Windows::new(&freshness);
        let common =
            secondary.is_empty() && labels.tags.is_empty() && labels.versions.is_empty() && windows == NO_WINDOWS;
        let mut entry = Entry {
            status: parts.status,
            flags: Flags::new(parts.version, own_status_line, &freshness),
            state: State::default(),
            headers,
            body,
            freshness: Packed::new(&freshness),
            stored_at: offset_of(epoch(), now),
            rare: (!common).then(|| {
                Box::new(Rare {
                    secondary,
                    labels,
                    windows,
                })
            }),
            size: 0,
        };
        entry.size = u32::try_from(entry.compute_size(key)).unwrap_or(u32::MAX);
        entry
    }

    /// The stored response's HTTP version.
    pub(crate) fn version(&self) -> Version {
        self.flags.version()
    }

    /// Upstream sent no `Cache-Status`, so ours replaces the placeholder
    /// line; otherwise ours is appended after theirs (RFC 9211 §2).
    pub(crate) fn own_status_line(&self) -> bool {
        self.flags.has(Flags::OWN_STATUS_LINE)
    }

    /// Soft-purged: treated as stale from now on, kept for revalidation.
    pub(crate) fn is_purged(&self) -> bool {
        self.state.0.load(Ordering::Relaxed) & State::PURGED != 0
    }

    /// Marks it soft-purged; whether it was not already.
    pub(crate) fn purge(&self) -> bool {
        self.state.0.fetch_or(State::PURGED, Ordering::Relaxed) & State::PURGED == 0
    }

    /// Notes a use at the store's recency `tick` (see `Store::get_with`):
    /// whether it is the entry's first hit, or the first of that tick, so
    /// the entry is to be moved to the front of its LRU. Ticks are compared
    /// by their low 6 bits: a use exactly a multiple of 64 seconds after
    /// the last move skips one, which only makes the order a little less
    /// exact.
    pub(crate) fn touch(&self, tick: u32) -> bool {
        // The low 6 bits, by design.
        #[allow(clippy::cast_possible_truncation)]
        let last = State::TOUCHED | (tick as u8 & State::TICK);
        if self.state.0.load(Ordering::Relaxed) & State::LAST_TOUCH == last {
            return false;
        }
        // An update, keeping a purge made meanwhile; if another use of
        // the same tick got there first, this one need not move it.
        self.state
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s & State::LAST_TOUCH != last).then_some((s & State::PURGED) | last)
            })
            .is_ok()
    }

    /// Bytes it is charged in the budget (see `compute_size`).
    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// Whether it is too large for its size to be counted: such an entry is
    /// never stored.
    pub(crate) fn too_large(&self) -> bool {
        self.size == u32::MAX
    }

    /// Its freshness as stored.
    fn stored_freshness(&self) -> Freshness {
        let windows = self.rare.as_ref().map_or(NO_WINDOWS, |r| r.windows);
        self.freshness.get(self.flags, windows)
    }

    /// When the store drops the entry, as an offset from the [`epoch`]: the
    /// end of its freshness and stale windows (`Freshness::usable_until`
    /// of its stored freshness, in integers) plus the retention that keeps
    /// it for revalidation (a stale entry with an `ETag` turns a full
    /// refetch into a 304) and `max-stale`. Computed on each use, a few
    /// integer operations, rather than kept.
    fn expiry(&self, keep: Keep) -> i64 {
        let windows = self.rare.as_ref().map_or(NO_WINDOWS, |r| r.windows);
        let window = if self.flags.has(Flags::MUST_REVALIDATE) {
            0
        } else {
            let on_error = if windows.stale_if_error == u64::MAX {
                keep.stale_if_error
            } else {
                windows.stale_if_error
            };
            windows.stale_while_revalidate.max(on_error)
        };
        let usable = self.freshness.lifetime.saturating_add(window).min(MAX_USABLE);
        // Both below 2^63: `MAX_USABLE` is, and `Keep` caps its retention.
        #[allow(clippy::cast_possible_wrap)]
        let (usable, retention) = (usable as i64, keep.retention as i64);
        self.freshness.born.saturating_add(usable).saturating_add(retention)
    }

    /// When the entry was stored.
    pub(crate) fn stored_at(&self) -> Instant {
        at_offset(epoch(), self.stored_at)
    }

    /// When the store drops the entry even if never used again.
    pub(crate) fn expires_at(&self, keep: Keep) -> Instant {
        at_offset(epoch(), self.expiry(keep))
    }

    fn compute_size(&self, key: &str) -> usize {
        let header_text: usize = self.headers.iter().map(|(n, v)| name_cost(n) + v.len()).sum();
        let header_bytes =
            header_text + self.headers.len() * HEADER_OVERHEAD + self.headers.capacity() * HEADER_INDEX_OVERHEAD;
        let secondary_bytes: usize = self
            .secondary()
            .iter()
            .map(|(n, v)| name_cost(n) + v.as_ref().map_or(0, HeaderValue::len) + HEADER_OVERHEAD)
            .sum();
        // Tags are charged with their text and an index slot each.
        let tag_bytes: usize = self.tags().iter().map(|t| t.len() + TAG_OVERHEAD).sum();
        let version_bytes = size_of_val(self.versions());
        key.len() + header_bytes + secondary_bytes + tag_bytes + version_bytes + self.body.len() + ENTRY_OVERHEAD
    }

    /// Whether no namespace it was stamped with has been bumped since.
    pub(crate) fn is_current(&self) -> bool {
        self.versions().iter().all(VersionStamp::is_current)
    }

    /// The secondary key it was stored under (§4.1).
    pub(crate) fn secondary(&self) -> &Secondary {
        self.rare.as_ref().map_or(&NO_SECONDARY, |r| &r.secondary)
    }

    /// Tags it was stored under.
    pub(crate) fn tags(&self) -> &[Arc<str>] {
        self.rare.as_ref().map_or(&[], |r| &r.labels.tags)
    }

    /// Namespace versions it was produced under.
    pub(crate) fn versions(&self) -> &[VersionStamp] {
        self.rare.as_ref().map_or(&[], |r| &r.labels.versions)
    }

    /// Whether the store drops it by `at`.
    pub(crate) fn expired_by(&self, at: Stamp, keep: Keep) -> bool {
        self.expiry(keep) <= at.0
    }

    /// Its freshness as a request at `at` (the instant `now`) sees it, as
    /// [`Entry::freshness`] gives it but dated `now`: its response time is
    /// `now` and its initial age its age then, which is what
    /// `Freshness::age` reads at `now` and after.
    pub(crate) fn freshness_at(&self, at: Stamp, now: Instant) -> Freshness {
        let age = Duration::from_nanos(u64::try_from(at.0.saturating_sub(self.freshness.born)).unwrap_or(0));
        self.as_seen(now, age)
    }

    /// Its freshness as a request sees it: a soft-purged entry is stale.
    pub(crate) fn freshness(&self) -> Freshness {
        let (response_time, initial_age) = self.freshness.time();
        self.as_seen(response_time, initial_age)
    }

    /// Its freshness dated by `response_time` and `initial_age`, as a
    /// request sees it: a soft-purged entry is stale.
    fn as_seen(&self, response_time: Instant, initial_age: Duration) -> Freshness {
        let windows = self.rare.as_ref().map_or(NO_WINDOWS, |r| r.windows);
        let mut freshness = self.freshness.dated(response_time, initial_age, self.flags, windows);
        if self.is_purged() {
            freshness.lifetime = Duration::ZERO;
        }
        freshness
    }

    /// The labels a replacement of this entry (a 304 freshening) keeps.
    pub(crate) fn labels(&self) -> Labels {
        Labels {
            tags: self.tags().into(),
            versions: self.versions().into(),
        }
    }

    /// Public metadata, for the entry stored under `key` in a cache that
    /// keeps entries as `keep` says.
    pub(crate) fn meta(&self, key: Arc<str>, keep: Keep) -> EntryMeta {
        let freshness = self.stored_freshness();
        let fresh_left = freshness.lifetime.saturating_sub(freshness.initial_age);
        EntryMeta {
            key,
            status: self.status,
            stored_at: self.stored_at(),
            fresh_until: freshness.response_time + fresh_left.min(Duration::from_secs(1 << 31)),
            expires_at: self.expires_at(keep),
            tags: self.tags().to_vec(),
            size: self.size(),
        }
    }

    /// The response this entry answers with when its current age is `age`
    /// (its `Freshness::age`, which the caller has already read to decide
    /// whether to use it): stored headers plus that `Age` and our
    /// `Cache-Status` line `status`. `head` answers a HEAD request (headers
    /// only).
    pub(crate) fn to_response(&self, age: Duration, head: bool, status: HeaderValue) -> Response<Bytes> {
        let mut response = Response::new(if head { Bytes::new() } else { self.body.clone() });
        *response.status_mut() = self.status;
        *response.version_mut() = self.flags.version();
        let headers = response.headers_mut();
        headers.clone_from(&self.headers);
        let age = age_value(age.as_secs());
        let own = self.own_status_line();
        match placeholder_slots(headers, own) {
            Some((age_slot, Some(status_slot))) => {
                *age_slot = age;
                *status_slot = status;
            }
            _ => set_age_and_status(headers, own, age, status),
        }
        response
    }

    /// A copy freshened by a 304 (RFC 9111 §4.3.4): the 304's fields replace
    /// the stored ones, except `Content-Length` and fields never stored.
    ///
    /// A 304 without `Date` gets one, `received` (RFC 9110 §6.6.1: a
    /// recipient with a clock adds it to a message it caches). Kept, the
    /// stored response's old `Date` would age the freshened entry by the
    /// time since the first fetch, leaving it stale, and revalidated on
    /// every use, however long the 304's `max-age`.
    ///
    /// The 304's `Age` is taken too (RFC 9111 §3.2 excepts only hop-by-hop
    /// fields and `Content-Length`): the freshened entry's age starts from
    /// the 304's, not from zero. The stored map holds only the placeholder,
    /// so a 304 without `Age` starts it from zero.
    pub(crate) fn freshened_headers(&self, not_modified: &HeaderMap, received: SystemTime) -> HeaderMap {
        let mut headers = self.headers.clone();
        if !not_modified.contains_key(DATE) && headers.contains_key(DATE) {
            // An HTTP date is ASCII: always a valid value.
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(received)) {
                overwrite(&mut headers, DATE, date);
            }
        }
        for name in not_modified.keys() {
            if name == CONTENT_LENGTH || (NOT_STORED.contains(name) && name != AGE) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }
}

/// [`Entry::to_response`]'s `Age` and `Cache-Status` where the copied map
/// is not as the entry stored it with both placeholders last: the
/// upstream sent its own `Cache-Status` (ours goes after its members, RFC
/// 9211 §2), or the lines moved. Out of line: a hit's usual path only
/// fills the two slots, and this would spread its code.
#[cold]
#[inline(never)]
fn set_age_and_status(headers: &mut http::HeaderMap, own: bool, age: HeaderValue, status: HeaderValue) {
    if let Some((age_slot, None)) = placeholder_slots(headers, own) {
        *age_slot = age;
        headers.append(CACHE_STATUS, status);
        return;
    }
    overwrite(headers, AGE, age);
    if own {
        overwrite(headers, CACHE_STATUS, status);
    } else {
        headers.append(CACHE_STATUS, status);
    }
}

#[cfg(test)]
mod tests;
