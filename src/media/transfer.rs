//! Stream transforms between the two worlds' file encryptions. Each takes a [`ByteStream`] and
//! gives one with the right length announced up front; a check that can only be made at the end
//! (a GCM tag, a SHA-256) ends the stream with [`MediaError::Integrity`], so whoever uploads it
//! aborts the upload and nothing unverified is delivered.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::cipher::{
    AttachmentDecryptor, AttachmentEncryptor, AttachmentKeys, GcmDecryptor, GcmEncryptor,
};
use super::{ByteStream, Chunks, MediaError};

/// The GCM tag's length, appended to an XEP-0454 file.
pub const TAG_LEN: u64 = 16;

/// How much of a file's start [`peek`] gathers for sniffing.
pub const PEEK_BYTES: usize = 64 * 1024;

/// Runs `step` on each chunk of `chunks` (which hold exactly `in_len` bytes) and `end` with the
/// chunk that completes them: `end` may add bytes to it, or fail in its place.
///
/// `end` runs when the last byte comes in, not when the stream says it is over: a consumer that
/// knows the length (an HTTP client sending a body with `Content-Length`) stops reading once it
/// has that many bytes and never asks for the end. A check made only at the end would then never
/// be made, and unverified bytes would be delivered.
fn map_chunks<S, F, E>(chunks: Chunks, in_len: u64, state: S, step: F, end: E) -> Chunks
where
    S: Send + 'static,
    F: FnMut(&mut S, Bytes) -> Result<Bytes, MediaError> + Send + 'static,
    E: FnOnce(S) -> Result<Option<Bytes>, MediaError> + Send + 'static,
{
    struct Run<S, F, E> {
        chunks: Chunks,
        left: u64,
        state: Option<S>,
        step: F,
        end: Option<E>,
    }
    /// The chunk that completes the input, with what `end` adds (or its failure).
    fn finish<S, E>(
        run: &mut Run<S, impl Sized, E>,
        out: Bytes,
    ) -> Option<Result<Bytes, MediaError>>
    where
        E: FnOnce(S) -> Result<Option<Bytes>, MediaError>,
    {
        let state = run.state.take()?;
        let end = run.end.take()?;
        match end(state) {
            Ok(Some(last)) if !last.is_empty() => {
                let mut all = BytesMut::from(&out[..]);
                all.extend_from_slice(&last);
                Some(Ok(all.freeze()))
            }
            Ok(_) if out.is_empty() => None,
            Ok(_) => Some(Ok(out)),
            Err(e) => Some(Err(e)),
        }
    }
    let run = Run {
        chunks,
        left: in_len,
        state: Some(state),
        step,
        end: Some(end),
    };
    Box::pin(futures_util::stream::unfold(run, |mut run| async move {
        loop {
            if run.left == 0 && run.state.is_some() {
                // Nothing (more) to read: an empty input, or the end already due.
                let item = finish(&mut run, Bytes::new())?;
                return Some((item, run));
            }
            let state = run.state.as_mut()?;
            match run.chunks.next().await {
                Some(Ok(chunk)) => {
                    let n = chunk.len() as u64;
                    if n > run.left {
                        run.state = None;
                        return Some((Err(MediaError::Integrity), run));
                    }
                    run.left -= n;
                    match (run.step)(state, chunk) {
                        Ok(out) if run.left == 0 => {
                            let item = finish(&mut run, out)?;
                            return Some((item, run));
                        }
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Some((Ok(out), run)),
                        Err(e) => {
                            run.state = None;
                            return Some((Err(e), run));
                        }
                    }
                }
                Some(Err(e)) => {
                    run.state = None;
                    return Some((Err(e), run));
                }
                None => {
                    // Shorter than announced (a well-behaved source said so itself).
                    run.state = None;
                    return Some((Err(MediaError::Integrity), run));
                }
            }
        }
    }))
}

/// XEP-0454: `source` encrypted with AES-256-GCM under `key` and `iv`, the tag appended.
pub fn gcm_encrypt(
    source: ByteStream,
    key: &[u8; 32],
    iv: &[u8],
) -> Result<ByteStream, MediaError> {
    let encryptor = GcmEncryptor::new(key, iv)?;
    let chunks = map_chunks(
        source.chunks,
        source.len,
        encryptor,
        |enc, chunk| {
            let mut buf = BytesMut::from(&chunk[..]);
            enc.update(&mut buf);
            Ok(buf.freeze())
        },
        |enc| Ok(Some(Bytes::copy_from_slice(&enc.finish()))),
    );
    Ok(ByteStream {
        len: source.len + TAG_LEN,
        content_type: source.content_type,
        chunks,
    })
}

