//! Streaming, I/O-free file ciphers for bridging media.
//!
//! Two formats meet here:
//!
//! * **XEP-0454** (OMEMO media sharing): AES-256-GCM over the whole file, the 16-byte tag
//!   appended to the ciphertext, no associated data. The key and IV travel in the fragment of an
//!   `aesgcm://` link ([`AesGcmLink`]). [`GcmEncryptor`] and [`GcmDecryptor`] implement GCM
//!   (NIST SP 800-38D) on top of AES-256, a 32-bit big-endian counter and GHASH, so a file is fed
//!   chunk by chunk and never needs to be held in memory.
//! * **Matrix encrypted attachments** (version `v2`): AES-256-CTR with a 16-byte IV whose low
//!   8 bytes (the counter) start at zero, and SHA-256 over the *ciphertext*
//!   ([`AttachmentEncryptor`], [`AttachmentDecryptor`], [`AttachmentKeys`]).
//!
//! Chunks may have any size, including 0 and 1 byte. Nothing here logs, and no error message
//! or `Debug` output ever contains key material, a link's fragment or file content.

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD, URL_SAFE_NO_PAD,
};
use bytes::Bytes;
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use sha2::{Digest, Sha256};
use std::fmt;

#[cfg(test)]
mod tests;

/// Why a file could not be encrypted or decrypted, or a link or key not read.
///
/// No variant carries key material, a link's fragment or file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The authentication tag (AES-GCM) or the SHA-256 (Matrix) did not match, or the file was
    /// too short to carry a tag. Plaintext already handed out must be thrown away.
    #[error("the file does not match its checksum / authentication tag")]
    Integrity,
    /// A key that is not 32 bytes long.
    #[error("bad key length: AES-256 takes a 32-byte key")]
    BadKeyLength,
    /// An IV of a length the format does not allow (AES-GCM: 12 or 16 bytes; Matrix: 16).
    #[error("bad IV length: AES-GCM takes a 12- or 16-byte IV, Matrix attachments a 16-byte one")]
    BadIvLength,
    /// A SHA-256 that is not 32 bytes long.
    #[error("bad SHA-256 length: expected 32 bytes")]
    BadHashLength,
    /// A field that is not valid base64 (the field's name, never its value).
    #[error("the attachment's {0} is not valid base64")]
    BadBase64(&'static str),
    /// An `aesgcm://` link that cannot be used (the reason never quotes the fragment).
    #[error("malformed aesgcm link: {0}")]
    MalformedLink(&'static str),
    /// More data than the cipher can take safely (AES-GCM: [`GCM_MAX_LEN`]).
    #[error("the file is too large for this cipher")]
    TooLarge,
}

/// The most bytes AES-GCM may encrypt under one key and IV: 2^39 − 256 bits (just under 64 GiB).
pub const GCM_MAX_LEN: u64 = (1 << 36) - 32;

/// Length of the AES-GCM tag appended to a XEP-0454 file.
pub const GCM_TAG_LEN: usize = 16;

const BLOCK: usize = 16;

/// Fills `buf` from the operating system's generator (`getrandom`); should that ever fail, from
/// `rand`'s thread-local CSPRNG (itself seeded by the operating system).
fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        rand::fill(buf);
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM (XEP-0454)
// ---------------------------------------------------------------------------------------------

/// The GCM state both directions share: the keystream, GHASH over the ciphertext (with a
/// partial-block buffer so chunk boundaries need not fall on blocks) and the tag mask E_K(J0).
struct GcmCore {
    ctr: ctr::Ctr32BE<Aes256>,
    ghash: GHash,
    mask: [u8; BLOCK],
    partial: [u8; BLOCK],
    partial_len: usize,
    /// Ciphertext bytes processed so far.
    len: u64,
    /// Set once more than [`GCM_MAX_LEN`] bytes were offered; nothing is processed after that.
    overflow: bool,
}

impl GcmCore {
    fn new(key: &[u8; 32], iv: &[u8]) -> Result<Self, CipherError> {
        if iv.len() != 12 && iv.len() != 16 {
            return Err(CipherError::BadIvLength);
        }
        let aes = Aes256::new(key.into());
        let mut h = ghash::Block::default();
        aes.encrypt_block(&mut h);
        let ghash = GHash::new(&h);

        // J0 (SP 800-38D §7.1): IV ‖ 0^31 ‖ 1 for a 96-bit IV, otherwise
        // GHASH(IV ‖ 0^s ‖ 0^64 ‖ [len(IV)]_64).
        let j0: [u8; BLOCK] = if iv.len() == 12 {
            let mut j0 = [0u8; BLOCK];
            j0[..12].copy_from_slice(iv);
            j0[15] = 1;
            j0
        } else {
            let mut g = ghash.clone();
            g.update_padded(iv);
            let mut lens = ghash::Block::default();
            lens[8..].copy_from_slice(&((iv.len() as u64) * 8).to_be_bytes());
            g.update(std::slice::from_ref(&lens));
            g.finalize().into()
        };

        let mut mask = ghash::Block::from(j0);
        aes.encrypt_block(&mut mask);

        // The keystream starts at inc32(J0): the low 32 bits count, wrapping.
        let mut start = j0;
        let low = u32::from_be_bytes([j0[12], j0[13], j0[14], j0[15]]).wrapping_add(1);
        start[12..].copy_from_slice(&low.to_be_bytes());
        let ctr = ctr::Ctr32BE::<Aes256>::new(key.into(), &start.into());

        Ok(Self {
            ctr,
            ghash,
            mask: mask.into(),
            partial: [0; BLOCK],
            partial_len: 0,
            len: 0,
            overflow: false,
        })
    }

    /// Whether `n` more bytes still fit under [`GCM_MAX_LEN`]; marks the state as overflowed
    /// if not.
    fn admit(&mut self, n: usize) -> bool {
        if self.overflow {
            return false;
        }
        match self.len.checked_add(n as u64) {
            Some(total) if total <= GCM_MAX_LEN => true,
            _ => {
                self.overflow = true;
                false
            }
        }
    }

    /// Applies the keystream in place; `false` (and overflow) if the counter would run out.
    fn keystream(&mut self, data: &mut [u8]) -> bool {
        if self.ctr.try_apply_keystream(data).is_err() {
            self.overflow = true;
            return false;
        }
        true
    }

    /// Feeds ciphertext to GHASH, block by block across calls.
    fn absorb(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.partial_len > 0 {
            let take = (BLOCK - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len < BLOCK {
                return;
            }
            let block = ghash::Block::from(self.partial);
            self.ghash.update(std::slice::from_ref(&block));
            self.partial_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        if whole > 0 {
            // A multiple of the block size: no padding happens here.
            self.ghash.update_padded(&data[..whole]);
        }
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// The tag: GHASH(C padded ‖ [0]_64 ‖ [len(C)·8]_64) ⊕ E_K(J0).
    fn tag(mut self) -> [u8; BLOCK] {
        if self.partial_len > 0 {
            self.ghash.update_padded(&self.partial[..self.partial_len]);
        }
        let mut lens = ghash::Block::default();
        lens[8..].copy_from_slice(&(self.len * 8).to_be_bytes());
        self.ghash.update(std::slice::from_ref(&lens));
        let mut tag: [u8; BLOCK] = self.ghash.finalize().into();
        for (t, m) in tag.iter_mut().zip(self.mask) {
            *t ^= m;
        }
        tag
    }
}

/// Streaming AES-256-GCM encryption of a whole file (XEP-0454).
///
/// Feed the plaintext to [`update`](Self::update) in chunks of any size; send the chunks (now
/// ciphertext) followed by the 16 bytes [`finish`](Self::finish) returns.
///
/// More than [`GCM_MAX_LEN`] bytes (≈ 64 GiB) cannot be encrypted safely: past that point the
/// chunks are overwritten with zeros instead and `finish` returns an all-zero tag, so the file
/// will never authenticate. Cap file sizes far below it.
pub struct GcmEncryptor {
    core: GcmCore,
}

impl GcmEncryptor {
    /// A new encryption under `key` and `iv` (12 bytes, as XEP-0454 senders use now, or 16).
    /// Never reuse a key and IV pair.
    pub fn new(key: &[u8; 32], iv: &[u8]) -> Result<Self, CipherError> {
        Ok(Self {
            core: GcmCore::new(key, iv)?,
        })
    }

    /// Encrypts `chunk` in place.
    pub fn update(&mut self, chunk: &mut [u8]) {
        if !self.core.admit(chunk.len()) || !self.core.keystream(chunk) {
            chunk.fill(0);
            return;
        }
        self.core.absorb(chunk);
    }

    /// The authentication tag to append to the ciphertext.
    pub fn finish(self) -> [u8; 16] {
        if self.core.overflow {
            return [0; 16];
        }
        self.core.tag()
    }
}

impl fmt::Debug for GcmEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcmEncryptor")
            .field("len", &self.core.len)
            .finish_non_exhaustive()
    }
}

/// Streaming AES-256-GCM decryption of a whole file whose last 16 bytes are the tag (XEP-0454).
///
/// [`update`](Self::update) returns the plaintext of everything fed so far except the last 16
/// bytes, which it holds back because they may be the tag. **That plaintext is not yet
/// authenticated**: it may be stored or processed provisionally, but must not be delivered (nor
/// acted upon) unless [`finish`](Self::finish) returns `Ok`.
pub struct GcmDecryptor {
    core: GcmCore,
    held: [u8; GCM_TAG_LEN],
    held_len: usize,
}

impl GcmDecryptor {
    /// A new decryption under `key` and `iv` (12 or 16 bytes).
    pub fn new(key: &[u8; 32], iv: &[u8]) -> Result<Self, CipherError> {
        Ok(Self {
            core: GcmCore::new(key, iv)?,
            held: [0; GCM_TAG_LEN],
            held_len: 0,
        })
    }

    /// Takes the next chunk of ciphertext‖tag and returns the (unauthenticated) plaintext that
    /// can be released so far; empty while no more than 16 bytes have been seen.
    pub fn update(&mut self, chunk: &[u8]) -> Bytes {
        let total = self.held_len + chunk.len();
        if total <= GCM_TAG_LEN {
            self.held[self.held_len..total].copy_from_slice(chunk);
            self.held_len = total;
            return Bytes::new();
        }
        // Everything but the last 16 bytes is ciphertext: first what was held, then the chunk.
        let release = total - GCM_TAG_LEN;
        let from_held = self.held_len.min(release);
        let from_chunk = release - from_held;
        let mut out = Vec::with_capacity(release);
        out.extend_from_slice(&self.held[..from_held]);
        out.extend_from_slice(&chunk[..from_chunk]);

        let kept = self.held_len - from_held;
        let mut held = [0u8; GCM_TAG_LEN];
        held[..kept].copy_from_slice(&self.held[from_held..self.held_len]);
        held[kept..].copy_from_slice(&chunk[from_chunk..]);
        self.held = held;
        self.held_len = GCM_TAG_LEN;

        if !self.core.admit(out.len()) {
            return Bytes::new();
        }
        self.core.absorb(&out);
        if !self.core.keystream(&mut out) {
            return Bytes::new();
        }
        Bytes::from(out)
    }

    /// Checks the tag (in constant time). `Err` means every byte `update` returned must be
    /// discarded.
    pub fn finish(self) -> Result<(), CipherError> {
        if self.core.overflow {
            return Err(CipherError::TooLarge);
        }
        if self.held_len < GCM_TAG_LEN {
            return Err(CipherError::Integrity);
        }
        let expected = self.core.tag();
        if ct_eq(&expected, &self.held) {
            Ok(())
        } else {
            Err(CipherError::Integrity)
        }
    }
}

impl fmt::Debug for GcmDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcmDecryptor")
            .field("len", &self.core.len)
            .finish_non_exhaustive()
    }
}

