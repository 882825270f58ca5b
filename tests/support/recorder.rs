//! A `metrics` recorder for tests: every counter increment and gauge set,
//! as (name, `key=value` labels joined by commas, value), and every
//! histogram observation, as a value of 1 (a count of observations).
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

/// Records metric values by name, with labels flattened.
#[derive(Default)]
pub struct Recorder {
    pub counts: Arc<Mutex<Vec<(String, String, u64)>>>,
}

struct Handle {
    name: String,
    labels: String,
    counts: Arc<Mutex<Vec<(String, String, u64)>>>,
}

impl metrics::CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.counts
            .lock()
            .unwrap()
            .push((self.name.clone(), self.labels.clone(), value));
    }
    fn absolute(&self, _: u64) {}
}

impl metrics::GaugeFn for Handle {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.counts
            .lock()
            .unwrap()
            .push((self.name.clone(), self.labels.clone(), value as u64));
    }
}

impl metrics::HistogramFn for Handle {
    fn record(&self, _: f64) {
        self.counts
            .lock()
            .unwrap()
            .push((self.name.clone(), self.labels.clone(), 1));
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(self.handle(key)))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(self.handle(key)))
    }
    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(Arc::new(self.handle(key)))
    }
}

impl Recorder {
    fn handle(&self, key: &metrics::Key) -> Handle {
        let labels = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect::<Vec<_>>()
            .join(",");
        Handle {
            name: key.name().to_owned(),
            labels,
            counts: self.counts.clone(),
        }
    }
}
