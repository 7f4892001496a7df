//! An in-process Matrix client on matrix-sdk-crypto 0.18 (the version the bridge itself uses),
//! set up the way Element is with "exclude insecure devices" on (MSC4153):
//!
//! - **Receiving**: room events are decrypted with [`DecryptionSettings`] {
//!   `sender_device_trust_requirement`: [`TrustRequirement::CrossSigned`] } — only devices their
//!   owner cross-signed; the same settings go to [`OlmMachine::receive_sync_changes`], which
//!   makes the crate drop to-device messages from devices that are not cross-signed (only
//!   `m.room_key` and the other exception types are kept until their sender can be judged).
//! - **Sending**: room keys are shared with [`EncryptionSettings`] whose `sharing_strategy` is
//!   [`CollectStrategy::IdentityBasedStrategy`] — only devices signed by their owner's identity.
//! - **Its own device**: at start it registers its user (Synapse's shared-secret admin API),
//!   logs in with the password, uploads its device keys, then bootstraps its own cross-signing
//!   identity ([`OlmMachine::bootstrap_cross_signing`]: master, self-signing and user-signing keys
//!   uploaded, answering user-interactive auth with `m.login.password` if Synapse asks) and signs
//!   its device with it, as Element does at first login; otherwise nobody following MSC4153
//!   would send it a key.
//!
//! It trusts nobody by hand: a device cross-signed by an identity the peer never verified shows
//! [`VerificationState::Unverified`]`(`[`VerificationLevel::UnverifiedIdentity`]`)`, which the
//! settings above accept. State is in memory ([`OlmMachine::new`]).
//!
//! There is no background task: every waiting method syncs (`/sync` with the `since` token,
//! timeout ≤ 1 s) and feeds the machine — to-device events, device-list changes, one-time-key
//! counts, unused fallback key types — then sends its outgoing requests (key uploads, key
//! queries for the members of its rooms, to-device messages) and marks them sent, as
//! `src/matrix/crypto.rs` does for the bridge. Timeouts panic with what was seen.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use matrix_sdk_crypto::types::events::room::encrypted::EncryptedEvent;
use matrix_sdk_crypto::types::requests::{
    AnyIncomingResponse, AnyOutgoingRequest, ToDeviceRequest,
};
use matrix_sdk_crypto::{DecryptionSettings, EncryptionSettings, EncryptionSyncChanges};
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::keys::{get_keys, upload_signing_keys};
use ruma::api::client::sync::sync_events::DeviceLists;
use ruma::api::client::to_device::send_event_to_device;
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingResponse, OutgoingRequest, SupportedVersions};
use ruma::events::room::encryption::RoomEncryptionEventContent;
use ruma::events::room::history_visibility::HistoryVisibility;
use ruma::events::{AnyMessageLikeEventContent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::{OneTimeKeyAlgorithm, OwnedUserId, RoomId, TransactionId, UInt, UserId};
use serde_json::{Value, json};

pub use matrix_sdk_common::deserialized_responses::{
    DeviceLinkProblem, EncryptionInfo, VerificationLevel, VerificationState,
};
pub use matrix_sdk_crypto::{CollectStrategy, Device, OlmMachine, TrustRequirement};

use crate::World;

/// The trust required of a sender's device to decrypt (room events and to-device messages).
pub const TRUST: TrustRequirement = TrustRequirement::CrossSigned;
/// Whose devices get our room keys.
pub const SHARING: CollectStrategy = CollectStrategy::IdentityBasedStrategy;

fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TRUST,
    }
}

/// A message (`m.room.message`, decrypted if it came encrypted) of a room.
#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: String,
    pub sender: String,
    pub body: String,
    /// The decrypted event's encryption info (sender device, verification state); `None` if the
    /// event came in plaintext.
    pub encryption_info: Option<EncryptionInfo>,
}

/// An encrypted event that has not been decrypted (yet), and the crate's latest reason.
#[derive(Clone, Debug)]
pub struct Undecryptable {
    pub event_id: String,
    pub sender: String,
    pub error: String,
}

