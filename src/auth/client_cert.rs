//! The verified client certificate of a TLS connection (mTLS at the edge), as facts `authorize`
//! rules can require: `client_cert.subject`, `client_cert.cn`, `client_cert.dns`,
//! `client_cert.uri` and `client_cert.email`.
//!
//! The certificate is parsed once, right after the handshake that verified it, and shared by
//! every request of the connection; a rule only compares borrowed strings.

use std::fmt::Write as _;

use x509_parser::oid_registry::{
    Oid, OID_DOMAIN_COMPONENT, OID_USERID, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME,
    OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME,
    OID_X509_STATE_OR_PROVINCE_NAME, OID_X509_STREET_ADDRESS,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// The prefix that puts a claim on the client certificate instead of the JWT.
pub const PREFIX: &str = "client_cert.";

/// What the gateway read from a client certificate its `client_ca` verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as an RFC 4514 string (`CN=svc,O=Example,C=DE`); `None` when an attribute
    /// cannot be written as text, so a rule on the subject fails closed.
    pub subject: Option<String>,
    /// The subject's common name, when it has exactly one (with several, which one names the
    /// client is a guess, so none does).
    pub cn: Option<String>,
    /// DNS names from the SAN extension, lowercased.
    pub dns: Vec<String>,
    /// URIs from the SAN extension (SPIFFE IDs, for instance).
    pub uri: Vec<String>,
    /// Email addresses (rfc822Name) from the SAN extension.
    pub email: Vec<String>,
}

impl ClientCert {
    /// Reads the leaf certificate (DER); `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let mut cns = subject.iter_common_name().map(|cn| cn.as_str().ok());
        let cn = match (cns.next(), cns.next()) {
            (Some(Some(cn)), None) => Some(cn.to_owned()),
            _ => None,
        };
        let mut out = ClientCert {
            subject: rfc4514(subject),
            cn,
            ..ClientCert::default()
        };
        // A SAN extension that does not parse makes the certificate unreadable: its names
        // cannot be trusted to be the ones the CA meant.
        if let Some(san) = cert.subject_alternative_name().ok()? {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => out.dns.push(dns.to_ascii_lowercase()),
                    GeneralName::URI(uri) => out.uri.push((*uri).to_owned()),
                    GeneralName::RFC822Name(email) => out.email.push((*email).to_owned()),
                    _ => {}
                }
            }
        }
        Some(out)
    }
}

/// One `client_cert.*` requirement of an `authorize` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertClaim {
    /// Which part of the certificate.
    pub field: CertField,
    /// The value it must have (for lists: one of the entries must have it).
    pub value: String,
}

/// The parts of a client certificate a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// `client_cert.subject`: the whole subject, RFC 4514.
    Subject,
    /// `client_cert.cn`: the subject's common name.
    Cn,
    /// `client_cert.dns`: any DNS SAN (compared without regard to case).
    Dns,
    /// `client_cert.uri`: any URI SAN.
    Uri,
    /// `client_cert.email`: any email SAN.
    Email,
}

impl CertField {
    /// Every name, for error messages.
    pub const NAMES: &'static str = "client_cert.subject, client_cert.cn, client_cert.dns, \
                                     client_cert.uri, client_cert.email";

    /// The field for a claim key after `client_cert.`.
    pub fn parse(name: &str) -> Option<CertField> {
        Some(match name {
            "subject" => CertField::Subject,
            "cn" => CertField::Cn,
            "dns" => CertField::Dns,
            "uri" => CertField::Uri,
            "email" => CertField::Email,
            _ => return None,
        })
    }
}

impl CertClaim {
    /// The requirement `client_cert.<name>: value`; DNS names are lowercased here, once.
    pub fn new(field: CertField, value: &str) -> CertClaim {
        let value = match field {
            CertField::Dns => value.to_ascii_lowercase(),
            _ => value.to_owned(),
        };
        CertClaim { field, value }
    }

    /// Whether `cert` meets it.
    pub fn matches(&self, cert: &ClientCert) -> bool {
        let want = self.value.as_str();
        match self.field {
            CertField::Subject => cert.subject.as_deref() == Some(want),
            CertField::Cn => cert.cn.as_deref() == Some(want),
            CertField::Dns => cert.dns.iter().any(|d| d == want),
            CertField::Uri => cert.uri.iter().any(|u| u == want),
            CertField::Email => cert.email.iter().any(|e| e == want),
        }
    }
}