/// XEP-0454: `source` (ciphertext and tag) decrypted; ends with [`MediaError::Integrity`] if
/// the tag does not match.
pub fn gcm_decrypt(
    source: ByteStream,
    key: &[u8; 32],
    iv: &[u8],
) -> Result<ByteStream, MediaError> {
    let Some(len) = source.len.checked_sub(TAG_LEN) else {
        return Err(MediaError::Integrity);
    };
    let decryptor = GcmDecryptor::new(key, iv)?;
    let chunks = map_chunks(
        source.chunks,
        source.len,
        decryptor,
        |dec, chunk| Ok(dec.update(&chunk)),
        |dec| {
            dec.finish()?;
            Ok(None)
        },
    );
    Ok(ByteStream {
        len,
        content_type: None,
        chunks,
    })
}

/// A Matrix encrypted attachment decrypted; ends with [`MediaError::Integrity`] if the
/// ciphertext's SHA-256 is not the one the event gave.
pub fn attachment_decrypt(
    source: ByteStream,
    keys: &AttachmentKeys,
) -> Result<ByteStream, MediaError> {
    let decryptor = AttachmentDecryptor::new(keys)?;
    let chunks = map_chunks(
        source.chunks,
        source.len,
        decryptor,
        |dec, chunk| {
            let mut buf = BytesMut::from(&chunk[..]);
            dec.update(&mut buf);
            Ok(buf.freeze())
        },
        |dec| {
            dec.finish()?;
            Ok(None)
        },
    );
    Ok(ByteStream {
        len: source.len,
        content_type: None,
        chunks,
    })
}

/// `source` encrypted as a Matrix attachment with a fresh key; the keys (with the ciphertext's
/// SHA-256) arrive on the receiver once the last chunk has gone through.
pub fn attachment_encrypt(source: ByteStream) -> (ByteStream, oneshot::Receiver<AttachmentKeys>) {
    let (tx, rx) = oneshot::channel();
    let chunks = map_chunks(
        source.chunks,
        source.len,
        (AttachmentEncryptor::new(), tx),
        |(enc, _), chunk| {
            let mut buf = BytesMut::from(&chunk[..]);
            enc.update(&mut buf);
            Ok(buf.freeze())
        },
        |(enc, tx)| {
            let _ = tx.send(enc.finish());
            Ok(None)
        },
    );
    let stream = ByteStream {
        len: source.len,
        content_type: Some("application/octet-stream".into()),
        chunks,
    };
    (stream, rx)
}

