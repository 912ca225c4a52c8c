//! Tests with real keys: openssl generates them per run, jsonwebtoken (or hand-built segments)
//! signs, and the table below says which [`AuthFailure`] each token must produce.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::test_support::{b64url, openssl};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://issuer.test";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

thread_local! {
    /// Signatures checked on this thread (each test runs on its own).
    static SIGNATURE_CHECKS: Cell<u64> = const { Cell::new(0) };
}

/// Called by `Provider::check` right before it checks a signature.
pub(super) fn count_signature_check() {
    SIGNATURE_CHECKS.with(|n| n.set(n.get() + 1));
}

fn signature_checks() -> u64 {
    SIGNATURE_CHECKS.with(Cell::get)
}

/// Key material generated once per test run.
struct TestKeys {
    rsa_priv: Vec<u8>,
    rsa_pub: Vec<u8>,
    rsa_pkcs1_pub: Vec<u8>,
    rsa_n: String,
    rsa_e: String,
    attacker_priv: Vec<u8>,
    attacker_n: String,
    attacker_e: String,
    ec256_priv: Vec<u8>,
    ec256_pub: Vec<u8>,
    /// The same public key as `ec256_pub`, its point in compressed form (`02/03 || x`).
    ec256_compressed_pub: Vec<u8>,
    ec256_xy: (String, String),
    ec256_other_priv: Vec<u8>,
    ec384_priv: Vec<u8>,
    ec384_pub: Vec<u8>,
    ec384_compressed_pub: Vec<u8>,
    ec384_xy: (String, String),
    ed_priv: Vec<u8>,
    ed_pub: Vec<u8>,
    ed_x: String,
    rsa_cert: Vec<u8>,
    rsa1024_pub: Vec<u8>,
    ec521_pub: Vec<u8>,
    ed448_pub: Vec<u8>,
}

/// Generates `name.key` (PKCS#8 private) and `name.pub` (SPKI public) and returns both PEMs.
fn keypair(dir: &Path, name: &str, genpkey: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let key = format!("{name}.key");
    let public = format!("{name}.pub");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", &key]);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &key, "-pubout", "-out", &public]);
    (
        std::fs::read(dir.join(&key)).unwrap(),
        std::fs::read(dir.join(&public)).unwrap(),
    )
}

/// The colon-separated hex block after `label` in `openssl pkey -text` output.
fn hex_block(text: &str, label: &str) -> Vec<u8> {
    let mut lines = text.lines().skip_while(|l| l.trim() != label).skip(1);
    let mut hex = String::new();
    for line in lines.by_ref() {
        if !line.starts_with(' ') {
            break;
        }
        hex.extend(line.trim().split(':'));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn public_text(dir: &Path, name: &str) -> String {
    openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            &format!("{name}.pub"),
            "-text",
            "-noout",
        ],
    )
}

fn rsa_components(dir: &Path, name: &str) -> (String, String) {
    let text = public_text(dir, name);
    let n = hex_block(&text, "Modulus:");
    let n = n.strip_prefix(&[0u8][..]).unwrap_or(&n);
    let e: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Exponent: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let e_bytes = e.to_be_bytes();
    let e_bytes = &e_bytes[e_bytes.iter().position(|&b| b != 0).unwrap()..];
    (b64url(n), b64url(e_bytes))
}

fn ec_components(dir: &Path, name: &str, size: usize) -> (String, String) {
    let point = hex_block(&public_text(dir, name), "pub:");
    assert_eq!(point.len(), 1 + 2 * size);
    assert_eq!(point[0], 4);
    (b64url(&point[1..=size]), b64url(&point[1 + size..]))
}

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        let (rsa_priv, rsa_pub) = keypair(d, "rsa", &rsa);
        openssl(
            d,
            &[
                "rsa",
                "-in",
                "rsa.key",
                "-RSAPublicKey_out",
                "-out",
                "rsa1.pub",
            ],
        );
        let (rsa_n, rsa_e) = rsa_components(d, "rsa");
        let (attacker_priv, _) = keypair(d, "attacker", &rsa);
        let (attacker_n, attacker_e) = rsa_components(d, "attacker");
        let ec = |curve: &'static str| ["-algorithm", "EC", "-pkeyopt", curve];
        let (ec256_priv, ec256_pub) = keypair(d, "ec256", &ec("ec_paramgen_curve:P-256"));
        let ec256_xy = ec_components(d, "ec256", 32);
        let (ec256_other_priv, _) = keypair(d, "ec256b", &ec("ec_paramgen_curve:P-256"));
        let (ec384_priv, ec384_pub) = keypair(d, "ec384", &ec("ec_paramgen_curve:P-384"));
        let ec384_xy = ec_components(d, "ec384", 48);
        let (ed_priv, ed_pub) = keypair(d, "ed", &["-algorithm", "ED25519"]);
        let compressed = |name: &str| {
            let out = format!("{name}c.pub");
            openssl(
                d,
                &[
                    "ec",
                    "-pubin",
                    "-in",
                    &format!("{name}.pub"),
                    "-pubout",
                    "-conv_form",
                    "compressed",
                    "-out",
                    &out,
                ],
            );
            std::fs::read(d.join(out)).unwrap()
        };
        let ed_x = hex_block(&public_text(d, "ed"), "pub:");
        assert_eq!(ed_x.len(), 32);
        openssl(
            d,
            &[
                "req", "-new", "-x509", "-key", "rsa.key", "-subj", "/CN=test", "-days", "1",
                "-out", "rsa.crt",
            ],
        );
        let (_, rsa1024_pub) = keypair(
            d,
            "rsa1024",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        );
        let (_, ec521_pub) = keypair(d, "ec521", &ec("ec_paramgen_curve:P-521"));
        let (_, ed448_pub) = keypair(d, "ed448", &["-algorithm", "ED448"]);
        TestKeys {
            rsa_pkcs1_pub: std::fs::read(d.join("rsa1.pub")).unwrap(),
            rsa_cert: std::fs::read(d.join("rsa.crt")).unwrap(),
            rsa_priv,
            rsa_pub,
            rsa_n,
            rsa_e,
            attacker_priv,
            attacker_n,
            attacker_e,
            ec256_priv,
            ec256_compressed_pub: compressed("ec256"),
            ec256_pub,
            ec256_xy,
            ec256_other_priv,
            ec384_priv,
            ec384_compressed_pub: compressed("ec384"),
            ec384_pub,
            ec384_xy,
            ed_priv,
            ed_pub,
            ed_x: b64url(&ed_x),
            rsa1024_pub,
            ec521_pub,
            ed448_pub,
        }
    })
}

/// Signing keys by family.
fn hs() -> EncodingKey {
    EncodingKey::from_secret(SECRET)
}
fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&keys().rsa_priv).unwrap()
}
fn attacker() -> EncodingKey {
    EncodingKey::from_rsa_pem(&keys().attacker_priv).unwrap()
}
fn ec256() -> EncodingKey {
    EncodingKey::from_ec_pem(&keys().ec256_priv).unwrap()
}
fn ec384() -> EncodingKey {
    EncodingKey::from_ec_pem(&keys().ec384_priv).unwrap()
}
fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(&keys().ed_priv).unwrap()
}

/// Claims every provider accepts at [`NOW`].
fn good_claims() -> Value {
    json!({"sub": "alice", "iss": ISS, "aud": "api", "exp": NOW + 600, "iat": NOW - 10})
}

/// `good_claims` with `changes` merged in (`null` removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = good_claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// A token through jsonwebtoken's own encoder.
fn encode(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token with a hand-written header and payload, correctly signed.
fn raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

fn good_payload() -> String {
    good_claims().to_string()
}

/// Replaces segment `index` of a token.
fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = segment;
    parts.join(".")
}

/// Flips one bit in the middle of the signature, keeping the encoding canonical.
fn tamper_signature(token: &str) -> String {
    let sig = token.rsplit('.').next().unwrap();
    let mut bytes = b64::decode_url(sig.as_bytes()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    with_segment(token, 2, &b64url(&bytes))
}

/// Replaces a token's signature with `change` applied to its decoded bytes.
fn resign(token: &str, change: impl Fn(&mut Vec<u8>)) -> String {
    let sig = token.rsplit('.').next().unwrap();
    let mut bytes = b64::decode_url(sig.as_bytes()).unwrap();
    change(&mut bytes);
    with_segment(token, 2, &b64url(&bytes))
}

/// The DER inside a PEM file.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    b64::decode_pem_body(&body).unwrap()
}

