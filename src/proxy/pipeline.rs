//! The request path: named phases over one [`RequestCtx`], in this order.
//!
//! 1. **Routing**: the head limits, then the normalised path and host ([`RoutingInput`]) choose
//!    the route. A request no route serves ends here, with only its request id added.
//! 2. **Request filter** ([`request_filter`]): the route's checks in order: CORS preflight,
//!    then auth (who is calling, and may they), then rate limits (after auth, so they can
//!    count by caller).
//! 3. **Cache lookup** ([`cache`](super::cache)), on routes with `cache`: after the request
//!    filter (a cached answer must not skip a check), it answers from the store when it can;
//!    otherwise the request goes upstream and the answer fills, refreshes or invalidates the
//!    cache on its way back (or a stale entry answers for an upstream that failed).
//! 4. **Upstream**: the route's action answers: its static response, or its upstream
//!    ([`forward`]).
//! 5. **Response filter** ([`response_filter`]): header rules and security headers on the
//!    route's own answers; CORS, the RateLimit fields and the request id on every answer of
//!    the route, allowed or not; last, compression of the route's own answers
//!    ([`crate::compress::apply`]), so every step before it sees the identity body.
//!
//! Each phase continues or ends the request ([`Flow`]); an answer that ends it early still
//! passes the response filter. The context carries what the phases learn; its access-log
//! record goes to the server with the answer.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};

use super::body::ResponseBody;
use super::cache::{self, Looked};
use super::ctx::{Arrival, Located, RequestCtx};
use super::forward::forward;
use super::headers::client_ip;
use super::request_filter::request_filter;
use super::response_filter::{response_filter, Source};
use crate::body::{drain, RequestBody};
use crate::config::Snapshot;
use crate::error::{is_grpc, GatewayError};
use crate::http1::request::MAX_HEADER_NAME;
use crate::observability::access_log::RequestRecord;
use crate::observability::metrics::Metrics;
use crate::observability::request_id::{request_id, X_REQUEST_ID};
use crate::routing::matchers::request_host;
use crate::routing::normalize::normalize_path;
use crate::routing::route::{Route, RouteAction, StaticResponse};
use crate::routing::router::{RequestFacts, RouteOutcome};

impl ConnInfo {
    /// Connection facts for a peer over plain TCP (TLS connections add `tls` after the
    /// handshake).
    pub fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip().to_canonical().to_string();
        ConnInfo {
            peer,
            peer_ip: HeaderValue::try_from(ip).expect("an IP address is a valid header value"),
            tls: None,
            client_cert: None,
        }
    }

    /// Whether the connection is TLS (so its answers may carry HSTS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `https` on a TLS connection, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }
}

/// What the TLS handshake of a connection settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The ALPN protocol agreed (`h2` or `http/1.1`); `None` when the client offered none.
    pub alpn: Option<&'static str>,
    /// The server name the client sent in SNI; `None` when it sent none (as for an IP address).
    pub sni: Option<Arc<str>>,
}

/// What the gateway knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer's IP as header text, for `X-Forwarded-For`; made once per connection.
    pub peer_ip: HeaderValue,
    /// The handshake's outcome, on a TLS connection.
    pub tls: Option<TlsInfo>,
    /// The client certificate `server.tls.client_ca` verified, read once at the handshake.
    pub client_cert: Option<Arc<crate::auth::client_cert::ClientCert>>,
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

/// What every phase may read besides the request: the config in force, the connection, the
/// metrics.
#[derive(Debug, Clone, Copy)]
pub struct Gateway<'a> {
    /// The config the request is served with (shared, so work the request leaves behind, a
    /// background cache refresh, can keep it).
    pub snapshot: &'a Arc<Snapshot>,
    /// The connection it came on.
    pub conn: &'a ConnInfo,
    /// The process's metrics.
    pub metrics: &'a Arc<Metrics>,
}

/// Why a phase ends a request early.
#[derive(Debug)]
pub enum Stop {
    /// With an answer of the gateway's own: this status and these headers, no body (a CORS
    /// preflight's). Not a whole response, which would make every phase's result as large.
    Respond(StatusCode, HeaderMap),
    /// With this error's answer.
    Fail(GatewayError),
}

