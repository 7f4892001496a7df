//! The OMEMO 2 half of [`OmemoClient`](super::OmemoClient) (XEP-0384 v0.8+,
//! `urn:xmpp:omemo:2`): our device list (`urn:xmpp:omemo:2:devices`, item `current`) and bundle
//! (an item of `urn:xmpp:omemo:2:bundles` whose id is our device id), contacts' lists and
//! bundles, sending and the empty messages that confirm or repair a session. Receiving shares
//! the legacy path (`EncryptedMessage::open` dispatches on the element's namespace).
//!
//! **Which version a message goes in.** Per contact: OMEMO 2 when [`Protocols`] allows it and
//! the contact announces an OMEMO 2 device list, else legacy OMEMO. One message is sent in one
//! version only; our own other devices get it if they speak that version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::Jid;
use crate::stanza::iq::Iq;
use crate::stanza::omemo2::{Bundle2, DeviceList2};
use crate::stanza::{FromElement, IntoElement, ns, pubsub};
use crate::stream::Error as StreamError;
use crate::xml::Element;

use super::super::account::{AccountGuard, now_ms};
use super::super::store::{Changes, DeviceAddress, DeviceId, DeviceList, StoreError};
use super::super::two::sce;
use super::{
    DEVICE_LIST_MAX_AGE, MAX_DEVICES_PER_ACCOUNT, OmemoError, OmemoEvent, SendReport, Shared,
    describe, encrypted_message,
};

/// Which OMEMO versions an account speaks: what it publishes, follows, and sends in. Messages
/// of either version are decrypted whatever the choice (nobody can start a session in a
/// version whose bundle we do not publish).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocols {
    /// Legacy OMEMO (`eu.siacs.conversations.axolotl`, XEP-0384 v0.3) only.
    Legacy,
    /// OMEMO 2 (`urn:xmpp:omemo:2`) only: contacts without it cannot be written to.
    Omemo2,
    /// Both: OMEMO 2 with contacts that announce it, legacy with the others.
    #[default]
    Both,
}

impl Protocols {
    pub fn legacy(self) -> bool {
        matches!(self, Protocols::Legacy | Protocols::Both)
    }

    pub fn omemo2(self) -> bool {
        matches!(self, Protocols::Omemo2 | Protocols::Both)
    }
}

/// The OMEMO version of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// `eu.siacs.conversations.axolotl`.
    Legacy,
    /// `urn:xmpp:omemo:2`.
    Omemo2,
}

/// Publish-options of the bundles node: open, persistent, and as many items as devices.
const BUNDLES_OPTIONS: &[(&str, &str)] = &[
    ("pubsub#access_model", "open"),
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
];
/// The same without `max_items`, for servers that refuse `max` (as slixmpp-omemo retries).
const BUNDLES_OPTIONS_FALLBACK: &[(&str, &str)] = &[
    ("pubsub#access_model", "open"),
    ("pubsub#persist_items", "true"),
];

impl Shared {
    /// Publishes our OMEMO 2 bundle as item `<device id>` of the bundles node.
    pub(super) async fn publish_bundle2(&self) -> Result<(), OmemoError> {
        let bundle = self.account.bundle2()?.into_element();
        let item = self.account.device_id().to_string();
        let node = ns::OMEMO2_BUNDLES;
        match (self.publish_with(node, &item, bundle.clone(), BUNDLES_OPTIONS)).await {
            Err(OmemoError::Stream(StreamError::IqError { condition })) => {
                tracing::info!(
                    condition,
                    "the server refused max_items=max; publishing without it"
                );
                (self.publish_with(node, &item, bundle, BUNDLES_OPTIONS_FALLBACK)).await
            }
            other => other,
        }
    }

    /// Adds our device to our OMEMO 2 device list (fetched unless given), if missing.
    pub(super) async fn announce_device2(
        &self,
        known: Option<Vec<DeviceId>>,
    ) -> Result<(), OmemoError> {
        let mut devices = match known {
            Some(d) => d,
            None => self.fetch_device_list2(&self.own).await?,
        };
        let ours = self.account.device_id();
        if devices.contains(&ours) {
            return Ok(());
        }
        devices.push(ours);
        devices.sort_unstable();
        let list = DeviceList2::new(devices.iter().map(|d| d.get()).collect());
        self.publish_open(ns::OMEMO2_DEVICES, list.into_element())
            .await?;
        self.store_device_list2(self.own.as_str(), &devices).await?;
        Ok(())
    }

