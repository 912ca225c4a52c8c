//! Verification keys, built once at config load (or on a JWKS refresh) so the request path only
//! looks keys up.
//!
//! This module decides *which* keys are acceptable and what each can verify, and extracts their
//! material (RSA modulus and exponent, EC point, Ed25519 bytes) for [`SignatureKey`], which ring
//! verifies with. PEM public keys are read with a minimal DER reader (SubjectPublicKeyInfo or
//! PKCS#1), JWKS entries through jsonwebtoken's JWK types. A key is only ever used for the
//! algorithms its type can serve, which is what makes algorithm confusion (an RSA public key used
//! as an HMAC secret) impossible.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use super::signature::SignatureKey;
use super::{alg_name, b64, parse_algorithm};

/// Smallest RSA modulus accepted: shorter keys are factorable with modest resources.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted. ring would take up to 8192 bits, but issuers use 2048 to 4096,
/// verifying costs grow with the square of the modulus size, and the request path decodes
/// signatures (as long as the modulus) into a stack buffer sized from this.
pub(super) const MAX_RSA_BITS: usize = 4096;
/// Largest RSA public exponent accepted: ring refuses larger ones, so such a key would reject
/// every token while looking configured. Real keys use 65537.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
/// A JWKS document larger than this is refused: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// What a key is, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// A shared secret: HS256/384/512 only.
    Hmac,
    /// An RSA public key: RS* and PS*.
    Rsa,
    /// An EC key on P-256: ES256 only.
    EcP256,
    /// An EC key on P-384: ES384 only.
    EcP384,
    /// An Ed25519 key: EdDSA only.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify `alg`. The curve is part of the kind because
    /// ES256 with a P-384 key (or the reverse) is not a valid combination.
    pub(super) fn serves(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }

    /// Human description for config errors.
    pub(super) fn describe(self) -> &'static str {
        match self {
            KeyKind::Hmac => "an HMAC secret",
            KeyKind::Rsa => "an RSA public key",
            KeyKind::EcP256 => "an EC P-256 public key",
            KeyKind::EcP384 => "an EC P-384 public key",
            KeyKind::Ed25519 => "an Ed25519 public key",
        }
    }

    /// The algorithms this kind can serve, named, for config errors.
    fn algorithm_names(self) -> &'static str {
        match self {
            KeyKind::Hmac => "HS256, HS384, HS512",
            KeyKind::Rsa => "RS256, RS384, RS512, PS256, PS384, PS512",
            KeyKind::EcP256 => "ES256",
            KeyKind::EcP384 => "ES384",
            KeyKind::Ed25519 => "EdDSA",
        }
    }
}

/// One usable verification key.
pub(super) struct VerifyKey {
    /// The JWK's own `alg`, when it named one: then only that algorithm may use the key.
    pub(super) alg: Option<Algorithm>,
    /// The key ring verifies with; its variant is the key's [`KeyKind`].
    pub(super) key: SignatureKey,
}

impl VerifyKey {
    /// What the key is.
    pub(super) fn kind(&self) -> KeyKind {
        self.key.kind()
    }

