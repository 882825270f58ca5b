//! RFC 9111 side by side: the same requests through the cache layer and its
//! peers (`tower-http-cache`, `http-cache-tower`, `tower-resilience-cache`,
//! each with its in-memory store, set up as in `benches/peers.rs`), each in
//! front of an in-process upstream that counts its calls. Prints which
//! cache does what the RFC asks in each case, and exits 1 if ours misses
//! any (CI runs it).
//!
//! `cargo run --example conformance`
//!
//! The cases need no time to pass (the peers keep time by their own
//! clocks, not tokio's paused one): what may be stored, what must be
//! validated first, which variant answers, what a hit must say.

#[path = "../benches/common/peer_caches.rs"]
mod peer_caches;
#[path = "support/side_by_side.rs"]
mod side_by_side;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use peer_caches::Boxed;
use side_by_side::{Case, Check};
use tower::ServiceExt;

/// How the upstream answers a request.
type Respond = Arc<dyn Fn(&Request<Full<Bytes>>) -> Response<Full<Bytes>> + Send + Sync>;

/// A cache under test: its service and its upstream's call count.
struct Subject {
    svc: Boxed,
    calls: Arc<AtomicU64>,
}

impl Subject {
    fn new(name: &str, respond: Respond) -> Self {
        Subject::answering_after(name, respond, Duration::ZERO)
    }

