//! The client-server API as the appservice uses it: ruma request types sent over reqwest with the
//! as_token, acting as the bot or a ghost through `?user_id=` (identity assertion). Rate limits
//! (429) and server errors (5xx) are retried with backoff, honouring `retry_after_ms`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::account::register;
use ruma::api::client::account::register::LoginType;
use ruma::api::client::appservice::request_ping;
use ruma::api::client::discovery::get_capabilities;
use ruma::api::client::discovery::get_supported_versions;
use ruma::api::client::membership::{invite_user, join_room_by_id, joined_members, leave_room};
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::profile::{get_profile_field, set_profile_field};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::create_room::{self, RoomPowerLevelsContentOverride, v3::RoomPreset};
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::send_state_event;
use ruma::api::path_builder::PathBuilder;
use ruma::api::{
    AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt,
    SupportedVersions,
};
use ruma::events::AnyTimelineEvent;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::profile::{ProfileFieldName, ProfileFieldValue};
use ruma::room::RoomType;
use ruma::serde::Raw;
use ruma::{
    EventId, Int, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, TransactionId,
    UserId, int,
};
use serde_json::value::to_raw_value;
use tracing::{debug, warn};

use crate::config::Secret;
use crate::core::{MatrixApi, MatrixError, NewRoom, NewState};

/// How often and how long to retry a request that failed with 429, 5xx or a transport error.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The appservice's client-server API client.
pub struct MatrixClient {
    http: reqwest::Client,
    base: String,
    as_token: Secret,
    versions: SupportedVersions,
    retry: RetryPolicy,
}

impl MatrixClient {
    /// Connects: asks the homeserver which spec versions it supports (retrying while it is
    /// unreachable, per `retry`).
    pub async fn connect(
        base: &str,
        as_token: Secret,
        retry: RetryPolicy,
    ) -> Result<Self, MatrixError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("interop-bridge/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| MatrixError::Transport(e.to_string()))?;
        let mut client = Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            as_token,
            versions: SupportedVersions::from_parts(&["v1.1".to_owned()], &Default::default()),
            retry,
        };
        let request = get_supported_versions::Request::new();
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&client.base, SendAccessToken::None, ())
            .map_err(|e| MatrixError::Protocol(e.to_string()))?;
        let response: get_supported_versions::Response = client.execute(http_request).await?;
        client.versions =
            SupportedVersions::from_parts(&response.versions, &response.unstable_features);
        Ok(client)
    }

    /// Asks the homeserver to ping the appservice (`POST /_matrix/client/v1/appservice/{id}/ping`):
    /// proves both directions work. Returns the round trip in milliseconds.
    pub async fn ping_appservice(&self, appservice_id: &str) -> Result<u64, MatrixError> {
        let request = request_ping::v1::Request::new(appservice_id.to_owned());
        let response = self.send(request, None).await?;
        Ok(response.duration.as_millis() as u64)
    }

    /// Sends `request`, as `user` when given (identity assertion), else as the bot.
    pub async fn send<R>(
        &self,
        request: R,
        user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequestAppserviceExt,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let identity = match user {
            Some(user) => AppserviceUserIdentity::new(user),
            None => AppserviceUserIdentity::default(),
        };
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base,
                SendAccessToken::Appservice(self.as_token.expose()),
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| MatrixError::Protocol(e.to_string()))?;
        self.execute(http_request).await
    }

    async fn execute<T: IncomingResponse>(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<T, MatrixError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts.max(1) {
            let last = attempt >= self.retry.attempts;
            let req = http::Request::from_parts(parts.clone(), body.clone());
            let req = reqwest::Request::try_from(req)
                .map_err(|e| MatrixError::Protocol(e.to_string()))?;
            let failure = match self.http.execute(req).await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| MatrixError::Transport(e.without_url().to_string()))?;
                    if status.is_success() {
                        let mut out = http::Response::new(bytes.to_vec());
                        *out.status_mut() = status;
                        *out.headers_mut() = headers;
                        return T::try_from_http_response(out)
                            .map_err(|e| MatrixError::Protocol(e.to_string()));
                    }
                    let error = api_error(status.as_u16(), &bytes);
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    if !retryable || last {
                        return Err(error);
                    }
                    if let Some(wait) = retry_after(&bytes, &headers) {
                        delay = wait.min(Duration::from_secs(60));
                    }
                    error
                }
                Err(e) if last => return Err(MatrixError::Transport(e.without_url().to_string())),
                Err(e) => MatrixError::Transport(e.without_url().to_string()),
            };
            warn!(%path, attempt, %failure, retry_in_ms = delay.as_millis() as u64, "homeserver request failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
        Err(MatrixError::Transport("no attempt made".into()))
    }
}

