//! The three protobuf messages of OMEMO 2 (XEP-0384 v0.8+, "Protobuf Schema"), encoded and
//! decoded by hand:
//!
//! ```text
//! OMEMOMessage              { required uint32 n = 1; required uint32 pn = 2;
//!                             required bytes dh_pub = 3; optional bytes ciphertext = 4; }
//! OMEMOAuthenticatedMessage { required bytes mac = 1; required bytes message = 2; }
//! OMEMOKeyExchange          { required uint32 pk_id = 1; required uint32 spk_id = 2;
//!                             required bytes ik = 3; required bytes ek = 4;
//!                             required OMEMOAuthenticatedMessage message = 5; }
//! ```
//!
//! Decoding is strict about what OMEMO needs (every required field present exactly once, keys
//! 32 bytes, the MAC 16 bytes, varints within `uint32`) and skips fields it does not know, as
//! protobuf does. Every error names the message and the field; nothing panics on input.

/// Length of an X25519 or Ed25519 public key on the wire.
pub const KEY_LEN: usize = 32;
/// Length of the truncated HMAC-SHA-256 in an `OMEMOAuthenticatedMessage`.
pub const MAC_LEN: usize = 16;

/// Why bytes are not the OMEMO 2 protobuf we expected. Never holds the bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{message}: truncated")]
    Truncated { message: &'static str },
    #[error("{message}: a varint is longer than 10 bytes or does not fit its field")]
    BadVarint { message: &'static str },
    #[error("{message}: field {field} has wire type {wire_type}, which this field cannot have")]
    BadWireType {
        message: &'static str,
        field: u64,
        wire_type: u8,
    },
    #[error("{message}: field number 0 or wire type {wire_type} (groups are not supported)")]
    BadTag {
        message: &'static str,
        wire_type: u8,
    },
    #[error("{message}: field {field} appears twice")]
    Duplicate { message: &'static str, field: u64 },
    #[error("{message}: required field {field} is missing")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}: field {field} is {len} bytes; expected {expected}")]
    BadLength {
        message: &'static str,
        field: &'static str,
        len: usize,
        expected: usize,
    },
}

/// `OMEMOMessage`: the ratchet header and the encrypted key material.
#[derive(Clone, PartialEq, Eq)]
pub struct OmemoMessage {
    /// Index of this message in its sending chain.
    pub n: u32,
    /// Length of the sender's previous sending chain.
    pub pn: u32,
    /// The sender's current ratchet public key (X25519).
    pub dh_pub: [u8; KEY_LEN],
    /// AES-256-CBC ciphertext; `None` only in the header-only form the associated data uses.
    pub ciphertext: Option<Vec<u8>>,
}

/// `OMEMOAuthenticatedMessage`: an encoded `OMEMOMessage` and its truncated MAC. The message is
/// kept as the bytes that were received, since the MAC covers exactly those.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticatedMessage {
    pub mac: [u8; MAC_LEN],
    pub message: Vec<u8>,
}

/// `OMEMOKeyExchange`: what the initiator of a session sends until the responder answers.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// Id of the responder's one-time prekey that was used.
    pub pk_id: u32,
    /// Id of the responder's signed prekey that was used.
    pub spk_id: u32,
    /// The initiator's identity key, Ed25519 form.
    pub ik: [u8; KEY_LEN],
    /// The initiator's ephemeral X25519 key.
    pub ek: [u8; KEY_LEN],
    pub message: AuthenticatedMessage,
}

macro_rules! no_bytes_debug {
    ($($t:ty),*) => {$(
        /// Debug without key or ciphertext bytes.
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { .. }"))
            }
        }
    )*};
}
no_bytes_debug!(OmemoMessage, AuthenticatedMessage, KeyExchange);

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_u32(out: &mut Vec<u8>, field: u64, v: u32) {
    put_varint(out, (field << 3) | u64::from(VARINT));
    put_varint(out, u64::from(v));
}

