//! XEP-0384: OMEMO Encryption, version 0.8 and later ("OMEMO 2", namespace `urn:xmpp:omemo:2`)
//! <https://xmpp.org/extensions/xep-0384.html>
//!
//! The wire forms only: the `<encrypted/>` message element (keys grouped by recipient JID), the
//! device list (`urn:xmpp:omemo:2:devices`, item `current`) and one device's bundle (an item of
//! `urn:xmpp:omemo:2:bundles` whose id is the device id). The crypto is `omemo::two`; key
//! lengths are checked there, not here.
//!
//! Byte fields are base64 like legacy OMEMO's (whitespace and missing padding accepted). Debug
//! output shows lengths, never bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::omemo::{
    MAX_PREKEYS, b64_text, decode_b64, device_id_attr, device_ids, device_list_element, u32_attr,
};
use super::{FromElement, IntoElement, Malformed, ParseError, ns, required_attr};
use crate::xml::Element;

/// At most this many `<keys/>` groups (recipient accounts) of one message are read.
pub const MAX_KEY_GROUPS: usize = 64;

/// One `<key rid='…' [kex='true']>`: the key material encrypted for one recipient device.
#[derive(Clone, PartialEq, Eq)]
pub struct Key2 {
    pub rid: u32,
    /// An `OMEMOKeyExchange` (it starts a session), not an `OMEMOAuthenticatedMessage`.
    pub kex: bool,
    pub data: Vec<u8>,
}

impl fmt::Debug for Key2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key2 {{ rid: {}, kex: {}, {} bytes }}",
            self.rid,
            self.kex,
            self.data.len()
        )
    }
}

/// `<keys jid='…'>`: the keys for the devices of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys2 {
    /// The recipient account's bare JID.
    pub jid: String,
    pub keys: Vec<Key2>,
}

/// `<encrypted xmlns='urn:xmpp:omemo:2'>`: the sending device, the keys per recipient account,
/// and the encrypted SCE envelope. Without a payload it is an empty message (session
/// confirmation, heartbeat or repair).
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted2 {
    pub sid: u32,
    pub keys: Vec<Keys2>,
    pub payload: Option<Vec<u8>>,
}

impl Encrypted2 {
    /// The key for device `rid` of account `jid`, if the message has one.
    pub fn key_for(&self, jid: &str, rid: u32) -> Option<&Key2> {
        self.keys
            .iter()
            .filter(|g| g.jid == jid)
            .flat_map(|g| g.keys.iter())
            .find(|k| k.rid == rid)
    }

    /// How many keys it carries, for every account.
    pub fn key_count(&self) -> usize {
        self.keys.iter().map(|g| g.keys.len()).sum()
    }
}

impl fmt::Debug for Encrypted2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted2")
            .field("sid", &self.sid)
            .field("keys", &self.keys)
            .field(
                "payload",
                &self.payload.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .finish()
    }
}

fn parse_key(el: &Element) -> Result<Key2, Malformed> {
    let rid = device_id_attr(el, "key", "rid")?;
    let kex = match el.get_attr("kex").map(str::trim) {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(Malformed::new("key", "kex", "is not a boolean")),
    };
    let data = b64_text(el, "key", "data")?;
    if data.is_empty() {
        return Err(Malformed::new("key", "data", "is empty"));
    }
    Ok(Key2 { rid, kex, data })
}

impl FromElement for Encrypted2 {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("encrypted", ns::OMEMO2) {
            return Err(ParseError::NotMine(el));
        }
        let header = el.get_child("header", ns::OMEMO2).ok_or(Malformed::new(
            "encrypted",
            "header",
            "is missing",
        ))?;
        let sid = device_id_attr(header, "header", "sid")?;
        let mut keys = Vec::new();
        for group in header.children().filter(|c| c.is("keys", ns::OMEMO2)) {
            if keys.len() == MAX_KEY_GROUPS {
                return Err(Malformed::new("header", "keys", "has too many groups").into());
            }
            let jid = required_attr(group, "keys", "jid")?.to_owned();
            let mut group_keys = Vec::new();
            for key in group.children().filter(|c| c.is("key", ns::OMEMO2)) {
                group_keys.push(parse_key(key)?);
            }
            keys.push(Keys2 {
                jid,
                keys: group_keys,
            });
        }
        let payload = match el.get_child("payload", ns::OMEMO2) {
            None => None,
            Some(p) => Some(b64_text(p, "encrypted", "payload")?),
        };
        Ok(Self { sid, keys, payload })
    }
}

