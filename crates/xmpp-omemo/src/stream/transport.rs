//! TCP, direct TLS and the STARTTLS upgrade, with rustls (the verifier is in `tls.rs`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::Error;

/// A byte stream to the server, plain (only until STARTTLS) or TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

/// Opens the TCP connection to one address (`resolver.rs` finds them).
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let fail = |reason: String| Error::Connect {
        addr: addr.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    Ok(tcp)
}

/// Runs the TLS handshake on `tcp`, verifying the certificate against `domain` (the JID's
/// domain, not the host we connected to).
pub async fn start_tls(
    tcp: TcpStream,
    domain: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Transport, Error> {
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|e| Error::Tls(format!("bad server name: {e}")))?;
    let tls = tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| Error::Timeout("the TLS handshake"))?
        .map_err(|e| handshake_error(e, domain))?;
    Ok(Transport::Tls(Box::new(tls)))
}

/// A handshake failure: a refused certificate is told apart from the rest (tokio-rustls hands
/// rustls' error inside the `io::Error`).
fn handshake_error(e: std::io::Error, domain: &str) -> Error {
    super::tls::refusal_of(&e, domain).unwrap_or_else(|| Error::Tls(e.to_string()))
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
