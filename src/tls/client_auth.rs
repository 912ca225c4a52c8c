//! Client certificates at the edge (mTLS): `server.tls.client_ca` and `client_auth`, built into
//! the verifier the HTTPS listener's handshakes use, and the verified certificate read into the
//! connection's facts.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConnection;

use super::client::{provider, CaFile, CaFileError};
use crate::auth::client_cert::ClientCert;

/// `server.tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// Clients without a certificate are served (routes decide); one that presents a
    /// certificate the CA did not issue, or an expired one, fails the handshake.
    Optional,
    /// Every client must present a certificate the CA issued.
    Required,
}

/// The client certificate check of the HTTPS listener.
#[derive(Clone)]
pub struct ClientAuth {
    /// Optional or required.
    pub mode: ClientAuthMode,
    /// The CA file as read at load.
    pub ca: CaFile,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// A verifier trusting the certificates of `ca` as roots; webpki checks the chain, the
    /// validity period and, when present, the clientAuth extended key usage.
    pub fn new(mode: ClientAuthMode, ca: CaFile) -> Result<ClientAuth, CaFileError> {
        let roots = Arc::new(ca.roots()?);
        let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
        let builder = match mode {
            ClientAuthMode::Optional => builder.allow_unauthenticated(),
            ClientAuthMode::Required => builder,
        };
        let verifier = builder.build().map_err(|e| CaFileError::Invalid {
            path: ca.path.clone(),
            error: e.to_string(),
        })?;
        Ok(ClientAuth { mode, ca, verifier })
    }

    /// The verifier for the server configuration.
    pub fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.verifier)
    }
}

/// The certificate could be verified but not read (x509-parser refused what webpki took).
#[derive(Debug)]
pub struct Unreadable;

/// The verified client certificate of a finished handshake, read once for the whole
/// connection; `Ok(None)` when the client sent none (or the listener asks for none).
pub fn peer_identity(conn: &ServerConnection) -> Result<Option<Arc<ClientCert>>, Unreadable> {
    let Some(leaf) = conn.peer_certificates().and_then(|chain| chain.first()) else {
        return Ok(None);
    };
    ClientCert::from_der(leaf)
        .map(|cert| Some(Arc::new(cert)))
        .ok_or(Unreadable)
}
