//! The admin server's accept loop: a failed accept is waited out, never
//! the end of the server.
//!
//! `accept(2)` fails for reasons that pass: a peer that gave up before
//! its connection was taken (`ECONNABORTED`), or a process that has run out
//! of file descriptors or memory for a moment (`EMFILE`, `ENFILE`,
//! `ENOBUFS`). A loop that stops at the first error (`while let Ok(..)`)
//! leaves the dashboard, `/metrics` and the health checks dead for the
//! rest of the process, with nothing said.

use std::future::Future;
use std::io;
use std::time::Duration;

/// Wait after an accept error that is not the peer's doing before trying
/// again: out of descriptors, accepting at once would fail at once, in a
/// busy loop; a tenth of a second lets connections finish and free some,
/// and is short enough that a scrape or a health check retried by its
/// caller still gets through.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Calls `accept` and hands each connection to `serve`, forever (until the
/// task running it is aborted). Errors are logged; the peer's errors are
/// skipped at once, the others waited out for [`ACCEPT_BACKOFF`].
pub(crate) async fn accept_forever<S, A, F>(mut accept: A, mut serve: impl FnMut(S))
where
    A: FnMut() -> F,
    F: Future<Output = io::Result<S>>,
{
    loop {
        match accept().await {
            Ok(connection) => serve(connection),
            Err(error) if peer_gave_up(&error) => {
                tracing::debug!(%error, "admin server: a connection was gone before it was accepted");
            }
            Err(error) => {
                tracing::warn!(%error, backoff = ?ACCEPT_BACKOFF, "admin server: accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// An error of one connection, not of the listener or the process.
fn peer_gave_up(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    /// Too many open files (`EMFILE` on Linux).
    const EMFILE: i32 = 24;

    #[tokio::test(start_paused = true)]
    async fn errors_are_waited_out_and_connections_still_served() {
        let mut script: VecDeque<io::Result<u32>> = VecDeque::from([
            Ok(1),
            Err(io::Error::from_raw_os_error(EMFILE)),
            Err(io::ErrorKind::ConnectionAborted.into()),
            Ok(2),
            Err(io::Error::from_raw_os_error(EMFILE)),
            Err(io::Error::from_raw_os_error(EMFILE)),
            Ok(3),
        ]);
        let served = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let seen = served.clone();
        let task = tokio::spawn(accept_forever(
            move || {
                let next = script.pop_front();
                async move {
                    match next {
                        Some(result) => result,
                        // The script is over: no more connections come.
                        None => std::future::pending().await,
                    }
                }
            },
            move |n| seen.lock().unwrap().push((n, start.elapsed())),
        ));
        // Paused time runs ahead to each backoff's end while the loop waits.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!task.is_finished(), "the loop outlives every error");
        task.abort();
        let served = served.lock().unwrap().clone();
        assert_eq!(
            served,
            vec![
                (1, Duration::ZERO),
                // One backoff for EMFILE; none for the peer's abort.
                (2, ACCEPT_BACKOFF),
                (3, ACCEPT_BACKOFF * 3),
            ]
        );
    }
}
