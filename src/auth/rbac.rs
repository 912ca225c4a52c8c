//! Route `authorize:` rules: role, scope and claim checks against verified JWT claims, and
//! `client_cert.*` checks against the connection's verified client certificate.
//!
//! Rules are plain data built once at config load; [`authorize`] only walks them and borrows
//! from the claims map, so the per-request decision never allocates.

use http::{Method, StatusCode};
use serde_json::{Map, Number, Value};

use super::client_cert::{CertClaim, ClientCert};

/// One entry of a route's `authorize:` list.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizeRule {
    /// Methods this rule decides for; `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// The caller needs at least one of these roles; empty means no role requirement.
    pub roles: Vec<String>,
    /// The caller needs every one of these scopes (from `scope` or `scp`).
    pub scopes: Vec<String>,
    /// Claims that must equal these values exactly; keys may be dotted paths.
    pub claims: Vec<(String, Value)>,
    /// `client_cert.*` claims: read from the client certificate only, never from the token, so
    /// a token cannot stand in for a certificate.
    pub cert_claims: Vec<CertClaim>,
}

impl AuthorizeRule {
    /// Whether this rule is the one that decides for `method`.
    pub fn matches_method(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => methods.contains(method),
        }
    }

    /// Whether the rule asks anything of the caller; one that asks nothing admits anonymous
    /// requests on optional-auth routes.
    pub fn has_requirements(&self) -> bool {
        self.needs_token() || !self.cert_claims.is_empty()
    }

    /// Whether the rule reads the verified token (roles, scopes or token claims).
    pub fn needs_token(&self) -> bool {
        !self.roles.is_empty() || !self.scopes.is_empty() || !self.claims.is_empty()
    }

    /// Config-load sanity check, so that a rule which could never match (or would match
    /// surprisingly) is reported to the operator instead of silently denying at runtime.
    pub fn validate(&self) -> Result<(), String> {
        if self.methods.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "authorize: methods must not be empty (omit it to match every method)".into(),
            );
        }
        // An empty name would match an empty array element, which no sane token carries on
        // purpose; it is almost certainly a YAML slip.
        if self.roles.iter().any(String::is_empty) {
            return Err("authorize: roles must not contain an empty name".into());
        }
        if self.scopes.iter().any(String::is_empty) {
            return Err("authorize: scopes must not contain an empty name".into());
        }
        for (key, value) in &self.claims {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                return Err(format!("authorize: claim path {key:?} is not valid"));
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                return Err(format!(
                    "authorize: claim {key:?} must be a string, number or bool"
                ));
            }
        }
        Ok(())
    }
}

/// Where the provider puts roles in its tokens, e.g. `roles` or `realm_access.roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesClaim {
    path: Box<str>,
    segments: Box<[Box<str>]>,
}

impl RolesClaim {
    /// Splits the dotted path once, at config load, so lookups only walk the segments.
    pub fn parse(dotted: &str) -> RolesClaim {
        RolesClaim {
            path: dotted.into(),
            segments: dotted.split('.').map(Box::from).collect(),
        }
    }

    /// The path as configured, for diagnostics.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        lookup(
            claims,
            &self.path,
            self.segments.len() > 1,
            self.segments.iter().map(|s| &**s),
        )
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No rule lists the request's method.
    NoRule,
    /// The deciding rule has requirements and the request carries no token.
    Unauthenticated,
    /// None of the rule's roles is held.
    MissingRole,
    /// At least one of the rule's scopes is not granted.
    MissingScope,
    /// A required claim is absent or has another value.
    ClaimMismatch,
    /// The deciding rule has `client_cert.*` claims and the connection has no verified client
    /// certificate.
    NoClientCertificate,
}

impl Denial {
    /// Stable machine-readable code for error bodies, logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NoRule => "no_matching_rule",
            Denial::Unauthenticated => "unauthenticated",
            Denial::MissingRole => "missing_role",
            Denial::MissingScope => "missing_scope",
            Denial::ClaimMismatch => "claim_mismatch",
            Denial::NoClientCertificate => "client_certificate_required",
        }
    }

    /// Client-facing text; it names only the class of requirement, because echoing role,
    /// scope or claim values would tell a caller exactly what to forge or request.
    pub fn message(&self) -> &'static str {
        match self {
            Denial::NoRule => "no authorization rule allows this method",
            Denial::Unauthenticated => "authentication is required",
            Denial::MissingRole => "a required role is missing",
            Denial::MissingScope => "a required scope is missing",
            Denial::ClaimMismatch => "a required claim does not match",
            Denial::NoClientCertificate => {
                "a client certificate is required: connect over HTTPS presenting one"
            }
        }
    }

    /// 401 only when a credential (a token, a client certificate) would help; every other
    /// denial is final for this identity.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Unauthenticated | Denial::NoClientCertificate => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Who is asking: the verified token's claims and the connection's verified client
