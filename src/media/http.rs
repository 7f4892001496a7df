//! HTTP for URLs that come from the network (a contact's file link, an upload slot): the
//! bridge must not become a way into the networks it can reach (SSRF). Every host name is
//! resolved by [`GuardedResolver`], which refuses loopback, private, link-local (cloud metadata
//! at 169.254.169.254), shared, multicast and other special addresses unless the host is
//! allow-listed (`media.allowed_private_hosts`); a URL whose host is an address literal is
//! checked before any connection, and so is every redirect. Every transfer is bounded: a
//! connect timeout, a stall timeout between chunks, the announced length, and a size limit.
//!
//! The URLs themselves are never logged: a link may carry its key in the fragment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Url;

use super::{ByteStream, Chunks, MediaError};

/// At most this many redirects are followed.
const MAX_REDIRECTS: usize = 5;

/// Which addresses the bridge may fetch from.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Host names or address literals (lowercase) whose URLs may reach any address.
    allowed: Vec<String>,
}

impl AddressPolicy {
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed
                .iter()
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).trim_end_matches('.');
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
    }

    /// Refuses `url` at once when its host is an address literal the bridge does not fetch
    /// from (names are checked when resolved), or when it is not http(s).
    pub fn check_url(&self, url: &Url) -> Result<(), MediaError> {
        if !matches!(url.scheme(), "https" | "http") {
            return Err(MediaError::BadLink(format!(
                "the scheme {:?} is not fetched",
                url.scheme()
            )));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(MediaError::BadLink("it has no host".into())),
        };
        if is_forbidden(ip) && !self.allows(&ip.to_string()) {
            return Err(MediaError::Forbidden(ip.to_string()));
        }
        Ok(())
    }
}

/// Whether the bridge refuses to connect to `ip` (unless its host is allow-listed): anything
/// that is not a public unicast address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return forbidden_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible and other ::/96
}

/// The refusal a [`GuardedResolver`] returns, found again in reqwest's error chain.
#[derive(Debug)]
struct ForbiddenAddress(IpAddr);

