//! [`OptimizerConfig`]: the whole stack from one TOML file. Sizes are in
//! plain units (`max_memory_mb`), durations are human-readable strings
//! (`"250ms"`, `"30s"`, `"5m"`, `"1h"`), and every error names its field.
//!
//! ```
//! use tower_optimizer::stack::OptimizerConfig;
//!
//! let config = OptimizerConfig::from_toml(r#"
//!     timeout = "10s"
//!     [cache]
//!     max_memory_mb = 64
//!     default_ttl = "30s"
//!     [circuit_breaker]
//!     consecutive_failures = 5
//! "#).unwrap();
//! let (layer, optimizer) = config.into_builder().unwrap().build::<http_body_util::Full<bytes::Bytes>>().unwrap();
//! # drop((layer, optimizer));
//! let err = OptimizerConfig::from_toml("[cache]\ndefault_ttl = \"soon\"").unwrap().into_builder().unwrap_err();
//! assert_eq!(err.field(), "cache.default_ttl");
//! ```

use std::time::Duration;

#[cfg(test)]
use self::cache::ttl_routes;
use super::OptimizerStack;
use super::builder::OptimizerStackBuilder;
use super::client::{ClientConfig, Protocol};
use super::layer::{Overload, WhenOpen};
use super::settings::{MonitorSettings, StackError};
use crate::monitor::LivenessAuth;
use crate::retry::{BudgetConfig, Methods, RetryConfig, RetryPolicy};
pub use sections::{
    AdminSection, AlertSection, AlertmanagerSection, BreakerSection, CacheSection, ClientSection, InhibitSection,
    MonitorSection, OptimizerConfig, PressureSection, ReadinessSection, RetrySection, ShareSection, TtlRoute,
};

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"` (and `"1.5s"`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "sec" | "secs" => value,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return None,
    };
    // Not a duration if negative, not finite or past what one holds.
    Duration::try_from_secs_f64(seconds).ok()
}

/// The key set on the line of byte `at`, with its table's path
/// (`cache.max_memory_mb`, `monitor.alerts[1].above`), as a refusal names
/// it; `None` on a line that sets no key (a table's header, a broken one).
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?.trim();
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(['"', '\'']);
    let plain = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if line.starts_with('[') || !plain(key) {
        return None;
    }
    // The nearest table header above, and for an array of tables which
    // of its tables this is.
    let headers: Vec<&str> = text[..start]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    let Some(header) = headers.last() else {
        return Some(key.to_owned());
    };
    let array = header.starts_with("[[");
    let name = header.trim_start_matches('[').split(']').next()?.trim();
    if !plain(name) {
        return None;
    }
    Some(if array {
        let index = headers
            .iter()
            .filter(|h| h.starts_with("[[") && h.trim_start_matches('[').split(']').next().map(str::trim) == Some(name))
            .count()
            - 1;
        format!("{name}[{index}].{key}")
    } else {
        format!("{name}.{key}")
    })
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The value `options` names `value`, the first option's when the field is
/// absent (each setting's default comes first); otherwise an error naming
/// `field` and the words it takes.
fn choice<T, const N: usize>(field: &str, value: Option<&str>, options: [(&str, T); N]) -> Result<T, StackError> {
    let names: [&str; N] = options.each_ref().map(|(name, _)| *name);
    let wanted = value.or(names.first().copied());
    if let Some((_, chosen)) = options.into_iter().find(|(name, _)| Some(*name) == wanted) {
        return Ok(chosen);
    }
    let words: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    let words = match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(StackError::new(
        field,
        format!("{:?}: use {words}", value.unwrap_or_default()),
    ))
}

/// The secret in the environment variable `name`, which a `*_env` key
/// (`field`) names: a secret kept out of a file that may be checked in or
/// read by many. Unset or empty is an error naming the key.
fn env_secret(field: &str, name: &str) -> Result<String, StackError> {
    match std::env::var(name) {
        Ok(secret) if !secret.is_empty() => Ok(secret),
        Ok(_) => Err(StackError::new(field, format!("{name} is empty"))),
        Err(e) => Err(StackError::new(field, format!("{name}: {e}"))),
    }
}