fn api_error(status: u16, body: &[u8]) -> MatrixError {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let errcode = Some(field("errcode"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "M_UNKNOWN".into());
    let message: String = field("error").chars().take(300).collect();
    MatrixError::Api {
        status,
        errcode,
        message,
    }
}

fn retry_after(body: &[u8], headers: &http::HeaderMap) -> Option<Duration> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(ms) = json
        .as_ref()
        .and_then(|j| j.get("retry_after_ms"))
        .and_then(|v| v.as_u64())
    {
        return Some(Duration::from_millis(ms));
    }
    let secs = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs))
}

#[async_trait]
impl MatrixApi for MatrixClient {
    async fn ensure_registered(&self, localpart: &str) -> Result<(), MatrixError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send(request, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {
                debug!(localpart, "already registered");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn join_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.send(
            join_room_by_id::v3::Request::new(room.to_owned()),
            Some(user),
        )
        .await?;
        Ok(())
    }

    async fn send_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<OwnedEventId, MatrixError> {
        let request =
            send_message_event::v3::Request::new(room.to_owned(), txn_id.to_owned(), content)
                .map_err(|e| MatrixError::Protocol(e.to_string()))?;
        Ok(self.send(request, Some(user)).await?.event_id)
    }

    async fn display_name(&self, user: &UserId) -> Result<Option<String>, MatrixError> {
        let request =
            get_profile_field::v3::Request::new(user.to_owned(), ProfileFieldName::DisplayName);
        match self.send(request, Some(user)).await {
            Ok(response) => Ok(match response.value {
                Some(ProfileFieldValue::DisplayName(name)) => Some(name),
                _ => None,
            }),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        let value = ProfileFieldValue::DisplayName(name.to_owned());
        self.send(
            set_profile_field::v3::Request::new(user.to_owned(), value),
            Some(user),
        )
        .await?;
        Ok(())
    }

    async fn create_room(
        &self,
        creator: &UserId,
        room: &NewRoom,
    ) -> Result<OwnedRoomId, MatrixError> {
        // The power levels depend on the room version: from version 12 on, the creator (and, with
        // `trusted_private_chat`, the invitees) are privileged creators and must not be listed.
        let capabilities = self
            .send(get_capabilities::v3::Request::new(), Some(creator))
            .await?;
        let version = capabilities.capabilities.room_versions.default;
        let privileged = privileged_creators(&version);

        let mut request = create_room::v3::Request::new();
        request.preset = Some(if room.is_direct {
            RoomPreset::TrustedPrivateChat
        } else {
            RoomPreset::PrivateChat
        });
        request.is_direct = room.is_direct;
        request.invite = room.invite.clone();
        request.name = room.name.clone();
        request.topic = room.topic.clone();
        if room.space {
            let mut creation = create_room::v3::CreationContent::new();
            creation.room_type = Some(RoomType::Space);
            request.creation_content = Some(Raw::new(&creation).map_err(protocol)?);
        }
        request.initial_state = room
            .initial_state
            .iter()
            .map(|state| {
                let event = serde_json::json!({
                    "type": state.event_type,
                    "state_key": state.state_key,
                    "content": state.content,
                });
                to_raw_value(&event).map(Raw::from_json).map_err(protocol)
            })
            .collect::<Result<_, _>>()?;
        let users = power_level_users(creator, room, privileged);
        if !users.is_empty() {
            let mut levels = RoomPowerLevelsContentOverride::new();
            levels.users = users;
            request.power_level_content_override = Some(Raw::new(&levels).map_err(protocol)?);
        }
        request.room_version = Some(version.clone());

        let room_id = self.send(request, Some(creator)).await?.room_id;
        debug!(
            %creator, %room_id, room_version = %version, space = room.space,
            direct = room.is_direct, invited = room.invite.len(),
            initial_state = room.initial_state.len(), "room created"
        );
        Ok(room_id)
    }

    async fn invite(
        &self,
        user: &UserId,
        room: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let mut recipient = invite_user::v3::InviteUserId::new(invitee.to_owned());
        recipient.reason = reason.map(str::to_owned);
        let request = invite_user::v3::Request::new(room.to_owned(), recipient.into());
        match self.send(request, Some(user)).await {
            Ok(_) => Ok(()),
            Err(e) if is_already_member(&e) => {
                debug!(%room, %invitee, errcode = e.errcode(), "already in the room");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn leave_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        let request = leave_room::v3::Request::new(room.to_owned());
        match self.send(request, Some(user)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_member(&e) => {
                debug!(%user, %room, errcode = e.errcode(), "not in the room");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn send_state(
        &self,
        user: &UserId,
        room: &RoomId,
        state: &NewState,
    ) -> Result<OwnedEventId, MatrixError> {
        let body = to_raw_value(&state.content)
            .map(Raw::from_json)
            .map_err(protocol)?;
        let request = send_state_event::v3::Request::new_raw(
            room.to_owned(),
            state.event_type.as_str().into(),
            state.state_key.clone(),
            body,
        );
        let event_id = self.send(request, Some(user)).await?.event_id;
        debug!(%room, event_type = %state.event_type, %event_id, "state sent");
        Ok(event_id)
    }

    async fn send_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let body = to_raw_value(content)
            .map(Raw::from_json)
            .map_err(protocol)?;
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.to_owned(),
            event_type.into(),
            body,
        );
        let event_id = self.send(request, Some(user)).await?.event_id;
        debug!(%room, event_type, %event_id, "event sent");
        Ok(event_id)
    }

    async fn redact(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
        txn_id: &TransactionId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let mut request =
            redact_event::v3::Request::new(room.to_owned(), event.to_owned(), txn_id.to_owned());
        request.reason = reason.map(str::to_owned);
        self.send(request, Some(user)).await?;
        debug!(%room, %event, "event redacted");
        Ok(())
    }

    async fn joined_members(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Vec<OwnedUserId>, MatrixError> {
        let request = joined_members::v3::Request::new(room.to_owned());
        let response = self.send(request, Some(user)).await?;
        Ok(response.joined.into_keys().collect())
    }

    async fn room_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        let request = get_room_event::v3::Request::new(room.to_owned(), event.to_owned());
        Ok(self.send(request, Some(user)).await?.event)
    }

    async fn recent_events(
        &self,
        user: &UserId,
        room: &RoomId,
        limit: u32,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        let mut request = get_message_events::v3::Request::backward(room.to_owned());
        request.limit = limit.into();
        let mut chunk = self.send(request, Some(user)).await?.chunk;
        chunk.reverse();
        Ok(chunk)
    }
}

fn protocol(e: serde_json::Error) -> MatrixError {
    MatrixError::Protocol(e.to_string())
}

/// Whether rooms of `version` treat their creators as privileged (room version 12 on, MSC4289):
/// they then have unlimited power and must not appear in the power levels' `users`. A version
/// ruma does not know is taken to be a newer one, which keeps that rule.
fn privileged_creators(version: &RoomVersionId) -> bool {
    version
        .rules()
        .is_none_or(|rules| rules.authorization.explicitly_privilege_room_creators)
}

/// The `users` of a new room's power levels: `room.admins` at 100, and the creator too unless
/// `privileged` (see [`privileged_creators`]). A direct room (preset `trusted_private_chat`) gives
/// its invitees the creator's power, as the preset does by itself: at 100, or as additional
/// privileged creators, who are then left out like the creator. Empty when nothing needs setting.
fn power_level_users(
    creator: &UserId,
    room: &NewRoom,
    privileged: bool,
) -> BTreeMap<OwnedUserId, Int> {
    let mut creators: Vec<&UserId> = vec![creator];
    if room.is_direct {
        creators.extend(room.invite.iter().map(|u| &**u));
    }
    let admins = room.admins.iter().map(|u| &**u);
    let top: Vec<&UserId> = if privileged {
        admins.filter(|u| !creators.contains(u)).collect()
    } else {
        creators.into_iter().chain(admins).collect()
    };
    top.into_iter().map(|u| (u.to_owned(), int!(100))).collect()
}

/// An invite failed because the invitee is already in the room: Synapse answers 403 `M_FORBIDDEN`
/// "… is already in the room." (`M_ALREADY_JOINED` under MSC3848). Inviting someone already
/// invited is no error there.
fn is_already_member(e: &MatrixError) -> bool {
    let MatrixError::Api {
        status: 403,
        errcode,
        message,
    } = e
    else {
        return false;
    };
    let message = message.to_lowercase();
    errcode == "M_ALREADY_JOINED"
        || (errcode == "M_FORBIDDEN"
            && (message.contains("already in the room")
                || message.contains("already joined")
                || message.contains("already invited")))
}

/// A leave failed because the user is not in the room: Synapse answers 403 `M_FORBIDDEN`
/// "… not in room …" (`M_NOT_JOINED` under MSC3848) when the user never was a member, and 404
/// "Not a known room" for a room this server is not in.
fn is_not_member(e: &MatrixError) -> bool {
    let MatrixError::Api {
        status,
        errcode,
        message,
    } = e
    else {
        return false;
    };
    let message = message.to_lowercase();
    match status {
        403 => {
            errcode == "M_NOT_JOINED"
                || (errcode == "M_FORBIDDEN"
                    && (message.contains("not in room") || message.contains("not in the room")))
        }
        404 => {
            errcode == "M_NOT_FOUND"
                || message.contains("not a known room")
                || message.contains("not in room")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! Retry behaviour against an in-process fake homeserver: Synapse in the test world has its
    //! rate limits raised and does not fail on purpose, so it cannot produce these cases.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    /// Serves `/versions`, and answers every other request with `script` in turn (the last one
    /// repeats). Returns the base URL and the hit counter (`/versions` not counted).
    async fn fake(script: Vec<(u16, serde_json::Value)>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new()
            .route(
                "/_matrix/client/versions",
                get(|| async { axum::Json(json!({"versions": ["v1.11"]})) }),
            )
            .fallback(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = script[n.min(script.len() - 1)].clone();
                async move {
                    (
                        StatusCode::from_u16(status).expect("status"),
                        axum::Json(body),
                    )
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, hits)
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        }
    }

    async fn join(base: &str) -> Result<(), MatrixError> {
        let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
        client
            .join_room(
                ruma::user_id!("@bot:hs.example"),
                ruma::room_id!("!r:hs.example"),
            )
            .await
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried() {
        let ok = (200, json!({"room_id": "!r:hs.example"}));
        let limited = (
            429,
            json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 30}),
        );
        let (base, hits) = fake(vec![limited, (502, json!({})), ok]).await;
        join(&base).await.expect("third attempt succeeds");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn retry_after_comes_from_the_body_then_the_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            retry_after(br#"{"retry_after_ms": 1500}"#, &headers),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(b"{}", &headers), None);
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after(b"{}", &headers), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(b"<html>busy</html>", &headers),
            Some(Duration::from_secs(3))
        );
    }

    #[tokio::test]
    async fn invalid_requests_are_not_retried_and_keep_the_error_code() {
        let (base, hits) = fake(vec![(
            403,
            json!({"errcode": "M_FORBIDDEN", "error": "not invited"}),
        )])
        .await;
        let err = join(&base).await.expect_err("forbidden");
        assert_eq!(
            err,
            MatrixError::Api {
                status: 403,
                errcode: "M_FORBIDDEN".into(),
                message: "not invited".into()
            }
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let (base, hits) = fake(vec![(500, json!({"errcode": "M_UNKNOWN"}))]).await;
        let err = join(&base).await.expect_err("always failing");
        assert_eq!(err.errcode(), Some("M_UNKNOWN"));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn invalid_unreachable_homeserver_is_a_transport_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = join(&format!("http://127.0.0.1:{port}"))
            .await
            .expect_err("unreachable");
        assert!(matches!(err, MatrixError::Transport(_)), "{err:?}");
    }

    fn forbidden(message: &str) -> (u16, serde_json::Value) {
        (403, json!({"errcode": "M_FORBIDDEN", "error": message}))
    }

    async fn invite(base: &str) -> Result<(), MatrixError> {
        let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
        let (bot, room) = (
            ruma::user_id!("@bot:hs.example"),
            ruma::room_id!("!r:hs.example"),
        );
        let invitee = ruma::user_id!("@u:hs.example");
        client.invite(bot, room, invitee, Some("why")).await
    }

    async fn leave(base: &str) -> Result<(), MatrixError> {
        let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
        let (bot, room) = (
            ruma::user_id!("@bot:hs.example"),
            ruma::room_id!("!r:hs.example"),
        );
        client.leave_room(bot, room).await
    }

    #[tokio::test]
    async fn inviting_a_member_succeeds_other_refusals_fail() {
        // Synapse's answer for a joined invitee (tests/matrix_api.rs sees it for real), and the
        // MSC3848 error code.
        for answer in [
            forbidden("@u:hs.example is already in the room."),
            (
                403,
                json!({"errcode": "M_ALREADY_JOINED", "error": "joined"}),
            ),
        ] {
            let (base, _) = fake(vec![answer]).await;
            invite(&base).await.expect("already a member is success");
        }
        for answer in [
            forbidden("You don't have permission to invite users"),
            forbidden("@bot:hs.example not in room !r:hs.example."),
            forbidden("@u:hs.example is banned from the room"),
            (
                404,
                json!({"errcode": "M_NOT_FOUND", "error": "already in the room"}),
            ),
        ] {
            let (base, hits) = fake(vec![answer.clone()]).await;
            let err = invite(&base).await.expect_err("a refusal");
            assert_eq!(err.errcode(), answer.1["errcode"].as_str(), "{answer:?}");
            assert_eq!(hits.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn leaving_a_room_one_is_not_in_succeeds_other_refusals_fail() {
        for answer in [
            forbidden("@bot:hs.example not in room !r:hs.example."),
            (
                403,
                json!({"errcode": "M_NOT_JOINED", "error": "not joined"}),
            ),
            (
                404,
                json!({"errcode": "M_UNKNOWN", "error": "Not a known room"}),
            ),
            (
                404,
                json!({"errcode": "M_NOT_FOUND", "error": "no such room"}),
            ),
        ] {
            let (base, _) = fake(vec![answer]).await;
            leave(&base).await.expect("not a member is success");
        }
        for answer in [
            forbidden("You cannot reject this invite"),
            (400, json!({"errcode": "M_UNKNOWN", "error": "not in room"})),
        ] {
            let (base, _) = fake(vec![answer.clone()]).await;
            let err = leave(&base).await.expect_err("a refusal");
            assert_eq!(err.errcode(), answer.1["errcode"].as_str(), "{answer:?}");
        }
    }

    #[test]
    fn power_levels_list_admins_and_the_creator_unless_creators_are_privileged() {
        let creator = ruma::owned_user_id!("@ghost:hs.example");
        let user = ruma::owned_user_id!("@user:hs.example");
        let admin = ruma::owned_user_id!("@admin:hs.example");
        let users = |room: &NewRoom, privileged| {
            power_level_users(&creator, room, privileged)
                .into_iter()
                .map(|(u, level)| (u.to_string(), i64::from(level)))
                .collect::<Vec<_>>()
        };
        let room = NewRoom {
            invite: vec![user.clone()],
            admins: vec![admin.clone(), creator.clone()],
            ..NewRoom::default()
        };
        // Up to room version 11 the creator is listed (Synapse requires it in an override).
        assert_eq!(
            users(&room, false),
            [(admin.to_string(), 100), (creator.to_string(), 100)]
        );
        // From version 12 on it must not be.
        assert_eq!(users(&room, true), [(admin.to_string(), 100)]);
        // A direct room's invitees share the creator's power, as `trusted_private_chat` says.
        let direct = NewRoom {
            is_direct: true,
            ..room.clone()
        };
        assert_eq!(
            users(&direct, false),
            [
                (admin.to_string(), 100),
                (creator.to_string(), 100),
                (user.to_string(), 100)
            ]
        );
        let direct_admin = NewRoom {
            admins: vec![user.clone()],
            ..direct.clone()
        };
        assert!(users(&direct_admin, true).is_empty());
        assert!(users(&NewRoom::default(), true).is_empty());
        assert!(privileged_creators(&RoomVersionId::V12));
        assert!(!privileged_creators(&RoomVersionId::V11));
        let future = RoomVersionId::try_from("org.example.future").expect("version");
        assert!(privileged_creators(&future));
    }
}