    /// Whether this key may verify a token whose header says `alg`.
    pub(super) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind().serves(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// An HMAC secret key.
pub(super) fn secret_key(secret: &[u8]) -> VerifyKey {
    VerifyKey {
        alg: None,
        key: SignatureKey::hmac(secret),
    }
}

/// Parses one PEM public key (RSA, EC P-256/P-384 or Ed25519), detecting its type.
pub(super) fn public_key_from_pem(pem: &[u8]) -> Result<VerifyKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the PEM file is not text".to_string())?;
    let (label, body) = single_pem_block(text)?;
    let der =
        b64::decode_pem_body(body).ok_or_else(|| "the PEM body is not valid base64".to_string())?;
    let key = match label {
        "PUBLIC KEY" => spki_key(&der)?,
        "RSA PUBLIC KEY" => rsa_public_key(&der)?,
        "PRIVATE KEY"
        | "RSA PRIVATE KEY"
        | "EC PRIVATE KEY"
        | "ENCRYPTED PRIVATE KEY"
        | "OPENSSH PRIVATE KEY" => {
            // Refused rather than reduced to its public half: a private key in a gateway
            // config is a leak waiting to happen, and the operator should know.
            return Err(format!(
                "the PEM is a private key ({label}); configure the public key \
                 (`openssl pkey -in key.pem -pubout`)"
            ));
        }
        "CERTIFICATE" => {
            return Err("the PEM is a certificate; extract its public key \
                        (`openssl x509 -in cert.pem -pubkey -noout`)"
                .to_string())
        }
        other => {
            return Err(format!(
                "unexpected PEM block \"{other}\"; expected PUBLIC KEY"
            ))
        }
    };
    Ok(VerifyKey { alg: None, key })
}

/// Error text for a single key that cannot serve some of the listed algorithms.
pub(super) fn unserved_message(kind: KeyKind, unserved: &[Algorithm]) -> String {
    let names: Vec<&str> = unserved.iter().map(|a| alg_name(*a)).collect();
    format!(
        "the key is {}, which cannot verify {}; it can only serve {}",
        kind.describe(),
        names.join(", "),
        kind.algorithm_names()
    )
}

/// Finds exactly one `-----BEGIN X-----` … `-----END X-----` block; returns the label and body.
fn single_pem_block(text: &str) -> Result<(&str, &str), String> {
    const BEGIN: &str = "-----BEGIN ";
    let blocks = text.matches(BEGIN).count();
    if blocks == 0 {
        return Err("no PEM block found (expected -----BEGIN PUBLIC KEY-----)".to_string());
    }
    if blocks > 1 {
        return Err(format!(
            "the file holds {blocks} PEM blocks; give exactly one public key"
        ));
    }
    let start = text.find(BEGIN).unwrap_or(0) + BEGIN.len();
    let rest = &text[start..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| "unterminated PEM BEGIN line".to_string())?;
    let label = &rest[..label_end];
    let body_start = label_end + "-----".len();
    let end_marker = format!("-----END {label}-----");
    let body_end = rest[body_start..]
        .find(&end_marker)
        .ok_or_else(|| format!("missing \"{end_marker}\""))?;
    let body = &rest[body_start..body_start + body_end];
    if body.contains(':') {
        // RFC 1421 headers (Proc-Type, DEK-Info) mean a legacy encrypted key.
        return Err("the PEM block has headers (an encrypted legacy key?)".to_string());
    }
    Ok((label, body))
}

/// A cursor over DER bytes: just enough to walk a SubjectPublicKeyInfo.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Reads one element with the expected tag and returns its contents.
    fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&t, rest) = self.0.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some(content)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads a DER SubjectPublicKeyInfo: classifies the key, checks its material and returns it
/// ready to verify with.
fn spki_key(der: &[u8]) -> Result<SignatureKey, String> {
    let bad = || "the PUBLIC KEY is not valid DER (SubjectPublicKeyInfo)".to_string();
    let mut outer = Der(der);
    let spki = outer.read(0x30).ok_or_else(bad)?;
    if !outer.is_empty() {
        return Err(bad());
    }
    let mut spki = Der(spki);
    let algorithm = spki.read(0x30).ok_or_else(bad)?;
    let bits = spki.read(0x03).ok_or_else(bad)?;
    if !spki.is_empty() {
        return Err(bad());
    }
    // A BIT STRING starts with its count of unused bits; keys are whole bytes.
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(bad()),
    };
    let mut algorithm = Der(algorithm);
    let oid = algorithm.read(0x06).ok_or_else(bad)?;
    match oid {
        OID_RSA_ENCRYPTION => rsa_public_key(key),
        OID_EC_PUBLIC_KEY => {
            let curve = algorithm.read(0x06).ok_or_else(bad)?;
            let (kind, coordinate) = match curve {
                OID_P256 => (KeyKind::EcP256, 32),
                OID_P384 => (KeyKind::EcP384, 48),
                _ => {
                    return Err(
                        "unsupported EC curve; only P-256 (ES256) and P-384 (ES384) \
                                are supported"
                            .to_string(),
                    )
                }
            };
            let uncompressed = key.len() == 1 + 2 * coordinate && key[0] == 0x04;
            let compressed = key.len() == 1 + coordinate && matches!(key[0], 0x02 | 0x03);
            if !(uncompressed || compressed) {
                return Err(format!("malformed {} point", kind.describe()));
            }
            // A compressed point is decompressed here, once: ring only takes uncompressed ones.
            SignatureKey::ec(kind, key)
        }
        OID_ED25519 => SignatureKey::ed25519(key),
        OID_RSASSA_PSS => Err(
            "RSASSA-PSS-restricted keys are not supported; export the key as a \
                               plain RSA public key (it still verifies PS256/384/512)"
                .to_string(),
        ),
        _ => Err(
            "unsupported public key type; supported: RSA, EC P-256, EC P-384, Ed25519 \
                  (Ed448 is not)"
                .to_string(),
        ),
    }
}

