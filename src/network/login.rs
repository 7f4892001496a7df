//! One linked identity's connection as the core's `LoginClient`: sends, signals, the roster,
//! blocking, what contacts' clients support, their devices and the trust in them, and files
//! (`files.rs`).

use super::*;
use crate::core::{CatchUpFrom, ContactDevice, DeviceTrust};
use xmpp_omemo::omemo::Trust;
use xmpp_omemo::stanza::mam::Page as ArchivePage;

/// One linked identity's connection.
pub(super) struct XmppLogin {
    pub(super) client: OmemoClient,
    pub(super) connected: Arc<AtomicBool>,
    /// Whether the server supports XEP-0191, asked once.
    pub(super) blocking: OnceCell<bool>,
    /// The contacts' available resources, kept by the event pump.
    pub(super) presences: Arc<StdMutex<PresenceBook>>,
    pub(super) features: FeatureCache,
    /// Whether our messages ask for a delivery receipt.
    pub(super) request_receipts: bool,
}

/// How long a contact's client has to answer what it supports.
const DISCO_WAIT: Duration = Duration::from_secs(10);

impl XmppLogin {
    pub(super) fn jid(to: &RemoteUserId) -> Result<Jid, NetworkError> {
        Jid::parse(to.as_str()).map_err(|e| NetworkError::Other(format!("not a JID: {e}")))
    }

    async fn supports_blocking(&self) -> Result<bool, NetworkError> {
        self.blocking
            .get_or_try_init(|| async {
                self.client
                    .xmpp()
                    .supports_blocking()
                    .await
                    .map_err(stream_error)
            })
            .await
            .copied()
    }
}

pub(super) fn omemo_error(e: OmemoError) -> NetworkError {
    match e {
        OmemoError::NoDevices { jid } => NetworkError::Encrypt(format!(
            "{jid} has no OMEMO device (their client must support OMEMO encryption)"
        )),
        OmemoError::Encrypt(e) => NetworkError::Encrypt(e.to_string()),
        OmemoError::Stream(e) => stream_error(e),
        other => NetworkError::Other(other.to_string()),
    }
}

pub(super) fn stream_error(e: stream::Error) -> NetworkError {
    match e {
        stream::Error::Closed => NetworkError::NotConnected,
        other => NetworkError::Other(other.to_string()),
    }
}

#[async_trait]
impl LoginClient for XmppLogin {
    async fn send_message(
        &self,
        to: &RemoteUserId,
        message: &OutgoingMessage,
    ) -> Result<(), NetworkError> {
        let to = Self::jid(to)?;
        let extensions = message_extensions(message, self.request_receipts);
        let report = self
            .client
            .send_message(&to, &message.body, &message.id, &extensions)
            .await
            .map_err(omemo_error)?;
        if !report.skipped.is_empty() {
            debug!(skipped = report.skipped.len(), "some devices were skipped");
        }
        Ok(())
    }

    async fn send_signal(
        &self,
        to: &RemoteUserId,
        id: &str,
        signal: &Signal,
    ) -> Result<(), NetworkError> {
        let to = Self::jid(to)?;
        self.client
            .send_meta(&to, id, &signal_extensions(signal))
            .await
            .map_err(omemo_error)
    }

    async fn add_contact(
        &self,
        contact: &RemoteUserId,
        name: Option<&str>,
    ) -> Result<(), NetworkError> {
        let jid = Self::jid(contact)?;
        let xmpp = self.client.xmpp();
        let mut item = RosterItem::new(jid.clone());
        item.name = name.map(str::to_owned);
        xmpp.roster_set(item).await.map_err(stream_error)?;
        xmpp.approve_subscription(&jid)
            .await
            .map_err(stream_error)?;
        xmpp.subscribe(&jid).await.map_err(stream_error)?;
        Ok(())
    }

    async fn approve(&self, contact: &RemoteUserId) -> Result<(), NetworkError> {
        self.client
            .xmpp()
            .approve_subscription(&Self::jid(contact)?)
            .await
            .map_err(stream_error)
    }

    async fn block(&self, contact: &RemoteUserId) -> Result<BlockedAt, NetworkError> {
        if !self.supports_blocking().await? {
            return Ok(BlockedAt::Bridge);
        }
        self.client
            .xmpp()
            .block(&Self::jid(contact)?)
            .await
            .map_err(stream_error)?;
        Ok(BlockedAt::Server)
    }

