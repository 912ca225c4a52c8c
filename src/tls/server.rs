//! The HTTPS listener's TLS settings: certificates and keys loaded from PEM files, and a
//! certificate resolver that picks one by the client's SNI.
//!
//! A resolver is built whole from the files at each config load and never changes: a reload
//! builds a new one for new handshakes while connections keep the one they started with.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::client_auth::ClientAuth;

/// ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate and key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a PEM certificate chain.
    #[error("`{}` holds no PEM certificate{}", path.display(), detail_suffix(detail))]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if anything.
        detail: Option<String>,
    },
    /// The first certificate of the chain cannot be parsed as X.509.
    #[error("`{}`: the certificate cannot be parsed: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The file is not a PEM private key of a kind rustls can sign with.
    #[error("`{}` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1){}", path.display(), detail_suffix(detail))]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything.
        detail: Option<String>,
    },
    /// The key is not the one the certificate was issued for.
    #[error("the key in `{}` does not match the certificate in `{}`", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// One `certificates:` entry: where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A loaded certificate with the key that signs for it.
pub struct LoadedCertificate {
    /// DNS names from its SAN entries, lowercased (wildcards as `*.example.com`).
    pub names: Vec<String>,
    /// The metric label: the first SAN, or the certificate's file name.
    pub label: String,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl LoadedCertificate {
    /// Reads and checks one certificate and key pair.
    pub fn load(files: &CertificateFiles) -> Result<Self, CertificateError> {
        Self::from_pem(files, &read_pem(&files.cert)?, &read_pem(&files.key)?)
    }

    /// Checks one certificate and key pair read from `files`.
    pub fn from_pem(
        files: &CertificateFiles,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, CertificateError> {
        let chain = parse_chain(&files.cert, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertificateError::BadKey {
            path: files.key.clone(),
            detail: match e {
                rustls::pki_types::pem::Error::NoItemsFound => None,
                other => Some(other.to_string()),
            },
        })?;
        let signing =
            provider::sign::any_supported_type(&key).map_err(|e| CertificateError::BadKey {
                path: files.key.clone(),
                detail: Some(e.to_string()),
            })?;
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            CertificateError::BadCertificate {
                path: files.cert.clone(),
                detail: e.to_string(),
            }
        })?;
        let names: Vec<String> = leaf
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let not_after = not_after(&chain[0]).ok_or_else(|| CertificateError::BadCertificate {
            path: files.cert.clone(),
            detail: "no readable validity period".into(),
        })?;
        let key = CertifiedKey::new(chain, signing);
        // Compares the key's public half with the certificate's, so a mix-up of files after a
        // renewal fails here rather than in every handshake.
        match key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(CertificateError::Mismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                })
            }
            Err(e) => {
                return Err(CertificateError::BadKey {
                    path: files.key.clone(),
                    detail: Some(e.to_string()),
                })
            }
        }
        let label = names.first().cloned().unwrap_or_else(|| {
            files
                .cert
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| files.cert.display().to_string())
        });
        Ok(LoadedCertificate {
            names,
            label,
            not_after,
            key: Arc::new(key),
        })
    }
}

/// The content of a PEM file.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::NoCertificate {
            path: path.to_path_buf(),
            detail: Some(e.to_string()),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: path.to_path_buf(),
            detail: None,
        });
    }
    Ok(chain)
}

/// Picks a certificate by SNI: an exact name first, then a wildcard covering the name's first
/// label; with no SNI, or a name no certificate has, the first certificate.
pub struct CertificateResolver {
    certificates: Vec<LoadedCertificate>,
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
}

impl fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateResolver")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

impl CertificateResolver {
    /// A resolver over `certificates`, the first being the default; `None` when empty.
    /// When two certificates list the same name, the earlier one wins.
    pub fn new(certificates: Vec<LoadedCertificate>) -> Option<Self> {
        if certificates.is_empty() {
            return None;
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, cert) in certificates.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(index),
                    None => exact.entry(name.clone()).or_insert(index),
                };
            }
        }
        Some(CertificateResolver {
            certificates,
            exact,
            wildcard,
        })
    }

    /// The certificates, in config order.
    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }

    /// The index of the certificate served for `server_name`.
    fn pick(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else { return 0 };
        // rustls hands SNI over already checked as a DNS name, but not lowercased.
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = self.pick(hello.server_name());
        Some(Arc::clone(&self.certificates[index].key))
    }
}

