//! JWT verification for route `auth: {jwt: NAME}`.
//!
//! A [`Provider`] is built once per configured provider, at config load: secrets are wrapped,
//! PEMs parsed and JWKS documents turned into ready keys there, so verifying a request only
//! splits the token, looks a key up and checks a signature and a few claims. JWKS keys live in a
//! [`JwksKeys`] that can be swapped whole under live traffic and shared between the providers
//! successive config loads build, which is how keys fetched from a `jwks_url` (`auth::jwks`)
//! survive reloads.
//!
//! Each provider keeps a bounded cache of the tokens it verified (module `cache`), so a client
//! reusing its token pays for the signature once; `exp`, `nbf` and `iat` are still judged on
//! every request, and any change of the key set empties the cache.
//!
//! The token is parsed here rather than by `jsonwebtoken::decode`, and its signature is checked
//! with `ring` against a key prepared at load (module `signature`); jsonwebtoken only provides
//! the JWK types and signs the tokens `gatehouse token` mints. That keeps every security decision
//! in one place: `crit` is honoured (jsonwebtoken ignores it), `jku`/`x5u`/`x5c`/`jwk` header
//! fields are never even deserialised (so they can neither be followed nor break parsing),
//! duplicate JSON keys are refused (so the gateway and a backend reading the same token cannot
//! disagree), and each failure maps to one [`AuthFailure`].

mod b64;
mod cache;
mod jwks_keys;
mod keys;
mod mint;
mod signature;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::observability::metrics::JwtCacheMetrics;
use cache::TokenCache;
pub use jwks_keys::JwksKeys;
use jwks_keys::Published;
use keys::{KeyKind, Lookup, VerifyKey};

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; the bound keeps a hostile
/// client from making the gateway base64-decode and parse megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest HMAC secret accepted: 256 bits (RFC 7518 §3.2 asks for at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// Every algorithm a provider may list, with its JOSE name. `none` is deliberately absent.
const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Parses a JOSE algorithm name (`"HS256"` … `"EdDSA"`, case-sensitive as in RFC 7518).
/// `"none"` and anything unknown give `None`: an unsigned token is never acceptable.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, alg)| *alg)
}

/// The JOSE name of `alg`, for messages.
fn alg_name(alg: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("unsupported", |(name, _)| name)
}

/// Everything needed to build a [`Provider`], as read from `jwt.providers.NAME`.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The provider's name, as routes refer to it.
    pub name: String,
    /// Allow-list of algorithms; a token's `alg` must be one of these.
    pub algorithms: Vec<Algorithm>,
    /// Where the verification keys come from.
    pub keys: KeySource,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted audiences; a token's `aud` must contain one. Empty: `aud` is not checked.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// Where a provider's keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A shared HMAC secret (HS256/384/512).
    Secret(Vec<u8>),
    /// One PEM public key: RSA, EC P-256/P-384 or Ed25519 (the type is detected).
    PublicKeyPem(Vec<u8>),
    /// A JWKS document (JSON text); keys are picked by `kid`.
    Jwks(Vec<u8>),
    /// A key set filled (and refilled) from elsewhere, typically by the `jwks_url` refresher;
    /// it may still be empty. Its algorithms must be the provider's.
    JwksRemote(Arc<JwksKeys>),
}

impl fmt::Debug for KeySource {
    /// Never prints key material: settings end up in logs and `check` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::PublicKeyPem(pem) => write!(f, "PublicKeyPem({} bytes)", pem.len()),
            KeySource::Jwks(json) => write!(f, "Jwks({} bytes)", json.len()),
            KeySource::JwksRemote(keys) => write!(f, "JwksRemote({} keys)", keys.len()),
        }
    }
}

/// The provider's keys in ready-to-verify form.
enum Keys {
    /// HMAC: the same secret verifies and (for `gatehouse token`) signs.
    Secret {
        verify: VerifyKey,
        sign: EncodingKey,
    },
    /// One public key from a PEM.
    Single(VerifyKey),
    /// A JWKS, swappable as a whole so a refresher can rotate keys under live traffic.
    Jwks(Arc<JwksKeys>),
}

