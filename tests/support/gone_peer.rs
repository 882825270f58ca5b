//! A `SharedOpenings` whose one peer is gone (a port on 127.0.0.1 just
//! closed), so every opening it sends fails, and a bounded wait for that.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower_optimizer::monitor::SharedOpenings;

/// Openings sent to a peer whose port is closed.
pub fn sender() -> SharedOpenings {
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    SharedOpenings::builder()
        .peer(&format!("http://{gone}"))
        .timeout(Duration::from_secs(5))
        .build(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>(),
        )
        .unwrap()
}

/// Waits, at most 10 s, until `share` counts a failed send (refused, or at
/// its timeout).
pub async fn until_failed(share: &SharedOpenings) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while share.stats().failed == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the opening sent to a closed port failed");
}
