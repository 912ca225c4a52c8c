//! Upstream `tls:`: the TLS client of an upstream's `https://` targets.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::build::Errors;
use super::errors::ConfigError;
use super::file::{AtKey, UpstreamTlsSection};
use super::ContentHash;
use crate::tls::client::{CaFile, ClientIdentity};
use crate::upstream::stream::{TlsSettings, UpstreamTls};

/// What reading `tls:` leaves besides the client: warnings for the snapshot, and the files
/// read, for the config's content hash.
pub(super) struct Side<'a> {
    pub(super) warnings: &'a mut Vec<ConfigError>,
    pub(super) content_hash: &'a mut ContentHash,
}

/// Builds the TLS client of upstream `upstream`. `https` says whether any target is
/// `https://`: without one, a `tls:` section would change nothing and is refused. Relative
/// paths start at `base` (the folder of gateway.yaml).
pub(super) fn build_upstream_tls(
    upstream: &str,
    section: Option<&AtKey<UpstreamTlsSection>>,
    https: bool,
    base: &Path,
    e: &mut Errors,
    side: &mut Side,
) -> Option<Arc<UpstreamTls>> {
    if !https {
        if let Some(section) = section {
            e.at(
                section.mark,
                "`tls` applies to https:// targets, and every target of this upstream is \
                 http://; use https:// targets or remove `tls`",
            );
        }
        return None;
    }
    let Some(AtKey { value: s, mark }) = section else {
        return build(TlsSettings::default(), e, None);
    };
    let before = e.list.len();
    let insecure = s.insecure_skip_verify.as_ref().is_some_and(|v| v.value);
    let ca_file = s.ca_file.as_ref().and_then(|ca| {
        if insecure {
            e.at(
                ca.mark,
                "`ca_file` has no effect with `insecure_skip_verify: true`; remove one of them",
            );
            return None;
        }
        match CaFile::read(base.join(&ca.value)) {
            Ok(file) => {
                side.content_hash.add_bytes(&file.path, &file.pem);
                Some(file)
            }
            Err(err) => {
                e.at(ca.mark, err.to_string());
                None
            }
        }
    });
    let server_name =
        s.server_name
            .as_ref()
            .and_then(|name| match ServerName::try_from(name.value.clone()) {
                Ok(server_name) => Some(server_name),
                Err(err) => {
                    e.at(
                        name.mark,
                        format!("`{}` is not a valid server name: {err}", name.value),
                    );
                    None
                }
            });
    let identity = match (&s.cert_file, &s.key_file) {
        (None, None) => None,
        (Some(cert), None) => {
            e.at(
                cert.mark,
                "`cert_file` needs `key_file`, the key of its certificate",
            );
            None
        }
        (None, Some(key)) => {
            e.at(
                key.mark,
                "`key_file` needs `cert_file`, the certificate of its key",
            );
            None
        }
        (Some(cert), Some(key)) => {
            match ClientIdentity::read(base.join(&cert.value), base.join(&key.value)) {
                Ok(identity) => {
                    // The certificate stands for the pair: the key is a secret, and a new key
                    // comes with a new certificate.
                    let cert_pem = std::fs::read(&identity.cert_path).unwrap_or_default();
                    side.content_hash.add_bytes(&identity.cert_path, &cert_pem);
                    Some(identity)
                }
                Err(err) => {
                    e.at(cert.mark, err.to_string());
                    None
                }
            }
        }
    };
    if e.list.len() != before {
        return None;
    }
    if let Some(flag) = s.insecure_skip_verify.as_ref().filter(|v| v.value) {
        side.warnings.push(ConfigError::at(
            e.file,
            flag.mark,
            format!(
                "upstream `{upstream}`: insecure_skip_verify is true, so its https:// targets' \
                 certificates are not checked (the traffic is encrypted but anyone on the path \
                 can impersonate the targets)"
            ),
        ));
    }
    let settings = TlsSettings {
        ca_file,
        server_name,
        insecure_skip_verify: insecure,
        identity,
    };
    build(settings, e, Some(*mark))
}

fn build(
    settings: TlsSettings,
    e: &mut Errors,
    mark: Option<super::file::Mark>,
) -> Option<Arc<UpstreamTls>> {
    match UpstreamTls::new(settings) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(message) => {
            match mark {
                Some(mark) => e.at(mark, message),
                None => e.list.push(ConfigError::file(e.file, message)),
            }
            None
        }
    }
}
