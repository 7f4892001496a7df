//! Portals: one Matrix room per (login, contact), created by the first inbound message, by the
//! user inviting a ghost to a DM, or by `start-chat`. Every portal carries `m.bridge` state
//! (MSC2346), sits in the user's "Third-party chats" space, and opens with a notice saying the
//! bridge re-encrypts. A chat from a contact outside the roster is a message request: joining
//! accepts it, leaving declines it.

use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::json;
use tracing::{info, warn};

use super::logins::Login;
use super::{Bridge, BridgeError, NewRoom, NewState, derived_id, now_ms};
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::{PortalRecord, PortalState};

/// The space every linked user's portals are gathered in (the seeds' separate inbox).
pub(super) const SPACE_NAME: &str = "Third-party chats";

impl Bridge {
    /// The notice that opens every portal: what re-encryption by the bridge means.
    pub(super) fn reencryption_notice(contact: &RemoteUserId) -> RoomMessageEventContent {
        let text = format!(
            "This chat is bridged to {contact} on XMPP. Messages are end-to-end encrypted \
             between {contact} and the bridge (OMEMO), and the bridge decrypts and re-encrypts \
             each one for this side: the bridge's server sees every message in transit (it does \
             not store them). This is not end-to-end encryption between you and {contact}."
        );
        let html = format!(
            "🔁 This chat is bridged to <b>{c}</b> on XMPP. Messages are end-to-end encrypted \
             between {c} and the bridge (OMEMO), and the bridge <b>decrypts and re-encrypts</b> \
             each one for this side: the bridge's server sees every message in transit (it does \
             not store them). This is not end-to-end encryption between you and {c}.",
            c = crate::commands::html_escape(contact.as_str())
        );
        RoomMessageEventContent::notice_html(text, html)
    }

    fn request_notice(contact: &RemoteUserId) -> RoomMessageEventContent {
        RoomMessageEventContent::notice_plain(format!(
            "Message request: {contact} is not in your contacts. Join this room to accept (they \
             are added to your contacts), leave it to decline, or say `block {contact}` to the \
             bridge bot."
        ))
    }

    /// The `m.bridge` state of a portal (MSC2346), also under its older unstable name.
    fn bridge_state(&self, key: &PortalKey) -> Vec<NewState> {
        let content = json!({
            "bridgebot": self.settings.bot,
            "creator": self.settings.bot,
            "protocol": { "id": "xmpp", "displayname": "XMPP (OMEMO)" },
            "network": { "id": key.login.as_str(), "displayname": key.login.as_str() },
            "channel": { "id": key.contact.as_str(), "displayname": key.contact.as_str() },
        });
        let state_key = format!("net.interop-bridge://xmpp/{}/{}", key.login, key.contact);
        ["m.bridge", "uk.half-shot.bridge"]
            .into_iter()
            .map(|event_type| NewState {
                event_type: event_type.into(),
                state_key: state_key.clone(),
                content: content.clone(),
            })
            .collect()
    }

    /// Whether a new portal is encrypted: `encryption.default` asks for it and the ghost has
    /// its encryption device (without one it could not write there; the portal is then plain).
    async fn portal_device(&self, key: &PortalKey, ghost: &UserId) -> bool {
        if !self.settings.encrypt_portals {
            return false;
        }
        match self.matrix.prepare_device(ghost).await {
            Ok(()) => true,
            Err(error) => {
                warn!(portal = %key, %error, "the ghost has no encryption device: the portal is not encrypted");
                false
            }
        }
    }

    /// The initial state of a portal the bridge creates: its bridge state, and encryption when
    /// `encrypted`.
    fn portal_state(&self, key: &PortalKey, encrypted: bool) -> Vec<NewState> {
        let mut state = self.bridge_state(key);
        if encrypted {
            state.push(NewState {
                event_type: "m.room.encryption".into(),
                state_key: String::new(),
                content: json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
            });
        }
        state
    }

    /// The name to show for `contact`: the roster's, else the nickname they sent.
    /// The nickname in a ghost's global display name (`nick (jid)`), if it has one.
    pub(super) fn nick_in(displayname: &str, contact: &RemoteUserId) -> Option<String> {
        displayname
            .strip_suffix(&format!(" ({contact})"))
            .map(str::to_owned)
    }

