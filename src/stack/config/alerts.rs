//! `[[monitor.alerts]]` and `[[monitor.inhibit]]` of an
//! [`OptimizerConfig`](super::OptimizerConfig): rules and inhibitions,
//! each checked, each error naming its key.

use super::{
    AlertSection, AlertmanagerSection, InhibitSection, StackError, choice, duration, env_secret, is_https,
    own_http1_client,
};
use crate::monitor::{AlertManager, AlertRule, AlertmanagerPush, FIGURES, HOST_FIGURES, Scope, Severity};

/// `[[monitor.alerts]]` as rules, each checked.
pub(super) fn rules(sections: &[AlertSection]) -> Result<Vec<AlertRule>, StackError> {
    let mut rules: Vec<AlertRule> = Vec::with_capacity(sections.len());
    for (i, a) in sections.iter().enumerate() {
        let field = |name: &str| format!("monitor.alerts[{i}].{name}");
        if a.name.trim().is_empty() {
            return Err(StackError::new(field("name"), "a rule needs a name"));
        }
        if rules.iter().any(|r| r.name == a.name) {
            return Err(StackError::new(
                field("name"),
                format!("a second rule named {:?}", a.name),
            ));
        }
        // A name in one of the crate's namespaces must be one of its
        // figures: a misspelt one would never fire. Others are gauges the
        // program registers.
        let built_in = ["http.", "cache.", "circuit_breaker.", "process."]
            .iter()
            .any(|prefix| a.figure.starts_with(prefix));
        if a.figure.is_empty() || (built_in && !FIGURES.contains(&a.figure.as_str())) {
            return Err(StackError::new(
                field("figure"),
                format!("{:?} is no figure; the crate's are {}", a.figure, FIGURES.join(", ")),
            ));
        }
        let mut rule = match (a.above, a.below) {
            (Some(t), None) if t.is_finite() => AlertRule::above(&a.name, &a.figure, t),
            (None, Some(t)) if t.is_finite() => AlertRule::below(&a.name, &a.figure, t),
            (Some(_), Some(_)) => {
                return Err(StackError::new(field("below"), "above or below, not both"));
            }
            (None, None) => {
                return Err(StackError::new(field("above"), "give a threshold: above or below"));
            }
            (above, _) => {
                let which = if above.is_some() { "above" } else { "below" };
                return Err(StackError::new(field(which), "the threshold must be a finite number"));
            }
        };
        if let Some(d) = duration(&field("for"), a.for_.as_ref())? {
            rule = rule.for_duration(d);
        }
        if let Some(d) = duration(&field("keep_firing_for"), a.keep_firing_for.as_ref())? {
            rule = rule.keep_firing_for(d);
        }
        if let Some(d) = duration(&field("repeat_interval"), a.repeat_interval.as_ref())? {
            rule = rule.repeat_interval(d);
        }
        rule = rule.severity(choice(
            &field("severity"),
            a.severity.as_deref(),
            [("warning", Severity::Warning), ("critical", Severity::Critical)],
        )?);
        if let Some(n) = a.min_requests {
            rule = rule.min_requests(n);
        }
        let scope = choice(
            &field("scope"),
            a.scope.as_deref(),
            [("overall", Scope::Overall), ("per_host", Scope::PerHost)],
        )?;
        if scope == Scope::PerHost {
            // Only some figures exist per host; a rule over another would
            // never fire.
            if !HOST_FIGURES.contains(&a.figure.as_str()) {
                return Err(StackError::new(
                    field("figure"),
                    format!(
                        "{:?} is not gathered per host; per-host figures are {}",
                        a.figure,
                        HOST_FIGURES.join(", ")
                    ),
                ));
            }
            rule = rule.per_host();
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `[[monitor.inhibit]]` set on `alerts`, whose rules (built-in and the
/// file's) every name must be.
pub(super) fn inhibit(alerts: &mut AlertManager, sections: &[InhibitSection]) -> Result<(), StackError> {
    for (i, inhibit) in sections.iter().enumerate() {
        let field = |name: &str| format!("monitor.inhibit[{i}].{name}");
        let unknown = |name: &String| !alerts.has_rule(name);
        if unknown(&inhibit.source) {
            return Err(StackError::new(
                field("source"),
                format!("no alert rule is named {:?}", inhibit.source),
            ));
        }
        if inhibit.targets.is_empty() {
            return Err(StackError::new(field("targets"), "name the rules it holds back"));
        }
        if let Some(target) = inhibit.targets.iter().find(|t| unknown(t)) {
            return Err(StackError::new(
                field("targets"),
                format!("no alert rule is named {target:?}"),
            ));
        }
        let same_host = match inhibit.equal.as_deref() {
            None | Some([]) => false,
            Some(labels) => {
                if let Some(other) = labels.iter().find(|l| *l != "host") {
                    return Err(StackError::new(
                        field("equal"),
                        format!("{other:?}: alerts have one label, \"host\""),
                    ));
                }
                true
            }
        };
        let targets = inhibit.targets.iter().cloned();
        if same_host {
            alerts.inhibit_same_host(&inhibit.source, targets);
        } else {
            alerts.inhibit(&inhibit.source, targets);
        }
    }
    Ok(())
}

/// `[monitor.alertmanager]` as a push over an HTTP/1.1 client of its own
/// (a stock Alertmanager speaks no h2c, which the stack's client may).
pub(super) fn alertmanager(section: &AlertmanagerSection) -> Result<AlertmanagerPush, StackError> {
    let field = |name: &str| format!("monitor.alertmanager.{name}");
    let mut push = AlertmanagerPush::builder(&section.url);
    if let Some(every) = duration(&field("resend"), section.resend.as_ref())? {
        push = push.resend_every(every);
    }
    if let Some(timeout) = duration(&field("timeout"), section.timeout.as_ref())? {
        push = push.timeout(timeout);
    }
    for (name, value) in section.labels.iter().flatten() {
        push = push.label(name, value);
    }
    if let Some(link) = &section.generator_url {
        push = push.generator_url(link);
    }
    let authorization = match (&section.token_env, &section.authorization_env) {
        (Some(_), Some(_)) => {
            return Err(StackError::new(
                field("authorization_env"),
                "token_env or authorization_env, not both",
            ));
        }
        (Some(name), None) => Some((
            "token_env",
            format!("Bearer {}", env_secret(&field("token_env"), name)?),
        )),
        (None, Some(name)) => Some(("authorization_env", env_secret(&field("authorization_env"), name)?)),
        (None, None) => None,
    };
    if let Some((key, value)) = authorization {
        // The variable is named, its value never shown.
        let value = http::HeaderValue::try_from(value)
            .map_err(|_| StackError::new(field(key), "the variable's value is not a valid header value"))?;
        push = push.authorization(value);
    }
    // The key a refusal is about.
    let named = |e: crate::monitor::AlertmanagerError| {
        let key = match e.setting() {
            "label" => "labels",
            "resend_every" => "resend",
            "timeout" => "timeout",
            "generator_url" => "generator_url",
            _ => "url",
        };
        StackError::new(field(key), e.to_string())
    };
    let client = own_http1_client(&field("url"), is_https(&section.url))?;
    push.build(client).map_err(named)
}