#[derive(Default)]
struct Room {
    /// Message and encrypted events, in timeline order (with `room_id` added).
    events: Vec<Value>,
    seen: HashSet<String>,
    /// Per sender: where in `events` its next message is looked for.
    cursor: HashMap<String, usize>,
    decrypted: HashMap<String, Option<Received>>,
    /// Why events that do not decrypt (yet) failed, by event id.
    errors: HashMap<String, String>,
    encryption: Option<RoomEncryptionEventContent>,
}

pub struct SdkPeer {
    pub user_id: String,
    pub device_id: String,
    /// The peer's crypto state machine (in memory), to ask it about devices and identities.
    pub machine: OlmMachine,
    user: OwnedUserId,
    password: String,
    hs: Http,
    versions: SupportedVersions,
    since: Option<String>,
    rooms: HashMap<String, Room>,
    /// Pending invites: (room, inviter).
    invites: Vec<(String, String)>,
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SdkPeer {
    /// Registers `user` (password `pw-<user>`), logs in, uploads its device keys, bootstraps
    /// its cross-signing identity and signs its device with it, and syncs once.
    pub async fn start(world: &World, user: &str) -> Self {
        let mut hs = Http {
            client: reqwest::Client::new(),
            base: world.synapse_url(),
            token: None,
        };
        let password = format!("pw-{user}");
        register(&hs, world.var("SYNAPSE_SHARED_SECRET"), user, &password).await;
        let login = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": "sdk-peer (matrix-sdk-crypto 0.18)",
        });
        let (status, out) = hs
            .call("POST", "/_matrix/client/v3/login", Some(login))
            .await;
        assert_eq!(status, 200, "login {user}: {out}");
        let field = |k: &str| out[k].as_str().expect("login answer").to_owned();
        let (user_id, device_id) = (field("user_id"), field("device_id"));
        hs.token = Some(field("access_token"));
        let (_, v) = hs.call("GET", "/_matrix/client/versions", None).await;
        let list: Vec<String> = serde_json::from_value(v["versions"].clone()).expect("versions");
        let unstable = serde_json::from_value(v["unstable_features"].clone()).unwrap_or_default();
        let owned_user: OwnedUserId = user_id.as_str().try_into().expect("user id");
        let machine = OlmMachine::new(&owned_user, device_id.as_str().into()).await;
        let mut peer = Self {
            user_id,
            device_id,
            machine,
            user: owned_user,
            password,
            hs,
            versions: SupportedVersions::from_parts(&list, &unstable),
            since: None,
            rooms: HashMap::new(),
            invites: Vec::new(),
        };
        peer.send_outgoing().await;
        peer.cross_sign().await;
        // Read our own keys back from the server: our device must carry the self-signing
        // key's signature there, as everyone else will see it.
        peer.machine
            .mark_all_tracked_users_as_dirty()
            .await
            .expect("mark users dirty");
        peer.sync_once(0).await;
        let own = peer
            .device(&peer.user_id.clone(), &peer.device_id.clone())
            .await;
        assert!(
            own.as_ref().is_some_and(Device::is_cross_signed_by_owner),
            "{}'s own device is not cross-signed: {own:?}",
            peer.user_id
        );
        peer
    }

    /// Element's first login: a new cross-signing identity, uploaded, and our device signed.
    async fn cross_sign(&mut self) {
        let requests = self
            .machine
            .bootstrap_cross_signing(false)
            .await
            .expect("bootstrap cross-signing");
        if let Some(upload) = &requests.upload_keys_req
            && let AnyOutgoingRequest::KeysUpload(keys) = upload.request()
        {
            let response = self.send(keys.clone()).await;
            self.machine
                .mark_request_as_sent(upload.request_id(), &response)
                .await
                .expect("mark keys upload");
        }
        let keys = &requests.upload_signing_keys_req;
        let mut body = json!({});
        for (name, key) in [
            ("master_key", &keys.master_key),
            ("self_signing_key", &keys.self_signing_key),
            ("user_signing_key", &keys.user_signing_key),
        ] {
            if let Some(key) = key {
                body[name] = serde_json::to_value(key).expect("key json");
            }
        }
        let path = "/_matrix/client/v3/keys/device_signing/upload";
        let (mut status, mut out) = self.hs.call("POST", path, Some(body.clone())).await;
        if status == 401 && out.get("flows").is_some() {
            // Not the first upload of this user (MSC3967 did not apply): authenticate.
            body["auth"] = json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.user_id},
                "password": self.password,
                "session": out["session"],
            });
            (status, out) = self.hs.call("POST", path, Some(body)).await;
        }
        assert_eq!(status, 200, "cross-signing keys upload: {out}");
        self.machine
            .mark_request_as_sent(
                &TransactionId::new(),
                AnyIncomingResponse::SigningKeysUpload(&upload_signing_keys::v3::Response::new()),
            )
            .await
            .expect("mark signing keys upload");
        let signatures = self.send(requests.upload_signatures_req).await;
        assert!(
            signatures.failures.is_empty(),
            "signature upload failures: {:?}",
            signatures.failures
        );
    }

    /// Sends a ruma request with our token; panics unless it succeeds.
    async fn send<R>(&self, request: R) -> R::IncomingResponse
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let request = request
            .try_into_http_request::<Vec<u8>>(
                &self.hs.base,
                SendAccessToken::IfRequired(self.hs.token.as_deref().unwrap_or_default()),
                Cow::Borrowed(&self.versions),
            )
            .expect("build request");
        let path = request.uri().path().to_owned();
        let request = reqwest::Request::try_from(request).expect("reqwest request");
        let response = self
            .hs
            .client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let body = response.bytes().await.expect("response body").to_vec();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        R::IncomingResponse::try_from_http_response(out)
            .unwrap_or_else(|e| panic!("{path}: bad response: {e}"))
    }

    /// Sends the machine's outgoing requests and marks them sent, until it has none left.
    async fn send_outgoing(&self) {
        for _round in 0..8 {
            let requests = self.machine.outgoing_requests().await.expect("outgoing");
            if requests.is_empty() {
                return;
            }
            for request in &requests {
                let id = request.request_id();
                macro_rules! send_and_mark {
                    ($r:expr) => {{
                        let response = self.send($r).await;
                        self.machine.mark_request_as_sent(id, &response).await
                    }};
                }
                match request.request() {
                    AnyOutgoingRequest::KeysUpload(r) => send_and_mark!(r.clone()),
                    AnyOutgoingRequest::KeysQuery(q) => {
                        let mut r = get_keys::v3::Request::new();
                        r.device_keys = q.device_keys.clone();
                        r.timeout = q.timeout;
                        send_and_mark!(r)
                    }
                    AnyOutgoingRequest::KeysClaim(r) => send_and_mark!(r.clone()),
                    AnyOutgoingRequest::SignatureUpload(r) => send_and_mark!(r.clone()),
                    AnyOutgoingRequest::ToDeviceRequest(r) => {
                        self.send_to_device(r).await;
                        Ok(())
                    }
                    // In-room verification, which this peer never starts.
                    AnyOutgoingRequest::RoomMessage(_) => Ok(()),
                }
                .expect("mark request as sent");
            }
        }
    }

    async fn send_to_device(&self, request: &ToDeviceRequest) {
        let send = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        let response = self.send(send).await;
        self.machine
            .mark_request_as_sent(&request.txn_id, &response)
            .await
            .expect("mark to-device sent");
    }

    /// One `/sync` (waiting up to `timeout_ms`), fed to the machine; then the machine's
    /// requests are sent.
    pub async fn sync_once(&mut self, timeout_ms: u64) {
        let filter = r#"{"room":{"timeline":{"limit":100}}}"#;
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            enc(filter)
        );
        if let Some(since) = &self.since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        let (status, sync) = self.hs.call("GET", &path, None).await;
        assert_eq!(status, 200, "sync: {sync}");
        let to_device: Vec<Raw<AnyToDeviceEvent>> =
            serde_json::from_value(sync["to_device"]["events"].clone()).unwrap_or_default();
        let lists: DeviceLists =
            serde_json::from_value(sync["device_lists"].clone()).unwrap_or_default();
        let counts: BTreeMap<OneTimeKeyAlgorithm, UInt> =
            serde_json::from_value(sync["device_one_time_keys_count"].clone()).unwrap_or_default();
        let fallback: Option<Vec<OneTimeKeyAlgorithm>> =
            serde_json::from_value(sync["device_unused_fallback_key_types"].clone()).ok();
        let next = sync["next_batch"].as_str().expect("next_batch").to_owned();
        let changes = EncryptionSyncChanges {
            to_device_events: to_device,
            changed_devices: &lists,
            one_time_keys_counts: &counts,
            unused_fallback_keys: fallback.as_deref(),
            next_batch_token: Some(next.clone()),
        };
        self.machine
            .receive_sync_changes(changes, &decryption_settings())
            .await
            .expect("receive sync changes");
        self.since = Some(next);

        let mut members: Vec<OwnedUserId> = vec![self.user.clone()];
        let empty = serde_json::Map::new();
        for (room_id, room) in sync["rooms"]["join"].as_object().unwrap_or(&empty) {
            let entry = self.rooms.entry(room_id.clone()).or_default();
            let state = room["state"]["events"].as_array().into_iter().flatten();
            let timeline = room["timeline"]["events"].as_array().into_iter().flatten();
            for event in state.chain(timeline) {
                match event["type"].as_str().unwrap_or_default() {
                    "m.room.member" => {
                        let joined = matches!(
                            event["content"]["membership"].as_str(),
                            Some("join" | "invite")
                        );
                        if let (true, Some(Ok(user))) =
                            (joined, event["state_key"].as_str().map(UserId::parse))
                        {
                            members.push(user);
                        }
                    }
                    "m.room.encryption" => {
                        entry.encryption = serde_json::from_value(event["content"].clone()).ok();
                    }
                    "m.room.message" | "m.room.encrypted" => {
                        let id = event["event_id"].as_str().unwrap_or_default().to_owned();
                        if entry.seen.insert(id) {
                            let mut event = event.clone();
                            event["room_id"] = json!(room_id);
                            entry.events.push(event);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (room_id, room) in sync["rooms"]["invite"].as_object().unwrap_or(&empty) {
            let ours = room["invite_state"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == self.user_id.as_str());
            if let Some(inviter) = ours.and_then(|e| e["sender"].as_str())
                && !self.invites.iter().any(|(r, _)| r == room_id)
            {
                self.invites.push((room_id.clone(), inviter.to_owned()));
            }
        }
        // Element tracks the members of its rooms: their devices are queried and kept current.
        self.machine
            .update_tracked_users(members.iter().map(|u| &**u))
            .await
            .expect("track users");
        self.send_outgoing().await;
    }

    /// Creates a DM with `invite` (Element's way: `trusted_private_chat`, `is_direct`, and with
    /// `encrypted` an `m.room.encryption` in the initial state); returns the room id.
    pub async fn create_dm(&mut self, invite: &str, encrypted: bool) -> String {
        let mut body =
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [invite]});
        let content = json!({"algorithm": "m.megolm.v1.aes-sha2"});
        if encrypted {
            body["initial_state"] =
                json!([{"type": "m.room.encryption", "state_key": "", "content": content}]);
        }
        let (status, out) = self
            .hs
            .call("POST", "/_matrix/client/v3/createRoom", Some(body))
            .await;
        assert_eq!(status, 200, "createRoom: {out}");
        let room = out["room_id"].as_str().expect("room id").to_owned();
        if encrypted {
            self.rooms.entry(room.clone()).or_default().encryption =
                Some(serde_json::from_value(content).expect("encryption content"));
        }
        room
    }

    /// Joins `room` and syncs.
    pub async fn join(&mut self, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        let (status, out) = self.hs.call("POST", &path, Some(json!({}))).await;
        assert_eq!(status, 200, "join {room}: {out}");
        self.invites.retain(|(r, _)| r != room);
        self.sync_once(0).await;
    }

    /// Waits for an invite from `inviter`; returns the room id (not joined yet).
    pub async fn wait_invite(&mut self, inviter: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(i) = self.invites.iter().position(|(_, from)| from == inviter) {
                return self.invites.remove(i).0;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no invite from {inviter} within {limit:?} (invites: {:?})",
                self.user_id,
                self.invites
            );
            self.sync_once(1000).await;
        }
    }

    /// The joined and invited members of `room`.
    async fn members(&self, room: &str) -> Vec<OwnedUserId> {
        let path = format!("/_matrix/client/v3/rooms/{}/members", enc(room));
        let (status, out) = self.hs.call("GET", &path, None).await;
        assert_eq!(status, 200, "members of {room}: {out}");
        out["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| matches!(e["content"]["membership"].as_str(), Some("join" | "invite")))
            .filter_map(|e| UserId::parse(e["state_key"].as_str()?).ok())
            .collect()
    }

    /// Sends `text` (`m.text`) to `room`, encrypted if the room is: the members' (joined and
    /// invited) devices are queried, Olm sessions claimed, and the room key shared with
    /// [`SHARING`]. Returns the event id.
    pub async fn send_text(&mut self, room: &str, text: &str) -> String {
        self.sync_once(0).await;
        let content = json!({"msgtype": "m.text", "body": text});
        // Known from `create_dm` or from the room's state in a sync (`join` syncs).
        let encryption = self.rooms.get(room).and_then(|r| r.encryption.clone());
        let (event_type, content) = match encryption {
            None => ("m.room.message", content),
            Some(settings) => {
                let room_id = <&RoomId>::try_from(room).expect("room id");
                let members = self.members(room).await;
                self.machine
                    .update_tracked_users(members.iter().map(|u| &**u))
                    .await
                    .expect("track members");
                self.send_outgoing().await;
                if let Some((id, claim)) = self
                    .machine
                    .get_missing_sessions(members.iter().map(|u| &**u))
                    .await
                    .expect("missing sessions")
                {
                    let response = self.send(claim).await;
                    self.machine
                        .mark_request_as_sent(&id, &response)
                        .await
                        .expect("mark claim");
                }
                let settings =
                    EncryptionSettings::new(settings, HistoryVisibility::Shared, SHARING);
                let shares = self
                    .machine
                    .share_room_key(room_id, members.iter().map(|u| &**u), settings)
                    .await
                    .unwrap_or_else(|e| panic!("share the room key of {room}: {e}"));
                for share in shares {
                    self.send_to_device(&share).await;
                }
                let raw: Raw<AnyMessageLikeEventContent> =
                    Raw::new(&content).expect("content").cast_unchecked();
                let encrypted = self
                    .machine
                    .encrypt_room_event_raw(room_id, "m.room.message", &raw)
                    .await
                    .unwrap_or_else(|e| panic!("encrypt for {room}: {e}"));
                let value = serde_json::to_value(&encrypted.content).expect("encrypted json");
                ("m.room.encrypted", value)
            }
        };
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{event_type}/{}",
            enc(room),
            TransactionId::new()
        );
        let (status, out) = self.hs.call("PUT", &path, Some(content)).await;
        assert_eq!(status, 200, "send to {room}: {out}");
        out["event_id"].as_str().expect("event id").to_owned()
    }

    /// Decrypts (or reads) one stored event; `None` in the result: not a message.
    async fn read(&self, event: &Value) -> Result<Option<Received>, String> {
        let (decrypted, info) = if event["type"] == "m.room.encrypted" {
            let room = <&RoomId>::try_from(event["room_id"].as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let raw: Raw<EncryptedEvent> =
                serde_json::from_value(event.clone()).map_err(|e| e.to_string())?;
            let out = self
                .machine
                .decrypt_room_event(&raw, room, &decryption_settings())
                .await
                .map_err(|e| format!("{e:?}"))?;
            let value: Value =
                serde_json::from_str(out.event.json().get()).map_err(|e| e.to_string())?;
            (value, Some((*out.encryption_info).clone()))
        } else {
            (event.clone(), None)
        };
        if decrypted["type"] != "m.room.message" {
            return Ok(None);
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(Some(Received {
            event_id: text(&event["event_id"]),
            sender: text(&event["sender"]),
            body: text(&decrypted["content"]["body"]),
            encryption_info: info,
        }))
    }

    /// Waits for the next `count` messages of `sender` in `room` (in timeline order, each
    /// returned once). An event that does not decrypt holds back the ones after it; it is tried
    /// again after every sync (a key or a device may arrive later) and, at `limit`, the panic
    /// says why it failed ([`undecryptable`](Self::undecryptable) lists those events too).
    pub async fn wait_messages(
        &mut self,
        room: &str,
        sender: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let r = self.rooms.entry(room.to_owned()).or_default();
            let start = r.cursor.get(sender).copied().unwrap_or(0);
            let events = r.events[start..].to_vec();
            let (mut got, mut blocked) = (Vec::new(), None);
            for (i, event) in events.iter().enumerate() {
                if event["sender"] != sender {
                    continue;
                }
                let id = event["event_id"].as_str().unwrap_or_default().to_owned();
                let cached = self.rooms[room].decrypted.get(&id).cloned();
                let result = match cached {
                    Some(done) => Ok(done),
                    None => self.read(event).await,
                };
                let r = self.rooms.get_mut(room).expect("room");
                match result {
                    Ok(message) => {
                        r.errors.remove(&id);
                        r.decrypted.insert(id, message.clone());
                        got.extend(message);
                    }
                    Err(error) => {
                        r.errors.insert(id.clone(), error.clone());
                        blocked = Some((id, error));
                        break;
                    }
                }
                if got.len() == count {
                    r.cursor.insert(sender.to_owned(), start + i + 1);
                    return got;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {} of {count} messages from {sender} in {room} within {limit:?}; \
                 held back by {blocked:?}; got {got:#?}",
                self.user_id,
                got.len()
            );
            self.sync_once(1000).await;
        }
    }

    /// The events of `room` that have not been decrypted (yet), with the latest reason.
    pub fn undecryptable(&self, room: &str) -> Vec<Undecryptable> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.events
            .iter()
            .filter_map(|e| {
                let id = e["event_id"].as_str()?;
                Some(Undecryptable {
                    event_id: id.to_owned(),
                    sender: e["sender"].as_str()?.to_owned(),
                    error: r.errors.get(id)?.clone(),
                })
            })
            .collect()
    }

    /// `user`'s `device` as our machine knows it (after a key query if `user` was not tracked):
    /// [`Device::is_cross_signed_by_owner`] and friends answer from our own signature checks.
    pub async fn device(&mut self, user: &str, device: &str) -> Option<Device> {
        let user = UserId::parse(user).expect("user id");
        self.machine
            .update_tracked_users([&*user])
            .await
            .expect("track user");
        self.send_outgoing().await;
        self.machine
            .get_device(&user, device.into(), Some(Duration::from_secs(10)))
            .await
            .expect("get device")
    }

    /// Waits until our machine, querying `user`'s keys afresh each time, knows a device of
    /// `user` cross-signed by its owner ([`Device::is_cross_signed_by_owner`]); returns its id.
    pub async fn wait_cross_signed_device(&mut self, user: &str, limit: Duration) -> String {
        let user = UserId::parse(user).expect("user id");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.machine
                .update_tracked_users([&*user])
                .await
                .expect("track");
            self.machine
                .mark_all_tracked_users_as_dirty()
                .await
                .expect("dirty");
            self.send_outgoing().await;
            let devices = self
                .machine
                .get_user_devices(&user, None)
                .await
                .expect("devices");
            if let Some(device) = devices.devices().find(Device::is_cross_signed_by_owner) {
                return device.device_id().to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user} has no cross-signed device within {limit:?}: {:?}",
                devices.devices().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The homeserver over plain JSON, with our access token once logged in.
struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    /// Status and JSON body of a request to `path` (under the homeserver's base URL).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.parse().expect("method"), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Registers `user` through Synapse's shared-secret admin API (`M_USER_IN_USE` is fine).
async fn register(hs: &Http, secret: &str, user: &str, password: &str) {
    use hmac::{Hmac, Mac};
    let url = "/_synapse/admin/v1/register";
    let (_, nonce) = hs.call("GET", url, None).await;
    let nonce = nonce["nonce"].as_str().expect("nonce").to_owned();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{nonce}\0{user}\0{password}\0notadmin").as_bytes());
    let digest: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = json!({
        "nonce": nonce, "username": user, "password": password, "admin": false, "mac": digest,
    });
    let (status, out) = hs.call("POST", url, Some(body)).await;
    assert!(
        status == 200 || out["errcode"] == "M_USER_IN_USE",
        "register {user}: {status} {out}"
    );
}