/// A `PUBLIC KEY` PEM around `der`.
fn public_pem(der: &[u8]) -> Vec<u8> {
    let mut body: String = b64url(der)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !body.len().is_multiple_of(4) {
        body.push('=');
    }
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// `pem` with `change` applied to the key bytes at the end of its DER (the BIT STRING contents,
/// which end a SubjectPublicKeyInfo).
fn tweak_public_key(pem: &[u8], change: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut der = pem_der(pem);
    change(&mut der);
    public_pem(&der)
}

fn settings(name: &str, algorithms: &[Algorithm], keys: KeySource) -> ProviderSettings {
    ProviderSettings {
        name: name.to_string(),
        algorithms: algorithms.to_vec(),
        keys,
        issuer: Some(ISS.to_string()),
        audience: vec!["api".to_string(), "admin-api".to_string()],
        leeway: Duration::from_secs(30),
    }
}

fn jwks_json() -> Vec<u8> {
    let k = keys();
    json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": k.rsa_n, "e": k.rsa_e},
        {"kty": "RSA", "kid": "rsa-any", "n": k.rsa_n, "e": k.rsa_e},
        {"kty": "EC", "kid": "ec-256", "alg": "ES256", "crv": "P-256",
         "x": k.ec256_xy.0, "y": k.ec256_xy.1},
        {"kty": "EC", "kid": "ec-384", "crv": "P-384", "x": k.ec384_xy.0, "y": k.ec384_xy.1},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": k.ed_x, "key_ops": ["verify"]},
        // Skipped: symmetric, encryption-only, unknown alg, unknown kty.
        {"kty": "oct", "kid": "hmac", "k": b64url(SECRET)},
        {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": k.rsa_n, "e": k.rsa_e},
        {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": k.rsa_n, "e": k.rsa_e},
        {"kty": "XYZ", "kid": "strange"}
    ]})
    .to_string()
    .into_bytes()
}

const JWKS_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

#[derive(Debug, Clone, Copy)]
enum P {
    /// HS256/384/512, issuer and audience set.
    Hs,
    /// HS256 only.
    Hs256,
    /// RSA PEM, every RS/PS algorithm.
    Rsa,
    /// RSA PEM (PKCS#1 "RSA PUBLIC KEY"), RS256 only.
    Rs256,
    Es256,
    Es384,
    /// ES256 with the P-256 key's PEM in compressed point form.
    Es256Compressed,
    /// ES384 with the P-384 key's PEM in compressed point form.
    Es384Compressed,
    Ed,
    /// JWKS with several keys.
    Jwks,
    /// JWKS with a single key without kid.
    JwksOne,
    /// HS256 without issuer or audience.
    NoAud,
}

struct Providers {
    hs: Provider,
    hs256: Provider,
    rsa: Provider,
    rs256: Provider,
    es256: Provider,
    es384: Provider,
    es256_compressed: Provider,
    es384_compressed: Provider,
    ed: Provider,
    jwks: Provider,
    jwks_one: Provider,
    no_aud: Provider,
}

impl Providers {
    fn new() -> Providers {
        let k = keys();
        let pem = |pem: &Vec<u8>| KeySource::PublicKeyPem(pem.clone());
        let build = |s: ProviderSettings| Provider::new(s).unwrap();
        let hs_algs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        let one = json!({"keys": [{"kty": "EC", "crv": "P-256",
                                   "x": k.ec256_xy.0, "y": k.ec256_xy.1}]});
        Providers {
            hs: build(settings("hs", &hs_algs, KeySource::Secret(SECRET.to_vec()))),
            hs256: build(settings(
                "hs256",
                &[Algorithm::HS256],
                KeySource::Secret(SECRET.to_vec()),
            )),
            rsa: build(settings("rsa", RSA_ALGS, pem(&k.rsa_pub))),
            rs256: build(settings(
                "rs256",
                &[Algorithm::RS256],
                pem(&k.rsa_pkcs1_pub),
            )),
            es256: build(settings("es256", &[Algorithm::ES256], pem(&k.ec256_pub))),
            es384: build(settings("es384", &[Algorithm::ES384], pem(&k.ec384_pub))),
            es256_compressed: build(settings(
                "es256c",
                &[Algorithm::ES256],
                pem(&k.ec256_compressed_pub),
            )),
            es384_compressed: build(settings(
                "es384c",
                &[Algorithm::ES384],
                pem(&k.ec384_compressed_pub),
            )),
            ed: build(settings("ed", &[Algorithm::EdDSA], pem(&k.ed_pub))),
            jwks: build(settings("jwks", JWKS_ALGS, KeySource::Jwks(jwks_json()))),
            jwks_one: build(settings(
                "jwks-one",
                &[Algorithm::ES256],
                KeySource::Jwks(one.to_string().into_bytes()),
            )),
            no_aud: build(ProviderSettings {
                issuer: None,
                audience: Vec::new(),
                ..settings(
                    "no-aud",
                    &[Algorithm::HS256],
                    KeySource::Secret(SECRET.to_vec()),
                )
            }),
        }
    }

    fn get(&self, p: P) -> &Provider {
        match p {
            P::Hs => &self.hs,
            P::Hs256 => &self.hs256,
            P::Rsa => &self.rsa,
            P::Rs256 => &self.rs256,
            P::Es256 => &self.es256,
            P::Es384 => &self.es384,
            P::Es256Compressed => &self.es256_compressed,
            P::Es384Compressed => &self.es384_compressed,
            P::Ed => &self.ed,
            P::Jwks => &self.jwks,
            P::JwksOne => &self.jwks_one,
            P::NoAud => &self.no_aud,
        }
    }
}

struct Case {
    name: &'static str,
    provider: P,
    token: String,
    want: Result<(), AuthFailure>,
}

fn case(name: &'static str, provider: P, token: String, want: Result<(), AuthFailure>) -> Case {
    Case {
        name,
        provider,
        token,
        want,
    }
}

