//! Unit tests of saving and loading, on paused time: what a loaded cache
//! answers, with what age, and what it refuses.
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Service, ServiceExt};

use super::format::{self, Record};
use super::*;
use crate::cache::{CacheLayer, CacheStatus, Dependencies, Node, Tags, VersionStamp, Versions};

/// An upstream whose answer depends on the path (see each arm), counting
/// its calls; a request with `If-None-Match` gets a 304.
fn upstream(
    calls: Arc<AtomicUsize>,
    namespace: Arc<AtomicU64>,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let namespace = namespace.clone();
        async move {
            let mut res = Response::builder().header("etag", "\"v1\"");
            if req.headers().contains_key("if-none-match") {
                return Ok(res
                    .status(304)
                    .header("cache-control", "max-age=60")
                    .body(Full::default())
                    .unwrap());
            }
            let body = match req.uri().path() {
                "/vary" => {
                    res = res
                        .header("cache-control", "max-age=600")
                        .header("vary", "accept-language");
                    let lang = req
                        .headers()
                        .get("accept-language")
                        .map_or("none", |v| v.to_str().unwrap());
                    format!("hello in {lang}")
                }
                "/short" => {
                    res = res.header("cache-control", "max-age=10");
                    "short".to_owned()
                }
                "/tagged" => {
                    res = res
                        .header("cache-control", "max-age=600, stale-if-error=30")
                        .extension(Tags(vec!["team".into()]))
                        .extension(Dependencies(vec![Node::Tag("org".into())]));
                    "tagged".to_owned()
                }
                "/versioned" => {
                    res = res
                        .header("cache-control", "max-age=600")
                        .extension(Versions(vec![VersionStamp::current(&namespace)]));
                    "versioned".to_owned()
                }
                path => {
                    res = res
                        .header("cache-control", "max-age=600")
                        .header("content-type", "text/plain")
                        .header("x-upstream", "kept");
                    format!("body of {path}")
                }
            };
            Ok(res.body(Full::new(Bytes::from(body))).unwrap())
        }
    })
}

struct Client<S> {
    svc: S,
    calls: Arc<AtomicUsize>,
}

/// The cache layer over the test upstream.
trait Cached:
    Service<Request<Full<Bytes>>, Response = Response<crate::body::OptimizerBody<Full<Bytes>>>, Error = crate::BoxError>
    + Clone
{
}

impl<S> Cached for S where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<crate::body::OptimizerBody<Full<Bytes>>>,
            Error = crate::BoxError,
        > + Clone
{
}

fn client(cache: &Cache) -> Client<impl Cached> {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = tower::Layer::layer(&CacheLayer::new(cache.clone()), upstream(calls.clone(), Arc::default()));
    Client { svc, calls }
}

