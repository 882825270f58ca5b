//! [`CircuitBreakers`]: the shared, bounded registry of per-key breakers and
//! the handle to inspect and steer them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{CircuitBreakerConfig, ProbeSuccess};
use super::events::{Event, OTHER_KEY, OpenCause, STATE_GAUGE, emit, record_transition};
use super::state::{Breaker, State, Transition};
use super::tally::Tally;
use super::window::WindowFigures;

mod cell;

pub(crate) use cell::{CallMetrics, Cell, CellRef};
use cell::{EVICTED, TOUCHED};

/// What one breaker looks like now.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BreakerSnapshot {
    /// Its key.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::json::shared_str"))]
    pub key: Arc<str>,
    /// Its state.
    pub state: State,
    /// Its window figures.
    pub figures: WindowFigures,
    /// For an open breaker, the time until it lets calls through (in JSON,
    /// `retry_after_seconds`).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "retry_after_seconds", serialize_with = "crate::json::optional_seconds")
    )]
    pub retry_after: Option<Duration>,
    /// For an open breaker, what opened it (or last made its open period
    /// longer): its own calls, its recovery probe, or a trip, another
    /// instance's opening (see [`CircuitBreakers::trip`]).
    pub opened_by: Option<OpenCause>,
}

pub(crate) struct Registry {
    pub(crate) config: Arc<CircuitBreakerConfig>,
    map: RwLock<HashMap<Arc<str>, Arc<Cell>>>,
    /// The keys whose metrics carry them as their label: the first
    /// `max_keys` ever seen. The map holds at most that many breakers at
    /// once, but as keys come and go (a client sent to endless hosts),
    /// their labels would add series to an exporter without end; later
    /// keys are labelled [`OTHER_KEY`].
    labelled: Mutex<HashSet<Arc<str>>>,
    epoch: Instant,
    seed: AtomicU64,
}

/// The breakers of one [`CircuitBreakerLayer`](super::CircuitBreakerLayer):
/// a cheap handle shared by every service the layer builds.
///
/// ```
/// use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
///
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
/// let breakers = layer.breakers();
/// breakers.force_open("https://api.example");
/// assert_eq!(breakers.state("https://api.example"), Some(State::ForcedOpen));
/// breakers.reset("https://api.example");
/// assert_eq!(breakers.state("https://api.example"), Some(State::Closed));
/// ```
#[derive(Clone)]
pub struct CircuitBreakers {
    pub(crate) inner: Arc<Registry>,
}