/// The keys one verification uses, loaded once.
enum CurrentKeys<'a> {
    /// A secret or PEM key: generation 0, never replaced.
    Fixed(&'a VerifyKey),
    /// A JWKS and the set published when the verification began.
    Jwks(&'a JwksKeys, arc_swap::Guard<Arc<Published>>),
}

/// `algorithms` without repeats, first occurrence kept.
fn dedup(algorithms: &[Algorithm]) -> Vec<Algorithm> {
    let mut out = Vec::with_capacity(algorithms.len());
    for alg in algorithms {
        if !out.contains(alg) {
            out.push(*alg);
        }
    }
    out
}

/// A configured JWT issuer: verifies tokens against its keys and claim rules.
pub struct Provider {
    name: String,
    /// Deduplicated allow-list, in configured order (the first HS entry signs minted tokens).
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    keys: Keys,
    /// Tokens verified with the current keys; never shared with another provider.
    cache: TokenCache,
    cache_metrics: JwtCacheMetrics,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Secret { .. } => "secret (redacted)".to_string(),
            Keys::Single(key) => key.kind().describe().to_string(),
            Keys::Jwks(set) => format!("jwks ({} keys)", set.len()),
        };
        let algorithms: Vec<&str> = self.algorithms.iter().map(|a| alg_name(*a)).collect();
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("algorithms", &algorithms)
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Why a request's token was not accepted. Each maps to a metrics label via [`AuthFailure::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// No bearer token where one is required (no Authorization header, or another scheme).
    #[error("missing bearer token")]
    Missing,
    /// The Authorization header or the token is not well formed.
    #[error("malformed token")]
    Malformed,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) lies in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify with the selected key.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is missing or not the configured issuer.
    #[error("issuer not accepted")]
    BadIssuer,
    /// `aud` is missing or names none of the configured audiences.
    #[error("audience not accepted")]
    BadAudience,
    /// The token's `kid` names no known key.
    #[error("unknown signing key")]
    UnknownKid,
    /// The token's `alg` is not allowed, or not usable with the selected key.
    #[error("algorithm not allowed")]
    AlgNotAllowed,
}

impl AuthFailure {
    /// Stable snake_case code, for metrics labels and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::BadIssuer => "bad_issuer",
            AuthFailure::BadAudience => "bad_audience",
            AuthFailure::UnknownKid => "unknown_kid",
            AuthFailure::AlgNotAllowed => "alg_not_allowed",
        }
    }
}

/// Verified claims (a JSON object).
#[derive(Debug, Clone)]
pub struct Claims(pub serde_json::Map<String, serde_json::Value>);

impl Claims {
    /// The claim at a dotted path (`realm_access.roles`). The whole string is tried as a literal
    /// key first, as route RBAC does, because namespaced claims (`https://example.com/roles`)
    /// contain dots themselves.
    pub fn get_path(&self, dotted: &str) -> Option<&Value> {
        if let Some(value) = self.0.get(dotted) {
            return Some(value);
        }
        if !dotted.contains('.') {
            return None;
        }
        let mut segments = dotted.split('.');
        let mut current = self.0.get(segments.next()?)?;
        for segment in segments {
            current = current.as_object()?.get(segment)?;
        }
        Some(current)
    }

    /// The `sub` claim (verification guarantees it is a string when present).
    pub fn sub(&self) -> Option<&str> {
        self.0.get("sub")?.as_str()
    }
}

/// A token's `exp`, `nbf` and `iat` (NumericDate, seconds), kept with cached claims so they are
/// judged against the clock on every request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Times {
    exp: f64,
    nbf: Option<f64>,
    iat: Option<f64>,
}

