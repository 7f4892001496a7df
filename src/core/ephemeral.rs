//! Ephemeral events (MSC2409) of the appservice's transactions: the portal users' read
//! receipts and typing, which `relations.rs` sends to their contacts.

use tracing::debug;

use super::Bridge;

impl Bridge {
    /// Ephemeral events (MSC2409) of a transaction: the portal users' read receipts and
    /// typing, for their contacts. Best effort and off the transaction's path: nothing here
    /// is recorded, and a failure is only logged.
    pub fn handle_ephemeral(&self, events: Vec<serde_json::Value>) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        if events.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for event in events {
                this.ephemeral_event(&event).await;
            }
        });
    }

    /// One ephemeral event: a portal user's read receipts or typing, to the portal's contact.
    async fn ephemeral_event(&self, event: &serde_json::Value) {
        let kind = event.get("type").and_then(|t| t.as_str());
        let Some(room) = event
            .get("room_id")
            .and_then(|r| r.as_str())
            .and_then(|r| ruma::OwnedRoomId::try_from(r).ok())
        else {
            return;
        };
        let Ok(Some((key, _))) = self.store.portal_by_room(&room) else {
            return;
        };
        let content = event.get("content");
        let result = match kind {
            Some("m.receipt") => {
                let mut result = Ok(());
                // {event id: {"m.read": {user: {...}}}}; the newest read event is enough, but
                // the order of the object is not the timeline's: each is looked at.
                for (event_id, by_type) in content.and_then(|c| c.as_object()).into_iter().flatten()
                {
                    let readers = by_type.get("m.read").and_then(|r| r.as_object());
                    let Ok(event_id) = ruma::OwnedEventId::try_from(event_id.as_str()) else {
                        continue;
                    };
                    for reader in readers.into_iter().flat_map(|r| r.keys()) {
                        let Ok(reader) = ruma::OwnedUserId::try_from(reader.as_str()) else {
                            continue;
                        };
                        if let Err(error) = self.outbound_read(&key, &reader, &event_id).await {
                            result = Err(error);
                        }
                    }
                }
                result
            }
            Some("m.typing") => {
                let typing: Vec<&str> = content
                    .and_then(|c| c.get("user_ids"))
                    .and_then(|u| u.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str())
                    .collect();
                let user = self
                    .logins_lock()
                    .get(&key.login)
                    .map(|l| l.matrix_user.clone());
                match user {
                    Some(user) => {
                        let is_typing = typing.contains(&user.as_str());
                        self.outbound_typing(&key, &user, is_typing).await
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        if let Err(error) = result {
            debug!(portal = %key, %error, "an ephemeral event was not bridged");
        }
    }
}
