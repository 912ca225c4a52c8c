//! `server.tls`, checked and built into the [`TlsListener`] the HTTPS listener serves with.

use std::net::SocketAddr;
use std::path::Path;

use super::build::{parse_listen, Errors};
use super::file::{AtKey, TlsSection};
use super::ContentHash;
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
    e.unsupported(&[
        ("server.tls.client_ca", &s.client_ca),
        ("server.tls.client_auth", &s.client_auth),
    ]);
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
    if e.list.len() != before {
        return None;
    }
    TlsListener::new(listen?, loaded, files)
}