    /// The portal for a message from `key.contact`: the existing one, or a new one (a message
    /// request unless the contact is in the roster). `None` when the user declined it.
    pub(super) async fn inbound_portal(
        &self,
        login: &Login,
        key: &PortalKey,
        nick: Option<&str>,
    ) -> Result<Option<PortalRecord>, BridgeError> {
        let _serial = self.portal_lock.lock().await;
        if let Some(portal) = self.store.portal(key)? {
            return Ok((portal.state != PortalState::Declined).then_some(portal));
        }
        let state = if login.roster_name(&key.contact).is_some() {
            PortalState::Accepted
        } else {
            PortalState::Request
        };
        if state == PortalState::Request {
            let policy = self.settings.requests;
            if policy.roster_only {
                info!(portal = %key, "a message from outside the roster dropped (network.requests = \"roster-only\")");
                return Ok(None);
            }
            if !self.may_open_request(login, key).await {
                return Ok(None);
            }
        }
        self.create_portal(login, key, state, nick).await.map(Some)
    }

    /// Takes a place for a new message request from `key.contact` within the hour's limit;
    /// `false` when there is none (the user is told once an hour).
    pub(super) async fn may_open_request(&self, login: &Login, key: &PortalKey) -> bool {
        let per_hour = self.settings.requests.per_hour;
        let now = std::time::Instant::now();
        let super::logins::RequestVerdict::Refuse { tell } = login.may_open_request(per_hour, now)
        else {
            return true;
        };
        warn!(portal = %key, "a message request over the hourly limit dropped");
        if tell {
            let reply = crate::commands::Reply::text(format!(
                "⚠️ More than {per_hour} new people wrote to {} within an hour. Messages from \
                 further new contacts are dropped for the rest of the hour (the limit is \
                 network.max_requests_per_hour); contacts in your roster are not affected. \
                 The latest was from {}.",
                login.jid, key.contact
            ));
            self.tell(&login.matrix_user, &super::fresh_txn("requests"), &reply)
                .await;
        }
        false
    }

    /// Creates the portal room as the contact's ghost, inviting the user; records it, adds it
    /// to the space. The caller holds `portal_lock`.
    pub(super) async fn create_portal(
        &self,
        login: &Login,
        key: &PortalKey,
        state: PortalState,
        nick: Option<&str>,
    ) -> Result<PortalRecord, BridgeError> {
        let ghost = self.ensure_ghost(&key.contact, nick).await?;
        let topic = match state {
            PortalState::Request => Some(format!(
                "Message request from {}: join to accept, leave to decline.",
                key.contact
            )),
            _ => None,
        };
        let spec = NewRoom {
            name: None,
            topic,
            invite: vec![login.matrix_user.clone()],
            is_direct: true,
            space: false,
            initial_state: self.portal_state(key, self.portal_device(key, &ghost).await),
            admins: vec![self.settings.bot.clone()],
        };
        let room = self.matrix.create_room(&ghost, &spec).await?;
        let record = PortalRecord {
            room: room.clone(),
            state,
            created_ms: now_ms(),
        };
        self.store.put_portal(key, &record)?;
        self.flush().await?;
        info!(portal = %key, room = %room, ?state, "portal created");
        self.open_portal(login, key, &room, state == PortalState::Request)
            .await;
        Ok(record)
    }

    /// What every new portal gets after it exists: the notices and the space.
    async fn open_portal(&self, login: &Login, key: &PortalKey, room: &RoomId, request: bool) {
        let Ok(ghost) = self.settings.ghosts.ghost_of(&key.contact) else {
            return;
        };
        // The user's own name for the contact, in this room only.
        if let Some(Some(name)) = login.roster_name(&key.contact) {
            let member = NewState {
                event_type: "m.room.member".into(),
                state_key: ghost.to_string(),
                content: serde_json::json!({ "membership": "join", "displayname": name }),
            };
            if let Err(error) = self.matrix.send_state(&ghost, room, &member).await {
                warn!(room = %room, %error, "cannot name the ghost in the portal");
            }
        }
        let txn = format!("notice.{}", derived_id(&[room.as_str()]));
        let notice = Self::reencryption_notice(&key.contact);
        if let Err(error) = self
            .matrix
            .send_message(&ghost, room, txn.as_str().into(), &notice)
            .await
        {
            warn!(room = %room, %error, "cannot post the re-encryption notice");
        }
        if request {
            let txn = format!("request.{}", derived_id(&[room.as_str()]));
            let notice = Self::request_notice(&key.contact);
            if let Err(error) = self
                .matrix
                .send_message(&ghost, room, txn.as_str().into(), &notice)
                .await
            {
                warn!(room = %room, %error, "cannot post the message-request notice");
            }
        }
        if let Err(error) = self.add_to_space(login, room).await {
            warn!(room = %room, %error, "cannot add the portal to the space");
        } // The contact's presence, announced before the portal existed.
        if let Some((availability, status)) = login.client.presence_of(&key.contact) {
            self.presence_seen(login, key.contact.clone(), availability, status);
        }
    }

