//! Small helpers shared by the layers.

use std::hash::Hasher;
use std::task::Poll;

use bytes::Bytes;
use http::{Request, Uri, request};
use http_body::Frame;

use crate::BoxError;

/// Header maps with at most this many names are searched by a scan of
/// their names (standard names compare as small integers) rather than by
/// hashing each name looked for: a message rarely has more.
#[cfg(any(feature = "cache", feature = "invalidation"))]
const NAME_SCAN_LIMIT: usize = 16;

/// HTTP versions in the order of their codes (see [`version_code`]):
/// the metrics' `network.protocol.version` labels and the cache file's
/// version field both index it.
pub(crate) const HTTP_VERSIONS: [http::Version; 5] = [
    http::Version::HTTP_09,
    http::Version::HTTP_10,
    http::Version::HTTP_11,
    http::Version::HTTP_2,
    http::Version::HTTP_3,
];

/// `version`'s index in [`HTTP_VERSIONS`] (a version `http` adds later
/// counts as 1.1, the label before a response says otherwise).
#[cfg_attr(not(any(feature = "cache", feature = "monitor")), allow(dead_code))]
pub(crate) fn version_code(version: http::Version) -> u8 {
    // A match, not a search of the table: the metrics layer asks on every
    // response. A test in `monitor::handles` holds the two in step.
    match version {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 2,
    }
}

/// Whether `headers` has none of `names`: the cheap test before parsing
/// fields most messages lack (one scan of a short map's names instead of a
/// hash per name looked for).
#[cfg(any(feature = "cache", feature = "invalidation"))]
pub(crate) fn has_none_of(headers: &http::HeaderMap, names: &[&http::HeaderName]) -> bool {
    if headers.keys_len() <= NAME_SCAN_LIMIT {
        !headers.keys().any(|n| names.contains(&n))
    } else {
        !names.iter().any(|n| headers.contains_key(*n))
    }
}

/// A copy of a request's head (method, URI, version, headers), without its
/// extensions or body: what policies and user closures look at.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn request_head<B>(request: &Request<B>) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts
}

/// Which `metrics` recorder is in place on this thread now (the local one,
/// else the global one, else the no-op one), by address. Layers cache the
/// handles they register; a handle stays bound to the recorder it was
/// registered with, so they compare this and register again when it
/// changed (an application that installs its recorder after the first
/// requests, a test that sets a local one), as the facade's own macros,
/// which register on every use, would. Costs a thread-local read and an
/// atomic load.
#[cfg(any(feature = "monitor", feature = "circuit-breaker"))]
pub(crate) fn recorder_id() -> usize {
    metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).cast::<()>().addr())
}

/// A multiply-rotate hasher (FxHash's), for keys that come from our own
/// requests: where speed matters more than resistance to chosen collisions
/// (spreading keys over shards, caching label sets).
#[derive(Debug, Default, Clone, Copy)]
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) struct Fx(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(FX_K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What one poll of a wrapped body showed, for the wrappers that watch a
/// body to its end (the breaker's verdict, the metrics' duration).
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) enum Seen<'a> {
    /// A data frame of this many bytes.
    Data(usize),
    /// The trailers (the last frame, by HTTP's framing).
    Trailers(&'a http::HeaderMap),
    /// The body ended.
    End,
    /// The body failed with this error (passed on after `see` looked).
    Failed(&'a BoxError),
}

/// Passes on one poll of a wrapped body, showing `see` what it was.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn watch<E: Into<BoxError>>(
    poll: Poll<Option<Result<Frame<Bytes>, E>>>,
    see: impl FnOnce(Seen<'_>),
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match poll {
        Poll::Ready(None) => {
            see(Seen::End);
            Poll::Ready(None)
        }
        Poll::Ready(Some(Ok(frame))) => {
            if let Some(data) = frame.data_ref() {
                see(Seen::Data(data.len()));
            } else if let Some(trailers) = frame.trailers_ref() {
                see(Seen::Trailers(trailers));
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(error))) => {
            let error = error.into();
            see(Seen::Failed(&error));
            Poll::Ready(Some(Err(error)))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// `at + d`, or a century on where that would pass what an instant can
/// hold: "never", without the panic of `+`. For durations that come from
/// the network (a `Retry-After`) or from settings with no upper bound.
#[cfg(any(feature = "cache", feature = "circuit-breaker"))]
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn instant_after(at: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    at.checked_add(d).or_else(|| at.checked_add(CENTURY)).unwrap_or(at)
}

/// `uri` as logs and reports show it: scheme, host, port and path, with
/// neither the user information (`user:password@`) nor the query (which
/// may carry `?api_key=` or a signature).
#[cfg(feature = "monitor")]
pub(crate) fn shown_url(uri: &Uri) -> String {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, rest)| rest);
    match uri.scheme_str() {
        Some(scheme) => format!("{scheme}://{host_port}{}", uri.path()),
        None => format!("{host_port}{}", uri.path()),
    }
}

/// An error's text followed by its sources' (`outer: inner: innermost`),
/// for a reason shown to people: by the Rust API guidelines an error's own
/// `Display` leaves its source out, which would drop the useful part (what
/// a regex's parser objects to, and where).
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// An error wrapping another, as `tower::buffer` wraps its service's
/// errors: for tests that look through `source()` chains.
#[cfg(test)]
#[allow(dead_code)] // used by the tests of whichever layers the features enable
#[derive(Debug)]
pub(crate) struct Wrapped(pub(crate) BoxError);

#[cfg(test)]
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wrapped: {}", self.0)
    }
}

#[cfg(test)]
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Runs a user's callback (a listener, an alert handler, a gauge), turning
/// a panic into `None` and an error in the log: a callback that panics must
/// not take down the background task that called it (the sampler, the
/// sweep, a recovery probe), which would stop it for good with nothing
/// said. The callbacks only read what they are given, so nothing is left
/// half-updated by the unwind.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn guarded<T>(what: &'static str, callback: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
        Ok(value) => Some(value),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(callback = what, panic = %message, "a callback panicked; ignored");
            None
        }
    }
}

