//! Namespace URIs, one place.

pub const CLIENT: &str = "jabber:client";
pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const SM: &str = "urn:xmpp:sm:3";
pub const PING: &str = "urn:xmpp:ping";
pub const CARBONS: &str = "urn:xmpp:carbons:2";
pub const FORWARD: &str = "urn:xmpp:forward:0";
pub const ROSTER: &str = "jabber:iq:roster";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const DELAY: &str = "urn:xmpp:delay";
pub const SID: &str = "urn:xmpp:sid:0";
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0313 message archive management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0059 result set management (paging).
pub const RSM: &str = "http://jabber.org/protocol/rsm";
pub const CAPS: &str = "http://jabber.org/protocol/caps";
pub const REGISTER: &str = "jabber:iq:register";
/// The stream feature announcing XEP-0077 in-band registration.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191: the application condition of an error for a stanza to a contact we blocked.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
pub const NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0461 message replies.
pub const REPLY: &str = "urn:xmpp:reply:0";
/// XEP-0428 fallback indication.
pub const FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0428's namespace before 0.2, still sent by Movim, Converse and slixmpp: read, never
/// written.
pub const FALLBACK_LEGACY: &str = "urn:xmpp:feature-fallback:0";
/// XEP-0308 last message correction.
pub const CORRECT: &str = "urn:xmpp:message-correct:0";
/// XEP-0444 message reactions.
pub const REACTIONS: &str = "urn:xmpp:reactions:0";
/// XEP-0424 message retraction, version 1 (and the older 0, inside XEP-0422 `<apply-to/>`).
pub const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424 before 0.4: a `<retract/>` inside XEP-0422 `<apply-to/>`. Read, never written.
pub const RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0422 message fastening.
pub const FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0085 chat state notifications.
pub const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0333 chat markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0184 message delivery receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0066 out-of-band data, as a message's `<x/>`.
pub const OOB: &str = "jabber:x:oob";
/// XEP-0363 HTTP File Upload: the slot request, the slot, the service's feature and form.
pub const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";
pub const DATA_FORMS: &str = "jabber:x:data";
pub const EME: &str = "urn:xmpp:eme:0";
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// The FORM_TYPE of `<publish-options/>` (XEP-0060 §7.1.5).
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// The FORM_TYPE of a node configuration form (XEP-0060 §8.2).
pub const PUBSUB_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// Legacy OMEMO (XEP-0384 v0.3): the namespace of its elements.
pub const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
/// Legacy OMEMO: the PEP node holding an account's device list.
pub const OMEMO_LEGACY_DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";

/// OMEMO 2 (XEP-0384 v0.8+): the namespace of its elements.
pub const OMEMO2: &str = "urn:xmpp:omemo:2";
/// OMEMO 2: the PEP node holding an account's device list (item `current`).
pub const OMEMO2_DEVICES: &str = "urn:xmpp:omemo:2:devices";
/// OMEMO 2: the PEP node holding every device's bundle, one item per device (item id = device
/// id).
pub const OMEMO2_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";

/// Legacy OMEMO: the PEP node holding one device's bundle.
pub fn bundle_node(device_id: u32) -> String {
    format!("eu.siacs.conversations.axolotl.bundles:{device_id}")
}
