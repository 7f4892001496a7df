//! Files both ways, in the portal's own task (the room's worker outbound, the contact's lane
//! inbound), so a large transfer holds up only its portal.
//!
//! - Matrix → XMPP: the file is downloaded (authenticated media), decrypted if it is an
//!   encrypted attachment (its SHA-256 checked), re-encrypted with AES-256-GCM (XEP-0454) and
//!   uploaded to a slot of the account's server (XEP-0363); the contact gets the `aesgcm://`
//!   link as the OMEMO-encrypted body.
//! - XMPP → Matrix: a contact's `aesgcm://` link (or an `https://` link its XEP-0066 element
//!   names) is fetched through the SSRF guard, decrypted (the GCM tag checked), sniffed, and
//!   uploaded as the contact's ghost (as an encrypted attachment in an encrypted portal); the
//!   portal gets `m.image` / `m.video` / `m.audio` (a voice message for Ogg Opus) / `m.file`.
//!
//! Every transfer is streamed (see `media`); a check that fails at the end aborts the upload, so
//! nothing unverified or partial is delivered. A file above the smaller of `media.max_bytes`
//! and the receiving server's limit is refused before a byte moves, and its sender is told.

use std::sync::Arc;
use std::time::Duration;

use ruma::events::room::MediaSource;
use ruma::events::room::message::MessageType;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::logins::Login;
use super::messages::InboundIds;
use super::{Bridge, BridgeError};
use crate::ids::RemoteUserId;
use crate::media::cipher::{AesGcmLink, AttachmentKeys, fresh};
use crate::media::transfer::{self, TAG_LEN};
use crate::media::{MediaError, WebFiles, sniff};

/// How files are bridged.
#[derive(Clone)]
pub struct MediaSettings {
    pub web: Arc<dyn WebFiles>,
    /// The largest file bridged (the servers' limits apply too).
    pub max_bytes: u64,
    /// How long a transfer may go without a byte.
    pub stall: Duration,
}

impl std::fmt::Debug for MediaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSettings")
            .field("max_bytes", &self.max_bytes)
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

/// How often a transfer that failed for a passing reason (a stall, a reset, a 5xx) is tried.
const ATTEMPTS: u32 = 3;

/// The content type an upload of encrypted bytes is announced with.
const OCTET_STREAM: &str = "application/octet-stream";

/// The file a Matrix message carries.
pub(super) struct MatrixFile<'a> {
    pub name: String,
    pub source: &'a MediaSource,
    /// A caption the user wrote with it (the body, when a `filename` is given beside it).
    pub caption: Option<String>,
}

/// The file of an `m.image` / `m.video` / `m.audio` / `m.file` message.
pub(super) fn file_of(msgtype: &MessageType) -> Option<MatrixFile<'_>> {
    let (body, filename, source) = match msgtype {
        MessageType::Image(c) => (&c.body, &c.filename, &c.source),
        MessageType::Video(c) => (&c.body, &c.filename, &c.source),
        MessageType::Audio(c) => (&c.body, &c.filename, &c.source),
        MessageType::File(c) => (&c.body, &c.filename, &c.source),
        _ => return None,
    };
    let (name, caption) = match filename {
        Some(name) if name != body && !body.trim().is_empty() => (name.clone(), Some(body.clone())),
        Some(name) => (name.clone(), None),
        None => (body.clone(), None),
    };
    Some(MatrixFile {
        name: clean_name(&name),
        source,
        caption,
    })
}

/// A file name fit to announce: no path, no control characters, at most 200 characters.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim().trim_start_matches('.').to_owned();
    if clean.is_empty() {
        "file".into()
    } else {
        clean
    }
}

/// The file name at the end of a URL's path (percent-decoded), if any.
fn name_in_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_owned();
    let decoded = percent_decode(&last);
    let name = clean_name(&decoded);
    (name != "file" || decoded == "file").then_some(name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The keys of an encrypted attachment, read from its JSON form.
fn keys_of(file: &ruma::events::room::EncryptedFile) -> Result<AttachmentKeys, MediaError> {
    let json = serde_json::to_value(file).map_err(|e| MediaError::BadLink(e.to_string()))?;
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(&json, |v, k| v.get(k))
            .and_then(Value::as_str)
            .ok_or_else(|| MediaError::BadLink(format!("no {}", path.join("."))))
    };
    Ok(AttachmentKeys::from_wire(
        field(&["key", "k"])?,
        field(&["iv"])?,
        field(&["hashes", "sha256"])?,
    )?)
}

