//! XEP-0384: OMEMO Encryption, version 0.3 ("legacy OMEMO", namespace
//! `eu.siacs.conversations.axolotl`) <https://xmpp.org/extensions/attic/xep-0384-0.3.0.html>
//!
//! The wire forms only: the `<encrypted/>` message element, the device list and the bundle that
//! are published over PEP (see `stanza::pubsub` and the node names in `stanza::ns`). Sessions
//! and crypto live in `interop::omemo`.
//!
//! Byte fields are base64 on the wire; whitespace and line breaks inside the text are accepted
//! (several clients wrap at 76 columns), padding may be left out. Debug output shows lengths,
//! never bytes.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::{FromElement, IntoElement, Malformed, ParseError, ns, required_attr};
use crate::xml::Element;

/// Device ids are 31-bit and non-zero (XEP-0384 v0.3, Setup).
pub const MAX_DEVICE_ID: u32 = (1 << 31) - 1;
/// At most this many `<preKeyPublic/>` entries of a bundle are read; the rest count as skipped.
pub const MAX_PREKEYS: usize = 1000;

/// Accepts padded and unpadded input.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT_B64.decode(compact).ok()
}

/// The base64 text of `el`, for field `field` of `element`.
pub(super) fn b64_text(
    el: &Element,
    element: &'static str,
    field: &'static str,
) -> Result<Vec<u8>, Malformed> {
    decode_b64(&el.text_content()).ok_or(Malformed::new(element, field, "is not valid base64"))
}

/// The valid ids of the `<device id/>` children of a device list in namespace `ns`, and how
/// many were left out (both OMEMO versions shape their lists so).
pub(super) fn device_ids(list: &Element, ns: &str) -> (Vec<u32>, usize) {
    let mut devices = Vec::new();
    let mut skipped = 0;
    for device in list.children().filter(|c| c.is("device", ns)) {
        match device.get_attr("id").and_then(parse_device_id) {
            Some(id) => devices.push(id),
            None => skipped += 1,
        }
    }
    (devices, skipped)
}

/// `<name xmlns=ns>` with one `<device id/>` per id.
pub(super) fn device_list_element(name: &str, ns: &str, devices: &[u32]) -> Element {
    let mut el = Element::new(name, ns);
    for id in devices {
        el.push_child(Element::new("device", ns).attr("id", id.to_string()));
    }
    el
}

pub(super) fn parse_device_id(s: &str) -> Option<u32> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|id| (1..=MAX_DEVICE_ID).contains(id))
}

pub(super) fn device_id_attr(
    el: &Element,
    element: &'static str,
    attr: &'static str,
) -> Result<u32, Malformed> {
    parse_device_id(required_attr(el, element, attr)?).ok_or(Malformed::new(
        element,
        attr,
        "is not a device id (1 to 2^31-1)",
    ))
}

pub(super) fn u32_attr(
    el: &Element,
    element: &'static str,
    attr: &'static str,
) -> Result<u32, Malformed> {
    required_attr(el, element, attr)?
        .trim()
        .parse()
        .map_err(|_| Malformed::new(element, attr, "is not a 32-bit unsigned integer"))
}

/// One `<key rid='…' [prekey='true']>`: the message key encrypted for one recipient device.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyElement {
    /// The recipient device.
    pub rid: u32,
    /// The data is a `PreKeySignalMessage` (it starts a session), not a `SignalMessage`.
    pub prekey: bool,
    pub data: Vec<u8>,
}

impl KeyElement {
    fn parse(el: &Element) -> Result<Self, Malformed> {
        let rid = device_id_attr(el, "key", "rid")?;
        let prekey = match el.get_attr("prekey").map(str::trim) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => return Err(Malformed::new("key", "prekey", "is not a boolean")),
        };
        let data = b64_text(el, "key", "data")?;
        Ok(Self { rid, prekey, data })
    }

    fn into_element(self) -> Element {
        let el = Element::new("key", ns::OMEMO_LEGACY).attr("rid", self.rid.to_string());
        let el = if self.prekey {
            el.attr("prekey", "true")
        } else {
            el
        };
        el.text(B64.encode(self.data))
    }
}

impl fmt::Debug for KeyElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyElement")
            .field("rid", &self.rid)
            .field("prekey", &self.prekey)
            .field("data", &format!("{} bytes", self.data.len()))
            .finish()
    }
}