/// `server.tls` as loaded: where to listen and the TLS configuration new handshakes use.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// `server.tls.listen`.
    pub listen: std::net::SocketAddr,
    /// The rustls configuration, with `resolver` inside.
    pub config: Arc<ServerConfig>,
    /// The certificates, for the expiry metric.
    pub resolver: Arc<CertificateResolver>,
    /// Every certificate, key and client CA file, for the file watcher.
    pub files: Vec<PathBuf>,
    /// `client_ca` and `client_auth`, when set.
    pub client_auth: Option<ClientAuth>,
}

impl TlsListener {
    /// Builds the listener's settings from loaded certificates (the first is the default) and
    /// the client certificate check; `None` when there are no certificates.
    pub fn new(
        listen: std::net::SocketAddr,
        certificates: Vec<LoadedCertificate>,
        files: Vec<PathBuf>,
        client_auth: Option<ClientAuth>,
    ) -> Option<Self> {
        let resolver = Arc::new(CertificateResolver::new(certificates)?);
        Some(TlsListener {
            listen,
            config: server_config(Arc::clone(&resolver), client_auth.as_ref()),
            resolver,
            files,
            client_auth,
        })
    }
}

impl TlsListener {
    /// Each certificate's metric name and notAfter (Unix time), in config order.
    pub fn expiries(&self) -> impl Iterator<Item = (&str, i64)> {
        self.resolver
            .certificates()
            .iter()
            .map(|c| (c.label.as_str(), c.not_after))
    }
}

/// A server configuration over `resolver`: TLS 1.2 and 1.3 with rustls' default suites for the
/// ring provider, ALPN `h2` then `http/1.1`, client certificates checked by `client_auth`.
pub fn server_config(
    resolver: Arc<CertificateResolver>,
    client_auth: Option<&ClientAuth>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let builder = match client_auth {
        Some(client_auth) => builder.with_client_cert_verifier(client_auth.verifier()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The notAfter of a DER certificate, in seconds since the Unix epoch.
///
/// webpki checks validity but does not expose it; the walk is short: Certificate ->
/// tbsCertificate -> (optional [0] version, serial, signature, issuer) -> validity.
fn not_after(cert: &[u8]) -> Option<i64> {
    let (certificate, _) = der_item(cert, 0x30)?;
    let (mut tbs, _) = der_item(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?;
    }
    for _ in 0..3 {
        tbs = der_skip(tbs)?; // serial, signature algorithm, issuer
    }
    let (validity, _) = der_item(tbs, 0x30)?;
    let after_not_before = der_skip(validity)?;
    let tag = *after_not_before.first()?;
    let (time, _) = der_item(after_not_before, tag)?;
    let time = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => parse_time(time, 2), // UTCTime: YYMMDDHHMMSSZ
        0x18 => parse_time(time, 4), // GeneralizedTime: YYYYMMDDHHMMSSZ
        _ => None,
    }
}

/// The content of a DER item with tag `tag` at the start of `input`, and what follows it.
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let count = usize::from(first & 0x7f);
        // Certificates are far below 4 GiB; longer length fields are malformed here.
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = input.get(2..2 + count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// What follows the DER item at the start of `input`, whatever its tag.
fn der_skip(input: &[u8]) -> Option<&[u8]> {
    der_item(input, *input.first()?).map(|(_, rest)| rest)
}

fn parse_time(text: &str, year_digits: usize) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    if digits.len() != year_digits + 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |from: usize, len: usize| digits[from..from + len].parse::<i64>().ok();
    let mut year = num(0, year_digits)?;
    if year_digits == 2 {
        // RFC 5280 4.1.2.5.1: 50..99 are 19xx, 00..49 are 20xx.
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let at = year_digits;
    let (month, day) = (num(at, 2)?, num(at + 2, 2)?);
    let (hour, minute, second) = (num(at + 4, 2)?, num(at + 6, 2)?, num(at + 8, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