/// A rejection with its internal detail; only the [`AuthFailure`] leaves the module, the detail
/// goes to debug logs (never the token itself).
type Reject = (AuthFailure, &'static str);

impl Provider {
    /// Builds a provider, doing all key parsing now. Errors name the provider and say what to
    /// change.
    pub fn new(settings: ProviderSettings) -> Result<Provider, String> {
        let ProviderSettings {
            name,
            algorithms: listed,
            keys,
            issuer,
            audience,
            leeway,
        } = settings;
        let fail = |message: String| format!("jwt provider \"{name}\": {message}");
        if name.trim().is_empty() {
            return Err("jwt provider: the name is empty".to_string());
        }
        for alg in &listed {
            // Algorithm is non_exhaustive upstream; anything we do not know is refused.
            if parse_algorithm(alg_name(*alg)) != Some(*alg) {
                return Err(fail(format!("unsupported algorithm {alg:?}")));
            }
        }
        let algorithms = dedup(&listed);
        if algorithms.is_empty() {
            return Err(fail("algorithms is empty; list at least one".to_string()));
        }
        let hmac: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| KeyKind::Hmac.serves(*a))
            .collect();
        let asymmetric: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| !KeyKind::Hmac.serves(*a))
            .collect();
        if !hmac.is_empty() && !asymmetric.is_empty() {
            // One provider verifying both ways is the shape of algorithm-confusion bugs: keep
            // shared secrets and public keys in separate providers.
            return Err(fail(format!(
                "algorithms mix HMAC ({}) with asymmetric ({}); use two providers",
                names(&hmac),
                names(&asymmetric)
            )));
        }
        if let Some(iss) = &issuer {
            if iss.is_empty() {
                return Err(fail(
                    "issuer is empty; remove it or set a value".to_string(),
                ));
            }
        }
        if audience.iter().any(String::is_empty) {
            return Err(fail("audience has an empty entry".to_string()));
        }
        let is_hmac = !hmac.is_empty();
        let keys = match keys {
            KeySource::Secret(secret) => {
                if !is_hmac {
                    return Err(fail(format!(
                        "a secret only verifies HS256/HS384/HS512, not {}; use a public key or \
                         a JWKS",
                        names(&asymmetric)
                    )));
                }
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(fail(format!(
                        "the secret is {} bytes; HMAC secrets must be at least \
                         {MIN_SECRET_BYTES} bytes (256 bits)",
                        secret.len()
                    )));
                }
                Keys::Secret {
                    verify: keys::secret_key(&secret),
                    sign: EncodingKey::from_secret(&secret),
                }
            }
            KeySource::PublicKeyPem(pem) => {
                if is_hmac {
                    return Err(fail(asymmetric_source_with_hmac(&hmac)));
                }
                let key = keys::public_key_from_pem(&pem).map_err(&fail)?;
                let unserved: Vec<Algorithm> = algorithms
                    .iter()
                    .copied()
                    .filter(|a| !key.kind().serves(*a))
                    .collect();
                if !unserved.is_empty() {
                    return Err(fail(keys::unserved_message(key.kind(), &unserved)));
                }
                Keys::Single(key)
            }
            KeySource::Jwks(json) => {
                if is_hmac {
                    return Err(fail(asymmetric_source_with_hmac(&hmac)));
                }
                let keys = JwksKeys::empty(&algorithms);
                let (_, skipped) = keys.replace(&json).map_err(&fail)?;
                for reason in &skipped {
                    tracing::warn!(provider = %name, "jwks: {reason}");
                }
                Keys::Jwks(Arc::new(keys))
            }
            KeySource::JwksRemote(keys) => {
                if is_hmac {
                    return Err(fail(asymmetric_source_with_hmac(&hmac)));
                }
                if keys.algorithms != algorithms {
                    // The set filters keys by algorithm: one made for another list would keep
                    // keys this provider must refuse, or drop ones it needs.
                    return Err(fail(
                        "the shared JWKS was made for other algorithms".to_string(),
                    ));
                }
                Keys::Jwks(keys)
            }
        };
        Ok(Provider {
            name,
            algorithms,
            issuer,
            audience,
            leeway,
            keys,
            cache: TokenCache::new(cache::LIMITS),
            cache_metrics: JwtCacheMetrics::default(),
        })
    }

    /// Counts this provider's token-cache hits and misses into `metrics` (detached counters
    /// otherwise).
    pub fn with_cache_metrics(mut self, metrics: JwtCacheMetrics) -> Provider {
        self.cache_metrics = metrics;
        self
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies `token` (without the `Bearer ` prefix) at time `now` and returns its claims.
    ///
    /// A token this provider verified before with the same keys is taken from its cache: the
    /// signature and the time-independent claims are not checked again, `exp`, `nbf` and `iat`
    /// are, against `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<Claims>, AuthFailure> {
        self.check(token, now).map_err(|(failure, detail)| {
            tracing::debug!(
                provider = %self.name,
                reason = failure.code(),
                detail,
                "jwt rejected"
            );
            failure
        })
    }

    fn check(&self, token: &str, now: SystemTime) -> Result<Arc<Claims>, Reject> {
        use AuthFailure::*;
        if token.is_empty() {
            return Err((Malformed, "empty token"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err((Malformed, "token longer than 8 KiB"));
        }
        // Loaded once: the cache lookup, the key lookup and the insert must all see one set.
        let current = match &self.keys {
            Keys::Secret { verify: key, .. } | Keys::Single(key) => CurrentKeys::Fixed(key),
            Keys::Jwks(set) => CurrentKeys::Jwks(set, set.set.load()),
        };
        let generation = match &current {
            CurrentKeys::Fixed(_) => 0,
            CurrentKeys::Jwks(_, published) => published.generation,
        };
        if let Some((claims, times)) = self.cache.get(token, generation) {
            self.cache_metrics.hit();
            self.check_times(&times, now)?;
            return Ok(claims);
        }
        self.cache_metrics.miss();
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err((Malformed, "not three dot-separated segments"));
        };

        let header_json =
            b64::decode_url(header_b64.as_bytes()).ok_or((Malformed, "header is not base64url"))?;
        let header = parse_object(&header_json)
            .ok_or((Malformed, "header is not a JSON object with unique keys"))?;
        if header.contains_key("crit") {
            // RFC 7515 §4.1.11: a recipient must reject extensions it does not understand, and
            // this verifier understands none.
            return Err((
                Malformed,
                "crit header present (no extensions are supported)",
            ));
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name,
            _ => return Err((Malformed, "alg missing or not a string")),
        };
        let alg = parse_algorithm(alg).ok_or((AlgNotAllowed, "alg unknown or none"))?;
        if !self.algorithms.contains(&alg) {
            return Err((AlgNotAllowed, "alg not in the provider's list"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err((Malformed, "kid is not a string")),
        };
        // jku, x5u, x5c and jwk are deliberately never read: keys come only from configuration.

        if signature_b64.is_empty() {
            return Err((Malformed, "empty signature"));
        }
        if !b64::is_canonical_url(signature_b64.as_bytes()) {
            return Err((Malformed, "signature is not base64url"));
        }
        let payload_json = b64::decode_url(payload_b64.as_bytes())
            .ok_or((Malformed, "payload is not base64url"))?;

        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        let key = match &current {
            CurrentKeys::Fixed(key) => key,
            CurrentKeys::Jwks(set, published) => {
                match published.keys.lookup(kid, alg) {
                    Lookup::Found(key) => key,
                    Lookup::Unknown => {
                        // Wake the refresher: the issuer may have rotated keys.
                        set.unknown_kid.notify_one();
                        return Err((UnknownKid, "no key with this kid"));
                    }
                    Lookup::Ambiguous => {
                        return Err((UnknownKid, "no kid and the JWKS holds several keys"))
                    }
                    Lookup::WrongAlg => {
                        return Err((AlgNotAllowed, "the kid's key cannot verify this alg"))
                    }
                }
            }
        };
        // Checked for every key source: this, not the header, decides which algorithm a key is
        // used with, so a public key can never be treated as an HMAC secret.
        if !key.accepts(alg) {
            return Err((AlgNotAllowed, "the key cannot verify this alg"));
        }
        // No key's signature is longer than the buffer, so one that does not fit cannot verify.
        let mut buffer = [0u8; signature::MAX_SIGNATURE_BYTES];
        let signature = b64::decode_url_into(signature_b64.as_bytes(), &mut buffer)
            .ok_or((BadSignature, "signature longer than any key's"))?;
        #[cfg(test)]
        tests::count_signature_check();
        if !key.key.verify(alg, signing_input.as_bytes(), signature) {
            return Err((BadSignature, "signature does not verify"));
        }

        let claims = parse_object(&payload_json)
            .ok_or((Malformed, "payload is not a JSON object with unique keys"))?;
        let times = self.check_claims(&claims, now)?;
        let claims = Arc::new(Claims(claims));
        // Only now, with every check passed: a refused token must never take a slot.
        self.cache.insert(token, generation, &claims, times);
        Ok(claims)
    }

    /// Registered-claim checks, after the signature: only signed data is judged. Returns the
    /// time claims, for the cache: a cached token passes everything here again but the times.
    fn check_claims(&self, claims: &Map<String, Value>, now: SystemTime) -> Result<Times, Reject> {
        use AuthFailure::*;
        // NumericDate may be fractional (RFC 7519 §2), hence f64.
        let time = |name: &'static str| -> Result<Option<f64>, Reject> {
            match claims.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(_) => Err((Malformed, "exp, nbf or iat is not a number")),
            }
        };
        let times = Times {
            exp: time("exp")?.ok_or((Malformed, "missing exp"))?,
            nbf: time("nbf")?,
            iat: time("iat")?,
        };
        self.check_times(&times, now)?;
        if claims.get("sub").is_some_and(|sub| !sub.is_string()) {
            // Rate limits and cache keys use sub as a string; refuse rather than guess.
            return Err((Malformed, "sub is not a string"));
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err((BadIssuer, "iss missing or not the configured issuer"));
            }
        }
        if !self.audience.is_empty() {
            let accepted = |aud: &Value| {
                aud.as_str()
                    .is_some_and(|a| self.audience.iter().any(|c| c == a))
            };
            let ok = match claims.get("aud") {
                Some(Value::Array(items)) => items.iter().any(accepted),
                Some(aud) => accepted(aud),
                None => false,
            };
            if !ok {
                return Err((BadAudience, "aud missing or names no configured audience"));
            }
        }
        Ok(times)
    }

    /// The checks that depend on the time, run on every request, cached token or not.
    fn check_times(&self, times: &Times, now: SystemTime) -> Result<(), Reject> {
        use AuthFailure::*;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let leeway = self.leeway.as_secs_f64();
        // RFC 7519 §4.1.4: the token is valid only *before* exp.
        if now >= times.exp + leeway {
            return Err((Expired, "exp has passed"));
        }
        if times.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err((NotYetValid, "nbf is in the future"));
        }
        if times.iat.is_some_and(|iat| iat > now + leeway) {
            return Err((NotYetValid, "iat is in the future"));
        }
        Ok(())
    }

    /// Replaces the JWKS with `jwks_json` and returns the number of usable keys. On any error
    /// (bad JSON, no usable key) the current keys stay in place, so a bad fetch cannot lock
    /// everyone out.
    pub fn replace_jwks(&self, jwks_json: &[u8]) -> Result<usize, String> {
        let Some(keys) = self.jwks() else {
            return Err(format!(
                "jwt provider \"{}\" does not use a JWKS",
                self.name
            ));
        };
        let (count, skipped) = keys
            .replace(jwks_json)
            .map_err(|e| format!("jwt provider \"{}\": {e}", self.name))?;
        for reason in &skipped {
            tracing::warn!(provider = %self.name, "jwks: {reason}");
        }
        Ok(count)
    }

    /// Number of usable verification keys (1 for a secret or PEM key).
    pub fn key_count(&self) -> usize {
        match &self.keys {
            Keys::Secret { .. } | Keys::Single(_) => 1,
            Keys::Jwks(set) => set.len(),
        }
    }

    /// The provider's JWKS key set, for a JWKS provider: its refresher waits on
    /// [`JwksKeys::unknown_kid`]. `None` for secret and PEM providers.
    pub fn jwks(&self) -> Option<&Arc<JwksKeys>> {
        match &self.keys {
            Keys::Jwks(set) => Some(set),
            Keys::Secret { .. } | Keys::Single(_) => None,
        }
    }

    /// Whether [`Provider::mint`] works: only HMAC providers hold a signing key; the others
    /// need the operator's private key ([`Provider::mint_with_key`]).
    pub fn can_mint(&self) -> bool {
        matches!(self.keys, Keys::Secret { .. })
    }

    /// Signs `claims` with the provider's secret and its first HS algorithm (for `gatehouse token`).
    pub fn mint(&self, claims: &serde_json::Value) -> Result<String, String> {
        let Keys::Secret { sign, .. } = &self.keys else {
            return Err(format!(
                "jwt provider \"{}\" has no secret to sign with (only HS providers can mint)",
                self.name
            ));
        };
        mint::check_claims(claims)?;
        // Provider::new guarantees a secret provider lists only HS algorithms, at least one.
        let alg = self.algorithms[0];
        jsonwebtoken::encode(&Header::new(alg), claims, sign)
            .map_err(|e| format!("signing failed: {e}"))
    }
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| alg_name(*a))
        .collect::<Vec<_>>()
        .join(", ")
}