    /// Adds `room` to the user's "Third-party chats" space, creating the space first.
    async fn add_to_space(&self, login: &Login, room: &RoomId) -> Result<(), BridgeError> {
        let Some(mut record) = self.store.login(&login.jid)? else {
            return Ok(());
        };
        let space = match &record.space {
            Some(space) => space.clone(),
            None => {
                let spec = NewRoom {
                    name: Some(SPACE_NAME.into()),
                    topic: Some(
                        "Your chats with contacts on other networks, bridged by the interop \
                         bridge."
                            .into(),
                    ),
                    invite: vec![login.matrix_user.clone()],
                    space: true,
                    ..NewRoom::default()
                };
                let space = self.matrix.create_room(&self.settings.bot, &spec).await?;
                record.space = Some(space.clone());
                self.store.put_login(&record)?;
                self.flush().await?;
                info!(user = %login.matrix_user, space = %space, "space created");
                space
            }
        };
        let via = json!({ "via": [self.settings.bot.server_name()] });
        let child = NewState {
            event_type: "m.space.child".into(),
            state_key: room.to_string(),
            content: via,
        };
        self.matrix
            .send_state(&self.settings.bot, &space, &child)
            .await?;
        Ok(())
    }

    /// Registers the ghosts of roster contacts the bridge has not met yet and gives each its
    /// encryption device, in a task of its own, one after the other: a client that opens an
    /// encrypted DM with one of them (Element checks the invitee's devices first) then shares
    /// the first message's key with it. A ghost first seen in an invite has no device when the
    /// client sends, so that first message cannot be read (its sender is told).
    pub(super) fn prepare_ghosts(&self, contacts: Vec<RemoteUserId>) {
        if !self.settings.encryption || contacts.is_empty() {
            return;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            for contact in contacts {
                let known = this
                    .settings
                    .ghosts
                    .ghost_of(&contact)
                    .ok()
                    .and_then(|g| this.store.ghost(&g).ok().flatten())
                    .is_some_and(|g| g.registered);
                if known {
                    continue;
                }
                match this.ensure_ghost(&contact, None).await {
                    Ok(ghost) => {
                        if let Err(error) = this.matrix.prepare_device(&ghost).await {
                            warn!(ghost = %ghost, %error, "no encryption device for a roster contact");
                        }
                    }
                    Err(error) => {
                        warn!(contact = %contact, %error, "cannot register a roster contact's ghost")
                    }
                }
            }
            if let Err(error) = this.flush().await {
                warn!(%error, "cannot store the roster's ghosts");
            }
        });
    }

    /// A ghost was invited to a room. By a linked user (a DM with the contact): the room becomes
    /// that chat's portal. By anyone else: the ghost refuses, since nothing of a user who has
    /// not linked an identity goes to the network.
    pub(super) async fn ghost_invited(
        &self,
        room: &RoomId,
        sender: &UserId,
        ghost: &UserId,
        contact: &RemoteUserId,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.login_of_user(sender) else {
            info!(room = %room, "a ghost was invited by a user without a linked identity");
            self.matrix.leave_room(ghost, room).await?;
            let reply = crate::commands::Reply::text(format!(
                "To chat with {contact}, link your account first: say `link <your JID>` here."
            ));
            self.tell(sender, &super::fresh_txn("nolink"), &reply).await;
            return Ok(());
        };
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        self.ensure_ghost(contact, None).await?;
        if let Err(error) = self.matrix.prepare_device(ghost).await {
            warn!(room = %room, %error, "the ghost has no encryption device");
        }
        self.matrix.join_room(ghost, room).await?;
        {
            let _serial = self.portal_lock.lock().await;
            let record = PortalRecord {
                room: room.to_owned(),
                state: PortalState::Accepted,
                created_ms: now_ms(),
            };
            self.store.put_portal(&key, &record)?;
            self.flush().await?;
        }
        info!(portal = %key, room = %room, "portal opened by the user");
        for state in self.bridge_state(&key) {
            if let Err(error) = self.matrix.send_state(ghost, room, &state).await {
                warn!(room = %room, %error, "cannot set m.bridge state (power level?)");
            }
        }
        self.open_portal(&login, &key, room, false).await;
        self.accept_contact(&login, contact).await;
        if let Some(portal) = self.store.portal(&key)? {
            self.bridge_backlog(&key, &portal, ghost, sender).await;
        }
        Ok(())
    }

    /// `start-chat <jid>`: the existing portal (the user is invited again) or a new one.
    pub(super) async fn start_chat(
        &self,
        login: &Arc<Login>,
        contact: &RemoteUserId,
    ) -> Result<OwnedRoomId, BridgeError> {
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        let room = {
            let _serial = self.portal_lock.lock().await;
            match self.store.portal(&key)? {
                Some(portal) if portal.state != PortalState::Declined => {
                    if portal.state == PortalState::Request {
                        let accepted = PortalRecord {
                            state: PortalState::Accepted,
                            ..portal.clone()
                        };
                        self.store.put_portal(&key, &accepted)?;
                        self.flush().await?;
                    }
                    let ghost = self.ensure_ghost(contact, None).await?;
                    self.matrix
                        .invite(&ghost, &portal.room, &login.matrix_user, None)
                        .await?;
                    portal.room
                }
                _ => {
                    self.create_portal(login, &key, PortalState::Accepted, None)
                        .await?
                        .room
                }
            }
        };
        self.accept_contact(login, contact).await;
        Ok(room)
    }

    /// The user's membership changed in a portal room: joining a request accepts it, leaving
    /// a request declines it, leaving an accepted chat closes the portal.
    pub(super) async fn portal_membership(
        &self,
        room: &RoomId,
        key: PortalKey,
        portal: PortalRecord,
        target: &UserId,
        membership: &MembershipState,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.logins_lock().get(&key.login).cloned() else {
            return Ok(());
        };
        if target != login.matrix_user {
            return Ok(());
        }
        match (membership, portal.state) {
            (MembershipState::Join, PortalState::Request) => {
                let accepted = PortalRecord {
                    state: PortalState::Accepted,
                    ..portal
                };
                self.store.put_portal(&key, &accepted)?;
                self.flush().await?;
                info!(portal = %key, "message request accepted");
                self.accept_contact(&login, &key.contact).await;
            }
            (MembershipState::Leave | MembershipState::Ban, state) => {
                let ghost = self.settings.ghosts.ghost_of(&key.contact).ok();
                if state == PortalState::Request {
                    let declined = PortalRecord {
                        state: PortalState::Declined,
                        ..portal
                    };
                    self.store.put_portal(&key, &declined)?;
                    info!(portal = %key, "message request declined");
                } else if state == PortalState::Accepted {
                    self.store.remove_portal(&key)?;
                    info!(portal = %key, "portal closed by the user");
                }
                self.flush().await?;
                if let Some(ghost) = ghost
                    && let Err(error) = self.matrix.leave_room(&ghost, room).await
                {
                    warn!(room = %room, %error, "the ghost cannot leave");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The user accepted a chat: the contact goes into the roster with a subscription both ways.
    async fn accept_contact(&self, login: &Login, contact: &RemoteUserId) {
        if login.roster_name(contact).is_some() {
            return;
        }
        let Ok(ghost) = self.settings.ghosts.ghost_of(contact) else {
            return;
        };
        let name = self
            .store
            .ghost(&ghost)
            .ok()
            .flatten()
            .and_then(|g| g.displayname);
        let name = name.and_then(|n| Self::nick_in(&n, contact));
        match login.client.add_contact(contact, name.as_deref()).await {
            Ok(()) => info!(jid = %login.jid, contact = %contact, "contact added to the roster"),
            Err(error) => warn!(jid = %login.jid, %error, "cannot add the contact to the roster"),
        }
    }
}