impl IntoElement for Encrypted2 {
    fn into_element(self) -> Element {
        let mut header = Element::new("header", ns::OMEMO2).attr("sid", self.sid.to_string());
        for group in self.keys {
            let mut keys = Element::new("keys", ns::OMEMO2).attr("jid", group.jid);
            for key in group.keys {
                let el = Element::new("key", ns::OMEMO2).attr("rid", key.rid.to_string());
                let el = if key.kex { el.attr("kex", "true") } else { el };
                keys.push_child(el.text(B64.encode(key.data)));
            }
            header.push_child(keys);
        }
        let mut el = Element::new("encrypted", ns::OMEMO2).child(header);
        if let Some(payload) = self.payload {
            el.push_child(Element::new("payload", ns::OMEMO2).text(B64.encode(payload)));
        }
        el
    }
}

/// `<devices xmlns='urn:xmpp:omemo:2'><device id='…' [label labelsig]/>…</devices>`, item
/// `current` of `urn:xmpp:omemo:2:devices`. Like the legacy list, bad entries are skipped and
/// counted, duplicates dropped; labels are not kept (we show none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList2 {
    /// Valid device ids, ascending, each once.
    pub devices: Vec<u32>,
    /// `<device/>` entries left out. Not written.
    pub skipped: usize,
}

impl DeviceList2 {
    pub fn new(mut devices: Vec<u32>) -> Self {
        devices.sort_unstable();
        devices.dedup();
        Self {
            devices,
            skipped: 0,
        }
    }
}

impl FromElement for DeviceList2 {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("devices", ns::OMEMO2) {
            return Err(ParseError::NotMine(el));
        }
        let (devices, skipped) = device_ids(&el, ns::OMEMO2);
        Ok(Self {
            skipped,
            ..Self::new(devices)
        })
    }
}

impl IntoElement for DeviceList2 {
    fn into_element(self) -> Element {
        device_list_element("devices", ns::OMEMO2, &self.devices)
    }
}

/// `<bundle xmlns='urn:xmpp:omemo:2'>`: `<spk id>`, `<spks>`, `<ik>` (Ed25519) and the
/// one-time prekeys `<prekeys><pk id>…</pk></prekeys>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle2 {
    pub signed_prekey_id: u32,
    pub signed_prekey: Vec<u8>,
    pub signed_prekey_signature: Vec<u8>,
    pub identity_key: Vec<u8>,
    /// `(id, public key)`, in document order.
    pub prekeys: Vec<(u32, Vec<u8>)>,
    /// `<pk/>` entries left out: bad or missing id, bad or empty base64, or beyond
    /// [`MAX_PREKEYS`]. Not written.
    pub skipped: usize,
}

impl fmt::Debug for Bundle2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle2")
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("prekeys", &self.prekeys.len())
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

fn bundle_child<'a>(
    el: &'a Element,
    name: &'static str,
) -> Result<(&'a Element, Vec<u8>), Malformed> {
    let child =
        el.get_child(name, ns::OMEMO2)
            .ok_or(Malformed::new("bundle", name, "is missing"))?;
    let bytes = b64_text(child, "bundle", name)?;
    if bytes.is_empty() {
        return Err(Malformed::new("bundle", name, "is empty"));
    }
    Ok((child, bytes))
}

impl FromElement for Bundle2 {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("bundle", ns::OMEMO2) {
            return Err(ParseError::NotMine(el));
        }
        let (spk, signed_prekey) = bundle_child(&el, "spk")?;
        let signed_prekey_id = u32_attr(spk, "spk", "id")?;
        let (_, signed_prekey_signature) = bundle_child(&el, "spks")?;
        let (_, identity_key) = bundle_child(&el, "ik")?;
        let mut prekeys = Vec::new();
        let mut skipped = 0;
        let entries = el
            .get_child("prekeys", ns::OMEMO2)
            .into_iter()
            .flat_map(|p| p.children())
            .filter(|c| c.is("pk", ns::OMEMO2));
        for (n, entry) in entries.enumerate() {
            let id = entry
                .get_attr("id")
                .and_then(|s| s.trim().parse::<u32>().ok());
            let key = decode_b64(&entry.text_content()).filter(|k| !k.is_empty());
            match (n < MAX_PREKEYS, id, key) {
                (true, Some(id), Some(key)) => prekeys.push((id, key)),
                _ => skipped += 1,
            }
        }
        Ok(Self {
            signed_prekey_id,
            signed_prekey,
            signed_prekey_signature,
            identity_key,
            prekeys,
            skipped,
        })
    }
}