/// `op`, tried again (after 1 s, then 4 s) while it fails for a passing reason.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, MediaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MediaError>>,
{
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                warn!(error = %e, attempt, "a file transfer failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Bridge {
    fn media(&self) -> Result<&MediaSettings, MediaError> {
        self.settings.media.as_ref().ok_or(MediaError::Disabled)
    }

    /// Matrix → XMPP: uploads `file` (as `member`, the portal's ghost, reads it) to a slot of
    /// the login's server, encrypted; the `aesgcm://` link to send to the contact.
    pub(super) async fn outbound_file(
        &self,
        login: &Login,
        member: &UserId,
        file: &MatrixFile<'_>,
    ) -> Result<String, MediaError> {
        let media = self.media()?;
        let server_limit = login
            .client
            .upload_limit()
            .await
            .map_err(|e| MediaError::Upload(e.to_string()))?;
        // The slot holds the ciphertext: the file and its tag.
        let limit = media
            .max_bytes
            .min(server_limit.map_or(u64::MAX, |l| l.saturating_sub(TAG_LEN)));
        let (mxc, keys) = match file.source {
            MediaSource::Plain(mxc) => (mxc, None),
            MediaSource::Encrypted(encrypted) => (&encrypted.url, Some(keys_of(encrypted)?)),
        };
        with_retries(|| async {
            let source = self
                .matrix
                .download(member, mxc, limit, media.stall)
                .await?;
            let plain = match &keys {
                Some(keys) => transfer::attachment_decrypt(source, keys)?,
                None => source,
            };
            let (key, iv) = fresh();
            let sealed = transfer::gcm_encrypt(plain, &key, &iv)?;
            let slot = login
                .client
                .upload_slot(&file.name, sealed.len, OCTET_STREAM)
                .await
                .map_err(|e| MediaError::Upload(e.to_string()))?;
            media
                .web
                .put(&slot.put_url, &slot.put_headers, OCTET_STREAM, sealed)
                .await?;
            let link = AesGcmLink {
                https_url: slot.get_url,
                iv: iv.to_vec(),
                key,
            };
            Ok(link.to_url())
        })
        .await
    }

    /// What a contact's file message shows: the file, or a notice saying why it could not be
    /// bridged. A file too large is also refused to the contact, whose client then shows it
    /// as not delivered. A homeserver that fails for now is an error: the contact's lane tries
    /// again later and leaves the message unacknowledged meanwhile, as for a text.
    pub(super) async fn inbound_file_content(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        ids: &InboundIds,
        ghost: &UserId,
        room: &RoomId,
        link: &str,
    ) -> Result<Value, BridgeError> {
        let why = match self.inbound_file(ghost, room, link).await {
            Ok(content) => return Ok(content),
            Err(MediaError::Homeserver(why)) => {
                return Err(super::MatrixError::Transport(why).into());
            }
            Err(why) => why,
        };
        warn!(jid = %login.jid, contact = %contact, error = %why, "a contact's file was not bridged");
        if matches!(why, MediaError::TooLarge { .. }) {
            let text = format!("The file was not delivered: {why}.");
            if let Err(error) = login
                .client
                .refuse(contact, ids.client.as_deref(), ids.id.as_deref(), &text)
                .await
            {
                warn!(jid = %login.jid, %error, "cannot tell the contact their file was refused");
            }
        }
        let text = format!("📎 {contact} sent a file that could not be bridged: {why}.");
        Ok(json!({ "msgtype": "m.notice", "body": text }))
    }

    /// XMPP → Matrix: the content of an `m.image` / `m.video` / `m.audio` / `m.file` message
    /// for the file at `link`, uploaded as `ghost` for `room`.
    pub(super) async fn inbound_file(
        &self,
        ghost: &UserId,
        room: &RoomId,
        link: &str,
    ) -> Result<Value, MediaError> {
        let media = self.media()?;
        let homeserver_limit = self.matrix.upload_limit().await?;
        let limit = media.max_bytes.min(homeserver_limit.unwrap_or(u64::MAX));
        let gcm = if link.starts_with("aesgcm://") {
            Some(AesGcmLink::parse(link)?)
        } else {
            None
        };
        let url = gcm.as_ref().map_or(link, |l| l.https_url.as_str());
        let name = name_in_url(url).unwrap_or_else(|| "file".into());
        let encrypted = self
            .matrix
            .is_encrypted(ghost, room)
            .await
            .map_err(|e| MediaError::Homeserver(e.to_string()))?;
        with_retries(|| async {
            let source = match &gcm {
                Some(_) => media.web.get(url, limit.saturating_add(TAG_LEN)).await,
                None => media.web.get(url, limit).await,
            };
            let source = match (source, &gcm) {
                (Err(MediaError::TooLarge { size, limit }), Some(_)) => {
                    return Err(MediaError::TooLarge {
                        size: size.saturating_sub(TAG_LEN),
                        limit: limit.saturating_sub(TAG_LEN),
                    });
                }
                (source, _) => source?,
            };
            let announced = source.content_type.clone();
            let plain = match &gcm {
                Some(link) => transfer::gcm_decrypt(source, &link.key, &link.iv)?,
                None => source,
            };
            let (head, plain) = transfer::peek(plain).await?;
            let mimetype = sniff::sniff(&head)
                .or_else(|| sniff::from_extension(&name))
                .map(str::to_owned)
                .or_else(|| announced.clone().filter(|t| !t.starts_with(OCTET_STREAM)))
                .unwrap_or_else(|| OCTET_STREAM.to_owned());
            let size = plain.len;
            let mut info = json!({ "mimetype": mimetype, "size": size });
            if let Some((w, h)) = sniff::dimensions(&mimetype, &head) {
                info["w"] = w.into();
                info["h"] = h.into();
            }
            let msgtype = match sniff::kind_of(&mimetype) {
                sniff::Kind::Image => "m.image",
                sniff::Kind::Video => "m.video",
                sniff::Kind::Audio => "m.audio",
                sniff::Kind::File => "m.file",
            };
            let mut content = json!({
                "msgtype": msgtype,
                "body": name,
                "filename": name,
                "info": info,
            });
            if msgtype == "m.audio" && sniff::is_ogg_opus(&head) {
                content["org.matrix.msc3245.voice"] = json!({});
            }
            if encrypted {
                // The homeserver sees neither the name nor the type of an encrypted file.
                let (sealed, keys) = transfer::attachment_encrypt(plain);
                let mxc = self.matrix.upload(ghost, "", OCTET_STREAM, sealed).await?;
                let keys = keys.await.map_err(|_| MediaError::Integrity)?;
                content["file"] = json!({
                    "v": "v2",
                    "url": mxc,
                    "key": {
                        "kty": "oct",
                        "key_ops": ["encrypt", "decrypt"],
                        "alg": "A256CTR",
                        "k": keys.key_jwk_k(),
                        "ext": true,
                    },
                    "iv": keys.iv_base64(),
                    "hashes": { "sha256": keys.sha256_base64() },
                });
            } else {
                let mxc = self.matrix.upload(ghost, &name, &mimetype, plain).await?;
                content["url"] = json!(mxc);
            }
            info!(room = %room, msgtype, size, "a contact's file bridged");
            Ok(content)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_beside_a_different_filename_is_a_caption() {
        use ruma::events::room::message::{FileMessageEventContent, ImageMessageEventContent};
        let mxc = ruma::owned_mxc_uri!("mxc://hs.example/abc");
        let image = MessageType::Image(ImageMessageEventContent::plain(
            "holiday.jpg".into(),
            mxc.clone(),
        ));
        let file = file_of(&image).expect("a file");
        assert_eq!(
            (file.name.as_str(), file.caption.as_deref()),
            ("holiday.jpg", None)
        );
        let mut captioned = FileMessageEventContent::plain("look at this".into(), mxc.clone());
        captioned.filename = Some("../report.pdf".into());
        let captioned = MessageType::File(captioned);
        let file = file_of(&captioned).expect("a file");
        assert_eq!(file.name, "report.pdf");
        assert_eq!(file.caption.as_deref(), Some("look at this"));
        let mut same = FileMessageEventContent::plain("a.pdf".into(), mxc);
        same.filename = Some("a.pdf".into());
        assert_eq!(
            file_of(&MessageType::File(same)).expect("a file").caption,
            None
        );
        assert!(file_of(&MessageType::text_plain("hi")).is_none());
    }

    #[test]
    fn names_lose_paths_and_control_characters() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("a\u{0}b\nc.jpg"), "abc.jpg");
        assert_eq!(clean_name(".hidden"), "hidden");
        assert_eq!(clean_name(""), "file");
        assert_eq!(clean_name(&"x".repeat(300)).len(), 200);
    }

    #[test]
    fn a_url_names_its_file() {
        assert_eq!(
            name_in_url("https://up.example/slot/abc/holiday%20photo.jpg").as_deref(),
            Some("holiday photo.jpg")
        );
        assert_eq!(name_in_url("https://up.example/").as_deref(), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