/// Reads a PKCS#1 RSAPublicKey (`SEQUENCE { n INTEGER, e INTEGER }`).
fn rsa_public_key(der: &[u8]) -> Result<SignatureKey, String> {
    let bad = || "the RSA public key is not valid DER".to_string();
    let mut outer = Der(der);
    let seq = outer.read(0x30).ok_or_else(bad)?;
    if !outer.is_empty() {
        return Err(bad());
    }
    let mut seq = Der(seq);
    let n = seq.read(0x02).ok_or_else(bad)?;
    let e = seq.read(0x02).ok_or_else(bad)?;
    if !seq.is_empty() {
        return Err(bad());
    }
    // DER INTEGERs are signed: a set high bit with no 0x00 prefix is a negative number.
    if n.first().is_none_or(|b| b & 0x80 != 0) || e.first().is_none_or(|b| b & 0x80 != 0) {
        return Err(bad());
    }
    check_rsa_components(n, e)?;
    Ok(SignatureKey::rsa(n, e))
}

/// Checks modulus size and exponent, for PEM and JWK keys alike, by the rules ring verifies
/// with (odd modulus, odd exponent from 3 to 2^33 - 1), so an accepted key cannot fail every
/// token.
fn check_rsa_components(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at most {MAX_RSA_BITS} are supported"
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        // An RSA modulus is a product of two odd primes.
        return Err("the RSA modulus is even, so it is not an RSA key".to_string());
    }
    let exponent_ok = matches!(e.len(), 1..=8)
        && e.last().is_some_and(|b| b & 1 == 1)
        && (3..=MAX_RSA_EXPONENT)
            .contains(&e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
    if !exponent_ok {
        return Err(
            "the RSA public exponent is invalid (it must be odd, from 3 to 2^33 - 1; \
             usually 65537)"
                .to_string(),
        );
    }
    Ok(())
}

pub(super) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A parsed JWKS: the usable keys, indexed by `kid`.
pub(super) struct KeySet {
    keys: Vec<VerifyKey>,
    /// `kid` → indices into `keys`. A kid may repeat (one RSA and one EC key under the same
    /// name, say): the first key whose type and `alg` accept the token's alg is used.
    by_kid: HashMap<String, Vec<usize>>,
}

/// Result of looking a key up for one token.
pub(super) enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a VerifyKey),
    /// The kid names no key (or the token has no kid and the set is empty).
    Unknown,
    /// The token has no kid and the set holds several keys: guessing would be unsafe.
    Ambiguous,
    /// Keys exist under this kid, but none may verify this alg.
    WrongAlg,
}

impl KeySet {
    /// A set with no keys: a remote JWKS before its first fetch.
    pub(super) fn empty() -> KeySet {
        KeySet {
            keys: Vec::new(),
            by_kid: HashMap::new(),
        }
    }

    /// Number of usable keys.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Parses JWKS JSON, keeping the keys that can verify at least one of `algorithms`.
    /// Returns the set and, for logging, why each other key was skipped. A set with no usable
    /// key is an error: replacing good keys with nothing would reject every token.
    pub(super) fn parse(
        json: &[u8],
        algorithms: &[Algorithm],
    ) -> Result<(KeySet, Vec<String>), String> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "the JWKS is {} bytes; at most {MAX_JWKS_BYTES} are accepted",
                json.len()
            ));
        }
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(json).map_err(|e| {
            format!("the JWKS is not valid JSON of the form {{\"keys\": [...]}}: {e}")
        })?;
        let mut set = KeySet::empty();
        let mut skipped = Vec::new();
        for (index, value) in document.keys.iter().enumerate() {
            match jwk_key(value, algorithms) {
                Ok((kid, key)) => {
                    let slot = set.keys.len();
                    set.keys.push(key);
                    if let Some(kid) = kid {
                        set.by_kid.entry(kid).or_default().push(slot);
                    }
                }
                Err(reason) => {
                    let kid = value.get("kid").and_then(Value::as_str).unwrap_or("");
                    skipped.push(format!("key #{index} (kid {kid:?}) skipped: {reason}"));
                }
            }
        }
        if set.keys.is_empty() {
            let mut message = format!(
                "the JWKS has no key usable for {}",
                algorithms
                    .iter()
                    .map(|a| alg_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !skipped.is_empty() {
                message.push_str(" (");
                message.push_str(&skipped.join("; "));
                message.push(')');
            }
            return Err(message);
        }
        Ok((set, skipped))
    }

    /// Picks the key for a token. The kid is only ever a map key: it is never interpreted as a
    /// path, URL or anything else.
    pub(super) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Lookup::Unknown,
                Some(slots) => slots
                    .iter()
                    .map(|&i| &self.keys[i])
                    .find(|key| key.accepts(alg))
                    .map_or(Lookup::WrongAlg, Lookup::Found),
            },
            None => match self.keys.as_slice() {
                [] => Lookup::Unknown,
                [only] if only.accepts(alg) => Lookup::Found(only),
                [_] => Lookup::WrongAlg,
                _ => Lookup::Ambiguous,
            },
        }
    }
}

