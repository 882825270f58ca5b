//! The admin's POST routes, which change something: `/cache/invalidate`
//! and `/breakers`, each taking one JSON object.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;

#[cfg(any(feature = "invalidation", feature = "circuit-breaker"))]
use super::json;
use super::{AdminService, MAX_BODY, error};

/// The request's body as one JSON object, or the `400` that says why not.
#[allow(dead_code)] // used by whichever routes the features enable
async fn json_object<B>(
    request: Request<B>,
) -> Result<serde_json::Map<String, serde_json::Value>, Response<Full<Bytes>>>
where
    B: Body,
    B::Error: Into<crate::BoxError>,
{
    use http_body_util::{BodyExt, Limited};

    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        // Too long is the client's to shorten, not a malformed body
        // (RFC 9110 §15.5.14): it says so, and by how much it may be.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is over {MAX_BODY} bytes"),
            ));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}"))),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(StatusCode::BAD_REQUEST, "expected one JSON object")),
        // serde's reason says where the text went wrong (line and column).
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("expected one JSON object: {e}"),
        )),
    }
}

impl AdminService {
    #[cfg(feature = "invalidation")]
    pub(super) async fn invalidate<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<crate::BoxError>,
    {
        use crate::cache::Purge;
        let Some(inv) = &self.config.invalidator else {
            return error(StatusCode::NOT_FOUND, "no invalidator configured");
        };
        let map = match json_object(request).await {
            Ok(map) => map,
            Err(refused) => return refused,
        };
        let mode = if map.get("soft").and_then(serde_json::Value::as_bool) == Some(true) {
            Purge::Soft
        } else {
            Purge::Hard
        };
        let text = |name: &str| map.get(name).and_then(serde_json::Value::as_str);
        let report = if let Some(uri) = text("uri") {
            let Some(key) = uri.parse().ok().and_then(|u| inv.cache().key_for_uri(&u)) else {
                return error(StatusCode::BAD_REQUEST, "uri must be absolute");
            };
            inv.purge(&[crate::cache::Node::Key(key.into())], mode)
        } else if let Some(tag) = text("tag") {
            inv.purge(&[crate::cache::Node::Tag(tag.into())], mode)
        } else if let Some(pattern) = text("pattern") {
            match crate::invalidation::Pattern::new(pattern) {
                Ok(p) => inv.purge_pattern(&p, mode).await,
                // With the regex's own reason (its source), which says
                // what is wrong and where.
                Err(e) => return error(StatusCode::BAD_REQUEST, &crate::util::with_sources(&e)),
            }
        } else if let Some(namespace) = text("version") {
            inv.bump_version(namespace)
        } else {
            return error(StatusCode::BAD_REQUEST, "name one of uri, tag, pattern or version");
        };
        json(
            StatusCode::OK,
            &serde_json::json!({
                "kind": report.kind.as_str(),
                "soft": report.mode == Purge::Soft,
                "entries": report.entries,
                "bytes": report.bytes,
                "depth": report.depth,
                "scanned": report.scanned,
                "version": report.version,
                "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
            }),
        )
    }

    #[cfg(not(feature = "invalidation"))]
    pub(super) async fn invalidate<B>(&self, _request: Request<B>) -> Response<Full<Bytes>> {
        error(StatusCode::NOT_FOUND, "built without the invalidation feature")
    }

    /// `GET /breakers` (no request) or `POST /breakers` (an action).
    #[cfg(feature = "circuit-breaker")]
    pub(super) async fn breakers<B>(&self, request: Option<Request<B>>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<crate::BoxError>,
    {
        use crate::circuit_breaker::CircuitBreakers;
        type Action = fn(&CircuitBreakers, &str);
        const ACTIONS: [(&str, Action); 5] = [
            ("force_open", CircuitBreakers::force_open),
            ("force_closed", CircuitBreakers::force_closed),
            ("reset", CircuitBreakers::reset),
            ("disable", CircuitBreakers::disable),
            ("metrics_only", CircuitBreakers::metrics_only),
        ];
        let Some(breakers) = &self.config.breakers else {
            return error(StatusCode::NOT_FOUND, "no circuit breaker configured");
        };
        let Some(request) = request else {
            return json(StatusCode::OK, &breakers.snapshot());
        };
        let map = match json_object(request).await {
            Ok(map) => map,
            Err(refused) => return refused,
        };
        let text = |name: &str| map.get(name).and_then(serde_json::Value::as_str);
        let Some(key) = text("key") else {
            return error(
                StatusCode::BAD_REQUEST,
                "name the breaker: \"key\": \"scheme://authority\"",
            );
        };
        if text("action") == Some("trip") {
            // Another instance's opening (see `circuit_breaker::PeerShare`):
            // like `force_open`, it may name a host not called here yet.
            let Some(ms) = map.get("open_for_ms").and_then(serde_json::Value::as_u64) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a trip needs \"open_for_ms\": the open period in milliseconds (a whole number)",
                );
            };
            breakers.trip(key, std::time::Duration::from_millis(ms));
        } else {
            let Some(&(name, act)) = ACTIONS.iter().find(|(name, _)| Some(*name) == text("action")) else {
                let names = ACTIONS.map(|(name, _)| name).join(", ");
                return error(StatusCode::BAD_REQUEST, &format!("\"action\" is one of {names}, trip"));
            };
            if name != "force_open" && breakers.state(key).is_none() {
                return error(StatusCode::NOT_FOUND, &format!("no breaker has the key {key:?}"));
            }
            act(breakers, key);
        }
        match breakers.snapshot().into_iter().find(|b| &*b.key == key) {
            Some(snapshot) => json(StatusCode::OK, &snapshot),
            // Evicted at once from a full registry: the action had no lasting effect.
            None => error(StatusCode::CONFLICT, "the breaker registry is full"),
        }
    }

    #[cfg(not(feature = "circuit-breaker"))]
    pub(super) async fn breakers<B>(&self, _request: Option<Request<B>>) -> Response<Full<Bytes>> {
        error(StatusCode::NOT_FOUND, "built without the circuit-breaker feature")
    }
}