    async fn unblock(&self, contact: &RemoteUserId) -> Result<(), NetworkError> {
        if self.supports_blocking().await? {
            self.client
                .xmpp()
                .unblock(&Self::jid(contact)?)
                .await
                .map_err(stream_error)?;
        }
        Ok(())
    }

    fn presence_of(&self, contact: &RemoteUserId) -> Option<(Availability, Option<String>)> {
        self.presences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .current(contact)
    }

    async fn capabilities(&self, contact: &RemoteUserId) -> Option<Capabilities> {
        let resources = self
            .presences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .resources(contact);
        let mut known: Option<Capabilities> = None;
        for (jid, caps) in resources {
            let xmpp = self.client.xmpp().clone();
            let to = jid.clone();
            let query = |node: Option<String>| async move {
                let request = Iq::get("", Some(to), DiscoInfo::request(node).into_element());
                let answer = tokio::time::timeout(DISCO_WAIT, xmpp.iq(request))
                    .await
                    .ok()?
                    .ok()?;
                match answer.payload {
                    IqPayload::Result(Some(info)) => DiscoInfo::from_element(info).ok(),
                    _ => None,
                }
            };
            let Some(features) = self.features.resolve(&jid, caps.as_ref(), query).await else {
                continue;
            };
            let mut all = known.unwrap_or_default();
            all.replies |= features.replies;
            all.corrections |= features.corrections;
            all.reactions |= features.reactions;
            all.retractions |= features.retractions;
            known = Some(all);
        }
        known
    }

    async fn upload_limit(&self) -> Result<Option<u64>, NetworkError> {
        self.upload_limit_of_server().await
    }

    async fn upload_slot(
        &self,
        filename: &str,
        size: u64,
        content_type: &str,
    ) -> Result<UploadSlot, NetworkError> {
        self.slot(filename, size, content_type).await
    }

    async fn refuse(
        &self,
        contact: &RemoteUserId,
        client: Option<&str>,
        id: Option<&str>,
        why: &str,
    ) -> Result<(), NetworkError> {
        self.refuse_message(contact, client, id, why).await
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn catch_up(
        &self,
        start: CatchUpFrom,
        limit: usize,
        round: u64,
    ) -> Result<(), NetworkError> {
        let start = match start {
            CatchUpFrom::After(id) => ArchivePage::After(Some(id)),
            CatchUpFrom::Since(time) => {
                let secs = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                ArchivePage::Since(xmpp_omemo::stanza::mam::timestamp(secs))
            }
        };
        self.client
            .catch_up(start, limit, round)
            .await
            .map(|_| ())
            .map_err(|e| NetworkError::Other(e.to_string()))
    }

    fn hold_used_prekeys(&self) {
        self.client.hold_used_prekeys();
    }

    async fn release_used_prekeys(&self) -> Result<(), NetworkError> {
        self.client
            .release_used_prekeys()
            .await
            .map(|_| ())
            .map_err(|e| NetworkError::Other(e.to_string()))
    }

    fn device(&self) -> (u32, String) {
        (self.client.device_id().get(), self.client.fingerprint())
    }

    async fn devices(&self, contact: &RemoteUserId) -> Result<Vec<ContactDevice>, NetworkError> {
        let devices = self
            .client
            .devices_of(&Self::jid(contact)?)
            .map_err(omemo_error)?;
        Ok(devices
            .into_iter()
            .map(|d| ContactDevice {
                device: d.device.get(),
                fingerprint: d.fingerprint,
                trust: match d.trust {
                    None => DeviceTrust::Unknown,
                    Some(Trust::Blind) => DeviceTrust::Blind,
                    Some(Trust::Verified) => DeviceTrust::Verified,
                    Some(Trust::Untrusted) => DeviceTrust::Untrusted,
                },
                listed: d.listed,
            })
            .collect())
    }

    async fn set_trust(
        &self,
        contact: &RemoteUserId,
        fingerprint: &str,
        trusted: bool,
    ) -> Result<u32, NetworkError> {
        let trust = if trusted {
            Trust::Verified
        } else {
            Trust::Untrusted
        };
        let device = self
            .client
            .set_trust_by_fingerprint(&Self::jid(contact)?, fingerprint, trust)
            .await
            .map_err(|e| NetworkError::Other(e.to_string()))?;
        Ok(device.get())
    }

    async fn close(&self) {
        self.client.close().await;
    }
}
