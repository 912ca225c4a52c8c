//! `gatehouse explain`: what the gateway would do with a request, without sending it.

use std::fmt::Write;

use http::{Method, Request};

use crate::auth::cors::CorsPolicy;
use crate::auth::{jwt, rbac, RoutePolicy};
use crate::config::Snapshot;
use crate::proxy::pipeline::{head_size, route_request, RoutingInput};
use crate::routing::matchers::prefix_matches;
use crate::routing::route::{PathRewrite, RouteAction};
use crate::routing::router::Unmet;

/// Describes, line by line, how `method url` with `headers` would be handled.
pub fn explain(
    snapshot: &Snapshot,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<String, String> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method `{method}`"))?;
    let mut builder = Request::builder().method(method.clone()).uri(url);
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("invalid header `{header}`: expected 'Name: value'"))?;
        builder = builder.header(name.trim(), value.trim());
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|e| format!("invalid request: {e}"))?
        .into_parts();

    let mut out = String::new();
    let _ = writeln!(out, "request:    {method} {url}");
    if head_size(&parts) > snapshot.server.max_header_bytes {
        let _ = writeln!(
            out,
            "result:     431 headers_too_large (limit {} bytes)",
            snapshot.server.max_header_bytes
        );
        return Ok(out);
    }
    let routed = match route_request(snapshot, &parts) {
        Ok(routed) => routed,
        Err(error) => {
            let (status, code) = error.status_and_code();
            let _ = writeln!(out, "result:     {} {code}: {error}", status.as_u16());
            if let crate::error::GatewayError::MethodNotAllowed { allow } = &error {
                let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
                let _ = writeln!(out, "allow:      {}", list.join(", "));
            }
            if let crate::error::GatewayError::NoRoute = &error {
                explain_near_misses(snapshot, &parts, &mut out);
            }
            return Ok(out);
        }
    };
    let route = routed.route;
    let _ = writeln!(
        out,
        "host:       {}",
        routed.host.as_deref().unwrap_or("(none)")
    );
    if routed.path != parts.uri.path() {
        let _ = writeln!(
            out,
            "path:       {} (normalised from {})",
            routed.path,
            parts.uri.path()
        );
    } else {
        let _ = writeln!(out, "path:       {}", routed.path);
    }
    let _ = writeln!(out, "route:      {} ({})", route.name, route.defined_at);
    let mut why = vec![route.host.describe(), route.path.describe()];
    if let Some(methods) = &route.methods {
        let list: Vec<&str> = methods.methods().iter().map(Method::as_str).collect();
        why.push(format!("methods {}", list.join(", ")));
    }
    for condition in &route.headers {
        why.push(format!("header {} = {:?}", condition.name, condition.value));
    }
    let _ = writeln!(out, "matched on: {}", why.join("; "));
    let mut sub = None;
    if let Some(status) = explain_policy(&route.policy, &parts, &mut out, &mut sub) {
        let _ = writeln!(out, "result:     {status}");
        return Ok(out);
    }
    explain_rate_limits(
        snapshot,
        &route.rate_limits,
        &parts,
        sub.as_deref(),
        &mut out,
    );
    if let Some(policy) = &route.cache {
        let host = routed.host.as_deref().unwrap_or("");
        explain_cache(snapshot, policy, host, &routed.path, &parts, &mut out);
    }
    if route.compress.is_some() {
        let this = match crate::compress::negotiate(&parts.headers) {
            Some(coding) => format!("this request accepts {}", coding.token()),
            None => "this request gets identity (no acceptable coding)".to_string(),
        };
        let _ = writeln!(
            out,
            "compress:   gzip or br for compressible answers the upstream did not encode; {this}"
        );
    }
    match &route.action {
        RouteAction::Respond(fixed) => {
            let _ = writeln!(
                out,
                "result:     {} answered by the gateway ({} byte body)",
                fixed.status.as_u16(),
                fixed.body.len()
            );
        }
        RouteAction::Proxy(action) => {
            let upstream = &action.upstream;
            let upstream_path = action.rewrite.apply(&routed.path);
            let query = parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            // A fresh balancer of the same weights: shows the target the first request gets
            // without moving the live one.
            let first = crate::upstream::balance::SmoothWeighted::new(
                upstream.targets.iter().map(|t| t.weight).collect(),
            )
            .pick(|_| true)
            .map(|i| &upstream.targets[i]);
            let _ = writeln!(
                out,
                "upstream:   {} ({} over {} target(s))",
                upstream.name,
                upstream.balancer.label(),
                upstream.targets.len()
            );
            for target in &upstream.targets {
                let _ = writeln!(out, "  target:   {} weight {}", target.url, target.weight);
            }
            if let PathRewrite::Prefix { prefix, to } = &action.rewrite {
                // A prefix longer than the route's own applies to some of its paths only.
                if prefix_matches(prefix, &routed.path) {
                    let _ = writeln!(
                        out,
                        "rewrite:    prefix {prefix} -> {}",
                        if to.is_empty() { "(stripped)" } else { to }
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "rewrite:    none (the path does not start with {prefix})"
                    );
                }
            }
            if let Some(target) = first {
                // Round robin's first pick is known; the others depend on chance and load.
                let which = match upstream.balancer.label() {
                    "round_robin" => String::new(),
                    other => format!(" (or another target: {other} decides per request)"),
                };
                let _ = writeln!(
                    out,
                    "would call: {method} {}://{}{upstream_path}{query}{which}",
                    target.scheme, target.authority
                );
            }
            let _ = writeln!(
                out,
                "host sent:  {}",
                if action.preserve_host {
                    "the client's Host"
                } else {
                    "the target's host:port"
                }
            );
            let _ = writeln!(
                out,
                "timeouts:   connect {}, response headers {}",
                crate::config::units::format_duration(upstream.connect_timeout),
                crate::config::units::format_duration(action.timeout)
            );
            let _ = writeln!(out, "body limit: {} bytes", route.max_request_body);
            let names = |rules: &crate::header_rules::HeaderRules| {
                let mut parts = Vec::new();
                if !rules.set.is_empty() {
                    let set: Vec<&str> = rules.set.iter().map(|(n, _)| n.as_str()).collect();
                    parts.push(format!("set {}", set.join(", ")));
                }
                if !rules.remove.is_empty() {
                    let removed: Vec<&str> = rules.remove.iter().map(|n| n.as_str()).collect();
                    parts.push(format!("remove {}", removed.join(", ")));
                }
                parts.join("; ")
            };
            let request_rules = names(&route.request_headers);
            if !request_rules.is_empty() {
                let _ = writeln!(out, "request headers:  {request_rules}");
            }
            let response_rules = names(&route.response_headers);
            if !response_rules.is_empty() {
                let _ = writeln!(out, "response headers: {response_rules}");
            }
            let _ = writeln!(out, "result:     forwarded upstream");
        }
    }
    Ok(out)
}