/// certificate, either of which may be absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The token's claims; `None` for an anonymous request (optional auth, or no `auth`).
    pub claims: Option<&'a Map<String, Value>>,
    /// Where the token's provider puts roles; `None` on a route without `auth`.
    pub roles_claim: Option<&'a RolesClaim>,
    /// The client certificate; `None` on plain HTTP or TLS without one.
    pub cert: Option<&'a ClientCert>,
}

/// Decides: Ok(index of the deciding rule) or Err((Denial, Option<rule index>)). A matching rule
/// that reads the token denies an anonymous caller with Unauthenticated, one with
/// `client_cert.*` claims denies a caller without a certificate with NoClientCertificate; a
/// matching rule with no requirements allows.
pub fn authorize(
    rules: &[AuthorizeRule],
    method: &Method,
    caller: Caller<'_>,
) -> Result<usize, (Denial, Option<usize>)> {
    let Some(index) = rules.iter().position(|r| r.matches_method(method)) else {
        return Err((Denial::NoRule, None));
    };
    let rule = &rules[index];
    let deny = |denial| Err((denial, Some(index)));

    if !rule.cert_claims.is_empty() {
        let Some(cert) = caller.cert else {
            return deny(Denial::NoClientCertificate);
        };
        if !rule.cert_claims.iter().all(|c| c.matches(cert)) {
            return deny(Denial::ClaimMismatch);
        }
    }
    if !rule.needs_token() {
        return Ok(index);
    }
    let (Some(claims), Some(roles_claim)) = (caller.claims, caller.roles_claim) else {
        return deny(Denial::Unauthenticated);
    };

    if !rule.roles.is_empty() {
        let held = roles_claim.lookup(claims);
        if !rule
            .roles
            .iter()
            .any(|role| held.is_some_and(|v| has_token(v, role)))
        {
            return deny(Denial::MissingRole);
        }
    }

    if !rule.scopes.is_empty() {
        // Both are consulted because providers disagree: OAuth servers use `scope`
        // (space-separated), Azure AD and Okta use `scp` (array or string).
        let scope = claims.get("scope");
        let scp = claims.get("scp");
        let granted = |s: &str| {
            scope.is_some_and(|v| has_token(v, s)) || scp.is_some_and(|v| has_token(v, s))
        };
        if !rule.scopes.iter().all(|s| granted(s)) {
            return deny(Denial::MissingScope);
        }
    }

    for (key, expected) in &rule.claims {
        let actual = lookup(claims, key, key.contains('.'), key.split('.'));
        if !actual.is_some_and(|a| claim_eq(expected, a)) {
            return deny(Denial::ClaimMismatch);
        }
    }

    Ok(index)
}

/// Resolves a dotted claim path. The whole path is tried as a literal key first because
/// namespaced claims (`https://example.com/roles`, common with Auth0) contain dots themselves.
fn lookup<'a, 'p>(
    claims: &'a Map<String, Value>,
    full: &str,
    dotted: bool,
    mut segments: impl Iterator<Item = &'p str>,
) -> Option<&'a Value> {
    if dotted {
        if let Some(v) = claims.get(full) {
            return Some(v);
        }
    }
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// Roles and scopes arrive either as one (space-separated) string or as an array of strings;
/// array elements are compared whole, since an array already delimits its entries.
fn has_token(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s.split_ascii_whitespace().any(|t| t == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Typed exact match: no coercion between strings, numbers and bools, because `"1"` vs `1`
/// or `"true"` vs `true` usually marks a different issuer or claim schema, not a match.
/// Unsupported configured types (null, arrays, objects) never match, failing closed.
fn claim_eq(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => e == a,
        (Value::Bool(e), Value::Bool(a)) => e == a,
        (Value::Number(e), Value::Number(a)) => number_eq(e, a),
        _ => false,
    }
}

/// `serde_json::Number`'s own `==` treats `1` and `1.0` as different; compare by value
/// instead, exactly for integers so that large ids do not collide through f64 rounding.
fn number_eq(a: &Number, b: &Number) -> bool {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(i), None) => b.as_f64().is_some_and(|f| float_is_int(f, i)),
        (None, Some(i)) => a.as_f64().is_some_and(|f| float_is_int(f, i)),
        (None, None) => a.as_f64().is_some_and(|x| b.as_f64() == Some(x)),
    }
}