fn asymmetric_source_with_hmac(hmac: &[Algorithm]) -> String {
    format!(
        "{} verify with a shared secret; a public key or JWKS can never be used as an HMAC \
         secret (algorithm confusion): configure `secret` or list asymmetric algorithms",
        names(hmac)
    )
}

/// Parses a JSON object, refusing duplicate top-level keys: serde_json would silently keep the
/// last one, while another JWT library (a backend re-checking the token) may keep the first.
fn parse_object(json: &[u8]) -> Option<Map<String, Value>> {
    struct UniqueObject(Map<String, Value>);

    impl<'de> Deserialize<'de> for UniqueObject {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ObjectVisitor;

            impl<'de> Visitor<'de> for ObjectVisitor {
                type Value = UniqueObject;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }

                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut access: A,
                ) -> Result<UniqueObject, A::Error> {
                    let mut map = Map::new();
                    while let Some(key) = access.next_key::<String>()? {
                        let value: Value = access.next_value()?;
                        if map.insert(key, value).is_some() {
                            return Err(serde::de::Error::custom("duplicate key"));
                        }
                    }
                    Ok(UniqueObject(map))
                }
            }

            deserializer.deserialize_map(ObjectVisitor)
        }
    }

    serde_json::from_slice::<UniqueObject>(json)
        .ok()
        .map(|object| object.0)
}

