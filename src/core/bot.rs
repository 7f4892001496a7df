//! The management room: commands said to the bot, and the password step of `link`.
//!
//! `link <jid>` asks for the password; the user's next message in the room is taken as the
//! password, redacted at once, and used. The pending step lives in memory only: after a
//! restart the user says `link` again.

use ruma::events::room::message::RoomMessageEventContent;
use ruma::{EventId, RoomId, UserId};
use tracing::{info, warn};

use super::logins::normalise_jid;
use super::{BlockedAt, Bridge, BridgeError, NetworkError, devices, txn_for};
use crate::commands::{self, Command, Reply};
use crate::store::{PortalRecord, PortalState};

/// Why a user's command did not do what it asked. The bot answers with it in the management
/// room; the CLI prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The user has no linked account.
    #[error("no linked account")]
    NotLinked,
    /// Refused, with the reason for the user: a malformed JID, a fingerprint of no device of
    /// the contact, a command that is not run this way.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Failed(#[from] BridgeError),
}

impl From<NetworkError> for CommandError {
    fn from(error: NetworkError) -> Self {
        Self::Failed(error.into())
    }
}

/// A `link` waiting for the password.
#[derive(Debug, Clone)]
pub(super) struct PendingLink {
    jid: String,
    register: bool,
}

