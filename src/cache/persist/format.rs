//! The cache file's byte layout: a header, then one checksummed record per
//! stored response. Pure logic over bytes; knows nothing of the store.
//!
//! ```text
//! file   = MAGIC fingerprint:u64 saved_at_ms:u64 record* END
//! record = len:u32 checksum:u64 payload[len]
//! END    = 0xffff_ffff:u32 0:u64
//! ```
//!
//! Integers are little-endian; a string or a byte run is its length (u32)
//! then its bytes. The checksum (64 bits, see [`checksum`]) of each payload tells a
//! damaged file from a good one record by record, and the end marker a
//! cut one from a whole one, so what came before the damage still loads.
//! Records are written as they are made: saving holds one at a time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::super::labels::Node;

/// The file's first bytes; the last is the layout's version, so a file of
/// another layout is refused rather than misread.
pub(super) const MAGIC: [u8; 8] = *b"TOCACHE\x01";

/// Bytes of the header after the magic: fingerprint and saved-at.
pub(super) const HEADER_LEN: usize = 16;

/// The length field of the end marker, which no record has (payloads
/// stay below 4 GiB: see [`write_record`]).
pub(super) const END: u32 = u32::MAX;

/// Bytes before each payload: its length and checksum.
pub(super) const RECORD_HEAD_LEN: usize = 12;

/// `None` in a duration field (a response that named no `stale-if-error`).
const NO_DURATION: u64 = u64::MAX;

/// One stored response as the file keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    pub(super) key: String,
    /// The dependency edges of its URI (each variant's record repeats them).
    pub(super) deps: Vec<Node>,
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// Its `Vary` secondary key.
    pub(super) secondary: Vec<(HeaderName, Option<HeaderValue>)>,
    pub(super) tags: Vec<Arc<str>>,
    /// Its age when saved (§4.2.3).
    pub(super) age: Duration,
    pub(super) lifetime: Duration,
    pub(super) stale_while_revalidate: Duration,
    pub(super) stale_if_error: Option<Duration>,
    pub(super) no_cache: bool,
    pub(super) must_revalidate: bool,
    pub(super) immutable: bool,
    pub(super) body: Bytes,
}

/// A checksum against damage, not an adversary, eight bytes a step (a
/// byte-wise hash took more time than the rest of a save). Each step is a
/// bijection of the running value given its word (xor, rotate, multiply by
/// an odd number), so damage confined to one word always changes the
/// result; the length goes in last, so a cut one does too.
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |hash: u64, word: u64| (hash ^ word).rotate_left(23).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for word in &mut words {
        hash = step(hash, u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    hash = step(hash, u64::from_le_bytes(tail));
    step(hash, bytes.len() as u64)
}

fn millis(d: Duration) -> u64 {
    // Saturates: a lifetime past 584 million years is as good as forever.
    u64::try_from(d.as_millis()).unwrap_or(NO_DURATION - 1)
}

/// Appends a file's header.
pub(super) fn write_header(out: &mut Vec<u8>, fingerprint: u64, saved_at_ms: u64) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&saved_at_ms.to_le_bytes());
}

/// Appends the end marker.
pub(super) fn write_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&END.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// Reads a header: the fingerprint and saved-at, or why the bytes are not
/// a cache file of this layout.
pub(super) fn read_header(bytes: &[u8; MAGIC.len() + HEADER_LEN]) -> Result<(u64, u64), &'static str> {
    if bytes[..MAGIC.len()] != MAGIC {
        return Err("not a tower-optimizer cache file of this version");
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok((word(8), word(16)))
}

/// Appends `record` with its length and checksum; `None` (and nothing
/// appended) if its payload reaches what a length field holds (4 GiB, the
/// end marker's length), which no entry does.
pub(super) fn write_record(out: &mut Vec<u8>, record: &Record) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEAD_LEN]);
    let len = write_payload(&mut Writer(out), record)
        .and_then(|()| u32::try_from(out.len() - start - RECORD_HEAD_LEN).ok())
        .filter(|&len| len != END);
    let Some(len) = len else {
        out.truncate(start);
        return None;
    };
    let sum = checksum(&out[start + RECORD_HEAD_LEN..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + RECORD_HEAD_LEN].copy_from_slice(&sum.to_le_bytes());
    Some(())
}

