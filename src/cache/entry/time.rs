//! How an entry keeps its times: signed nanoseconds from one process-wide
//! instant, its freshness packed into 16 bytes, and the cache-wide
//! retention its expiry follows from.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::Freshness;
use super::flags::Flags;
use crate::cache::freshness::MAX_INSTANT_OFFSET;

/// [`Freshness`] in 16 bytes instead of 88. Its response time and initial
/// age become one instant, when its age was zero (RFC 9111 §4.2.3: the
/// current age is the initial age plus the time since the response, so
/// only their difference matters), kept as signed nanoseconds from the
/// process's [`epoch`]; its lifetime is nanoseconds in a `u64` (exact below
/// 584 years; longer ones saturate, which no lifetime, age or window can
/// tell apart from forever). Its stale windows, which most responses lack,
/// live in the entry's `Rare` part, and its three flags in the entry,
/// beside its other small fields, where they cost no padding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packed {
    pub(super) born: i64,
    pub(super) lifetime: u64,
}

/// [`Freshness`]'s stale windows as nanoseconds (see [`Packed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Windows {
    pub(super) stale_while_revalidate: u64,
    /// `u64::MAX`: the response named no `stale-if-error`.
    pub(super) stale_if_error: u64,
}

/// No stale window at all: what most responses carry.
pub(super) const NO_WINDOWS: Windows = Windows {
    stale_while_revalidate: 0,
    stale_if_error: u64::MAX,
};

/// The longest an entry stays usable past its birth, as nanoseconds: the
/// cap `Freshness::usable_until` puts on instants computed from header
/// values (whole seconds, so exact in nanoseconds).
pub(super) const MAX_USABLE: u64 = MAX_INSTANT_OFFSET.as_secs() * 1_000_000_000;

/// How long a cache keeps entries past their usable life: its retention
/// for revalidation and its default `stale-if-error` window, the same for
/// every entry of a cache, so the store holds them once and entries work
/// out their expiry from them (see `Entry::expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keep {
    /// Nanoseconds, below 2^63.
    pub(super) retention: u64,
    /// Nanoseconds; 0 when the cache sets no default window (a window of
    /// zero adds nothing either).
    pub(super) stale_if_error: u64,
}

impl Keep {
    /// Entries kept only as long as they are usable.
    #[cfg(test)]
    pub(crate) const NONE: Keep = Keep {
        retention: 0,
        stale_if_error: 0,
    };

    pub(crate) fn new(retention: Duration, stale_if_error: Option<Duration>) -> Keep {
        Keep {
            // A retention of centuries is as good as forever.
            retention: nanos(retention).min(i64::MAX as u64),
            stale_if_error: stale_if_error.map_or(0, nanos),
        }
    }
}

/// The instant every entry keeps its times relative to (8 bytes each
/// instead of an `Instant`'s 16): the first one any cache in the process
/// asked for.
pub(super) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An instant as entries keep their times: signed nanoseconds from the
/// process's [`epoch`]. A hit takes the clock's difference once, as one of
/// these, and checks, ages and ticks its entry in integers (each `Instant`
/// difference costs about as much as a header lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(pub(super) i64);

impl Stamp {
    pub(crate) fn of(now: Instant) -> Stamp {
        Stamp(offset_of(epoch(), now))
    }

    /// Whole seconds from the epoch, on either side of it (a runtime on
    /// paused time may run behind it), for the store's recency ticks.
    pub(crate) fn tick(self) -> u32 {
        // Truncation wraps after 136 years: ticks are only compared for
        // equality, a second apart.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let tick = self.0.div_euclid(1_000_000_000) as u32;
        tick
    }
}

/// `t` as signed nanoseconds from `base`, saturating beyond 292 years
/// either way (an expiry that far off is as good as never).
pub(super) fn offset_of(base: Instant, t: Instant) -> i64 {
    if t >= base {
        i64::try_from(t.duration_since(base).as_nanos()).unwrap_or(i64::MAX)
    } else {
        i64::try_from(base.duration_since(t).as_nanos()).map_or(i64::MIN, |n| -n)
    }
}

/// The instant `nanos` from `base` (see [`offset_of`]).
pub(super) fn at_offset(base: Instant, nanos: i64) -> Instant {
    let d = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        // 292 years past any instant a process sees does not overflow; were
        // it to, a century on is still "never".
        crate::util::instant_after(base, d)
    } else {
        base.checked_sub(d).unwrap_or(base)
    }
}

impl Packed {
    pub(super) fn new(f: &Freshness) -> Self {
        Packed {
            born: offset_of(epoch(), f.response_time)
                .saturating_sub(i64::try_from(nanos(f.initial_age)).unwrap_or(i64::MAX)),
            lifetime: nanos(f.lifetime),
        }
    }

    pub(super) fn get(&self, flags: Flags, windows: Windows) -> Freshness {
        let (response_time, initial_age) = self.time();
        self.dated(response_time, initial_age, flags, windows)
    }

    /// Its response time and initial age as instants.
    pub(super) fn time(&self) -> (Instant, Duration) {
        // Read back as born at that instant, aged nothing, so its age is
        // exact at any `now`, before the epoch too: runtimes whose clocks
        // differ (tests on paused time, one of them advanced, set the
        // epoch) see instants on either side of it. Only a birth before
        // anything an `Instant` can hold (an `Age` of years) reads as a
        // response at the epoch already that old.
        if self.born >= 0 {
            (at_offset(epoch(), self.born), Duration::ZERO)
        } else {
            let back = Duration::from_nanos(self.born.unsigned_abs());
            epoch()
                .checked_sub(back)
                .map_or((epoch(), back), |birth| (birth, Duration::ZERO))
        }
    }

    /// The freshness with this lifetime, the directives in `flags` and
    /// `windows`, dated by `response_time` and `initial_age` (any pair
    /// whose age reads the same).
    pub(super) fn dated(
        &self,
        response_time: Instant,
        initial_age: Duration,
        flags: Flags,
        windows: Windows,
    ) -> Freshness {
        Freshness {
            response_time,
            initial_age,
            lifetime: Duration::from_nanos(self.lifetime),
            no_cache: flags.has(Flags::NO_CACHE),
            must_revalidate: flags.has(Flags::MUST_REVALIDATE),
            immutable: flags.has(Flags::IMMUTABLE),
            stale_while_revalidate: Duration::from_nanos(windows.stale_while_revalidate),
            stale_if_error: (windows.stale_if_error != u64::MAX).then(|| Duration::from_nanos(windows.stale_if_error)),
        }
    }
}

impl Windows {
    pub(super) fn new(f: &Freshness) -> Self {
        Windows {
            stale_while_revalidate: nanos(f.stale_while_revalidate),
            // `u64::MAX` is the "none" marker, so a present window stops one short.
            stale_if_error: f.stale_if_error.map_or(u64::MAX, |d| nanos(d).min(u64::MAX - 1)),
        }
    }
}
