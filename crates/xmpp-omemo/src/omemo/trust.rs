//! Trust in contacts' devices: what the account knows of them ([`DeviceInfo`]), and the user's
//! verdict on one, named by the fingerprint they compared ([`Account::set_trust_by_fingerprint`]).
//!
//! How trust is given in the first place is [`TrustPolicy`](super::TrustPolicy)'s: the devices
//! of a contact we meet for the first time are trusted blindly and silently; a known contact's
//! new device, and a known device's changed key, are reported
//! ([`OmemoEvent::IdentityChanged`](super::OmemoEvent::IdentityChanged)) and, under
//! [`TrustPolicy::Strict`](super::TrustPolicy::Strict), stored [`Trust::Untrusted`]: not
//! encrypted to until the user trusts them. A device the user marks untrusted is not encrypted
//! to under either policy. Messages from every device are decrypted.

use std::collections::BTreeMap;

use crate::Jid;

use super::account::{Account, EncryptError, now_ms};
use super::client::{OmemoClient, OmemoError};
use super::keys;
use super::signal::IdentityChangeSeen;
use super::store::{Changes, DeviceAddress, DeviceId, KnownIdentity, StoreError, Trust};

/// One device of a contact, as [`OmemoClient::devices_of`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device: DeviceId,
    /// Its identity key's fingerprint ([`keys::fingerprint`], grouped hex); `None` when the
    /// device is listed but no key of it was seen yet.
    pub fingerprint: Option<String>,
    /// How far its key is trusted; `None` when no key of it was seen yet.
    pub trust: Option<Trust>,
    /// Whether the contact's stored device list names it.
    pub listed: bool,
}

/// Why a device's trust was not set. `Display` is written for the user who typed the command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(
        "that is not a fingerprint: it has 64 hex digits (spaces, colons and dashes may \
         separate them, and a leading 05 may come first)"
    )]
    Malformed,
    #[error("no device of {jid} has that fingerprint")]
    NoMatch { jid: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The 32 key bytes a fingerprint names: 64 hex digits of any case, or 66 with the key's type
/// byte `05` first; spaces, colons and dashes are ignored.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let mut digits = Vec::with_capacity(66);
    for c in text.chars() {
        if c.is_whitespace() || c == ':' || c == '-' {
            continue;
        }
        digits.push(u8::try_from(c.to_digit(16)?).ok()?);
    }
    let digits = match digits.as_slice() {
        d if d.len() == 64 => d,
        [0, 5, rest @ ..] if rest.len() == 64 => rest,
        _ => return None,
    };
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Some(key)
}

impl Account {
    /// The devices of `jid` (bare) we know: its stored device lists (legacy and OMEMO 2) and
    /// every device whose identity key we stored, by ascending device id.
    pub fn devices_of(&self, jid: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        let mut devices = BTreeMap::new();
        let mut listed = self
            .store()
            .device_list(jid)?
            .map(|l| l.devices)
            .unwrap_or_default();
        listed.extend(
            self.store()
                .device_list2(jid)?
                .map(|l| l.devices)
                .unwrap_or_default(),
        );
        for device in listed {
            devices.insert(
                device,
                DeviceInfo {
                    device,
                    fingerprint: None,
                    trust: None,
                    listed: true,
                },
            );
        }
        for (device, known) in self.store().identities_of(jid)? {
            let info = devices.entry(device).or_insert(DeviceInfo {
                device,
                fingerprint: None,
                trust: None,
                listed: false,
            });
            info.fingerprint = Some(keys::fingerprint(&known.key));
            info.trust = Some(known.trust);
        }
        Ok(devices.into_values().collect())
    }

    /// Sets the trust of `jid`'s device whose stored identity key has `fingerprint` (see
    /// [`parse_fingerprint`]), durably (committed and flushed) before it returns. Devices that
    /// share the key all get it; the lowest id is returned. With [`Trust::Verified`] the next
    /// encryption includes the device (a session is built from its bundle if there is none);
    /// with [`Trust::Untrusted`] it leaves it out, under either policy.
    pub async fn set_trust_by_fingerprint(
        &self,
        jid: &str,
        fingerprint: &str,
        trust: Trust,
    ) -> Result<DeviceId, TrustError> {
        let wanted = parse_fingerprint(fingerprint).ok_or(TrustError::Malformed)?;
        let guard = self.lock_for(&[jid]).await;
        let mut changes = Changes::default();
        for (device, mut known) in self.store().identities_of(jid)? {
            if parse_fingerprint(&keys::fingerprint(&known.key)) == Some(wanted) {
                known.trust = trust;
                changes
                    .put_identities
                    .push((DeviceAddress::new(jid, device), known));
            }
        }
        let Some((first, _)) = changes.put_identities.first() else {
            return Err(TrustError::NoMatch {
                jid: jid.to_owned(),
            });
        };
        let device = first.device;
        self.update(guard, changes).commit().await?;
        Ok(device)
    }

    /// Stores the identity keys a failed encryption saw
    /// ([`EncryptError::NoDevice`](super::EncryptError::NoDevice)) as it would have (trusted
    /// or not), unless another operation stored another key of the device meanwhile. Returns
    /// those it stored, to report.
    pub async fn keep_identities(
        &self,
        seen: Vec<IdentityChangeSeen>,
    ) -> Result<Vec<IdentityChangeSeen>, StoreError> {
        if seen.is_empty() {
            return Ok(seen);
        }
        let mut jids: Vec<&str> = seen.iter().map(|c| c.device.jid.as_str()).collect();
        jids.sort_unstable();
        jids.dedup();
        let guard = self.lock_for(&jids).await;
        let mut changes = Changes::default();
        let mut kept = Vec::new();
        for change in seen {
            let stored = self.store().identity(&change.device)?.map(|k| k.key);
            if stored != change.old_key {
                continue;
            }
            let trust = if change.trusted {
                Trust::Blind
            } else {
                Trust::Untrusted
            };
            let known = KnownIdentity {
                key: change.new_key.clone(),
                trust,
                first_seen_ms: now_ms(),
            };
            changes.put_identities.push((change.device.clone(), known));
            kept.push(change);
        }
        self.update(guard, changes).commit().await?;
        Ok(kept)
    }

    /// [`keep_identities`](Self::keep_identities) of a failed encryption's `error`: leaves in
    /// it those stored, and returns them to report. A store failure is logged.
    pub(crate) async fn keep_unsent(&self, error: &mut EncryptError) -> Vec<IdentityChangeSeen> {
        let EncryptError::NoDevice {
            identity_changes, ..
        } = error
        else {
            return Vec::new();
        };
        match self.keep_identities(std::mem::take(identity_changes)).await {
            Ok(kept) => {
                identity_changes.clone_from(&kept);
                kept
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not store the identity keys a send saw");
                Vec::new()
            }
        }
    }
}

impl OmemoClient {
    /// The devices of `jid`'s account we know (see [`Account::devices_of`]).
    pub fn devices_of(&self, jid: &Jid) -> Result<Vec<DeviceInfo>, OmemoError> {
        Ok(self.account().devices_of(jid.bare().as_str())?)
    }

    /// Trusts or distrusts the device of `jid`'s account with `fingerprint`, durably (see
    /// [`Account::set_trust_by_fingerprint`]).
    pub async fn set_trust_by_fingerprint(
        &self,
        jid: &Jid,
        fingerprint: &str,
        trust: Trust,
    ) -> Result<DeviceId, TrustError> {
        self.account()
            .set_trust_by_fingerprint(jid.bare().as_str(), fingerprint, trust)
            .await
    }
}
