//! Sends this instance's circuit openings to other instances' admin servers.
//!
//! Instances of a client behind one load balancer each learn on their own
//! that a host is down, each spending calls on it. With [`SharedOpenings`]
//! each opening by an instance's own calls ([`OpenCause::Calls`]) is posted
//! to every peer's `POST /breakers` as a `trip`, which opens the peer's
//! breaker for the same key and period ([`CircuitBreakers::trip`]). An
//! opening that came that way is not sent on, so none goes round in
//! circles. Nothing is retried: an opening is news only while it lasts,
//! and a peer that missed it learns from its own calls as before.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{Layer, ServiceExt};
//! use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use tower_optimizer::monitor::SharedOpenings;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A stand-in for the HTTP client posting to the peers.
//! let sent = Arc::new(Mutex::new(Vec::new()));
//! let log = sent.clone();
//! let to_peers = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
//!     log.lock().unwrap().push(req.uri().to_string());
//!     async { Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default())) }
//! });
//! let share = SharedOpenings::builder()
//!     .peer("http://10.0.0.2:9000")
//!     .token("s3cret")
//!     .build(to_peers)
//!     .unwrap();
//! let config = CircuitBreakerConfig::builder()
//!     .consecutive_failures(Some(1))
//!     .on_state_change(share.listener())
//!     .build()
//!     .unwrap();
//! let layer = CircuitBreakerLayer::new(config);
//! let breakers = layer.breakers();
//!
//! // An upstream failing: this instance's breaker opens, and says so.
//! let upstream = tower::service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::builder().status(503).body(Full::<Bytes>::default()).unwrap())
//! });
//! let request = http::Request::get("https://api.example/a").body(()).unwrap();
//! let _ = layer.layer(upstream).oneshot(request).await;
//! tokio::task::yield_now().await;
//! assert_eq!(*sent.lock().unwrap(), ["http://10.0.0.2:9000/breakers"]);
//!
//! // A trip from a peer is not sent on.
//! breakers.trip("https://other.example", Duration::from_secs(30));
//! tokio::task::yield_now().await;
//! assert_eq!(sent.lock().unwrap().len(), 1);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::post::Poster;
use crate::BoxError;
#[cfg(doc)]
use crate::circuit_breaker::CircuitBreakers;
use crate::circuit_breaker::{Event, OpenCause};

/// How long one post to one peer may take. An opening is news for its
/// period (10 s at first, by default); a peer that answers slower than
/// this is better left to learn from its own calls.
pub const DEFAULT_SHARE_TIMEOUT: Duration = Duration::from_secs(2);

/// Addresses one resolved name is posted to at the most: a deployment's
/// instances, bounded so that a name resolving to a whole network cannot
/// turn one opening into a flood.
pub const MAX_RESOLVED_PEERS: usize = 64;

/// Sends under way at once: one per peer entry and opening (a resolved
/// name's posts run within its one). Openings are rare (a breaker opens
/// at most once per open period); past this many in flight, peers are not
/// answering, and a new send would only wait behind the others, so it is
/// dropped and counted.
pub const MAX_SHARES_IN_FLIGHT: usize = 64;

/// A setting [`SharedOpeningsBuilder::build`] refused, and why.
#[derive(Debug, Clone)]
pub struct SharedOpeningsError {
    setting: &'static str,
    reason: String,
}

impl SharedOpeningsError {
    fn new(setting: &'static str, reason: String) -> Self {
        SharedOpeningsError { setting, reason }
    }

    /// The builder method whose value was refused (`peer`,
    /// `peers_resolved`, `token` or `timeout`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for SharedOpeningsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shared openings: {}: {}", self.setting, self.reason)
    }
}

impl std::error::Error for SharedOpeningsError {}

/// Builds a [`SharedOpenings`]; errors come back from [`build`](Self::build).
#[derive(Clone, Default)]
#[must_use]
pub struct SharedOpeningsBuilder {
    peers: Vec<String>,
    resolved: Vec<String>,
    token: Option<String>,
    timeout: Option<Duration>,
}