fn write_payload(w: &mut Writer<'_>, record: &Record) -> Option<()> {
    w.text(&record.key)?;
    w.count(record.deps.len())?;
    for dep in &record.deps {
        let (kind, name) = match dep {
            Node::Key(name) => (0, name),
            Node::Tag(name) => (1, name),
        };
        w.0.push(kind);
        w.text(name)?;
    }
    w.0.extend_from_slice(&record.status.as_u16().to_le_bytes());
    w.0.push(crate::util::version_code(record.version));
    w.count(record.headers.len())?;
    for (name, value) in &record.headers {
        w.text(name.as_str())?;
        w.bytes(value.as_bytes())?;
        w.0.push(u8::from(value.is_sensitive()));
    }
    w.count(record.secondary.len())?;
    for (name, value) in &record.secondary {
        w.text(name.as_str())?;
        w.0.push(u8::from(value.is_some()));
        w.bytes(value.as_ref().map_or(&[][..], HeaderValue::as_bytes))?;
    }
    w.count(record.tags.len())?;
    for tag in &record.tags {
        w.text(tag)?;
    }
    for d in [record.age, record.lifetime, record.stale_while_revalidate] {
        w.0.extend_from_slice(&millis(d).to_le_bytes());
    }
    w.0.extend_from_slice(&record.stale_if_error.map_or(NO_DURATION, millis).to_le_bytes());
    w.0.push(u8::from(record.no_cache) | u8::from(record.must_revalidate) << 1 | u8::from(record.immutable) << 2);
    w.bytes(&record.body)
}

/// A record's length and checksum from its first bytes.
pub(super) fn read_record_head(bytes: &[u8; RECORD_HEAD_LEN]) -> (u32, u64) {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let sum = u64::from_le_bytes(bytes[4..].try_into().unwrap_or([0; 8]));
    (len, sum)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn count(&mut self, n: usize) -> Option<()> {
        self.0.extend_from_slice(&u32::try_from(n).ok()?.to_le_bytes());
        Some(())
    }

    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.count(b.len())?;
        self.0.extend_from_slice(b);
        Some(())
    }

    fn text(&mut self, t: &str) -> Option<()> {
        self.bytes(t.as_bytes())
    }
}

/// Reads a payload whose checksum matched: every length is checked
/// against what is left, every name and value against HTTP's rules, so a
/// file written by something else is refused, never trusted.
pub(super) fn read_record(payload: &[u8]) -> Result<Record, &'static str> {
    let mut r = Reader(payload);
    let key = r.text()?.to_owned();
    let mut deps = Vec::new();
    for _ in 0..r.u32()? {
        let kind = r.u8()?;
        let name: Arc<str> = r.text()?.into();
        deps.push(match kind {
            0 => Node::Key(name),
            1 => Node::Tag(name),
            _ => return Err("a dependency of no known kind"),
        });
    }
    let status = StatusCode::from_u16(u16::from_le_bytes([r.u8()?, r.u8()?])).map_err(|_| "an invalid status")?;
    let version = *crate::util::HTTP_VERSIONS
        .get(usize::from(r.u8()?))
        .ok_or("an unknown HTTP version")?;
    let mut headers = HeaderMap::new();
    for _ in 0..r.u32()? {
        let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| "an invalid header name")?;
        let mut value = HeaderValue::from_bytes(r.bytes()?).map_err(|_| "an invalid header value")?;
        value.set_sensitive(r.u8()? != 0);
        headers.append(name, value);
    }
    let mut secondary = Vec::new();
    for _ in 0..r.u32()? {
        let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| "an invalid Vary field name")?;
        let present = r.u8()? != 0;
        let value = r.bytes()?;
        let value = if present {
            Some(HeaderValue::from_bytes(value).map_err(|_| "an invalid Vary field value")?)
        } else {
            None
        };
        secondary.push((name, value));
    }
    let mut tags = Vec::new();
    for _ in 0..r.u32()? {
        tags.push(r.text()?.into());
    }
    let age = r.duration()?;
    let lifetime = r.duration()?;
    let stale_while_revalidate = r.duration()?;
    let stale_if_error = match r.u64()? {
        NO_DURATION => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let flags = r.u8()?;
    let body = Bytes::copy_from_slice(r.bytes()?);
    if !r.0.is_empty() {
        return Err("bytes after the record's end");
    }
    Ok(Record {
        key,
        deps,
        status,
        version,
        headers,
        secondary,
        tags,
        age,
        lifetime,
        stale_while_revalidate,
        stale_if_error,
        no_cache: flags & 1 != 0,
        must_revalidate: flags & 2 != 0,
        immutable: flags & 4 != 0,
        body,
    })
}

struct Reader<'a>(&'a [u8]);

const CUT: &str = "a record cut short";

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err(CUT);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| CUT)?))
    }

    fn duration(&mut self) -> Result<Duration, &'static str> {
        Ok(Duration::from_millis(self.u64()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "text that is not UTF-8")
    }
}
