//! `server.tls`, checked and built into the [`TlsListener`] the HTTPS listener serves with.

use std::net::SocketAddr;
use std::path::Path;

use super::build::{parse_listen, Errors};
use super::file::{AtKey, ClientAuthChoice, TlsSection};
use super::ContentHash;
use crate::tls::client::CaFile;
use crate::tls::client_auth::{ClientAuth, ClientAuthMode};
use crate::tls::server::{read_pem, CertificateFiles, LoadedCertificate, TlsListener};

/// Builds `server.tls`; certificate paths are relative to `base`. `others` are the other
/// listeners' addresses, which the TLS listener must not share. Every file read goes into
/// `hash`, so a reload notices a replaced certificate even when the YAML is unchanged.
pub(super) fn build_tls(
    section: &AtKey<TlsSection>,
    base: &Path,
    others: &[Option<(&str, SocketAddr)>],
    hash: &mut ContentHash,
    e: &mut Errors,
) -> Option<TlsListener> {
    let s = &section.value;
    let before = e.list.len();
    let listen = match &s.listen {
        Some(listen) => parse_listen(listen, e).inspect(|addr| {
            for (name, other) in others.iter().flatten() {
                // Port 0 asks for any free port, so two of them never clash.
                if addr.port() != 0 && addr == other {
                    e.at(
                        listen.mark,
                        format!("server.tls.listen must differ from {name}"),
                    );
                }
            }
        }),
        None if s.damaged.has("listen") => None,
        None => {
            e.at(section.mark, "`tls` needs `listen` (e.g. 0.0.0.0:8443)");
            None
        }
    };
    let mut loaded = Vec::new();
    let mut files = Vec::new();
    match &s.certificates {
        Some(list) if list.value.is_empty() => e.at(
            list.mark,
            "`certificates` is empty; list at least one `cert` and `key` pair",
        ),
        Some(list) => {
            for entry in &list.value {
                let pair = CertificateFiles {
                    cert: base.join(&entry.cert.value),
                    key: base.join(&entry.key.value),
                };
                let cert =
                    read_pem(&pair.cert).map_err(|err| e.at(entry.cert.mark, err.to_string()));
                let key = read_pem(&pair.key).map_err(|err| e.at(entry.key.mark, err.to_string()));
                let (Ok(cert), Ok(key)) = (cert, key) else {
                    continue;
                };
                hash.add_bytes(&pair.cert, &cert);
                hash.add_bytes(&pair.key, &key);
                files.push(pair.cert.clone());
                files.push(pair.key.clone());
                match LoadedCertificate::from_pem(&pair, &cert, &key) {
                    Ok(certificate) => loaded.push(certificate),
                    Err(err) => {
                        use crate::tls::server::CertificateError as E;
                        // A key problem points at `key`, everything else at `cert`.
                        let mark = match err {
                            E::BadKey { .. } => entry.key.mark,
                            _ => entry.cert.mark,
                        };
                        e.at(mark, err.to_string());
                    }
                }
            }
        }
        None if s.damaged.has("certificates") => {}
        None => e.at(
            section.mark,
            "`tls` needs `certificates`: a list of `cert` and `key` files",
        ),
    }
    let client_auth = build_client_auth(section, base, hash, e);
    if let Some(client_auth) = &client_auth {
        files.push(client_auth.ca.path.clone());
    }
    if e.list.len() != before {
        return None;
    }
    TlsListener::new(listen?, loaded, files, client_auth)
}

/// `client_ca` and `client_auth` come together: a CA without a mode, or a mode without a CA,
/// is a half-configured check.
fn build_client_auth(
    section: &AtKey<TlsSection>,
    base: &Path,
    hash: &mut ContentHash,
    e: &mut Errors,
) -> Option<ClientAuth> {
    let s = &section.value;
    match (&s.client_ca, &s.client_auth) {
        (None, None) => None,
        (Some(ca), None) => {
            if !s.damaged.has("client_auth") {
                e.at(
                    ca.mark,
                    "`client_ca` needs `client_auth: optional` or `client_auth: required`",
                );
            }
            None
        }
        (None, Some(mode)) => {
            if !s.damaged.has("client_ca") {
                e.at(
                    mode.mark,
                    "`client_auth` needs `client_ca`: the PEM file of the CAs that issue client certificates",
                );
            }
            None
        }
        (Some(ca), Some(mode)) => {
            let mode = match mode.value {
                ClientAuthChoice::Optional => ClientAuthMode::Optional,
                ClientAuthChoice::Required => ClientAuthMode::Required,
            };
            let path = base.join(&ca.value);
            let read = CaFile::read(path).and_then(|file| {
                hash.add_bytes(&file.path, &file.pem);
                ClientAuth::new(mode, file)
            });
            read.map_err(|err| e.at(ca.mark, format!("client_ca: {err}")))
                .ok()
        }
    }
}