/// The first bytes of `source` (at least [`PEEK_BYTES`] unless it is shorter: whole chunks), and
/// `source` whole again, those bytes first.
pub async fn peek(mut source: ByteStream) -> Result<(Bytes, ByteStream), MediaError> {
    let mut head = BytesMut::new();
    let mut ended = false;
    while head.len() < PEEK_BYTES {
        match source.chunks.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(e),
            None => {
                ended = true;
                break;
            }
        }
    }
    let head = head.freeze();
    let first = futures_util::stream::once({
        let head = head.clone();
        async move { Ok(head) }
    });
    let chunks: Chunks = if ended {
        Box::pin(first)
    } else {
        Box::pin(first.chain(source.chunks))
    };
    Ok((
        head,
        ByteStream {
            len: source.len,
            content_type: source.content_type,
            chunks,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` as a stream of chunks of the given sizes (cycled).
    fn stream_of(data: &[u8], sizes: &[usize]) -> ByteStream {
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = sizes[i % sizes.len()].max(1).min(data.len() - at);
            chunks.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
            at += n;
            i += 1;
        }
        ByteStream {
            len: data.len() as u64,
            content_type: None,
            chunks: Box::pin(futures_util::stream::iter(chunks)),
        }
    }

    async fn collect(stream: ByteStream) -> Result<Vec<u8>, MediaError> {
        let mut out = Vec::new();
        let mut chunks = stream.chunks;
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn gcm_round_trip_in_any_chunking() {
        let key = [7u8; 32];
        let iv = [9u8; 12];
        for n in [0usize, 1, 15, 16, 17, 1000, 70_000] {
            let data = sample(n);
            let enc = gcm_encrypt(stream_of(&data, &[1, 13, 4096]), &key, &iv).expect("enc");
            assert_eq!(enc.len, n as u64 + TAG_LEN);
            let sealed = collect(enc).await.expect("sealed");
            assert_eq!(sealed.len(), n + 16);
            let dec = gcm_decrypt(stream_of(&sealed, &[7, 16, 333]), &key, &iv).expect("dec");
            assert_eq!(dec.len, n as u64);
            assert_eq!(collect(dec).await.expect("opened"), data);
        }
    }

    #[tokio::test]
    async fn a_tampered_gcm_file_ends_in_an_integrity_error() {
        let key = [1u8; 32];
        let iv = [2u8; 12];
        let data = sample(5000);
        let mut sealed = collect(gcm_encrypt(stream_of(&data, &[100]), &key, &iv).expect("enc"))
            .await
            .expect("sealed");
        sealed[1234] ^= 1;
        let dec = gcm_decrypt(stream_of(&sealed, &[100]), &key, &iv).expect("dec");
        assert_eq!(collect(dec).await, Err(MediaError::Integrity));
        assert!(gcm_decrypt(stream_of(&[0u8; 10], &[10]), &key, &iv).is_err());
    }

    #[tokio::test]
    async fn attachments_round_trip_and_check_their_hash() {
        let data = sample(100_000);
        let (enc, keys) = attachment_encrypt(stream_of(&data, &[999]));
        let sealed = collect(enc).await.expect("sealed");
        let keys = keys.await.expect("keys after the end");
        let opened = attachment_decrypt(stream_of(&sealed, &[4096]), &keys).expect("dec");
        assert_eq!(collect(opened).await.expect("opened"), data);
        let mut bad = sealed.clone();
        bad[0] ^= 0x80;
        let opened = attachment_decrypt(stream_of(&bad, &[4096]), &keys).expect("dec");
        assert_eq!(collect(opened).await, Err(MediaError::Integrity));
    }

    /// Reads `stream` the way an HTTP client with a `Content-Length` does: up to its announced
    /// length, never asking for the end.
    async fn read_to_len(stream: ByteStream) -> Result<Vec<u8>, MediaError> {
        let mut out = Vec::new();
        let mut chunks = stream.chunks;
        while (out.len() as u64) < stream.len {
            match chunks.next().await {
                Some(chunk) => out.extend_from_slice(&chunk?),
                None => break,
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn the_verdict_comes_with_the_last_byte_not_after_it() {
        let key = [3u8; 32];
        let iv = [4u8; 12];
        let data = sample(50_000);
        let sealed = read_to_len(gcm_encrypt(stream_of(&data, &[4096]), &key, &iv).expect("enc"))
            .await
            .expect("sealed");
        assert_eq!(
            sealed.len(),
            data.len() + 16,
            "the tag comes within the length"
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let dec = gcm_decrypt(stream_of(&bad, &[4096]), &key, &iv).expect("dec");
        assert_eq!(read_to_len(dec).await, Err(MediaError::Integrity));
        let dec = gcm_decrypt(stream_of(&sealed, &[4096]), &key, &iv).expect("dec");
        assert_eq!(read_to_len(dec).await.expect("good"), data);
        let (enc, keys) = attachment_encrypt(stream_of(&data, &[1000]));
        let attachment = read_to_len(enc).await.expect("attachment");
        let keys = keys
            .await
            .expect("the keys are there once the length is read");
        let mut bad = attachment.clone();
        bad[0] ^= 1;
        let dec = attachment_decrypt(stream_of(&bad, &[1000]), &keys).expect("dec");
        assert_eq!(read_to_len(dec).await, Err(MediaError::Integrity));
    }

    #[tokio::test]
    async fn peek_gives_the_start_and_the_whole() {
        let data = sample(200_000);
        let (head, whole) = peek(stream_of(&data, &[5000])).await.expect("peek");
        assert!(head.len() >= PEEK_BYTES.min(data.len()));
        assert_eq!(&head[..], &data[..head.len()]);
        assert_eq!(collect(whole).await.expect("whole"), data);
        let small = sample(10);
        let (head, whole) = peek(stream_of(&small, &[3])).await.expect("peek");
        assert_eq!(&head[..], &small[..]);
        assert_eq!(collect(whole).await.expect("whole"), small);
    }

    #[tokio::test]
    async fn an_error_upstream_ends_the_stream() {
        let chunks: Chunks = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(MediaError::Stalled),
        ]));
        let source = ByteStream {
            len: 100,
            content_type: None,
            chunks,
        };
        let enc = gcm_encrypt(source, &[0; 32], &[0; 12]).expect("enc");
        assert_eq!(collect(enc).await, Err(MediaError::Stalled));
    }
}