/// `<encrypted xmlns='eu.siacs.conversations.axolotl'>`: a header with the sender device, one
/// key per recipient device and the IV, and the AES-GCM payload. Without a payload it is a key
/// transport element (XEP-0384 v0.3 §4.6): session set-up or repair, nothing to show.
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The sending device.
    pub sid: u32,
    /// In document order; may be empty (then nothing is for us).
    pub keys: Vec<KeyElement>,
    /// 12 bytes from us; 12 or 16 from others.
    pub iv: Vec<u8>,
    pub payload: Option<Vec<u8>>,
}

impl Encrypted {
    /// The keys addressed to device `rid`.
    pub fn keys_for(&self, rid: u32) -> impl Iterator<Item = &KeyElement> {
        self.keys.iter().filter(move |k| k.rid == rid)
    }
}

impl FromElement for Encrypted {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("encrypted", ns::OMEMO_LEGACY) {
            return Err(ParseError::NotMine(el));
        }
        let header = el
            .get_child("header", ns::OMEMO_LEGACY)
            .ok_or(Malformed::new("encrypted", "header", "is missing"))?;
        let sid = device_id_attr(header, "header", "sid")?;
        let mut keys = Vec::new();
        for child in header.children().filter(|c| c.is("key", ns::OMEMO_LEGACY)) {
            keys.push(KeyElement::parse(child)?);
        }
        let iv = header
            .get_child("iv", ns::OMEMO_LEGACY)
            .ok_or(Malformed::new("header", "iv", "is missing"))?;
        let iv = b64_text(iv, "header", "iv")?;
        if iv.is_empty() {
            return Err(Malformed::new("header", "iv", "is empty").into());
        }
        let payload = match el.get_child("payload", ns::OMEMO_LEGACY) {
            None => None,
            Some(p) => Some(b64_text(p, "encrypted", "payload")?),
        };
        Ok(Self {
            sid,
            keys,
            iv,
            payload,
        })
    }
}

impl IntoElement for Encrypted {
    fn into_element(self) -> Element {
        let mut header = Element::new("header", ns::OMEMO_LEGACY).attr("sid", self.sid.to_string());
        for key in self.keys {
            header.push_child(key.into_element());
        }
        header.push_child(Element::new("iv", ns::OMEMO_LEGACY).text(B64.encode(self.iv)));
        let mut el = Element::new("encrypted", ns::OMEMO_LEGACY).child(header);
        if let Some(payload) = self.payload {
            el.push_child(Element::new("payload", ns::OMEMO_LEGACY).text(B64.encode(payload)));
        }
        el
    }
}

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("sid", &self.sid)
            .field("keys", &self.keys)
            .field("iv", &format!("{} bytes", self.iv.len()))
            .field(
                "payload",
                &self.payload.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .finish()
    }
}

/// The device list item `<list xmlns='eu.siacs.conversations.axolotl'><device id='…'/>…</list>`,
/// published at `ns::OMEMO_LEGACY_DEVICELIST`. Someone else's list is not ours to reject: bad
/// entries are skipped and counted, duplicates dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceListPayload {
    /// Valid device ids, ascending, each once.
    pub devices: Vec<u32>,
    /// `<device/>` entries left out: no `id`, not a number, or outside 1 to 2^31-1. Not written.
    pub skipped: usize,
}

impl DeviceListPayload {
    /// A list of `devices` (sorted and deduplicated here).
    pub fn new(mut devices: Vec<u32>) -> Self {
        devices.sort_unstable();
        devices.dedup();
        Self {
            devices,
            skipped: 0,
        }
    }
}

impl FromElement for DeviceListPayload {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("list", ns::OMEMO_LEGACY) {
            return Err(ParseError::NotMine(el));
        }
        let (devices, skipped) = device_ids(&el, ns::OMEMO_LEGACY);
        Ok(Self {
            skipped,
            ..Self::new(devices)
        })
    }
}

impl IntoElement for DeviceListPayload {
    fn into_element(self) -> Element {
        device_list_element("list", ns::OMEMO_LEGACY, &self.devices)
    }
}