impl fmt::Debug for SharedOpeningsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedOpeningsBuilder")
            .field("peers", &self.peers)
            .field("resolved", &self.resolved)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SharedOpeningsBuilder {
    /// A peer's admin server: its base URL, such as `http://10.0.0.2:9000`,
    /// with the path its admin is mounted under, if any
    /// (`http://10.0.0.2:8080/admin`). Openings go to `{url}/breakers`.
    pub fn peer(mut self, url: &str) -> Self {
        self.peers.push(url.to_owned());
        self
    }

    /// Peers behind one name: every address the host of `url` (an `http`
    /// URL, such as `http://optimizer-admin.prod.svc:9464`) resolves to,
    /// looked up at each opening, gets it at `{url's path}/breakers`. A
    /// Kubernetes headless service names every pod of a deployment this
    /// way, as pods come and go. At most [`MAX_RESOLVED_PEERS`] addresses
    /// are used. The list includes this instance too, which is harmless:
    /// an echo of its own opening changes nothing. (An `https` peer needs
    /// its name for TLS: name each with [`peer`](Self::peer).)
    pub fn peers_resolved(mut self, url: &str) -> Self {
        self.resolved.push(url.to_owned());
        self
    }

    /// The peers' admin token, sent as `Authorization: Bearer ..` (marked
    /// sensitive). Peers whose admin takes no token need none.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Gives one post to one peer this long (default
    /// [`DEFAULT_SHARE_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The sender, posting through `client` (any HTTP client service that
    /// speaks what the peers' admin servers do: HTTP/1.1 and h2c both, for
    /// this crate's admin).
    ///
    /// # Errors
    ///
    /// A peer's URL is not an absolute `http` or `https` URL (an `http`
    /// one for [`peers_resolved`](Self::peers_resolved)), the token is not
    /// a valid header value, or the timeout is zero.
    pub fn build<S, B, R>(self, client: S) -> Result<SharedOpenings, SharedOpeningsError>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
    {
        let timeout = self.timeout.unwrap_or(DEFAULT_SHARE_TIMEOUT);
        if timeout.is_zero() {
            return Err(SharedOpeningsError::new("timeout", "must be longer than zero".into()));
        }
        let authorization = match &self.token {
            Some(token) => {
                let mut value = http::HeaderValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| SharedOpeningsError::new("token", "not a valid header value".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut peers = Vec::with_capacity(self.peers.len());
        for url in &self.peers {
            let target =
                super::post::url_under(url, "/breakers").map_err(|reason| SharedOpeningsError::new("peer", reason))?;
            let shown = crate::util::shown_url(&target);
            peers.push(Peer {
                target: Target::One(target),
                shown,
            });
        }
        for url in &self.resolved {
            let peer = resolved(url).map_err(|reason| SharedOpeningsError::new("peers_resolved", reason))?;
            peers.push(peer);
        }
        let post = super::post::json_poster(client, authorization, timeout);
        Ok(SharedOpenings {
            inner: Arc::new(Inner {
                peers: peers.into(),
                post,
                timeout,
                slots: Arc::new(Semaphore::new(MAX_SHARES_IN_FLIGHT)),
                counts: Arc::default(),
            }),
        })
    }
}

/// The peers behind `url`'s host name.
fn resolved(url: &str) -> Result<Peer, String> {
    let target = super::post::url_under(url, "/breakers")?;
    if target.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?}: resolved peers are reached by address, and TLS needs a name: an http URL, or name each https peer"
        ));
    }
    let Some(host) = target.host() else {
        return Err(format!("{url:?} has no host"));
    };
    let port = target.port_u16().unwrap_or(80);
    Ok(Peer {
        shown: format!("{} (each address)", crate::util::shown_url(&target)),
        target: Target::Resolved {
            // An IPv6 literal resolves as itself, without its brackets.
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            path: target.path().to_owned(),
        },
    })
}

/// Where one peer entry's posts go.
enum Target {
    /// One peer, at its URL.
    One(http::Uri),
    /// Every address `host` resolves to, at `port` and `path`.
    Resolved { host: String, port: u16, path: String },
}

struct Peer {
    target: Target,
    /// As logs show it: no query, no user information.
    shown: String,
}

/// Posts of openings to peers, by outcome (`delivered`, `failed`,
/// `dropped`), through the `metrics` facade.
pub(crate) const SHARED_OPENINGS: &str = "tower_optimizer.circuit_breaker.shared_openings";

/// What the posts came to, counted per peer and post.
#[derive(Debug, Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// What became of one post.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Delivered,
    Failed,
    Dropped,
}

impl Counts {
    /// Counts one post and logs what became of it.
    fn tell(&self, key: &str, peer: &str, sent: Result<http::StatusCode, BoxError>) {
        match sent {
            Ok(status) if status.is_success() => {
                self.count(Sent::Delivered, 1);
                tracing::debug!(key, peer, "circuit opening shared");
            }
            Ok(status) => {
                self.count(Sent::Failed, 1);
                tracing::warn!(key, peer, %status, "peer refused a circuit opening");
            }
            Err(error) => {
                self.count(Sent::Failed, 1);
                tracing::warn!(
                    key,
                    peer,
                    error = %crate::util::with_sources(error.as_ref()),
                    "circuit opening not shared"
                );
            }
        }
    }

    /// Counts `n` posts that came to `sent`, here and through the
    /// `metrics` facade (openings are rare: registering each time costs
    /// nothing that matters).
    fn count(&self, sent: Sent, n: u64) {
        let (counter, outcome) = match sent {
            Sent::Delivered => (&self.delivered, "delivered"),
            Sent::Failed => (&self.failed, "failed"),
            Sent::Dropped => (&self.dropped, "dropped"),
        };
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::describe_counter!(
            SHARED_OPENINGS,
            "Circuit openings posted to peer instances, by outcome (delivered, failed, dropped)."
        );
        metrics::counter!(SHARED_OPENINGS, "outcome" => outcome).increment(n);
    }
}