/// A fresh random AES-256 key and 12-byte IV for one XEP-0454 upload.
pub fn fresh() -> ([u8; 32], [u8; 12]) {
    let mut key = [0u8; 32];
    let mut iv = [0u8; 12];
    fill_random(&mut key);
    fill_random(&mut iv);
    (key, iv)
}

/// The longest `aesgcm://` link accepted.
pub const MAX_LINK_LEN: usize = 4096;

/// An `aesgcm://host/path#<hex IV><hex key>` link (XEP-0454) split into the HTTPS URL to fetch
/// and the key material.
///
/// `Debug` shows the HTTPS URL (which never contains the fragment) and the IV's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct AesGcmLink {
    /// The same URL with `https://` for `aesgcm://` and without the fragment.
    pub https_url: String,
    /// 12 bytes, or 16 from older clients.
    pub iv: Vec<u8>,
    pub key: [u8; 32],
}

impl AesGcmLink {
    /// Reads an `aesgcm://` link. The fragment must be exactly 88 (12-byte IV) or 96 (16-byte IV)
    /// hexadecimal digits, IV first then key, in either case; the link must have a host and be
    /// at most [`MAX_LINK_LEN`] bytes long, without whitespace, control characters or
    /// credentials.
    pub fn parse(url: &str) -> Result<Self, CipherError> {
        const SCHEME: &str = "aesgcm://";
        let bad = CipherError::MalformedLink;
        if url.len() > MAX_LINK_LEN {
            return Err(bad("longer than 4 KiB"));
        }
        let rest = match url.get(..SCHEME.len()) {
            Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => &url[SCHEME.len()..],
            _ => return Err(bad("not an aesgcm:// URL")),
        };
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let Some((location, fragment)) = rest.split_once('#') else {
            return Err(bad("no fragment with the key"));
        };
        let authority_end = location.find(['/', '?']).unwrap_or(location.len());
        let authority = &location[..authority_end];
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not accepted"));
        }
        if !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        {
            return Err(bad("the host is not a valid host name"));
        }
        let host = match authority.rsplit_once(':') {
            // host:port (an IPv6 literal ends with `]`, its colons are not a port).
            Some((host, port))
                if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => authority,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let iv_len = match fragment.len() {
            88 => 12,
            96 => 16,
            _ => return Err(bad("the fragment is not 88 or 96 hexadecimal digits")),
        };
        let mut material = [0u8; 48];
        let material = &mut material[..iv_len + 32];
        if !hex_decode(fragment.as_bytes(), material) {
            return Err(bad("the fragment is not hexadecimal"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&material[iv_len..]);
        let iv = material[..iv_len].to_vec();
        material.fill(0);
        Ok(Self {
            https_url: format!("https://{location}"),
            iv,
            key,
        })
    }

    /// The `aesgcm://…#<hex IV><hex key>` link (lowercase hex) for `https_url`, whose scheme is
    /// replaced by `aesgcm` (a URL without `scheme://` is taken as host and path).
    pub fn to_url(&self) -> String {
        let location = match self.https_url.split_once("://") {
            Some((_, rest)) => rest,
            None => &self.https_url,
        };
        let location = location.split_once('#').map_or(location, |(l, _)| l);
        let mut out = String::with_capacity(9 + location.len() + 1 + 2 * (self.iv.len() + 32));
        out.push_str("aesgcm://");
        out.push_str(location);
        out.push('#');
        hex_encode(&self.iv, &mut out);
        hex_encode(&self.key, &mut out);
        out
    }
}

impl fmt::Debug for AesGcmLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesGcmLink")
            .field("https_url", &self.https_url)
            .field("iv_len", &self.iv.len())
            .finish_non_exhaustive()
    }
}

