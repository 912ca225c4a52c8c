//! The request filter: the route's checks, in order, before anything is sent upstream. Each
//! step either lets the request on or ends it with an answer of its own or an error.

use std::time::SystemTime;

use http::header;
use http::StatusCode;

use super::ctx::{CorsFacts, RequestCtx};
use super::pipeline::{Flow, Gateway, Stop};
use crate::auth::cors::CorsPolicy;
use crate::auth::PolicyDenial;
use crate::error::GatewayError;

/// Runs the route's checks in order; the first that ends the request decides its answer.
pub async fn request_filter(ctx: &mut RequestCtx<'_>, gateway: &Gateway<'_>) -> Flow {
    cors(ctx)?;
    auth(ctx, gateway)?;
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

/// Auth: who is calling (the token), and whether the route lets them (roles, scopes).
fn auth(ctx: &mut RequestCtx<'_>, gateway: &Gateway<'_>) -> Flow {
    let route = ctx.route;
    let checked = route
        .policy
        .check(&ctx.head.method, &ctx.head.headers, SystemTime::now());
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
