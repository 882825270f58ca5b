//! A property test of the manager against what its notifications may
//! say, over random rules (overall and per host), inhibitions and
//! figures (NaN, infinities, hosts coming and going).
use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::monitor::{FigureSet, FigureSource};

#[derive(Debug, Clone)]
struct RuleSpec {
    per_host: bool,
    above: bool,
    figure: usize,
    threshold: f64,
    for_: u64,
    keep: u64,
    repeat: u64,
    min_requests: u64,
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..2,
        prop::sample::select(vec![0.0, 0.5, 1.0]),
        prop::sample::select(vec![0u64, 5, 20]),
        prop::sample::select(vec![0u64, 5, 20]),
        prop::sample::select(vec![1u64, 10, 60]),
        prop::sample::select(vec![0u64, 3]),
    )
        .prop_map(
            |(per_host, above, figure, threshold, for_, keep, repeat, min_requests)| RuleSpec {
                per_host,
                above,
                figure,
                threshold,
                for_,
                keep,
                repeat,
                min_requests,
            },
        )
}

fn value() -> impl Strategy<Value = Option<f64>> {
    prop::sample::select(vec![
        None,
        Some(f64::NAN),
        Some(f64::NEG_INFINITY),
        Some(-1.0),
        Some(0.0),
        Some(0.3),
        Some(0.7),
        Some(2.0),
        Some(f64::INFINITY),
    ])
}

/// Two figures and a request count, for the whole client and up to
/// four hosts (a host absent from a step is gone from the figures).
type Step = (u64, [Option<f64>; 3], Vec<Option<[Option<f64>; 3]>>);

fn step() -> impl Strategy<Value = Step> {
    let figures = || {
        (
            value(),
            value(),
            prop::sample::select(vec![None, Some(0.0), Some(2.0), Some(50.0)]),
        )
            .prop_map(|(a, b, requests)| [a, b, requests])
    };
    (
        0u64..15,
        figures(),
        prop::collection::vec(prop::option::of(figures()), 4),
    )
}

const NAMES: [&str; 2] = ["f0", "f1"];

fn figure_set(step: &Step) -> FigureSet {
    let mut set = FigureSet::new();
    let put = |set: FigureSet, host: Option<&str>, values: &[Option<f64>; 3]| {
        let mut set = set;
        for (name, value) in NAMES.iter().chain(["http.requests"].iter()).zip(values) {
            if let Some(v) = value {
                set = match host {
                    None => set.with(name, *v),
                    Some(h) => set.with_host(h, name, *v),
                };
            }
        }
        set
    };
    set = put(set, None, &step.1);
    for (i, host) in step.2.iter().enumerate() {
        if let Some(values) = host {
            set = put(set, Some(&format!("h{i}:80")), values);
            // A host listed with no figure at all is still a host.
            set = set.with_host(&format!("h{i}:80"), "listed", 1.0);
        }
    }
    set
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn notifications_follow_the_states(
        specs in prop::collection::vec(rule_spec(), 1..5),
        inhibitions in prop::collection::vec((0usize..4, 0usize..4, any::<bool>()), 0..4),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut m = AlertManager::new();
        let rules: Vec<AlertRule> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = format!("R{i}");
                let mut rule = if s.above {
                    AlertRule::above(&name, NAMES[s.figure], s.threshold)
                } else {
                    AlertRule::below(&name, NAMES[s.figure], s.threshold)
                }
                .for_duration(Duration::from_secs(s.for_))
                .keep_firing_for(Duration::from_secs(s.keep))
                .repeat_interval(Duration::from_secs(s.repeat))
                .min_requests(s.min_requests);
                if s.per_host {
                    rule = rule.per_host();
                }
                rule
            })
            .collect();
        for rule in &rules {
            m.add_rule(rule.clone());
        }
        for (source, target, same_host) in &inhibitions {
            let (source, target) = (format!("R{source}"), [format!("R{target}")]);
            if *same_host {
                m.inhibit_same_host(&source, target);
            } else {
                m.inhibit(&source, target);
            }
        }
        let by_name: HashMap<String, AlertRule> = rules.iter().map(|r| (r.name.clone(), r.clone())).collect();
        let mut now = Instant::now();
        // Told to fire in this episode, and when last.
        let mut told: HashMap<(String, Option<String>), Instant> = HashMap::new();
        for step in &steps {
            now += Duration::from_secs(step.0);
            let set = figure_set(step);
            let hosts: HashSet<String> = set.hosts().into_iter().map(str::to_owned).collect();
            let holds = |rule: &AlertRule, host: Option<&str>| {
                let read = |name: &str| match host {
                    None => set.figure(name),
                    Some(h) => set.host_figure(name, h),
                };
                rule.holds_with(read(&rule.figure), || read("http.requests"))
            };
            let notes = m.evaluate_figures(&set, now);
            let statuses = m.statuses();
            let status = |name: &str, host: &Option<String>| {
                statuses.iter().find(|s| s.rule.name == name && &s.host == host).cloned()
            };
            for note in &notes {
                let key = (note.name.clone(), note.host.clone());
                let rule = &by_name[&note.name];
                prop_assert_eq!(note.host.is_some(), rule.scope == Scope::PerHost);
                match note.state {
                    AlertState::Firing => {
                        let s = status(&note.name, &note.host).expect("a status for what fired");
                        prop_assert_eq!(s.state, AlertState::Firing);
                        prop_assert!(s.inhibited_by.is_none(), "a held-back alert was told: {:?}", note);
                        prop_assert!(holds(rule, note.host.as_deref()), "told to fire while its condition fails: {:?}", note);
                        if let Some(last) = told.get(&key) {
                            prop_assert!(now.saturating_duration_since(*last) >= rule.repeat_interval, "told again within the repeat interval: {:?}", note);
                        }
                        told.insert(key, now);
                    }
                    AlertState::Resolved => {
                        prop_assert!(told.remove(&key).is_some(), "a resolution of a firing never told: {:?}", note);
                    }
                    other => prop_assert!(false, "a notification in state {:?}", other),
                }
            }
            prop_assert_eq!(m.firing(), statuses.iter().filter(|s| s.state == AlertState::Firing).count());
            for s in &statuses {
                // An alert whose condition holds, firing unheld, has been told.
                if s.state == AlertState::Firing && s.inhibited_by.is_none() && holds(&s.rule, s.host.as_deref()) {
                    prop_assert!(told.contains_key(&(s.rule.name.clone(), s.host.clone())), "firing untold: {:?}", s);
                }
                // A host gone from the figures is kept only while it fires.
                if let Some(h) = &s.host {
                    prop_assert!(hosts.contains(h) || s.state == AlertState::Firing, "kept for a host gone: {:?}", s);
                }
            }
        }
    }
}
