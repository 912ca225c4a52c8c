//! Forwarding a request to an upstream target and streaming the answer back.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http_body::Body as _;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};

use super::body::{note_body_error, Relayed, ResponseBody};
use super::ctx::RequestCtx;
use super::headers::{client_ip, remove_hop_by_hop, remove_present, set_forwarding_headers, Hop};
use super::pipeline::Gateway;
use crate::auth::{apply_identity, strip_identity_headers};
use crate::body::{caused_by, drain, BodyTooLarge, LimitedBody, RequestBody};
use crate::error::GatewayError;
use crate::http1::inbound::ClientBodyError;
use crate::observability::access_log::UPSTREAM_BODY_ERROR;
use crate::observability::metrics::UpstreamOutcome;
use crate::observability::request_id::X_REQUEST_ID;
use crate::routing::route::ProxyAction;
use crate::upstream::pool::{ReadTimeout, SendError};
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
    if declared_length(&ctx.head).is_some_and(|len| len > limit) {
        drain(body);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let admitted = match &upstream.bulkhead {
        None => None,
        Some(bulkhead) => match bulkhead.admit() {
            Some(admitted) => Some(admitted),
            None => {
                drain(body);
                upstream
                    .metrics
                    .record(UpstreamOutcome::Overloaded, std::time::Duration::ZERO);
                return Err(GatewayError::UpstreamOverloaded {
                    upstream: upstream.name.clone(),
                });
            }
        },
    };
    let address;
    let hash_key = match &upstream.hash_on {
        None => None,
        Some(HashOn::Header(name)) => ctx.head.headers.get(name).map(|v| v.as_bytes()),
        Some(HashOn::Cookie(name)) => cookie_value(&ctx.head.headers, name),
        Some(HashOn::Ip) => {
            let ip = client_ip(conn.peer.ip(), &ctx.head.headers, &server.trusted_proxies);
            address = ip.to_string();
            Some(address.as_bytes())
        }
    };
    let (target_index, target, in_flight) = match upstream.pick(hash_key) {
        Ok(picked) => picked,
        Err(why) => {
            drain(body);
            return Err(GatewayError::no_pick(why, upstream.name.clone()));
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
    // Origin-form (`/path?query`): absolute-form is only for requests to forward proxies, and
    // many origin servers answer it with 404 or 400. The target goes in the Host header.
    let uri = Uri::from(path_and_query);

    let mut headers = std::mem::take(&mut ctx.head.headers);
    let client_host = match ctx.head.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    };
    remove_hop_by_hop(&mut headers);
    // The body is streamed; the upstream need not be asked to confirm it wants it.
    remove_present(&mut headers, &[header::EXPECT]);
    set_forwarding_headers(
        &mut headers,
        Hop {
            peer: &conn.peer_ip,
            trusted: server.trusted_proxies.contains(conn.peer.ip()),
            scheme: conn.scheme,
            host: client_host.as_ref(),
            version: ctx.head.version,
        },
    );
    match (action.preserve_host, client_host) {
        (true, Some(host)) => headers.insert(header::HOST, host),
        _ => headers.insert(header::HOST, target.host_header.clone()),
    };
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    strip_identity_headers(&mut headers, &gateway.snapshot.identity_headers);
    if let (Some(auth), Some(identity)) = (&route.policy.auth, &ctx.identity) {
        apply_identity(&mut headers, auth, identity);
    }
    route.request_headers.apply(&mut headers);

    ctx.record.upstream_target = Some(Arc::clone(&target.url));
    let mut body = LimitedBody::new(body, limit);
    if ctx.access_log && !body.is_end_stream() {
        let bytes_in = Arc::new(AtomicU64::new(0));
        ctx.record.bytes_in = Some(Arc::clone(&bytes_in));
        body = body.reporting_to(bytes_in);
    }
    let mut request = Request::new(body);
    *request.method_mut() = ctx.head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;

    let started = Instant::now();
    let sent = upstream
        .pool
        .send(target_index, request, action.read_timeout);
    let result = tokio::time::timeout(action.timeout, sent).await;
    let elapsed = started.elapsed();
    ctx.timings.upstream = Some(elapsed);
    let response = match result {
        Err(_) => {
            upstream.metrics.record(UpstreamOutcome::Timeout, elapsed);
            upstream.note_outcome(target_index, true);
            tracing::warn!(upstream = %upstream.name, target = %target.url, timeout = ?action.timeout, "upstream timed out");
            return Err(GatewayError::UpstreamTimeout {
                upstream: upstream.name.clone(),
            });
        }
        Ok(Err(error)) => {
            if caused_by::<BodyTooLarge>(&error) {
                upstream.metrics.record(UpstreamOutcome::Error, elapsed);
                return Err(GatewayError::BodyTooLarge { limit });
            }
            if caused_by::<ClientBodyError>(&error) {
                // The client's fault (a broken chunked body, a body cut short), not the
                // upstream's; the connection closes after this answer.
                upstream.metrics.record(UpstreamOutcome::Error, elapsed);
                tracing::debug!(upstream = %upstream.name, error = %error_chain(&error), "request body failed");
                return Err(GatewayError::BadRequest(
                    "malformed or incomplete request body",
                ));
            }
            tracing::warn!(
                upstream = %upstream.name,
                target = %target.url,
                error = %error_chain(&error),
                elapsed_ms = elapsed.as_millis() as u64,
                "upstream request failed"
            );
            upstream.note_outcome(target_index, true);
            return Err(if matches!(error, SendError::Connect { .. }) {
                upstream
                    .metrics
                    .record(UpstreamOutcome::ConnectError, elapsed);
                GatewayError::UpstreamConnect {
                    upstream: upstream.name.clone(),
                }
            } else {
                upstream.metrics.record(UpstreamOutcome::Error, elapsed);
                GatewayError::UpstreamFailed {
                    upstream: upstream.name.clone(),
                }
            });
        }
        Ok(Ok(response)) => {
            upstream.metrics.record(UpstreamOutcome::Response, elapsed);
            upstream.note_outcome(target_index, response.status().is_server_error());
            response
        }
    };
    let (mut parts, mut body) = response.into_parts();
    // The head waits for the first body bytes (bounded by read_timeout), so a body that breaks
    // before any of it was relayed is answered with an error status instead of a good head
    // and a cut. A body that is already buffered (the usual small answer) costs no wait.
    if let Err(error) = body.wait_for_data().await {
        note_body_error(upstream, &*error);
        ctx.record.error = Some(UPSTREAM_BODY_ERROR);
        let name = upstream.name.clone();
        return Err(if caused_by::<ReadTimeout>(&*error) {
            GatewayError::UpstreamTimeout { upstream: name }
        } else {
            GatewayError::UpstreamFailed { upstream: name }
        });
    }
    remove_hop_by_hop(&mut parts.headers);
    // The client gets our HTTP version, not the upstream's (an HTTP/1.0 upstream would
    // otherwise turn the client's keep-alive connection into a one-shot).
    parts.version = Version::default();
    let body = Relayed::new(body, Arc::clone(upstream), (in_flight, admitted));
    Ok(Response::from_parts(parts, ResponseBody::Upstream(body)))
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

/// An error and its causes on one line, for logs. Many errors already end their message with
/// their cause's (`connect to 10.0.0.1:80: Connection refused`); such a cause is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
