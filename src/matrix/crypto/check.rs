//! The start-up check that the homeserver gives the appservice what end-to-bridge encryption
//! needs (MSC4190 devices, MSC4203 to-device events, MSC3202 key counts), and turning
//! encryption off for the run when it does not.

use super::*;

impl Crypto {
    /// Why encryption cannot work here, if the self-check found it cannot.
    pub fn unusable(&self) -> Option<String> {
        self.unusable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Checks, once the appservice server takes transactions, that the homeserver gives the
    /// appservice what end-to-bridge encryption needs: a device for the bot (MSC4190), its own
    /// to-device probe back in a transaction (MSC4203) and one-time-key counts (MSC3202), within
    /// `wait`. Returns what is missing, each with the setting to add; the caller then turns
    /// encryption off ([`disable`](Self::disable)).
    ///
    /// Once a check passed, the bot's store remembers it, and later starts probe in the
    /// background and only log what does not come: after the bridge was down, the homeserver
    /// sends transactions again only when its retry backoff ends, which proves nothing missing.
    pub async fn self_check(self: &Arc<Self>, bot: &UserId, wait: Duration) -> Vec<String> {
        let machine = match self.machine(bot).await {
            Ok(machine) => machine,
            Err(error) => {
                return vec![format!(
                    "the bot's device could not be created ({error}): the registration needs \
                     `io.element.msc4190: true` (appservice device management, MSC4190; Synapse \
                     1.141 or newer)"
                )];
            }
        };
        let store = machine.olm.store();
        let passed_before = matches!(
            store.get_custom_value(HOMESERVER_CHECKED).await,
            Ok(Some(_))
        );
        if passed_before {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                for what in this.probe(&machine, wait * 8).await {
                    warn!(
                        "{what} (it worked before: the homeserver may still be retrying after an outage)"
                    );
                }
            });
            return Vec::new();
        }
        let missing = self.probe(&machine, wait).await;
        if missing.is_empty()
            && let Err(error) = store
                .set_custom_value(HOMESERVER_CHECKED, b"1".to_vec())
                .await
        {
            warn!(%error, "cannot remember that the homeserver check passed");
        }
        missing
    }

    /// Sends the bot's device a to-device probe and waits up to `wait` for it and for key
    /// counts to come back in transactions; returns what did not.
    async fn probe(&self, machine: &Machine, wait: Duration) -> Vec<String> {
        let mut seen = self.seen.subscribe();
        let mut messages = BTreeMap::new();
        let mut to_bot = BTreeMap::new();
        let content = serde_json::json!({ "nonce": digest(&format!("{:?}", Instant::now())) });
        let content = serde_json::value::to_raw_value(&content)
            .map(Raw::from_json)
            .expect("a JSON object serializes");
        to_bot.insert(
            ruma::to_device::DeviceIdOrAllDevices::DeviceId(machine.device.clone()),
            content,
        );
        messages.insert(machine.user.clone(), to_bot);
        let probe = send_event_to_device::v3::Request::new_raw(
            PROBE.into(),
            ruma::TransactionId::new(),
            messages,
        );
        let mut missing = Vec::new();
        if let Err(error) = self.send_as(machine, probe).await {
            missing.push(format!("the probe could not be sent: {error}"));
            return missing;
        }
        let _ = tokio::time::timeout(wait, seen.wait_for(|s| s.probe && s.key_counts)).await;
        let found = *seen.borrow();
        if !found.probe {
            missing.push(
                "to-device events never reached the bridge: Synapse needs \
                 `experimental_features: { msc2409_to_device_messages_enabled: true }` (MSC4203) \
                 and the registration `de.sorunome.msc2409.push_ephemeral: true`"
                    .into(),
            );
        }
        if !found.key_counts {
            missing.push(
                "one-time-key counts never reached the bridge: Synapse needs \
                 `experimental_features: { msc3202_transaction_extensions: true }` and the \
                 registration `org.matrix.msc3202: true` (MSC3202)"
                    .into(),
            );
        }
        missing
    }

    /// Turns encryption off for this run: no machine opens any more, encrypted messages get a
    /// notice naming `why`, and new portals are plain.
    pub fn disable(&self, why: String) {
        *self
            .unusable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }
}