fn put_bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    put_varint(out, (field << 3) | u64::from(LEN));
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// One field as read: its number and its value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// Walks the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self { buf, message }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated {
                message: self.message,
            })?;
            self.buf = rest;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(WireError::BadVarint {
                    message: self.message,
                });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::BadVarint {
            message: self.message,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated {
                message: self.message,
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Option<Result<(u64, Value<'a>), WireError>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), WireError> {
        let tag = self.varint()?;
        let (field, wire_type) = (tag >> 3, (tag & 7) as u8);
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(WireError::BadTag {
                message: self.message,
                wire_type,
            });
        }
        let value = match wire_type {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Value::Other
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated {
                    message: self.message,
                })?;
                Value::Bytes(self.take(len)?)
            }
            FIXED32 => {
                self.take(4)?;
                Value::Other
            }
            _ => {
                return Err(WireError::BadTag {
                    message: self.message,
                    wire_type,
                });
            }
        };
        Ok((field, value))
    }

    fn u32(&self, field: u64, value: Value<'a>, slot: &mut Option<u32>) -> Result<(), WireError> {
        let Value::Varint(v) = value else {
            return Err(self.wire_type(field, value));
        };
        let v = u32::try_from(v).map_err(|_| WireError::BadVarint {
            message: self.message,
        })?;
        self.set(field, slot, v)
    }

    fn bytes(
        &self,
        field: u64,
        value: Value<'a>,
        slot: &mut Option<&'a [u8]>,
    ) -> Result<(), WireError> {
        let Value::Bytes(v) = value else {
            return Err(self.wire_type(field, value));
        };
        self.set(field, slot, v)
    }

    fn set<T>(&self, field: u64, slot: &mut Option<T>, v: T) -> Result<(), WireError> {
        if slot.replace(v).is_some() {
            return Err(WireError::Duplicate {
                message: self.message,
                field,
            });
        }
        Ok(())
    }

    fn wire_type(&self, field: u64, value: Value<'_>) -> WireError {
        WireError::BadWireType {
            message: self.message,
            field,
            wire_type: match value {
                Value::Varint(_) => VARINT,
                Value::Bytes(_) => LEN,
                Value::Other => FIXED64,
            },
        }
    }

    fn required<T>(&self, slot: Option<T>, field: &'static str) -> Result<T, WireError> {
        slot.ok_or(WireError::Missing {
            message: self.message,
            field,
        })
    }

    fn fixed<const N: usize>(
        &self,
        slot: Option<&[u8]>,
        field: &'static str,
    ) -> Result<[u8; N], WireError> {
        let v = self.required(slot, field)?;
        <[u8; N]>::try_from(v).map_err(|_| WireError::BadLength {
            message: self.message,
            field,
            len: v.len(),
            expected: N,
        })
    }
}

impl OmemoMessage {
    const NAME: &'static str = "OMEMOMessage";

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.ciphertext.as_ref().map_or(0, Vec::len));
        put_u32(&mut out, 1, self.n);
        put_u32(&mut out, 2, self.pn);
        put_bytes(&mut out, 3, &self.dh_pub);
        if let Some(ct) = &self.ciphertext {
            put_bytes(&mut out, 4, ct);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut f = Fields::new(buf, Self::NAME);
        let (mut n, mut pn, mut dh_pub, mut ciphertext) = (None, None, None, None);
        while let Some(field) = f.next() {
            match field? {
                (1, v) => f.u32(1, v, &mut n)?,
                (2, v) => f.u32(2, v, &mut pn)?,
                (3, v) => f.bytes(3, v, &mut dh_pub)?,
                (4, v) => f.bytes(4, v, &mut ciphertext)?,
                _ => {}
            }
        }
        Ok(Self {
            n: f.required(n, "n")?,
            pn: f.required(pn, "pn")?,
            dh_pub: f.fixed(dh_pub, "dh_pub")?,
            ciphertext: ciphertext.map(<[u8]>::to_vec),
        })
    }
}

