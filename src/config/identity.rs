//! `jwt.providers` and route `auth` / `authorize` / `cors`, checked and built into ready-to-use
//! verifiers and policies (keys are parsed here, never per request).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};

use super::build::Errors;
use super::file::{did_you_mean, ParsedFile, ProviderSection, RouteSection, Spanned};
use super::units::format_duration;
use crate::auth::client_cert::{self, CertClaim, CertField};
use crate::auth::cors::{CorsPolicy, CorsSettings};
use crate::auth::jwks::{RemoteJwks, RemoteJwksSettings, REFRESH_RANGE};
use crate::auth::jwks_fetch::{JwksUrl, FETCH_TIMEOUT};
use crate::auth::jwt::{parse_algorithm, KeySource, Provider, ProviderSettings};
use crate::auth::rbac::{AuthorizeRule, RolesClaim};
use crate::auth::{JwtProvider, RouteAuth, RoutePolicy};
use crate::registry::Registries;
use crate::routing::matchers::MethodSet;

/// Clock skew allowed on `exp`, `nbf` and `iat` when a provider does not set `leeway`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Where roles are read from when a provider does not set `roles_claim`.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// Providers by name, in file order.
pub type Providers = Vec<(String, Arc<JwtProvider>)>;

/// Builds every `jwt.providers` entry of gateway.yaml; key files are relative to its folder.
/// A `jwks_url` provider gets its key set from `registries`: the same one as before when its
/// key settings did not change, so a reload keeps fetched keys. Nothing is fetched here.
pub(super) fn build_providers(
    file: &ParsedFile,
    base: &Path,
    registries: &Registries,
    e: &mut Errors,
) -> Providers {
    let Some(jwt) = &file.jwt else {
        return Vec::new();
    };
    let mut providers = Vec::new();
    for (name, section) in &jwt.providers.0 {
        if let Some(provider) = build_provider(name, section, base, registries, e) {
            providers.push((name.value.clone(), Arc::new(provider)));
        }
    }
    providers
}