/// After a 404, one line per route that nearly matched, closest first, naming each condition
/// the request did not meet and what the request had instead.
fn explain_near_misses(snapshot: &Snapshot, parts: &http::request::Parts, out: &mut String) {
    // route_request already normalised this path without error to get a 404.
    let Ok(input) = RoutingInput::of(parts) else {
        return;
    };
    let (path, host) = (&input.path, &input.host);
    let misses = snapshot.router.near_misses(input.facts(parts));
    if misses.is_empty() {
        let _ = writeln!(
            out,
            "near miss:  none (no route matches this path, even nearly)"
        );
    }
    for miss in misses {
        let route = miss.route;
        let needs: Vec<String> = miss
            .unmet
            .iter()
            .map(|unmet| match unmet {
                Unmet::Host => format!(
                    "{} (request host: {})",
                    route.host.describe(),
                    host.as_deref().unwrap_or("none")
                ),
                Unmet::Path => format!("{} (request path: {path})", route.path.describe()),
                Unmet::Methods => {
                    let allowed: Vec<&str> = route
                        .methods
                        .as_ref()
                        .map(|m| m.methods().iter().map(Method::as_str).collect())
                        .unwrap_or_default();
                    format!(
                        "methods {} (request method: {})",
                        allowed.join(", "),
                        parts.method
                    )
                }
                Unmet::Header(i) => {
                    let condition = &route.headers[*i];
                    let sent: Vec<String> = parts
                        .headers
                        .get_all(&condition.name)
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect();
                    format!(
                        "header {} = {:?} (request has {})",
                        condition.name,
                        condition.value,
                        if sent.is_empty() {
                            "none".to_string()
                        } else {
                            sent.join(", ")
                        }
                    )
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "near miss:  {} ({}) needs {}",
            route.name,
            route.defined_at,
            needs.join("; ")
        );
    }
}

/// Adds a line per rate limit of the route: what it allows and whom this request is counted
/// as. Header values are not printed (they are often API keys); nor is any budget, which lives
/// in the running gateways' stores.
fn explain_rate_limits(
    snapshot: &Snapshot,
    limits: &[crate::ratelimit::RateLimit],
    parts: &http::request::Parts,
    sub: Option<&str>,
    out: &mut String,
) {
    use crate::ratelimit::{KeyKind, OnStoreError};
    if limits.is_empty() {
        return;
    }
    let store = match snapshot.limiter.redis() {
        None => "memory (this instance)".to_string(),
        Some(_) => {
            let fallback = match snapshot.limiter.on_store_error() {
                OnStoreError::Local => "local",
                OnStoreError::Allow => "allow",
                OnStoreError::Deny => "deny",
            };
            format!("redis (shared by every instance; on_store_error {fallback})")
        }
    };
    let _ = writeln!(
        out,
        "rate limits: {} limit(s), store {store}; all apply, the strictest decides",
        limits.len()
    );
    let address = "the client address (X-Forwarded-For believed only from trusted_proxies)";
    for limit in limits {
        let key = match &limit.by {
            KeyKind::Ip => address.to_string(),
            KeyKind::Route => "one bucket for the whole route".to_string(),
            KeyKind::User => match sub {
                Some(sub) => format!("sub {sub}"),
                None => format!("anonymous: {address}"),
            },
            KeyKind::Header(name) => match parts.headers.get(name) {
                Some(value) if !value.is_empty() => {
                    format!("the request's {name} value (not shown)")
                }
                _ => format!("no {name} header: {address}"),
            },
        };
        let _ = writeln!(
            out,
            "  limit:    {} -> key: {key}",
            crate::config::describe_limit(limit)
        );
    }
}

/// Adds the cache lines: the store, the key this request looks up, and what tells its
/// variants apart.
fn explain_cache(
    snapshot: &Snapshot,
    policy: &crate::cache::settings::RouteCache,
    host: &str,
    path: &str,
    parts: &http::request::Parts,
    out: &mut String,
) {
    use crate::cache::settings::CacheStoreKind;
    let settings = &snapshot.cache;
    let store = match settings.store {
        CacheStoreKind::Memory => "memory (this instance)",
        CacheStoreKind::Redis => "redis (shared by every instance)",
    };
    let stale = if policy.stale_if_error.is_zero() {
        String::new()
    } else {
        format!(
            "; stale_if_error {}",
            crate::config::units::format_duration(policy.stale_if_error)
        )
    };
    let _ = writeln!(
        out,
        "cache:      store {store}; ttl {} when the response states no freshness{stale}",
        crate::config::units::format_duration(policy.ttl)
    );
    let key = crate::cache::key::url_key(&settings.key_prefix, host, path, parts.uri.query());
    let method = &parts.method;
    if !(method == Method::GET || method == Method::HEAD) {
        let what = if method.is_safe() || method == Method::OPTIONS {
            "not cached".to_string()
        } else {
            format!("not cached; a 2xx or 3xx answer invalidates {key}")
        };
        let _ = writeln!(out, "  {method}:    {what}");
        return;
    }
    let _ = writeln!(out, "  key:      {key}");
    let mut by: Vec<String> = policy.vary.iter().map(|n| n.to_string()).collect();
    if policy.per_user {
        by.push("the caller's sub (per_user)".into());
    }
    by.push("the request headers the response's own Vary names".into());
    let _ = writeln!(out, "  variants: by {}", by.join(", "));
}

/// Adds the CORS, auth and authorize lines; returns the answer when the policy ends the request.
/// The token itself is never printed.
fn explain_policy(
    policy: &RoutePolicy,
    parts: &http::request::Parts,
    out: &mut String,
    sub: &mut Option<String>,
) -> Option<String> {
    if let Some(cors) = &policy.cors {
        if CorsPolicy::is_preflight(&parts.method, &parts.headers) {
            let answer = cors.preflight(&parts.headers);
            let allowed = answer.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN);
            let _ = writeln!(
                out,
                "cors:       preflight answered by the gateway ({})",
                if allowed {
                    "origin and method allowed"
                } else {
                    "not allowed: no Access-Control-Allow-* headers"
                }
            );
            return Some("204 CORS preflight".to_string());
        }
        let _ = writeln!(
            out,
            "cors:       Access-Control-Allow-Origin added for allowed origins"
        );
    }
    let Some(auth) = policy.auth.as_ref() else {
        // Rules without `auth` read only the client certificate, which an explained request
        // (no connection) never has.
        return authorize_lines(policy, parts, rbac::Caller::default(), out);
    };
    let provider = &auth.provider;
    let mode = if auth.optional {
        "optional"
    } else {
        "required"
    };
    let claims = match jwt::bearer_token(&parts.headers) {
        Ok(Some(token)) => match provider
            .verifier
            .verify(token, std::time::SystemTime::now())
        {
            Ok(claims) => {
                let _ = writeln!(
                    out,
                    "auth:       jwt provider {} ({mode}): valid token for sub {}",
                    provider.verifier.name(),
                    claims.sub().unwrap_or("(none)")
                );
                *sub = claims.sub().map(str::to_owned);
                Some(claims)
            }
            Err(failure) => {
                let _ = writeln!(
                    out,
                    "auth:       jwt provider {} ({mode}): token rejected: {}",
                    provider.verifier.name(),
                    failure.code()
                );
                return Some(format!("401 {}", failure.code()));
            }
        },
        Ok(None) if auth.optional => {
            let _ = writeln!(
                out,
                "auth:       jwt provider {} (optional): no token, anonymous",
                provider.verifier.name()
            );
            None
        }
        Ok(None) => {
            let _ = writeln!(
                out,
                "auth:       jwt provider {} (required): missing bearer token",
                provider.verifier.name()
            );
            return Some("401 missing".to_string());
        }
        Err(jwt::AuthFailure::Missing) => {
            let _ = writeln!(
                out,
                "auth:       jwt provider {} ({mode}): missing bearer token (the Authorization \
                 header carries another scheme)",
                provider.verifier.name()
            );
            return Some("401 missing".to_string());
        }
        Err(failure) => {
            let _ = writeln!(
                out,
                "auth:       Authorization header rejected: {}",
                failure.code()
            );
            return Some(format!("401 {}", failure.code()));
        }
    };
    let caller = rbac::Caller {
        claims: claims.as_ref().map(|c| &c.0),
        roles_claim: Some(&provider.roles_claim),
        cert: None,
    };
    authorize_lines(policy, parts, caller, out)
}

/// Adds the authorize line; returns the answer when the rules refuse the request.
fn authorize_lines(
    policy: &RoutePolicy,
    parts: &http::request::Parts,
    caller: rbac::Caller<'_>,
    out: &mut String,
) -> Option<String> {
    if policy.authorize.is_empty() {
        return None;
    }
    match rbac::authorize(&policy.authorize, &parts.method, caller) {
        Ok(rule) => {
            let _ = writeln!(out, "authorize:  allowed by rule {}", rule + 1);
            None
        }
        Err((denial, rule)) => {
            let which = rule.map_or("no rule matches the method".to_string(), |r| {
                format!("rule {}", r + 1)
            });
            let _ = writeln!(out, "authorize:  denied by {which}: {}", denial.code());
            Some(format!("{} {}", denial.status().as_u16(), denial.code()))
        }
    }
}
