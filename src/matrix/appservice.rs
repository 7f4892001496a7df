//! The appservice API server: what the homeserver calls. Every route but `/health` requires the
//! hs_token (`Authorization: Bearer`, or the legacy `access_token` query parameter): none gets
//! 401 `M_UNAUTHORIZED`, a wrong one 403 `M_FORBIDDEN`, and neither changes anything.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ruma::UserId;
use ruma::api::IncomingRequest;
use ruma::api::appservice::event::push_events;
use serde_json::json;
use tracing::{error, warn};

use crate::config::Secret;
use crate::core::Bridge;
use crate::matrix::Crypto;

/// Shared state of the appservice routes.
pub struct AppState {
    pub bridge: Arc<Bridge>,
    pub hs_token: Secret,
    pub max_body_bytes: usize,
    /// The crypto machines, fed from each transaction before its events (`None`: encryption
    /// is off).
    pub crypto: Option<Arc<Crypto>>,
}

/// The appservice API routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(put_transaction),
        )
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(query_room_alias))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/health", get(health))
        .fallback(|| async {
            matrix_error(
                StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
                "Unrecognized request",
            )
        })
        .with_state(state)
}

/// `ok`, or 503 with the reason while the store cannot make writes durable.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.bridge.store_failure() {
        None => "ok\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failing: {reason}\n"),
        )
            .into_response(),
    }
}

fn matrix_error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errcode": errcode, "error": message })),
    )
        .into_response()
}

fn ok_empty() -> Response {
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// Why a request was not authorized.
enum Denied {
    Missing,
    Wrong,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Missing => matrix_error(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "Missing hs_token",
            ),
            Self::Wrong => matrix_error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Bad hs_token"),
        }
    }
}

/// Checks the hs_token.
fn authorize(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(), Denied> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(percent_decode)
    });
    let given = match (bearer, query) {
        (Some(token), _) => token.to_owned(),
        (None, Some(token)) => token,
        (None, None) => return Err(Denied::Missing),
    };
    if constant_time_eq(given.as_bytes(), state.hs_token.expose().as_bytes()) {
        Ok(())
    } else {
        warn!(path = uri.path(), "request with a wrong hs_token rejected");
        Err(Denied::Wrong)
    }
}

async fn put_transaction(
    State(state): State<Arc<AppState>>,
    Path(txn_id): Path<String>,
    request: Request,
) -> Response {
    if let Err(denied) = authorize(&state, request.headers(), request.uri()) {
        return denied.into_response();
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            warn!(
                txn_id,
                limit = state.max_body_bytes,
                "transaction body too large or unreadable"
            );
            return matrix_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "Transaction body too large",
            );
        }
    };
    let body_copy = bytes.clone();
    let http_request = http::Request::from_parts(parts, bytes);
    let txn = match push_events::v1::Request::try_from_http_request(http_request, &[&txn_id]) {
        Ok(txn) => txn,
        Err(_) => {
            // ruma's error text comes from serde and can quote the body: log its shape only.
            warn!(txn_id, problem = %describe_bad_body(&body_copy), "transaction body is not a valid transaction");
            return matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "Invalid transaction body",
            );
        }
    };
    if let Some(crypto) = &state.crypto {
        // Room keys first: the transaction's encrypted events may need them. Answered 200 only
        // once the machines have stored what they received.
        crypto.observe(&txn.events);
        if let Err(error) = crypto.receive_transaction(&txn).await {
            error!(txn_id, %error, "encryption data of a transaction not taken; the homeserver will retry it");
            return matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Encryption data could not be stored",
            );
        }
    }
    let ephemeral = ephemeral_of(&body_copy);
    match state
        .bridge
        .handle_transaction(txn.txn_id.as_str(), txn.events)
        .await
    {
        Ok(()) => {
            state.bridge.handle_ephemeral(ephemeral);
            ok_empty()
        }
        Err(e) => {
            error!(txn_id, error = %e, "transaction failed; the homeserver will retry it");
            matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Transaction could not be stored",
            )
        }
    }
}

async fn query_user(
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, &uri) {
        return denied.into_response();
    }
    let Ok(user) = UserId::parse(&user_id) else {
        return matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Not a user ID");
    };
    match state.bridge.provision_ghost(&user).await {
        Ok(true) => ok_empty(),
        Ok(false) => matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such ghost"),
        Err(e) => {
            error!(user = %user, error = %e, "ghost provisioning failed");
            matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Ghost could not be created",
            )
        }
    }
}

async fn query_room_alias(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, &uri) {
        return denied.into_response();
    }
    matrix_error(
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
        "The bridge provides no room aliases",
    )
}

async fn ping(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    _body: Body,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, &uri) {
        return denied.into_response();
    }
    ok_empty()
}

/// The ephemeral events (receipts, typing) of a transaction body: under the stable key
/// `ephemeral` or MSC2409's `de.sorunome.msc2409.ephemeral` (Synapse's), at most
/// [`MAX_EPHEMERAL`] of them.
fn ephemeral_of(body: &[u8]) -> Vec<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Ephemeral {
        #[serde(default)]
        ephemeral: Vec<serde_json::Value>,
        #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
        unstable: Vec<serde_json::Value>,
    }
    // Most transactions carry none: skip the second parse of the body unless the key can be
    // in it (homeservers write keys unescaped, as canonical JSON does).
    if memchr::memmem::find(body, EPHEMERAL_KEY).is_none() {
        return Vec::new();
    }
    match serde_json::from_slice::<Ephemeral>(body) {
        Ok(Ephemeral {
            mut ephemeral,
            unstable,
        }) => {
            if ephemeral.is_empty() {
                ephemeral = unstable;
            }
            ephemeral.truncate(MAX_EPHEMERAL);
            ephemeral
        }
        Err(_) => Vec::new(),
    }
}

/// Both the stable and the unstable (MSC2409) key end in this.
const EPHEMERAL_KEY: &[u8] = b"ephemeral\"";

/// Ephemeral events looked at per transaction; the rest are dropped (they are only receipts
/// and typing, and the homeserver batches at most 100 of them anyway).
const MAX_EPHEMERAL: usize = 500;

/// Where a transaction body is wrong, without quoting any of it (it may hold message text).
fn describe_bad_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
        Ok(_) => "valid JSON but not a transaction (`events` missing or not an array of objects)"
            .to_owned(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_query_tokens() {
        assert_eq!(percent_decode("abc"), "abc");
        assert_eq!(percent_decode("a%2Fb%3d"), "a/b=");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }

    #[test]
    fn invalid_bodies_are_described_without_their_content() {
        let syntax = describe_bad_body(br#"{"events": [{"body": "secret text"#);
        assert_eq!(syntax, "Eof error at line 1 column 33");
        let shape = describe_bad_body(br#"{"events": "secret text"}"#);
        assert!(shape.starts_with("valid JSON but not a transaction"));
        assert!(!shape.contains("secret") && !syntax.contains("secret"));
    }

    #[test]
    fn ephemeral_events_are_read_from_either_key() {
        let stable = br#"{"events":[],"ephemeral":[{"type":"m.typing"}]}"#;
        assert_eq!(ephemeral_of(stable).len(), 1);
        let unstable = br#"{"events":[],"de.sorunome.msc2409.ephemeral":[{"type":"m.receipt"},{"type":"m.typing"}]}"#;
        assert_eq!(ephemeral_of(unstable).len(), 2);
        assert!(ephemeral_of(br#"{"events":[]}"#).is_empty());
        assert!(ephemeral_of(b"not json").is_empty());
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
