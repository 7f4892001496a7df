//! End-to-bridge encryption on the Matrix side: one `OlmMachine` (matrix-sdk-crypto) per
//! appservice user that takes part in encrypted rooms — the bot and each ghost — each with a
//! device of its own, created through MSC4190 (`PUT /devices/{id}` as the appservice, never
//! `/login`) and cross-signed by that user's own cross-signing identity, so clients that
//! exclude insecure devices (MSC4153) still exchange keys with it.
//!
//! - A device's id is derived from its user id ([`device_id_for`]), so a restart never creates
//!   a new device; its Olm/Megolm state lives in a SQLite crypto store of its own
//!   (`<encryption.store>/<digest of the user id>/`), encrypted at rest when it was created
//!   with `database.key` set ([`at_rest`]).
//! - The machines are fed from appservice transactions ([`Crypto::receive_transaction`]):
//!   to-device events (MSC4203) by recipient device, device-list changes and one-time-key
//!   counts (MSC3202). Their outgoing requests are sent with the appservice token, asserting the
//!   user and the device (`?user_id=…&device_id=…`, the stable MSC4326 names, which Synapse
//!   1.163 accepts).
//! - A machine is opened when needed and dropped after [`IDLE`] unused, so thousands of ghosts
//!   are not thousands of machines in memory.
//!
//! Nothing here logs content or key material: event and device ids only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use matrix_sdk_crypto::types::requests::{
    AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest, ToDeviceRequest,
};
use matrix_sdk_crypto::{
    CollectStrategy, DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, MegolmError,
    OlmMachine, TrustRequirement,
};
use ruma::api::appservice::event::push_events::v1::Request as Transaction;
use ruma::api::client::device::{delete_device, update_device};
use ruma::api::client::keys::{get_keys, upload_signing_keys};
use ruma::api::client::sync::sync_events::DeviceLists;
use ruma::api::client::to_device::send_event_to_device;
use ruma::events::room::history_visibility::HistoryVisibility;
use ruma::events::{AnyMessageLikeEventContent, AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::{OnceCell, watch};
use tracing::{debug, info, warn};

pub mod at_rest;
mod check;
mod rooms;

use super::MatrixClient;
use crate::core::MatrixError;
pub use at_rest::CryptoStores;
use rooms::{MemberCache, RoomEncryption};

/// How long an unused machine stays in memory.
pub const IDLE: Duration = Duration::from_secs(600);
/// The custom value a machine's store holds once its cross-signing keys and the signature of
/// its device were uploaded.
const CROSS_SIGNED: &str = "interop_bridge.cross_signed";
/// The display name of every device the bridge creates.
const DEVICE_NAME: &str = "interop-bridge";

/// Why something could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// The crypto store failed (it names the store error, never key material).
    #[error("crypto store: {0}")]
    Store(String),
    /// The room key of the event did not arrive within the wait.
    #[error("the room key of this message never reached the bridge")]
    MissingKey,
    /// Olm/Megolm refused the event or the operation.
    #[error("{0}")]
    Olm(String),
    /// The homeserver does not give the appservice what encryption needs (the self-check).
    #[error("encryption is not available on this homeserver: {0}")]
    Unavailable(String),
}

fn store_error(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Store(e.to_string())
}

/// One appservice user's device and its state machine.
pub struct Machine {
    olm: OlmMachine,
    user: OwnedUserId,
    device: OwnedDeviceId,
    /// One round of outgoing requests at a time (the crypto crate asks for it: key claims in
    /// particular must not overlap).
    requests: tokio::sync::Mutex<()>,
    /// One room-key share and encryption at a time.
    sending: tokio::sync::Mutex<()>,
    /// When it was last used, in seconds since the `Crypto` started.
    used: AtomicU64,
    /// The one-time key counts and fallback key types last fed to it: Synapse repeats them in
    /// every transaction, and feeding the same again changes nothing but costs a store commit
    /// (which re-derives every one-time public key: most of the bridge's CPU per message).
    fed_counts: StdMutex<Option<KeyCounts>>,
    /// It may hold requests not sent yet: a round of them failed, or a decryption missed its
    /// key (the machine may have queued a key request). A transaction that feeds it nothing
    /// new asks it for requests only then: asking costs store reads (SQLite) per machine and
    /// transaction, and a machine fed nothing has made none since its last round.
    owes: AtomicBool,
}

