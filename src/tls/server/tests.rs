use super::*;

/// Writes a certificate for `names` (valid until `not_after`) and its key into `dir`.
fn pair(dir: &Path, file: &str, names: &[&str], not_after: (i32, u8, u8)) -> CertificateFiles {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).unwrap();
    let files = CertificateFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

fn load(files: &CertificateFiles) -> LoadedCertificate {
    LoadedCertificate::load(files).unwrap()
}

#[test]
fn names_come_from_the_sans_and_sni_picks_exact_then_wildcard_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let first = load(&pair(dir.path(), "a", &["api.example.com"], (2030, 1, 1)));
    let second = load(&pair(
        dir.path(),
        "b",
        &["*.example.com", "Other.test"],
        (2030, 1, 1),
    ));
    let third = load(&pair(dir.path(), "c", &["www.example.com"], (2030, 1, 1)));
    assert_eq!(second.names, ["*.example.com", "other.test"]);
    assert_eq!(first.label, "api.example.com");
    let resolver = CertificateResolver::new(vec![first, second, third]).unwrap();
    assert_eq!(resolver.pick(Some("api.example.com")), 0);
    assert_eq!(resolver.pick(Some("API.Example.com.")), 0);
    assert_eq!(
        resolver.pick(Some("www.example.com")),
        2,
        "exact beats wildcard"
    );
    assert_eq!(resolver.pick(Some("shop.example.com")), 1);
    assert_eq!(resolver.pick(Some("other.test")), 1);
    // A wildcard covers one label only.
    assert_eq!(resolver.pick(Some("a.b.example.com")), 0);
    assert_eq!(resolver.pick(Some("example.com")), 0);
    assert_eq!(resolver.pick(Some("unknown.test")), 0);
    assert_eq!(resolver.pick(None), 0);
    assert!(CertificateResolver::new(Vec::new()).is_none());
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = pair(dir.path(), "a", &["a.test"], (2030, 1, 1));
    let b = pair(dir.path(), "b", &["b.test"], (2030, 1, 1));
    let mixed = CertificateFiles {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let error = LoadedCertificate::load(&mixed).unwrap_err();
    assert!(
        matches!(error, CertificateError::Mismatch { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("a.crt") && message.contains("b.key"),
        "{message}"
    );
}

#[test]
fn files_that_are_not_pem_certificates_or_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = pair(dir.path(), "a", &["a.test"], (2030, 1, 1));
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all\n").unwrap();
    let as_cert = CertificateFiles {
        cert: junk.clone(),
        key: good.key.clone(),
    };
    assert!(matches!(
        LoadedCertificate::load(&as_cert),
        Err(CertificateError::NoCertificate { .. })
    ));
    // A certificate where the key should be.
    let cert_as_key = CertificateFiles {
        cert: good.cert.clone(),
        key: good.cert.clone(),
    };
    assert!(matches!(
        LoadedCertificate::load(&cert_as_key),
        Err(CertificateError::BadKey { .. })
    ));
    let missing = CertificateFiles {
        cert: dir.path().join("missing.crt"),
        key: good.key,
    };
    let error = LoadedCertificate::load(&missing).unwrap_err();
    assert!(error.to_string().contains("missing.crt"), "{error}");
}

#[test]
fn not_after_is_read_from_utc_and_generalized_times() {
    let dir = tempfile::tempdir().unwrap();
    // Before 2050 a certificate says UTCTime, from 2050 on GeneralizedTime (RFC 5280).
    let utc = load(&pair(dir.path(), "a", &["a.test"], (2031, 5, 17)));
    assert_eq!(utc.not_after, 1_936_742_400);
    let generalized = load(&pair(dir.path(), "b", &["b.test"], (2051, 1, 1)));
    assert_eq!(generalized.not_after, 2_556_144_000);
}

#[test]
fn a_chain_without_sans_is_labelled_by_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let files = pair(dir.path(), "plain", &[], (2030, 1, 1));
    let loaded = load(&files);
    assert!(loaded.names.is_empty());
    assert_eq!(loaded.label, "plain.crt");
}