fn build_provider(
    name: &Spanned<String>,
    s: &ProviderSection,
    base: &Path,
    registries: &Registries,
    e: &mut Errors,
) -> Option<JwtProvider> {
    let before = e.list.len();
    let mut algorithms = Vec::new();
    match &s.algorithms {
        None if s.damaged.has("algorithms") => {}
        None => e.at(
            name.mark,
            format!(
                "provider `{}` needs `algorithms`, e.g. [HS256] or [RS256]",
                name.value
            ),
        ),
        Some(list) if list.is_empty() => e.at(name.mark, "`algorithms` must not be empty"),
        Some(list) => {
            for alg in list {
                match parse_algorithm(&alg.value) {
                    Some(a) => algorithms.push(a),
                    None if alg.value.eq_ignore_ascii_case("none") => {
                        e.at(alg.mark, "algorithm `none` is never accepted")
                    }
                    None => e.at(
                        alg.mark,
                        format!(
                            "unknown algorithm `{}` (expected HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)",
                            alg.value
                        ),
                    ),
                }
            }
        }
    }
    let given: Vec<(&str, &Spanned<String>)> = [
        ("secret", &s.secret),
        ("public_key_file", &s.public_key_file),
        ("jwks_file", &s.jwks_file),
        ("jwks_url", &s.jwks_url),
    ]
    .into_iter()
    .filter_map(|(key, v)| v.as_ref().map(|v| (key, v)))
    .collect();
    let refresh = s.jwks_refresh.as_ref().and_then(|refresh| {
        let (min, max) = REFRESH_RANGE;
        if s.jwks_url.is_none() && s.damaged.has("jwks_url") {
            None
        } else if s.jwks_url.is_none() {
            e.at(
                refresh.mark,
                "`jwks_refresh` only applies with `jwks_url`; remove it",
            );
            None
        } else if refresh.value.0 < min || refresh.value.0 > max {
            e.at(
                refresh.mark,
                format!(
                    "`jwks_refresh` must be between {} and {}",
                    format_duration(min),
                    format_duration(max)
                ),
            );
            None
        } else {
            Some(refresh.value.0)
        }
    });
    let mut remote_url = None;
    let key_fields = ["secret", "public_key_file", "jwks_file", "jwks_url"];
    let keys = match given.as_slice() {
        [] if key_fields.iter().any(|f| s.damaged.has(f)) => None,
        [] => {
            e.at(
                name.mark,
                format!(
                    "provider `{}` needs one of `secret`, `public_key_file`, `jwks_file` or `jwks_url`",
                    name.value
                ),
            );
            None
        }
        [("jwks_url", url)] => {
            match JwksUrl::parse(&url.value) {
                Ok(url) => remote_url = Some(url),
                Err(message) => e.at(url.mark, format!("jwks_url: {message}")),
            }
            // The shared key set is taken from the registry once everything else checked out.
            None
        }
        [("secret", secret)] => {
            if secret.value.is_empty() {
                e.at(secret.mark, "`secret` must not be empty");
                None
            } else {
                Some(KeySource::Secret(secret.value.as_bytes().to_vec()))
            }
        }
        [(key, path)] => match std::fs::read(base.join(&path.value)) {
            Ok(bytes) if *key == "public_key_file" => Some(KeySource::PublicKeyPem(bytes)),
            Ok(bytes) => Some(KeySource::Jwks(bytes)),
            Err(err) => {
                e.at(
                    path.mark,
                    format!(
                        "cannot read {key} `{}`: {err}",
                        base.join(&path.value).display()
                    ),
                );
                None
            }
        },
        [_, (second, v), ..] => {
            e.at(
                v.mark,
                format!("`{second}` given together with another key source; a provider has exactly one of `secret`, `public_key_file`, `jwks_file`, `jwks_url`"),
            );
            None
        }
    };
    let mut forward_claims = Vec::new();
    for (claim, header) in s.forward_claims.iter().flat_map(|m| &m.0) {
        match HeaderName::from_bytes(header.value.as_bytes()) {
            Ok(h) if is_reserved(&h) => e.at(
                header.mark,
                format!(
                    "`{}` cannot carry a claim: the gateway manages that header",
                    header.value
                ),
            ),
            Ok(h) => forward_claims.push((claim.value.clone(), h)),
            Err(_) => e.at(
                header.mark,
                format!("invalid header name `{}`", header.value),
            ),
        }
    }
    // An empty list would switch the `aud` check off while looking like a policy.
    let audience = match &s.audience {
        Some(list) if list.value.is_empty() => {
            e.at(
                list.mark,
                "`audience: []` accepts no audience; list the accepted `aud` values, or remove `audience` to not check `aud`",
            );
            Vec::new()
        }
        Some(list) => list.value.clone(),
        None => Vec::new(),
    };
    // A provider missing part of what was written (its error is already reported) could
    // only fail again, on a consequence.
    if e.list.len() != before || !s.damaged.is_empty() {
        return None;
    }
    let roles_claim_path = s
        .roles_claim
        .clone()
        .unwrap_or_else(|| DEFAULT_ROLES_CLAIM.to_string());
    let remote = remote_url.map(|url| {
        let settings = RemoteJwksSettings {
            url,
            algorithms: algorithms.clone(),
            refresh,
        };
        registries.jwks.get_or_make(&name.value, &settings, || {
            RemoteJwks::new(
                &name.value,
                settings.clone(),
                registries.metrics.jwks(&name.value),
            )
        })
    });
    let keys = match &remote {
        Some(remote) => KeySource::JwksRemote(Arc::clone(remote.keys())),
        None => keys?,
    };
    let settings = ProviderSettings {
        name: name.value.clone(),
        algorithms,
        keys,
        issuer: s.issuer.clone(),
        audience: audience.clone(),
        leeway: s.leeway.map_or(DEFAULT_LEEWAY, |l| l.0),
    };
    match Provider::new(settings) {
        Ok(verifier) => Some(JwtProvider {
            verifier: verifier.with_cache_metrics(registries.metrics.jwt_cache(&name.value)),
            remote,
            roles_claim: RolesClaim::parse(&roles_claim_path),
            roles_claim_path,
            issuer: s.issuer.clone(),
            audience: audience.clone(),
            forward_claims,
        }),
        Err(message) => {
            e.at(name.mark, format!("provider `{}`: {message}", name.value));
            None
        }
    }
}