impl Bridge {
    /// A message from the owner of a management room.
    pub(super) async fn bot_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        body: &str,
        event_id: &str,
    ) -> Result<(), BridgeError> {
        let pending = self
            .pending_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(sender);
        let reply = match pending {
            Some(pending) if body.trim() != "cancel" => {
                self.password_received(room, sender, body, event_id, pending)
                    .await
            }
            Some(_) => Reply::text("Cancelled."),
            None => match commands::parse(body) {
                Err(unknown) => unknown,
                Ok(command) => match commands::static_reply(&command) {
                    Some(reply) => reply,
                    None => self.run_command(sender, command).await,
                },
            },
        };
        let content = RoomMessageEventContent::notice_html(reply.plain, reply.html);
        self.send_as_bot(room, &txn_for("reply", event_id), &content)
            .await
    }

    async fn password_received(
        &self,
        room: &RoomId,
        sender: &UserId,
        password: &str,
        event_id: &str,
        pending: PendingLink,
    ) -> Reply {
        let mut redacted = true;
        match EventId::parse(event_id) {
            Ok(event) => {
                if let Err(error) = self
                    .matrix
                    .redact(
                        &self.settings.bot,
                        room,
                        &event,
                        &txn_for("redact", event_id),
                        Some("password"),
                    )
                    .await
                {
                    warn!(room = %room, %error, "cannot redact the password message");
                    redacted = false;
                }
            }
            Err(_) => redacted = false,
        }
        let mut text = match self
            // Exactly as sent: a password may begin or end with spaces.
            .link(sender, &pending.jid, password, pending.register)
            .await
        {
            Ok(info) => format!(
                "Linked {}. Your OMEMO device is {} with fingerprint {}. Contacts who write to \
                 you appear as chats; say `start-chat <jid>` to write first.",
                info.jid, info.device, info.fingerprint
            ),
            Err(error) => format!("Could not link {}: {error}", pending.jid),
        };
        if !redacted {
            text.push_str(
                "\n⚠️ I could not redact the message with your password (I need the power to \
                 remove messages in this room): please delete it yourself.",
            );
        }
        Reply::text(text)
    }

    async fn run_command(&self, sender: &UserId, command: Command) -> Reply {
        match self.command_reply(sender, command).await {
            Ok(reply) => reply,
            Err(error) => {
                warn!(%error, "command failed");
                Reply::text(format!("That failed: {error}"))
            }
        }
    }

    async fn command_reply(&self, sender: &UserId, command: Command) -> Result<Reply, BridgeError> {
        let login = self.login_of_user(sender);
        let not_linked = || Reply::text("You have not linked an account: say `link <your JID>`.");
        Ok(match command {
            Command::Link { jid, register } => {
                if let Err(error) = normalise_jid(&jid) {
                    return Ok(Reply::text(error.to_string()));
                }
                self.pending_links
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(
                        sender.to_owned(),
                        PendingLink {
                            jid: jid.clone(),
                            register,
                        },
                    );
                let what = if register {
                    "the password for the new account"
                } else {
                    "its password"
                };
                Reply::text(format!(
                    "To link {jid}, send {what} as your next message in this room. I redact it \
                     right after reading it. Say `cancel` to stop."
                ))
            }
            Command::Unlink => match self.unlink(sender).await? {
                Some(_) => Reply::text("Done."),
                None => not_linked(),
            },
            Command::Identities | Command::Status => {
                let statuses = self.statuses(Some(sender))?;
                if statuses.is_empty() {
                    not_linked()
                } else {
                    Reply::text(
                        statuses
                            .iter()
                            .map(|s| s.describe())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                }
            }
            Command::StartChat { jid } => {
                let Some(login) = login else {
                    return Ok(not_linked());
                };
                let contact = match normalise_jid(&jid) {
                    Ok(c) => c,
                    Err(e) => return Ok(Reply::text(e.to_string())),
                };
                let room = self.start_chat(&login, &contact).await?;
                info!(jid = %login.jid, room = %room, "start-chat");
                Reply::text(format!(
                    "The chat with {contact} is ready: I invited you to it."
                ))
            }
            Command::Block { jid } => {
                let Some(login) = login else {
                    return Ok(not_linked());
                };
                let contact = match normalise_jid(&jid) {
                    Ok(c) => c,
                    Err(e) => return Ok(Reply::text(e.to_string())),
                };
                let at = login.client.block(&contact).await?;
                if at == BlockedAt::Bridge {
                    self.store.set_blocked(&login.jid, &contact, true)?;
                }
                let key = crate::ids::PortalKey {
                    login: login.jid.clone(),
                    contact: contact.clone(),
                };
                if let Some(portal) = self.store.portal(&key)?
                    && portal.state == PortalState::Request
                {
                    let declined = PortalRecord {
                        state: PortalState::Declined,
                        ..portal.clone()
                    };
                    self.store.put_portal(&key, &declined)?;
                    if let Ok(ghost) = self.settings.ghosts.ghost_of(&contact) {
                        let _ = self.matrix.leave_room(&ghost, &portal.room).await;
                    }
                }
                self.flush().await?;
                info!(jid = %login.jid, ?at, "contact blocked");
                Reply::text(match at {
                    BlockedAt::Server => format!("Blocked {contact} on your server."),
                    BlockedAt::Bridge => format!(
                        "Blocked {contact} in the bridge (your server does not support blocking)."
                    ),
                })
            }
            Command::Unblock { jid } => {
                let Some(login) = login else {
                    return Ok(not_linked());
                };
                let contact = match normalise_jid(&jid) {
                    Ok(c) => c,
                    Err(e) => return Ok(Reply::text(e.to_string())),
                };
                login.client.unblock(&contact).await?;
                self.store.set_blocked(&login.jid, &contact, false)?;
                self.flush().await?;
                Reply::text(format!("Unblocked {contact}."))
            }
            command @ (Command::Devices { .. }
            | Command::SafetyNumber { .. }
            | Command::Trust { .. }) => match self.run_user_command(sender, command).await {
                Ok(reply) => reply,
                Err(CommandError::NotLinked) => not_linked(),
                Err(CommandError::Refused(why)) => Reply::text(why),
                Err(CommandError::Failed(error)) => return Err(error),
            },
            Command::Cancel => Reply::text("Nothing to cancel."),
            Command::Help | Command::Version => Reply::text("?"),
        })
    }

    /// Runs a command about a contact's OMEMO devices (`devices`, `safety-number`, `trust`,
    /// `untrust`) for `user` with their login: the management room's path, and the CLI's
    /// through the admin socket. Any other command is `Refused`: the bot runs those itself.
    pub async fn run_user_command(
        &self,
        user: &UserId,
        command: Command,
    ) -> Result<Reply, CommandError> {
        let login = self.login_of_user(user).ok_or(CommandError::NotLinked)?;
        let contact_of =
            |jid: &str| normalise_jid(jid).map_err(|e| CommandError::Refused(e.to_string()));
        Ok(match command {
            Command::Devices { jid } => {
                let contact = contact_of(&jid)?;
                let devices = login.client.devices(&contact).await?;
                Reply::text(devices::list(&contact, &devices))
            }
            Command::SafetyNumber { jid } => {
                let contact = contact_of(&jid)?;
                let devices = login.client.devices(&contact).await?;
                Reply::text(devices::safety_number(
                    &login.jid,
                    login.client.device(),
                    &contact,
                    &devices,
                ))
            }
            Command::Trust {
                jid,
                fingerprint,
                trusted,
            } => {
                let contact = contact_of(&jid)?;
                let device = match login
                    .client
                    .set_trust(&contact, &fingerprint, trusted)
                    .await
                {
                    Ok(device) => device,
                    Err(NetworkError::Other(why)) => return Err(CommandError::Refused(why)),
                    Err(error) => return Err(error.into()),
                };
                info!(jid = %login.jid, device, trusted, "contact device trust set");
                Reply::text(if trusted {
                    format!(
                        "Trusted {contact}'s device {device}: your messages are encrypted to \
                         it from now on."
                    )
                } else {
                    format!(
                        "Untrusted {contact}'s device {device}: your messages are no longer \
                         encrypted to it. Say `trust {contact} <fingerprint>` to undo."
                    )
                })
            }
            other => {
                return Err(CommandError::Refused(format!(
                    "not a command about a contact's devices: {other:?}"
                )));
            }
        })
    }
}
