//! Saving the stored responses to a file and loading them into a cache
//! again, so a restarted client (a CLI run, a redeployed service) starts
//! with what it had instead of refetching it all.
//!
//! ```
//! use tower_optimizer::cache::Cache;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::builder().build().unwrap();
//! let mut file = Vec::new();
//! let saved = cache.save(&mut file).unwrap();
//! assert_eq!(saved.entries, 0);
//! let loaded = Cache::builder().build().unwrap().load(&file[..]).unwrap();
//! assert_eq!(loaded.entries, 0);
//! assert!(Cache::builder().build().unwrap().load(&b"junk"[..]).is_err());
//! # });
//! ```
//!
//! Each response keeps its age: the time the file spent on disk is added
//! (by the wall clock), so a response that went stale meanwhile loads as
//! stale, and one past every window it had does not load at all. The
//! file records the settings that decide keys and what may be stored
//! (mode, `Authorization` and `Set-Cookie` policies, exclusions, `vary_on`,
//! the query key): a cache built with others refuses it as a whole,
//! since its entries could answer requests this cache would keep apart.
//! Responses stamped with namespace versions are not saved: the versions
//! live in this process only, and a response loaded without its stamp
//! would outlive the next bump.
//!
//! Saving and loading block on the file: from async code, run them on a
//! blocking thread (`tokio::task::spawn_blocking`), as the stack does
//! ([`OptimizerStackBuilder::persist_cache`](crate::stack::OptimizerStackBuilder::persist_cache)).

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use http::header::AGE;
use tokio::time::Instant;

use super::entry::{Entry, EntryBody, Labels, SharedEntry, Stamp};
use super::freshness::Freshness;
use super::handle::Cache;
use super::key::Secondary;
use super::policy::NotStorable;
use super::status::{CACHE_NAME, CACHE_STATUS};

mod format;
#[cfg(test)]
mod tests;

use format::{HEADER_LEN, MAGIC, RECORD_HEAD_LEN, Record};

/// Header bytes a record may carry beyond the largest body this cache
/// stores: a longer record cannot be an entry it would keep, and is
/// skipped unread rather than allocated.
const MAX_HEAD_BYTES: usize = 1 << 20;

/// What [`Cache::save`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Saved {
    /// Responses written.
    pub entries: usize,
    /// Responses left out: stamped with namespace versions, or invalid.
    pub skipped: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// What [`Cache::load`] put in the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Loaded {
    /// Responses stored.
    pub entries: usize,
    /// Responses past every window they had (fresh, stale-while-revalidate,
    /// stale-if-error, and the retention kept for revalidation).
    pub expired: usize,
    /// Responses not stored: this cache holds one for the same request
    /// already, or they are larger than it stores.
    pub skipped: usize,
    /// Responses not stored because an invalidation that covers them was
    /// made while the file loaded.
    pub invalidated: usize,
}

/// Why [`Cache::load`] stopped. What loaded before it stays loaded
/// ([`LoadError::loaded`]); the file is never changed.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoadError {
    /// What went wrong.
    pub kind: LoadErrorKind,
    /// What was stored before the error.
    pub loaded: Loaded,
    detail: String,
    source: Option<io::Error>,
}

/// The kinds of [`LoadError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// Reading failed (the file is missing, say: see
    /// [`LoadError::is_missing_file`]).
    Io,
    /// The bytes are not a cache file of this layout.
    NotACacheFile,
    /// Saved by a cache whose key or storage settings differ from this one's.
    OtherSettings,
    /// A record is damaged or cut short: the records before it loaded.
    Damaged,
}

impl LoadError {
    fn new(kind: LoadErrorKind, loaded: Loaded, detail: String) -> LoadError {
        LoadError {
            kind,
            loaded,
            detail,
            source: None,
        }
    }

    fn io(error: io::Error, loaded: Loaded, what: &str) -> LoadError {
        LoadError {
            kind: LoadErrorKind::Io,
            loaded,
            detail: format!("{what}: {error}"),
            source: Some(error),
        }
    }