/// Starts the key refresher of every `jwks_url` provider (once per key set: a set kept across a
/// reload is already running) and waits, at most about one fetch timeout in all, for each first
/// fetch to finish, so a gateway or a reload does not go live with key sets it could have had.
/// A failed first fetch is logged and does not stop anything: tokens get `unknown_kid` until
/// keys arrive. Needs a Tokio runtime; `check` and `explain` never call it.
pub async fn start_jwks_refresh(providers: &Providers) {
    let remotes: Vec<&Arc<RemoteJwks>> = providers
        .iter()
        .filter_map(|(_, p)| p.remote.as_ref())
        .collect();
    for remote in &remotes {
        remote.start();
    }
    let limit = FETCH_TIMEOUT + std::time::Duration::from_secs(1);
    futures_util::future::join_all(
        remotes
            .iter()
            .map(|remote| remote.first_attempt_done(limit)),
    )
    .await;
}

/// Headers a claim must never overwrite: hop-by-hop, routing and the gateway's own.
fn is_reserved(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::AUTHORIZATION,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::COOKIE,
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("x-forwarded-host"),
        HeaderName::from_static("x-request-id"),
    ]
    .contains(name)
}

/// Every header any provider may set, stripped from all incoming requests.
pub(super) fn identity_headers(providers: &Providers) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for (_, provider) in providers {
        for (_, header) in &provider.forward_claims {
            if !names.contains(header) {
                names.push(header.clone());
            }
        }
    }
    names
}

