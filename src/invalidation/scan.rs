//! A chunked scan over the cache's keys that yields to the runtime between
//! chunks, so a scan of many entries never holds a worker (or a shard lock)
//! for long.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::target::Pattern;
use crate::cache::{Cache, EntryMeta, UriKey};

/// Keys examined per poll: about 100 µs of regex work, short enough that
/// other tasks on the worker barely notice a scan of 100,000 entries.
pub const SCAN_CHUNK: usize = 1024;

/// What a scan selects keys by.
#[derive(Clone)]
pub(crate) enum Matcher {
    Patterns(Vec<Pattern>),
    Meta(Arc<dyn Fn(&EntryMeta) -> bool + Send + Sync>),
}

/// The scan future: resolves to the matching keys and how many were examined.
pub(crate) struct Scan {
    cache: Cache,
    matcher: Matcher,
    next_shard: usize,
    keys: Vec<UriKey>,
    pos: usize,
    matched: Vec<Arc<str>>,
    scanned: usize,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("shard", &self.next_shard)
            .field("scanned", &self.scanned)
            .finish()
    }
}

impl Scan {
    /// A scan for `matcher`. Responses in flight now are not stored when
    /// they arrive: the scan cannot see them, and they may match.
    pub(crate) fn new(cache: Cache, matcher: Matcher) -> Self {
        cache.inner.flights.epochs().invalidate_all();
        Scan {
            cache,
            matcher,
            next_shard: 0,
            keys: Vec::new(),
            pos: 0,
            matched: Vec::new(),
            scanned: 0,
        }
    }

    fn matches(&self, key: &str) -> bool {
        match &self.matcher {
            Matcher::Patterns(patterns) => patterns.iter().any(|p| p.is_match(key)),
            Matcher::Meta(predicate) => self.cache.inner.store.key_metadata(key).iter().any(|m| predicate(m)),
        }
    }
}

impl Future for Scan {
    type Output = (Vec<Arc<str>>, usize);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut budget = SCAN_CHUNK;
        loop {
            if this.pos >= this.keys.len() {
                if this.next_shard >= this.cache.inner.store.shard_count() {
                    return Poll::Ready((std::mem::take(&mut this.matched), this.scanned));
                }
                // A snapshot of one shard's keys: the lock is held only to
                // copy them, not while matching.
                this.keys = this.cache.inner.store.shard_keys(this.next_shard);
                this.next_shard += 1;
                this.pos = 0;
                continue;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let key = &this.keys[this.pos];
            this.pos += 1;
            this.scanned += 1;
            budget -= 1;
            if this.matches(key.as_str()) {
                this.matched.push(key.to_arc());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::cache::CacheLayer;

    #[tokio::test]
    async fn a_scan_yields_between_chunks() {
        let cache = Cache::builder().build().unwrap();
        let mut svc =
            CacheLayer::new(cache.clone()).layer(tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header("cache-control", "max-age=600")
                        .body(Full::new(Bytes::from_static(b"x")))
                        .unwrap(),
                )
            }));
        let total = SCAN_CHUNK * 3 + 1;
        for i in 0..total {
            let request = http::Request::get(format!("http://a.test/{i}"))
                .body(Full::default())
                .unwrap();
            let response = svc.ready().await.unwrap().call(request).await.unwrap();
            response.into_body().collect().await.unwrap();
        }
        let mut scan = Scan::new(cache, Matcher::Patterns(vec![Pattern::new("7$").unwrap()]));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut pending = 0;
        let (matched, scanned) = loop {
            match Pin::new(&mut scan).poll(&mut cx) {
                Poll::Ready(out) => break out,
                Poll::Pending => pending += 1,
            }
        };
        assert_eq!(scanned, total);
        assert_eq!(matched.len(), (0..total).filter(|i| i % 10 == 7).count());
        assert_eq!(pending, 3, "one pause after each full chunk of {SCAN_CHUNK} keys");
    }
}