impl AuthenticatedMessage {
    const NAME: &'static str = "OMEMOAuthenticatedMessage";

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + MAC_LEN + 6);
        put_bytes(&mut out, 1, &self.mac);
        put_bytes(&mut out, 2, &self.message);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut f = Fields::new(buf, Self::NAME);
        let (mut mac, mut message) = (None, None);
        while let Some(field) = f.next() {
            match field? {
                (1, v) => f.bytes(1, v, &mut mac)?,
                (2, v) => f.bytes(2, v, &mut message)?,
                _ => {}
            }
        }
        Ok(Self {
            mac: f.fixed(mac, "mac")?,
            message: f.required(message, "message")?.to_vec(),
        })
    }
}

impl KeyExchange {
    const NAME: &'static str = "OMEMOKeyExchange";

    pub fn encode(&self) -> Vec<u8> {
        let inner = self.message.encode();
        let mut out = Vec::with_capacity(inner.len() + 2 * KEY_LEN + 20);
        put_u32(&mut out, 1, self.pk_id);
        put_u32(&mut out, 2, self.spk_id);
        put_bytes(&mut out, 3, &self.ik);
        put_bytes(&mut out, 4, &self.ek);
        put_bytes(&mut out, 5, &inner);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut f = Fields::new(buf, Self::NAME);
        let (mut pk_id, mut spk_id, mut ik, mut ek, mut message) = (None, None, None, None, None);
        while let Some(field) = f.next() {
            match field? {
                (1, v) => f.u32(1, v, &mut pk_id)?,
                (2, v) => f.u32(2, v, &mut spk_id)?,
                (3, v) => f.bytes(3, v, &mut ik)?,
                (4, v) => f.bytes(4, v, &mut ek)?,
                (5, v) => f.bytes(5, v, &mut message)?,
                _ => {}
            }
        }
        Ok(Self {
            pk_id: f.required(pk_id, "pk_id")?,
            spk_id: f.required(spk_id, "spk_id")?,
            ik: f.fixed(ik, "ik")?,
            ek: f.fixed(ek, "ek")?,
            message: AuthenticatedMessage::decode(f.required(message, "message")?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> OmemoMessage {
        OmemoMessage {
            n: 300,
            pn: 0,
            dh_pub: [7; 32],
            ciphertext: Some(vec![1, 2, 3]),
        }
    }

    /// The bytes protoc's encoder writes for these values (python `SerializeToString`), field
    /// by field: tag, value.
    #[test]
    fn encoding_matches_protobuf_byte_for_byte() {
        let mut expected = vec![0x08, 0xac, 0x02, 0x10, 0x00, 0x1a, 0x20];
        expected.extend([7; 32]);
        expected.extend([0x22, 0x03, 1, 2, 3]);
        assert_eq!(message().encode(), expected);
        let header_only = OmemoMessage {
            ciphertext: None,
            ..message()
        };
        assert_eq!(header_only.encode(), expected[..39]);
    }

    #[test]
    fn all_three_round_trip() {
        assert_eq!(OmemoMessage::decode(&message().encode()), Ok(message()));
        let auth = AuthenticatedMessage {
            mac: [9; 16],
            message: message().encode(),
        };
        assert_eq!(
            AuthenticatedMessage::decode(&auth.encode()),
            Ok(auth.clone())
        );
        let kex = KeyExchange {
            pk_id: u32::MAX >> 1,
            spk_id: 1,
            ik: [1; 32],
            ek: [2; 32],
            message: auth,
        };
        assert_eq!(KeyExchange::decode(&kex.encode()), Ok(kex));
    }

    #[test]
    fn unknown_fields_are_skipped_and_order_does_not_matter() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, 3, &[7; 32]);
        put_varint(&mut buf, (9 << 3) | u64::from(FIXED32));
        buf.extend([0; 4]);
        put_u32(&mut buf, 2, 5);
        put_varint(&mut buf, (10 << 3) | u64::from(FIXED64));
        buf.extend([0; 8]);
        put_bytes(&mut buf, 11, b"future");
        put_u32(&mut buf, 1, 4);
        let m = OmemoMessage::decode(&buf).expect("decodes");
        assert_eq!((m.n, m.pn, m.dh_pub, m.ciphertext), (4, 5, [7; 32], None));
    }

    #[test]
    fn invalid_input_is_named() {
        let full = message().encode();
        for cut in 1..full.len() {
            if cut == 39 {
                continue; // ends exactly before the optional ciphertext
            }
            assert!(OmemoMessage::decode(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            OmemoMessage::decode(&full[..3]),
            Err(WireError::Missing {
                message: "OMEMOMessage",
                field: "pn"
            })
        );
        assert_eq!(
            OmemoMessage::decode(&full[..10]),
            Err(WireError::Truncated {
                message: "OMEMOMessage"
            })
        );
        let mut short_key = Vec::new();
        put_u32(&mut short_key, 1, 0);
        put_u32(&mut short_key, 2, 0);
        put_bytes(&mut short_key, 3, &[1; 31]);
        assert_eq!(
            OmemoMessage::decode(&short_key),
            Err(WireError::BadLength {
                message: "OMEMOMessage",
                field: "dh_pub",
                len: 31,
                expected: 32
            })
        );
        let mut twice = full.clone();
        put_u32(&mut twice, 1, 1);
        assert_eq!(
            OmemoMessage::decode(&twice),
            Err(WireError::Duplicate {
                message: "OMEMOMessage",
                field: 1
            })
        );
        let mut wrong_type = Vec::new();
        put_bytes(&mut wrong_type, 1, b"x");
        assert!(matches!(
            OmemoMessage::decode(&wrong_type),
            Err(WireError::BadWireType { field: 1, .. })
        ));
        let mut too_big = Vec::new();
        put_varint(&mut too_big, 1 << 3);
        put_varint(&mut too_big, u64::from(u32::MAX) + 1);
        assert!(matches!(
            OmemoMessage::decode(&too_big),
            Err(WireError::BadVarint { .. })
        ));
        assert!(matches!(
            OmemoMessage::decode(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(WireError::BadVarint { .. })
        ));
        assert!(matches!(
            OmemoMessage::decode(&[0x0b]),
            Err(WireError::BadTag { wire_type: 3, .. })
        ));
        assert!(matches!(
            OmemoMessage::decode(&[0x00, 0x00]),
            Err(WireError::BadTag { .. })
        ));
        // A length far beyond the buffer.
        assert_eq!(
            AuthenticatedMessage::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Truncated {
                message: "OMEMOAuthenticatedMessage"
            })
        );
        let mut bad_mac = Vec::new();
        put_bytes(&mut bad_mac, 1, &[0; 8]);
        put_bytes(&mut bad_mac, 2, b"m");
        assert!(matches!(
            AuthenticatedMessage::decode(&bad_mac),
            Err(WireError::BadLength {
                field: "mac",
                len: 8,
                ..
            })
        ));
        let mut no_inner = Vec::new();
        put_u32(&mut no_inner, 1, 1);
        put_u32(&mut no_inner, 2, 1);
        put_bytes(&mut no_inner, 3, &[0; 32]);
        put_bytes(&mut no_inner, 4, &[0; 32]);
        assert_eq!(
            KeyExchange::decode(&no_inner),
            Err(WireError::Missing {
                message: "OMEMOKeyExchange",
                field: "message"
            })
        );
    }

    #[test]
    fn debug_shows_no_bytes() {
        assert_eq!(format!("{:?}", message()), "OmemoMessage { .. }");
    }
}
