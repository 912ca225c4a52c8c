//! The one place a `rustls::ClientConfig` is built: which roots are trusted (the compiled-in
//! Mozilla roots or a CA file), which client certificate is presented, and whether the server's
//! certificate is checked at all. Files are read and checked here too, at config load, so a bad
//! file is a config error rather than a client that never connects.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};

/// The crypto provider of every TLS client: ring rather than the default aws-lc-rs, which
/// needs cmake and a C toolchain in the build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The Mozilla root programme, compiled in: the same roots wherever the gateway runs,
/// including slim container images that ship no CA bundle.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// What a client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Servers whose chain ends at one of these roots.
    Roots(RootCertStore),
    /// Any server certificate, unchecked (`insecure_skip_verify`): the connection is encrypted
    /// but not authenticated.
    Anything,
}

/// Builds a client configuration trusting `trust`, presenting `identity` when a server asks
/// for a client certificate, and offering `alpn` (most preferred first).
pub fn client_config(
    trust: Trust,
    identity: Option<&ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    client_config_with_versions(rustls::DEFAULT_VERSIONS, trust, identity, alpn)
}

/// [`client_config`] offering only `versions`: the upstream client uses rustls's safe
/// defaults, while tests of the HTTPS listener pin one version to see it negotiated.
pub fn client_config_with_versions(
    versions: &[&'static SupportedProtocolVersion],
    trust: Trust,
    identity: Option<&ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let builder = match trust {
        Trust::Roots(roots) => builder.with_root_certificates(roots),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            ))),
    };
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts whatever certificate the server shows. The handshake signatures are still checked
/// (against the certificate shown), so the session keys belong to whoever holds its key.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A `ca_file`, read and checked at config load: its path and PEM content. Settings compare
/// by content too, so a reload after the file changed makes new connections that trust the new
/// certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// The PEM text: one or more `CERTIFICATE` blocks.
    pub pem: Arc<[u8]>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("bytes", &self.pem.len())
            .finish()
    }
}

/// Why a CA file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// It could not be read.
    #[error("cannot read ca_file `{path}`: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It holds no `CERTIFICATE` block.
    #[error("ca_file `{0}` holds no PEM certificate")]
    Empty(PathBuf),
    /// A block is not valid PEM, or not a certificate a trust anchor can be made of.
    #[error("ca_file `{path}` has an invalid certificate: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: String,
    },
}

impl CaFile {
    /// Reads `path` and checks that every certificate in it can be trusted, as the TLS client
    /// will when it connects (an error there would only show as a client that never connects).
    pub fn read(path: PathBuf) -> Result<CaFile, CaFileError> {
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(error) => return Err(CaFileError::Unreadable { path, error }),
        };
        let ca = CaFile {
            path,
            pem: pem.into(),
        };
        ca.roots()?;
        Ok(ca)
    }

    /// The certificates as trust anchors.
    pub fn roots(&self) -> Result<RootCertStore, CaFileError> {
        let invalid = |error: String| CaFileError::Invalid {
            path: self.path.clone(),
            error,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.pem) {
            let cert = cert.map_err(|e| invalid(e.to_string()))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(CaFileError::Empty(self.path.clone()));
        }
        Ok(roots)
    }
}

/// A client certificate chain and its key (`cert_file`, `key_file`), read and checked at
/// config load. Compares by content.
pub struct ClientIdentity {
    /// Where the chain was read from.
    pub cert_path: PathBuf,
    /// Where the key was read from.
    pub key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.key.secret_der() == other.key.secret_der()
    }
}

impl Eq for ClientIdentity {}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Why a client certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("cert_file `{0}` holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key.
    #[error("key_file `{path}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: String,
    },
    /// The key is not the certificate's, or cannot be used for signing.
    #[error("key_file `{key}` does not match cert_file `{cert}`: {error}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        error: String,
    },
}

impl ClientIdentity {
    /// Reads a PEM chain (leaf first) and its PEM key (PKCS#8, PKCS#1 or SEC1), and checks that
    /// the key belongs to the leaf certificate.
    pub fn read(cert_path: PathBuf, key_path: PathBuf) -> Result<ClientIdentity, IdentityError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| IdentityError::Unreadable {
                path: path.clone(),
                error,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| IdentityError::NoCertificate(cert_path.clone()))?;
        if chain.is_empty() {
            return Err(IdentityError::NoCertificate(cert_path));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| IdentityError::NoKey {
            path: key_path.clone(),
            error: e.to_string(),
        })?;
        let mismatch = |error: rustls::Error| IdentityError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            error: error.to_string(),
        };
        let signing_key = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(mismatch)?;
        // An unknown public key (a provider that cannot derive it) cannot be compared; ring's
        // keys always can, so only a real mismatch is an error here.
        match rustls::sign::CertifiedKey::new(chain.clone(), signing_key).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(mismatch(e)),
        }
        Ok(ClientIdentity {
            cert_path,
            key_path,
            chain,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["one".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["two".into()]).unwrap();
        let cert = write(&dir, "one.crt", &one.cert.pem());
        let own_key = write(&dir, "one.key", &one.signing_key.serialize_pem());
        let other_key = write(&dir, "two.key", &two.signing_key.serialize_pem());
        ClientIdentity::read(cert.clone(), own_key).expect("the pair matches");
        let error = ClientIdentity::read(cert, other_key)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("one.crt") && error.contains("two.key"),
            "{error}"
        );
    }

    #[test]
    fn files_without_pem_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(&dir, "empty.pem", "not a certificate\n");
        assert!(matches!(
            CaFile::read(empty.clone()),
            Err(CaFileError::Empty(_))
        ));
        let one = rcgen::generate_simple_self_signed(vec!["one".into()]).unwrap();
        let key = write(&dir, "one.key", &one.signing_key.serialize_pem());
        let error = ClientIdentity::read(empty, key).unwrap_err();
        assert!(matches!(error, IdentityError::NoCertificate(_)), "{error}");
    }
}
