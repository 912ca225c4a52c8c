//! The fixed sequence every request goes through: limits -> normalise -> route -> action ->
//! response rules. Each step either continues or ends the request with a `GatewayError`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};

use crate::auth::cors::CorsPolicy;
use crate::auth::PolicyDenial;
use crate::observability::metrics::Metrics;
use http::request::Parts;
use http::{Request, Response};

use super::body::ResponseBody;
use super::forward::{forward, Inbound};
use super::headers::add_security_headers;
use super::headers::client_ip;
use crate::body::{drain, RequestBody};
use crate::config::Snapshot;
use crate::error::GatewayError;
use crate::http1::request::MAX_HEADER_NAME;
use crate::observability::access_log::RequestRecord;
use crate::observability::request_id::{request_id, X_REQUEST_ID};
use crate::routing::matchers::request_host;
use crate::routing::normalize::normalize_path;
use crate::routing::route::{Route, RouteAction, StaticResponse};
use crate::routing::router::{RequestFacts, RouteOutcome};

impl ConnInfo {
    /// Connection facts for a peer reached over `scheme`.
    pub fn new(peer: SocketAddr, scheme: &'static str) -> Self {
        let ip = peer.ip().to_canonical().to_string();
        ConnInfo {
            peer,
            peer_ip: HeaderValue::try_from(ip).expect("an IP address is a valid header value"),
            scheme,
        }
    }
}

/// What the gateway knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer's IP as header text, for `X-Forwarded-For`; made once per connection.
    pub peer_ip: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// The route chosen for a request and the normalised path it was chosen on.
#[derive(Debug)]
pub struct Routed<'s, 'r> {
    /// The normalised request path.
    pub path: Cow<'r, str>,
    /// The request host, lower-cased without port.
    pub host: Option<Cow<'r, str>>,
    /// The matching route.
    pub route: &'s Arc<Route>,
}

/// What routing reads of a request: its normalised path and its host.
#[derive(Debug)]
pub struct RoutingInput<'r> {
    /// The normalised request path.
    pub path: Cow<'r, str>,
    /// The request host, lower-cased without port.
    pub host: Option<Cow<'r, str>>,
}

impl<'r> RoutingInput<'r> {
    /// Normalises the path (refusing what must not reach a router) and reads the host.
    pub fn of(parts: &'r Parts) -> Result<Self, GatewayError> {
        Ok(RoutingInput {
            path: normalize_path(parts.uri.path())?,
            host: request_host(&parts.uri, &parts.headers),
        })
    }

    /// The facts a router matches on.
    pub fn facts<'a>(&'a self, parts: &'a Parts) -> RequestFacts<'a> {
        RequestFacts {
            host: self.host.as_deref(),
            path: &self.path,
            method: &parts.method,
            headers: &parts.headers,
        }
    }
}

/// Normalises the path and finds the route; shared by the request path and `explain`.
pub fn route_request<'s, 'r>(
    snapshot: &'s Snapshot,
    parts: &'r Parts,
) -> Result<Routed<'s, 'r>, GatewayError> {
    let input = RoutingInput::of(parts)?;
    match snapshot.router.find(input.facts(parts)) {
        RouteOutcome::Matched(route) => Ok(Routed {
            path: input.path,
            host: input.host,
            route,
        }),
        RouteOutcome::MethodNotAllowed(allow) => Err(GatewayError::MethodNotAllowed { allow }),
        RouteOutcome::NotFound => Err(GatewayError::NoRoute),
    }
}

/// Size of the request head as it would be on the wire, for `max_header_bytes`.
pub fn head_size(parts: &Parts) -> u64 {
    let uri = &parts.uri;
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = parts.method.as_str().len() + target + 12;
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (line + fields) as u64
}

/// The head limits, on every protocol: its size, and the length of its field names (HTTP/1.x
/// heads were held to that by their parser; HPACK has no such bound).
fn admit_head(parts: &Parts, limit: u64) -> Result<(), GatewayError> {
    if head_size(parts) > limit {
        return Err(GatewayError::HeadersTooLarge { limit });
    }
    let long_name = || {
        parts
            .headers
            .keys()
            .any(|name| name.as_str().len() > MAX_HEADER_NAME)
    };
    if parts.version == http::Version::HTTP_2 && long_name() {
        return Err(GatewayError::HeaderNameTooLong {
            limit: MAX_HEADER_NAME,
        });
    }
    Ok(())
}