    /// A push of `urn:xmpp:omemo:2:devices`: stored for accounts we deal with; our own device
    /// announced again if the list lacks it.
    pub(super) async fn on_device_list2(
        self: &Arc<Self>,
        from: Option<&Jid>,
        event: pubsub::Event,
    ) {
        let owner = from.map(Jid::bare).unwrap_or_else(|| self.own.clone());
        let devices = event
            .items
            .iter()
            .find_map(|item| item.payload.clone())
            .and_then(|p| DeviceList2::from_element(p).ok())
            .map(|l| l.devices)
            .unwrap_or_default();
        let mut devices: Vec<DeviceId> = devices.into_iter().filter_map(DeviceId::new).collect();
        devices.truncate(MAX_DEVICES_PER_ACCOUNT);
        if !self.deals_with_jid(&owner) {
            tracing::debug!("an OMEMO 2 device list of an account we do not deal with, not stored");
            return;
        }
        if let Err(e) = self.store_device_list2(owner.as_str(), &devices).await {
            tracing::warn!(error = %e, "could not store an OMEMO 2 device list");
        }
        if owner == self.own
            && self.protocols.omemo2()
            && !devices.contains(&self.account.device_id())
        {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.announce_device2(Some(devices)).await {
                    tracing::warn!(error = %e, "could not announce our OMEMO 2 device again");
                }
            });
        }
        self.emit(OmemoEvent::DeviceList {
            jid: owner.to_string(),
            devices: self.stored_devices(owner.as_str()),
        })
        .await;
    }

    async fn store_device_list2(&self, jid: &str, devices: &[DeviceId]) -> Result<(), StoreError> {
        let guard = self.account.lock_for(&[jid]).await;
        let list = DeviceList {
            devices: devices.to_vec(),
            updated_ms: now_ms(),
        };
        let changes = Changes {
            put_device_lists2: vec![(jid.to_owned(), list)],
            ..Changes::default()
        };
        self.account.update(guard, changes).commit().await
    }

    /// Fetches `jid`'s OMEMO 2 device list (no node: an empty list) and stores it, empty or not,
    /// so that a contact without OMEMO 2 is not asked again before [`DEVICE_LIST_MAX_AGE`].
    pub(super) async fn fetch_device_list2(&self, jid: &Jid) -> Result<Vec<DeviceId>, OmemoError> {
        let to = (jid != &self.own).then(|| jid.clone());
        let request = Iq::get("", to, pubsub::items_request(ns::OMEMO2_DEVICES, Some(1)));
        let devices = match self.xmpp.iq(request).await {
            Ok(answer) => super::first_item(answer)
                .map(DeviceList2::from_element)
                .transpose()
                .map_err(|e| {
                    OmemoError::Malformed(format!("{jid}'s OMEMO 2 device list: {}", describe(&e)))
                })?
                .map(|l| l.devices)
                .unwrap_or_default(),
            Err(StreamError::IqError { condition }) if condition == "item-not-found" => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut devices: Vec<DeviceId> = devices.into_iter().filter_map(DeviceId::new).collect();
        devices.truncate(MAX_DEVICES_PER_ACCOUNT);
        self.store_device_list2(jid.as_str(), &devices).await?;
        Ok(devices)
    }

    /// The contact's OMEMO 2 devices if this message goes in OMEMO 2 (see the module docs).
    /// A failed fetch means legacy when legacy is allowed.
    pub(super) async fn omemo2_devices_for_send(
        &self,
        to: &Jid,
    ) -> Result<Option<Vec<DeviceId>>, OmemoError> {
        if !self.protocols.omemo2() {
            return Ok(None);
        }
        let stored = self.account.store().device_list2(to.as_str())?;
        let max_age_ms = u64::try_from(DEVICE_LIST_MAX_AGE.as_millis()).unwrap_or(u64::MAX);
        let devices = match stored {
            Some(list) if now_ms().saturating_sub(list.updated_ms) < max_age_ms => list.devices,
            _ => match self.fetch_device_list2(to).await {
                Ok(devices) => devices,
                Err(e) if self.protocols.legacy() => {
                    tracing::info!(jid = %to, error = %e, "no OMEMO 2 device list; using legacy OMEMO");
                    Vec::new()
                }
                Err(e) => return Err(e),
            },
        };
        Ok((!devices.is_empty()).then_some(devices))
    }

    async fn fetch_bundle2(&self, device: &DeviceAddress) -> Result<Bundle2, OmemoError> {
        let jid = Jid::parse(&device.jid).map_err(|e| OmemoError::Malformed(e.to_string()))?;
        let to = (jid != self.own).then_some(jid);
        let id = device.device.to_string();
        let request = Iq::get("", to, pubsub::items_by_id(ns::OMEMO2_BUNDLES, &[&id]));
        let answer = self.xmpp.iq(request).await?;
        let crate::stanza::IqPayload::Result(Some(pubsub)) = answer.payload else {
            return Err(OmemoError::Malformed(format!(
                "{device} has no OMEMO 2 bundle"
            )));
        };
        let payload = pubsub::Items::from_element(pubsub)
            .ok()
            .and_then(|items| {
                items
                    .items
                    .into_iter()
                    .find(|i| i.id.as_deref() == Some(id.as_str()))
            })
            .and_then(|i| i.payload)
            .ok_or_else(|| OmemoError::Malformed(format!("{device} has no OMEMO 2 bundle")))?;
        Bundle2::from_element(payload).map_err(|e| {
            OmemoError::Malformed(format!("{device}'s OMEMO 2 bundle: {}", describe(&e)))
        })
    }

    /// The account's lock with the OMEMO 2 bundles of the `targets` without a session, fetched
    /// before the lock is taken (see `lock_with_bundles`).
    async fn lock_with_bundles2(
        &self,
        targets: &[DeviceAddress],
    ) -> Result<(AccountGuard, BTreeMap<DeviceAddress, Bundle2>), OmemoError> {
        let mut bundles = BTreeMap::new();
        let mut failed = BTreeSet::new();
        loop {
            let missing = |bundles: &BTreeMap<DeviceAddress, Bundle2>,
                           failed: &BTreeSet<DeviceAddress>|
             -> Result<Vec<DeviceAddress>, OmemoError> {
                Ok(self
                    .account
                    .without_session2(targets)?
                    .into_iter()
                    .filter(|d| !bundles.contains_key(d) && !failed.contains(d))
                    .collect())
            };
            for device in missing(&bundles, &failed)? {
                if device.jid == self.own.as_str() && device.device == self.account.device_id() {
                    continue;
                }
                match self.fetch_bundle2(&device).await {
                    Ok(bundle) => {
                        bundles.insert(device, bundle);
                    }
                    Err(e) => {
                        tracing::info!(device = %device, error = %e, "no OMEMO 2 bundle; skipping the device");
                        failed.insert(device);
                    }
                }
            }
            let mut jids: Vec<&str> = targets.iter().map(|t| t.jid.as_str()).collect();
            jids.dedup();
            let guard = self.account.lock_for(&jids).await;
            let own = DeviceAddress::new(self.own.as_str(), self.account.device_id());
            let left = missing(&bundles, &failed)?;
            if left.iter().all(|d| *d == own) {
                return Ok((guard, bundles));
            }
        }
    }

    /// Sends `body` (or an empty message) in OMEMO 2 to `contact_devices` of `to` and our own
    /// other OMEMO 2 devices.
    pub(super) async fn send2(
        &self,
        to: &Jid,
        body: Option<&str>,
        id: &str,
        extensions: Vec<Element>,
        contact_devices: Vec<DeviceId>,
    ) -> Result<SendReport, OmemoError> {
        let own_devices = match self.account.store().device_list2(self.own.as_str())? {
            Some(list) => list.devices,
            None => self.fetch_device_list2(&self.own).await.unwrap_or_default(),
        };
        let mut targets: Vec<DeviceAddress> = contact_devices
            .iter()
            .map(|d| DeviceAddress::new(to.as_str(), *d))
            .collect();
        targets.extend(
            own_devices
                .iter()
                .filter(|d| **d != self.account.device_id())
                .map(|d| DeviceAddress::new(self.own.as_str(), *d)),
        );
        let (guard, bundles) = self.lock_with_bundles2(&targets).await?;
        let content = body.map(|b| vec![sce::body(b)]);
        let sealed = match (self.account)
            .encrypt2(guard, to.as_str(), content, &targets, &bundles)
            .await
        {
            Ok(sealed) => sealed,
            Err(e) => return Err(self.keep_identities(e).await.into()),
        };
        let report = SendReport {
            id: id.to_owned(),
            devices: sealed.element.key_count(),
            new_sessions: sealed.new_sessions,
            skipped: sealed.skipped,
            identity_changes: sealed.identity_changes,
            namespace: super::Namespace::Omemo2,
        };
        sealed.state.commit().await?;
        for change in &report.identity_changes {
            self.emit(OmemoEvent::IdentityChanged(change.clone())).await;
        }
        let element = sealed.element.into_element();
        let mut message = encrypted_message(to, element, ns::OMEMO2, body.is_some(), id);
        message.payloads.extend(extensions);
        self.xmpp.send(message).await?;
        Ok(report)
    }

    /// An empty OMEMO 2 message to exactly `device`: confirms a session it started with a key
    /// exchange, or (`repair`) drops our broken session first and starts a new one from its
    /// bundle.
    pub(super) async fn send_empty2(
        &self,
        device: &DeviceAddress,
        repair: bool,
    ) -> Result<(), OmemoError> {
        if repair {
            let guard = self.account.lock_for(&[device.jid.as_str()]).await;
            let changes = Changes {
                remove_sessions2: vec![device.clone()],
                ..Changes::default()
            };
            self.account.update(guard, changes).commit().await?;
        }
        let to = Jid::parse(&device.jid).map_err(|e| OmemoError::Malformed(e.to_string()))?;
        let targets = std::slice::from_ref(device);
        let (guard, bundles) = self.lock_with_bundles2(targets).await?;
        let sealed = match (self.account)
            .encrypt2(guard, to.as_str(), None, targets, &bundles)
            .await
        {
            Ok(sealed) => sealed,
            Err(e) => return Err(self.keep_identities(e).await.into()),
        };
        sealed.state.commit().await?;
        for change in sealed.identity_changes {
            self.emit(OmemoEvent::IdentityChanged(change)).await;
        }
        let id = format!("kt-{}-{:08x}", now_ms(), rand::random::<u32>());
        let element = sealed.element.into_element();
        self.xmpp
            .send(encrypted_message(&to, element, ns::OMEMO2, false, &id))
            .await?;
        Ok(())
    }
}