/// RFC 4514: the RDNs last to first, `,` between them and `+` inside a multi-valued one;
/// the attribute types of RFC 4514 section 3 by name, others as dotted OIDs with the value's
/// DER in hex.
fn rfc4514(name: &X509Name<'_>) -> Option<String> {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match short_name(attr.attr_type()) {
                Some(short) => {
                    out.push_str(short);
                    out.push('=');
                    escape_value(attr.as_str().ok()?, &mut out);
                }
                None => {
                    let value = attr.attr_value();
                    let _ = write!(out, "{}=#", attr.attr_type().to_id_string());
                    // Universal string and other primitive types have one-byte tags.
                    let tag = u8::try_from(value.tag().0).ok().filter(|t| *t < 31)?;
                    let data = value.data;
                    let mut der = vec![tag];
                    push_der_length(data.len(), &mut der);
                    der.extend_from_slice(data);
                    for b in der {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    Some(out)
}

fn short_name(oid: &Oid<'_>) -> Option<&'static str> {
    let known = [
        (&OID_X509_COMMON_NAME, "CN"),
        (&OID_X509_LOCALITY_NAME, "L"),
        (&OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (&OID_X509_ORGANIZATION_NAME, "O"),
        (&OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (&OID_X509_COUNTRY_NAME, "C"),
        (&OID_X509_STREET_ADDRESS, "STREET"),
        (&OID_DOMAIN_COMPONENT, "DC"),
        (&OID_USERID, "UID"),
    ];
    known
        .iter()
        .find(|(known, _)| *known == oid)
        .map(|(_, short)| *short)
}

/// RFC 4514 section 2.4: `"+,;<>\` and NUL always, `#` and space first, space last.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

fn push_der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    // At most 8 length bytes for a usize, so the count fits the 7 bits it has.
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(build: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        build(&mut params);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_cn_and_sans_are_read() {
        let der = cert(|p| {
            p.distinguished_name.push(rcgen::DnType::CountryName, "DE");
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "Example, Inc.");
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "billing-service");
            p.subject_alt_names = vec![
                rcgen::SanType::DnsName("Billing.Internal".try_into().unwrap()),
                rcgen::SanType::URI("spiffe://example.org/billing".try_into().unwrap()),
                rcgen::SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()),
            ];
        });
        let c = ClientCert::from_der(&der).unwrap();
        assert_eq!(
            c.subject.as_deref(),
            Some("CN=billing-service,O=Example\\, Inc.,C=DE")
        );
        assert_eq!(c.cn.as_deref(), Some("billing-service"));
        assert_eq!(c.dns, ["billing.internal"]);
        assert_eq!(c.uri, ["spiffe://example.org/billing"]);
        assert_eq!(c.email, ["ops@example.org"]);

        let claim = |f, v| CertClaim::new(f, v).matches(&c);
        assert!(claim(CertField::Cn, "billing-service"));
        assert!(!claim(CertField::Cn, "Billing-service"));
        assert!(claim(CertField::Dns, "BILLING.internal"));
        assert!(!claim(CertField::Dns, "internal"));
        assert!(claim(CertField::Uri, "spiffe://example.org/billing"));
        assert!(claim(CertField::Email, "ops@example.org"));
        assert!(claim(
            CertField::Subject,
            "CN=billing-service,O=Example\\, Inc.,C=DE"
        ));
    }

    #[test]
    fn special_characters_are_escaped_and_garbage_is_unreadable() {
        let der = cert(|p| {
            p.distinguished_name.push(rcgen::DnType::CommonName, "a");
            p.distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, " #x+y ");
        });
        let c = ClientCert::from_der(&der).unwrap();
        assert_eq!(c.subject.as_deref(), Some("OU=\\ #x\\+y\\ ,CN=a"));
        let mut two = String::new();
        escape_value("#a", &mut two);
        assert_eq!(two, "\\#a");
        assert!(ClientCert::from_der(b"\x30\x03\x02\x01\x00").is_none());
    }

    #[test]
    fn unknown_attribute_types_are_hex() {
        let der = cert(|p| {
            p.distinguished_name.push(
                rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]),
                rcgen::DnValue::Utf8String("v".into()),
            );
        });
        let c = ClientCert::from_der(&der).unwrap();
        assert_eq!(c.subject.as_deref(), Some("1.2.3.4=#0c0176"));
        assert_eq!(c.cn, None);
    }

    #[test]
    fn der_lengths() {
        for (len, want) in [
            (0usize, vec![0u8]),
            (127, vec![127]),
            (128, vec![0x81, 128]),
            (255, vec![0x81, 255]),
            (256, vec![0x82, 1, 0]),
        ] {
            let mut out = Vec::new();
            push_der_length(len, &mut out);
            assert_eq!(out, want, "{len}");
        }
    }
}
