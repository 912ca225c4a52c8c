//! Forwarding a request to an upstream target and streaming the answer back.

use http_body::Body as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};

use super::body::{Relayed, ResponseBody};
use super::ctx::RequestCtx;
use super::headers::{
    client_ip, list_elements, remove_hop_by_hop, remove_present, set_forwarding_headers, Hop,
};
use super::pipeline::Gateway;
use super::upgrade::{answer_switch, ask_upstream};
use crate::auth::{apply_identity, strip_identity_headers};
use crate::body::{drain, LimitedBody, RequestBody};
use crate::error::{is_grpc, GatewayError};
use crate::observability::access_log::UPSTREAM_BODY_ERROR;
use crate::observability::request_id::X_REQUEST_ID;
use crate::routing::route::ProxyAction;
use crate::upstream::call::{CallSettings, UpstreamError, UpstreamErrorKind};
use crate::upstream::upgrade::{UpgradeRequested, UpgradeSlot};
use crate::upstream::{cookie_value, HashOn};

/// The upstream phase of a proxied route: sends the request to a target of the route's upstream
/// and returns its response. The request's method and headers go upstream; the context keeps
/// the URI.
pub async fn forward(
    action: &ProxyAction,
    ctx: &mut RequestCtx<'_>,
    body: RequestBody,
    gateway: &Gateway<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (route, conn) = (ctx.route, gateway.conn);
    let server = &gateway.snapshot.server;
    let upstream = &action.upstream;
    let limit = route.max_request_body;
    if declared_length(ctx.head).is_some_and(|len| len > limit) {
        drain(body);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    // gRPC's status travels in trailers, which the HTTP/1.1 client does not carry: a call sent
    // there would come back without its status. Refused plainly instead.
    if !upstream.speaks_h2() && is_grpc(&ctx.head.headers) {
        drain(body);
        tracing::debug!(upstream = %upstream.name, "gRPC call refused: the upstream is HTTP/1.1");
        return Err(GatewayError::GrpcNeedsHttp2 {
            upstream: Arc::clone(&upstream.name),
        });
    }
    // HTTP/2 has no Upgrade (RFC 9113 8.2.2), and the gateway does not send extended CONNECT
    // upstream: a tunnel needs an HTTP/1.1 upstream.
    if upstream.speaks_h2() && ctx.upgrade.is_some() {
        drain(body);
        tracing::debug!(upstream = %upstream.name, "upgrade refused: the upstream is HTTP/2");
        return Err(GatewayError::UpgradeNeedsHttp1 {
            upstream: Arc::clone(&upstream.name),
        });
    }
    // Owned, since the headers go on with the request; only `balance: hash` has a key.
    let hash_key: Option<Vec<u8>> = match &upstream.hash_on {
        None => None,
        Some(HashOn::Header(name)) => ctx.head.headers.get(name).map(|v| v.as_bytes().to_vec()),
        Some(HashOn::Cookie(name)) => cookie_value(&ctx.head.headers, name).map(<[u8]>::to_vec),
        Some(HashOn::Ip) => {
            let ip = client_ip(conn.peer.ip(), &ctx.head.headers, &server.trusted_proxies);
            Some(ip.to_string().into_bytes())
        }
    };

    let uri = &ctx.head.uri;
    let upstream_path = action.rewrite.apply(ctx.path());
    let path_and_query = if upstream_path == uri.path() {
        // The common case: nothing changed, so reuse the parsed value instead of re-parsing.
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    } else {
        let joined = match uri.query() {
            Some(query) => format!("{upstream_path}?{query}"),
            None => upstream_path.into_owned(),
        };
        PathAndQuery::try_from(joined)
            .map_err(|_| GatewayError::BadRequest("invalid request target"))?
    };

    let mut headers = std::mem::take(&mut ctx.head.headers);
    let client_host = match ctx.head.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    };
    // `te: trailers` is the one TE an HTTP/2 request may carry (RFC 9113 8.2.2), and gRPC
    // servers require it: kept for HTTP/2 upstreams when the client sent it.
    let te_trailers = upstream.speaks_h2() && accepts_trailers(&headers);
    remove_hop_by_hop(&mut headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = &ctx.upgrade {
        ask_upstream(&mut headers, upgrade);
    }
    // The body is streamed; the upstream need not be asked to confirm it wants it.
    remove_present(&mut headers, &[header::EXPECT]);
    set_forwarding_headers(
        &mut headers,
        Hop {
            peer: &conn.peer_ip,
            trusted: server.trusted_proxies.contains(conn.peer.ip()),
            scheme: conn.scheme(),
            host: client_host.as_ref(),
            version: ctx.head.version,
        },
    );
    // Otherwise the call sets the Host of the target it picks.
    let target_host = match (action.preserve_host, client_host) {
        (true, Some(host)) => {
            headers.insert(header::HOST, host);
            false
        }
        _ => true,
    };
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    strip_identity_headers(&mut headers, &gateway.snapshot.identity_headers);
    if let (Some(auth), Some(identity)) = (&route.policy.auth, &ctx.identity) {
        apply_identity(&mut headers, auth, identity);
    }
    route.request_headers.apply(&mut headers);

    let mut body = LimitedBody::new(body, limit);
    if ctx.access_log && !body.is_end_stream() {
        let bytes_in = Arc::new(AtomicU64::new(0));
        ctx.record.bytes_in = Some(Arc::clone(&bytes_in));
        body = body.reporting_to(bytes_in);
    }
    // Lent to the call, which only encodes it or takes its fields (see `Upstream::call`).
    let mut request = Request::new(());
    *request.method_mut() = ctx.head.method.clone();
    // Origin-form (`/path?query`): absolute-form is only for requests to forward proxies, and
    // many origin servers answer it with 404 or 400. The target goes in the Host header.
    *request.uri_mut() = Uri::from(path_and_query);
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    if ctx.upgrade.is_some() {
        request.extensions_mut().insert(UpgradeRequested);
    }
    let (mut outgoing, ()) = request.into_parts();

    let settings = CallSettings {
        timeout: action.timeout,
        read_timeout: action.read_timeout,
        hash_key: hash_key.as_deref(),
        target_host,
    };
    let answered = upstream.call(&mut outgoing, body, settings).await;
    drop(outgoing);
    let answered = answered.map_err(|error| {
        if let Some(upgrade) = &ctx.upgrade {
            gateway
                .metrics
                .upgrade(&route.name, upgrade.label, "failed");
        }
        ctx.record.upstream_target = error.target.clone();
        if matches!(
            error.kind,
            UpstreamErrorKind::BodyFailed | UpstreamErrorKind::BodyTimeout
        ) {
            ctx.record.error = Some(UPSTREAM_BODY_ERROR);
        }
        upstream_error(error, limit)
    })?;
    ctx.timings.upstream = Some(answered.elapsed);
    ctx.record.upstream_target = Some(answered.target);
    let (mut parts, body) = answered.response.into_parts();
    // Only a 101 to an upgrade gets here with an upstream connection to tunnel.
    let switched_to = parts
        .extensions
        .get::<UpgradeSlot>()
        .and(parts.headers.get(header::UPGRADE).cloned());
    remove_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = &ctx.upgrade {
        let outcome = match switched_to {
            None => "refused",
            Some(protocol) => {
                let answer =
                    answer_switch(upgrade, &mut parts.status, &mut parts.headers, protocol);
                if let Err(error) = answer {
                    gateway
                        .metrics
                        .upgrade(&route.name, upgrade.label, "failed");
                    tracing::warn!(upstream = %upstream.name, %error, "upgrade not tunnelled");
                    return Err(GatewayError::UpstreamFailed {
                        upstream: Arc::clone(&upstream.name),
                    });
                }
                parts.extensions.insert(gateway.metrics.tunnel());
                "switched"
            }
        };
        gateway.metrics.upgrade(&route.name, upgrade.label, outcome);
    }
    // The client gets our HTTP version, not the upstream's (an HTTP/1.0 upstream would
    // otherwise turn the client's keep-alive connection into a one-shot).
    parts.version = Version::default();
    let body = Relayed::new(body, Arc::clone(upstream), answered.marks);
    Ok(Response::from_parts(parts, ResponseBody::Upstream(body)))
}

/// The one mapping of a failed upstream call to the gateway's answer.
fn upstream_error(error: UpstreamError, limit: u64) -> GatewayError {
    let upstream = error.upstream;
    match error.kind {
        UpstreamErrorKind::Overloaded => GatewayError::UpstreamOverloaded { upstream },
        UpstreamErrorKind::CircuitOpen { retry_after } => GatewayError::CircuitOpen {
            upstream,
            retry_after,
        },
        UpstreamErrorKind::NoTarget => GatewayError::NoTarget { upstream },
        UpstreamErrorKind::NoHealthy => GatewayError::NoHealthyUpstream { upstream },
        UpstreamErrorKind::Connect => GatewayError::UpstreamConnect { upstream },
        UpstreamErrorKind::Timeout | UpstreamErrorKind::BodyTimeout => {
            GatewayError::UpstreamTimeout { upstream }
        }
        UpstreamErrorKind::Failed | UpstreamErrorKind::BodyFailed => {
            GatewayError::UpstreamFailed { upstream }
        }
        UpstreamErrorKind::BodyTooLarge => GatewayError::BodyTooLarge { limit },
        UpstreamErrorKind::ClientBody => {
            GatewayError::BadRequest("malformed or incomplete request body")
        }
    }
}

/// Whether a request's `TE` fields name `trailers`.
fn accepts_trailers(headers: &http::HeaderMap) -> bool {
    list_elements(headers, header::TE).any(|coding| {
        let name = coding.split(';').next().unwrap_or("");
        name.trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("trailers")
    })
}

/// The request's Content-Length, when it has a valid one.
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let te = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(header::TE, HeaderValue::from_str(v).unwrap());
            }
            accepts_trailers(&headers)
        };
        assert!(te(&["trailers"]));
        assert!(te(&["Trailers"]));
        assert!(te(&["gzip;q=0.5, trailers"]));
        assert!(te(&["gzip", " trailers "]));
        assert!(!te(&[]));
        assert!(!te(&["gzip, deflate;q=0.3"]));
        assert!(!te(&["trailersx"]));
    }
}
