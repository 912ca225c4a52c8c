//! The request filter: the route's checks, in order, before anything is sent upstream. Each
//! step either lets the request on or ends it with an answer of its own or an error.

use std::net::IpAddr;
use std::time::SystemTime;

use http::header;
use http::StatusCode;

use super::ctx::{CorsFacts, RequestCtx};
use super::headers::client_ip;
use super::pipeline::{Flow, Gateway, Stop};
use crate::auth::cors::CorsPolicy;
use crate::auth::PolicyDenial;
use crate::error::GatewayError;
use crate::ratelimit::{ClientKey, Decision, KeyKind, Verdict};

/// Runs the route's checks in order; the first that ends the request decides its answer.
pub async fn request_filter(ctx: &mut RequestCtx<'_>, gateway: &Gateway<'_>) -> Flow {
    cors(ctx)?;
    auth(ctx, gateway)?;
    rate_limit(ctx, gateway).await?;
    Ok(())
}

/// CORS: a preflight is answered here (204 with the policy's headers), before auth, since
/// browsers send preflights without credentials. Any other request on a CORS route keeps its
/// `Origin` for the response filter.
fn cors(ctx: &mut RequestCtx<'_>) -> Flow {
    let route = ctx.route;
    let Some(cors) = &route.policy.cors else {
        return Ok(());
    };
    if CorsPolicy::is_preflight(&ctx.head.method, &ctx.head.headers) {
        ctx.cors = CorsFacts::Preflight;
        let headers = cors.preflight(&ctx.head.headers);
        return Err(Stop::Respond(StatusCode::NO_CONTENT, headers));
    }
    ctx.cors = CorsFacts::Actual {
        origin: ctx.head.headers.get(header::ORIGIN).cloned(),
    };
    Ok(())
}

/// Auth: who is calling (the token, the client certificate), and whether the route lets them
/// (roles, scopes, claims).
fn auth(ctx: &mut RequestCtx<'_>, gateway: &Gateway<'_>) -> Flow {
    let route = ctx.route;
    let checked = route.policy.check(
        &ctx.head.method,
        &ctx.head.headers,
        gateway.conn.client_cert.as_deref(),
        SystemTime::now(),
    );
    match checked {
        Ok(identity) => {
            ctx.identity = identity;
            Ok(())
        }
        Err(denial) => {
            let error = match denial {
                PolicyDenial::Unauthenticated(failure) => GatewayError::Unauthenticated(failure),
                PolicyDenial::Forbidden(denial) => GatewayError::Forbidden(denial),
            };
            gateway
                .metrics
                .auth_failure(&route.name, error.status_and_code().1);
            Err(Stop::Fail(error))
        }
    }
}

/// Rate limits, after auth so they can count by caller. Every limit of the route is spent;
/// the strictest decision decides and its RateLimit headers are sent.
async fn rate_limit(ctx: &mut RequestCtx<'_>, gateway: &Gateway<'_>) -> Flow {
    let route = ctx.route;
    if route.rate_limits.is_empty() {
        return Ok(());
    }
    let limiter = &gateway.snapshot.limiter;
    let ip = match ctx.client_ip {
        Some(ip) => ip,
        None => {
            let trusted = &gateway.snapshot.server.trusted_proxies;
            let ip = client_ip(gateway.conn.peer.ip(), &ctx.head.headers, trusted);
            ctx.client_ip = Some(ip);
            ip
        }
    };
    let mut strictest: Option<Decision> = None;
    for limit in &route.rate_limits {
        let key = client_key(ctx, &limit.by, ip);
        match limiter.check(limit, key).await {
            Verdict::Decided(decision) => {
                strictest = Some(strictest.map_or(decision, |s| s.stricter(decision)));
            }
            Verdict::Unlimited => {}
            Verdict::Unavailable => return Err(GatewayError::RateLimitStoreUnavailable.into()),
        }
    }
    ctx.rate_limit = strictest;
    let Some(decision) = strictest else {
        return Ok(());
    };
    route.rate_limit_decisions.record(decision.allowed);
    if decision.allowed {
        return Ok(());
    }
    Err(GatewayError::RateLimited {
        retry_after: decision.retry_after_secs(),
    }
    .into())
}

/// Whom `by` counts this request as; a missing `sub` or header counts as the address.
fn client_key<'c>(ctx: &'c RequestCtx<'_>, by: &KeyKind, ip: IpAddr) -> ClientKey<'c> {
    let value = match by {
        KeyKind::Ip => None,
        KeyKind::Route => return ClientKey::Route,
        KeyKind::User => ctx
            .identity
            .as_ref()
            .and_then(|identity| identity.claims.as_deref())
            .and_then(|claims| claims.0.get("sub"))
            .and_then(|sub| sub.as_str())
            .map(str::as_bytes),
        KeyKind::Header(name) => ctx.head.headers.get(name).map(|v| v.as_bytes()),
    };
    match value {
        Some(value) if !value.is_empty() => ClientKey::Value(value),
        _ => ClientKey::Ip(ip),
    }
}
