//! The client-server API as the appservice uses it: ruma request types sent over reqwest with the
//! as_token, acting as the bot or a ghost through `?user_id=` (identity assertion). Rate limits
//! (429) and server errors (5xx) are retried with backoff, honouring `retry_after_ms`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::media::{ByteStream, MediaError};
use async_trait::async_trait;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::account::register;
use ruma::api::client::account::register::LoginType;
use ruma::api::client::appservice::request_ping;
use ruma::api::client::discovery::get_capabilities;
use ruma::api::client::discovery::get_supported_versions;
use ruma::api::client::membership::{
    invite_user, join_room_by_id, joined_members, joined_rooms, leave_room,
};
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::presence::set_presence;
use ruma::api::client::profile::{get_profile_field, set_profile_field};
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::redact::redact_event;
use ruma::api::client::relations::get_relating_events_with_rel_type;
use ruma::api::client::room::create_room::{self, RoomPowerLevelsContentOverride, v3::RoomPreset};
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, send_state_event};
use ruma::api::client::typing::create_typing_event;
use ruma::api::path_builder::PathBuilder;
use ruma::api::{
    AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt,
    SupportedVersions,
};
use ruma::events::room::message::RoomMessageEventContent;
use ruma::events::{AnyTimelineEvent, StateEventType};
use ruma::presence::PresenceState;
use ruma::profile::{ProfileFieldName, ProfileFieldValue};
use ruma::room::RoomType;
use ruma::serde::Raw;
use ruma::{
    EventId, Int, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, TransactionId, UserId, int,
};
use serde_json::value::to_raw_value;
use tracing::{debug, warn};

use crate::config::Secret;
use crate::core::{Availability, MatrixApi, MatrixError, NewRoom, NewState, TXN_FIELD};

/// The field of a room's create event that marks which creation made it (see
/// `MatrixClient::create_once`).
const CREATION_MARK: &str = "org.interop-bridge.creation";

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

/// How many of a room's newest events are searched for a send whose answer was lost.
const RECENT_FOR_LOST_SENDS: u32 = 50;