impl std::fmt::Debug for CircuitBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakers")
            .field("keys", &self.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl CircuitBreakers {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakers {
            inner: Arc::new(Registry {
                config: Arc::new(config),
                map: RwLock::default(),
                labelled: Mutex::default(),
                epoch: Instant::now(),
                seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            }),
        }
    }

    /// The settings every breaker here uses.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// Breakers currently kept.
    pub fn len(&self) -> usize {
        self.inner.map.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state of `key`'s breaker, if it exists.
    pub fn state(&self, key: &str) -> Option<State> {
        let cell = self
            .inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()?;
        let mut transitions = Vec::new();
        let state = {
            let mut breaker = cell.lock();
            breaker.tick(&self.inner.config, Instant::now(), &mut transitions);
            breaker.state()
        };
        self.emit_transitions(&cell, &transitions);
        Some(state)
    }

    /// Every breaker with its figures.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let cells: Vec<Arc<Cell>> = self
            .inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        let mut out: Vec<BreakerSnapshot> = cells
            .iter()
            .map(|cell| {
                let mut breaker = cell.lock();
                let state = breaker.state();
                BreakerSnapshot {
                    key: cell.key.clone(),
                    state,
                    figures: breaker.figures(now),
                    retry_after: (state == State::Open).then(|| breaker.open_until().saturating_duration_since(now)),
                    opened_by: (state == State::Open).then(|| breaker.opened_by()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Opens `key`'s breaker until it is reset or forced closed.
    pub fn force_open(&self, key: &str) {
        self.force(key, State::ForcedOpen);
    }

    /// Closes `key`'s breaker now (the window starts empty).
    pub fn force_closed(&self, key: &str) {
        self.force(key, State::Closed);
    }

    /// Back to a fresh closed breaker (window and backoff cleared).
    pub fn reset(&self, key: &str) {
        self.force(key, State::Closed);
    }

    /// Lets every call through and records nothing.
    pub fn disable(&self, key: &str) {
        self.force(key, State::Disabled);
    }

    /// Records calls but never trips.
    pub fn metrics_only(&self, key: &str) {
        self.force(key, State::MetricsOnly);
    }

    /// Opens `key`'s breaker for `open_for` (at most the longest open
    /// period the config allows) as if it had tripped here: the way to
    /// share openings between instances of a client. A closed or half-open
    /// breaker opens (and counts it towards its backoff); an open one stays
    /// open until the later of its own end and this one, if this one ends
    /// at least a second later (an echo of its own opening, from a peer
    /// list that names this instance too, changes nothing); a breaker an
    /// operator forced open, disabled or set to metrics only is left alone.
    /// After the period it goes half-open as usual (or its recovery probe
    /// decides), so a trip sent by mistake costs one open period. Whether
    /// it changed anything. The breaker is made if it does not exist yet.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_optimizer::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
    ///
    /// let breakers = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).breakers();
    /// // Another instance said its breaker for this host opened for 30 s.
    /// assert!(breakers.trip("https://api.example", Duration::from_secs(30)));
    /// assert_eq!(breakers.state("https://api.example"), Some(State::Open));
    /// // A shorter period changes nothing.
    /// assert!(!breakers.trip("https://api.example", Duration::from_secs(5)));
    /// ```
    pub fn trip(&self, key: &str, open_for: Duration) -> bool {
        let now = Instant::now();
        let cell = self.cell(key, now);
        let mut transitions = Vec::new();
        let changed = cell.lock().trip(&self.inner.config, open_for, now, &mut transitions);
        self.emit_transitions(&cell, &transitions);
        changed
    }

    fn force(&self, key: &str, state: State) {
        let cell = self.cell(key, Instant::now());
        let mut transitions = Vec::new();
        cell.lock().force(state, Instant::now(), &mut transitions);
        self.emit_transitions(&cell, &transitions);
    }

    /// The cell for `key`, made if needed. The registry stays bounded: when
    /// full, idle closed breakers go first, then the least recently used
    /// closed one, and only then the least recently used of any state.
    pub(crate) fn cell(&self, key: &str, now: Instant) -> Arc<Cell> {
        let registry = &self.inner;
        if let Some(cell) = registry.map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            cell.last_used.store(self.millis(now), Ordering::Relaxed);
            return cell.clone();
        }
        let mut map = registry.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = map.get(key) {
            return cell.clone();
        }
        if map.len() >= registry.config.max_keys {
            self.evict(&mut map, now);
        }
        let seed = registry.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let key: Arc<str> = key.into();
        let label = {
            let mut labelled = registry.labelled.lock().unwrap_or_else(PoisonError::into_inner);
            if labelled.contains(&key) || labelled.len() < registry.config.max_keys {
                labelled.insert(key.clone());
                key.clone()
            } else {
                OTHER_KEY.into()
            }
        };
        let cell = Arc::new(Cell {
            call_metrics: Mutex::new(Arc::new(CallMetrics::new(&label, crate::util::recorder_id()))),
            key,
            label,
            config: registry.config.clone(),
            registry: Arc::downgrade(&self.inner),
            breaker: Mutex::new(Breaker::new(&registry.config, now, seed)),
            mirror: AtomicU64::new(u64::from(State::Closed.code())),
            tally: Tally::default(),
            last_used: AtomicU64::new(self.millis(now)),
            flags: AtomicU8::new(0),
            probe_running: AtomicBool::new(false),
        });
        map.insert(cell.key.clone(), cell.clone());
        cell
    }

    fn evict(&self, map: &mut HashMap<Arc<str>, Arc<Cell>>, now: Instant) {
        let idle_ms = u64::try_from(self.inner.config.idle.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.millis(now);
        // A breaker used through a service's remembered reference since the
        // last scan counts as used now: at worst it looks more recent than
        // it is by the time between two scans, while without the mark a
        // busy breaker would look idle since its first lookup.
        for cell in map.values() {
            if cell.flags.fetch_and(!TOUCHED, Ordering::Relaxed) & TOUCHED != 0 {
                cell.last_used.store(now_ms, Ordering::Relaxed);
            }
        }
        // Each breaker's last use and whether it is closed, read once.
        let cells: Vec<(&Arc<str>, u64, bool)> = map
            .iter()
            .map(|(k, c)| {
                (
                    k,
                    c.last_used.load(Ordering::Relaxed),
                    c.lock().state() == State::Closed,
                )
            })
            .collect();
        // Each victim with whether it was closed (its gauge needs no reset).
        let closed_idle: Vec<(Arc<str>, bool)> = cells
            .iter()
            .filter(|&&(_, used, closed)| closed && now_ms.saturating_sub(used) >= idle_ms)
            .map(|&(k, _, _)| (k.clone(), true))
            .collect();
        // Forgetting a closed breaker loses a window of figures; forgetting
        // an open one sends traffic back to a host that is down. And an open
        // breaker's clients reject through their own cached reference, so
        // its last use can lag (see `flags`).
        let least_recent = |closed_only: bool| {
            cells
                .iter()
                .filter(|&&(_, _, closed)| closed || !closed_only)
                .min_by_key(|&&(_, used, _)| used)
                .map(|&(k, _, closed)| vec![(k.clone(), closed)])
        };
        let victims = if closed_idle.is_empty() {
            least_recent(true).or_else(|| least_recent(false)).unwrap_or_default()
        } else {
            closed_idle
        };
        for (key, closed) in victims {
            if let Some(cell) = map.remove(&key) {
                cell.flags.fetch_or(EVICTED, Ordering::Relaxed);
                // The next request for the key starts a new, closed
                // breaker; the gauge says so now, or an exporter would show
                // (and alert on) the evicted breaker's last state for good.
                if !closed && &*cell.label != OTHER_KEY {
                    metrics::gauge!(STATE_GAUGE, "key" => cell.label.to_string()).set(f64::from(State::Closed.code()));
                }
            }
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.inner.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends events for state changes and starts a recovery probe when a
    /// breaker opens (if one is configured).
    pub(crate) fn emit_transitions(&self, cell: &Arc<Cell>, transitions: &[Transition]) {
        for t in transitions {
            if t.from != t.to {
                // An opening is what an operator wants to see in the logs
                // without asking; the way back is worth a line too.
                if t.to == State::Open || t.to == State::ForcedOpen {
                    tracing::warn!(key = %cell.key, from = t.from.as_str(), to = t.to.as_str(), "circuit opened");
                } else {
                    tracing::info!(key = %cell.key, from = t.from.as_str(), to = t.to.as_str(), "circuit state changed");
                }
                self.emit_state_event(&Event::StateChanged {
                    key: cell.key.clone(),
                    from: t.from,
                    to: t.to,
                });
                record_transition(&cell.label, t.to);
            }
            if let Some(opening) = t.opening {
                if t.from == State::Open {
                    tracing::info!(
                        key = %cell.key,
                        open_for = ?opening.period,
                        cause = opening.cause.as_str(),
                        "circuit opened again"
                    );
                }
                self.emit_state_event(&Event::Opened {
                    key: cell.key.clone(),
                    open_for: opening.period,
                    cause: opening.cause,
                });
            }
            if t.to == State::Open {
                self.start_probe(cell);
            }
        }
    }

    /// Sends a state event to the listeners of every event and to those of
    /// state events.
    fn emit_state_event(&self, event: &Event) {
        emit(&self.inner.config.listeners, event);
        emit(&self.inner.config.state_listeners, event);
    }

    /// While `cell` stays open, probes its host at the end of each open
    /// period; success moves it to half-open (or closed), failure re-opens
    /// it with backoff. One probe loop per breaker; it ends when the
    /// breaker leaves the open state or the registry is dropped.
    fn start_probe(&self, cell: &Arc<Cell>) {
        let Some(probe) = self.inner.config.probe.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if cell.probe_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let registry = Arc::downgrade(&self.inner);
        let cell = cell.clone();
        let max_probe_time = self.inner.config.max_half_open;
        runtime.spawn(async move {
            loop {
                let until = {
                    let breaker = cell.lock();
                    if breaker.state() != State::Open {
                        break;
                    }
                    breaker.open_until()
                };
                tokio::time::sleep_until(until).await;
                {
                    let breaker = cell.lock();
                    if breaker.state() != State::Open {
                        break;
                    }
                    if breaker.open_until() > Instant::now() {
                        // A trip made the period longer while this slept.
                        continue;
                    }
                }
                let healthy = run_probe(&probe, &cell.key, max_probe_time).await;
                let Some(registry) = registry.upgrade() else { break };
                let breakers = CircuitBreakers { inner: registry };
                let mut transitions = Vec::new();
                let still_open = {
                    let mut breaker = cell.lock();
                    let now = Instant::now();
                    if breaker.state() != State::Open {
                        // Forced, reset, or user probes took over.
                        false
                    } else if healthy {
                        let to_closed = breakers.inner.config.probe_success == ProbeSuccess::Closed;
                        breaker.probe_succeeded(to_closed, now, &mut transitions);
                        false
                    } else {
                        // Still down: open again for the next, longer period.
                        breaker.open(&breakers.inner.config, None, OpenCause::Probe, now, &mut transitions);
                        true
                    }
                };
                // The same path as a call's transitions: listeners, metrics
                // and the log (no second probe loop starts: this one runs).
                breakers.emit_transitions(&cell, &transitions);
                if !still_open {
                    break;
                }
            }
            cell.probe_running.store(false, Ordering::Release);
        });
    }
}

/// Runs one recovery probe as a task of its own, so a probe that panics or
/// never answers counts as unhealthy (the host stays open, the next probe
/// comes after the next open period) instead of ending the probe loop, or
/// hanging it, with `probe_running` left set and no probe ever again. A
/// probe gets as long as a half-open probe call may take.
async fn run_probe(probe: &super::config::Probe, key: &Arc<str>, max_time: std::time::Duration) -> bool {
    let mut task = tokio::spawn(probe(key.clone()));
    match tokio::time::timeout(max_time, &mut task).await {
        Ok(Ok(healthy)) => healthy,
        Ok(Err(error)) => {
            tracing::error!(key = %key, %error, "recovery probe failed; counted as unhealthy");
            false
        }
        Err(_) => {
            task.abort();
            tracing::warn!(key = %key, ?max_time, "recovery probe did not answer in time; counted as unhealthy");
            false
        }
    }
}