impl IntoElement for Bundle2 {
    fn into_element(self) -> Element {
        let b64 =
            |name: &str, bytes: Vec<u8>| Element::new(name, ns::OMEMO2).text(B64.encode(bytes));
        let mut prekeys = Element::new("prekeys", ns::OMEMO2);
        for (id, key) in self.prekeys {
            prekeys.push_child(b64("pk", key).attr("id", id.to_string()));
        }
        Element::new("bundle", ns::OMEMO2)
            .child(b64("spk", self.signed_prekey).attr("id", self.signed_prekey_id.to_string()))
            .child(b64("spks", self.signed_prekey_signature))
            .child(b64("ik", self.identity_key))
            .child(prekeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml, reparse};

    const NS2: &str = "xmlns='urn:xmpp:omemo:2'";

    #[test]
    fn parses_the_xeps_message_and_finds_our_key_by_jid_and_device() {
        // XEP-0384 v0.9 §5.4.1, with real base64.
        let el = parse_xml(&format!(
            "<encrypted {NS2}>\
               <header sid='27183'>\
                 <keys jid='juliet@capulet.lit'><key rid='31415'>AQID</key></keys>\
                 <keys jid='romeo@montague.lit'><key rid='1337'>BAU=</key><key kex='true' rid='12321'>Bg</key></keys>\
               </header>\
               <payload>SGVs\n bG8=</payload>\
             </encrypted>"
        ));
        let parsed = Encrypted2::from_element(el).expect("valid");
        assert_eq!(parsed.sid, 27183);
        assert_eq!(parsed.key_count(), 3);
        assert_eq!(parsed.payload.as_deref(), Some(&b"Hello"[..]));
        let ours = parsed.key_for("romeo@montague.lit", 12321).expect("ours");
        assert!(ours.kex);
        assert_eq!(ours.data, vec![6]);
        assert!(parsed.key_for("juliet@capulet.lit", 12321).is_none());
        assert!(
            !parsed
                .key_for("juliet@capulet.lit", 31415)
                .expect("key")
                .kex
        );
        // Round trip.
        let again = Encrypted2::from_element(reparse(&parsed.clone().into_element()));
        assert_eq!(again, Ok(parsed));
    }

    #[test]
    fn an_empty_message_has_no_payload() {
        let el = parse_xml(&format!(
            "<encrypted {NS2}><header sid='1'><keys jid='a@b'><key rid='2'>AQ==</key></keys></header></encrypted>"
        ));
        let parsed = Encrypted2::from_element(el).expect("valid");
        assert_eq!(parsed.payload, None);
        let xml = parsed.into_element().to_xml(ns::CLIENT);
        assert_eq!(
            xml,
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='a@b'><key rid='2'>AQ==</key></keys></header></encrypted>"
        );
    }

    #[test]
    fn invalid_messages_name_the_field() {
        let cases = [
            (
                format!("<encrypted {NS2}/>"),
                Malformed::new("encrypted", "header", "is missing"),
            ),
            (
                format!("<encrypted {NS2}><header/></encrypted>"),
                Malformed::new("header", "sid", "is missing"),
            ),
            (
                format!("<encrypted {NS2}><header sid='0'/></encrypted>"),
                Malformed::new("header", "sid", "is not a device id (1 to 2^31-1)"),
            ),
            (
                format!(
                    "<encrypted {NS2}><header sid='1'><keys><key rid='2'>AQ==</key></keys></header></encrypted>"
                ),
                Malformed::new("keys", "jid", "is missing"),
            ),
            (
                format!(
                    "<encrypted {NS2}><header sid='1'><keys jid='a@b'><key rid='2' kex='maybe'>AQ==</key></keys></header></encrypted>"
                ),
                Malformed::new("key", "kex", "is not a boolean"),
            ),
            (
                format!(
                    "<encrypted {NS2}><header sid='1'><keys jid='a@b'><key rid='2'>!!</key></keys></header></encrypted>"
                ),
                Malformed::new("key", "data", "is not valid base64"),
            ),
            (
                format!(
                    "<encrypted {NS2}><header sid='1'><keys jid='a@b'><key rid='2'/></keys></header></encrypted>"
                ),
                Malformed::new("key", "data", "is empty"),
            ),
            (
                format!("<encrypted {NS2}><header sid='1'/><payload>%%</payload></encrypted>"),
                Malformed::new("encrypted", "payload", "is not valid base64"),
            ),
            (
                format!(
                    "<encrypted {NS2}><header sid='1'>{}</header></encrypted>",
                    "<keys jid='a@b'/>".repeat(MAX_KEY_GROUPS + 1)
                ),
                Malformed::new("header", "keys", "has too many groups"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(
                malformed(Encrypted2::from_element(parse_xml(&xml))),
                want,
                "{xml}"
            );
        }
        let legacy = parse_xml("<encrypted xmlns='eu.siacs.conversations.axolotl'/>");
        assert_eq!(
            Encrypted2::from_element(legacy.clone()),
            Err(ParseError::NotMine(legacy))
        );
    }

    #[test]
    fn device_list_skips_bad_entries_and_round_trips() {
        let el = parse_xml(&format!(
            "<devices {NS2}><device id='12345' label='Dino' labelsig='AAAA'/><device id='4223'/>\
               <device id='0'/><device/><device id='x'/><device id='4223'/></devices>"
        ));
        let list = DeviceList2::from_element(el).expect("valid");
        assert_eq!(list.devices, vec![4223, 12345]);
        assert_eq!(list.skipped, 3);
        assert_eq!(
            DeviceList2::new(vec![7, 3])
                .into_element()
                .to_xml(ns::CLIENT),
            "<devices xmlns='urn:xmpp:omemo:2'><device id='3'/><device id='7'/></devices>"
        );
    }

    #[test]
    fn bundle_round_trips_and_invalid_ones_are_named() {
        let xml = format!(
            "<bundle {NS2}><spk id='1'>AQID</spk><spks>BAU=</spks><ik>Bgc=</ik>\
               <prekeys><pk id='1'>CA==</pk><pk id='x'>CQ==</pk><pk id='3'></pk><pk id='2'>Cg==</pk></prekeys></bundle>"
        );
        let bundle = Bundle2::from_element(parse_xml(&xml)).expect("valid");
        assert_eq!(bundle.signed_prekey_id, 1);
        assert_eq!(bundle.signed_prekey, vec![1, 2, 3]);
        assert_eq!(bundle.signed_prekey_signature, vec![4, 5]);
        assert_eq!(bundle.identity_key, vec![6, 7]);
        assert_eq!(bundle.prekeys, vec![(1, vec![8]), (2, vec![10])]);
        assert_eq!(bundle.skipped, 2);
        let again = Bundle2::from_element(reparse(&bundle.clone().into_element())).expect("valid");
        assert_eq!(
            again,
            Bundle2 {
                skipped: 0,
                ..bundle
            }
        );
        for (xml, want) in [
            (
                format!("<bundle {NS2}><spks>AQ==</spks><ik>AQ==</ik></bundle>"),
                Malformed::new("bundle", "spk", "is missing"),
            ),
            (
                format!("<bundle {NS2}><spk>AQ==</spk><spks>AQ==</spks><ik>AQ==</ik></bundle>"),
                Malformed::new("spk", "id", "is missing"),
            ),
            (
                format!("<bundle {NS2}><spk id='1'>AQ==</spk><ik>AQ==</ik></bundle>"),
                Malformed::new("bundle", "spks", "is missing"),
            ),
            (
                format!("<bundle {NS2}><spk id='1'>AQ==</spk><spks>AQ==</spks><ik></ik></bundle>"),
                Malformed::new("bundle", "ik", "is empty"),
            ),
        ] {
            assert_eq!(
                malformed(Bundle2::from_element(parse_xml(&xml))),
                want,
                "{xml}"
            );
        }
    }

    #[test]
    fn debug_hides_bytes() {
        let key = Key2 {
            rid: 1,
            kex: true,
            data: vec![0xAB; 5],
        };
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("171") && shown.contains("5 bytes"),
            "{shown}"
        );
    }
}