#[cfg(all(test, feature = "monitor"))]
#[test]
fn a_shown_url_has_no_credentials_and_no_query() {
    let shown = |u: &str| shown_url(&u.parse().unwrap());
    assert_eq!(
        shown("https://user:pw@am.test:9093/api?key=s3cret"),
        "https://am.test:9093/api"
    );
    assert_eq!(shown("http://api.test/health"), "http://api.test/health");
    assert_eq!(shown("/health?k=v"), "/health");
}

#[cfg(all(test, feature = "cache"))]
mod tests {
    use http::header::{CACHE_CONTROL, HeaderName, HeaderValue, PRAGMA};

    use super::*;

    #[test]
    fn has_none_of_reads_short_and_long_maps_alike() {
        let tag = HeaderName::from_static("cache-tag");
        for lines in [1, NAME_SCAN_LIMIT, NAME_SCAN_LIMIT + 1, 40] {
            let mut headers = http::HeaderMap::new();
            for i in 0..lines {
                let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                headers.insert(name, HeaderValue::from_static("v"));
            }
            assert!(has_none_of(&headers, &[&CACHE_CONTROL, &PRAGMA, &tag]), "{lines} lines");
            headers.append(tag.clone(), HeaderValue::from_static("t"));
            assert!(
                !has_none_of(&headers, &[&CACHE_CONTROL, &tag]),
                "{lines} lines and a tag"
            );
            headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
            assert!(!has_none_of(&headers, &[&PRAGMA]), "{lines} lines and a standard name");
            assert!(has_none_of(&headers, &[&CACHE_CONTROL]));
        }
        assert!(has_none_of(&http::HeaderMap::new(), &[&CACHE_CONTROL]));
    }
}

/// Numbers in [0, 1) from an xorshift generator: jitter needs no more, and
/// each user seeds its own (a breaker per host, a retry per request) so
/// that they do not move in lockstep.
#[allow(dead_code)] // used by whichever layers the features enable
#[derive(Debug, Clone)]
pub(crate) struct Xorshift(u64);

#[allow(dead_code)]
impl Xorshift {
    /// A generator from `seed` (any value: zero, which xorshift never
    /// leaves, is avoided).
    pub(crate) fn new(seed: u64) -> Self {
        Xorshift(seed | 1)
    }

    /// The next number in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads `body` to its end, letting go of each frame as it comes: for a
/// caller that wants the exchange finished (the cache storing what it
/// keeps, a latency measured to the last byte) but not the bytes, so a
/// large body is never held whole.
#[cfg(feature = "stack")]
pub(crate) async fn drain<B: http_body::Body>(body: B) -> Result<(), B::Error> {
    use http_body_util::BodyExt as _;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// Whether `error` (or one of its sources) says the request never reached
/// the server, so nothing it asked for was done: an open circuit, a shed
/// load, a connection never made (hyper-util's connect errors, or a
/// refused connection as an `io::Error` under any client's), or an HTTP/2
/// stream the server refused (`REFUSED_STREAM`, which RFC 9113 §8.7 says
/// guarantees that). A `GOAWAY` is not taken as such: whether a stream was
/// processed depends on its number, which the error does not say. Each
/// check is built where the features bring its error type.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        #[cfg(feature = "circuit-breaker")]
        if e.is::<crate::circuit_breaker::error::Open>() {
            return true;
        }
        #[cfg(any(feature = "stack", feature = "retry"))]
        if e.is::<tower::load_shed::error::Overloaded>() {
            return true;
        }
        #[cfg(feature = "stack")]
        if e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
        {
            return true;
        }
        #[cfg(feature = "retry")]
        if e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        {
            return true;
        }
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// Whether `error` (or one of its sources) is the caller's own doing, not
/// the host's: hyper refused the request or its body failed while being
/// sent (a user error, as hyper reports it over HTTP/1.1), or the HTTP/2
/// stream was reset by our side's hyper (neither the server nor h2 itself),
/// which it does when the request's body fails. A proxy's client that hangs
/// up mid-upload is the common case: the upstream did nothing wrong. The
/// error types come with the features that depend on hyper and h2.
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn callers_fault(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        #[cfg(any(feature = "monitor", feature = "stack"))]
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_user) {
            return true;
        }
        #[cfg(feature = "retry")]
        if e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_reset() && !h2.is_remote() && !h2.is_library())
        {
            return true;
        }
        let _ = e;
        false
    })
}

/// Runs `f` on `uri`'s origin, `scheme://authority` (the breaker's default
/// key, and the per-host limit's), built in a reused per-thread buffer (a
/// lookup of a known key allocates nothing).
#[allow(dead_code)] // used by whichever layers the features enable
pub(crate) fn with_authority_key<T>(uri: &Uri, f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map_or("", |a| a.as_str());
    let write = |buffer: &mut String| {
        buffer.clear();
        buffer.push_str(scheme);
        buffer.push_str("://");
        buffer.push_str(authority);
    };
    BUFFER.with(|cell| {
        if let Ok(mut buffer) = cell.try_borrow_mut() {
            write(&mut buffer);
            f(&buffer)
        } else {
            // Re-entered from inside `f` (it never is): use a fresh buffer.
            let mut buffer = String::new();
            write(&mut buffer);
            f(&buffer)
        }
    })
}