/// A device's one-time key counts and unused fallback key types, as a transaction has them.
type KeyCounts = (
    BTreeMap<ruma::OneTimeKeyAlgorithm, ruma::UInt>,
    Option<Vec<ruma::OneTimeKeyAlgorithm>>,
);

impl Machine {
    /// The device's id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The device's Ed25519 fingerprint (public).
    pub fn ed25519(&self) -> String {
        self.olm.identity_keys().ed25519.to_base64()
    }
}

/// The machines of the bot and the ghosts, and what the transactions bring for them.
pub struct Crypto {
    client: Arc<MatrixClient>,
    stores: CryptoStores,
    key_wait: Duration,
    started: Instant,
    machines: StdMutex<HashMap<OwnedUserId, Arc<OnceCell<Arc<Machine>>>>>,
    /// Bumped whenever room keys arrive, so decryptions waiting for one try again.
    keys: watch::Sender<u64>,
    rooms: StdMutex<HashMap<OwnedRoomId, RoomEncryption>>,
    /// The rooms' joined and invited members, read once and forgotten at the room's next
    /// membership event ([`Crypto::observe`]), so a send does not ask the homeserver each time.
    members: StdMutex<MemberCache>,
    /// Whose users' machines the appservice owns (the bot and the ghost namespace).
    is_ours: Box<dyn Fn(&UserId) -> bool + Send + Sync>,
    /// What the transactions have shown the homeserver gives us (see [`Crypto::self_check`]).
    seen: watch::Sender<Seen>,
    /// Why encryption cannot work here, once the self-check found out.
    unusable: StdMutex<Option<String>>,
}

/// What the homeserver has shown it sends the appservice.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// One-time-key counts in a transaction (MSC3202).
    key_counts: bool,
    /// The bridge's own probe, a to-device event, in a transaction (MSC4203).
    probe: bool,
}

/// The custom value the bot's store holds once the homeserver check passed.
const HOMESERVER_CHECKED: &str = "interop_bridge.homeserver_checked";
/// The to-device event type of the self-check's probe.
const PROBE: &str = "org.interop-bridge.probe";