/// An HTTP client of its own, HTTP/1.1 (what any server speaks, an
/// Alertmanager or a peer's admin), for the URLs a key (`field`) names; it
/// takes https too (the system's roots) when `https` and the `tls` feature
/// say so.
fn own_http1_client(
    field: &str,
    https: bool,
) -> Result<
    tower::util::BoxCloneSyncService<
        http::Request<super::ClientBody>,
        http::Response<hyper::body::Incoming>,
        crate::BoxError,
    >,
    StackError,
> {
    use tower::ServiceExt;

    let config = ClientConfig {
        protocol: Protocol::Http1,
        ..ClientConfig::default()
    };
    if https {
        #[cfg(feature = "tls")]
        {
            let roots = super::native_roots().map_err(|e| StackError::new(field, format!("no TLS roots: {e}")))?;
            let client = super::https_client::<super::ClientBody>(&config, roots);
            return Ok(tower::util::BoxCloneSyncService::new(client.map_err(Into::into)));
        }
        #[cfg(not(feature = "tls"))]
        return Err(StackError::new(field, "an https URL needs the crate's `tls` feature"));
    }
    let client = super::client::http_client::<super::ClientBody>(&config);
    Ok(tower::util::BoxCloneSyncService::new(client.map_err(Into::into)))
}

/// Whether `url` is an https one (in any case, as URL schemes are).
fn is_https(url: &str) -> bool {
    url.trim_start().to_ascii_lowercase().starts_with("https:")
}

fn duration(field: &str, value: Option<&String>) -> Result<Option<Duration>, StackError> {
    value
        .map(|text| {
            parse_duration(text)
                .ok_or_else(|| StackError::new(field, format!("{text:?} is not a duration (e.g. \"30s\")")))
        })
        .transpose()
}

