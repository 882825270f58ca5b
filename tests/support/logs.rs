//! Captures what the crate logs through `tracing`, per test thread.
//!
//! One global subscriber (installed once per test binary) writes each
//! event to a buffer of the thread it happens on, if that thread asked to
//! capture. Not a scoped subscriber per test (`set_default`): tracing
//! caches each callsite's interest process-wide, and a callsite first
//! reached on a thread with no subscriber while just one scoped subscriber
//! exists is cached as "never" (tokio-rs/tracing#3611), so a test that
//! asserts on a log line would fail whenever another test got there first.
//! Events on threads that do not capture are formatted and dropped.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::fmt::MakeWriter;

thread_local! {
    static SINK: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Log lines written on this thread while the guard from
/// [`Logs::capture`] lives.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

/// Stops capturing on this thread when dropped.
pub struct Capturing(());

impl Drop for Capturing {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

impl Logs {
    /// Captures every event at `INFO` or above on this thread until the
    /// guard is dropped (a current-thread runtime's tasks included).
    pub fn capture() -> (Logs, Capturing) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(ThreadSink)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in tests");
        });
        let logs = Logs::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(logs.0.clone()));
        (logs, Capturing(()))
    }

    /// What was logged, one event per line.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Writes to the current thread's capture buffer, if any.
struct ThreadSink;

impl io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SINK.with(|sink| {
            if let Some(sink) = sink.borrow().as_ref() {
                sink.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ThreadSink {
    type Writer = ThreadSink;

    fn make_writer(&'a self) -> ThreadSink {
        ThreadSink
    }
}