    /// Whether the file does not exist: a first start, with nothing saved yet.
    pub fn is_missing_file(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache file not loaded: {}", self.detail)?;
        if self.loaded.entries > 0 {
            write!(f, " ({} responses loaded before)", self.loaded.entries)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cache {
    /// The settings a file must have been saved under to load here.
    fn fingerprint(&self) -> u64 {
        let inner = &self.inner;
        let text = format!("{:?}|{:?}|{:?}", inner.rules, inner.vary_on, inner.query_key);
        format::checksum(text.as_bytes())
    }

    /// Writes every stored response (headers, body, tags, dependency
    /// edges, freshness and age) to `out`, least recently used first
    /// within each shard, so a load into a smaller cache keeps the more
    /// recently used of each. A snapshot: responses stored meanwhile may
    /// be in it or not. Use [`save_file`](Self::save_file) for a file
    /// replaced whole.
    ///
    /// # Errors
    ///
    /// Writing to `out` failed.
    pub fn save(&self, mut out: impl Write) -> io::Result<Saved> {
        let now = Instant::now();
        let mut saved = Saved::default();
        // One record at a time: saving a full cache must not hold a copy
        // of it.
        let mut buffer = Vec::with_capacity(MAGIC.len() + HEADER_LEN);
        format::write_header(&mut buffer, self.fingerprint(), unix_ms(SystemTime::now()));
        out.write_all(&buffer)?;
        saved.bytes += buffer.len() as u64;
        for (key, variants, deps) in self.inner.store.groups() {
            for entry in variants {
                buffer.clear();
                if !entry.versions().is_empty()
                    || !entry.is_current()
                    || format::write_record(&mut buffer, &record(key.as_str(), &entry, &deps, now)).is_none()
                {
                    saved.skipped += 1;
                    continue;
                }
                out.write_all(&buffer)?;
                saved.bytes += buffer.len() as u64;
                saved.entries += 1;
            }
        }
        buffer.clear();
        format::write_end(&mut buffer);
        out.write_all(&buffer)?;
        out.flush()?;
        saved.bytes += buffer.len() as u64;
        Ok(saved)
    }

    /// [`save`](Self::save) to `path`, replacing it whole: written to a
    /// file beside it (`path` with `.saving` added), synced, then renamed
    /// over it, so a crash midway leaves the old file, never half a new
    /// one. On Unix the file is readable and writable by its owner alone:
    /// what a private cache holds was meant for this client's user.
    ///
    /// # Errors
    ///
    /// Creating, writing or renaming the file failed.
    pub fn save_file(&self, path: impl AsRef<Path>) -> io::Result<Saved> {
        let path = path.as_ref();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".saving");
        let temporary = std::path::PathBuf::from(temporary);
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            // Readable by this user alone: a private cache holds answers
            // meant for this client's user (RFC 9111 §3.5).
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temporary)?;
            let saved = self.save(io::BufWriter::new(&mut file))?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            Ok(saved)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    /// Stores the responses [`save`](Self::save) wrote to `input`, each
    /// aged by the time since (the wall clock's), as if it had just been
    /// fetched with that age; responses past every window they had are
    /// left out. A response this cache holds already for the same request
    /// is kept, not replaced. The budget holds as for any store: loading
    /// more than fits evicts the least recently used.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming why it stopped; what was stored before stays.
    pub fn load(&self, mut input: impl Read) -> Result<Loaded, LoadError> {
        let mut loaded = Loaded::default();
        let mut header = [0u8; MAGIC.len() + HEADER_LEN];
        if let Err(e) = input.read_exact(&mut header) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                LoadError::new(
                    LoadErrorKind::NotACacheFile,
                    loaded,
                    "too short for a cache file".into(),
                )
            } else {
                LoadError::io(e, loaded, "reading the header")
            });
        }
        let (fingerprint, saved_at) = format::read_header(&header)
            .map_err(|why| LoadError::new(LoadErrorKind::NotACacheFile, loaded, why.into()))?;
        if fingerprint != self.fingerprint() {
            return Err(LoadError::new(
                LoadErrorKind::OtherSettings,
                loaded,
                "saved by a cache with other key or storage settings (mode, Authorization or Set-Cookie \
                 policy, exclusions, vary_on, query key), whose responses could answer requests this one \
                 keeps apart"
                    .into(),
            ));
        }
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH + Duration::from_millis(saved_at))
            .unwrap_or(Duration::ZERO);
        let limit = self.inner.max_entry_bytes.saturating_add(MAX_HEAD_BYTES);
        // An invalidation made while the file loads covers what it holds,
        // as it covers a fetch in flight (`epochs.rs`).
        let epochs = self.inner.flights.epochs().counts();
        for n in 1u64.. {
            let damaged = |why: &str| format!("record {n}: {why}");
            let mut head = [0u8; RECORD_HEAD_LEN];
            read_fully(&mut input, &mut head).map_err(|e| match e {
                Some(e) => LoadError::io(e, loaded, &damaged("reading")),
                None => LoadError::new(
                    LoadErrorKind::Damaged,
                    loaded,
                    damaged("cut short: the file ends before its end marker"),
                ),
            })?;
            let (len, sum) = format::read_record_head(&head);
            if len == format::END {
                if sum != 0 {
                    return Err(LoadError::new(
                        LoadErrorKind::Damaged,
                        loaded,
                        "a damaged end marker".into(),
                    ));
                }
                break;
            }
            let len = len as usize;
            if len > limit {
                // Larger than any entry this cache keeps: passed over unread.
                let skipped = io::copy(&mut (&mut input).take(len as u64), &mut io::sink())
                    .map_err(|e| LoadError::io(e, loaded, &damaged("reading")))?;
                if skipped < len as u64 {
                    return Err(LoadError::new(LoadErrorKind::Damaged, loaded, damaged("cut short")));
                }
                loaded.skipped += 1;
                continue;
            }
            let mut payload = vec![0u8; len];
            read_fully(&mut input, &mut payload).map_err(|e| match e {
                Some(e) => LoadError::io(e, loaded, &damaged("reading")),
                None => LoadError::new(LoadErrorKind::Damaged, loaded, damaged("cut short")),
            })?;
            if format::checksum(&payload) != sum {
                return Err(LoadError::new(
                    LoadErrorKind::Damaged,
                    loaded,
                    damaged("its checksum does not match"),
                ));
            }
            let record = format::read_record(&payload)
                .map_err(|why| LoadError::new(LoadErrorKind::Damaged, loaded, damaged(why)))?;
            match self.put(record, since, &epochs) {
                Put::Stored => loaded.entries += 1,
                Put::Expired => loaded.expired += 1,
                Put::Skipped => loaded.skipped += 1,
                Put::Invalidated => loaded.invalidated += 1,
            }
        }
        Ok(loaded)
    }

    /// [`load`](Self::load) from the file at `path`. A missing file is an
    /// error for which [`LoadError::is_missing_file`] holds (nothing saved
    /// yet: the first start).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), or the file could not be opened.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Loaded, LoadError> {
        let file = std::fs::File::open(path.as_ref())
            .map_err(|e| LoadError::io(e, Loaded::default(), &format!("opening {}", path.as_ref().display())))?;
        self.load(io::BufReader::new(file))
    }

    /// Stores one loaded response, aged by `since` (the time on disk),
    /// unless an invalidation that covers it came after `epochs` were read:
    /// checked before inserting and again after, as a fetch's store is.
    fn put(&self, record: Record, since: Duration, epochs: &[u64]) -> Put {
        let inner = &self.inner;
        if record.body.len() > inner.max_entry_bytes {
            return Put::Skipped;
        }
        let now = Instant::now();
        let secondary = Secondary::new(record.secondary);
        if inner
            .store
            .get(&record.key, |e| *e.secondary() == secondary, now)
            .is_ok()
        {
            return Put::Skipped;
        }
        let freshness = Freshness {
            response_time: now,
            initial_age: record.age.saturating_add(since),
            lifetime: record.lifetime,
            no_cache: record.no_cache,
            must_revalidate: record.must_revalidate,
            immutable: record.immutable,
            stale_while_revalidate: record.stale_while_revalidate,
            stale_if_error: record.stale_if_error,
        };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = record.status;
        parts.version = record.version;
        parts.headers = record.headers;
        let labels = Labels {
            tags: record.tags.into_boxed_slice(),
            versions: Box::default(),
        };
        // Copied into the entry's own buffer, as a fetched body is.
        let body = EntryBody::Chunks(vec![record.body]);
        let entry = Entry::new(&record.key, secondary, &parts, body, freshness, labels, now);
        if entry.expired_by(Stamp::of(now), inner.store.keep()) {
            return Put::Expired;
        }
        if entry.too_large() {
            return Put::Skipped;
        }
        let stamp = inner.flights.epochs().stamp_at(epochs, &record.key);
        let inserted = super::fetch::insert_stamped(
            inner,
            &record.key,
            &SharedEntry::new(entry),
            &record.deps,
            stamp,
            || {
                if let Ok(uri) = record.key.parse::<http::Uri>() {
                    inner.seen.mark(&uri);
                }
            },
        );
        match inserted {
            Ok(()) => {}
            Err(NotStorable::Invalidated) => return Put::Invalidated,
            Err(_) => return Put::Skipped,
        }
        Put::Stored
    }
}