/// A device's `<bundle/>`, published at `ns::bundle_node`: what a peer needs to start a
/// session with it (X3DH). The keys are libsignal-serialised (`0x05 ‖ 32 bytes`), the signature
/// is XEdDSA (64 bytes); lengths are checked by the crypto layer, not here.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub signed_prekey_id: u32,
    pub signed_prekey_public: Vec<u8>,
    pub signed_prekey_signature: Vec<u8>,
    pub identity_key: Vec<u8>,
    /// `(preKeyId, public key)`, in document order. Any u32 is a valid prekey id.
    pub prekeys: Vec<(u32, Vec<u8>)>,
    /// `<preKeyPublic/>` entries left out: bad or missing id, bad or empty base64, or beyond
    /// [`MAX_PREKEYS`]. Not written.
    pub skipped: usize,
}

impl Bundle {
    /// The non-empty base64 bytes of the required child `name`.
    fn required_key<'a>(
        el: &'a Element,
        name: &'static str,
    ) -> Result<(&'a Element, Vec<u8>), Malformed> {
        let child = el.get_child(name, ns::OMEMO_LEGACY).ok_or(Malformed::new(
            "bundle",
            name,
            "is missing",
        ))?;
        let bytes = b64_text(child, "bundle", name)?;
        if bytes.is_empty() {
            return Err(Malformed::new("bundle", name, "is empty"));
        }
        Ok((child, bytes))
    }
}

impl FromElement for Bundle {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("bundle", ns::OMEMO_LEGACY) {
            return Err(ParseError::NotMine(el));
        }
        let (spk, signed_prekey_public) = Self::required_key(&el, "signedPreKeyPublic")?;
        let signed_prekey_id = u32_attr(spk, "signedPreKeyPublic", "signedPreKeyId")?;
        let (_, signed_prekey_signature) = Self::required_key(&el, "signedPreKeySignature")?;
        let (_, identity_key) = Self::required_key(&el, "identityKey")?;
        let mut prekeys = Vec::new();
        let mut skipped = 0;
        let entries = el
            .get_child("prekeys", ns::OMEMO_LEGACY)
            .into_iter()
            .flat_map(|p| p.children())
            .filter(|c| c.is("preKeyPublic", ns::OMEMO_LEGACY));
        for (n, entry) in entries.enumerate() {
            let id = entry
                .get_attr("preKeyId")
                .and_then(|s| s.trim().parse::<u32>().ok());
            let key = decode_b64(&entry.text_content()).filter(|k| !k.is_empty());
            match (n < MAX_PREKEYS, id, key) {
                (true, Some(id), Some(key)) => prekeys.push((id, key)),
                _ => skipped += 1,
            }
        }
        Ok(Self {
            signed_prekey_id,
            signed_prekey_public,
            signed_prekey_signature,
            identity_key,
            prekeys,
            skipped,
        })
    }
}

