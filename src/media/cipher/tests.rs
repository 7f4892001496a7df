use super::*;
use aes_gcm::aead::Aead;
use aes_gcm::aead::consts::U16;
use aes_gcm::{Aes256Gcm, AesGcm};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

type Aes256Gcm16 = AesGcm<Aes256, U16>;

fn hex(s: &str) -> Vec<u8> {
    let mut out = vec![0u8; s.len() / 2];
    assert!(hex_decode(s.as_bytes(), &mut out), "bad hex in test");
    out
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Chunk sizes that add up to `len`, in one of several shapes, with empty chunks mixed in.
fn chunk_sizes(len: usize, shape: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut sizes = vec![0];
    let mut left = len;
    while left > 0 {
        let n = match shape {
            0 => left,
            1 => 1,
            2 => 15,
            3 => 16,
            4 => 17,
            5 => rng.random_range(0..=40),
            _ => rng.random_range(0..=70_000),
        }
        .min(left);
        sizes.push(n);
        if rng.random_range(0..8) == 0 {
            sizes.push(0);
        }
        left -= n;
    }
    sizes.push(0);
    sizes
}

const SHAPES: usize = 7;

fn gcm_encrypt_chunked(
    key: &[u8; 32],
    iv: &[u8],
    plain: &[u8],
    shape: usize,
    rng: &mut StdRng,
) -> Vec<u8> {
    let mut enc = GcmEncryptor::new(key, iv).expect("valid IV");
    let mut out = Vec::with_capacity(plain.len() + 16);
    let mut at = 0;
    for n in chunk_sizes(plain.len(), shape, rng) {
        let mut chunk = plain[at..at + n].to_vec();
        enc.update(&mut chunk);
        out.extend_from_slice(&chunk);
        at += n;
    }
    out.extend_from_slice(&enc.finish());
    out
}

fn gcm_decrypt_chunked(
    key: &[u8; 32],
    iv: &[u8],
    sealed: &[u8],
    shape: usize,
    rng: &mut StdRng,
) -> Result<Vec<u8>, CipherError> {
    let mut dec = GcmDecryptor::new(key, iv)?;
    let mut out = Vec::new();
    let mut at = 0;
    for n in chunk_sizes(sealed.len(), shape, rng) {
        out.extend_from_slice(&dec.update(&sealed[at..at + n]));
        at += n;
    }
    dec.finish()?;
    Ok(out)
}

fn lengths(rng: &mut StdRng) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 4096, 65_537];
    v.extend((0..4).map(|_| rng.random_range(0..20_000)));
    v
}

#[test]
fn gcm_matches_aes_gcm_with_12_byte_iv_in_any_chunking() {
    let mut rng = StdRng::seed_from_u64(454);
    for len in lengths(&mut rng) {
        let key: [u8; 32] = random_bytes(&mut rng, 32).try_into().expect("right length");
        let iv = random_bytes(&mut rng, 12);
        let plain = random_bytes(&mut rng, len);
        let reference = Aes256Gcm::new(&key.into())
            .encrypt(
                iv.as_slice().try_into().expect("right length"),
                plain.as_slice(),
            )
            .expect("reference encryption");
        for shape in 0..SHAPES {
            let sealed = gcm_encrypt_chunked(&key, &iv, &plain, shape, &mut rng);
            assert_eq!(sealed, reference, "len {len} shape {shape}");
            let opened =
                gcm_decrypt_chunked(&key, &iv, &reference, shape, &mut rng).expect("authentic");
            assert_eq!(opened, plain, "len {len} shape {shape}");
        }
    }
}

#[test]
fn gcm_matches_aes_gcm_with_16_byte_iv_in_any_chunking() {
    let mut rng = StdRng::seed_from_u64(16);
    for len in lengths(&mut rng) {
        let key: [u8; 32] = random_bytes(&mut rng, 32).try_into().expect("right length");
        let iv = random_bytes(&mut rng, 16);
        let plain = random_bytes(&mut rng, len);
        let reference = Aes256Gcm16::new(&key.into())
            .encrypt(
                iv.as_slice().try_into().expect("right length"),
                plain.as_slice(),
            )
            .expect("reference encryption");
        for shape in 0..SHAPES {
            let sealed = gcm_encrypt_chunked(&key, &iv, &plain, shape, &mut rng);
            assert_eq!(sealed, reference, "len {len} shape {shape}");
            let opened =
                gcm_decrypt_chunked(&key, &iv, &reference, shape, &mut rng).expect("authentic");
            assert_eq!(opened, plain, "len {len} shape {shape}");
        }
    }
}