impl<S: Cached> Client<S> {
    async fn get(&self, path: &str, lang: Option<&str>) -> (CacheStatus, http::HeaderMap, String) {
        let mut req = Request::get(format!("http://api.test{path}"));
        if let Some(lang) = lang {
            req = req.header("accept-language", lang);
        }
        let res = self
            .svc
            .clone()
            .oneshot(req.body(Full::default()).unwrap())
            .await
            .unwrap();
        let status = *res.extensions().get::<CacheStatus>().unwrap();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn cache() -> Cache {
    Cache::builder().sweep_interval(None).build().unwrap()
}

/// The file of a cache that fetched `paths`.
async fn saved(paths: &[&str]) -> Vec<u8> {
    let cache = cache();
    let a = client(&cache);
    for path in paths {
        a.get(path, None).await;
    }
    let mut file = Vec::new();
    cache.save(&mut file).unwrap();
    file
}

#[tokio::test(start_paused = true)]
async fn a_loaded_cache_answers_as_the_saved_one_did_with_the_age_it_had() {
    let first = cache();
    let a = client(&first);
    for (path, lang) in [
        ("/plain", None),
        ("/vary", Some("en")),
        ("/vary", Some("fr")),
        ("/tagged", None),
    ] {
        a.get(path, lang).await;
    }
    assert_eq!(a.calls(), 4);
    tokio::time::advance(Duration::from_secs(100)).await;
    let mut file = Vec::new();
    let saved = first.save(&mut file).unwrap();
    assert_eq!((saved.entries, saved.skipped, saved.bytes), (4, 0, file.len() as u64));

    let second = cache();
    let loaded = second.load(&file[..]).unwrap();
    assert_eq!(
        loaded,
        Loaded {
            entries: 4,
            expired: 0,
            skipped: 0,
            invalidated: 0
        }
    );
    assert_eq!(second.stats().entries, 4);
    let b = client(&second);
    let (status, headers, body) = b.get("/plain", None).await;
    assert!(status.hit, "{status:?}");
    assert_eq!(body, "body of /plain");
    assert_eq!(headers["age"], "100", "the age it had when saved");
    assert_eq!(headers["x-upstream"], "kept");
    assert_eq!(headers["content-length"], "14");
    assert_eq!(
        headers.get_all("cache-status").iter().count(),
        1,
        "one Cache-Status line: ours"
    );
    // Each variant answers its own requests.
    assert_eq!(b.get("/vary", Some("fr")).await.2, "hello in fr");
    assert_eq!(b.get("/vary", Some("en")).await.2, "hello in en");
    assert_eq!(b.get("/tagged", None).await.2, "tagged");
    assert_eq!(b.calls(), 0, "every answer came from the loaded entries");
    // A variant the file did not have goes upstream.
    assert_eq!(b.get("/vary", Some("de")).await.2, "hello in de");
    assert_eq!(b.calls(), 1);
    // Tags and dependency edges came along.
    let tagged = second
        .entries()
        .into_iter()
        .find(|m| m.key.ends_with("/tagged"))
        .unwrap();
    assert_eq!(tagged.tags, [Arc::<str>::from("team")]);
    assert_eq!(second.inner.store.dependents(&Node::Tag("org".into())).len(), 1);
    let audit = second.audit();
    assert_eq!((audit.byte_drift, audit.entry_drift), (0, 0), "the accounting is exact");
}

#[tokio::test(start_paused = true)]
async fn what_went_stale_on_disk_loads_stale_and_what_is_past_every_window_does_not_load() {
    // Stale entries kept a minute past every window.
    let keeping = || {
        Cache::builder()
            .sweep_interval(None)
            .stale_retention(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let first = keeping();
    let a = client(&first);
    a.get("/short", None).await;
    a.get("/plain", None).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    let mut file = Vec::new();
    first.save(&mut file).unwrap();
    // The file's time on disk counts by the wall clock: write it as if
    // saved 30 s ago (the header's saved-at field).
    let saved_at = u64::from_le_bytes(file[16..24].try_into().unwrap()) - 30_000;
    file[16..24].copy_from_slice(&saved_at.to_le_bytes());

    let second = keeping();
    assert_eq!(second.load(&file[..]).unwrap().entries, 2);
    let b = client(&second);
    let (status, headers, body) = b.get("/plain", None).await;
    assert!(status.hit);
    assert_eq!(
        (headers["age"].to_str().unwrap(), body.as_str()),
        ("35", "body of /plain")
    );
    // 35 s old with a max-age of 10: revalidated (a 304), then served.
    let (status, _, body) = b.get("/short", None).await;
    assert!(!status.hit, "{status:?}");
    assert_eq!(body, "short");
    assert_eq!(b.calls(), 1, "one revalidation");

    // Past its retention too: not loaded at all.
    let saved_at = saved_at - 120_000;
    file[16..24].copy_from_slice(&saved_at.to_le_bytes());
    let third = keeping();
    let loaded = third.load(&file[..]).unwrap();
    assert_eq!((loaded.entries, loaded.expired), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn versioned_responses_are_not_saved_and_held_ones_are_not_replaced() {
    let first = cache();
    let namespace = Arc::new(AtomicU64::new(0));
    let svc = tower::Layer::layer(
        &CacheLayer::new(first.clone()),
        upstream(Arc::default(), namespace.clone()),
    );
    for path in ["/versioned", "/plain"] {
        let req = Request::get(format!("http://api.test{path}"))
            .body(Full::default())
            .unwrap();
        svc.clone()
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let mut file = Vec::new();
    let saved = first.save(&mut file).unwrap();
    assert_eq!((saved.entries, saved.skipped), (1, 1));

    // The cache holds a newer answer for /plain: loading keeps it.
    let second = cache();
    let b = client(&second);
    tokio::time::advance(Duration::from_secs(50)).await;
    b.get("/plain", None).await;
    let loaded = second.load(&file[..]).unwrap();
    assert_eq!((loaded.entries, loaded.skipped), (0, 1));
    assert_eq!(b.get("/plain", None).await.1["age"], "0");
}

#[tokio::test(start_paused = true)]
async fn other_settings_junk_and_damage_are_refused_by_name_keeping_what_loaded() {
    let file = saved(&["/a", "/b", "/c"]).await;

    let shared = Cache::builder().mode(crate::cache::CacheMode::Shared).build().unwrap();
    let e = shared.load(&file[..]).unwrap_err();
    assert_eq!((e.kind, e.loaded), (LoadErrorKind::OtherSettings, Loaded::default()));
    assert!(e.to_string().contains("other key or storage settings"), "{e}");
    let varying = Cache::builder().vary_on(["x-tenant"]).build().unwrap();
    assert_eq!(varying.load(&file[..]).unwrap_err().kind, LoadErrorKind::OtherSettings);
    assert_eq!(shared.stats().entries + varying.stats().entries, 0);

    for junk in [&b""[..], b"junk", &[0u8; 64]] {
        let e = cache().load(junk).unwrap_err();
        assert_eq!(e.kind, LoadErrorKind::NotACacheFile, "{e}");
    }
    // A byte changed in the last record (before the 12-byte end marker):
    // the two before it load.
    let mut damaged = file.clone();
    let last = damaged.len() - RECORD_HEAD_LEN - 3;
    damaged[last] ^= 0x20;
    let target = cache();
    let e = target.load(&damaged[..]).unwrap_err();
    assert_eq!(e.kind, LoadErrorKind::Damaged);
    assert_eq!(e.loaded.entries, 2);
    assert!(e.to_string().contains("record 3: its checksum does not match"), "{e}");
    assert_eq!(target.stats().entries, 2, "what loaded before stays");
    // Cut short: inside the last record, and before the end marker.
    let e = cache().load(&file[..file.len() - RECORD_HEAD_LEN - 3]).unwrap_err();
    assert_eq!((e.kind, e.loaded.entries), (LoadErrorKind::Damaged, 2));
    assert!(e.to_string().contains("record 3: cut short"), "{e}");
    let e = cache().load(&file[..file.len() - 5]).unwrap_err();
    assert_eq!((e.kind, e.loaded.entries), (LoadErrorKind::Damaged, 3));
    assert!(e.to_string().contains("ends before its end marker"), "{e}");
    let mut end = file.clone();
    let last = end.len() - 1;
    end[last] = 1;
    let e = cache().load(&end[..]).unwrap_err();
    assert!(e.to_string().contains("a damaged end marker"), "{e}");
}

/// A file that clears `cache` (an invalidation of everything) once
/// `at` of its bytes were read.
struct Tripwire<'a> {
    data: &'a [u8],
    read: usize,
    at: usize,
    cache: Cache,
}

impl io::Read for Tripwire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read >= self.at && self.at > 0 {
            self.cache.clear();
            self.at = 0;
        }
        // A byte at a time: the clear lands between two records' reads.
        let n = buf.len().min(1).min(self.data.len() - self.read);
        buf[..n].copy_from_slice(&self.data[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_made_while_a_file_loads_covers_what_it_holds() {
    let file = saved(&["/a", "/b", "/c"]).await;
    let target = cache();
    let start = MAGIC.len() + HEADER_LEN;
    let (len, _) = format::read_record_head(file[start..start + RECORD_HEAD_LEN].try_into().unwrap());
    let loaded = target
        .load(Tripwire {
            data: &file,
            read: 0,
            at: start + RECORD_HEAD_LEN + len as usize + 1,
            cache: target.clone(),
        })
        .unwrap();
    assert_eq!((loaded.entries, loaded.invalidated), (1, 2), "{loaded:?}");
    assert_eq!(
        target.stats().entries,
        0,
        "the first was cleared, the others never stored"
    );
}

#[tokio::test(start_paused = true)]
async fn files_are_replaced_whole_and_a_missing_one_says_so() {
    let dir = std::env::temp_dir().join(format!("tower-optimizer-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache.bin");
    let _ = std::fs::remove_file(&path);
    let e = cache().load_file(&path).unwrap_err();
    assert!(e.is_missing_file(), "{e}");
    assert_eq!(e.kind, LoadErrorKind::Io);

    let first = cache();
    client(&first).get("/a", None).await;
    assert_eq!(first.save_file(&path).unwrap().entries, 1);
    client(&first).get("/b", None).await;
    assert_eq!(first.save_file(&path).unwrap().entries, 2, "replaced");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert!(!dir.join("cache.bin.saving").exists(), "no file left beside it");
    assert_eq!(cache().load_file(&path).unwrap().entries, 2);
    // A directory where the file goes: the error comes back, and the
    // temporary file is gone.
    assert!(first.save_file(&dir).is_err());
    assert!(!dir.with_extension("saving").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn loading_more_than_fits_keeps_the_budget_and_the_most_recent() {
    // One shard: the file's order is the whole cache's recency order.
    let first = Cache::builder().shards(1).sweep_interval(None).build().unwrap();
    let a = client(&first);
    for i in 0..50 {
        a.get(&format!("/item/{i}"), None).await;
    }
    let mut file = Vec::new();
    first.save(&mut file).unwrap();
    let small = Cache::builder()
        .max_bytes(16 * 1024)
        .shards(1)
        .sweep_interval(None)
        .build()
        .unwrap();
    let loaded = small.load(&file[..]).unwrap();
    assert_eq!(loaded.entries, 50, "each stored, older ones evicted as newer came");
    let stats = small.stats();
    assert!(stats.bytes <= 16 * 1024 && stats.entries < 50, "{stats:?}");
    assert_eq!(small.audit().byte_drift, 0);
    let b = client(&small);
    assert!(b.get("/item/49", None).await.0.hit, "the most recent one stayed");
}

/// Saves and loads while other tasks fetch, evict (a small budget) and
/// invalidate: every file loads whole into an exact accounting, and each
/// response loaded answers for its own URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_and_loading_while_requests_flow_keep_everything_exact() {
    let small = || {
        Cache::builder()
            .max_bytes(64 << 10)
            .max_entry_bytes(4 << 10)
            .shards(4)
            .sweep_interval(None)
            .build()
            .unwrap()
    };
    let busy = small();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let cache = busy.clone();
        tasks.push(tokio::spawn(async move {
            let svc = tower::Layer::layer(
                &CacheLayer::new(cache.clone()),
                upstream(Arc::default(), Arc::default()),
            );
            let mut x = t + 1;
            for i in 0..400 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let path = format!("/item/{}", (x >> 33) % 60);
                if i % 97 == 0 {
                    cache.clear();
                } else if i % 13 == 0 {
                    cache.remove_key(&format!("http://api.test{path}"));
                }
                let req = Request::get(format!("http://api.test{path}"))
                    .body(Full::default())
                    .unwrap();
                let body = svc
                    .clone()
                    .oneshot(req)
                    .await
                    .unwrap()
                    .into_body()
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(body.to_bytes(), format!("body of {path}").as_bytes());
            }
        }));
    }
    let source = busy.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flowing = done.clone();
    // Rounds until the requests end (at most 2,000), so they overlap.
    let rounds = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut loaded = 0;
        for _ in 0..2_000 {
            if flowing.load(Ordering::SeqCst) {
                break;
            }
            let mut file = Vec::new();
            let saved = source.save(&mut file).unwrap();
            let copy = small();
            let got = copy.load(&file[..]).unwrap();
            assert_eq!(
                got.entries + got.skipped + got.expired,
                saved.entries,
                "{got:?} of {saved:?}"
            );
            assert!(copy.audit().is_clean(), "{:?}", copy.audit());
            let reader = client(&copy);
            for meta in copy.entries() {
                let path = meta.key.strip_prefix("http://api.test").unwrap().to_owned();
                let (status, _, body) = runtime.block_on(reader.get(&path, None));
                assert!(status.hit, "{status:?}");
                assert_eq!(body, format!("body of {path}"));
                loaded += 1;
            }
            assert_eq!(reader.calls(), 0);
        }
        loaded
    });
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(rounds.await.unwrap() > 0, "something was loaded");
    assert!(busy.audit().is_clean(), "{:?}", busy.audit());
}

fn header_name() -> impl Strategy<Value = http::HeaderName> {
    "[a-z][a-z0-9-]{0,15}".prop_map(|n| http::HeaderName::from_bytes(n.as_bytes()).unwrap())
}

fn header_value() -> impl Strategy<Value = http::HeaderValue> {
    "[ -~]{0,30}".prop_map(|v| http::HeaderValue::from_str(&v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any record reads back as it was written.
    #[test]
    fn records_read_back_as_written(
        key in ".{0,40}",
        lines in proptest::collection::vec((header_name(), header_value(), any::<bool>()), 0..6),
        secondary in proptest::collection::vec((header_name(), proptest::option::of(header_value())), 0..3),
        tags in proptest::collection::vec("[a-z]{1,8}", 0..3),
        deps in proptest::collection::vec(("[a-z]{1,8}", any::<bool>()), 0..3),
        times in proptest::array::uniform4(0u64..1 << 40),
        sie in any::<bool>(),
        flags in 0u8..8,
        status in 100u16..1000,
        version in 0usize..5,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut headers = http::HeaderMap::new();
        for (name, mut value, sensitive) in lines {
            value.set_sensitive(sensitive);
            headers.append(name, value);
        }
        let ms = Duration::from_millis;
        let record = Record {
            key,
            deps: deps.into_iter().map(|(n, k)| if k { Node::Key(n.into()) } else { Node::Tag(n.into()) }).collect(),
            status: http::StatusCode::from_u16(status).unwrap(),
            version: [http::Version::HTTP_09, http::Version::HTTP_10, http::Version::HTTP_11, http::Version::HTTP_2, http::Version::HTTP_3][version],
            headers,
            secondary,
            tags: tags.into_iter().map(Into::into).collect(),
            age: ms(times[0]),
            lifetime: ms(times[1]),
            stale_while_revalidate: ms(times[2]),
            stale_if_error: sie.then(|| ms(times[3])),
            no_cache: flags & 1 != 0,
            must_revalidate: flags & 2 != 0,
            immutable: flags & 4 != 0,
            body: Bytes::from(body),
        };
        let mut out = Vec::new();
        format::write_record(&mut out, &record).unwrap();
        let (len, sum) = format::read_record_head(out[..RECORD_HEAD_LEN].try_into().unwrap());
        let payload = &out[RECORD_HEAD_LEN..];
        prop_assert_eq!(len as usize, payload.len());
        prop_assert_eq!(sum, format::checksum(payload));
        let back = format::read_record(payload).unwrap();
        prop_assert_eq!(&back, &record);
        for (a, b) in back.headers.values().zip(record.headers.values()) {
            prop_assert_eq!(a.is_sensitive(), b.is_sensitive());
        }
    }

    /// Any change to one byte, and any cut, changes a payload's checksum.
    #[test]
    fn damage_and_cuts_change_the_checksum(
        bytes in proptest::collection::vec(any::<u8>(), 1..300),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let sum = format::checksum(&bytes);
        let mut damaged = bytes.clone();
        damaged[at.index(bytes.len())] ^= flip;
        prop_assert_ne!(sum, format::checksum(&damaged));
        prop_assert_ne!(sum, format::checksum(&bytes[..cut.index(bytes.len())]));
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_ne!(sum, format::checksum(&longer));
    }

    /// Any bytes after a good header, and any damage to a good file, are
    /// refused or loaded, never a panic, and the accounting stays exact.
    #[test]
    fn any_file_loads_or_is_refused_without_a_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let first = cache();
            let a = client(&first);
            a.get("/a", None).await;
            a.get("/vary", Some("en")).await;
            let mut file = Vec::new();
            first.save(&mut file).unwrap();
            // A good header, then anything.
            let mut junk = file[..MAGIC.len() + HEADER_LEN].to_vec();
            junk.extend_from_slice(&tail);
            let target = cache();
            let _ = target.load(&junk[..]);
            assert_eq!(target.audit().byte_drift, 0);
            // The good file, damaged and cut.
            for (at, x) in &flips {
                let i = at.index(file.len());
                file[i] ^= x;
            }
            let end = cut.index(file.len() + 1);
            let target = cache();
            if let Ok(loaded) = target.load(&file[..end]) {
                assert!(loaded.entries <= 2);
            }
            assert_eq!(target.audit().byte_drift, 0);
        });
    }
}