fn hex_encode(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// Decodes exactly `2 * out.len()` hex digits (either case); `false` on any other input.
fn hex_decode(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *o = (hi << 4) | lo,
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// AES-256-CTR + SHA-256 (Matrix encrypted attachments, v2)
// ---------------------------------------------------------------------------------------------

/// The key, IV and ciphertext hash of a Matrix encrypted attachment (the parts of ruma's
/// `EncryptedFile` that matter here, without the URL).
///
/// `Debug` shows the hash only.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentKeys {
    pub key: [u8; 32],
    pub iv: [u8; 16],
    /// SHA-256 of the ciphertext.
    pub sha256: [u8; 32],
}

/// Decodes base64 with padding optional.
const fn lenient(alphabet: &base64::alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}
const STANDARD_LENIENT: GeneralPurpose = lenient(&base64::alphabet::STANDARD);
const URL_SAFE_LENIENT: GeneralPurpose = lenient(&base64::alphabet::URL_SAFE);

/// Decodes `input` into exactly `N` bytes.
fn decode_fixed<const N: usize>(
    engine: &GeneralPurpose,
    input: &str,
    field: &'static str,
    wrong_len: CipherError,
) -> Result<[u8; N], CipherError> {
    // Base64 of N bytes is at most 4·⌈N/3⌉ characters; anything longer is the wrong length
    // (checked first, so a hostile string is not decoded at all).
    if input.len() > N.div_ceil(3) * 4 {
        return Err(wrong_len);
    }
    let bytes = engine
        .decode(input)
        .map_err(|_| CipherError::BadBase64(field))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| wrong_len)
}

