//! Runs a test on a paused current-thread runtime with metrics-util's
//! debugging recorder as the local recorder, and returns what it recorded.
#![allow(dead_code, unreachable_pub)]

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// One recorded metric: its key, unit, description and value.
pub type Row = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

/// Runs `f` on a paused current-thread runtime with a local recorder.
pub fn recorded(f: impl std::future::Future<Output = ()>) -> Vec<Row> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(f));
    snapshotter.snapshot().into_vec()
}