impl Crypto {
    /// `is_ours` tells the appservice's users (the bot and the ghosts) from everyone else.
    pub fn new(
        client: Arc<MatrixClient>,
        stores: CryptoStores,
        key_wait: Duration,
        is_ours: impl Fn(&UserId) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        let (keys, _) = watch::channel(0);
        Arc::new(Self {
            client,
            stores,
            key_wait,
            started: Instant::now(),
            machines: StdMutex::new(HashMap::new()),
            keys,
            rooms: StdMutex::new(HashMap::new()),
            members: StdMutex::new(MemberCache::default()),
            is_ours: Box::new(is_ours),
            seen: watch::channel(Seen::default()).0,
            unusable: StdMutex::new(None),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn machines_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<OnceCell<Arc<Machine>>>>> {
        self.machines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the machines unused for [`IDLE`] that nobody holds; call it now and then.
    pub fn drop_idle(&self) -> usize {
        let now = self.now();
        let mut machines = self.machines_lock();
        let before = machines.len();
        machines.retain(|_, cell| {
            let Some(machine) = cell.get() else {
                return true;
            };
            let idle = now.saturating_sub(machine.used.load(Ordering::Relaxed)) >= IDLE.as_secs();
            // Held elsewhere (a send or a decryption in progress): keep it, so no second
            // machine is ever opened on the same store.
            !(idle && Arc::strong_count(cell) == 1 && Arc::strong_count(machine) == 1)
        });
        before - machines.len()
    }

    /// How many machines are in memory.
    pub fn loaded(&self) -> usize {
        self.machines_lock().len()
    }

    /// `user`'s machine, opened (and its device created, keys uploaded, cross-signed) if it is
    /// not in memory.
    pub async fn machine(&self, user: &UserId) -> Result<Arc<Machine>, CryptoError> {
        if let Some(why) = self.unusable() {
            return Err(CryptoError::Unavailable(why));
        }
        let cell = Arc::clone(self.machines_lock().entry(user.to_owned()).or_default());
        let machine = cell.get_or_try_init(|| self.open(user)).await?;
        machine.used.store(self.now(), Ordering::Relaxed);
        Ok(Arc::clone(machine))
    }

    async fn open(&self, user: &UserId) -> Result<Arc<Machine>, CryptoError> {
        let device = device_id_for(user);
        let store = self.stores.open(&store_name(user)).await?;
        let fresh = {
            use matrix_sdk_crypto::store::CryptoStore;
            store.load_account().await.map_err(store_error)?.is_none()
        };
        if fresh {
            self.create_device(user, &device).await?;
        }
        let olm = OlmMachine::with_store(user, &device, store, None)
            .await
            .map_err(store_error)?;
        if !fresh {
            // Device-list changes that came while the machine was not in memory were not
            // seen: query every tracked user again before the next share.
            olm.mark_all_tracked_users_as_dirty()
                .await
                .map_err(store_error)?;
        }
        let machine = Arc::new(Machine {
            olm,
            user: user.to_owned(),
            device,
            requests: tokio::sync::Mutex::new(()),
            sending: tokio::sync::Mutex::new(()),
            used: AtomicU64::new(self.now()),
            fed_counts: StdMutex::new(None),
            owes: AtomicBool::new(false),
        });
        self.send_outgoing(&machine).await?;
        self.cross_sign(&machine).await?;
        info!(user = %user, device = %machine.device, fresh, "crypto device ready");
        Ok(machine)
    }

    /// Creates `device` for `user` (MSC4190). A device of that id left from a lost store is
    /// deleted first, since its old keys could not be replaced.
    async fn create_device(&self, user: &UserId, device: &DeviceId) -> Result<(), CryptoError> {
        let delete = delete_device::v3::Request::new(device.to_owned());
        match self.client.send(delete, Some(user)).await {
            Ok(_) => debug!(user = %user, %device, "no device of that id is left"),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => {}
            Err(e) => debug!(user = %user, %device, error = %e, "device not deleted"),
        }
        let mut create = update_device::v3::Request::new(device.to_owned());
        create.display_name = Some(DEVICE_NAME.to_owned());
        self.client.send(create, Some(user)).await?;
        debug!(user = %user, %device, "device created");
        Ok(())
    }

    /// Gives the machine a cross-signing identity (master, self-signing and user-signing keys)
    /// and signs its device with it, once; uploaded without user-interactive auth, which
    /// Synapse allows an appservice for its users (and anyone for a first upload, MSC3967).
    async fn cross_sign(&self, machine: &Machine) -> Result<(), CryptoError> {
        let store = machine.olm.store();
        if store
            .get_custom_value(CROSS_SIGNED)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Ok(());
        }
        let requests = machine
            .olm
            .bootstrap_cross_signing(false)
            .await
            .map_err(store_error)?;
        if let Some(upload) = requests.upload_keys_req {
            self.send_one(machine, &upload).await?;
        }
        let keys = requests.upload_signing_keys_req;
        let mut upload = upload_signing_keys::v3::Request::new();
        upload.master_key = keys.master_key.map(|k| k.to_raw());
        upload.self_signing_key = keys.self_signing_key.map(|k| k.to_raw());
        upload.user_signing_key = keys.user_signing_key.map(|k| k.to_raw());
        let response = self.send_as(machine, upload).await?;
        let uploaded = AnyIncomingResponse::SigningKeysUpload(&response);
        mark(machine, &ruma::TransactionId::new(), uploaded).await?;
        self.send_as(machine, requests.upload_signatures_req)
            .await?;
        store
            .set_custom_value(CROSS_SIGNED, b"1".to_vec())
            .await
            .map_err(store_error)?;
        info!(user = %machine.user, device = %machine.device, "device cross-signed");
        Ok(())
    }

    /// Sends `request` as the machine's user and device.
    async fn send_as<R>(
        &self,
        machine: &Machine,
        request: R,
    ) -> Result<R::IncomingResponse, CryptoError>
    where
        R: ruma::api::OutgoingRequestAppserviceExt,
        for<'a> R::Authentication: ruma::api::auth_scheme::AuthScheme<
                Input<'a> = ruma::api::auth_scheme::SendAccessToken<'a>,
            >,
        for<'a> R::PathBuilder: ruma::api::path_builder::PathBuilder<
                Input<'a> = std::borrow::Cow<'a, ruma::api::SupportedVersions>,
            >,
    {
        Ok(self
            .client
            .send_as_device(request, &machine.user, &machine.device)
            .await?)
    }

    /// Sends every outgoing request of the machine and reports the answers back to it, until
    /// it has none left.
    async fn send_outgoing(&self, machine: &Machine) -> Result<(), CryptoError> {
        let _one = machine.requests.lock().await;
        let result = self.send_rounds(machine).await;
        machine
            .owes
            .store(!matches!(result, Ok(true)), Ordering::SeqCst);
        result.map(|_| ())
    }

    /// Up to eight rounds of the machine's requests; whether none is left.
    async fn send_rounds(&self, machine: &Machine) -> Result<bool, CryptoError> {
        for _round in 0..8 {
            let requests = machine.olm.outgoing_requests().await.map_err(store_error)?;
            if requests.is_empty() {
                return Ok(true);
            }
            for request in &requests {
                self.send_one(machine, request).await?;
            }
        }
        Ok(false)
    }

    async fn send_one(
        &self,
        machine: &Machine,
        request: &OutgoingRequest,
    ) -> Result<(), CryptoError> {
        let id = request.request_id();
        match request.request() {
            AnyOutgoingRequest::KeysUpload(upload) => {
                let response = self.send_as(machine, upload.clone()).await?;
                mark(machine, id, &response).await?;
            }
            AnyOutgoingRequest::KeysQuery(query) => {
                let mut request = get_keys::v3::Request::new();
                request.device_keys = query.device_keys.clone();
                request.timeout = query.timeout;
                let response = self.send_as(machine, request).await?;
                mark(machine, id, &response).await?;
            }
            AnyOutgoingRequest::KeysClaim(claim) => {
                let response = self.send_as(machine, claim.clone()).await?;
                mark(machine, id, &response).await?;
            }
            AnyOutgoingRequest::ToDeviceRequest(to_device) => {
                self.send_to_device(machine, to_device).await?;
            }
            AnyOutgoingRequest::SignatureUpload(upload) => {
                let response = self.send_as(machine, upload.clone()).await?;
                mark(machine, id, &response).await?;
            }
            AnyOutgoingRequest::RoomMessage(_) => {
                // In-room verification, which the bridge never starts.
                debug!(user = %machine.user, "in-room verification request ignored");
            }
        }
        Ok(())
    }

    async fn send_to_device(
        &self,
        machine: &Machine,
        request: &ToDeviceRequest,
    ) -> Result<(), CryptoError> {
        let send = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        let response = self.send_as(machine, send).await?;
        mark(machine, &request.txn_id, &response).await
    }

    /// Feeds a transaction's to-device events (by recipient device), device-list changes and
    /// one-time-key counts to the machines they concern, and sends what they then need to send.
    /// Call it before the transaction's timeline events are handled, and answer the
    /// transaction only if it succeeded: the machines' stores hold what they received once it
    /// returns.
    pub async fn receive_transaction(&self, txn: &Transaction) -> Result<(), CryptoError> {
        let probe = txn
            .to_device
            .iter()
            .any(|raw| raw.get_field::<String>("type").ok().flatten().as_deref() == Some(PROBE));
        let counts = !txn.device_one_time_keys_count.is_empty();
        if probe || counts {
            self.seen.send_modify(|seen| {
                seen.probe |= probe;
                seen.key_counts |= counts;
            });
        }
        let mut by_device: BTreeMap<(OwnedUserId, OwnedDeviceId), Vec<Raw<AnyToDeviceEvent>>> =
            BTreeMap::new();
        for raw in &txn.to_device {
            let user = raw.get_field::<OwnedUserId>("to_user_id").ok().flatten();
            let device = raw
                .get_field::<OwnedDeviceId>("to_device_id")
                .ok()
                .flatten();
            let (Some(user), Some(device)) = (user, device) else {
                warn!("a to-device event without its recipient skipped");
                continue;
            };
            by_device
                .entry((user, device))
                .or_default()
                .push(raw.clone().cast_unchecked());
        }
        for (user, devices) in &txn.device_one_time_keys_count {
            for device in devices.keys() {
                by_device.entry((user.clone(), device.clone())).or_default();
            }
        }
        let mut changed = DeviceLists::new();
        changed.changed = txn.device_lists.changed.clone();
        changed.left = txn.device_lists.left.clone();
        let mut fed = Vec::new();
        for ((user, device), events) in by_device {
            if !(self.is_ours)(&user) || device != device_id_for(&user) {
                if !events.is_empty() {
                    debug!(user = %user, device = %device, "to-device event for a device we do not have");
                }
                continue;
            }
            let counts = txn
                .device_one_time_keys_count
                .get(&user)
                .and_then(|d| d.get(&device))
                .cloned()
                .unwrap_or_default();
            let fallback = txn
                .device_unused_fallback_key_types
                .get(&user)
                .and_then(|d| d.get(&device));
            // A count alone is no reason to open a machine that is not in memory, unless the
            // device is running out of one-time keys.
            if events.is_empty()
                && !self.is_loaded(&user)
                && counts.values().all(|c| u64::from(*c) >= 20)
            {
                continue;
            }
            let machine = self.machine(&user).await?;
            let fed_now: KeyCounts = (counts.clone(), fallback.cloned());
            let unchanged = events.is_empty()
                && changed.changed.is_empty()
                && changed.left.is_empty()
                && machine
                    .fed_counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    == Some(&fed_now);
            if unchanged {
                if machine.owes.load(Ordering::SeqCst) {
                    fed.push(machine);
                }
                continue;
            }
            let count = events.len();
            // One to-device event per call: each call commits before the next, so a second
            // copy of a Megolm session (a re-share after a new Olm session) is merged against
            // the first and the better ratchet is kept.
            let mut events = events.into_iter();
            let no_lists = DeviceLists::new();
            let no_counts = BTreeMap::new();
            let mut first = true;
            let mut room_keys = 0;
            loop {
                let batch: Vec<_> = events.next().into_iter().collect();
                if !first && batch.is_empty() {
                    break;
                }
                let changes = EncryptionSyncChanges {
                    to_device_events: batch,
                    changed_devices: if first { &changed } else { &no_lists },
                    one_time_keys_counts: if first { &counts } else { &no_counts },
                    unused_fallback_keys: if first {
                        fallback.map(Vec::as_slice)
                    } else {
                        None
                    },
                    next_batch_token: None,
                };
                let (_, keys) = machine
                    .olm
                    .receive_sync_changes(changes, &decryption_settings())
                    .await
                    .map_err(|e| CryptoError::Olm(e.to_string()))?;
                if first {
                    *machine
                        .fed_counts
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fed_now.clone());
                }
                first = false;
                room_keys += keys.len();
            }
            debug!(user = %user, to_device = count, room_keys, "crypto changes received");
            if room_keys > 0 {
                self.keys.send_modify(|n| *n += 1);
            }
            fed.push(machine);
        }
        // Machines in memory that got no to-device event still learn of changed devices.
        if !changed.changed.is_empty() || !changed.left.is_empty() {
            let others: Vec<Arc<Machine>> = self
                .machines_lock()
                .values()
                .filter_map(|cell| cell.get().cloned())
                .filter(|m| !fed.iter().any(|f| Arc::ptr_eq(f, m)))
                .collect();
            for machine in others {
                let changes = EncryptionSyncChanges {
                    to_device_events: Vec::new(),
                    changed_devices: &changed,
                    one_time_keys_counts: &BTreeMap::new(),
                    unused_fallback_keys: None,
                    next_batch_token: None,
                };
                machine
                    .olm
                    .receive_sync_changes(changes, &decryption_settings())
                    .await
                    .map_err(|e| CryptoError::Olm(e.to_string()))?;
                fed.push(machine);
            }
        }
        for machine in &fed {
            if let Err(error) = self.send_outgoing(machine).await {
                // What a machine has to send stays queued in it; the next round sends it.
                warn!(user = %machine.user, %error, "crypto requests not sent yet");
            }
        }
        Ok(())
    }

    fn is_loaded(&self, user: &UserId) -> bool {
        self.machines_lock()
            .get(user)
            .is_some_and(|cell| cell.get().is_some())
    }

    /// Encrypts `content` (of `event_type`) as `user` for `room` when the room is encrypted:
    /// the room key is shared first with every device of the room's joined and invited members
    /// that has none yet. `None`: the room is plain, send the content as it is.
    pub async fn encrypt(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, CryptoError> {
        let Some(settings) = self.room_encryption(user, room).await? else {
            return Ok(None);
        };
        let machine = self.machine(user).await?;
        let _one = machine.sending.lock().await;
        let members = self.members(user, room).await?;
        machine
            .olm
            .update_tracked_users(members.iter().map(as_user))
            .await
            .map_err(store_error)?;
        self.send_outgoing(&machine).await?;
        {
            let _requests = machine.requests.lock().await;
            if let Some((id, claim)) = machine
                .olm
                .get_missing_sessions(members.iter().map(as_user))
                .await
                .map_err(store_error)?
            {
                let response = self.send_as(&machine, claim).await?;
                mark(&machine, &id, &response).await?;
            }
        }
        let settings = EncryptionSettings::new(
            settings,
            HistoryVisibility::Shared,
            CollectStrategy::AllDevices,
        );
        let shares = machine
            .olm
            .share_room_key(room, members.iter().map(as_user), settings)
            .await
            .map_err(|e| CryptoError::Olm(e.to_string()))?;
        for share in shares {
            self.send_to_device(&machine, &share).await?;
        }
        let raw: Raw<AnyMessageLikeEventContent> = Raw::new(content)
            .map_err(|e| CryptoError::Olm(e.to_string()))?
            .cast_unchecked();
        let encrypted = machine
            .olm
            .encrypt_room_event_raw(room, event_type, &raw)
            .await
            .map_err(|e| CryptoError::Olm(e.to_string()))?;
        let value = serde_json::to_value(&encrypted.content)
            .map_err(|e| CryptoError::Olm(e.to_string()))?;
        Ok(Some(value))
    }

    /// Decrypts an `m.room.encrypted` event of `room` as `user` (a member whose device the
    /// sender shared the room key with), waiting up to `encryption.key_wait_secs` for the key
    /// to arrive in a later transaction. Returns the decrypted event (its type and content as
    /// the sender wrote them; sender, id and room from the envelope).
    pub async fn decrypt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &Raw<AnyTimelineEvent>,
    ) -> Result<Raw<AnyTimelineEvent>, CryptoError> {
        let machine = self.machine(user).await?;
        let deadline = tokio::time::Instant::now() + self.key_wait;
        let mut keys = self.keys.subscribe();
        loop {
            keys.borrow_and_update();
            match machine
                .olm
                .decrypt_room_event(event.cast_ref_unchecked(), room, &decryption_settings())
                .await
            {
                Ok(decrypted) => return Ok(decrypted.event),
                Err(MegolmError::MissingRoomKey(_)) => machine.owes.store(true, Ordering::SeqCst),
                // A JSON error names what it found, which is decrypted content: only its kind.
                Err(MegolmError::JsonError(_)) => {
                    return Err(CryptoError::Olm(
                        "the decrypted event is not a valid event".into(),
                    ));
                }
                Err(error) => return Err(CryptoError::Olm(error.to_string())),
            }
            match tokio::time::timeout_at(deadline, keys.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(CryptoError::MissingKey),
            }
        }
    }
}

/// Reports a request's answer back to its machine.
async fn mark<'a>(
    machine: &Machine,
    id: &ruma::TransactionId,
    response: impl Into<AnyIncomingResponse<'a>>,
) -> Result<(), CryptoError> {
    machine
        .olm
        .mark_request_as_sent(id, response)
        .await
        .map_err(|e| CryptoError::Olm(e.to_string()))
}

fn as_user(user: &OwnedUserId) -> &UserId {
    user
}

/// Messages from the user's devices are read whatever their devices' verification: the user's
/// own client decides whom it trusts; the bridge only carries.
fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

/// The device id of `user`'s bridge device: `IB` and 10 hex digits of a digest of the user id,
/// the same after every restart.
pub fn device_id_for(user: &UserId) -> OwnedDeviceId {
    let digest = digest(user.as_str());
    format!("IB{}", digest[..10].to_ascii_uppercase()).into()
}

/// The directory name of `user`'s crypto store (a digest: user ids may hold any character).
fn store_name(user: &UserId) -> String {
    digest(user.as_str())[..32].to_owned()
}

fn digest(text: &str) -> String {
    use sha1::{Digest, Sha1};
    crate::ids::hex(&Sha1::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_stable_and_distinct() {
        let a = ruma::user_id!("@interop_bob=40xmpp.test:localhost");
        let b = ruma::user_id!("@interopbot:localhost");
        assert_eq!(device_id_for(a), device_id_for(a));
        assert_ne!(device_id_for(a), device_id_for(b));
        assert_eq!(device_id_for(a).as_str().len(), 12);
        assert!(device_id_for(a).as_str().starts_with("IB"));
        assert_ne!(store_name(a), store_name(b));
    }
}