impl AttachmentKeys {
    /// Reads the wire forms: `k` of the JWK (base64url), `iv` and `hashes.sha256` (standard
    /// base64), each with or without padding.
    pub fn from_wire(k: &str, iv: &str, sha256: &str) -> Result<Self, CipherError> {
        Ok(Self {
            key: decode_fixed(&URL_SAFE_LENIENT, k, "key", CipherError::BadKeyLength)?,
            iv: decode_fixed(&STANDARD_LENIENT, iv, "IV", CipherError::BadIvLength)?,
            sha256: decode_fixed(
                &STANDARD_LENIENT,
                sha256,
                "SHA-256",
                CipherError::BadHashLength,
            )?,
        })
    }

    /// The key as the JWK's `k`: unpadded base64url.
    pub fn key_jwk_k(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key)
    }

    /// The IV as the `iv` field: unpadded standard base64.
    pub fn iv_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.iv)
    }

    /// The hash as `hashes.sha256`: unpadded standard base64.
    pub fn sha256_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.sha256)
    }
}

impl fmt::Debug for AttachmentKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentKeys")
            .field("sha256", &self.sha256_base64())
            .finish_non_exhaustive()
    }
}

/// Streaming encryption of a Matrix attachment: AES-256-CTR under a fresh random key and IV (low
/// 8 bytes zero), SHA-256 over the ciphertext.
pub struct AttachmentEncryptor {
    ctr: ctr::Ctr128BE<Aes256>,
    sha: Sha256,
    key: [u8; 32],
    iv: [u8; 16],
}

