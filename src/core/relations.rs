//! What refers to other messages, both ways: replies, edits, reactions, retractions, read
//! markers, delivery receipts and typing.
//!
//! Everything here is found through the message map by ids; nothing of a message's content is
//! stored. Reactions keep no state of their own either: the current set of one side's
//! reactions to a message is read back from the homeserver (`/relations`, `m.annotation`),
//! which already holds it, so a redelivered stanza or a restart changes nothing twice.
//!
//! Order: a contact's signals come through the contact's inbound lane and the user's reactions
//! and redactions through the room's worker, behind the messages they refer to.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::json;
use tracing::{debug, info, warn};

use super::capabilities::Feature;
use super::logins::Login;
use super::{Ack, Bridge, BridgeError, NetworkError, Signal, Typing, derived_id};
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::{MappedEvent, PortalRecord};

/// How many reactions of one side to one message are bridged at most (XEP-0444 sets a sender's
/// whole set at once; a client that sends more is cut off here).
pub(super) const MAX_REACTIONS: usize = 20;
/// The longest reaction key bridged, in bytes (an emoji sequence is far shorter).
const MAX_REACTION_KEY: usize = 64;
/// How long a ghost shows as typing after the contact's `composing`, unless renewed.
const TYPING_TIMEOUT: Duration = Duration::from_secs(30);
/// A `composing` repeated within this time changes nothing (no more than one `m.typing` per
/// second, and the timeout is renewed only when half of it is gone).
const TYPING_RENEW: Duration = Duration::from_secs(15);

/// The prefix of message-map keys that record the user's reactions: `<prefix><target's remote
/// id>\u{1}<reaction event id>`. U+0001 cannot occur in an XMPP id (XML 1.0 forbids it), so
/// these never collide with a real message id.
const REACTION_KEY: &str = "\u{1}rx:";
/// The prefix of message-map keys that record a redaction the bridge carried out.
const REDACTION_KEY: &str = "\u{1}redaction:";

/// Typing, as last told to the other side, per portal and direction; used to coalesce.
#[derive(Default)]
pub(super) struct TypingMarks {
    marks: std::sync::Mutex<HashMap<(PortalKey, bool), (bool, Instant)>>,
}

impl TypingMarks {
    /// Whether `typing` must be told for (`key`, `outbound`): a change, or a renewal of
    /// `typing = true` after [`TYPING_RENEW`]. Records it as told.
    fn should_tell(&self, key: &PortalKey, outbound: bool, typing: bool) -> bool {
        let mut marks = self
            .marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let slot = (key.clone(), outbound);
        let tell = match marks.get(&slot) {
            Some((was, at)) => {
                *was != typing || (typing && now.duration_since(*at) >= TYPING_RENEW)
            }
            None => typing,
        };
        if tell {
            marks.insert(slot, (typing, now));
        }
        // Bounded: marks of portals that stopped typing go once they are stale.
        if marks.len() > 4096 {
            marks.retain(|_, (typing, at)| *typing && now.duration_since(*at) < TYPING_TIMEOUT);
        }
        tell
    }
}

/// The reaction key of an `m.reaction` event (plain, or the relation an encrypted one carries
/// in the clear), if it has one.
fn reaction_key_in(raw: &Raw<AnyTimelineEvent>) -> Option<String> {
    let content = raw
        .get_field::<serde_json::Value>("content")
        .ok()
        .flatten()?;
    let relates = content.get("m.relates_to")?;
    if relates.get("rel_type")?.as_str()? != "m.annotation" {
        return None;
    }
    relates.get("key")?.as_str().map(str::to_owned)
}

/// The distinct keys of `keys`, in order, bounded in number and size.
fn bounded_keys(keys: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    keys.iter()
        .filter(|k| !k.is_empty() && k.len() <= MAX_REACTION_KEY)
        .filter(|k| seen.insert(k.as_str()))
        .take(MAX_REACTIONS)
        .cloned()
        .collect()
}