fn cases() -> Vec<Case> {
    use Algorithm::*;
    use AuthFailure::*;
    let k = keys();
    let good = good_claims();
    let ok = Ok(());
    let hs256 = |claims: Value| encode(HS256, None, &claims, &hs());
    let mut cases = vec![
        // Every algorithm, valid.
        case("HS256 valid", P::Hs, encode(HS256, None, &good, &hs()), ok),
        case("HS384 valid", P::Hs, encode(HS384, None, &good, &hs()), ok),
        case("HS512 valid", P::Hs, encode(HS512, None, &good, &hs()), ok),
        case("RS256 valid", P::Rsa, encode(RS256, None, &good, &rsa()), ok),
        case("RS384 valid", P::Rsa, encode(RS384, None, &good, &rsa()), ok),
        case("RS512 valid", P::Rsa, encode(RS512, None, &good, &rsa()), ok),
        case("PS256 valid", P::Rsa, encode(PS256, None, &good, &rsa()), ok),
        case("PS384 valid", P::Rsa, encode(PS384, None, &good, &rsa()), ok),
        case("PS512 valid", P::Rsa, encode(PS512, None, &good, &rsa()), ok),
        case("RS256 PKCS#1 PEM valid", P::Rs256, encode(RS256, None, &good, &rsa()), ok),
        case("ES256 valid", P::Es256, encode(ES256, None, &good, &ec256()), ok),
        case("ES384 valid", P::Es384, encode(ES384, None, &good, &ec384()), ok),
        case("EdDSA valid", P::Ed, encode(EdDSA, None, &good, &ed()), ok),
        case("PEM provider ignores kid", P::Rsa, encode(RS256, Some("whatever"), &good, &rsa()), ok),
        // Compressed EC points in a PEM: decompressed at load.
        case("ES256 compressed-point PEM valid", P::Es256Compressed, encode(ES256, None, &good, &ec256()), ok),
        case("ES384 compressed-point PEM valid", P::Es384Compressed, encode(ES384, None, &good, &ec384()), ok),
        case("ES256 compressed-point PEM tampered", P::Es256Compressed, tamper_signature(&encode(ES256, None, &good, &ec256())), Err(BadSignature)),
        case("ES256 compressed-point PEM, other key", P::Es256Compressed, encode(ES256, None, &good, &EncodingKey::from_ec_pem(&k.ec256_other_priv).unwrap()), Err(BadSignature)),
        // JWKS key selection.
        case("jwks RS256 rsa-1", P::Jwks, encode(RS256, Some("rsa-1"), &good, &rsa()), ok),
        case("jwks PS256 rsa-any", P::Jwks, encode(PS256, Some("rsa-any"), &good, &rsa()), ok),
        case("jwks ES256 ec-256", P::Jwks, encode(ES256, Some("ec-256"), &good, &ec256()), ok),
        case("jwks ES384 ec-384", P::Jwks, encode(ES384, Some("ec-384"), &good, &ec384()), ok),
        case("jwks EdDSA ed-1", P::Jwks, encode(EdDSA, Some("ed-1"), &good, &ed()), ok),
        case("jwks single key, no kid", P::JwksOne, encode(ES256, None, &good, &ec256()), ok),
        case("jwks single key, other kid", P::JwksOne, encode(ES256, Some("x"), &good, &ec256()), Err(UnknownKid)),
        case("jwks PS256 vs key alg RS256", P::Jwks, encode(PS256, Some("rsa-1"), &good, &rsa()), Err(AlgNotAllowed)),
        case("jwks ES256 vs P-384 key", P::Jwks, encode(ES256, Some("ec-384"), &good, &ec256()), Err(AlgNotAllowed)),
        case("jwks RS256 vs EC key", P::Jwks, encode(RS256, Some("ec-256"), &good, &rsa()), Err(AlgNotAllowed)),
        case("jwks unknown kid", P::Jwks, encode(RS256, Some("nope"), &good, &rsa()), Err(UnknownKid)),
        case("jwks kid with path characters", P::Jwks, encode(RS256, Some("../../../etc/passwd"), &good, &rsa()), Err(UnknownKid)),
        case("jwks kid of skipped oct key", P::Jwks, encode(RS256, Some("hmac"), &good, &rsa()), Err(UnknownKid)),
        case("jwks kid of skipped enc key", P::Jwks, encode(RS256, Some("enc-1"), &good, &rsa()), Err(UnknownKid)),
        case("jwks no kid, several keys", P::Jwks, encode(RS256, None, &good, &rsa()), Err(UnknownKid)),
        case("jwks kid not a string", P::Jwks, raw(r#"{"alg":"RS256","kid":7}"#, &good_payload(), RS256, &rsa()), Err(Malformed)),
        case("jwks HS256 with oct kid", P::Jwks, encode(HS256, Some("hmac"), &good, &hs()), Err(AlgNotAllowed)),
        // Tampering.
        case("HS256 tampered signature", P::Hs, tamper_signature(&encode(HS256, None, &good, &hs())), Err(BadSignature)),
        case("RS256 tampered signature", P::Rsa, tamper_signature(&encode(RS256, None, &good, &rsa())), Err(BadSignature)),
        case("ES256 tampered signature", P::Es256, tamper_signature(&encode(ES256, None, &good, &ec256())), Err(BadSignature)),
        case("EdDSA tampered signature", P::Ed, tamper_signature(&encode(EdDSA, None, &good, &ed())), Err(BadSignature)),
        case(
            "tampered payload",
            P::Hs,
            with_segment(
                &encode(HS256, None, &good, &hs()),
                1,
                &b64url(claims_with(json!({"sub": "root"})).to_string().as_bytes()),
            ),
            Err(BadSignature),
        ),
        case("signed by another secret", P::Hs, encode(HS256, None, &good, &EncodingKey::from_secret(b"another-secret-another-secret-!!")), Err(BadSignature)),
        case("signed by another RSA key", P::Rsa, encode(RS256, None, &good, &attacker()), Err(BadSignature)),
        // Signatures of the wrong length (canonical base64url, so not Malformed).
        case("HS256 truncated to 16 bytes", P::Hs, resign(&encode(HS256, None, &good, &hs()), |s| s.truncate(16)), Err(BadSignature)),
        case("HS256 with an extra byte", P::Hs, resign(&encode(HS256, None, &good, &hs()), |s| s.push(0)), Err(BadSignature)),
        case("HS512 signature under HS256", P::Hs, with_segment(&encode(HS256, None, &good, &hs()), 2, encode(HS512, None, &good, &hs()).rsplit('.').next().unwrap()), Err(BadSignature)),
        case("RS256 one byte short", P::Rsa, resign(&encode(RS256, None, &good, &rsa()), |s| { s.pop(); }), Err(BadSignature)),
        case("RS256 with a leading zero byte", P::Rsa, resign(&encode(RS256, None, &good, &rsa()), |s| s.insert(0, 0)), Err(BadSignature)),
        case("PS256 with an extra byte", P::Rsa, resign(&encode(PS256, None, &good, &rsa()), |s| s.push(0)), Err(BadSignature)),
        case("ES256 one byte short", P::Es256, resign(&encode(ES256, None, &good, &ec256()), |s| { s.pop(); }), Err(BadSignature)),
        case("ES256 with an extra byte", P::Es256, resign(&encode(ES256, None, &good, &ec256()), |s| s.push(0)), Err(BadSignature)),
        case("ES256 signature under ES384", P::Jwks, with_segment(&encode(ES384, Some("ec-384"), &good, &ec384()), 2, encode(ES256, None, &good, &ec256()).rsplit('.').next().unwrap()), Err(BadSignature)),
        case("EdDSA one byte short", P::Ed, resign(&encode(EdDSA, None, &good, &ed()), |s| { s.pop(); }), Err(BadSignature)),
        case("one-byte signature", P::Rsa, with_segment(&encode(RS256, None, &good, &rsa()), 2, "AA"), Err(BadSignature)),
        case("signature longer than any key's", P::Rsa, resign(&encode(RS256, None, &good, &rsa()), |s| s.resize(513, 0)), Err(BadSignature)),
        case("4 KiB signature", P::Hs, resign(&encode(HS256, None, &good, &hs()), |s| s.resize(4096, 7)), Err(BadSignature)),
        case("signed by another P-256 key", P::Jwks, encode(ES256, Some("ec-256"), &good, &EncodingKey::from_ec_pem(&k.ec256_other_priv).unwrap()), Err(BadSignature)),
        // alg none and unknown algorithms.
        case("alg none, empty signature", P::Hs, format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(good_payload().as_bytes())), Err(AlgNotAllowed)),
        case("alg None", P::Hs, format!("{}.{}.", b64url(br#"{"alg":"None"}"#), b64url(good_payload().as_bytes())), Err(AlgNotAllowed)),
        case("alg NONE with a signature", P::Rsa, format!("{}.{}.c2ln", b64url(br#"{"alg":"NONE"}"#), b64url(good_payload().as_bytes())), Err(AlgNotAllowed)),
        case("alg none, two segments", P::Hs, format!("{}.{}", b64url(br#"{"alg":"none"}"#), b64url(good_payload().as_bytes())), Err(Malformed)),
        case("alg HS1024", P::Hs, raw(r#"{"alg":"HS1024"}"#, &good_payload(), HS256, &hs()), Err(AlgNotAllowed)),
        case("alg lowercase hs256", P::Hs, raw(r#"{"alg":"hs256"}"#, &good_payload(), HS256, &hs()), Err(AlgNotAllowed)),
        case("alg not a string", P::Hs, raw(r#"{"alg":256}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("alg missing", P::Hs, raw(r#"{"typ":"JWT"}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        // Algorithm confusion: HMAC keyed with the RSA public key.
        case("HS256 keyed with RSA public PEM vs RSA provider", P::Rsa, encode(HS256, None, &good, &EncodingKey::from_secret(&k.rsa_pub)), Err(AlgNotAllowed)),
        case("HS256 keyed with RSA public PEM vs RS256 provider", P::Rs256, encode(HS256, None, &good, &EncodingKey::from_secret(&k.rsa_pkcs1_pub)), Err(AlgNotAllowed)),
        case("HS256 keyed with RSA public PEM vs JWKS", P::Jwks, encode(HS256, Some("rsa-1"), &good, &EncodingKey::from_secret(&k.rsa_pub)), Err(AlgNotAllowed)),
        case("HS256 keyed with EC public PEM vs ES256", P::Es256, encode(HS256, None, &good, &EncodingKey::from_secret(&k.ec256_pub)), Err(AlgNotAllowed)),
        case("RS256 against HS provider", P::Hs, encode(RS256, None, &good, &rsa()), Err(AlgNotAllowed)),
        // Alg not in the list.
        case("HS512 vs HS256-only", P::Hs256, encode(HS512, None, &good, &hs()), Err(AlgNotAllowed)),
        case("PS256 vs RS256-only", P::Rs256, encode(PS256, None, &good, &rsa()), Err(AlgNotAllowed)),
        case("ES384 vs ES256 provider", P::Es256, encode(ES384, None, &good, &ec384()), Err(AlgNotAllowed)),
        case("RS384 not in JWKS list", P::Jwks, encode(RS384, Some("rsa-any"), &good, &rsa()), Err(AlgNotAllowed)),
        // Time claims (leeway 30 s).
        case("expired beyond leeway", P::Hs, hs256(claims_with(json!({"exp": NOW - 31}))), Err(Expired)),
        case("expired long ago", P::Hs, hs256(claims_with(json!({"exp": 1}))), Err(Expired)),
        case("exp at now - leeway", P::Hs, hs256(claims_with(json!({"exp": NOW - 30}))), Err(Expired)),
        case("expired within leeway", P::Hs, hs256(claims_with(json!({"exp": NOW - 29}))), ok),
        case("exp fractional", P::Hs, hs256(claims_with(json!({"exp": NOW as f64 + 0.5}))), ok),
        case("missing exp", P::Hs, hs256(claims_with(json!({"exp": null}))), Err(Malformed)),
        case("exp a string", P::Hs, hs256(claims_with(json!({"exp": (NOW + 600).to_string()}))), Err(Malformed)),
        case("nbf beyond leeway", P::Hs, hs256(claims_with(json!({"nbf": NOW + 31}))), Err(NotYetValid)),
        case("nbf within leeway", P::Hs, hs256(claims_with(json!({"nbf": NOW + 29}))), ok),
        case("nbf past", P::Hs, hs256(claims_with(json!({"nbf": NOW - 100}))), ok),
        case("iat beyond leeway", P::Hs, hs256(claims_with(json!({"iat": NOW + 31}))), Err(NotYetValid)),
        case("iat within leeway", P::Hs, hs256(claims_with(json!({"iat": NOW + 29}))), ok),
        case("iat not a number", P::Hs, hs256(claims_with(json!({"iat": "yesterday"}))), Err(Malformed)),
        // Issuer and audience.
        case("wrong iss", P::Hs, hs256(claims_with(json!({"iss": "https://evil.test"}))), Err(BadIssuer)),
        case("missing iss", P::Hs, hs256(claims_with(json!({"iss": null}))), Err(BadIssuer)),
        case("iss with trailing slash", P::Hs, hs256(claims_with(json!({"iss": format!("{ISS}/")}))), Err(BadIssuer)),
        case("wrong aud string", P::Hs, hs256(claims_with(json!({"aud": "other"}))), Err(BadAudience)),
        case("wrong aud array", P::Hs, hs256(claims_with(json!({"aud": ["other", "more"]}))), Err(BadAudience)),
        case("empty aud array", P::Hs, hs256(claims_with(json!({"aud": []}))), Err(BadAudience)),
        case("aud array containing ours", P::Hs, hs256(claims_with(json!({"aud": ["other", "admin-api"]}))), ok),
        case("aud a number", P::Hs, hs256(claims_with(json!({"aud": 5}))), Err(BadAudience)),
        case("missing aud", P::Hs, hs256(claims_with(json!({"aud": null}))), Err(BadAudience)),
        case("aud accepted when none configured", P::NoAud, hs256(claims_with(json!({"aud": "anything", "iss": "anyone"}))), ok),
        case("sub not a string", P::Hs, hs256(claims_with(json!({"sub": 42}))), Err(Malformed)),
        // Header fields that must never be followed.
        case(
            "jku/x5u/x5c/jwk ignored, legit signature",
            P::Rsa,
            raw(
                &json!({"alg": "RS256", "jku": "https://evil.test/jwks.json",
                        "x5u": "https://evil.test/cert.pem", "x5c": ["MIIBogus"],
                        "jwk": {"kty": "RSA", "n": k.attacker_n, "e": k.attacker_e}})
                .to_string(),
                &good_payload(),
                RS256,
                &rsa(),
            ),
            ok,
        ),
        case(
            "garbage jwk/x5c values ignored",
            P::Rsa,
            raw(r#"{"alg":"RS256","jwk":"not a key","x5c":7,"jku":false}"#, &good_payload(), RS256, &rsa()),
            ok,
        ),
        case(
            "attacker key embedded as jwk",
            P::Rsa,
            raw(
                &json!({"alg": "RS256", "jwk": {"kty": "RSA", "n": k.attacker_n, "e": k.attacker_e}})
                    .to_string(),
                &good_payload(),
                RS256,
                &attacker(),
            ),
            Err(BadSignature),
        ),
        case(
            "attacker jwk with a known kid",
            P::Jwks,
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1",
                        "jwk": {"kty": "RSA", "kid": "rsa-1", "n": k.attacker_n, "e": k.attacker_e}})
                    .to_string(),
                &good_payload(),
                RS256,
                &attacker(),
            ),
            Err(BadSignature),
        ),
        case(
            "attacker jku with its own kid",
            P::Jwks,
            raw(
                &json!({"alg": "RS256", "kid": "attacker", "jku": "https://evil.test/jwks.json"})
                    .to_string(),
                &good_payload(),
                RS256,
                &attacker(),
            ),
            Err(UnknownKid),
        ),
        case(
            "attacker x5u/x5c",
            P::Rsa,
            raw(r#"{"alg":"RS256","x5u":"https://evil.test/c.pem","x5c":["MIIB"]}"#, &good_payload(), RS256, &attacker()),
            Err(BadSignature),
        ),
        // crit.
        case("crit [exp]", P::Hs, raw(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("crit empty array", P::Hs, raw(r#"{"alg":"HS256","crit":[]}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("crit null", P::Hs, raw(r#"{"alg":"HS256","crit":null}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("crit b64 false", P::Rsa, raw(r#"{"alg":"RS256","b64":false,"crit":["b64"]}"#, &good_payload(), RS256, &rsa()), Err(Malformed)),
        // Structure.
        case("duplicate alg in header", P::Hs, raw(r#"{"alg":"HS256","alg":"none"}"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("duplicate exp in payload", P::Hs, raw(r#"{"alg":"HS256"}"#, &format!(r#"{{"sub":"a","iss":"{ISS}","aud":"api","exp":1,"exp":{}}}"#, NOW + 600), HS256, &hs()), Err(Malformed)),
        case("header not JSON", P::Hs, raw("not json", &good_payload(), HS256, &hs()), Err(Malformed)),
        case("header a JSON array", P::Hs, raw(r#"["HS256"]"#, &good_payload(), HS256, &hs()), Err(Malformed)),
        case("payload a JSON array", P::Hs, raw(r#"{"alg":"HS256"}"#, "[1,2]", HS256, &hs()), Err(Malformed)),
        case("payload not JSON", P::Hs, raw(r#"{"alg":"HS256"}"#, "exp=1", HS256, &hs()), Err(Malformed)),
        case("payload trailing data", P::Hs, raw(r#"{"alg":"HS256"}"#, &format!("{} x", good_payload()), HS256, &hs()), Err(Malformed)),
        case("oversized token", P::Hs, hs256(claims_with(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}))), Err(Malformed)),
        case("bad base64 in header", P::Hs, with_segment(&encode(HS256, None, &good, &hs()), 0, "eyJhbGciOiJIUzI1NiJ9!"), Err(Malformed)),
        case("padded header", P::Hs, encode(HS256, None, &good, &hs()).replacen('.', "=.", 1), Err(Malformed)),
        case("standard-alphabet signature", P::Hs, { let t = encode(HS256, None, &good, &hs()); let sig = t.rsplit('.').next().unwrap(); with_segment(&t, 2, &format!("{}+{}", &sig[..10], &sig[11..])) }, Err(Malformed)),
        case("bad base64 in payload", P::Hs, with_segment(&encode(HS256, None, &good, &hs()), 1, "e30*"), Err(Malformed)),
        case("empty signature", P::Hs, with_segment(&encode(HS256, None, &good, &hs()), 2, ""), Err(Malformed)),
        case("four segments", P::Hs, format!("{}.e30", encode(HS256, None, &good, &hs())), Err(Malformed)),
        case("five segments (JWE shape)", P::Hs, format!("{}.e30.e30", encode(HS256, None, &good, &hs())), Err(Malformed)),
        case("two segments", P::Hs, encode(HS256, None, &good, &hs()).rsplit_once('.').unwrap().0.to_string(), Err(Malformed)),
        case("empty token", P::Hs, String::new(), Err(Malformed)),
        case("only dots", P::Hs, "..".to_string(), Err(Malformed)),
        case("whitespace inside", P::Hs, encode(HS256, None, &good, &hs()).replacen('.', " .", 1), Err(Malformed)),
    ];
    // A non-canonical spelling of a valid signature (trailing bits set) must not verify.
    let token = encode(HS256, None, &good, &hs());
    let sig = token.rsplit('.').next().unwrap();
    // 32-byte HMAC -> 43 symbols, the last carrying 2 unused bits.
    let last = sig.as_bytes()[sig.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.iter().position(|&c| c == last).unwrap();
    let respelled = format!("{}{}", &sig[..sig.len() - 1], alphabet[value | 1] as char);
    cases.push(case(
        "non-canonical signature encoding",
        P::Hs,
        with_segment(&token, 2, &respelled),
        Err(AuthFailure::Malformed),
    ));
    cases
}

#[test]
fn verification_table() {
    let providers = Providers::new();
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            names.insert(case.name),
            "duplicate case name {:?}",
            case.name
        );
        let got = providers
            .get(case.provider)
            .verify(&case.token, now())
            .map(|_| ());
        if got != case.want {
            failures.push(format!(
                "{} ({:?}): want {:?}, got {:?}",
                case.name, case.provider, case.want, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn verified_claims_are_returned() {
    let providers = Providers::new();
    let claims = claims_with(json!({"realm_access": {"roles": ["admin"]},
                                    "https://example.com/roles": ["x"]}));
    let token = encode(Algorithm::ES256, Some("ec-256"), &claims, &ec256());
    let verified = providers.jwks.verify(&token, now()).unwrap();
    assert_eq!(verified.sub(), Some("alice"));
    assert_eq!(
        verified.get_path("realm_access.roles"),
        Some(&json!(["admin"]))
    );
    assert_eq!(
        verified.get_path("https://example.com/roles"),
        Some(&json!(["x"]))
    );
    assert_eq!(verified.get_path("realm_access.missing"), None);
    assert_eq!(verified.get_path("sub.deeper"), None);
    assert_eq!(verified.get_path("exp"), Some(&json!(NOW + 600)));
}

fn headers(values: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        // from_bytes: it accepts obs-text (non-ASCII), which from_str would refuse.
        map.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    map
}

#[test]
fn bearer_token_table() {
    use AuthFailure::{Malformed, Missing};
    let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
    type Row<'a> = (&'a str, Vec<&'a str>, Result<Option<&'a str>, AuthFailure>);
    let table: Vec<Row> = vec![
        ("no header", vec![], Ok(None)),
        ("plain", vec!["Bearer a.b.c"], Ok(Some("a.b.c"))),
        ("lowercase scheme", vec!["bearer a.b.c"], Ok(Some("a.b.c"))),
        ("uppercase scheme", vec!["BEARER a.b.c"], Ok(Some("a.b.c"))),
        ("tab separator", vec!["Bearer\ta.b.c"], Ok(Some("a.b.c"))),
        ("token68 padding", vec!["Bearer abc=="], Ok(Some("abc=="))),
        (
            "two headers",
            vec!["Bearer a.b.c", "Bearer d.e.f"],
            Err(Malformed),
        ),
        (
            "two headers, one empty",
            vec!["Bearer a.b.c", ""],
            Err(Malformed),
        ),
        ("basic scheme", vec!["Basic dXNlcjpwYXNz"], Err(Missing)),
        ("digest scheme", vec!["Digest username=x"], Err(Missing)),
        ("scheme alone", vec!["Basic"], Err(Missing)),
        ("not a scheme", vec!["B@sic x"], Err(Malformed)),
        ("empty value", vec![""], Err(Malformed)),
        ("scheme only", vec!["Bearer"], Err(Malformed)),
        ("scheme and space", vec!["Bearer "], Err(Malformed)),
        ("no separator", vec!["Bearera.b.c"], Err(Malformed)),
        ("two spaces", vec!["Bearer  a.b.c"], Err(Malformed)),
        ("space inside token", vec!["Bearer a.b c"], Err(Malformed)),
        ("trailing space", vec!["Bearer a.b.c "], Err(Malformed)),
        ("comma list", vec!["Bearer a.b.c, Basic x"], Err(Malformed)),
        ("non-ASCII", vec!["Bearer a.b.\u{e9}"], Err(Malformed)),
        ("only padding", vec!["Bearer =="], Err(Malformed)),
        ("oversized", vec![long.as_str()], Err(Malformed)),
        ("exactly 8 KiB", vec![max.as_str()], Ok(Some(&max[7..]))),
    ];
    for (name, values, want) in table {
        let map = headers(&values);
        assert_eq!(bearer_token(&map), want, "{name}");
    }
}

#[test]
fn token68_table_holds_exactly_the_token68_characters() {
    for c in 0..=255u8 {
        let want =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        assert_eq!(TOKEN68[usize::from(c)], want, "byte {c:#04x}");
        if c.is_ascii_graphic() && c != b'=' {
            let value = format!("Bearer a{}b", c as char);
            let map = headers(&[&value]);
            let got = bearer_token(&map);
            assert_eq!(got.is_ok(), want, "{value:?}: {got:?}");
        }
    }
}

/// `token` is refused as naming an unknown kid, and the provider's refresher is woken for it.
async fn assert_unknown_kid_wakes_refresher(provider: &Provider, token: &str, what: &str) {
    assert_eq!(
        provider.verify(token, now()).unwrap_err(),
        AuthFailure::UnknownKid,
        "{what}"
    );
    tokio::time::timeout(
        Duration::from_secs(1),
        provider.jwks().unwrap().unknown_kid().notified(),
    )
    .await
    .expect(what);
}

#[tokio::test]
async fn jwks_rotation_and_unknown_kid_notification() {
    let k = keys();
    let provider = Provider::new(settings(
        "rotating",
        JWKS_ALGS,
        KeySource::Jwks(
            json!({"keys": [{"kty": "RSA", "kid": "old", "n": k.rsa_n, "e": k.rsa_e}]})
                .to_string()
                .into_bytes(),
        ),
    ))
    .unwrap();
    assert_eq!(provider.key_count(), 1);
    let good = good_claims();
    let old = encode(Algorithm::RS256, Some("old"), &good, &rsa());
    let new = encode(Algorithm::ES256, Some("new"), &good, &ec256());
    assert!(provider.verify(&old, now()).is_ok());

    // Unknown kid: rejected, and the refresher is woken.
    assert_unknown_kid_wakes_refresher(&provider, &new, "unknown kid notified").await;

    let rotated = json!({"keys": [
        {"kty": "EC", "kid": "new", "crv": "P-256", "x": k.ec256_xy.0, "y": k.ec256_xy.1},
        {"kty": "oct", "kid": "ignored", "k": "c2VjcmV0"}
    ]});
    assert_eq!(provider.replace_jwks(rotated.to_string().as_bytes()), Ok(1));
    assert_eq!(provider.key_count(), 1);
    assert!(provider.verify(&new, now()).is_ok());
    assert_unknown_kid_wakes_refresher(&provider, &old, "old kid notified after rotation").await;

    // Bad documents leave the current keys in place.
    assert!(provider.replace_jwks(b"not json").is_err());
    assert!(provider.replace_jwks(br#"{"keys": []}"#).is_err());
    assert!(provider
        .replace_jwks(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
        .is_err());
    assert!(provider.verify(&new, now()).is_ok());
    assert_eq!(provider.key_count(), 1);

    // A known kid does not notify.
    assert!(tokio::time::timeout(
        Duration::from_millis(50),
        provider.jwks().unwrap().unknown_kid().notified()
    )
    .await
    .is_err());
}

#[tokio::test]
async fn remote_jwks_starts_empty() {
    let k = keys();
    let shared = std::sync::Arc::new(JwksKeys::empty(JWKS_ALGS));
    let provider = Provider::new(settings(
        "remote",
        JWKS_ALGS,
        KeySource::JwksRemote(shared.clone()),
    ))
    .unwrap();
    assert_eq!(provider.key_count(), 0);
    let token = encode(Algorithm::EdDSA, Some("ed-1"), &good_claims(), &ed());
    assert_unknown_kid_wakes_refresher(&provider, &token, "notified while empty").await;
    let no_kid = encode(Algorithm::EdDSA, None, &good_claims(), &ed());
    assert_eq!(
        provider.verify(&no_kid, now()).unwrap_err(),
        AuthFailure::UnknownKid
    );

    let set = json!({"keys": [{"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": k.ed_x}]});
    assert_eq!(provider.replace_jwks(set.to_string().as_bytes()), Ok(1));
    assert!(provider.verify(&token, now()).is_ok());
    assert!(
        provider.verify(&no_kid, now()).is_ok(),
        "single key, no kid"
    );

    // A provider rebuilt from the same shared set (a config reload) has the keys at once.
    let rebuilt = Provider::new(settings(
        "remote",
        JWKS_ALGS,
        KeySource::JwksRemote(shared.clone()),
    ))
    .unwrap();
    assert!(rebuilt.verify(&token, now()).is_ok());
    assert_eq!(shared.len(), 1);
}

#[test]
fn mint_round_trip() {
    let provider = Provider::new(settings(
        "mint",
        &[Algorithm::HS384, Algorithm::HS256],
        KeySource::Secret(SECRET.to_vec()),
    ))
    .unwrap();
    assert!(provider.can_mint());
    let claims = claims_with(json!({"roles": ["admin"]}));
    let token = provider.mint(&claims).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS384, "first listed HS algorithm");
    let verified = provider.verify(&token, now()).unwrap();
    assert_eq!(Value::Object(verified.0.clone()), claims);

    assert!(provider.mint(&json!({"sub": "no-exp"})).is_err());
    assert!(provider.mint(&json!("not an object")).is_err());

    let providers = Providers::new();
    assert!(!providers.rsa.can_mint());
    assert!(providers.rsa.mint(&claims).is_err());
    assert!(!providers.jwks.can_mint());
}

/// A 32-byte Ed25519 public key encoding y (little-endian), sign bit clear.
fn ed_y(y: u8) -> [u8; 32] {
    let mut bytes = [0; 32];
    bytes[0] = y;
    bytes
}

/// A base64url RSA modulus with its lowest bit cleared.
fn even_modulus(n: &str) -> String {
    let mut bytes = b64::decode_url(n.as_bytes()).unwrap();
    *bytes.last_mut().unwrap() &= 0xfe;
    b64url(&bytes)
}

#[test]
fn compressed_point_pems_are_compressed() {
    // So the compressed-point cases of the table really test decompression.
    let k = keys();
    for (pem, coordinate) in [(&k.ec256_compressed_pub, 32), (&k.ec384_compressed_pub, 48)] {
        let der = pem_der(pem);
        let point = &der[der.len() - 1 - coordinate..];
        assert!(matches!(point[0], 2 | 3), "compressed point prefix");
    }
}

#[test]
fn provider_new_rejects_unsafe_or_useless_configs() {
    use Algorithm::*;
    let k = keys();
    let pem = |pem: &Vec<u8>| KeySource::PublicKeyPem(pem.clone());
    let secret = || KeySource::Secret(SECRET.to_vec());
    let remote =
        |algs: &[Algorithm]| KeySource::JwksRemote(std::sync::Arc::new(JwksKeys::empty(algs)));
    let table: Vec<(&str, ProviderSettings, &str)> = vec![
        ("HS with RSA PEM", settings("p", &[HS256], pem(&k.rsa_pub)), "algorithm confusion"),
        ("HS and RS mixed", settings("p", &[HS256, RS256], pem(&k.rsa_pub)), "mix HMAC"),
        ("HS and RS mixed, secret", settings("p", &[RS256, HS256], secret()), "mix HMAC"),
        ("HS with JWKS", settings("p", &[HS256], KeySource::Jwks(jwks_json())), "algorithm confusion"),
        ("HS with remote JWKS", settings("p", &[HS512], remote(&[HS512])), "algorithm confusion"),
        ("remote JWKS made for other algorithms", settings("p", &[RS256], remote(&[ES256])), "other algorithms"),
        ("RS with secret", settings("p", &[RS256], secret()), "only verifies HS"),
        ("short secret", settings("p", &[HS256], KeySource::Secret(b"secret".to_vec())), "at least 32 bytes"),
        ("no algorithms", settings("p", &[], secret()), "algorithms is empty"),
        ("ES384 with P-256 key", settings("p", &[ES384], pem(&k.ec256_pub)), "cannot verify ES384"),
        ("ES256 and RS256 with RSA key", settings("p", &[RS256, ES256], pem(&k.rsa_pub)), "cannot verify ES256"),
        ("EdDSA with RSA key", settings("p", &[EdDSA], pem(&k.rsa_pub)), "cannot verify EdDSA"),
        ("RS256 with Ed25519 key", settings("p", &[RS256], pem(&k.ed_pub)), "Ed25519"),
        ("private key PEM", settings("p", &[RS256], pem(&k.rsa_priv)), "private key"),
        ("certificate PEM", settings("p", &[RS256], pem(&k.rsa_cert)), "certificate"),
        ("1024-bit RSA", settings("p", &[RS256], pem(&k.rsa1024_pub)), "at least 2048"),
        ("P-521 key", settings("p", &[ES256], pem(&k.ec521_pub)), "unsupported EC curve"),
        ("Ed448 key", settings("p", &[EdDSA], pem(&k.ed448_pub)), "unsupported public key type"),
        ("garbage PEM", settings("p", &[RS256], KeySource::PublicKeyPem(b"hello".to_vec())), "no PEM block"),
        ("two PEM blocks", settings("p", &[RS256], KeySource::PublicKeyPem([k.rsa_pub.clone(), k.rsa_pub.clone()].concat())), "2 PEM blocks"),
        ("bad PEM body", settings("p", &[RS256], KeySource::PublicKeyPem(b"-----BEGIN PUBLIC KEY-----\nAAAA!!\n-----END PUBLIC KEY-----\n".to_vec())), "base64"),
        ("JWKS not JSON", settings("p", &[RS256], KeySource::Jwks(b"{".to_vec())), "not valid JSON"),
        ("JWKS without usable key", settings("p", &[EdDSA], KeySource::Jwks(json!({"keys": [{"kty": "RSA", "kid": "r", "n": k.rsa_n, "e": k.rsa_e}]}).to_string().into_bytes())), "no key usable"),
        ("JWKS short Ed25519 x", settings("p", &[EdDSA], KeySource::Jwks(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}).to_string().into_bytes())), "32 bytes"),
        ("JWKS EC point off curve", settings("p", &[ES256], KeySource::Jwks(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64url(&[1; 32]), "y": b64url(&[2; 32])}]}).to_string().into_bytes())), "not a valid ES256 key"),
        ("JWKS P-384 point off curve", settings("p", &[ES384], KeySource::Jwks(json!({"keys": [{"kty": "EC", "crv": "P-384", "x": b64url(&[1; 48]), "y": b64url(&[2; 48])}]}).to_string().into_bytes())), "not a valid ES384 key"),
        ("JWKS P-256 key with y = x", settings("p", &[ES256], KeySource::Jwks(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": k.ec256_xy.0, "y": k.ec256_xy.0}]}).to_string().into_bytes())), "not a valid ES256 key"),
        // y = 2 (little-endian) gives no x on Curve25519's Edwards form; y = 1 is the identity.
        ("JWKS Ed25519 not a curve point", settings("p", &[EdDSA], KeySource::Jwks(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(&ed_y(2))}]}).to_string().into_bytes())), "not a valid EdDSA key"),
        ("JWKS Ed25519 small-order key", settings("p", &[EdDSA], KeySource::Jwks(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(&ed_y(1))}]}).to_string().into_bytes())), "small order"),
        ("PEM Ed25519 not a curve point", settings("p", &[EdDSA], pem(&tweak_public_key(&k.ed_pub, |der| { let n = der.len(); der[n - 32..].copy_from_slice(&ed_y(2)); }))), "not a valid EdDSA key"),
        ("PEM P-256 point off curve", settings("p", &[ES256], pem(&tweak_public_key(&k.ec256_pub, |der| *der.last_mut().unwrap() ^= 1))), "not a valid ES256 key"),
        ("PEM P-384 point off curve", settings("p", &[ES384], pem(&tweak_public_key(&k.ec384_pub, |der| *der.last_mut().unwrap() ^= 1))), "not a valid ES384 key"),
        // x = 2^256 - 1 is not even a field element, so no point has it.
        ("PEM compressed P-256 point invalid", settings("p", &[ES256], pem(&tweak_public_key(&k.ec256_compressed_pub, |der| { let n = der.len(); der[n - 32..].fill(0xff); }))), "not a valid ES256 key"),
        ("PEM compressed P-384 point invalid", settings("p", &[ES384], pem(&tweak_public_key(&k.ec384_compressed_pub, |der| { let n = der.len(); der[n - 48..].fill(0xff); }))), "not a valid ES384 key"),
        ("JWKS RSA exponent above 2^33 - 1", settings("p", &[RS256], KeySource::Jwks(json!({"keys": [{"kty": "RSA", "n": k.rsa_n, "e": b64url(&[2, 0, 0, 0, 1])}]}).to_string().into_bytes())), "public exponent"),
        ("JWKS RSA even exponent", settings("p", &[RS256], KeySource::Jwks(json!({"keys": [{"kty": "RSA", "n": k.rsa_n, "e": b64url(&[1, 0, 0])}]}).to_string().into_bytes())), "public exponent"),
        ("JWKS RSA even modulus", settings("p", &[RS256], KeySource::Jwks(json!({"keys": [{"kty": "RSA", "n": even_modulus(&k.rsa_n), "e": k.rsa_e}]}).to_string().into_bytes())), "modulus is even"),
        ("empty issuer", ProviderSettings { issuer: Some(String::new()), ..settings("p", &[HS256], secret()) }, "issuer is empty"),
        ("empty audience entry", ProviderSettings { audience: vec![String::new()], ..settings("p", &[HS256], secret()) }, "audience"),
        ("empty name", settings(" ", &[HS256], secret()), "name is empty"),
    ];
    for (name, settings, expected) in table {
        match Provider::new(settings) {
            Ok(p) => panic!("{name}: accepted: {p:?}"),
            Err(message) => assert!(
                message.contains(expected),
                "{name}: message {message:?} lacks {expected:?}"
            ),
        }
    }
}

#[test]
fn debug_never_prints_secrets() {
    let s = settings(
        "dbg",
        &[Algorithm::HS256],
        KeySource::Secret(SECRET.to_vec()),
    );
    let secret_text = std::str::from_utf8(SECRET).unwrap();
    assert!(!format!("{s:?}").contains(secret_text));
    let provider = Provider::new(s).unwrap();
    let printed = format!("{provider:?}");
    assert!(!printed.contains(secret_text), "{printed}");
    assert!(printed.contains("dbg"));
}

#[test]
fn provider_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Provider>();
}

#[test]
fn algorithm_names_and_codes() {
    for (name, alg) in ALGORITHMS {
        assert_eq!(parse_algorithm(name), Some(alg));
        assert_eq!(alg_name(alg), name);
    }
    for name in ["none", "None", "NONE", "", "hs256", "ES512", "RS1"] {
        assert_eq!(parse_algorithm(name), None, "{name}");
    }
    let codes = [
        (AuthFailure::Missing, "missing"),
        (AuthFailure::Malformed, "malformed"),
        (AuthFailure::Expired, "expired"),
        (AuthFailure::NotYetValid, "not_yet_valid"),
        (AuthFailure::BadSignature, "bad_signature"),
        (AuthFailure::BadIssuer, "bad_issuer"),
        (AuthFailure::BadAudience, "bad_audience"),
        (AuthFailure::UnknownKid, "unknown_kid"),
        (AuthFailure::AlgNotAllowed, "alg_not_allowed"),
    ];
    for (failure, code) in codes {
        assert_eq!(failure.code(), code);
    }
}

// ---- the cache of verified tokens

fn hs256_provider() -> Provider {
    Provider::new(settings(
        "cached",
        &[Algorithm::HS256],
        KeySource::Secret(SECRET.to_vec()),
    ))
    .unwrap()
}

/// A JWKS document with the test RSA key under each of `kids`.
fn rsa_jwks(kids: &[&str]) -> Vec<u8> {
    let k = keys();
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| json!({"kty": "RSA", "kid": kid, "n": k.rsa_n, "e": k.rsa_e}))
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

#[test]
fn a_second_verify_of_a_token_skips_the_signature_check() {
    let metrics = crate::observability::metrics::Metrics::new();
    let provider = hs256_provider().with_cache_metrics(metrics.jwt_cache("cached"));
    let token = encode(Algorithm::HS256, None, &good_claims(), &hs());
    let before = signature_checks();
    let first = provider.verify(&token, now()).unwrap();
    assert_eq!(signature_checks() - before, 1);
    let second = provider.verify(&token, now()).unwrap();
    let third = provider.verify(&token, now()).unwrap();
    assert_eq!(signature_checks() - before, 1, "hits check no signature");
    assert!(Arc::ptr_eq(&first, &second) && Arc::ptr_eq(&first, &third));
    assert_eq!(second.sub(), Some("alice"));
    let out = metrics.encode();
    assert!(
        out.contains("gatehouse_jwt_cache_hits_total{provider=\"cached\"} 2"),
        "{out}"
    );
    assert!(
        out.contains("gatehouse_jwt_cache_misses_total{provider=\"cached\"} 1"),
        "{out}"
    );

    // Another token is a miss of its own; the first stays cached.
    let other = encode(
        Algorithm::HS256,
        None,
        &claims_with(json!({"sub": "bob"})),
        &hs(),
    );
    assert_eq!(provider.verify(&other, now()).unwrap().sub(), Some("bob"));
    assert_eq!(signature_checks() - before, 2);
    assert!(provider.verify(&token, now()).is_ok());
    assert_eq!(signature_checks() - before, 2);
    assert_eq!(provider.cache.len(), 2);
}

#[test]
fn refused_tokens_are_never_cached() {
    let provider = hs256_provider();
    let good = encode(Algorithm::HS256, None, &good_claims(), &hs());
    let refused = [
        (tamper_signature(&good), AuthFailure::BadSignature),
        // Correctly signed, refused by a claim check after the signature.
        (
            encode(
                Algorithm::HS256,
                None,
                &claims_with(json!({"iss": "https://other.test"})),
                &hs(),
            ),
            AuthFailure::BadIssuer,
        ),
        (
            encode(
                Algorithm::HS256,
                None,
                &claims_with(json!({"aud": "other"})),
                &hs(),
            ),
            AuthFailure::BadAudience,
        ),
        (
            encode(
                Algorithm::HS256,
                None,
                &claims_with(json!({"exp": NOW - 60})),
                &hs(),
            ),
            AuthFailure::Expired,
        ),
        (
            encode(
                Algorithm::HS256,
                None,
                &claims_with(json!({"sub": 7})),
                &hs(),
            ),
            AuthFailure::Malformed,
        ),
    ];
    for (token, want) in &refused {
        let before = signature_checks();
        for _ in 0..3 {
            assert_eq!(provider.verify(token, now()).unwrap_err(), *want);
        }
        assert_eq!(
            signature_checks() - before,
            3,
            "{want:?}: checked every time"
        );
    }
    assert_eq!(provider.cache.len(), 0);
}

#[test]
fn a_cached_token_is_refused_as_expired_once_exp_passes() {
    let provider = hs256_provider();
    // good_claims: exp NOW + 600; the provider's leeway is 30 s.
    let token = encode(Algorithm::HS256, None, &good_claims(), &hs());
    let before = signature_checks();
    assert!(provider.verify(&token, now()).is_ok());
    assert!(
        provider.verify(&token, at(NOW + 629)).is_ok(),
        "within the leeway"
    );
    assert_eq!(
        provider.verify(&token, at(NOW + 630)).unwrap_err(),
        AuthFailure::Expired
    );
    assert_eq!(
        provider.verify(&token, at(NOW + 100_000)).unwrap_err(),
        AuthFailure::Expired
    );
    assert_eq!(signature_checks() - before, 1, "judged from the cache");

    // nbf is judged on every request too: cached once valid, refused if the clock goes back.
    let later = encode(
        Algorithm::HS256,
        None,
        &claims_with(json!({"nbf": NOW + 100})),
        &hs(),
    );
    assert_eq!(
        provider.verify(&later, now()).unwrap_err(),
        AuthFailure::NotYetValid
    );
    assert!(provider.verify(&later, at(NOW + 100)).is_ok());
    let before = signature_checks();
    assert_eq!(
        provider.verify(&later, now()).unwrap_err(),
        AuthFailure::NotYetValid
    );
    assert!(provider.verify(&later, at(NOW + 200)).is_ok());
    assert_eq!(signature_checks(), before, "both from the cache");
}

#[test]
fn a_cached_token_is_refused_once_its_key_is_rotated_away() {
    let provider = Provider::new(settings(
        "rotating",
        JWKS_ALGS,
        KeySource::Jwks(rsa_jwks(&["old"])),
    ))
    .unwrap();
    let token = encode(Algorithm::RS256, Some("old"), &good_claims(), &rsa());
    let before = signature_checks();
    assert!(provider.verify(&token, now()).is_ok());
    assert!(provider.verify(&token, now()).is_ok());
    assert_eq!(signature_checks() - before, 1, "cached");

    assert_eq!(provider.replace_jwks(&rsa_jwks(&["new"])), Ok(1));
    assert_eq!(
        provider.verify(&token, now()).unwrap_err(),
        AuthFailure::UnknownKid
    );
    assert_eq!(
        provider.verify(&token, now()).unwrap_err(),
        AuthFailure::UnknownKid,
        "the refusal is not cached either"
    );

    // Back in the set: verified in full again, then cached again.
    assert_eq!(provider.replace_jwks(&rsa_jwks(&["new", "old"])), Ok(2));
    let before = signature_checks();
    assert!(provider.verify(&token, now()).is_ok());
    assert!(provider.verify(&token, now()).is_ok());
    assert_eq!(signature_checks() - before, 1);

    // Any replacement flushes, even one that keeps the kid: the key behind it may differ.
    let k = keys();
    let other_key =
        json!({"keys": [{"kty": "RSA", "kid": "old", "n": k.attacker_n, "e": k.attacker_e}]});
    assert_eq!(
        provider.replace_jwks(other_key.to_string().as_bytes()),
        Ok(1)
    );
    assert_eq!(
        provider.verify(&token, now()).unwrap_err(),
        AuthFailure::BadSignature
    );
}

#[test]
fn a_shared_key_set_replaced_by_its_refresher_flushes_every_provider_using_it() {
    // What a jwks_url refresher does: replace the shared set directly, not through a provider.
    let shared = Arc::new(JwksKeys::empty(JWKS_ALGS));
    shared.replace(&rsa_jwks(&["a"])).unwrap();
    let provider = |name| {
        Provider::new(settings(
            name,
            JWKS_ALGS,
            KeySource::JwksRemote(shared.clone()),
        ))
        .unwrap()
    };
    let (old_config, new_config) = (provider("before-reload"), provider("after-reload"));
    let token = encode(Algorithm::RS256, Some("a"), &good_claims(), &rsa());
    for p in [&old_config, &new_config] {
        assert!(p.verify(&token, now()).is_ok());
        assert!(p.verify(&token, now()).is_ok());
        assert_eq!(p.cache.len(), 1);
    }
    shared.replace(&rsa_jwks(&["b"])).unwrap();
    for p in [&old_config, &new_config] {
        assert_eq!(
            p.verify(&token, now()).unwrap_err(),
            AuthFailure::UnknownKid
        );
    }
}

#[test]
fn a_token_over_the_byte_budget_is_not_cached_but_verifies() {
    let mut provider = hs256_provider();
    let token = encode(Algorithm::HS256, None, &good_claims(), &hs());
    let claims = provider.verify(&token, now()).unwrap();
    let cost = cache::entry_bytes(&token, &claims);
    provider.cache = TokenCache::new(cache::Limits {
        entries: 10,
        bytes: cost - 1,
        shards: 1,
    });
    let before = signature_checks();
    for _ in 0..3 {
        assert_eq!(provider.verify(&token, now()).unwrap().sub(), Some("alice"));
    }
    assert_eq!(
        signature_checks() - before,
        3,
        "verified in full every time"
    );
    assert_eq!(provider.cache.len(), 0);
}

#[test]
fn more_tokens_than_the_entry_cap_keep_the_cache_at_the_cap() {
    const CAP: usize = 4;
    let tokens: Vec<String> = (0..=CAP)
        .map(|i| {
            let claims = claims_with(json!({"sub": format!("user-{i}")}));
            encode(Algorithm::HS256, None, &claims, &hs())
        })
        .collect();
    for n in [CAP - 1, CAP, CAP + 1] {
        let mut provider = hs256_provider();
        provider.cache = TokenCache::new(cache::Limits {
            entries: CAP,
            bytes: 1 << 20,
            shards: 1,
        });
        for token in &tokens[..n] {
            assert!(provider.verify(token, now()).is_ok());
        }
        assert_eq!(provider.cache.len(), n.min(CAP), "{n} tokens");
        let before = signature_checks();
        for (i, token) in tokens[..n].iter().enumerate() {
            let claims = provider.verify(token, now()).unwrap();
            assert_eq!(claims.sub(), Some(format!("user-{i}").as_str()));
        }
        let rechecked = signature_checks() - before;
        assert!(provider.cache.len() <= CAP);
        if n <= CAP {
            assert_eq!(rechecked, 0, "{n} tokens all cached");
        } else {
            assert!(
                rechecked >= 1,
                "{n} tokens: one was evicted and verified again"
            );
        }
    }
}

#[test]
fn default_cache_limits_fit_typical_tokens() {
    // A token like an IdP's: roles, scopes, names, ~1 KiB in all.
    let claims = claims_with(json!({
        "name": "Alice Example", "email": "alice@example.com", "tenant": "acme",
        "roles": ["reader", "writer", "billing-admin", "support"],
        "scope": "openid profile email orders:read orders:write invoices:read",
        "realm_access": {"roles": ["offline_access", "uma_authorization"]},
        "sid": "9c1f3e8a-6d2b-4c1e-9a7f-3b5d2e1c0f9a", "azp": "web-app",
        "jti": "a4b1c2d3-e4f5-6789-abcd-ef0123456789",
    }));
    let token = encode(Algorithm::RS256, Some("rsa-1"), &claims, &rsa());
    let verified = Providers::new().jwks.verify(&token, now()).unwrap();
    let cost = cache::entry_bytes(&token, &verified);
    assert!(
        cost * cache::MAX_ENTRIES <= cache::MAX_BYTES,
        "{} B token costs {cost} B: {} entries would not fit in {} B",
        token.len(),
        cache::MAX_ENTRIES,
        cache::MAX_BYTES
    );
    // The largest token accepted still fits a shard, so it can be cached.
    let big = claims_with(json!({"groups": vec!["g"; 1_400]}));
    let token = encode(Algorithm::HS256, None, &big, &hs());
    assert!(token.len() <= MAX_TOKEN_BYTES, "{}", token.len());
    let provider = hs256_provider();
    let verified = provider.verify(&token, now()).unwrap();
    assert!(cache::entry_bytes(&token, &verified) <= cache::MAX_BYTES / cache::SHARDS);
    assert_eq!(provider.cache.len(), 1);
}