fn float_is_int(f: f64, i: i128) -> bool {
    // `as` saturates, but every i64/u64 is far inside i128's range, so a saturated value can
    // never equal `i`; the fract check rejects 1.5 truncating to 1.
    f.fract() == 0.0 && f as i128 == i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Vec<AuthorizeRule> {
        vec![
            AuthorizeRule {
                methods: Some(vec![Method::GET, Method::HEAD]),
                roles: vec!["reader".into(), "admin".into()],
                scopes: vec![],
                claims: vec![],
                cert_claims: vec![],
            },
            AuthorizeRule {
                methods: Some(vec![
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ]),
                roles: vec!["admin".into()],
                scopes: vec!["orders:write".into()],
                claims: vec![
                    ("tenant".into(), json!("acme")),
                    ("org.level".into(), json!(3)),
                    ("email_verified".into(), json!(true)),
                ],
                cert_claims: vec![],
            },
        ]
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn caller<'a>(claims: Option<&'a Map<String, Value>>, rc: &'a RolesClaim) -> Caller<'a> {
        Caller {
            claims,
            roles_claim: Some(rc),
            cert: None,
        }
    }

    type Decision = Result<usize, (Denial, Option<usize>)>;

    fn decide(method: Method, claims: Value) -> Decision {
        authorize(
            &rules(),
            &method,
            caller(Some(&map(claims)), &RolesClaim::parse("roles")),
        )
    }

    fn full_admin() -> Value {
        json!({
            "roles": ["admin"],
            "scope": "openid orders:write",
            "tenant": "acme",
            "org": {"level": 3},
            "email_verified": true,
        })
    }

    #[test]
    fn decision_table() {
        let reader = json!({"roles": ["reader"]});
        let admin_no_scope = json!({
            "roles": ["admin"], "scope": "openid", "tenant": "acme",
            "org": {"level": 3}, "email_verified": true,
        });
        // Full admin claims with some keys replaced (Some) or removed (None).
        let edit = |edits: &[(&str, Option<Value>)]| {
            let mut m = map(full_admin());
            for (k, v) in edits {
                match v {
                    Some(v) => m.insert((*k).into(), v.clone()),
                    None => m.remove(*k),
                };
            }
            Value::Object(m)
        };
        let with = |k: &str, v: Value| edit(&[(k, Some(v))]);
        let without = |k: &str| edit(&[(k, None)]);

        let table: Vec<(Method, Value, Decision)> = vec![
            (Method::GET, reader.clone(), Ok(0)),
            (Method::HEAD, reader.clone(), Ok(0)),
            (Method::GET, full_admin(), Ok(0)),
            (
                Method::GET,
                json!({"roles": ["writer"]}),
                Err((Denial::MissingRole, Some(0))),
            ),
            (Method::GET, json!({}), Err((Denial::MissingRole, Some(0)))),
            (
                Method::POST,
                reader.clone(),
                Err((Denial::MissingRole, Some(1))),
            ),
            (
                Method::POST,
                admin_no_scope,
                Err((Denial::MissingScope, Some(1))),
            ),
            (Method::POST, full_admin(), Ok(1)),
            (Method::DELETE, full_admin(), Ok(1)),
            // scope via `scp` array instead of `scope` string
            (
                Method::PUT,
                edit(&[("scope", None), ("scp", Some(json!(["orders:write"])))]),
                Ok(1),
            ),
            // `scp` as an array does not split its elements
            (
                Method::PUT,
                edit(&[
                    ("scope", Some(json!("openid"))),
                    ("scp", Some(json!(["orders:read orders:write"]))),
                ]),
                Err((Denial::MissingScope, Some(1))),
            ),
            // claims: string
            (
                Method::POST,
                with("tenant", json!("other")),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                with("tenant", json!(["acme"])),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                without("tenant"),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            // claims: number (dotted path), 3 == 3.0, no string coercion
            (Method::POST, with("org", json!({"level": 3.0})), Ok(1)),
            (
                Method::POST,
                with("org", json!({"level": 4})),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                with("org", json!({"level": "3"})),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                with("org", json!({"level": 3.5})),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                with("org", json!(3)),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            // claims: bool
            (
                Method::POST,
                with("email_verified", json!(false)),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            (
                Method::POST,
                with("email_verified", json!("true")),
                Err((Denial::ClaimMismatch, Some(1))),
            ),
            // no rule for the method
            (Method::OPTIONS, full_admin(), Err((Denial::NoRule, None))),
        ];
        for (i, (method, claims, want)) in table.into_iter().enumerate() {
            assert_eq!(decide(method.clone(), claims), want, "row {i}: {method}");
        }
    }

    #[test]
    fn roles_checked_before_scopes_before_claims() {
        let c = json!({"roles": "reader", "tenant": "other"});
        assert_eq!(decide(Method::POST, c), Err((Denial::MissingRole, Some(1))));
        let c = json!({"roles": "admin", "tenant": "other"});
        assert_eq!(
            decide(Method::POST, c),
            Err((Denial::MissingScope, Some(1)))
        );
    }

    #[test]
    fn dotted_roles_claim() {
        let rc = RolesClaim::parse("realm_access.roles");
        let claims = map(json!({"realm_access": {"roles": ["offline", "reader"]}}));
        assert_eq!(
            authorize(&rules(), &Method::GET, caller(Some(&claims), &rc)),
            Ok(0)
        );
        let claims = map(json!({"roles": ["reader"]}));
        assert_eq!(
            authorize(&rules(), &Method::GET, caller(Some(&claims), &rc)),
            Err((Denial::MissingRole, Some(0)))
        );
        // namespaced claim names that contain dots are found literally
        let rc = RolesClaim::parse("https://example.com/roles");
        let claims = map(json!({"https://example.com/roles": ["reader"]}));
        assert_eq!(
            authorize(&rules(), &Method::GET, caller(Some(&claims), &rc)),
            Ok(0)
        );
    }

    #[test]
    fn roles_as_string() {
        let rc = RolesClaim::parse("roles");
        for roles in [json!("reader"), json!("offline  reader"), json!("admin")] {
            let claims = map(json!({ "roles": roles }));
            assert_eq!(
                authorize(&rules(), &Method::GET, caller(Some(&claims), &rc)),
                Ok(0),
                "{roles}"
            );
        }
        // no substring matches
        let claims = map(json!({"roles": "readers"}));
        assert_eq!(
            authorize(&rules(), &Method::GET, caller(Some(&claims), &rc)),
            Err((Denial::MissingRole, Some(0)))
        );
    }

    #[test]
    fn scope_as_string_in_scp() {
        let mut c = map(full_admin());
        c.remove("scope");
        c.insert("scp".into(), json!("orders:write profile"));
        assert_eq!(decide(Method::PATCH, Value::Object(c)), Ok(1));
    }

    #[test]
    fn anonymous() {
        let rc = RolesClaim::parse("roles");
        assert_eq!(
            authorize(&rules(), &Method::GET, caller(None, &rc)),
            Err((Denial::Unauthenticated, Some(0)))
        );
        assert_eq!(
            authorize(&rules(), &Method::TRACE, caller(None, &rc)),
            Err((Denial::NoRule, None))
        );

        let mut open = rules();
        open.insert(
            0,
            AuthorizeRule {
                methods: Some(vec![Method::GET]),
                roles: vec![],
                scopes: vec![],
                claims: vec![],
                cert_claims: vec![],
            },
        );
        assert_eq!(authorize(&open, &Method::GET, caller(None, &rc)), Ok(0));
        // the first matching rule decides: HEAD falls through to the role rule
        assert_eq!(
            authorize(&open, &Method::HEAD, caller(None, &rc)),
            Err((Denial::Unauthenticated, Some(1)))
        );

        // a rule without `methods` matches everything
        let catch_all = vec![AuthorizeRule {
            methods: None,
            roles: vec![],
            scopes: vec![],
            claims: vec![],
            cert_claims: vec![],
        }];
        let m = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(authorize(&catch_all, &m, caller(None, &rc)), Ok(0));
        assert_eq!(
            authorize(&[], &Method::GET, caller(None, &rc)),
            Err((Denial::NoRule, None))
        );
    }

    #[test]
    fn client_cert_claims_come_from_the_certificate_only() {
        use crate::auth::client_cert::{CertField, ClientCert};
        let rule = vec![AuthorizeRule {
            methods: None,
            roles: vec![],
            scopes: vec![],
            claims: vec![],
            cert_claims: vec![CertClaim::new(CertField::Cn, "billing")],
        }];
        let billing = ClientCert {
            cn: Some("billing".into()),
            ..ClientCert::default()
        };
        let other = ClientCert {
            cn: Some("orders".into()),
            ..ClientCert::default()
        };
        let with = |claims, cert| Caller {
            claims,
            roles_claim: None,
            cert,
        };
        assert_eq!(
            authorize(&rule, &Method::GET, with(None, Some(&billing))),
            Ok(0)
        );
        assert_eq!(
            authorize(&rule, &Method::GET, with(None, Some(&other))),
            Err((Denial::ClaimMismatch, Some(0)))
        );
        // A token saying the same thing is no certificate.
        let forged = map(json!({"client_cert": {"cn": "billing"}, "client_cert.cn": "billing"}));
        assert_eq!(
            authorize(&rule, &Method::GET, with(Some(&forged), None)),
            Err((Denial::NoClientCertificate, Some(0)))
        );
        assert_eq!(
            Denial::NoClientCertificate.status(),
            StatusCode::UNAUTHORIZED
        );

        // Both at once: the certificate and the token's roles must each hold.
        let both = vec![AuthorizeRule {
            roles: vec!["admin".into()],
            ..rule[0].clone()
        }];
        let rc = RolesClaim::parse("roles");
        let admin = map(json!({"roles": ["admin"]}));
        let full = Caller {
            claims: Some(&admin),
            roles_claim: Some(&rc),
            cert: Some(&billing),
        };
        assert_eq!(authorize(&both, &Method::GET, full), Ok(0));
        let no_token = Caller {
            claims: None,
            ..full
        };
        assert_eq!(
            authorize(&both, &Method::GET, no_token),
            Err((Denial::Unauthenticated, Some(0)))
        );
        let no_cert = Caller { cert: None, ..full };
        assert_eq!(
            authorize(&both, &Method::GET, no_cert),
            Err((Denial::NoClientCertificate, Some(0)))
        );
    }

    #[test]
    fn large_integers_compare_exactly() {
        let rule = vec![AuthorizeRule {
            methods: None,
            roles: vec![],
            scopes: vec![],
            claims: vec![("uid".into(), json!(9_007_199_254_740_993u64))],
            cert_claims: vec![],
        }];
        let rc = RolesClaim::parse("roles");
        let ok = map(json!({"uid": 9_007_199_254_740_993u64}));
        let near = map(json!({"uid": 9_007_199_254_740_992u64}));
        assert_eq!(
            authorize(&rule, &Method::GET, caller(Some(&ok), &rc)),
            Ok(0)
        );
        assert_eq!(
            authorize(&rule, &Method::GET, caller(Some(&near), &rc)),
            Err((Denial::ClaimMismatch, Some(0)))
        );
    }

    #[test]
    fn denial_texts_carry_no_claim_values() {
        let all = [
            Denial::NoClientCertificate,
            Denial::NoRule,
            Denial::Unauthenticated,
            Denial::MissingRole,
            Denial::MissingScope,
            Denial::ClaimMismatch,
        ];
        let secrets = [
            "reader", "admin", "orders", "write", "acme", "tenant", "level", "email", "true", "3",
        ];
        for d in all {
            for s in secrets {
                assert!(!d.message().contains(s), "{d:?} message mentions {s}");
            }
            assert!(!d.code().is_empty());
        }
        assert_eq!(Denial::NoRule.code(), "no_matching_rule");
        assert_eq!(Denial::ClaimMismatch.code(), "claim_mismatch");
        assert_eq!(Denial::Unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Denial::MissingRole.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn validate_rejects_unusable_rules() {
        let base = AuthorizeRule {
            methods: None,
            roles: vec![],
            scopes: vec![],
            claims: vec![],
            cert_claims: vec![],
        };
        assert!(base.validate().is_ok());
        assert!(rules().iter().all(|r| r.validate().is_ok()));
        let bad = [
            AuthorizeRule {
                methods: Some(vec![]),
                ..base.clone()
            },
            AuthorizeRule {
                roles: vec!["".into()],
                ..base.clone()
            },
            AuthorizeRule {
                claims: vec![("a..b".into(), json!("x"))],
                ..base.clone()
            },
            AuthorizeRule {
                claims: vec![("a".into(), json!(null))],
                ..base.clone()
            },
            AuthorizeRule {
                claims: vec![("a".into(), json!(["x"]))],
                ..base.clone()
            },
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?}");
        }
    }
}