impl AttachmentEncryptor {
    /// A new encryption under a fresh key and IV.
    #[allow(clippy::new_without_default)] // `Default` would hide that this draws a fresh key.
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 16];
        fill_random(&mut key);
        fill_random(&mut iv[..8]);
        Self {
            ctr: ctr::Ctr128BE::<Aes256>::new(&key.into(), &iv.into()),
            sha: Sha256::new(),
            key,
            iv,
        }
    }

    /// Encrypts `chunk` in place and hashes the ciphertext.
    pub fn update(&mut self, chunk: &mut [u8]) {
        // The 128-bit counter starts below 2^64: it cannot run out, but never panic if it did.
        if self.ctr.try_apply_keystream(chunk).is_err() {
            chunk.fill(0);
        }
        self.sha.update(&*chunk);
    }

    /// The key, IV and hash to send along with the ciphertext.
    pub fn finish(self) -> AttachmentKeys {
        AttachmentKeys {
            key: self.key,
            iv: self.iv,
            sha256: self.sha.finalize().into(),
        }
    }
}

impl fmt::Debug for AttachmentEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentEncryptor")
            .finish_non_exhaustive()
    }
}

/// Streaming decryption of a Matrix attachment.
///
/// The plaintext [`update`](Self::update) produces is **not authenticated** until
/// [`finish`](Self::finish) has compared the ciphertext's SHA-256 with the expected one: it must
/// not be delivered if `finish` fails.
pub struct AttachmentDecryptor {
    ctr: ctr::Ctr128BE<Aes256>,
    sha: Sha256,
    expected: [u8; 32],
    failed: bool,
}

impl AttachmentDecryptor {
    /// A new decryption with the key, IV and expected hash of `keys`. (Any 16-byte IV is taken:
    /// the counter is the whole 128-bit block, as in other Matrix clients.)
    pub fn new(keys: &AttachmentKeys) -> Result<Self, CipherError> {
        Ok(Self {
            ctr: ctr::Ctr128BE::<Aes256>::new(&keys.key.into(), &keys.iv.into()),
            sha: Sha256::new(),
            expected: keys.sha256,
            failed: false,
        })
    }

    /// Hashes `chunk` (ciphertext), then decrypts it in place.
    pub fn update(&mut self, chunk: &mut [u8]) {
        self.sha.update(&*chunk);
        if self.failed || self.ctr.try_apply_keystream(chunk).is_err() {
            self.failed = true;
            chunk.fill(0);
        }
    }

    /// Checks the ciphertext's SHA-256 (in constant time).
    pub fn finish(self) -> Result<(), CipherError> {
        let actual: [u8; 32] = self.sha.finalize().into();
        if self.failed {
            return Err(CipherError::TooLarge);
        }
        if ct_eq(&actual, &self.expected) {
            Ok(())
        } else {
            Err(CipherError::Integrity)
        }
    }
}

impl fmt::Debug for AttachmentDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentDecryptor")
            .finish_non_exhaustive()
    }
}