impl std::fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address {} is not fetched from", self.0)
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Resolves names with the system resolver and refuses a name any of whose addresses is
/// forbidden (all of them: a name that resolves to a public and a private address could be
/// made to pick either).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !policy.allows(&host)
                && let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip()))
            {
                return Err(Box::new(ForbiddenAddress(bad.ip())) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for network-supplied URLs.
#[derive(Clone)]
pub struct MediaHttp {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    stall: Duration,
}

/// How a [`MediaHttp`] is set up.
#[derive(Debug, Clone)]
pub struct MediaHttpSettings {
    pub allowed_private_hosts: Vec<String>,
    /// Extra CA certificates (PEM) to trust besides the system's, for a private server.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a transfer may go without a byte before it is given up.
    pub stall: Duration,
}

impl MediaHttp {
    pub fn new(settings: &MediaHttpSettings) -> Result<Self, MediaError> {
        let policy = Arc::new(AddressPolicy::new(&settings.allowed_private_hosts));
        let redirect_policy = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            match redirect_policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("interop-bridge/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(redirects)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(settings.stall);
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| MediaError::Transport(format!("the CA file does not parse: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| MediaError::Transport(e.to_string()))?;
        Ok(Self {
            client,
            policy,
            stall: settings.stall,
        })
    }

    /// Starts fetching `url` (see [`WebFiles::get`](super::WebFiles::get)): refused at once when its address is forbidden or its length is
    /// unknown or above `limit`. Its chunks end with an error if it is cut short or stalls.
    pub async fn get(&self, url: &str, limit: u64) -> Result<ByteStream, MediaError> {
        let url = parse(url)?;
        self.policy.check_url(&url)?;
        let response = self.client.get(url).send().await.map_err(request_error)?;
        download_of(response, limit, self.stall)
    }

    /// Uploads `body` to `url` with `PUT` (an XEP-0363 slot), with its exact length and the
    /// slot's headers. Fails if the body's chunks end with an error (nothing is then stored).
    pub async fn put(
        &self,
        url: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: ByteStream,
    ) -> Result<(), MediaError> {
        let url = parse(url)?;
        self.policy.check_url(&url)?;
        let mut request = self
            .client
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, body.len)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request
            .body(body_of(body.chunks))
            .send()
            .await
            .map_err(request_error)?;
        if !response.status().is_success() {
            return Err(MediaError::Status(response.status().as_u16()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::WebFiles for MediaHttp {
    async fn get(&self, url: &str, limit: u64) -> Result<ByteStream, MediaError> {
        MediaHttp::get(self, url, limit).await
    }

    async fn put(
        &self,
        url: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: ByteStream,
    ) -> Result<(), MediaError> {
        MediaHttp::put(self, url, headers, content_type, body).await
    }
}

fn parse(url: &str) -> Result<Url, MediaError> {
    if url.len() > 4096 {
        return Err(MediaError::BadLink("it is longer than 4096 bytes".into()));
    }
    Url::parse(url).map_err(|e| MediaError::BadLink(e.to_string()))
}

/// The error a request body's chunks ended with, if that is what failed the request.
pub fn body_error(error: &reqwest::Error) -> Option<MediaError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(media) = e.downcast_ref::<MediaError>() {
            return Some(media.clone());
        }
        source = e.source();
    }
    None
}

/// A reqwest error as a [`MediaError`], without its URL.
pub fn request_error(error: reqwest::Error) -> MediaError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(ForbiddenAddress(ip)) = e.downcast_ref::<ForbiddenAddress>() {
            return MediaError::Forbidden(ip.to_string());
        }
        source = e.source();
    }
    if let Some(media) = body_error(&error) {
        return media;
    }
    if error.is_timeout() {
        return MediaError::Stalled;
    }
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let mut text = error.without_url().to_string();
    for e in chain {
        text.push_str(": ");
        text.push_str(&e);
    }
    MediaError::Transport(text)
}

/// A request body that streams `chunks`; an error in them aborts the request.
pub fn body_of(chunks: Chunks) -> reqwest::Body {
    reqwest::Body::wrap_stream(chunks)
}

/// The file a GET answered with: refused unless it succeeded and announced a length of at most
/// `limit`; its chunks held to that length and to `stall` between them.
pub fn download_of(
    response: reqwest::Response,
    limit: u64,
    stall: Duration,
) -> Result<ByteStream, MediaError> {
    if !response.status().is_success() {
        return Err(MediaError::Status(response.status().as_u16()));
    }
    let len = response.content_length().ok_or(MediaError::UnknownLength)?;
    if len > limit {
        return Err(MediaError::TooLarge { size: len, limit });
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(255).collect());
    Ok(ByteStream {
        len,
        content_type,
        chunks: response_chunks(response, len, stall),
    })
}

/// The body of `response` as chunks that must add up to exactly `len` bytes, none of them
/// more than `stall` after the one before.
pub fn response_chunks(response: reqwest::Response, len: u64, stall: Duration) -> Chunks {
    let chunks = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(request_error));
    exact_length(Box::pin(chunks), len, stall)
}

/// `chunks`, checked to add up to exactly `len` bytes and never to pause longer than `stall`.
pub fn exact_length(chunks: Chunks, len: u64, stall: Duration) -> Chunks {
    struct State {
        chunks: Chunks,
        got: u64,
        done: bool,
    }
    let state = State {
        chunks,
        got: 0,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut s| async move {
            if s.done {
                return None;
            }
            let next = match tokio::time::timeout(stall, s.chunks.next()).await {
                Err(_) => Some(Err(MediaError::Stalled)),
                Ok(next) => next,
            };
            let item = match next {
                Some(Ok(chunk)) => {
                    s.got += chunk.len() as u64;
                    if s.got > len {
                        Err(MediaError::Length {
                            expected: len,
                            got: s.got,
                        })
                    } else {
                        Ok(chunk)
                    }
                }
                Some(Err(e)) => Err(e),
                None if s.got == len => return None,
                None => Err(MediaError::Length {
                    expected: len,
                    got: s.got,
                }),
            };
            s.done = item.is_err();
            Some((item, s))
        },
    ))
}

/// A stream of the chunks of `bytes` (for tests and small bodies).
pub fn from_bytes(bytes: Bytes, content_type: Option<String>) -> ByteStream {
    ByteStream {
        len: bytes.len() as u64,
        content_type,
        chunks: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden(s.parse().expect("address"))
    }

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for a in [
            "127.0.0.1",
            "127.5.6.7",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "fec0::1",
        ] {
            assert!(forbidden(a), "{a} should be forbidden");
        }
        for a in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(!forbidden(a), "{a} should be allowed");
        }
    }

    #[test]
    fn address_literals_are_checked_before_connecting() {
        let policy = AddressPolicy::new(&["localhost".into(), "[::1]".into()]);
        let check = |u: &str| policy.check_url(&Url::parse(u).expect("url"));
        assert_eq!(
            check("https://127.0.0.1:5281/a"),
            Err(MediaError::Forbidden("127.0.0.1".into()))
        );
        assert_eq!(
            check("http://169.254.169.254/latest/meta-data/"),
            Err(MediaError::Forbidden("169.254.169.254".into()))
        );
        assert!(
            check("https://[::1]:8448/x").is_ok(),
            "allow-listed literal"
        );
        assert!(
            check("https://localhost:5281/x").is_ok(),
            "names at resolve time"
        );
        assert!(check("https://93.184.216.34/x").is_ok());
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(MediaError::BadLink(_))
        ));
    }

    fn client(allowed: &[&str]) -> MediaHttp {
        MediaHttp::new(&MediaHttpSettings {
            allowed_private_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            ca_pem: None,
            stall: Duration::from_secs(5),
        })
        .expect("client")
    }

    /// A one-shot HTTP server on loopback answering `response` to the first request.
    async fn serve_once(response: &'static [u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_unless_allow_listed() {
        let port = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let url = format!("http://localhost:{port}/f");
        let refused = client(&[]).get(&url, 100).await;
        assert!(
            matches!(refused, Err(MediaError::Forbidden(_))),
            "{refused:?}"
        );
        let literal = client(&["localhost"])
            .get(&format!("http://127.0.0.1:{port}/f"), 100)
            .await;
        assert_eq!(
            literal.err(),
            Some(MediaError::Forbidden("127.0.0.1".into()))
        );
        let mut got = client(&["localhost"])
            .get(&url, 100)
            .await
            .expect("allowed");
        assert_eq!(got.len, 5);
        let chunk = got.chunks.next().await.expect("a chunk").expect("ok");
        assert_eq!(&chunk[..], b"hello");
        assert!(got.chunks.next().await.is_none());
    }

    #[tokio::test]
    async fn length_is_required_and_bounded_and_kept() {
        let port = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello").await;
        let url = format!("http://localhost:{port}/f");
        let http = client(&["localhost"]);
        assert_eq!(
            http.get(&url, 10).await.err(),
            Some(MediaError::TooLarge {
                size: 50,
                limit: 10
            })
        );
        let mut short = http.get(&url, 100).await.expect("starts");
        let mut last = None;
        while let Some(item) = short.chunks.next().await {
            last = Some(item);
        }
        assert!(
            matches!(last, Some(Err(_))),
            "a short body ends in an error"
        );
        let port = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            http.get(&format!("http://localhost:{port}/f"), 100)
                .await
                .err(),
            Some(MediaError::Status(404))
        );
    }

    #[tokio::test]
    async fn redirects_to_forbidden_addresses_are_refused() {
        let port = serve_once(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let got = client(&["localhost"])
            .get(&format!("http://localhost:{port}/f"), 100)
            .await;
        assert_eq!(
            got.err(),
            Some(MediaError::Forbidden("169.254.169.254".into()))
        );
    }
}
