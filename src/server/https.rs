//! Serving a connection of the HTTPS listener: the TLS handshake, on the worker that serves the
//! connection, then HTTP/2 (hyper's server) or HTTP/1.x (the gateway's own) as ALPN chose.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::http1::{ClientConnection, Http2Handoff, Limits};
use super::http2::{serve_hyper, Io};
use super::listener::{Phase, Role};
use super::state::GatewayState;
use crate::http1::transport::{TlsTransport, Transport};
use crate::proxy::pipeline::{ConnInfo, TlsInfo};

/// What the handshake settled: the listener offers only `h2` and `http/1.1`, so the agreed
/// protocol is one of those static names (an unknown one would be ignored, as no ALPN).
fn tls_info(tls: &rustls::ServerConnection) -> TlsInfo {
    let alpn = match tls.alpn_protocol() {
        Some(b"h2") => Some("h2"),
        Some(b"http/1.1") => Some("http/1.1"),
        _ => None,
    };
    TlsInfo {
        alpn,
        sni: tls.server_name().map(Arc::from),
    }
}

/// Shakes hands with the TLS configuration in force now (a reload's new certificates apply to
/// the next handshake; this connection keeps the ones it started with), then serves HTTP.
/// The handshake must finish within `request_header_timeout`, like a request head.
pub(super) async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
) -> Option<Http2Handoff> {
    let _ = stream.set_nodelay(true);
    let (config, limits) = {
        let snapshot = state.snapshot.load();
        let server = &snapshot.server;
        // Missing only for a connection accepted just before a reload removed `server.tls`.
        let config = Arc::clone(&server.tls.as_ref()?.config);
        let limits = Limits {
            header_timeout: server.request_header_timeout,
            idle_timeout: server.idle_timeout,
            max_head: usize::try_from(server.max_header_bytes).unwrap_or(usize::MAX),
        };
        (config, limits)
    };
    let handshake = TlsAcceptor::from(config).accept(stream);
    let stream = match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let Ok(client_cert) = crate::tls::client_auth::peer_identity(stream.get_ref().1) else {
        tracing::debug!(%peer, "client certificate verified but unreadable; closing");
        return None;
    };
    let tls = tls_info(stream.get_ref().1);
    let h2 = tls.alpn == Some("h2");
    let mut conn = ConnInfo::new(peer);
    conn.tls = Some(tls);
    conn.client_cert = client_cert;
    if h2 {
        let io = Io {
            stream,
            already_read: Bytes::new(),
        };
        serve_hyper(io, conn, Role::Main, state, phase, limits).await;
        return None;
    }
    // HTTP/1.x gets the gateway's own server, as on the plain listener: the session leaves
    // tokio-rustls (which holds no bytes of its own) and is driven over the socket directly.
    let (tcp, session) = stream.into_inner();
    let transport = Transport::Tls(Box::new(TlsTransport::new(tcp, session)));
    ClientConnection::over_tls(transport, conn, state, phase, limits)
        .serve()
        .await
}
