//! Requests that must take effect once although their answer can be lost: `createRoom` (no
//! transaction id at all) and event sends (the homeserver forgets an appservice user's
//! transaction ids when it restarts). After a failure that may have reached the homeserver,
//! the effect is looked for before another attempt.

use super::*;

impl MatrixClient {
    /// Creates a room, retrying like [`MatrixClient::send`] but never twice for one room: after
    /// a failure that may have reached the homeserver (no answer, 5xx), the creator's rooms are
    /// searched for the one whose create event carries `mark` before trying again.
    pub(super) async fn create_once(
        &self,
        creator: &UserId,
        request: create_room::v3::Request,
        mark: &str,
    ) -> Result<OwnedRoomId, MatrixError> {
        let mut delay = self.retry.first_delay;
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let error = match self.send_once(request.clone(), creator).await {
                Ok(response) => return Ok(response.room_id),
                Err(error) => error,
            };
            let maybe_created = match &error {
                MatrixError::Transport(_) => true,
                MatrixError::Api { status, .. } => *status >= 500,
                _ => false,
            };
            let retryable = maybe_created || matches!(&error, MatrixError::Api { status: 429, .. });
            if maybe_created && let Some(room) = self.created_room(creator, mark).await? {
                debug!(%creator, %room, "a room creation's answer was lost; found the room");
                return Ok(room);
            }
            if !retryable || attempt == attempts {
                return Err(error);
            }
            warn!(attempt, %error, "room creation failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
        Err(MatrixError::Transport("no attempt made".into()))
    }

    /// Sends an event, retrying like [`MatrixClient::send`] but never posting it twice: the
    /// homeserver remembers an appservice user's transaction ids only in memory, so after a
    /// failure that may have reached it (no answer, 5xx: it may have restarted mid-request) the
    /// room's newest events are searched for the event's [`TXN_FIELD`] before trying again.
    pub(super) async fn send_event_once(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        request: send_message_event::v3::Request,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut delay = self.retry.first_delay;
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let error = match self.send_once(request.clone(), user).await {
                Ok(response) => return Ok(response.event_id),
                Err(error) => error,
            };
            let maybe_posted = match &error {
                MatrixError::Transport(_) => true,
                MatrixError::Api { status, .. } => *status >= 500,
                _ => false,
            };
            let retryable = maybe_posted || matches!(&error, MatrixError::Api { status: 429, .. });
            if maybe_posted && let Some(event) = self.posted_event(user, room, txn_id).await? {
                debug!(%room, %event, "an event's answer was lost; found it in the room");
                return Ok(event);
            }
            if !retryable || attempt == attempts {
                return Err(error);
            }
            warn!(attempt, %error, "sending an event failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
        Err(MatrixError::Transport("no attempt made".into()))
    }

    /// The event `user` posted in `room` with transaction id `txn_id`, among the newest.
    async fn posted_event(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
    ) -> Result<Option<OwnedEventId>, MatrixError> {
        let events = self
            .recent_events(user, room, RECENT_FOR_LOST_SENDS)
            .await?;
        Ok(events.iter().find_map(|raw| {
            let sender = raw.get_field::<String>("sender").ok().flatten()?;
            let content = raw
                .get_field::<serde_json::Value>("content")
                .ok()
                .flatten()?;
            let ours = sender == user.as_str()
                && content.get(TXN_FIELD).and_then(|t| t.as_str()) == Some(txn_id.as_str());
            ours.then(|| raw.get_field::<OwnedEventId>("event_id").ok().flatten())
                .flatten()
        }))
    }

    /// The room among `creator`'s joined rooms whose create event carries `mark`.
    async fn created_room(
        &self,
        creator: &UserId,
        mark: &str,
    ) -> Result<Option<OwnedRoomId>, MatrixError> {
        let rooms = self
            .send(joined_rooms::v3::Request::new(), Some(creator))
            .await?
            .joined_rooms;
        for room in rooms {
            let request = get_state_event_for_key::v3::Request::new(
                room.clone(),
                StateEventType::RoomCreate,
                String::new(),
            );
            let Ok(response) = self.send(request, Some(creator)).await else {
                continue;
            };
            let content: serde_json::Value =
                serde_json::from_str(response.event_or_content.get()).unwrap_or_default();
            if content.get(CREATION_MARK).and_then(|m| m.as_str()) == Some(mark) {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }
}