impl From<GatewayError> for Stop {
    fn from(error: GatewayError) -> Self {
        Stop::Fail(error)
    }
}

/// A phase's outcome: `Ok` goes on to the next phase.
pub type Flow = Result<(), Stop>;

/// Serves one request, whose head had been read at `received`, against one snapshot; never
/// fails, errors become JSON responses. Returns the answer and whether the access log wants a
/// line for it; the record of what happened (for the access log and metrics) goes into
/// `record`, which the server lends for the same reason as the head: returned by value, it
/// would be copied again at every layer on its way back.
///
/// The head is lent, not given: passed by value through each async layer (the server's,
/// this one, the context), a request head (~220 bytes) is copied into every layer's state, and
/// with `panic = "unwind"` the compiler keeps most of those copies. A proxied request leaves
/// the head without its fields, which went upstream.
pub async fn handle(
    gateway: Gateway<'_>,
    head: &mut Parts,
    body: RequestBody,
    received: Instant,
    record: &mut RequestRecord,
) -> (Response<ResponseBody>, bool) {
    crate::observability::panics::debug_failpoint(head.uri.path());
    let snapshot = gateway.snapshot;
    let access_log = snapshot.logging.access_log;
    let arrival = Arrival {
        request_id: request_id(&head.headers),
        client_ip: access_log.then(|| {
            let trusted = &snapshot.server.trusted_proxies;
            client_ip(gateway.conn.peer.ip(), &head.headers, trusted)
        }),
        received,
        access_log,
    };
    let limit = snapshot.server.max_header_bytes;
    let located = admit_head(head, limit)
        .and_then(|()| super::upgrade::requested(head))
        .and_then(|upgrade| Ok((route_request(snapshot, head)?, upgrade)))
        .map(|(routed, upgrade)| (Located::new(routed, head), upgrade));
    let mut ctx = match located {
        Ok((located, upgrade)) => {
            let mut ctx = RequestCtx::new(head, located, arrival);
            ctx.upgrade = upgrade;
            ctx
        }
        Err(error) => {
            drain(body);
            let response = unrouted(head, error, arrival, record);
            note_tls(record, gateway.conn, access_log);
            return (response, access_log);
        }
    };
    // Read now: forwarding takes the request's headers.
    let grpc = is_grpc(&ctx.head.headers);
    let (mut response, source) = match phases(&mut ctx, body, &gateway).await {
        Ok(response) => (response, Source::Route),
        Err(Stop::Respond(status, headers)) => {
            let mut response = Response::new(ResponseBody::Empty);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            (response, Source::Gateway)
        }
        Err(Stop::Fail(error)) if grpc => {
            (error.to_grpc_response(&ctx.request_id), Source::Gateway)
        }
        Err(Stop::Fail(error)) => (error.to_response(&ctx.request_id), Source::Gateway),
    };
    response_filter(&ctx, source, gateway.conn.is_tls(), &mut response);
    ctx.into_record(record);
    note_tls(record, gateway.conn, access_log);
    (response, access_log)
}

/// Notes for the log line that the request came over TLS, and with which SNI name.
pub fn note_tls(record: &mut RequestRecord, conn: &ConnInfo, access_log: bool) {
    if let (true, Some(tls)) = (access_log, &conn.tls) {
        record.tls = Some(tls.sni.clone().unwrap_or_else(|| Arc::from("")));
    }
}