impl Bridge {
    /// `by`'s reactions to `target` as `member` sees them: (key, reaction event), oldest
    /// first, without `except`. Encrypted reactions are decrypted when their relation does not
    /// carry the key in the clear.
    async fn reactions_of(
        &self,
        member: &UserId,
        room: &RoomId,
        target: &EventId,
        by: &UserId,
        except: Option<&EventId>,
    ) -> Result<Vec<(String, OwnedEventId)>, BridgeError> {
        let mut found = Vec::new();
        for raw in self.matrix.annotations(member, room, target).await? {
            let sender = raw.get_field::<String>("sender").ok().flatten();
            let id = raw.get_field::<OwnedEventId>("event_id").ok().flatten();
            let (Some(sender), Some(id)) = (sender, id) else {
                continue;
            };
            if sender != by.as_str() || Some(id.as_ref()) == except {
                continue;
            }
            let kind = raw.get_field::<String>("type").ok().flatten();
            let key = match reaction_key_in(&raw) {
                Some(key) => Some(key),
                None if kind.as_deref() == Some("m.room.encrypted") => {
                    match self.matrix.decrypt(member, room, &raw).await {
                        Ok(plain) => reaction_key_in(&plain),
                        Err(error) => {
                            debug!(room = %room, event = %id, %error, "a reaction could not be read");
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(key) = key {
                found.push((key, id));
            }
        }
        // The homeserver lists the newest first.
        found.reverse();
        Ok(found)
    }

    // ---- from the contact ------------------------------------------------------------

    /// A contact's signals (reactions, a retraction, a read marker, a receipt, typing), then
    /// the stanza's acknowledgement. Signals change only what exists: they open no portal.
    /// A failure the homeserver may get over is tried again a few times; then the stanza is
    /// acknowledged anyway, since a lost reaction or marker is not worth a stuck lane.
    pub(super) async fn inbound_signals(
        &self,
        login: &Login,
        contact: RemoteUserId,
        signals: Vec<Signal>,
        ack: Box<dyn Ack>,
    ) {
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        match (
            self.store.portal(&key),
            self.settings.ghosts.ghost_of(&contact),
        ) {
            (Ok(Some(portal)), Ok(ghost)) => {
                for signal in &signals {
                    let mut delay = Duration::from_millis(250);
                    for attempt in 0..4 {
                        match self.inbound_signal(&key, &portal, &ghost, signal).await {
                            Ok(()) => break,
                            Err(BridgeError::Matrix(error))
                                if !error.is_permanent() && attempt < 3 =>
                            {
                                warn!(portal = %key, %error, "cannot bridge a contact's signal yet; trying again");
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                            Err(error) => {
                                warn!(portal = %key, %error, "a contact's signal was not bridged");
                                break;
                            }
                        }
                    }
                }
            }
            (Ok(None), _) => debug!(portal = %key, "signal for a chat without portal ignored"),
            (Err(error), _) => warn!(portal = %key, %error, "cannot look the portal up"),
            (_, Err(error)) => warn!(portal = %key, %error, "no ghost for the contact"),
        }
        if let Err(error) = ack.commit().await {
            warn!(jid = %login.jid, %error, "cannot acknowledge a signal");
        }
    }

    async fn inbound_signal(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        ghost: &UserId,
        signal: &Signal,
    ) -> Result<(), BridgeError> {
        match signal {
            Signal::Reactions { to, keys } => {
                let Some(target) = self.store.event_of(key, to)? else {
                    debug!(portal = %key, "reaction to a message never bridged ignored");
                    return Ok(());
                };
                let wanted = bounded_keys(keys);
                let present = self
                    .reactions_of(ghost, &portal.room, &target.event, ghost, None)
                    .await?;
                for (emoji, reaction) in &present {
                    if !wanted.contains(emoji) {
                        let txn = format!("unreact.{}", derived_id(&[reaction.as_str()]));
                        self.matrix
                            .redact(ghost, &portal.room, reaction, txn.as_str().into(), None)
                            .await?;
                    }
                }
                for emoji in &wanted {
                    if present.iter().any(|(k, _)| k == emoji) {
                        continue;
                    }
                    let content = json!({
                        "m.relates_to": {
                            "rel_type": "m.annotation",
                            "event_id": target.event,
                            "key": emoji,
                        }
                    });
                    let txn = super::fresh_txn("react");
                    self.matrix
                        .send_event(ghost, &portal.room, "m.reaction", &txn, &content)
                        .await?;
                }
                debug!(portal = %key, count = wanted.len(), "contact's reactions bridged");
                Ok(())
            }
            Signal::Retract { id } => {
                let Some(target) = self.store.event_of(key, id)? else {
                    debug!(portal = %key, "retraction of a message never bridged ignored");
                    return Ok(());
                };
                if target.ours {
                    // The contact cannot take back what the user wrote.
                    info!(portal = %key, "the contact tried to retract the user's message; ignored");
                    return Ok(());
                }
                let txn = format!("retract.{}", derived_id(&[target.event.as_str()]));
                self.matrix
                    .redact(
                        ghost,
                        &portal.room,
                        &target.event,
                        txn.as_str().into(),
                        Some("retracted by the sender"),
                    )
                    .await?;
                info!(portal = %key, "a retracted message was redacted");
                Ok(())
            }
            Signal::Displayed { id } => {
                let Some(target) = self.store.event_of(key, id)? else {
                    return Ok(());
                };
                self.matrix
                    .send_receipt(ghost, &portal.room, &target.event)
                    .await?;
                Ok(())
            }
            Signal::Received { id } => {
                if !self.settings.message_status {
                    return Ok(());
                }
                let Some(target) = self.store.event_of(key, id)? else {
                    return Ok(());
                };
                if !target.ours {
                    return Ok(());
                }
                // The convention Matrix clients read for a bridged message's state
                // (mautrix's `com.beeper.message_send_status`): delivered to the contact.
                let content = json!({
                    "network": "xmpp",
                    "m.relates_to": { "rel_type": "m.reference", "event_id": target.event },
                    "status": "SUCCESS",
                    "delivered_to_users": [ghost],
                });
                let txn = format!("delivered.{}", derived_id(&[target.event.as_str()]));
                self.matrix
                    .send_event(
                        ghost,
                        &portal.room,
                        "com.beeper.message_send_status",
                        txn.as_str().into(),
                        &content,
                    )
                    .await?;
                Ok(())
            }
            Signal::Typing(state) => {
                let typing = *state == Typing::Composing;
                if self.typing.should_tell(key, false, typing) {
                    let timeout = typing.then_some(TYPING_TIMEOUT);
                    self.matrix.set_typing(ghost, &portal.room, timeout).await?;
                }
                Ok(())
            }
        }
    }

    /// After the contact's message is posted, their ghost no longer shows as typing.
    pub(super) async fn stop_typing(&self, key: &PortalKey, room: &RoomId, ghost: &UserId) {
        if self.typing.should_tell(key, false, false)
            && let Err(error) = self.matrix.set_typing(ghost, room, None).await
        {
            debug!(portal = %key, %error, "cannot clear the ghost's typing");
        }
    }

    // ---- from the Matrix user ----------------------------------------------------------

    /// The user's reaction `event` (key `emoji`) to `target`: the user's whole set of reactions
    /// to that message goes to the contact (XEP-0444), once per reaction event.
    pub(super) async fn outbound_reaction(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        sender: &UserId,
        event: &EventId,
        target: &EventId,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.running_login_of(key, sender)? else {
            return Ok(());
        };
        if self.store.remote_of(event)?.is_some() {
            debug!(portal = %key, "reaction already sent");
            return Ok(());
        }
        let Some(remote) = self.remote_in(key, target)? else {
            debug!(portal = %key, "reaction to a message that was never bridged; not sent");
            return Ok(());
        };
        let ghost = self.ghost_in(key)?;
        let keys: Vec<String> = self
            .reactions_of(&ghost, &portal.room, target, sender, None)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let signal = Signal::Reactions {
            to: remote.clone(),
            keys: bounded_keys(&keys),
        };
        let id = derived_id(&["react", event.as_str()]);
        login.client.send_signal(&key.contact, &id, &signal).await?;
        let mapped = MappedEvent {
            event: event.to_owned(),
            placeholder: false,
            ours: true,
            markable: false,
        };
        self.store
            .put_message(key, &format!("{REACTION_KEY}{remote}\u{1}{event}"), &mapped)?;
        debug!(portal = %key, "reaction sent");
        self.check_support(key, &portal.room, Feature::Reactions);
        Ok(())
    }

    /// The user redacted `redacted`: their message is retracted at the contact's (XEP-0424),
    /// or their reaction taken back (the remaining set is sent). Once per redaction.
    pub(super) async fn outbound_redaction(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        sender: &UserId,
        redaction: &EventId,
        redacted: &EventId,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.running_login_of(key, sender)? else {
            return Ok(());
        };
        if self.store.remote_of(redaction)?.is_some() {
            debug!(portal = %key, "redaction already carried out");
            return Ok(());
        }
        let Some((of, remote)) = self.store.remote_of(redacted)? else {
            debug!(portal = %key, "redaction of an event never bridged");
            return Ok(());
        };
        if &of != key {
            return Ok(());
        }
        let id = derived_id(&["redaction", redaction.as_str()]);
        if let Some(rest) = remote.strip_prefix(REACTION_KEY) {
            let Some((target_remote, _)) = rest.split_once('\u{1}') else {
                return Ok(());
            };
            let Some(target) = self.store.event_of(key, target_remote)? else {
                return Ok(());
            };
            let ghost = self.ghost_in(key)?;
            let keys: Vec<String> = self
                .reactions_of(&ghost, &portal.room, &target.event, sender, Some(redacted))
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let signal = Signal::Reactions {
                to: target_remote.to_owned(),
                keys: bounded_keys(&keys),
            };
            login.client.send_signal(&key.contact, &id, &signal).await?;
            debug!(portal = %key, "reaction taken back");
        } else {
            let Some(mapped) = self.store.event_of(key, &remote)? else {
                return Ok(());
            };
            if !mapped.ours || remote.starts_with('\u{1}') {
                debug!(portal = %key, "redaction of the contact's message not sent");
                return Ok(());
            }
            let signal = Signal::Retract { id: remote };
            login.client.send_signal(&key.contact, &id, &signal).await?;
            info!(portal = %key, "message retracted at the contact's");
            self.check_support(key, &portal.room, Feature::Retractions);
        }
        let done = MappedEvent {
            event: redaction.to_owned(),
            placeholder: false,
            ours: true,
            markable: false,
        };
        self.store
            .put_message(key, &format!("{REDACTION_KEY}{redaction}"), &done)?;
        Ok(())
    }

    /// The user read the portal up to `event`: the contact is told (XEP-0333 `displayed`) if
    /// it is their message and they asked for it.
    pub(super) async fn outbound_read(
        &self,
        key: &PortalKey,
        reader: &UserId,
        event: &EventId,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.running_login_of(key, reader)? else {
            return Ok(());
        };
        let Some(remote) = self.remote_in(key, event)? else {
            return Ok(());
        };
        let Some(mapped) = self.store.event_of(key, &remote)? else {
            return Ok(());
        };
        if mapped.ours || !mapped.markable {
            return Ok(());
        }
        let id = derived_id(&["displayed", event.as_str()]);
        login
            .client
            .send_signal(&key.contact, &id, &Signal::Displayed { id: remote })
            .await?;
        debug!(portal = %key, "read marker sent");
        Ok(())
    }

    /// The user started or stopped typing in the portal (coalesced: only changes go out).
    pub(super) async fn outbound_typing(
        &self,
        key: &PortalKey,
        user: &UserId,
        typing: bool,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.running_login_of(key, user)? else {
            return Ok(());
        };
        if !login.client.connected() || !self.typing.should_tell(key, true, typing) {
            return Ok(());
        }
        let state = if typing {
            Typing::Composing
        } else {
            Typing::Paused
        };
        let id = super::fresh_txn("chatstate").to_string();
        login
            .client
            .send_signal(&key.contact, &id, &Signal::Typing(state))
            .await?;
        Ok(())
    }

    /// The running login of the portal `key`, if `user` is its Matrix user.
    fn running_login_of(
        &self,
        key: &PortalKey,
        user: &UserId,
    ) -> Result<Option<std::sync::Arc<Login>>, BridgeError> {
        let Some(login) = self.logins_lock().get(&key.login).cloned() else {
            return Err(NetworkError::NotConnected.into());
        };
        Ok((login.matrix_user == user).then_some(login))
    }

    /// The remote id of `event` if it is a message of the portal `key` (not a reaction or a
    /// redaction the bridge recorded).
    pub(super) fn remote_in(
        &self,
        key: &PortalKey,
        event: &EventId,
    ) -> Result<Option<String>, BridgeError> {
        Ok(self
            .store
            .remote_of(event)?
            .filter(|(of, remote)| of == key && !remote.starts_with('\u{1}'))
            .map(|(_, remote)| remote))
    }

    fn ghost_in(&self, key: &PortalKey) -> Result<ruma::OwnedUserId, BridgeError> {
        self.settings
            .ghosts
            .ghost_of(&key.contact)
            .map_err(|e| NetworkError::Other(e.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaction_sets_are_deduplicated_and_bounded() {
        let many: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        assert_eq!(bounded_keys(&many).len(), MAX_REACTIONS);
        let keys = vec![
            "👍".to_owned(),
            "👍".to_owned(),
            String::new(),
            "x".repeat(65),
            "❤️".to_owned(),
        ];
        assert_eq!(bounded_keys(&keys), vec!["👍".to_owned(), "❤️".to_owned()]);
    }

    #[test]
    fn typing_is_told_on_change_and_renewed_only_after_a_while() {
        let marks = TypingMarks::default();
        let key = PortalKey {
            login: RemoteUserId::parse("a@x.test").expect("jid"),
            contact: RemoteUserId::parse("b@x.test").expect("jid"),
        };
        assert!(!marks.should_tell(&key, false, false), "nothing to stop");
        assert!(marks.should_tell(&key, false, true));
        assert!(
            !marks.should_tell(&key, false, true),
            "a repeat within the renewal time"
        );
        assert!(
            marks.should_tell(&key, true, true),
            "the other direction is its own"
        );
        assert!(marks.should_tell(&key, false, false));
        assert!(!marks.should_tell(&key, false, false));
    }

    #[test]
    fn a_reaction_key_is_read_from_plain_and_encrypted_relations() {
        let raw = |v: serde_json::Value| {
            Raw::<AnyTimelineEvent>::from_json(serde_json::value::to_raw_value(&v).expect("json"))
        };
        let plain = raw(json!({"type": "m.reaction", "content": {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": "$t", "key": "👍"}}}));
        assert_eq!(reaction_key_in(&plain).as_deref(), Some("👍"));
        let reply = raw(
            json!({"type": "m.room.message", "content": {"m.relates_to": {
            "m.in_reply_to": {"event_id": "$t"}}}}),
        );
        assert_eq!(reaction_key_in(&reply), None);
    }
}
