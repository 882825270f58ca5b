//! The stack's settings that are values of their own: its configuration
//! error ([`StackError`]) and the monitoring settings
//! ([`MonitorSettings`]), with the defaults the built-in alert rules take
//! from the machine.

use std::time::Duration;

use crate::monitor::{AlertManager, RouteTemplates};

/// Invalid stack configuration, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackError {
    field: String,
    reason: String,
}

impl StackError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        StackError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid optimizer configuration: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for StackError {}

/// Monitoring settings of the stack.
#[derive(Debug)]
pub struct MonitorSettings {
    /// Sampling period.
    pub interval: Duration,
    /// How far back the sampler's history (the dashboard's charts, `/stats`)
    /// goes (default [`DEFAULT_HISTORY`](crate::monitor::DEFAULT_HISTORY),
    /// 15 minutes; at most 100,000 samples are kept whatever it says).
    pub history: Duration,
    /// Alert rules (the defaults watch error rate, latency, breakers, cache
    /// and process memory).
    pub alerts: AlertManager,
    /// Install the Prometheus recorder (for `/metrics`); only in binaries.
    pub prometheus: bool,
    /// Route templates for the `url.template` label (none: no path labels).
    pub route_templates: Option<RouteTemplates>,
    /// Hosts labelled with their own `server.address`, past which they are
    /// `_OTHER` (see [`MetricsLayer::max_server_addresses`](crate::monitor::MetricsLayer::max_server_addresses)).
    pub max_server_addresses: usize,
    /// Push the alerts to a Prometheus Alertmanager (see
    /// [`AlertmanagerPush`](crate::monitor::AlertmanagerPush); TOML
    /// `[monitor.alertmanager]`). None by default.
    pub alertmanager: Option<crate::monitor::AlertmanagerPush>,
}

/// The built-in `ProcessMemoryHigh` threshold without a cgroup limit: a
/// figure for a process on a machine of its own, well above what the
/// stack itself needs (its cache budget included) and below most hosts'
/// memory.
pub const DEFAULT_RSS_ALERT: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;

/// Of a cgroup memory limit, where the built-in `ProcessMemoryHigh` rule
/// fires: near enough to warn before the kernel's OOM killer acts, far
/// enough that a process sized to its limit does not alert in steady use.
pub const CGROUP_RSS_ALERT_FRACTION: f64 = 0.9;

/// The `ProcessMemoryHigh` threshold for a process whose cgroup has
/// `limit` (or none): a fixed 4 GiB would never fire in a container of
/// 512 MiB, whose process the OOM killer ends first.
fn rss_alert(limit: Option<u64>) -> f64 {
    limit.map_or(DEFAULT_RSS_ALERT, |limit| limit as f64 * CGROUP_RSS_ALERT_FRACTION)
}

impl Default for MonitorSettings {
    /// Sampling every [`DEFAULT_SAMPLE_INTERVAL`](crate::monitor::DEFAULT_SAMPLE_INTERVAL),
    /// the built-in alert rules with `ProcessMemoryHigh` at
    /// [`CGROUP_RSS_ALERT_FRACTION`] of the process's cgroup memory limit
    /// when it has one (a container), else at [`DEFAULT_RSS_ALERT`].
    fn default() -> Self {
        MonitorSettings {
            interval: crate::monitor::DEFAULT_SAMPLE_INTERVAL,
            history: crate::monitor::DEFAULT_HISTORY,
            alerts: AlertManager::with_default_rules(rss_alert(crate::cache::pressure::cgroup_limit())),
            prometheus: false,
            route_templates: None,
            max_server_addresses: crate::monitor::DEFAULT_MAX_SERVER_ADDRESSES,
            alertmanager: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The thresholds are the same arithmetic on the same numbers: exact.
    #[allow(clippy::float_cmp)]
    #[test]
    fn the_memory_alert_follows_a_cgroup_limit_where_there_is_one() {
        assert_eq!(rss_alert(None), DEFAULT_RSS_ALERT);
        assert_eq!(rss_alert(Some(512 << 20)), 0.9 * f64::from(512u32 << 20));
        let rule = |settings: &MonitorSettings| {
            settings
                .alerts
                .statuses()
                .into_iter()
                .find(|s| s.rule.name == "ProcessMemoryHigh")
                .map(|s| s.rule.threshold)
        };
        // This machine's own: whatever its cgroup says.
        assert_eq!(
            rule(&MonitorSettings::default()),
            Some(rss_alert(crate::cache::pressure::cgroup_limit()))
        );
    }
}