    /// An upstream that takes `delay` to answer, so that requests overlap.
    fn answering_after(name: &str, respond: Respond, delay: Duration) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let upstream = tower::service_fn(move |req: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let res = respond(&req);
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(res)
            }
        });
        Subject {
            svc: peer_caches::layered(name, 1_000, upstream),
            calls,
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Sends `method` for `/x` with `headers`; the answer read whole.
    async fn send(&self, method: Method, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let mut req = Request::builder().method(method).uri("http://origin.test/x");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = self
            .svc
            .clone()
            .oneshot(req.body(Full::default()).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| format!("error: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn get(&self, headers: &[(&str, &str)]) -> Result<Answer, String> {
        self.send(Method::GET, headers).await
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A 200 with these header lines and body `body` (none to a `HEAD`, as
/// RFC 9110 §9.3.2 has it).
fn answer(lines: &'static [(&'static str, &'static str)], body: &'static str) -> Respond {
    Arc::new(move |req| {
        let mut res = Response::builder();
        for (name, value) in lines {
            res = res.header(*name, *value);
        }
        let body = if req.method() == Method::HEAD { "" } else { body };
        res.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
    })
}

/// A 200 with these header lines and body `one` to the first request, a
/// `500` to every later one.
fn first_then_500(lines: &'static [(&'static str, &'static str)]) -> Respond {
    let first = answer(lines, "one");
    let served = AtomicU64::new(0);
    Arc::new(move |req| {
        if served.fetch_add(1, Ordering::SeqCst) == 0 {
            first(req)
        } else {
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Full::new(Bytes::from_static(b"failed")))
                .unwrap()
        }
    })
}

/// The check of a response that may not be reused as it is: a second
/// `GET` goes upstream.
fn not_reused(name: &'static str, lines: &'static [(&'static str, &'static str)]) -> Check {
    Box::pin(async move {
        let s = Subject::new(name, answer(lines, "one"));
        s.get(&[]).await?;
        s.get(&[]).await?;
        calls(&s, 2, "second GET")
    })
}

/// `Ok` when `got` upstream calls were made, else what was.
fn calls(subject: &Subject, want: u64, what: &str) -> Result<(), String> {
    let got = subject.calls();
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} upstream calls, not {want}"))
    }
}

const CASES: &[Case] = &[
    Case {
        what: "a fresh response (`max-age`) is reused",
        refs: "§4.2",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                let again = s.get(&[]).await?;
                calls(&s, 1, "second GET")?;
                if again.body == "one" {
                    Ok(())
                } else {
                    Err("another body".into())
                }
            })
        },
    },
    Case {
        what: "a reused response carries `Age`",
        refs: "§4, §5.1",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                let hit = s.get(&[]).await?;
                calls(&s, 1, "second GET")?;
                if hit.headers.contains_key("age") {
                    Ok(())
                } else {
                    Err("no Age on the reused response".into())
                }
            })
        },
    },
    Case {
        what: "`no-store` is never stored",
        refs: "§5.2.2.5",
        run: |name| not_reused(name, &[("cache-control", "no-store")]),
    },
    Case {
        what: "`no-cache` is validated before each reuse",
        refs: "§5.2.2.4",
        run: |name| not_reused(name, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]),
    },
    Case {
        what: "`max-age=0` is stale at once",
        refs: "§4.2",
        run: |name| not_reused(name, &[("cache-control", "max-age=0")]),
    },
    Case {
        what: "an `Age` past `max-age` is stale on arrival",
        refs: "§4.2.3",
        run: |name| not_reused(name, &[("cache-control", "max-age=60"), ("age", "120")]),
    },
    Case {
        what: "an `Expires` in the past is stale",
        refs: "§5.3",
        run: |name| not_reused(name, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]),
    },
    Case {
        what: "`Vary` keeps each variant's answer to its own requests",
        refs: "§4.1",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|req| {
                    let lang = req.headers().get("accept-language").cloned();
                    let body = Bytes::copy_from_slice(lang.as_ref().map_or(&b"none"[..], |l| l.as_bytes()));
                    Response::builder()
                        .header("cache-control", "max-age=3600")
                        .header("vary", "accept-language")
                        .body(Full::new(body))
                        .unwrap()
                });
                let s = Subject::new(name, respond);
                for lang in ["en", "fr", "en", "fr"] {
                    let got = s.get(&[("accept-language", lang)]).await?;
                    if got.body != lang {
                        return Err(format!("asked {lang}, got {:?}", got.body));
                    }
                }
                Ok(())
            })
        },
    },
    Case {
        what: "`Vary: *` is never reused",
        refs: "§4.1",
        run: |name| not_reused(name, &[("cache-control", "max-age=3600"), ("vary", "*")]),
    },
    Case {
        what: "a request's `no-cache` goes to the origin",
        refs: "§5.2.1.4",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                s.get(&[("cache-control", "no-cache")]).await?;
                calls(&s, 2, "GET with no-cache")
            })
        },
    },
    Case {
        what: "a request's `no-store` keeps its answer out of the store",
        refs: "§5.2.1.5",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[("cache-control", "no-store")]).await?;
                s.get(&[]).await?;
                calls(&s, 2, "GET after a no-store one")
            })
        },
    },
    Case {
        what: "a `500` without explicit freshness is not reused",
        refs: "§4.2.2",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|_| {
                    Response::builder()
                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                        .body(Full::new(Bytes::from_static(b"oops")))
                        .unwrap()
                });
                let s = Subject::new(name, respond);
                s.get(&[]).await?;
                s.get(&[]).await?;
                calls(&s, 2, "second GET")
            })
        },
    },
    Case {
        what: "a `206` partial answer never stands in for the whole",
        refs: "§3.3, §3.4",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|req| {
                    let ranged = req.headers().contains_key("range");
                    let res = Response::builder().header("cache-control", "max-age=3600");
                    if ranged {
                        res.status(StatusCode::PARTIAL_CONTENT)
                            .header("content-range", "bytes 0-1/8")
                            .body(Full::new(Bytes::from_static(b"wh")))
                    } else {
                        res.body(Full::new(Bytes::from_static(b"whole!!!")))
                    }
                    .unwrap()
                });
                let s = Subject::new(name, respond);
                s.get(&[("range", "bytes=0-1")]).await?;
                let whole = s.get(&[]).await?;
                if whole.status == StatusCode::OK && whole.body == "whole!!!" {
                    Ok(())
                } else {
                    Err(format!("status {}, body {:?}", whole.status, whole.body))
                }
            })
        },
    },
    Case {
        what: "a stale response is validated with its `ETag`, and a `304` answers from the store",
        refs: "§4.3.1, §4.3.4",
        run: |name| {
            Box::pin(async move {
                let respond: Respond = Arc::new(|req| {
                    let res = Response::builder()
                        .header("cache-control", "max-age=0")
                        .header("etag", "\"v1\"");
                    if req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                        res.status(StatusCode::NOT_MODIFIED).body(Full::default())
                    } else {
                        res.body(Full::new(Bytes::from_static(b"one")))
                    }
                    .unwrap()
                });
                let s = Subject::new(name, respond);
                s.get(&[]).await?;
                let again = s.get(&[]).await?;
                calls(&s, 2, "second GET")?;
                if again.status == StatusCode::OK && again.body == "one" {
                    Ok(())
                } else {
                    Err(format!("status {}, body {:?}", again.status, again.body))
                }
            })
        },
    },
    Case {
        what: "a stale response is not served in place of the origin's `500`",
        refs: "§4.2.4",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, first_then_500(&[("cache-control", "max-age=0")]));
                s.get(&[]).await?;
                let again = s.get(&[]).await?;
                if again.status == StatusCode::INTERNAL_SERVER_ERROR {
                    Ok(())
                } else {
                    Err(format!("status {}, body {:?}", again.status, again.body))
                }
            })
        },
    },
    Case {
        what: "`stale-if-error` serves the stale response when the origin fails",
        refs: "RFC 5861 §4",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(
                    name,
                    first_then_500(&[("cache-control", "max-age=0, stale-if-error=600")]),
                );
                s.get(&[]).await?;
                let again = s.get(&[]).await?;
                // The origin was asked (the response is stale), and failed.
                calls(&s, 2, "second GET")?;
                if again.status == StatusCode::OK && again.body == "one" {
                    Ok(())
                } else {
                    Err(format!("status {}", again.status))
                }
            })
        },
    },
    Case {
        what: "`only-if-cached` with nothing stored is a 504",
        refs: "§5.2.1.7",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                let got = s.get(&[("cache-control", "only-if-cached")]).await?;
                calls(&s, 0, "only-if-cached")?;
                if got.status == StatusCode::GATEWAY_TIMEOUT {
                    Ok(())
                } else {
                    Err(format!("status {}", got.status))
                }
            })
        },
    },
    Case {
        what: "a `POST` invalidates the stored `GET`",
        refs: "§4.4",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                s.send(Method::POST, &[]).await?;
                s.get(&[]).await?;
                calls(&s, 3, "GET after the POST")
            })
        },
    },
    Case {
        what: "a `HEAD` after a stored `GET` is answered without a body",
        refs: "§4 (RFC 9110 §9.3.2)",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                let head = s.send(Method::HEAD, &[]).await?;
                if head.status == StatusCode::OK && head.body.is_empty() {
                    Ok(())
                } else {
                    Err(format!("status {}, {} body bytes", head.status, head.body.len()))
                }
            })
        },
    },
    Case {
        what: "a `HEAD` is answered from a stored `GET` (allowed, not required)",
        refs: "§4",
        run: |name| {
            Box::pin(async move {
                let s = Subject::new(name, answer(&[("cache-control", "max-age=3600")], "one"));
                s.get(&[]).await?;
                let head = s.send(Method::HEAD, &[]).await?;
                calls(&s, 1, "HEAD")?;
                if head.body.is_empty() {
                    Ok(())
                } else {
                    Err("the GET's body on a HEAD".into())
                }
            })
        },
    },
    Case {
        what: "concurrent misses make one upstream call (beyond the RFC)",
        refs: "-",
        run: |name| {
            Box::pin(async move {
                let respond = answer(&[("cache-control", "max-age=3600")], "one");
                let s = Arc::new(Subject::answering_after(name, respond, Duration::from_millis(100)));
                let tasks: Vec<_> = (0..10)
                    .map(|_| {
                        let s = s.clone();
                        tokio::spawn(async move { s.get(&[]).await.map(|a| a.body) })
                    })
                    .collect();
                for task in tasks {
                    task.await.map_err(|e| e.to_string())??;
                }
                calls(&s, 1, "10 concurrent GETs")
            })
        },
    },
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    side_by_side::run(Some("RFC 9111"), &peer_caches::NAMES, CASES).await;
}