enum Put {
    Stored,
    Expired,
    Skipped,
    Invalidated,
}

/// `read_exact`, telling a file that ends (`None`) from a failed read.
fn read_fully(input: &mut impl Read, buf: &mut [u8]) -> Result<(), Option<io::Error>> {
    input
        .read_exact(buf)
        .map_err(|e| (e.kind() != io::ErrorKind::UnexpectedEof).then_some(e))
}

/// `entry`, stored under `key` with its URI's `deps`, as the file keeps it.
fn record(key: &str, entry: &Entry, deps: &[super::labels::Node], now: Instant) -> Record {
    let freshness = entry.freshness();
    let mut headers = entry.headers.clone();
    // The placeholders every hit fills in: made again when loaded.
    headers.remove(AGE);
    if entry.own_status_line() {
        headers.remove(CACHE_STATUS);
    }
    debug_assert!(headers.get_all(CACHE_STATUS).iter().all(|v| v != CACHE_NAME));
    Record {
        key: key.to_owned(),
        deps: deps.to_vec(),
        status: entry.status,
        version: entry.version(),
        headers,
        secondary: entry.secondary().to_vec(),
        tags: entry.tags().to_vec(),
        age: freshness.age(now),
        lifetime: freshness.lifetime,
        stale_while_revalidate: freshness.stale_while_revalidate,
        stale_if_error: freshness.stale_if_error,
        no_cache: freshness.no_cache,
        must_revalidate: freshness.must_revalidate,
        immutable: freshness.immutable,
        body: entry.body.clone(),
    }
}