#[test]
fn gcm_one_megabyte_both_ways() {
    let mut rng = StdRng::seed_from_u64(1 << 20);
    let (key, iv) = fresh();
    let plain = random_bytes(&mut rng, (1 << 20) + 3);
    let reference = Aes256Gcm::new(&key.into())
        .encrypt((&iv).into(), plain.as_slice())
        .expect("reference encryption");
    for shape in [0, 3, 6] {
        let sealed = gcm_encrypt_chunked(&key, &iv, &plain, shape, &mut rng);
        assert_eq!(sealed, reference);
        // Theirs opens ours, ours opens theirs.
        let theirs = Aes256Gcm::new(&key.into())
            .decrypt((&iv).into(), sealed.as_slice())
            .expect("reference decryption");
        assert_eq!(theirs, plain);
        let ours = gcm_decrypt_chunked(&key, &iv, &reference, shape, &mut rng).expect("authentic");
        assert_eq!(ours, plain);
    }
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13–15 (AES-256, 96-bit
/// IV, no associated data).
#[test]
fn gcm_mcgrew_viega_test_cases_13_to_15() {
    let mut rng = StdRng::seed_from_u64(15);
    let cases: [(&str, &str, &str, &str, &str); 3] = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
    ];
    for (k, iv, p, c, t) in cases {
        let key: [u8; 32] = hex(k).try_into().expect("right length");
        let iv = hex(iv);
        let mut expected = hex(c);
        expected.extend(hex(t));
        for shape in 0..SHAPES {
            assert_eq!(
                gcm_encrypt_chunked(&key, &iv, &hex(p), shape, &mut rng),
                expected
            );
            assert_eq!(
                gcm_decrypt_chunked(&key, &iv, &expected, shape, &mut rng).expect("authentic"),
                hex(p)
            );
        }
    }
}

/// A 16-byte IV (J0 through GHASH), computed independently with OpenSSL.
#[test]
fn gcm_16_byte_iv_vector_from_openssl() {
    let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
        .try_into()
        .expect("32 bytes");
    let iv: Vec<u8> = (0u8..16).collect();
    let plain = b"XEP-0454 16-byte IV, 33 bytes!!!!";
    let mut expected = hex("2c7fcf3061ff3a8f1c72ef7ff43e16332b19ee9129e812637938e6dc341da0b0a3");
    expected.extend(hex("9b8de666c40ee61fe5d8b914439e3180"));
    let mut rng = StdRng::seed_from_u64(33);
    for shape in 0..SHAPES {
        assert_eq!(
            gcm_encrypt_chunked(&key, &iv, plain, shape, &mut rng),
            expected
        );
        assert_eq!(
            gcm_decrypt_chunked(&key, &iv, &expected, shape, &mut rng).expect("authentic"),
            plain
        );
    }
}

#[test]
fn gcm_empty_file_is_just_the_tag() {
    let (key, iv) = fresh();
    let enc = GcmEncryptor::new(&key, &iv).expect("valid IV");
    let tag = enc.finish();
    let reference = Aes256Gcm::new(&key.into())
        .encrypt((&iv).into(), &[][..])
        .expect("reference encryption");
    assert_eq!(tag.as_slice(), reference.as_slice());

    let mut dec = GcmDecryptor::new(&key, &iv).expect("valid IV");
    assert!(dec.update(&tag).is_empty());
    assert_eq!(dec.finish(), Ok(()));
}

#[test]
fn gcm_flipped_bit_anywhere_fails_at_finish() {
    let mut rng = StdRng::seed_from_u64(1);
    let (key, iv) = fresh();
    let plain = random_bytes(&mut rng, 40);
    let sealed = gcm_encrypt_chunked(&key, &iv, &plain, 0, &mut rng);
    for bit in 0..sealed.len() * 8 {
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let shape = bit % SHAPES;
        assert_eq!(
            gcm_decrypt_chunked(&key, &iv, &tampered, shape, &mut rng),
            Err(CipherError::Integrity),
            "bit {bit}"
        );
    }
    // And in a larger file, at random places.
    let plain = random_bytes(&mut rng, 100_000);
    let sealed = gcm_encrypt_chunked(&key, &iv, &plain, 6, &mut rng);
    for _ in 0..20 {
        let mut tampered = sealed.clone();
        let at = rng.random_range(0..tampered.len());
        tampered[at] ^= 1 << rng.random_range(0..8);
        assert_eq!(
            gcm_decrypt_chunked(&key, &iv, &tampered, 6, &mut rng),
            Err(CipherError::Integrity)
        );
    }
}

#[test]
fn gcm_wrong_key_or_iv_fails() {
    let mut rng = StdRng::seed_from_u64(2);
    let (key, iv) = fresh();
    let sealed = gcm_encrypt_chunked(&key, &iv, b"hello", 0, &mut rng);
    let mut other_key = key;
    other_key[31] ^= 1;
    assert!(gcm_decrypt_chunked(&other_key, &iv, &sealed, 0, &mut rng).is_err());
    let mut other_iv = iv;
    other_iv[0] ^= 1;
    assert!(gcm_decrypt_chunked(&key, &other_iv, &sealed, 0, &mut rng).is_err());
}

#[test]
fn gcm_truncated_or_extended_file_fails() {
    let mut rng = StdRng::seed_from_u64(3);
    let (key, iv) = fresh();
    let plain = random_bytes(&mut rng, 1000);
    let sealed = gcm_encrypt_chunked(&key, &iv, &plain, 0, &mut rng);
    for cut in [
        0,
        1,
        15,
        16,
        17,
        500,
        sealed.len() - 17,
        sealed.len() - 16,
        sealed.len() - 1,
    ] {
        for shape in 0..SHAPES {
            assert_eq!(
                gcm_decrypt_chunked(&key, &iv, &sealed[..cut], shape, &mut rng),
                Err(CipherError::Integrity),
                "cut at {cut}"
            );
        }
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        gcm_decrypt_chunked(&key, &iv, &longer, 0, &mut rng),
        Err(CipherError::Integrity)
    );
}

#[test]
fn gcm_decryptor_holds_back_the_last_16_bytes() {
    let (key, iv) = fresh();
    let mut dec = GcmDecryptor::new(&key, &iv).expect("valid IV");
    assert_eq!(dec.update(&[0; 10]).len(), 0);
    assert_eq!(dec.update(&[0; 6]).len(), 0);
    assert_eq!(dec.update(&[0; 1]).len(), 1);
    assert_eq!(dec.update(&[0; 40]).len(), 40);
    assert_eq!(dec.update(&[]).len(), 0);
}

#[test]
fn gcm_rejects_bad_iv_lengths() {
    let key = [7u8; 32];
    for len in [0, 1, 8, 11, 13, 15, 17, 32, 60] {
        let iv = vec![0u8; len];
        assert_eq!(
            GcmEncryptor::new(&key, &iv).err(),
            Some(CipherError::BadIvLength)
        );
        assert_eq!(
            GcmDecryptor::new(&key, &iv).err(),
            Some(CipherError::BadIvLength)
        );
    }
}

#[test]
fn gcm_overflow_is_refused_without_panicking() {
    let (key, iv) = fresh();
    let mut enc = GcmEncryptor::new(&key, &iv).expect("valid IV");
    enc.core.len = GCM_MAX_LEN - 2;
    let mut chunk = *b"abc";
    enc.update(&mut chunk);
    assert_eq!(chunk, [0; 3], "plaintext must not leak past the limit");
    assert_eq!(enc.finish(), [0; 16]);

    let mut dec = GcmDecryptor::new(&key, &iv).expect("valid IV");
    dec.core.len = GCM_MAX_LEN;
    assert!(dec.update(&[1; 40]).is_empty());
    assert_eq!(dec.finish(), Err(CipherError::TooLarge));
}

#[test]
fn fresh_draws_new_material() {
    let (k1, iv1) = fresh();
    let (k2, iv2) = fresh();
    assert_ne!(k1, k2);
    assert_ne!(iv1, iv2);
    assert_ne!(k1, [0; 32]);
}

#[test]
fn debug_output_shows_no_key_material() {
    let (key, iv) = fresh();
    let enc = GcmEncryptor::new(&key, &iv).expect("valid IV");
    let dec = GcmDecryptor::new(&key, &iv).expect("valid IV");
    let link = AesGcmLink {
        https_url: "https://up.example.org/f/a.jpg".into(),
        iv: iv.to_vec(),
        key,
    };
    let keys = AttachmentEncryptor::new().finish();
    let printed = format!(
        "{enc:?} {dec:?} {link:?} {keys:?} {:?} {:?}",
        AttachmentEncryptor::new(),
        AttachmentDecryptor::new(&keys).expect("valid keys")
    );
    let mut secret = String::new();
    hex_encode(&key, &mut secret);
    for needle in [
        secret[..16].to_string(),
        format!("{:?}", &key[..4]),
        format!("{}", key[0]),
        keys.key_jwk_k(),
        keys.iv_base64(),
        link.to_url(),
    ] {
        if needle.len() > 3 {
            assert!(!printed.contains(&needle), "{printed}");
        }
    }
    assert!(printed.contains("https://up.example.org/f/a.jpg"));
}

// --- aesgcm:// links -------------------------------------------------------------------------

const IV12: &str = "000102030405060708090a0b";
const IV16: &str = "000102030405060708090a0b0c0d0e0f";
const KEY: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

#[test]
fn link_with_12_byte_iv_parses() {
    let url = format!("aesgcm://upload.example.org:5281/files/abc/photo%20one.jpg#{IV12}{KEY}");
    let link = AesGcmLink::parse(&url).expect("valid link");
    assert_eq!(
        link.https_url,
        "https://upload.example.org:5281/files/abc/photo%20one.jpg"
    );
    assert_eq!(link.iv, hex(IV12));
    assert_eq!(link.key.to_vec(), hex(KEY));
    assert_eq!(link.to_url(), url);
}

#[test]
fn link_with_16_byte_iv_and_uppercase_parses() {
    let fragment = format!("{IV16}{KEY}").to_uppercase();
    let url = format!("AESGCM://example.org/a?b=c#{fragment}");
    let link = AesGcmLink::parse(&url).expect("valid link");
    assert_eq!(link.https_url, "https://example.org/a?b=c");
    assert_eq!(link.iv, hex(IV16));
    assert_eq!(link.key.to_vec(), hex(KEY));
    assert_eq!(
        link.to_url(),
        format!("aesgcm://example.org/a?b=c#{IV16}{KEY}")
    );
}

#[test]
fn link_accepts_ip_literals_and_bare_hosts() {
    for host in ["[2001:db8::1]:8443", "[::1]", "192.0.2.1", "localhost"] {
        let url = format!("aesgcm://{host}/x#{IV12}{KEY}");
        let link = AesGcmLink::parse(&url).expect("valid link");
        assert_eq!(link.https_url, format!("https://{host}/x"));
    }
    let link = AesGcmLink::parse(&format!("aesgcm://example.org#{IV12}{KEY}")).expect("valid link");
    assert_eq!(link.https_url, "https://example.org");
}

#[test]
fn link_round_trips_from_fresh_material() {
    let (key, iv) = fresh();
    let link = AesGcmLink {
        https_url: "https://share.example.net/u/9f/voice.oga".into(),
        iv: iv.to_vec(),
        key,
    };
    let url = link.to_url();
    assert!(url.starts_with("aesgcm://share.example.net/u/9f/voice.oga#"));
    assert_eq!(AesGcmLink::parse(&url).expect("valid link"), link);
}

#[test]
fn link_rejects_hostile_inputs_precisely_without_quoting_the_fragment() {
    let good = format!("{IV12}{KEY}");
    let long = format!("aesgcm://example.org/{}#{good}", "a".repeat(4100));
    let cases: Vec<(String, &str)> = vec![
        (format!("https://example.org/a#{good}"), "not an aesgcm"),
        (format!("aesgcm:/example.org/a#{good}"), "not an aesgcm"),
        ("aesgcm:".into(), "not an aesgcm"),
        (String::new(), "not an aesgcm"),
        ("aesgcm://example.org/a".into(), "no fragment"),
        ("aesgcm://example.org/a#".into(), "88 or 96"),
        (format!("aesgcm://example.org/a#{good}0"), "88 or 96"),
        (format!("aesgcm://example.org/a#{}", &good[1..]), "88 or 96"),
        (
            format!("aesgcm://example.org/a#{IV12}{KEY}{KEY}"),
            "88 or 96",
        ),
        (
            format!("aesgcm://example.org/a#{}g", &good[1..]),
            "not hexadecimal",
        ),
        (
            format!("aesgcm://example.org/a#{}+1", &good[2..]),
            "not hexadecimal",
        ),
        (
            format!("aesgcm://example.org/a#{}é", &good[2..]),
            "not hexadecimal",
        ),
        (
            format!("aesgcm://example.org/a#{}#", &good[1..]),
            "not hexadecimal",
        ),
        (format!("aesgcm:///a#{good}"), "no host"),
        (format!("aesgcm://#{good}"), "no host"),
        (format!("aesgcm://:443/a#{good}"), "no host"),
        (
            format!("aesgcm://user:pw@example.org/a#{good}"),
            "credentials",
        ),
        (format!("aesgcm://exa mple.org/a#{good}"), "whitespace"),
        (format!("aesgcm://example.org/a b#{good}"), "whitespace"),
        (format!("aesgcm://example.org/a\n#{good}"), "whitespace"),
        (format!("aesgcm://example.org/a\u{0}#{good}"), "control"),
        (format!("aesgcm://exämple.org/a#{good}"), "host"),
        (format!("aesgcm://example.org\\evil/a#{good}"), "host"),
        (long, "4 KiB"),
    ];
    for (url, reason) in cases {
        let err = AesGcmLink::parse(&url).expect_err("must be refused");
        let text = err.to_string();
        assert!(
            matches!(err, CipherError::MalformedLink(_)),
            "{url:?}: {err:?}"
        );
        assert!(text.contains(reason), "{url:?}: {text}");
        assert!(!text.contains(&KEY[..16]), "{text}");
        assert!(!text.contains(&IV12[4..]), "{text}");
    }
}

// --- Matrix attachments ------------------------------------------------------------------------

fn attachment_encrypt_chunked(
    plain: &[u8],
    shape: usize,
    rng: &mut StdRng,
) -> (Vec<u8>, AttachmentKeys) {
    let mut enc = AttachmentEncryptor::new();
    let mut out = Vec::with_capacity(plain.len());
    let mut at = 0;
    for n in chunk_sizes(plain.len(), shape, rng) {
        let mut chunk = plain[at..at + n].to_vec();
        enc.update(&mut chunk);
        out.extend_from_slice(&chunk);
        at += n;
    }
    (out, enc.finish())
}

fn attachment_decrypt_chunked(
    sealed: &[u8],
    keys: &AttachmentKeys,
    shape: usize,
    rng: &mut StdRng,
) -> Result<Vec<u8>, CipherError> {
    let mut dec = AttachmentDecryptor::new(keys)?;
    let mut out = Vec::with_capacity(sealed.len());
    let mut at = 0;
    for n in chunk_sizes(sealed.len(), shape, rng) {
        let mut chunk = sealed[at..at + n].to_vec();
        dec.update(&mut chunk);
        out.extend_from_slice(&chunk);
        at += n;
    }
    dec.finish()?;
    Ok(out)
}

/// The same file encrypted in one call by `ctr` and hashed in one call by `sha2`.
fn one_shot(plain: &[u8], keys: &AttachmentKeys) -> (Vec<u8>, [u8; 32]) {
    let mut data = plain.to_vec();
    let mut c = ctr::Ctr128BE::<Aes256>::new(&keys.key.into(), &keys.iv.into());
    c.apply_keystream(&mut data);
    let hash = Sha256::digest(&data).into();
    (data, hash)
}

#[test]
fn attachment_round_trips_in_any_chunking() {
    let mut rng = StdRng::seed_from_u64(0xA77);
    let mut sizes = lengths(&mut rng);
    sizes.push(1 << 20);
    for len in sizes {
        let plain = random_bytes(&mut rng, len);
        for shape in 0..SHAPES {
            if len > 100_000 && (1..=4).contains(&shape) {
                continue;
            }
            let (sealed, keys) = attachment_encrypt_chunked(&plain, shape, &mut rng);
            assert_eq!(keys.iv[8..], [0; 8], "the counter starts at zero");
            let (expected, hash) = one_shot(&plain, &keys);
            assert_eq!(sealed, expected);
            assert_eq!(keys.sha256, hash);
            let opened =
                attachment_decrypt_chunked(&sealed, &keys, shape, &mut rng).expect("authentic");
            assert_eq!(opened, plain);
        }
    }
}

/// The example attachment from matrix-rust-sdk's `file_encryption::attachments` tests.
#[test]
fn attachment_decrypts_the_matrix_rust_sdk_example() {
    let ciphertext = [
        179u8, 154, 118, 127, 186, 127, 110, 33, 203, 33, 33, 134, 67, 100, 173, 46, 235, 27, 215,
        172, 36, 26, 75, 47, 33, 160,
    ];
    let keys = AttachmentKeys::from_wire(
        "Voq2nkPme_x8no5-Tjq_laDAdxE6iDbxnlQXxwFPgE4",
        "i0DovxYdJEcAAAAAAAAAAA",
        "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU",
    )
    .expect("valid wire forms");
    let mut rng = StdRng::seed_from_u64(26);
    for shape in 0..SHAPES {
        let plain =
            attachment_decrypt_chunked(&ciphertext, &keys, shape, &mut rng).expect("authentic");
        assert_eq!(plain, b"It's a secret to everybody");
    }
    assert_eq!(
        keys.key_jwk_k(),
        "Voq2nkPme_x8no5-Tjq_laDAdxE6iDbxnlQXxwFPgE4"
    );
    assert_eq!(keys.iv_base64(), "i0DovxYdJEcAAAAAAAAAAA");
    assert_eq!(
        keys.sha256_base64(),
        "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU"
    );
}

#[test]
fn attachment_flipped_bit_or_wrong_length_fails_at_finish() {
    let mut rng = StdRng::seed_from_u64(5);
    let plain = random_bytes(&mut rng, 3000);
    let (sealed, keys) = attachment_encrypt_chunked(&plain, 6, &mut rng);
    for _ in 0..50 {
        let mut tampered = sealed.clone();
        let at = rng.random_range(0..tampered.len());
        tampered[at] ^= 1 << rng.random_range(0..8);
        assert_eq!(
            attachment_decrypt_chunked(&tampered, &keys, 5, &mut rng),
            Err(CipherError::Integrity)
        );
    }
    assert_eq!(
        attachment_decrypt_chunked(&sealed[..2999], &keys, 0, &mut rng),
        Err(CipherError::Integrity)
    );
    assert_eq!(
        attachment_decrypt_chunked(&[], &keys, 0, &mut rng),
        Err(CipherError::Integrity)
    );
    let mut wrong_hash = keys.clone();
    wrong_hash.sha256[0] ^= 1;
    assert_eq!(
        attachment_decrypt_chunked(&sealed, &wrong_hash, 0, &mut rng),
        Err(CipherError::Integrity)
    );
}

#[test]
fn attachment_keys_are_fresh_each_time() {
    let a = AttachmentEncryptor::new().finish();
    let b = AttachmentEncryptor::new().finish();
    assert_ne!(a.key, b.key);
    assert_ne!(a.iv, b.iv);
    // The hash of nothing, for an empty file.
    assert_eq!(
        a.sha256_base64(),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
    );
}

#[test]
fn attachment_wire_forms_round_trip_padded_or_not() {
    let keys = AttachmentEncryptor::new().finish();
    let (k, iv, sha) = (keys.key_jwk_k(), keys.iv_base64(), keys.sha256_base64());
    assert!(!k.contains('=') && !iv.contains('=') && !sha.contains('='));
    assert!(!k.contains('+') && !k.contains('/'));
    assert_eq!(
        AttachmentKeys::from_wire(&k, &iv, &sha).expect("valid wire forms"),
        keys
    );
    let padded =
        AttachmentKeys::from_wire(&format!("{k}="), &format!("{iv}=="), &format!("{sha}="));
    assert_eq!(padded.expect("padding is optional"), keys);
}

#[test]
fn attachment_wire_forms_reject_bad_input() {
    let k = "Voq2nkPme_x8no5-Tjq_laDAdxE6iDbxnlQXxwFPgE4";
    let iv = "i0DovxYdJEcAAAAAAAAAAA";
    let sha = "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU";
    let cases: [(&str, &str, &str, CipherError); 9] = [
        ("AAAA", iv, sha, CipherError::BadKeyLength),
        (&"A".repeat(4000), iv, sha, CipherError::BadKeyLength),
        (
            k,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            sha,
            CipherError::BadIvLength,
        ),
        (k, "AAAA", sha, CipherError::BadIvLength),
        (k, iv, "AAAA", CipherError::BadHashLength),
        (
            "Voq2nkPme/x8no5+Tjq/laDAdxE6iDbxnlQXxwFPgE4",
            iv,
            sha,
            CipherError::BadBase64("key"),
        ),
        (
            k,
            "i0Dovx!dJEcAAAAAAAAAAA",
            sha,
            CipherError::BadBase64("IV"),
        ),
        (
            k,
            iv,
            "ANdt819a8bZl4jKy3Z-jcqtiNICa2y0AW4BBJ_iQRAU",
            CipherError::BadBase64("SHA-256"),
        ),
        (k, iv, "", CipherError::BadHashLength),
    ];
    for (k, iv, sha, expected) in cases {
        let err = AttachmentKeys::from_wire(k, iv, sha).expect_err("must be refused");
        assert_eq!(err, expected);
        assert!(!err.to_string().contains("Voq2"));
    }
}

#[test]
fn ct_eq_compares_whole_strings() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
}
