//! TEMPORARY stand-in for the convert module (being written on its own branch).

use ruma::UserId;
use ruma::events::room::message::{MessageType, RoomMessageEventContent};

pub struct OutgoingText {
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("unsupported msgtype {msgtype}")]
pub struct Unsupported {
    pub msgtype: String,
}

pub fn to_xmpp(
    content: &RoomMessageEventContent,
    _names: &dyn Fn(&UserId) -> Option<String>,
) -> Result<OutgoingText, Unsupported> {
    match &content.msgtype {
        MessageType::Text(t) => Ok(OutgoingText { body: t.body.clone() }),
        MessageType::Notice(t) => Ok(OutgoingText { body: t.body.clone() }),
        MessageType::Emote(t) => Ok(OutgoingText { body: format!("/me {}", t.body) }),
        other => Err(Unsupported { msgtype: other.msgtype().to_owned() }),
    }
}

pub fn to_matrix(body: &str) -> RoomMessageEventContent {
    RoomMessageEventContent::text_plain(body)
}
