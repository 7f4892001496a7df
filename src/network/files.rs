//! Files on the XMPP side: the account's XEP-0363 upload service (its limit and its slots), and
//! the error reply that tells a contact their message (a file too large) was not delivered.

use tracing::warn;
use xmpp_omemo::UploadError;
use xmpp_omemo::omemo::OmemoError;
use xmpp_omemo::stanza::error::{Condition, ErrorType, StanzaError};
use xmpp_omemo::stanza::message::{Message, MessageType};

use xmpp_omemo::Jid;

use super::XmppLogin;
use super::login::omemo_error;
use crate::core::{NetworkError, UploadSlot};
use crate::ids::RemoteUserId;

fn upload_error(e: OmemoError) -> NetworkError {
    match e {
        OmemoError::Upload(UploadError::TooLarge {
            max_file_size: Some(max),
        }) => NetworkError::Other(format!(
            "the file is too large for the XMPP server (at most {})",
            crate::media::human_size(max)
        )),
        OmemoError::Upload(e) => NetworkError::Other(e.to_string()),
        other => omemo_error(other),
    }
}

impl XmppLogin {
    pub(super) async fn upload_limit_of_server(&self) -> Result<Option<u64>, NetworkError> {
        match self.client.upload_service().await.map_err(upload_error)? {
            Some(service) => Ok(service.max_file_size),
            None => Err(NetworkError::Other(
                "the XMPP server has no file upload service (XEP-0363)".into(),
            )),
        }
    }

    pub(super) async fn slot(
        &self,
        filename: &str,
        size: u64,
        content_type: &str,
    ) -> Result<UploadSlot, NetworkError> {
        let slot = self
            .client
            .upload_slot(filename, size, content_type)
            .await
            .map_err(upload_error)?;
        Ok(UploadSlot {
            put_url: slot.put_url,
            put_headers: slot.put_headers,
            get_url: slot.get_url,
        })
    }

    /// An error reply to `contact`'s message `id` (`not-acceptable`, modify), with `why`.
    pub(super) async fn refuse_message(
        &self,
        contact: &RemoteUserId,
        client: Option<&str>,
        id: Option<&str>,
        why: &str,
    ) -> Result<(), NetworkError> {
        let to = match client.map(Jid::parse) {
            Some(Ok(full)) if full.bare().as_str() == contact.as_str() => full,
            _ => Self::jid(contact)?,
        };
        let mut error = StanzaError::new(ErrorType::Modify, Condition::NotAcceptable);
        error.text = Some(why.to_owned());
        let bounce = Message {
            to: Some(to),
            id: id.map(str::to_owned),
            kind: MessageType::Error,
            error: Some(error),
            ..Message::default()
        };
        // In a task of its own: the send waits for the server's acknowledgement, which comes
        // behind inbound stanzas the caller may be holding up.
        let xmpp = self.client.xmpp().clone();
        tokio::spawn(async move {
            if let Err(e) = xmpp.send(bounce).await {
                warn!(error = %e, "cannot send an error reply to a contact");
            }
        });
        Ok(())
    }
}