/// Builds one JWKS entry, or says why it is not usable.
fn jwk_key(value: &Value, algorithms: &[Algorithm]) -> Result<(Option<String>, VerifyKey), String> {
    let jwk = Jwk::deserialize(value).map_err(|e| format!("not a supported JWK: {e}"))?;
    // Read alg from the raw JSON: jsonwebtoken maps unknown names to a catch-all, and the rule
    // is simple — when present it must be one of ours, exactly.
    let own_alg = match value.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            parse_algorithm(name).ok_or_else(|| format!("its alg {name:?} is not supported"))?,
        ),
        Some(_) => return Err("its alg is not a string".to_string()),
    };
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("its use is not \"sig\"".to_string());
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("its key_ops do not include \"verify\"".to_string());
        }
    }
    let key = jwk_signature_key(&jwk.algorithm)?;
    let kind = key.kind();
    if let Some(alg) = own_alg {
        if !kind.serves(alg) {
            return Err(format!(
                "it is {} but names alg {}",
                kind.describe(),
                alg_name(alg)
            ));
        }
        if !algorithms.contains(&alg) {
            return Err(format!(
                "its alg {} is not in the provider's algorithms",
                alg_name(alg)
            ));
        }
    } else if !algorithms.iter().any(|&a| kind.serves(a)) {
        return Err(format!(
            "it is {}, which serves none of the provider's algorithms",
            kind.describe()
        ));
    }
    Ok((jwk.common.key_id.clone(), VerifyKey { alg: own_alg, key }))
}

/// Reads a JWK's key material (`n`/`e`, `x`/`y` or `x`), checks it and returns it ready to
/// verify with.
fn jwk_signature_key(params: &AlgorithmParameters) -> Result<SignatureKey, String> {
    let decode = |field: &str, value: &str| {
        b64::decode_url(value.as_bytes())
            .ok_or_else(|| format!("its {field} is not unpadded base64url"))
    };
    if let AlgorithmParameters::RSA(rsa) = params {
        let n = decode("n", &rsa.n)?;
        let e = decode("e", &rsa.e)?;
        check_rsa_components(&n, &e)?;
        return Ok(SignatureKey::rsa(&n, &e));
    }
    if let AlgorithmParameters::EllipticCurve(ec) = params {
        let (kind, size) = if ec.curve == EllipticCurve::P256 {
            (KeyKind::EcP256, 32)
        } else if ec.curve == EllipticCurve::P384 {
            (KeyKind::EcP384, 48)
        } else {
            return Err("its curve is not P-256 or P-384".to_string());
        };
        let (x, y) = (decode("x", &ec.x)?, decode("y", &ec.y)?);
        if x.len() != size || y.len() != size {
            return Err(format!("its coordinates are not {size} bytes"));
        }
        let point = [&[0x04][..], &x, &y].concat();
        return SignatureKey::ec(kind, &point);
    }
    if let AlgorithmParameters::OctetKeyPair(okp) = params {
        if okp.curve != EllipticCurve::Ed25519 {
            return Err("its OKP curve is not Ed25519".to_string());
        }
        let x = decode("x", &okp.x)?;
        if x.len() != 32 {
            return Err("its Ed25519 x is not 32 bytes".to_string());
        }
        return SignatureKey::ed25519(&x);
    }
    if let AlgorithmParameters::OctetKey(_) = params {
        // HS* never verifies against a JWKS (providers mixing HS with key sets are refused),
        // so a symmetric key here can only be a mistake or a confusion attempt.
        return Err("symmetric (oct) keys are not used from a JWKS".to_string());
    }
    Err("its kty is not supported".to_string())
}
