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
pub const DELAY: &str = "urn:xmpp:delay";
pub const SID: &str = "urn:xmpp:sid:0";
pub const HINTS: &str = "urn:xmpp:hints";
pub const CAPS: &str = "http://jabber.org/protocol/caps";
pub const REGISTER: &str = "jabber:iq:register";
pub const DATA_FORMS: &str = "jabber:x:data";
