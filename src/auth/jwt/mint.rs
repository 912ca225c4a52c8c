//! Signing with a private key for `gatehouse token --key`: the gateway holds only public keys
//! for RS/PS/ES/EdDSA providers, so the operator brings the private half to test such a route.

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{alg_name, names, Keys, Provider};

/// The kind of private key found in a PEM, which decides the algorithms it can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

impl Family {
    fn signs(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Family::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            // The curve decides between the two; signing with the wrong one fails and the next
            // candidate is tried.
            Family::Ec => matches!(alg, ES256 | ES384),
            Family::Ed => alg == EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Family::Rsa => "an RSA private key",
            Family::Ec => "an EC private key",
            Family::Ed => "an Ed25519 private key",
        }
    }
}

/// Parses a PEM private key: RSA (PKCS#1 or PKCS#8), EC P-256/P-384 or Ed25519 (PKCS#8).
fn private_key(pem: &[u8]) -> Result<(EncodingKey, Family), String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err(
            "an EC key in SEC1 form (`BEGIN EC PRIVATE KEY`) is not read; convert it to \
                    PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
                .to_string(),
        );
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(
            "the key is encrypted; decrypt it first with `openssl pkey -in KEY -out PLAIN`"
                .to_string(),
        );
    }
    // An RSA public key parses as an RSA key too; only a private key can sign.
    if !text.contains("PRIVATE KEY-----") {
        return Err(
            "not a PEM private key (a public key verifies; signing needs the private \
                    key of the pair)"
                .to_string(),
        );
    }
    if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
        return Ok((key, Family::Rsa));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Ok((key, Family::Ec));
    }
    if let Ok(key) = EncodingKey::from_ed_pem(pem) {
        return Ok((key, Family::Ed));
    }
    Err("not an RSA, EC (P-256, P-384) or Ed25519 private key in PEM form".to_string())
}

/// Refuses claims the gateway would never accept, before anything is signed.
pub(super) fn check_claims(claims: &serde_json::Value) -> Result<(), String> {
    let Some(object) = claims.as_object() else {
        return Err("claims must be a JSON object".to_string());
    };
    if !matches!(object.get("exp"), Some(serde_json::Value::Number(_))) {
        return Err("claims need a numeric exp: tokens without one are rejected".to_string());
    }
    Ok(())
}

impl Provider {
    /// Signs `claims` with the private key in `pem`, for a provider that verifies with public
    /// keys. The algorithm is `alg` when given (it must be one the provider accepts), otherwise
    /// the first of the provider's algorithms the key can sign with. `kid` goes into the header,
    /// for providers that pick keys from a JWKS.
    pub fn mint_with_key(
        &self,
        claims: &serde_json::Value,
        pem: &[u8],
        alg: Option<Algorithm>,
        kid: Option<&str>,
    ) -> Result<String, String> {
        if let Keys::Secret { .. } = self.keys {
            return Err(format!(
                "jwt provider \"{}\" verifies with a shared secret; mint without --key",
                self.name
            ));
        }
        check_claims(claims)?;
        let (key, family) = private_key(pem)?;
        let candidates: Vec<Algorithm> = match alg {
            Some(alg) if !self.algorithms.contains(&alg) => {
                return Err(format!(
                    "jwt provider \"{}\" accepts {}, not {}",
                    self.name,
                    names(&self.algorithms),
                    alg_name(alg)
                ))
            }
            Some(alg) => vec![alg],
            None => self.algorithms.clone(),
        };
        for alg in candidates.into_iter().filter(|a| family.signs(*a)) {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_string);
            if let Ok(token) = jsonwebtoken::encode(&header, claims, &key) {
                return Ok(token);
            }
        }
        Err(format!(
            "{} cannot sign with {}{}",
            family.describe(),
            match alg {
                Some(alg) => alg_name(alg).to_string(),
                None => names(&self.algorithms),
            },
            if alg.is_some() {
                String::new()
            } else {
                format!(", the algorithms jwt provider \"{}\" accepts", self.name)
            }
        ))
    }
}