/// Serves one request against one snapshot; never fails, errors become JSON responses. The
/// record says what happened, for the access log and metrics.
pub async fn handle(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    request: Request<RequestBody>,
    metrics: &Metrics,
) -> (Response<ResponseBody>, RequestRecord) {
    let (parts, body) = request.into_parts();
    crate::observability::panics::debug_failpoint(parts.uri.path());
    let id = request_id(&parts.headers);
    let mut record = RequestRecord::default();
    if snapshot.logging.access_log {
        record.client_ip = Some(client_ip(
            conn.peer.ip(),
            &parts.headers,
            &snapshot.server.trusted_proxies,
        ));
    }
    let mut response = match serve(snapshot, conn, parts, body, &id, &mut record, metrics).await {
        Ok(response) => response,
        Err(error) => error.to_response(&id),
    };
    let cors = record.route.as_ref().and_then(|r| r.policy.cors.as_ref());
    if let Some(cors) = cors.filter(|_| record.cors_actual) {
        // Error answers carry CORS headers too, or the browser hides a 401 from the page; and
        // every answer varies by Origin so shared caches keep origins apart.
        let mut request_headers = http::HeaderMap::new();
        if let Some(origin) = &record.origin {
            request_headers.insert(header::ORIGIN, origin.clone());
        }
        cors.apply(&request_headers, response.headers_mut());
    }
    response.headers_mut().insert(X_REQUEST_ID, id.clone());
    record.request_id = Some(id);
    (response, record)
}

async fn serve(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: Parts,
    body: RequestBody,
    id: &HeaderValue,
    record: &mut RequestRecord,
    metrics: &Metrics,
) -> Result<Response<ResponseBody>, GatewayError> {
    let limit = snapshot.server.max_header_bytes;
    let routed = match admit_head(&parts, limit).and_then(|()| route_request(snapshot, &parts)) {
        Ok(routed) => routed,
        Err(e) => {
            drain(body);
            if snapshot.logging.access_log {
                record.note_unrouted_path(parts.uri.path());
            }
            return Err(e);
        }
    };
    let route = Arc::clone(routed.route);
    let path = routed.path.into_owned();
    if snapshot.logging.access_log {
        record.path = Some(path.as_str().into());
    }
    record.route = Some(Arc::clone(&route));
    if let Some(cors) = &route.policy.cors {
        // Browsers send preflights without credentials: they are answered before auth.
        if CorsPolicy::is_preflight(&parts.method, &parts.headers) {
            drain(body);
            return Ok(preflight(cors.preflight(&parts.headers)));
        }
        record.origin = parts.headers.get(header::ORIGIN).cloned();
        record.cors_actual = true;
    }
    let identity = match route
        .policy
        .check(&parts.method, &parts.headers, SystemTime::now())
    {
        Ok(identity) => identity,
        Err(denial) => {
            drain(body);
            let error = match denial {
                PolicyDenial::Unauthenticated(failure) => GatewayError::Unauthenticated(failure),
                PolicyDenial::Forbidden(denial) => GatewayError::Forbidden(denial),
            };
            metrics.auth_failure(&route.name, error.status_and_code().1);
            return Err(error);
        }
    };
    let mut response = match &route.action {
        RouteAction::Respond(fixed) => {
            drain(body);
            respond(fixed)
        }
        RouteAction::Proxy(action) => {
            let request = Inbound {
                parts,
                body,
                path: &path,
                id,
                identity: identity.as_ref(),
                identity_headers: &snapshot.identity_headers,
            };
            forward(action, &route, &snapshot.server, conn, request, record).await?
        }
    };
    route.response_headers.apply(response.headers_mut());
    if route.security_headers {
        add_security_headers(response.headers_mut());
    }
    Ok(response)
}

/// The gateway's answer to a CORS preflight: 204 with the policy's headers.
fn preflight(headers: http::HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Empty);
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    *response.headers_mut() = headers;
    response
}

fn respond(fixed: &StaticResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(fixed.body.clone())));
    *response.status_mut() = fixed.status;
    *response.headers_mut() = fixed.headers.clone();
    response
}