/// The phases between routing and the response filter; `Ok` is the route's own answer.
async fn phases(
    ctx: &mut RequestCtx<'_>,
    body: RequestBody,
    gateway: &Gateway<'_>,
) -> Result<Response<ResponseBody>, Stop> {
    if let Err(stop) = request_filter(ctx, gateway).await {
        drain(body);
        return Err(stop);
    }
    if ctx.route.compress.is_some() {
        ctx.accepts = crate::compress::negotiate(&ctx.head.headers);
    }
    let route = ctx.route;
    // An upgrade's answer is a connection, not something to store.
    let cache = route
        .cache
        .as_deref()
        .filter(|_| ctx.upgrade.is_none())
        .zip(gateway.snapshot.cache_runtime.as_ref());
    let Some((policy, runtime)) = cache else {
        return upstream(ctx, body, gateway).await.map_err(Stop::Fail);
    };
    let pending = match cache::lookup(ctx, policy, runtime, gateway.conn.scheme()).await {
        Looked::Answered(answer) => {
            drain(body);
            return (*answer).map_err(Stop::Fail);
        }
        Looked::Upstream(pending) => pending,
        Looked::Refresh(answer, pending) => {
            drain(body);
            refresh_in_background(ctx, pending, gateway);
            return Ok(*answer);
        }
    };
    let answered = upstream(ctx, body, gateway).await;
    cache::after_upstream(ctx, policy, runtime, pending, answered)
        .await
        .map_err(Stop::Fail)
}

/// Revalidates a stale entry that answered (`stale-while-revalidate`) with a request of the
/// gateway's own, in a task of its own: the same route, URL, headers and caller, no body. What
/// comes back refreshes or replaces the entry as any answer would; nobody reads it.
fn refresh_in_background(
    ctx: &RequestCtx<'_>,
    pending: Box<cache::Pending>,
    gateway: &Gateway<'_>,
) {
    let snapshot = Arc::clone(gateway.snapshot);
    let conn = gateway.conn.clone();
    let metrics = Arc::clone(gateway.metrics);
    let mut builder = Request::get(ctx.head.uri.clone()).version(ctx.head.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = pending.request_headers().clone();
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut head, ()) = request.into_parts();
    let claims = ctx.identity.as_ref().and_then(|i| i.claims.clone());
    let request_id = ctx.request_id.clone();
    tokio::spawn(async move {
        let gateway = Gateway {
            snapshot: &snapshot,
            conn: &conn,
            metrics: &metrics,
        };
        let Ok(routed) = route_request(&snapshot, &head) else {
            return;
        };
        let located = Located::new(routed, &head);
        let arrival = Arrival {
            request_id,
            client_ip: None,
            received: Instant::now(),
            access_log: false,
        };
        let mut ctx = RequestCtx::new(&mut head, located, arrival);
        ctx.identity = Some(crate::auth::Identity { claims });
        let route = ctx.route;
        let (Some(policy), Some(runtime)) =
            (route.cache.as_deref(), snapshot.cache_runtime.as_ref())
        else {
            return;
        };
        let answered = upstream(&mut ctx, RequestBody::Empty, &gateway).await;
        if let Ok(response) =
            cache::after_upstream(&mut ctx, policy, runtime, pending, answered).await
        {
            // Read to its end: that is what stores it.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        }
    });
}

/// The upstream phase: the route's action answers.
async fn upstream(
    ctx: &mut RequestCtx<'_>,
    body: RequestBody,
    gateway: &Gateway<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let route = ctx.route;
    match &route.action {
        RouteAction::Respond(fixed) => {
            drain(body);
            Ok(respond(fixed))
        }
        RouteAction::Proxy(action) => forward(action, ctx, body, gateway).await,
    }
}

/// The answer to a request no route serves (or whose head was refused); its facts go into
/// `record`.
fn unrouted(
    head: &Parts,
    error: GatewayError,
    arrival: Arrival,
    record: &mut RequestRecord,
) -> Response<ResponseBody> {
    let mut response = if is_grpc(&head.headers) {
        error.to_grpc_response(&arrival.request_id)
    } else {
        error.to_response(&arrival.request_id)
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID, arrival.request_id.clone());
    if arrival.access_log {
        record.note_unrouted_path(head.uri.path());
    }
    record.client_ip = arrival.client_ip;
    record.request_id = Some(arrival.request_id);
    response
}

fn respond(fixed: &StaticResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(fixed.body.clone())));
    *response.status_mut() = fixed.status;
    *response.headers_mut() = super::headers::answer_headers(&fixed.headers);
    response
}
