//! Signature verification with `ring`, on keys prepared once at config load.
//!
//! A [`SignatureKey`] holds key material in the form ring verifies with directly, so a request
//! only decodes its signature and calls ring: no PEM, DER or JWK parsing on the request path.
//! EdDSA is the exception: ring decodes the Ed25519 point again for every token and measured
//! slower than ed25519-dalek verifying with a point decoded once here, so dalek verifies it.
//! Building one checks everything ring would otherwise only discover per token (an EC point off
//! its curve, an Ed25519 key that is no curve point, an RSA exponent ring refuses), so a key that
//! would reject every token is a config error rather than a 401 for everyone.

use std::fmt;

use jsonwebtoken::Algorithm;
use ring::hmac;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::keys::{strip_leading_zeros, KeyKind, MAX_RSA_BITS};

/// Longest signature any accepted key produces: an RSA signature is as long as the modulus.
/// The request path decodes signatures into a stack buffer of this size.
pub(super) const MAX_SIGNATURE_BYTES: usize = MAX_RSA_BITS / 8;

/// A verification key in ring's form. Each variant verifies only its own algorithms.
pub(super) enum SignatureKey {
    /// One shared secret, keyed once per hash so no HMAC setup happens per request (boxed:
    /// the three keys are over ten times the size of any other variant).
    Hmac(Box<HmacKeys>),
    /// Modulus and exponent, big-endian without leading zeros, as ring takes them.
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
    /// Uncompressed SEC1 point (`04 || x || y`) on P-256, bound to ES256's fixed-size `r || s`.
    EcP256(UnparsedPublicKey<Vec<u8>>),
    /// Uncompressed SEC1 point on P-384, bound to ES384's fixed-size `r || s`.
    EcP384(UnparsedPublicKey<Vec<u8>>),
    /// The Ed25519 public key, its point decoded.
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// The HMAC keys of one secret.
pub(super) struct HmacKeys {
    sha256: hmac::Key,
    sha384: hmac::Key,
    sha512: hmac::Key,
}

impl fmt::Debug for SignatureKey {
    /// Names the kind only: never key material (an HMAC key is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureKey({})", self.kind().describe())
    }
}

impl SignatureKey {
    /// An HMAC key for HS256/384/512. The caller enforces the minimum secret length.
    pub(super) fn hmac(secret: &[u8]) -> SignatureKey {
        SignatureKey::Hmac(Box::new(HmacKeys {
            sha256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            sha384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            sha512: hmac::Key::new(hmac::HMAC_SHA512, secret),
        }))
    }

    /// An RSA key from its modulus and exponent (big-endian, leading zeros allowed). The caller
    /// has checked sizes and exponent with `check_rsa_components`, which follows ring's rules.
    pub(super) fn rsa(n: &[u8], e: &[u8]) -> SignatureKey {
        SignatureKey::Rsa(RsaPublicKeyComponents {
            n: strip_leading_zeros(n).to_vec(),
            e: strip_leading_zeros(e).to_vec(),
        })
    }

    /// An EC key from a SEC1 point, compressed or uncompressed. The point is validated (on the
    /// curve, not the identity) and stored uncompressed, the only form ring verifies with.
    pub(super) fn ec(kind: KeyKind, point: &[u8]) -> Result<SignatureKey, String> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let invalid =
            |alg: &str| format!("the key is not a valid {alg} key: the point is not on the curve");
        match kind {
            KeyKind::EcP256 => {
                let key = p256::PublicKey::from_sec1_bytes(point).map_err(|_| invalid("ES256"))?;
                let uncompressed = key.to_encoded_point(false).as_bytes().to_vec();
                Ok(SignatureKey::EcP256(UnparsedPublicKey::new(
                    &signature::ECDSA_P256_SHA256_FIXED,
                    uncompressed,
                )))
            }
            KeyKind::EcP384 => {
                let key = p384::PublicKey::from_sec1_bytes(point).map_err(|_| invalid("ES384"))?;
                let uncompressed = key.to_encoded_point(false).as_bytes().to_vec();
                Ok(SignatureKey::EcP384(UnparsedPublicKey::new(
                    &signature::ECDSA_P384_SHA384_FIXED,
                    uncompressed,
                )))
            }
            other => Err(format!("{} is not an EC key", other.describe())),
        }
    }

    /// An Ed25519 key from its 32 bytes, decoded once here: bytes that are no curve point are
    /// refused, and so are small-order keys, for which signatures can be forged without any
    /// private key.
    pub(super) fn ed25519(x: &[u8]) -> Result<SignatureKey, String> {
        let bytes: [u8; 32] = x
            .try_into()
            .map_err(|_| "an Ed25519 public key must be 32 bytes".to_string())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "the key is not a valid EdDSA key: not a curve point".to_string())?;
        if key.is_weak() {
            return Err("the key is not a valid EdDSA key: it has small order".to_string());
        }
        Ok(SignatureKey::Ed25519(key))
    }

    /// What the key is, which fixes the algorithms it may verify.
    pub(super) fn kind(&self) -> KeyKind {
        match self {
            SignatureKey::Hmac(_) => KeyKind::Hmac,
            SignatureKey::Rsa(_) => KeyKind::Rsa,
            SignatureKey::EcP256(_) => KeyKind::EcP256,
            SignatureKey::EcP384(_) => KeyKind::EcP384,
            SignatureKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Whether `signature` (already base64-decoded) is a valid `alg` signature of `message`.
    /// An algorithm this key does not serve, or a signature of the wrong length, is `false`.
    pub(super) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        use signature::{
            RSA_PKCS1_2048_8192_SHA256 as RS256_PARAMS, RSA_PKCS1_2048_8192_SHA384 as RS384_PARAMS,
            RSA_PKCS1_2048_8192_SHA512 as RS512_PARAMS, RSA_PSS_2048_8192_SHA256 as PS256_PARAMS,
            RSA_PSS_2048_8192_SHA384 as PS384_PARAMS, RSA_PSS_2048_8192_SHA512 as PS512_PARAMS,
        };
        use Algorithm::*;
        let result = match (self, alg) {
            // hmac::verify compares in constant time; a truncated tag does not match.
            (SignatureKey::Hmac(keys), HS256) => hmac::verify(&keys.sha256, message, signature),
            (SignatureKey::Hmac(keys), HS384) => hmac::verify(&keys.sha384, message, signature),
            (SignatureKey::Hmac(keys), HS512) => hmac::verify(&keys.sha512, message, signature),
            (SignatureKey::Rsa(key), RS256) => key.verify(&RS256_PARAMS, message, signature),
            (SignatureKey::Rsa(key), RS384) => key.verify(&RS384_PARAMS, message, signature),
            (SignatureKey::Rsa(key), RS512) => key.verify(&RS512_PARAMS, message, signature),
            (SignatureKey::Rsa(key), PS256) => key.verify(&PS256_PARAMS, message, signature),
            (SignatureKey::Rsa(key), PS384) => key.verify(&PS384_PARAMS, message, signature),
            (SignatureKey::Rsa(key), PS512) => key.verify(&PS512_PARAMS, message, signature),
            (SignatureKey::EcP256(key), ES256) => key.verify(message, signature),
            (SignatureKey::EcP384(key), ES384) => key.verify(message, signature),
            (SignatureKey::Ed25519(key), EdDSA) => {
                // The same check as ring's (cofactorless, S below the group order, R compared
                // as encoded); verify_strict would add small-order checks the key already passed.
                use ed25519_dalek::Verifier;
                return ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify(message, &signature).is_ok());
            }
            _ => return false,
        };
        result.is_ok()
    }
}