/// What [`SharedOpenings`] sent, per post (one opening to one peer, or to
/// one address of a resolved name, whose failure to resolve counts as one
/// failed post); the
/// same counts go to the `metrics` facade as
/// `tower_optimizer.circuit_breaker.shared_openings` with an `outcome`
/// label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SharedOpeningsStats {
    /// Posts a peer took (a 2xx answer).
    pub delivered: u64,
    /// Posts refused, unanswered in time, or that could not be sent.
    pub failed: u64,
    /// Sends not made (one per peer entry): too many were in flight, or no
    /// tokio runtime ran.
    pub dropped: u64,
}

/// Sends this instance's circuit openings to its peers (see the module
/// documentation). Cheap to clone; give [`listener`](Self::listener) to
/// the breaker's `on_state_change` (or `on_event`, which also times every
/// call for its per-call events).
#[derive(Clone)]
pub struct SharedOpenings {
    inner: Arc<Inner>,
}

struct Inner {
    peers: Arc<[Peer]>,
    post: Poster,
    timeout: Duration,
    slots: Arc<Semaphore>,
    counts: Arc<Counts>,
}

impl fmt::Debug for SharedOpenings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers: Vec<&str> = self.inner.peers.iter().map(|p| p.shown.as_str()).collect();
        f.debug_struct("SharedOpenings")
            .field("peers", &peers)
            .field("timeout", &self.inner.timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SharedOpenings {
    /// A builder with no peer yet.
    pub fn builder() -> SharedOpeningsBuilder {
        SharedOpeningsBuilder::default()
    }

    /// What was sent so far.
    pub fn stats(&self) -> SharedOpeningsStats {
        let counts = &self.inner.counts;
        SharedOpeningsStats {
            delivered: counts.delivered.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
            dropped: counts.dropped.load(Ordering::Relaxed),
        }
    }

    /// The breaker event listener that sends each opening by this
    /// instance's own calls to every peer, from a task of its own (the
    /// listener returns at once). Each post ends within the timeout.
    pub fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let share = self.clone();
        move |event: &Event| {
            if let Event::Opened {
                key,
                open_for,
                cause: OpenCause::Calls,
            } = event
            {
                share.send(key, *open_for);
            }
        }
    }

    /// Posts one opening to every peer.
    fn send(&self, key: &str, open_for: Duration) {
        let inner = &self.inner;
        let body = Bytes::from(
            serde_json::json!({
                "key": key,
                "action": "trip",
                "open_for_ms": u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
            })
            .to_string(),
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key, "circuit opening not shared: no tokio runtime runs here");
            inner.counts.count(Sent::Dropped, inner.peers.len() as u64);
            return;
        };
        for (i, peer) in inner.peers.iter().enumerate() {
            let Ok(slot) = inner.slots.clone().try_acquire_owned() else {
                tracing::warn!(key, peer = %peer.shown, "circuit opening not shared: too many posts in flight");
                inner.counts.count(Sent::Dropped, 1);
                continue;
            };
            let (post, peers, counts, body) = (
                inner.post.clone(),
                inner.peers.clone(),
                inner.counts.clone(),
                body.clone(),
            );
            let (key, timeout) = (key.to_owned(), inner.timeout);
            // Ends within the timeout (twice, for a name to resolve first)
            // whatever the peers do; holds no handle, so it keeps nothing
            // alive past that.
            runtime.spawn(async move {
                let _slot = slot;
                let peer = &peers[i];
                match &peer.target {
                    Target::One(url) => {
                        let sent = post(url.clone(), body).await;
                        counts.tell(&key, &peer.shown, sent);
                    }
                    Target::Resolved { host, port, path } => {
                        let Some(urls) = resolve(host, *port, path, timeout, &key, &peer.shown).await else {
                            counts.count(Sent::Failed, 1);
                            return;
                        };
                        let mut posts = tokio::task::JoinSet::new();
                        for url in urls {
                            let (post, body) = (post.clone(), body.clone());
                            posts.spawn(async move {
                                let shown = crate::util::shown_url(&url);
                                (shown, post(url, body).await)
                            });
                        }
                        while let Some(Ok((shown, sent))) = posts.join_next().await {
                            counts.tell(&key, &shown, sent);
                        }
                    }
                }
            });
        }
    }
}

/// The URLs of every address `host` resolves to (at most
/// [`MAX_RESOLVED_PEERS`]), or `None`, said in the log, if it resolves to
/// none in time.
async fn resolve(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    key: &str,
    shown: &str,
) -> Option<Vec<http::Uri>> {
    let addresses = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => addresses,
        Ok(Err(error)) => {
            tracing::warn!(key, peer = %shown, %error, "circuit opening not shared: the peers' name did not resolve");
            return None;
        }
        Err(_) => {
            tracing::warn!(key, peer = %shown, "circuit opening not shared: the peers' name did not resolve in time");
            return None;
        }
    };
    let mut seen = std::collections::HashSet::new();
    let urls: Vec<http::Uri> = addresses
        .filter(|address| seen.insert(*address))
        .take(MAX_RESOLVED_PEERS)
        .filter_map(|address| format!("http://{address}{path}").parse().ok())
        .collect();
    if urls.is_empty() {
        tracing::warn!(key, peer = %shown, "circuit opening not shared: the peers' name has no address");
        return None;
    }
    Some(urls)
}

#[cfg(test)]
mod tests;
