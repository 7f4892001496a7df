//! CPU cost of bridging a file, per MiB, with the bridge's own streamed ciphers, fed in 64 KiB
//! chunks as the HTTP clients deliver them:
//! - `xmpp_to_matrix`: XEP-0454 AES-256-GCM decryption (tag checked) then Matrix attachment
//!   encryption (AES-256-CTR + SHA-256 of the ciphertext), the encrypted-portal path;
//! - `matrix_to_xmpp`: attachment decryption (SHA-256 checked) then GCM encryption;
//! - each cipher alone. Results: docs/performance.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use interop_bridge::media::cipher::{
    AttachmentDecryptor, AttachmentEncryptor, GcmDecryptor, GcmEncryptor, fresh,
};

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn file() -> Vec<u8> {
    (0..MIB).map(|i| (i * 31 % 251) as u8).collect()
}

fn gcm_seal(data: &[u8], key: &[u8; 32], iv: &[u8; 12]) -> Vec<u8> {
    let mut enc = GcmEncryptor::new(key, iv).expect("key and iv");
    let mut out = data.to_vec();
    for chunk in out.chunks_mut(CHUNK) {
        enc.update(chunk);
    }
    out.extend_from_slice(&enc.finish());
    out
}

fn bench(c: &mut Criterion) {
    let data = file();
    let (key, iv) = fresh();
    let sealed = gcm_seal(&data, &key, &iv);
    let mut attachment = data.clone();
    let mut enc = AttachmentEncryptor::new();
    for chunk in attachment.chunks_mut(CHUNK) {
        enc.update(chunk);
    }
    let keys = enc.finish();

    let mut group = c.benchmark_group("media_per_mib");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("gcm_encrypt", |b| {
        b.iter(|| black_box(gcm_seal(black_box(&data), &key, &iv)))
    });
    group.bench_function("gcm_decrypt", |b| {
        b.iter(|| {
            let mut dec = GcmDecryptor::new(&key, &iv).expect("key and iv");
            for chunk in sealed.chunks(CHUNK) {
                black_box(dec.update(chunk));
            }
            dec.finish().expect("tag")
        })
    });
    group.bench_function("attachment_encrypt", |b| {
        b.iter(|| {
            let mut buf = data.clone();
            let mut enc = AttachmentEncryptor::new();
            for chunk in buf.chunks_mut(CHUNK) {
                enc.update(chunk);
            }
            black_box(enc.finish())
        })
    });
    group.bench_function("xmpp_to_matrix", |b| {
        b.iter(|| {
            let mut dec = GcmDecryptor::new(&key, &iv).expect("key and iv");
            let mut enc = AttachmentEncryptor::new();
            for chunk in sealed.chunks(CHUNK) {
                let mut plain = dec.update(chunk).to_vec();
                enc.update(&mut plain);
                black_box(&plain);
            }
            dec.finish().expect("tag");
            black_box(enc.finish())
        })
    });
    group.bench_function("matrix_to_xmpp", |b| {
        b.iter(|| {
            let mut dec = AttachmentDecryptor::new(&keys).expect("keys");
            let mut enc = GcmEncryptor::new(&key, &iv).expect("key and iv");
            let mut buf = attachment.clone();
            for chunk in buf.chunks_mut(CHUNK) {
                dec.update(chunk);
                enc.update(chunk);
            }
            dec.finish().expect("hash");
            black_box(enc.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
