//! Inhibition: while a source rule fires, its targets' alerts fire unheard.

use super::{AlertManager, AlertState};

/// Which of the targets' alerts a firing source holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// Every one, whatever host the source fires for.
    Any,
    /// Those for the host the source fires for (Alertmanager's `equal`
    /// over the host); no host matches no host.
    SameHost,
}

/// While `source` fires, `targets` are not notified (see
/// [`AlertManager::inhibit`]).
#[derive(Debug, Clone)]
pub(super) struct Inhibition {
    source: String,
    targets: Vec<String>,
    matching: Match,
}

impl Inhibition {
    pub(super) fn new<I, S>(source: &str, targets: I, matching: Match) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Inhibition {
            source: source.to_owned(),
            targets: targets.into_iter().map(Into::into).collect(),
            matching,
        }
    }
}

impl AlertManager {
    /// Sets each alert's `inhibited_by` from the alerts firing now.
    pub(super) fn mark_inhibited(&mut self) {
        if self.inhibitions.is_empty() {
            return;
        }
        let firing: Vec<(&str, Option<&str>)> = self
            .tracked
            .iter()
            .flat_map(|t| {
                t.alerts
                    .iter()
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| (t.rule.name.as_str(), a.host.as_deref()))
            })
            .collect();
        let held: Vec<Vec<Option<String>>> = self
            .tracked
            .iter()
            .map(|t| {
                t.alerts
                    .iter()
                    .map(|a| {
                        self.inhibitions
                            .iter()
                            .find(|i| {
                                i.source != t.rule.name
                                    && i.targets.contains(&t.rule.name)
                                    && firing.iter().any(|&(name, host)| {
                                        name == i.source && (i.matching == Match::Any || host == a.host.as_deref())
                                    })
                            })
                            .map(|i| i.source.clone())
                    })
                    .collect()
            })
            .collect();
        for (t, held) in self.tracked.iter_mut().zip(held) {
            for (a, held) in t.alerts.iter_mut().zip(held) {
                a.inhibited_by = held;
            }
        }
    }
}
