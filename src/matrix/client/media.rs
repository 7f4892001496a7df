//! The content repository, streamed: authenticated media downloads (`/_matrix/client/v1/media`,
//! which Synapse requires for media uploaded since it turned authenticated media on) and
//! uploads (`/_matrix/media/v3/upload`), both as the acting user (identity assertion), with the
//! exact length announced and nothing held whole in memory.

use std::time::{Duration, Instant};

use ruma::api::client::authenticated_media::get_media_config;
use ruma::{MxcUri, OwnedMxcUri, UserId};
use serde::Deserialize;
use tracing::debug;

use super::MatrixClient;
use crate::media::http::{body_error, body_of, download_of, request_error};
use crate::media::{ByteStream, MediaError};

/// How long the homeserver's upload limit is remembered.
const LIMIT_TTL: Duration = Duration::from_secs(600);
/// How long one transfer may take in all (a stall is caught sooner, between chunks).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

impl MatrixClient {
    /// The homeserver's largest upload (`m.upload.size`), `None` if it names none; remembered
    /// for ten minutes.
    pub async fn upload_limit(&self) -> Result<Option<u64>, MediaError> {
        if let Some((at, limit)) = *self.media_limit_lock()
            && at.elapsed() < LIMIT_TTL
        {
            return Ok(limit);
        }
        let response = self
            .send(get_media_config::v1::Request::new(), None)
            .await
            .map_err(|e| MediaError::Homeserver(e.to_string()))?;
        let limit = Some(u64::from(response.upload_size));
        *self.media_limit_lock() = Some((Instant::now(), limit));
        Ok(limit)
    }

    fn media_limit_lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Option<u64>)>> {
        self.media_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts downloading `mxc` as `user`: refused above `limit` or without a length.
    pub async fn download_media(
        &self,
        user: &UserId,
        mxc: &MxcUri,
        limit: u64,
        stall: Duration,
    ) -> Result<ByteStream, MediaError> {
        let (server, media) = mxc
            .parts()
            .map_err(|e| MediaError::BadLink(format!("not a content URI: {e}")))?;
        let mut url = self.media_url(&["_matrix", "client", "v1", "media", "download"])?;
        url.path_segments_mut()
            .map_err(|()| MediaError::BadLink("the homeserver address".into()))?
            .push(server.as_str())
            .push(media);
        url.query_pairs_mut().append_pair("user_id", user.as_str());
        let response = self
            .http
            .get(url)
            .bearer_auth(self.as_token.expose())
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|e| passing(request_error(e)))?;
        if !response.status().is_success() {
            debug!(
                status = response.status().as_u16(),
                "media download refused"
            );
        }
        download_of(response, limit, stall).map_err(passing)
    }

    /// Uploads `body` as `user` with `filename` and `content_type`; its content URI. The
    /// upload fails (nothing stored) if the body's chunks end with an error.
    pub async fn upload_media(
        &self,
        user: &UserId,
        filename: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<OwnedMxcUri, MediaError> {
        let mut url = self.media_url(&["_matrix", "media", "v3", "upload"])?;
        if !filename.is_empty() {
            url.query_pairs_mut().append_pair("filename", filename);
        }
        url.query_pairs_mut().append_pair("user_id", user.as_str());
        let response = self
            .http
            .post(url)
            .bearer_auth(self.as_token.expose())
            .header(reqwest::header::CONTENT_LENGTH, body.len)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(TRANSFER_TIMEOUT)
            .body(body_of(body.chunks))
            .send()
            .await
            // The body's own failure (the source stalled, a checksum) is the file's; any
            // other is the homeserver's.
            .map_err(|e| body_error(&e).unwrap_or_else(|| passing(request_error(e))))?;
        let status = response.status().as_u16();
        if status == 413 {
            let limit = self.upload_limit().await.ok().flatten().unwrap_or(0);
            return Err(MediaError::TooLarge {
                size: body.len,
                limit,
            });
        }
        if status != 200 {
            return Err(passing(MediaError::Status(status)));
        }
        #[derive(Deserialize)]
        struct Uploaded {
            content_uri: OwnedMxcUri,
        }
        let uploaded: Uploaded = response
            .json()
            .await
            .map_err(|e| MediaError::Homeserver(format!("the upload's answer: {e}")))?;
        Ok(uploaded.content_uri)
    }

    fn media_url(&self, segments: &[&str]) -> Result<url::Url, MediaError> {
        let mut url = url::Url::parse(&self.base)
            .map_err(|e| MediaError::Transport(format!("the homeserver address: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| MediaError::Transport("the homeserver address has no path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

/// A homeserver failure that may pass (unreachable, a reset, 5xx, 429) as
/// [`MediaError::Homeserver`], which the bridge tries again later instead of giving the file
/// up; any other error as it is.
fn passing(error: MediaError) -> MediaError {
    if error.is_transient() {
        MediaError::Homeserver(error.to_string())
    } else {
        error
    }
}
