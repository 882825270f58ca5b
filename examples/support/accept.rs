//! The accept loop of the examples' local servers.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Hands every connection `listener` accepts to `serve`, until the task is
/// aborted. A failed accept (a peer gone before it was taken, descriptors
/// run out) must not end the server, as a `while let Ok(..)` loop would,
/// silently: it is reported, and accepting resumes after a moment.
pub(crate) async fn accept_forever(listener: TcpListener, mut serve: impl FnMut(TcpStream)) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serve(stream);
            }
            Err(error) => {
                eprintln!("accept failed: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