/// Whether a byte may appear in a token68 (RFC 7235 §2.1) before its `=` padding: letters,
/// digits and `-._~+/`.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < table.len() {
        let c = i as u8;
        table[i] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    table
};

/// Whether `c` may appear in an auth-scheme (an RFC 9110 §5.6.2 token).
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The bearer token of a request: Ok(None) when there is no Authorization header; exactly one Authorization header allowed (two -> Malformed); scheme `Bearer` case-insensitive, one space/whitespace then the token; another well-formed scheme (`Basic ...`) -> Missing, as no bearer token was sent; longer than 8 KiB -> Malformed; non-ASCII -> Malformed.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        // Two headers invite the gateway and the backend to pick different ones.
        return Err(AuthFailure::Malformed);
    }
    if value.len() > "Bearer ".len() + MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed);
    }
    // to_str fails on anything but visible ASCII (and tab).
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let bearer = value
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("Bearer"))
        .and(value.get(6..));
    let Some(rest) = bearer else {
        // Credentials of another scheme (`Basic ...`) are well formed, just not a bearer
        // token: the client sent none. A scheme that is not a token (RFC 9110 §11.1) is junk.
        let scheme = value.split([' ', '\t']).next().unwrap_or_default();
        let is_scheme = !scheme.is_empty() && scheme.bytes().all(is_tchar);
        return Err(if is_scheme {
            AuthFailure::Missing
        } else {
            AuthFailure::Malformed
        });
    };
    let token = match rest.as_bytes().first() {
        Some(b' ' | b'\t') => &rest[1..],
        _ => return Err(AuthFailure::Malformed),
    };
    // token68 (RFC 7235 §2.1): symbols, then optional '=' padding. This also refuses a second
    // space, embedded whitespace and an empty token.
    let body = token.trim_end_matches('=');
    // Every byte is looked at, without an early exit, so the loop stays a table load and an
    // `and` per byte: tokens are hundreds of bytes and almost always valid.
    let token68 = body
        .bytes()
        .fold(true, |ok, c| ok & TOKEN68[usize::from(c)]);
    if body.is_empty() || token.len() > MAX_TOKEN_BYTES || !token68 {
        return Err(AuthFailure::Malformed);
    }
    Ok(Some(token))
}