/// A route's `auth`, `authorize` and `cors`.
/// `declared` holds every provider name written in gateway.yaml, valid or not: a route naming
/// one that failed its own checks gets no second error saying it does not exist.
/// `client_ca` says whether gateway.yaml sets `server.tls.client_ca`, without which no request
/// has a client certificate.
pub(super) fn build_route_policy(
    s: &RouteSection,
    providers: &Providers,
    declared: &[String],
    client_ca: bool,
    e: &mut Errors,
) -> RoutePolicy {
    let auth = s.auth.as_ref().and_then(|auth| {
        let name = &auth.value.jwt;
        let Some((_, provider)) = providers.iter().find(|(n, _)| *n == name.value) else {
            if declared.contains(&name.value) {
                return None;
            }
            let known: Vec<&str> = providers.iter().map(|(n, _)| n.as_str()).collect();
            let hint = did_you_mean(&name.value, &known)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            let list = if known.is_empty() {
                "no providers are defined under jwt.providers in gateway.yaml".to_string()
            } else {
                format!("defined: {}", known.join(", "))
            };
            e.at(
                name.mark,
                format!("unknown jwt provider `{}`{hint} ({list})", name.value),
            );
            return None;
        };
        Some(RouteAuth {
            provider: Arc::clone(provider),
            optional: auth.value.optional.unwrap_or(false),
            forward_token: auth.value.forward_token.unwrap_or(true),
        })
    });
    let mut authorize = Vec::new();
    if let Some(rules) = &s.authorize {
        if rules.value.is_empty() {
            e.at(rules.mark, "`authorize` needs at least one rule");
        }
        let no_auth = s.auth.is_none() && !s.damaged.has("auth");
        let mut any_cert_claims = false;
        // What a rule reads from a token, reported only when the rules also use a client
        // certificate; otherwise the whole `authorize` is in the wrong place, said once below.
        let mut token_uses = Vec::new();
        for rule in &rules.value {
            let methods = rule.methods.as_ref().and_then(|list| {
                match MethodSet::parse(list.iter().map(|m| m.value.as_str())) {
                    Ok(set) => Some(set.methods().to_vec()),
                    Err(message) => {
                        e.at(list.first().map_or(rules.mark, |m| m.mark), message);
                        None
                    }
                }
            });
            let mut claims = Vec::new();
            let mut cert_claims = Vec::new();
            for (claim, value) in rule.claims.iter().flat_map(|m| &m.0) {
                let Some(field) = claim.value.strip_prefix(client_cert::PREFIX) else {
                    if claim.value == "client_cert" {
                        any_cert_claims = true;
                        e.at(
                            claim.mark,
                            format!("`client_cert` needs a field: one of {}", CertField::NAMES),
                        );
                        continue;
                    }
                    if no_auth {
                        token_uses.push((
                            claim.mark,
                            format!(
                                "claim `{}` comes from a token: it needs `auth` on the same route",
                                claim.value
                            ),
                        ));
                    }
                    claims.push((claim.value.clone(), claim_value(&value.value)));
                    continue;
                };
                any_cert_claims = true;
                match CertField::parse(field) {
                    None => e.at(
                        claim.mark,
                        format!(
                            "unknown client certificate claim `{}` (expected one of {})",
                            claim.value,
                            CertField::NAMES
                        ),
                    ),
                    Some(_) if !client_ca => e.at(
                        claim.mark,
                        format!(
                            "claim `{}` needs `server.tls.client_ca` in gateway.yaml: without it no client presents a certificate",
                            claim.value
                        ),
                    ),
                    // The text as written: a CN of `123` or `true` is a name, not a number.
                    Some(field) => cert_claims.push(CertClaim::new(field, &value.value)),
                }
            }
            // An empty list would quietly drop the requirement (and let anonymous callers
            // through on optional-auth routes): it is a mistake, not a way to say "none".
            for (key, list) in [("roles", &rule.roles), ("scopes", &rule.scopes)] {
                if let Some(list) = list.as_ref().filter(|l| l.value.is_empty()) {
                    e.at(
                        list.mark,
                        format!(
                            "`{key}: []` requires nothing; list at least one, or remove `{key}`"
                        ),
                    );
                }
                if let Some(list) = list.as_ref().filter(|_| no_auth) {
                    token_uses.push((
                        list.mark,
                        format!("`{key}` come from a token: they need `auth` on the same route"),
                    ));
                }
            }
            authorize.push(AuthorizeRule {
                methods,
                roles: rule
                    .roles
                    .as_ref()
                    .map(|l| l.value.clone())
                    .unwrap_or_default(),
                scopes: rule
                    .scopes
                    .as_ref()
                    .map(|l| l.value.clone())
                    .unwrap_or_default(),
                claims,
                cert_claims,
            });
        }
        // Without `auth`, only `client_cert.*` claims can be asked for; a rule list that asks
        // for none of them has nothing to decide on.
        if no_auth && !any_cert_claims {
            e.at(
                rules.mark,
                "`authorize` needs `auth` on the same route: roles and scopes come from a verified token \
                 (without `auth`, rules can only use `client_cert.*` claims)",
            );
        } else {
            for (mark, message) in token_uses {
                e.at(mark, message);
            }
        }
    }
    let cors = s.cors.as_ref().and_then(|cors| {
        let c = &cors.value;
        let methods = match &c.methods {
            Some(list) => match MethodSet::parse(list.iter().map(|m| m.value.as_str())) {
                Ok(set) => set.methods().to_vec(),
                Err(message) => {
                    e.at(cors.mark, format!("cors: {message}"));
                    return None;
                }
            },
            None => vec![http::Method::GET, http::Method::HEAD, http::Method::POST],
        };
        let settings = CorsSettings {
            origins: c.origins.iter().map(|o| o.value.clone()).collect(),
            methods,
            headers: c.headers.clone().unwrap_or_default(),
            credentials: c.credentials.unwrap_or(false),
            max_age: c.max_age.map(|d| d.0),
        };
        CorsPolicy::new(settings)
            .map_err(|message| e.at(cors.mark, message))
            .ok()
    });
    RoutePolicy {
        auth,
        authorize,
        cors,
    }
}

/// A configured claim value: `true`/`false` and numbers compare as JSON booleans and numbers,
/// anything else as a string.
fn claim_value(text: &str) -> serde_json::Value {
    match text {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => serde_json::from_str::<serde_json::Number>(text)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
    }
}
