//! Identity at the edge: JWT verification, RBAC, CORS, and the headers made from identity.

pub mod client_cert;
pub mod cors;
pub mod jwks;
pub mod jwks_fetch;
pub mod jwt;
pub mod rbac;

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use http::Method;

use jwt::{AuthFailure, Claims};

/// A configured `jwt.providers` entry: the verifier plus what routes read from its claims.
#[derive(Debug)]
pub struct JwtProvider {
    /// Verifies tokens with keys parsed at load.
    pub verifier: jwt::Provider,
    /// For `jwks_url`: the fetched keys (shared with `verifier`) and their refresher, kept
    /// across reloads that leave the provider's key settings unchanged.
    pub remote: Option<Arc<jwks::RemoteJwks>>,
    /// Where roles are read from.
    pub roles_claim: rbac::RolesClaim,
    /// The same path as configured (dotted), for minting tokens.
    pub roles_claim_path: String,
    /// Required `iss`, when configured (minted tokens carry it).
    pub issuer: Option<String>,
    /// Accepted audiences (minted tokens carry the first).
    pub audience: Vec<String>,
    /// Claims sent upstream as headers: dotted claim path and header.
    pub forward_claims: Vec<(String, HeaderName)>,
}

/// A route's `auth:`.
#[derive(Debug)]
pub struct RouteAuth {
    /// The provider tokens must come from.
    pub provider: Arc<JwtProvider>,
    /// Anonymous requests allowed (a present token must still be valid).
    pub optional: bool,
    /// Whether the Authorization header is forwarded.
    pub forward_token: bool,
}

/// Everything a route enforces about who may call it.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    /// Token verification.
    pub auth: Option<RouteAuth>,
    /// RBAC rules (empty: none).
    pub authorize: Vec<rbac::AuthorizeRule>,
    /// Cross-origin rules.
    pub cors: Option<cors::CorsPolicy>,
}

/// Who is calling, once the route's policy has been checked.
#[derive(Debug)]
pub struct Identity {
    /// The verified claims (shared with the provider's token cache); `None` for an anonymous
    /// caller on an optional route.
    pub claims: Option<Arc<Claims>>,
}

/// Why a request was refused by a route's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDenial {
    /// No valid token (401).
    Unauthenticated(AuthFailure),
    /// A caller without what the rules require: 403, or 401 when a credential is missing
    /// ([`rbac::Denial::status`]).
    Forbidden(rbac::Denial),
}

impl RoutePolicy {
    /// Verifies the token and applies the RBAC rules, with `cert` the connection's verified
    /// client certificate: the identity to forward, or why not.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        cert: Option<&client_cert::ClientCert>,
        now: SystemTime,
    ) -> Result<Option<Identity>, PolicyDenial> {
        let Some(auth) = &self.auth else {
            // Without `auth`, rules can only ask for a client certificate (checked at load).
            if !self.authorize.is_empty() {
                let caller = rbac::Caller {
                    cert,
                    ..rbac::Caller::default()
                };
                rbac::authorize(&self.authorize, method, caller)
                    .map_err(|(denial, _)| PolicyDenial::Forbidden(denial))?;
            }
            return Ok(None);
        };
        let claims = match jwt::bearer_token(headers) {
            Ok(Some(token)) => Some(
                auth.provider
                    .verifier
                    .verify(token, now)
                    .map_err(PolicyDenial::Unauthenticated)?,
            ),
            Ok(None) if auth.optional => None,
            Ok(None) => return Err(PolicyDenial::Unauthenticated(AuthFailure::Missing)),
            Err(failure) => return Err(PolicyDenial::Unauthenticated(failure)),
        };
        if !self.authorize.is_empty() {
            let caller = rbac::Caller {
                claims: claims.as_ref().map(|c| &c.0),
                roles_claim: Some(&auth.provider.roles_claim),
                cert,
            };
            rbac::authorize(&self.authorize, method, caller)
                .map_err(|(denial, _)| PolicyDenial::Forbidden(denial))?;
        }
        Ok(Some(Identity { claims }))
    }
}

/// Removes every header any provider may set from claims, so a client can never send its own
/// (on every route: a public route must not smuggle them to a backend that trusts them).
pub fn strip_identity_headers(headers: &mut HeaderMap, identity_headers: &[HeaderName]) {
    for name in identity_headers {
        headers.remove(name);
    }
}

/// Sets the provider's `forward_claims` headers from a verified identity, and drops the
/// Authorization header when the route says so.
pub fn apply_identity(headers: &mut HeaderMap, auth: &RouteAuth, identity: &Identity) {
    if !auth.forward_token {
        headers.remove(AUTHORIZATION);
    }
    let Some(claims) = &identity.claims else {
        return;
    };
    for (claim, header) in &auth.provider.forward_claims {
        if let Some(value) = claims.get_path(claim).and_then(claim_header_value) {
            headers.insert(header.clone(), value);
        }
    }
}

/// A claim as a header value: strings as they are, arrays joined by commas, numbers and booleans
/// as JSON; anything with characters a header cannot carry is left out.
fn claim_header_value(value: &serde_json::Value) -> Option<HeaderValue> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    // Visible ASCII only: control characters or newlines must never reach the upstream.
    if text.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}