impl IntoElement for Bundle {
    fn into_element(self) -> Element {
        let b64 = |name: &str, bytes: Vec<u8>| {
            Element::new(name, ns::OMEMO_LEGACY).text(B64.encode(bytes))
        };
        let mut prekeys = Element::new("prekeys", ns::OMEMO_LEGACY);
        for (id, key) in self.prekeys {
            prekeys.push_child(b64("preKeyPublic", key).attr("preKeyId", id.to_string()));
        }
        Element::new("bundle", ns::OMEMO_LEGACY)
            .child(
                b64("signedPreKeyPublic", self.signed_prekey_public)
                    .attr("signedPreKeyId", self.signed_prekey_id.to_string()),
            )
            .child(b64("signedPreKeySignature", self.signed_prekey_signature))
            .child(b64("identityKey", self.identity_key))
            .child(prekeys)
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field(
                "signed_prekey_public",
                &format!("{} bytes", self.signed_prekey_public.len()),
            )
            .field(
                "signed_prekey_signature",
                &format!("{} bytes", self.signed_prekey_signature.len()),
            )
            .field(
                "identity_key",
                &format!("{} bytes", self.identity_key.len()),
            )
            .field("prekeys", &self.prekeys.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml, reparse};

    const AXOLOTL: &str = "xmlns='eu.siacs.conversations.axolotl'";

    fn encrypted(xml: &str) -> Result<Encrypted, ParseError> {
        Encrypted::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_xep_0384_message() {
        // XEP-0384 v0.3 §4.5, with real base64 and a wrapped line in the payload.
        let parsed = encrypted(&format!(
            "<encrypted {AXOLOTL}>\
               <header sid='27183'>\
                 <key rid='31415'>AQID</key>\
                 <key prekey='true' rid='12321'>BAUG</key>\
                 <key prekey='1' rid='1'>Bw==</key>\
                 <key prekey='false' rid='2'>CA</key>\
                 <iv>AAECAwQFBgcICQoL</iv>\
                 <unknown/>\
               </header>\
               <payload>\n  SGVs\n  bG8=\n</payload>\
             </encrypted>"
        ))
        .expect("valid");
        assert_eq!(
            parsed,
            Encrypted {
                sid: 27183,
                keys: vec![
                    KeyElement {
                        rid: 31415,
                        prekey: false,
                        data: vec![1, 2, 3]
                    },
                    KeyElement {
                        rid: 12321,
                        prekey: true,
                        data: vec![4, 5, 6]
                    },
                    KeyElement {
                        rid: 1,
                        prekey: true,
                        data: vec![7]
                    },
                    KeyElement {
                        rid: 2,
                        prekey: false,
                        data: vec![8]
                    },
                ],
                iv: (0..12).collect(),
                payload: Some(b"Hello".to_vec()),
            }
        );
        assert_eq!(parsed.keys_for(12321).count(), 1);
        assert_eq!(parsed.keys_for(99).count(), 0);
    }

    #[test]
    fn key_transport_has_no_payload() {
        let parsed = encrypted(&format!("<encrypted {AXOLOTL}><header sid='2147483647'><key rid='5'>AQ==</key><iv>AAAAAAAAAAAAAAAAAAAAAA==</iv></header></encrypted>")).expect("valid");
        assert_eq!(parsed.sid, MAX_DEVICE_ID);
        assert_eq!(parsed.iv.len(), 16);
        assert_eq!(parsed.payload, None);
    }

    #[test]
    fn encrypted_round_trip_and_prekey_written_as_true() {
        let enc = Encrypted {
            sid: 7,
            keys: vec![
                KeyElement {
                    rid: 8,
                    prekey: true,
                    data: vec![0xff; 40],
                },
                KeyElement {
                    rid: 9,
                    prekey: false,
                    data: vec![1],
                },
            ],
            iv: vec![9; 12],
            payload: Some(vec![0, 1, 2]),
        };
        let el = enc.clone().into_element();
        let xml = el.to_xml(ns::CLIENT);
        assert!(xml.contains("<key rid='8' prekey='true'>"), "{xml}");
        assert!(xml.contains("<key rid='9'>AQ==</key>"), "{xml}");
        assert_eq!(Encrypted::from_element(reparse(&el)), Ok(enc.clone()));
        let transport = Encrypted {
            payload: None,
            ..enc
        };
        assert_eq!(
            Encrypted::from_element(reparse(&transport.clone().into_element())),
            Ok(transport)
        );
    }

    #[test]
    fn debug_hides_bytes() {
        let enc = Encrypted {
            sid: 1,
            keys: vec![KeyElement {
                rid: 2,
                prekey: false,
                data: vec![0xab; 3],
            }],
            iv: vec![0xcd; 12],
            payload: Some(vec![0xef; 5]),
        };
        let shown = format!("{enc:?}");
        assert!(
            shown.contains("3 bytes") && shown.contains("12 bytes") && shown.contains("5 bytes"),
            "{shown}"
        );
        assert!(
            !shown.contains("171") && !shown.contains("205") && !shown.contains("239"),
            "{shown}"
        );
        let bundle = Bundle {
            signed_prekey_id: 1,
            signed_prekey_public: vec![0xab; 33],
            signed_prekey_signature: vec![0xab; 64],
            identity_key: vec![0xab; 33],
            prekeys: vec![(1, vec![0xab; 33])],
            skipped: 0,
        };
        let shown = format!("{bundle:?}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn not_mine() {
        for xml in [
            "<encrypted xmlns='urn:xmpp:omemo:2'/>",
            "<list xmlns='urn:xmpp:omemo:2'/>",
            "<bundle xmlns='urn:xmpp:omemo:2'/>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(
                Encrypted::from_element(el.clone()),
                Err(ParseError::NotMine(el.clone()))
            );
            assert_eq!(
                DeviceListPayload::from_element(el.clone()),
                Err(ParseError::NotMine(el.clone()))
            );
            assert_eq!(
                Bundle::from_element(el.clone()),
                Err(ParseError::NotMine(el))
            );
        }
    }

    #[test]
    fn invalid_encrypted() {
        let iv = "<iv>AAECAwQFBgcICQoL</iv>";
        let e =
            |header: &str, rest: &str| format!("<encrypted {AXOLOTL}>{header}{rest}</encrypted>");
        let cases = [
            (
                e("", ""),
                Malformed::new("encrypted", "header", "is missing"),
            ),
            (
                e(&format!("<header>{iv}</header>"), ""),
                Malformed::new("header", "sid", "is missing"),
            ),
            (
                e(&format!("<header sid='0'>{iv}</header>"), ""),
                Malformed::new("header", "sid", "is not a device id (1 to 2^31-1)"),
            ),
            (
                e(&format!("<header sid='2147483648'>{iv}</header>"), ""),
                Malformed::new("header", "sid", "is not a device id (1 to 2^31-1)"),
            ),
            (
                e(&format!("<header sid='-1'>{iv}</header>"), ""),
                Malformed::new("header", "sid", "is not a device id (1 to 2^31-1)"),
            ),
            (
                e("<header sid='1'/>", ""),
                Malformed::new("header", "iv", "is missing"),
            ),
            (
                e("<header sid='1'><iv>!!</iv></header>", ""),
                Malformed::new("header", "iv", "is not valid base64"),
            ),
            (
                e("<header sid='1'><iv/></header>", ""),
                Malformed::new("header", "iv", "is empty"),
            ),
            (
                e(&format!("<header sid='1'><key>AQ==</key>{iv}</header>"), ""),
                Malformed::new("key", "rid", "is missing"),
            ),
            (
                e(
                    &format!("<header sid='1'><key rid='x'>AQ==</key>{iv}</header>"),
                    "",
                ),
                Malformed::new("key", "rid", "is not a device id (1 to 2^31-1)"),
            ),
            (
                e(
                    &format!("<header sid='1'><key rid='2' prekey='yes'>AQ==</key>{iv}</header>"),
                    "",
                ),
                Malformed::new("key", "prekey", "is not a boolean"),
            ),
            (
                e(
                    &format!("<header sid='1'><key rid='2'>A?Q</key>{iv}</header>"),
                    "",
                ),
                Malformed::new("key", "data", "is not valid base64"),
            ),
            (
                e(
                    &format!("<header sid='1'>{iv}</header>"),
                    "<payload>%%%</payload>",
                ),
                Malformed::new("encrypted", "payload", "is not valid base64"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(encrypted(&xml)), want, "{xml}");
        }
    }

    #[test]
    fn device_list_skips_bad_entries_dedups_and_sorts() {
        let el = parse_xml(&format!(
            "<list {AXOLOTL}>\
               <device id='31415'/><device id='12345'/><device id='31415'/>\
               <device/><device id='0'/><device id='2147483648'/><device id='abc'/><device id='2147483647'/>\
               <other id='5'/>\
             </list>"
        ));
        assert_eq!(
            DeviceListPayload::from_element(el),
            Ok(DeviceListPayload {
                devices: vec![12345, 31415, MAX_DEVICE_ID],
                skipped: 4
            })
        );
        let empty = parse_xml(&format!("<list {AXOLOTL}/>"));
        assert_eq!(
            DeviceListPayload::from_element(empty),
            Ok(DeviceListPayload::default())
        );
    }

    #[test]
    fn device_list_round_trip() {
        let list = DeviceListPayload::new(vec![3, 1, 2, 3]);
        assert_eq!(list.devices, vec![1, 2, 3]);
        let el = list.clone().into_element();
        assert_eq!(
            el.to_xml(ns::CLIENT),
            format!("<list {AXOLOTL}><device id='1'/><device id='2'/><device id='3'/></list>")
        );
        assert_eq!(DeviceListPayload::from_element(reparse(&el)), Ok(list));
    }

    fn bundle_xml(prekeys: &str) -> String {
        format!(
            "<bundle {AXOLOTL}>\
               <signedPreKeyPublic signedPreKeyId='1'>BQID\n</signedPreKeyPublic>\
               <signedPreKeySignature>AAEC</signedPreKeySignature>\
               <identityKey>BQQF</identityKey>\
               <prekeys>{prekeys}</prekeys>\
             </bundle>"
        )
    }

    #[test]
    fn parses_bundle() {
        // XEP-0384 v0.3 §4.3, shortened; large libsignal-style prekey ids and id 0 are fine.
        let xml = bundle_xml(
            "<preKeyPublic preKeyId='0'>AQ==</preKeyPublic>\
             <preKeyPublic preKeyId='4294967295'>Ag==</preKeyPublic>\
             <preKeyPublic>Aw==</preKeyPublic>\
             <preKeyPublic preKeyId='-3'>Aw==</preKeyPublic>\
             <preKeyPublic preKeyId='4'>*</preKeyPublic>\
             <preKeyPublic preKeyId='5'/>\
             <preKeyPublic preKeyId=' 6 '>\n BgY=\n</preKeyPublic>",
        );
        let bundle = Bundle::from_element(parse_xml(&xml)).expect("valid");
        assert_eq!(
            bundle,
            Bundle {
                signed_prekey_id: 1,
                signed_prekey_public: vec![5, 2, 3],
                signed_prekey_signature: vec![0, 1, 2],
                identity_key: vec![5, 4, 5],
                prekeys: vec![(0, vec![1]), (u32::MAX, vec![2]), (6, vec![6, 6])],
                skipped: 4,
            }
        );
        let no_prekeys = xml.replace(
            &xml[xml.find("<prekeys>").expect("prekeys")..xml.find("</bundle>").expect("end")],
            "",
        );
        let bundle = Bundle::from_element(parse_xml(&no_prekeys)).expect("valid");
        assert_eq!((bundle.prekeys.len(), bundle.skipped), (0, 0));
    }

    #[test]
    fn bundle_reads_at_most_1000_prekeys() {
        let prekeys: String = (0..1005)
            .map(|i| format!("<preKeyPublic preKeyId='{i}'>BQ==</preKeyPublic>"))
            .collect();
        let bundle = Bundle::from_element(parse_xml(&bundle_xml(&prekeys))).expect("valid");
        assert_eq!(bundle.prekeys.len(), MAX_PREKEYS);
        assert_eq!(bundle.prekeys.last().map(|p| p.0), Some(999));
        assert_eq!(bundle.skipped, 5);
    }

    #[test]
    fn bundle_round_trip() {
        let bundle = Bundle {
            signed_prekey_id: 0x8000_0000,
            signed_prekey_public: vec![5; 33],
            signed_prekey_signature: vec![7; 64],
            identity_key: vec![5; 33],
            prekeys: (1..=3).map(|i| (i, vec![i as u8; 33])).collect(),
            skipped: 0,
        };
        assert_eq!(
            Bundle::from_element(reparse(&bundle.clone().into_element())),
            Ok(bundle)
        );
    }

    #[test]
    fn invalid_bundles() {
        let good = bundle_xml("");
        let cases = [
            (
                good.replace("<identityKey>BQQF</identityKey>", ""),
                Malformed::new("bundle", "identityKey", "is missing"),
            ),
            (
                good.replace("BQQF", "B=QQF"),
                Malformed::new("bundle", "identityKey", "is not valid base64"),
            ),
            (
                good.replace("<identityKey>BQQF</identityKey>", "<identityKey/>"),
                Malformed::new("bundle", "identityKey", "is empty"),
            ),
            (
                good.replace("<signedPreKeySignature>AAEC</signedPreKeySignature>", ""),
                Malformed::new("bundle", "signedPreKeySignature", "is missing"),
            ),
            (
                good.replace("AAEC", "AA EC ??"),
                Malformed::new("bundle", "signedPreKeySignature", "is not valid base64"),
            ),
            (
                good.replace(
                    "<signedPreKeyPublic signedPreKeyId='1'>BQID\n</signedPreKeyPublic>",
                    "",
                ),
                Malformed::new("bundle", "signedPreKeyPublic", "is missing"),
            ),
            (
                good.replace(" signedPreKeyId='1'", ""),
                Malformed::new("signedPreKeyPublic", "signedPreKeyId", "is missing"),
            ),
            (
                good.replace("signedPreKeyId='1'", "signedPreKeyId='4294967296'"),
                Malformed::new(
                    "signedPreKeyPublic",
                    "signedPreKeyId",
                    "is not a 32-bit unsigned integer",
                ),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(
                malformed(Bundle::from_element(parse_xml(&xml))),
                want,
                "{xml}"
            );
        }
    }

    #[test]
    fn node_names() {
        assert_eq!(
            ns::bundle_node(31415),
            "eu.siacs.conversations.axolotl.bundles:31415"
        );
        assert_eq!(
            ns::OMEMO_LEGACY_DEVICELIST,
            "eu.siacs.conversations.axolotl.devicelist"
        );
    }
}