/// The appservice's client-server API client.
pub struct MatrixClient {
    http: reqwest::Client,
    base: String,
    as_token: Secret,
    versions: SupportedVersions,
    retry: RetryPolicy,
    /// The homeserver's upload limit and when it was read ([`media`]).
    media_limit: std::sync::Mutex<Option<(std::time::Instant, Option<u64>)>>,
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
            media_limit: std::sync::Mutex::new(None),
        };
        let request = get_supported_versions::Request::new();
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&client.base, SendAccessToken::None, ())
            .map_err(|e| MatrixError::Protocol(e.to_string()))?;
        let response: get_supported_versions::Response =
            client.execute(http_request, client.retry.attempts).await?;
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
        self.send_with_identity(request, identity, self.retry.attempts)
            .await
    }

    /// Like [`MatrixClient::send`], one attempt only: for a request that must not be sent
    /// twice blindly (its caller finds out whether a failed attempt took effect).
    async fn send_once<R>(
        &self,
        request: R,
        user: &UserId,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequestAppserviceExt,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        self.send_with_identity(request, AppserviceUserIdentity::new(user), 1)
            .await
    }

    /// Sends `request` as `user`'s `device` (the `device_id` of identity assertion, MSC4326):
    /// what an end-to-end encryption request needs.
    pub async fn send_as_device<R>(
        &self,
        request: R,
        user: &UserId,
        device: &ruma::DeviceId,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequestAppserviceExt,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let mut identity = AppserviceUserIdentity::new(user);
        identity.device_id = Some(device);
        self.send_with_identity(request, identity, self.retry.attempts)
            .await
    }

    async fn send_with_identity<R>(
        &self,
        request: R,
        identity: AppserviceUserIdentity<'_>,
        attempts: u32,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequestAppserviceExt,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base,
                SendAccessToken::Appservice(self.as_token.expose()),
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| MatrixError::Protocol(e.to_string()))?;
        self.execute(http_request, attempts).await
    }

    async fn execute<T: IncomingResponse>(
        &self,
        request: http::Request<Vec<u8>>,
        attempts: u32,
    ) -> Result<T, MatrixError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let mut delay = self.retry.first_delay;
        for attempt in 1..=attempts.max(1) {
            let last = attempt >= attempts;
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
        let content = serde_json::to_value(content).map_err(protocol)?;
        self.send_event(user, room, "m.room.message", txn_id, &content)
            .await
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
        // A mark of this creation in the room's create event, to find the room again when an
        // attempt's answer is lost (a retry would create a second room).
        let mark = format!("{:032x}", rand::random::<u128>());
        let mut creation = serde_json::json!({ CREATION_MARK: mark });
        if room.space {
            creation["type"] = serde_json::json!(RoomType::Space.as_str());
        }
        request.creation_content = Some(Raw::from_json(to_raw_value(&creation).map_err(protocol)?));
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

        let room_id = self.create_once(creator, request, &mark).await?;
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
        let mut content = content.clone();
        if let Some(fields) = content.as_object_mut() {
            fields.insert(TXN_FIELD.into(), txn_id.as_str().into());
        }
        let body = to_raw_value(&content)
            .map(Raw::from_json)
            .map_err(protocol)?;
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.to_owned(),
            event_type.into(),
            body,
        );
        let event_id = self.send_event_once(user, room, txn_id, request).await?;
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

    async fn send_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<(), MatrixError> {
        let request = create_receipt::v3::Request::new(
            room.to_owned(),
            create_receipt::v3::ReceiptType::Read,
            event.to_owned(),
        );
        self.send(request, Some(user)).await?;
        Ok(())
    }

    async fn set_typing(
        &self,
        user: &UserId,
        room: &RoomId,
        timeout: Option<Duration>,
    ) -> Result<(), MatrixError> {
        let state = match timeout {
            Some(timeout) => create_typing_event::v3::Typing::Yes(
                create_typing_event::v3::TypingInfo::new(timeout),
            ),
            None => create_typing_event::v3::Typing::No,
        };
        let request =
            create_typing_event::v3::Request::new(user.to_owned(), room.to_owned(), state);
        self.send(request, Some(user)).await?;
        Ok(())
    }

    async fn set_presence(
        &self,
        user: &UserId,
        availability: Availability,
        status: Option<&str>,
    ) -> Result<(), MatrixError> {
        let state = match availability {
            Availability::Online => PresenceState::Online,
            Availability::Away => PresenceState::Unavailable,
            Availability::Offline => PresenceState::Offline,
        };
        let mut request = set_presence::v3::Request::new(user.to_owned(), state);
        request.status_msg = status.map(str::to_owned);
        self.send(request, Some(user)).await?;
        Ok(())
    }

    async fn annotations(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        let mut request = get_relating_events_with_rel_type::v1::Request::new(
            room.to_owned(),
            event.to_owned(),
            ruma::events::relation::RelationType::Annotation,
        );
        request.limit = Some(ruma::UInt::from(100u32));
        let chunk = self.send(request, Some(user)).await?.chunk;
        Ok(chunk.into_iter().map(Raw::cast_unchecked).collect())
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

    async fn upload_limit(&self) -> Result<Option<u64>, MediaError> {
        MatrixClient::upload_limit(self).await
    }

    async fn download(
        &self,
        user: &UserId,
        mxc: &MxcUri,
        limit: u64,
        stall: Duration,
    ) -> Result<ByteStream, MediaError> {
        self.download_media(user, mxc, limit, stall).await
    }

    async fn upload(
        &self,
        user: &UserId,
        filename: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<OwnedMxcUri, MediaError> {
        self.upload_media(user, filename, content_type, body).await
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

mod media;
mod once;
#[cfg(test)]
mod tests;
