//! A fake server for the posters' unit tests: it keeps what each post
//! carried and answers with a status the test sets.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What the server got, post by post: the URL, the value of the header
/// the test watches, and the JSON body.
pub(crate) type Got = Arc<Mutex<Vec<(String, Option<String>, serde_json::Value)>>>;

/// A server answering `status` (0: never answering), keeping each post
/// with its `watched` header.
pub(crate) fn server(
    status: Arc<AtomicU16>,
    watched: http::HeaderName,
) -> (
    impl tower_service::Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + Sync
    + 'static,
    Got,
) {
    let got: Got = Arc::default();
    let keep = got.clone();
    let service = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let (keep, status, watched) = (keep.clone(), status.clone(), watched.clone());
        async move {
            let uri = req.uri().to_string();
            let value = req.headers().get(&watched).map(|v| v.to_str().unwrap().to_owned());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            keep.lock()
                .unwrap()
                .push((uri, value, serde_json::from_slice(&body).unwrap()));
            let status = status.load(Ordering::SeqCst);
            if status == 0 {
                std::future::pending::<()>().await;
            }
            let status = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(http::Response::builder().status(status).body(Full::default()).unwrap())
        }
    });
    (service, got)
}
