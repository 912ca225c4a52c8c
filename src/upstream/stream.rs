//! The connect step of the upstream client: a TCP connection, and for `https://` targets the
//! TLS handshake over it, giving one stream type the HTTP/1.1 exchange reads and writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::http1::io::{PollWrite, ReadSize};
use crate::net::connect_any;
use crate::tls::client::{client_config, webpki_roots, CaFile, ClientIdentity, Trust};

/// An upstream's `tls:` settings as configured (file contents included), which decide whether
/// a pool can be kept across a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Roots to trust instead of the compiled-in Mozilla roots.
    pub ca_file: Option<CaFile>,
    /// The name sent in SNI and verified in the certificate, instead of each target's host.
    pub server_name: Option<ServerName<'static>>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// The client certificate to present when asked.
    pub identity: Option<ClientIdentity>,
}

/// An upstream's TLS client: its settings and the configuration built from them.
#[derive(Clone)]
pub struct UpstreamTls {
    settings: TlsSettings,
    connector: TlsConnector,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl UpstreamTls {
    /// Builds the client for HTTP/1.1; the error says what in `settings` cannot be used.
    pub fn new(settings: TlsSettings) -> Result<UpstreamTls, String> {
        // Only HTTP/1.1 is spoken on these connections: offering h2 would let a server pick it.
        Self::with_alpn(settings, &[b"http/1.1"])
    }

    /// The same client for `protocol: h2`, offering only `h2` by ALPN.
    pub fn for_h2(&self) -> Result<UpstreamTls, String> {
        Self::with_alpn(self.settings.clone(), &[b"h2"])
    }

    fn with_alpn(settings: TlsSettings, alpn: &[&[u8]]) -> Result<UpstreamTls, String> {
        let trust = if settings.insecure_skip_verify {
            Trust::Anything
        } else {
            match &settings.ca_file {
                Some(ca) => Trust::Roots(ca.roots().map_err(|e| e.to_string())?),
                None => Trust::Roots(webpki_roots()),
            }
        };
        let config = client_config(trust, settings.identity.as_ref(), alpn)
            .map_err(|e| format!("cannot build the TLS client: {e}"))?;
        Ok(UpstreamTls {
            settings,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The name to send and verify for a target whose host is `host`.
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.settings.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be a TLS server name: {e}"))
    }
}

/// Where one target's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// `host:port` to resolve and connect to.
    pub address: String,
    /// For `https://` targets, the name sent in SNI and verified in the certificate.
    pub tls_name: Option<ServerName<'static>>,
}

/// Why no stream could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TCP connection.
    #[error("{0}")]
    Tcp(io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol).
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> io::Error {
        match e {
            ConnectError::Tcp(e) => e,
            ConnectError::Tls(ref inner) => io::Error::new(inner.kind(), e.to_string()),
        }
    }
}

/// Connects to `target`, with TLS through `tls` when the target is `https://`.
pub async fn connect(
    target: &ConnectTarget,
    tls: Option<&UpstreamTls>,
) -> Result<UpstreamStream, ConnectError> {
    let tcp = connect_any(target.address.as_str())
        .await
        .map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    match (&target.tls_name, tls) {
        (Some(name), Some(tls)) => {
            let stream = tls
                .connector
                .connect(name.clone(), tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(UpstreamStream::Tls(Box::new(stream)))
        }
        _ => Ok(UpstreamStream::Plain(tcp)),
    }
}

/// A connection to a target: plain TCP, or TLS over it (boxed: the TLS state is large, and
/// plain connections should not carry its size).
pub enum UpstreamStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Reads into `buf`, sized by `size`.
    pub(super) fn poll_fill(
        &mut self,
        size: &mut ReadSize,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpstreamStream::Plain(tcp) => size.poll_fill(tcp, cx, buf),
            UpstreamStream::Tls(tls) => size.poll_fill_from(tls.as_mut(), cx, buf),
        }
    }

    /// Whether an idle connection can carry another request: the upstream has neither closed
    /// it nor sent anything unasked. Under TLS the records that arrived are decrypted first,
    /// so a session ticket (no application data) leaves the connection usable, while a
    /// close_notify, an alert or any application byte does not. Costs no system call while the
    /// socket has nothing to read.
    pub(super) fn is_open(&mut self) -> bool {
        match self {
            UpstreamStream::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            UpstreamStream::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut probe = ReadBuf::new(&mut probe);
                // Nobody waits on an idle connection: the sweeper and the next checkout look
                // again, so the wake-up is not needed.
                let mut cx = Context::from_waker(Waker::noop());
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_pending()
            }
        }
    }
}

impl PollWrite for &mut UpstreamStream {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut **self {
            UpstreamStream::Plain(tcp) => crate::http1::io::poll_write_vectored(tcp, cx, bufs),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut **self {
            UpstreamStream::Plain(_) => Poll::Ready(Ok(())),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