/// A duration that may be `"off"` (`None`); `default` when absent.
fn duration_or_off(
    field: &str,
    value: Option<&String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, StackError> {
    match value {
        None => Ok(default),
        Some(text) if text.trim() == "off" => Ok(None),
        Some(_) => duration(field, value),
    }
}

/// Mebibytes as bytes, saturating.
fn mib(mb: u64) -> usize {
    usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

/// A `[[monitor.readiness]]` check's timeout when it names none (see
/// [`ReadinessSection::timeout`]).
const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// `[retry]` as a checked [`RetryConfig`].
fn retry_config(r: &RetrySection) -> Result<RetryConfig, StackError> {
    let mut retry = RetryConfig::builder();
    if let Some(n) = r.max_attempts {
        retry = retry.max_attempts(n);
    }
    let base = duration("retry.backoff", r.backoff.as_ref())?.unwrap_or(crate::retry::DEFAULT_BASE_DELAY);
    let max = duration("retry.max_backoff", r.max_backoff.as_ref())?.unwrap_or(crate::retry::DEFAULT_MAX_DELAY);
    retry = retry.backoff(base, max);
    if let Some(d) = duration("retry.max_retry_after", r.max_retry_after.as_ref())? {
        retry = retry.max_retry_after(d);
    }
    if let Some(d) = duration("retry.deadline", r.deadline.as_ref())? {
        retry = retry.deadline(d);
    }
    retry = retry.methods(choice(
        "retry.methods",
        r.methods.as_deref(),
        [("idempotent", Methods::Idempotent), ("all", Methods::All)],
    )?);
    let defaults = BudgetConfig::default();
    retry = retry.budget(BudgetConfig {
        ratio: r.budget_ratio.unwrap_or(defaults.ratio),
        min_per_second: r.budget_min_per_second.unwrap_or(defaults.min_per_second),
        window: duration("retry.budget_window", r.budget_window.as_ref())?.unwrap_or(defaults.window),
    });
    retry.build().map_err(|e| {
        let field = match e.setting() {
            "max_attempts" => "retry.max_attempts",
            // The cap or its base, whichever the file set (with the cap
            // left at its default, a long base is what is wrong).
            "backoff" if r.max_backoff.is_none() => "retry.backoff",
            "backoff" => "retry.max_backoff",
            "budget.ratio" => "retry.budget_ratio",
            "budget.window" => "retry.budget_window",
            _ => "retry",
        };
        StackError::new(field, e.to_string())
    })
}

impl OptimizerConfig {
    /// Parses TOML text. An error names the key at fault as a dotted path
    /// (`cache.max_memory_mb`; `config` for the file as a whole, when its
    /// TOML is malformed) and gives the line and column.
    pub fn from_toml(text: &str) -> Result<Self, StackError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let path = e.path().to_string();
            let error = e.into_inner();
            // An error of the TOML itself (an integer past `i64::MAX`, a
            // broken string) has no path: name the key on its line.
            let field = if path == "." {
                error
                    .span()
                    .and_then(|span| key_at(text, span.start))
                    .unwrap_or_else(|| "config".to_owned())
            } else {
                path
            };
            let reason = match error.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    format!("{} (line {line}, column {column})", error.message())
                }
                None => error.message().to_owned(),
            };
            StackError::new(field, reason)
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, StackError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| StackError::new("config", format!("{}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The builder these settings describe.
    pub fn into_builder(self) -> Result<OptimizerStackBuilder, StackError> {
        let mut b = OptimizerStack::builder();
        if let Some(t) = duration("timeout", self.timeout.as_ref())? {
            b = b.timeout(t);
        }
        let overload = match (self.load_shed, duration("max_wait", self.max_wait.as_ref())?) {
            (Some(true), Some(_)) => {
                return Err(StackError::new(
                    "max_wait",
                    "refuse at once (load_shed = true) or after max_wait, not both",
                ));
            }
            (Some(true), None) => Overload::Shed,
            (_, Some(wait)) => Overload::WaitAtMost(wait),
            (_, None) => Overload::Wait,
        };
        if let Some(n) = self.concurrency_limit {
            b = b.concurrency_limit(n, overload);
        }
        if let Some(n) = self.per_host_limit {
            b = b.per_host_limit(n, overload);
        }
        if let Some(origin) = &self.secondary_upstream {
            b = b.secondary_upstream(origin);
        }
        if let Some(urls) = self.warm_up {
            b = b.warm_up(urls);
        }
        if let Some(t) = duration("warm_up_timeout", self.warm_up_timeout.as_ref())? {
            b = b.warm_up_timeout(t);
        }
        if let Some(n) = self.warm_up_parallelism {
            b = b.warm_up_parallelism(n);
        }
        if let Some(c) = self.cache {
            match c.persist.as_deref() {
                Some("") => return Err(StackError::new("cache.persist", "an empty path")),
                Some(path) => b = b.persist_cache(path),
                None if c.save_every.is_some() => {
                    return Err(StackError::new("cache.save_every", "needs a file (cache.persist)"));
                }
                None => {}
            }
            match duration("cache.save_every", c.save_every.as_ref())? {
                Some(d) if d.is_zero() => return Err(StackError::new("cache.save_every", "must be longer than zero")),
                Some(d) => b = b.save_cache_every(d),
                None => {}
            }
            b = b.cache(cache::build(c)?);
        }
        if let Some(s) = &self.circuit_breaker {
            b = b.when_open(choice(
                "circuit_breaker.when_open",
                s.when_open.as_deref(),
                [("error", WhenOpen::Error), ("respond_503", WhenOpen::Respond503)],
            )?);
            b = b.circuit_breaker(breaker::build(s)?);
            if let Some((path, timeout, on_success)) = breaker::probe(s)? {
                b = b.recovery_probe(path, timeout, on_success);
            }
            if let Some(share) = &s.share {
                b = b.share_openings(breaker::share(share)?);
            }
        }
        if let Some(r) = self.retry {
            b = b.retry(RetryPolicy::new(retry_config(&r)?));
        }
        if let Some(m) = self.monitor {
            let mut settings = MonitorSettings::default();
            if let Some(d) = duration("monitor.interval", m.interval.as_ref())? {
                // The monitor would take zero for its default; in a file it
                // is more likely a slip than a wish for five seconds.
                if d.is_zero() {
                    return Err(StackError::new("monitor.interval", "must be longer than zero"));
                }
                settings.interval = d;
            }
            if let Some(d) = duration("monitor.history", m.history.as_ref())? {
                if d.is_zero() {
                    return Err(StackError::new("monitor.history", "must be longer than zero"));
                }
                settings.history = d;
            }
            settings.prometheus = m.prometheus.unwrap_or(false);
            if let Some(hosts) = m.max_server_addresses {
                settings.max_server_addresses = hosts;
            }
            if m.default_alerts == Some(false) {
                settings.alerts = crate::monitor::AlertManager::new();
            }
            for rule in alerts::rules(m.alerts.as_deref().unwrap_or_default())? {
                settings.alerts.add_rule(rule);
            }
            alerts::inhibit(&mut settings.alerts, m.inhibit.as_deref().unwrap_or_default())?;
            if let Some(section) = &m.alertmanager {
                settings.alertmanager = Some(alerts::alertmanager(section)?);
            }
            for (i, r) in m.readiness.iter().flatten().enumerate() {
                let timeout = duration(&format!("monitor.readiness[{i}].timeout"), r.timeout.as_ref())?;
                b = b.readiness_check(&r.name, &r.url, timeout.unwrap_or(DEFAULT_READINESS_TIMEOUT));
            }
            if let Some(templates) = &m.route_templates {
                settings.route_templates = Some(
                    crate::monitor::RouteTemplates::new(templates)
                        .map_err(|e| StackError::new("monitor.route_templates", e.to_string()))?,
                );
            }
            b = b.monitor(settings);
        }
        if let Some(a) = &self.admin {
            let token = match (&a.token, &a.token_env) {
                (Some(_), Some(_)) => {
                    return Err(StackError::new("admin.token_env", "token or token_env, not both"));
                }
                (token, None) => token.clone(),
                (None, Some(name)) => Some(env_secret("admin.token_env", name)?),
            };
            b = b.admin(&a.listen, token.as_deref());
            b = b.admin_liveness(choice(
                "admin.liveness",
                a.liveness.as_deref(),
                [("required", LivenessAuth::Required), ("exempt", LivenessAuth::Exempt)],
            )?);
        }
        if let Some(c) = self.client {
            let mut client = ClientConfig::default();
            if c.http1 == Some(true) {
                client.protocol = Protocol::Http1;
            }
            if let Some(d) = duration("client.connect_timeout", c.connect_timeout.as_ref())? {
                client.connect_timeout = d;
            }
            if let Some(d) = duration("client.pool_idle_timeout", c.pool_idle_timeout.as_ref())? {
                client.pool_idle_timeout = d;
            }
            if let Some(n) = c.pool_max_idle_per_host {
                client.pool_max_idle_per_host = n;
            }
            client.http2_keep_alive = duration_or_off(
                "client.http2_keep_alive",
                c.http2_keep_alive.as_ref(),
                client.http2_keep_alive,
            )?;
            if let Some(d) = duration("client.http2_keep_alive_timeout", c.http2_keep_alive_timeout.as_ref())? {
                client.http2_keep_alive_timeout = d;
            }
            b = b.client(client);
        }
        Ok(b)
    }
}

mod alerts;
mod breaker;
mod cache;
mod sections;
#[cfg(test)]
mod tests;
