//! Serving a client connection with hyper's HTTP/2 server (prior knowledge, h2c, or chosen by
//! ALPN over TLS), with the gateway's own idle timeout around it. (HTTP/1.x, plain or over TLS,
//! has the gateway's own server, `server::http1`.)
//!
//! An HTTP/2 extended CONNECT's `200` (RFC 8441) hands the stream to a tunnel
//! ([`super::upgrade`]).
//!
//! hyper's keep-alive settings close idle connections by pings, not by time without requests;
//! like nginx, an HTTP/2 connection here closes gracefully (GOAWAY) after `idle_timeout` without a
//! request. Its first bytes had to arrive within `request_header_timeout` to be recognised.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::connection::{Activity, TrackedBody, TrackedIo, Verdict};
use super::h2_streams::Streams;
use super::http1::{Http2Handoff, Limits};
use super::listener::{dispatch, Phase, Role};
use super::side_wake::SideWake;
use super::state::GatewayState;
use super::upgrade::Switch;
use crate::body::RequestBody;
use crate::config::snapshot::ServerSettings;
use crate::net::held_writes::HeldWrites;
use crate::observability::access_log::{Completion, RequestRecord};
use crate::observability::request_id::X_REQUEST_ID;
use crate::proxy::body::ResponseBody;
use crate::proxy::pipeline::ConnInfo;
use crate::proxy::upgrade::take_tunnel;

/// The HTTP/2 settings of a connection, read from the config when it starts.
#[derive(Debug, Clone, Copy)]
struct Http2Settings {
    max_concurrent_streams: u32,
    max_header_list_size: u32,
}

impl Http2Settings {
    /// From `server:`.
    fn from_server(server: &ServerSettings) -> Self {
        Http2Settings {
            max_concurrent_streams: server.max_concurrent_streams,
            // Twice the head limit: lists just over it still decode, so the request path
            // answers 431 in JSON; hyper refuses only lists far beyond it.
            max_header_list_size: server
                .max_header_bytes
                .saturating_mul(2)
                .clamp(16 << 10, 16 << 20)
                .try_into()
                .unwrap_or(u32::MAX),
        }
    }
}

/// Serves an HTTP/2 connection whose first bytes were read to tell its protocol.
pub(super) async fn serve_http2(handoff: Http2Handoff) {
    let Http2Handoff {
        stream,
        read,
        conn,
        role,
        state,
        phase,
        limits,
    } = handoff;
    let io = Io {
        stream,
        already_read: read,
    };
    serve_hyper(io, conn, role, state, phase, limits).await;
}

/// A client's stream and what was already read from it.
pub(super) struct Io<T> {
    /// The stream.
    pub stream: T,
    /// Bytes read from it before (to tell its protocol).
    pub already_read: Bytes,
}

/// Serves a connection with hyper's HTTP/2 server until it closes, idles out, or the phase
/// ends it.
pub(super) async fn serve_hyper<T>(
    io: Io<T>,
    conn: ConnInfo,
    role: Role,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    limits: Limits,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = Http2Settings::from_server(&state.snapshot.load().server);
    let activity = Activity::new();
    let peer = conn.peer;
    // Held: the frames a round of streams produces leave together (crate::net::held_writes).
    let io = TokioIo::new(HeldWrites::new(TrackedIo::new(
        io.stream,
        io.already_read,
        Arc::clone(&activity),
    )));
    let conn_info = Arc::new(conn);
    let service_activity = Arc::clone(&activity);
    let tunnel_phase = phase.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        // RFC 8441: only a CONNECT with `:protocol` becomes a tunnel.
        let on_upgrade = (request.method() == Method::CONNECT
            && request.extensions().get::<hyper::ext::Protocol>().is_some())
        .then(|| hyper::upgrade::on(&mut request));
        let activity = Arc::clone(&service_activity);
        let tunnel_phase = tunnel_phase.clone();
        let request = request.map(RequestBody::Http2);
        let state = Arc::clone(&state);
        let conn_info = Arc::clone(&conn_info);
        let guard = service_activity.request_started();
        async move {
            let started = Instant::now();
            state.metrics.request_started();
            let method = request.method().clone();
            // Boxed: the pipeline's future is kilobytes; inline, it would make hyper's future
            // for every stream that large, and that future is moved on its way to its set.
            let mut record = RequestRecord::default();
            let (mut response, access_log) = boxed_in_place(|| {
                dispatch_http2(&state, role, &conn_info, request, started, &mut record)
            })
            .await;
            if method == Method::HEAD {
                response = without_body(response);
            }
            let completion = Completion::new(
                started,
                method,
                response.status(),
                record,
                (&state.metrics, &state.unrouted),
                access_log,
            );
            if let (Some(on_upgrade), Some((upstream, metrics))) =
                (on_upgrade, take_tunnel(&mut response))
            {
                let (parts, body) = response.into_parts();
                // One stream of the connection is the tunnel; the others go on. A task of its
                // own, under the executor that contains its panics like a connection's.
                let switch = Switch {
                    upstream,
                    metrics,
                    completion,
                    body,
                    idle_timeout: limits.idle_timeout,
                    guard: Some(activity.request_started()),
                };
                let tunnel = super::upgrade::serve_hyper(on_upgrade, switch, tunnel_phase);
                hyper::rt::Executor::execute(
                    &crate::observability::panics::ContainedExecutor,
                    tunnel,
                );
                let head = TrackedBody::without_completion(ResponseBody::Empty, guard);
                return Ok(Response::from_parts(parts, head));
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, guard, completion)))
        }
    });
    let watch = Watch {
        activity,
        idle_timeout: limits.idle_timeout,
        phase,
        role,
        peer,
    };
    let (streams, executor) = Streams::new();
    let mut builder = http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .enable_connect_protocol()
        .max_header_list_size(settings.max_header_list_size);
    let conn = builder.serve_connection(io, service);
    watch.drive(conn, streams, |c| c.graceful_shutdown()).await;
}

/// What watches a hyper connection: its idle clock and the gateway's phase.
struct Watch {
    activity: Arc<Activity>,
    idle_timeout: std::time::Duration,
    phase: watch::Receiver<Phase>,
    role: Role,
    peer: std::net::SocketAddr,
}

impl Watch {
    /// Polls `conn` and the `streams` it starts until all are done; `graceful` asks it to
    /// finish its requests and close.
    async fn drive<C, E>(
        self,
        conn: C,
        mut streams: Streams,
        graceful: impl Fn(std::pin::Pin<&mut C>),
    ) where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Watch {
            activity,
            idle_timeout,
            mut phase,
            role,
            peer,
        } = self;
        tokio::pin!(conn);

        let first_look = match activity.verdict(idle_timeout) {
            Verdict::Wait(after) => after,
            Verdict::Idle => std::time::Duration::ZERO,
        };
        let watchdog = tokio::time::sleep(first_look);
        tokio::pin!(watchdog);
        let side = SideWake::new();
        let mut draining = false;
        // The connection's result once it is done; its streams may still be finishing (h2
        // ends them at once when the connection is gone).
        let mut closed = None;
        loop {
            let event = {
                let changed = phase.changed();
                tokio::pin!(changed);
                side.rearm();
                std::future::poll_fn(|cx| {
                    // Streams first: what they send goes out in the connection's poll.
                    streams.poll(cx);
                    if closed.is_none() {
                        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                            closed = Some(result);
                        }
                        // Streams it just started run at once.
                        streams.poll(cx);
                    }
                    if streams.is_empty() {
                        if let Some(result) = closed.take() {
                            return Poll::Ready(Event::Closed(result));
                        }
                    }
                    side.poll_if_woken(cx, |side_cx| {
                        if !draining && watchdog.as_mut().poll(side_cx).is_ready() {
                            return Poll::Ready(Event::Watchdog);
                        }
                        changed.as_mut().poll(side_cx).map(Event::Phase)
                    })
                })
                .await
            };
            match event {
                Event::Closed(result) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                Event::Watchdog => match activity.verdict(idle_timeout) {
                    Verdict::Wait(after) => {
                        watchdog.as_mut().reset(tokio::time::Instant::now() + after)
                    }
                    Verdict::Idle => {
                        if closed.is_none() {
                            graceful(conn.as_mut());
                        }
                        draining = true;
                    }
                },
                Event::Phase(changed) => {
                    let now = if changed.is_ok() {
                        *phase.borrow_and_update()
                    } else {
                        Phase::Terminate
                    };
                    match now {
                        Phase::Running => {}
                        Phase::Draining if role == Role::Admin => {}
                        Phase::Draining if !draining => {
                            if closed.is_none() {
                                graceful(conn.as_mut());
                            }
                            draining = true;
                        }
                        Phase::Draining => {}
                        Phase::Terminate => return,
                    }
                }
            }
        }
    }
}

/// What ended one wait of a connection's loop.
enum Event<E> {
    /// The connection is done (closed, failed, or shut down).
    Closed(Result<(), E>),
    /// The idle watchdog fired.
    Watchdog,
    /// The gateway's phase changed (or its sender is gone).
    Phase(Result<(), watch::error::RecvError>),
}

/// Boxes the future `make` returns, allocating first: the future can then be written straight
/// into the box. `Box::pin(make())` builds it on the stack and copies it over, and for the
/// pipeline's future (8 KiB) that copy came and went with unrelated changes to the code
/// around it (measured).
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// [`dispatch`], with the response's head made ready for HPACK.
async fn dispatch_http2(
    state: &GatewayState,
    role: Role,
    conn: &ConnInfo,
    request: Request<RequestBody>,
    received: Instant,
    record: &mut RequestRecord,
) -> (Response<ResponseBody>, bool) {
    let (mut head, body) = request.into_parts();
    let mut dispatched = dispatch(state, role, conn, &mut head, body, received, record).await;
    // What the request left of its head goes now, as when the head was the pipeline's.
    drop(head);
    never_indexed(dispatched.0.headers_mut());
    dispatched
}

/// Marks the response's request id for HPACK's "never indexed" literal. A value that is new on
/// every response only churns a connection's dynamic table: each one was inserted, evicting
/// the values that do repeat (server, content type), and the next was looked up by comparing
/// it with every id still held (4 KiB of them). As a literal it costs ~10 bytes more and no
/// table work; HAProxy sends every response header as a literal.
fn never_indexed(headers: &mut http::HeaderMap) {
    if let Some(id) = headers.get_mut(X_REQUEST_ID) {
        id.set_sensitive(true);
    }
}

/// A HEAD response keeps its headers but sends no body. hyper drops the body for HTTP/1.1 but
/// sends it as DATA frames on HTTP/2, which clients reject as a protocol error.
fn without_body(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = body.size_hint().exact() {
            parts.headers.insert(header::CONTENT_LENGTH, len.into());
        }
    }
    Response::from_parts(parts, ResponseBody::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_never_indexed_and_other_headers_are() {
        let mut response = Response::builder()
            .header(X_REQUEST_ID, "69d051b8b4d901de544e1f814101acdc")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(())
            .unwrap();
        never_indexed(response.headers_mut());
        assert!(response.headers()[X_REQUEST_ID].is_sensitive());
        assert!(!response.headers()[header::CONTENT_TYPE].is_sensitive());

        // A response without one is left as it is.
        let mut bare = Response::new(());
        never_indexed(bare.headers_mut());
        assert!(bare.headers().is_empty());
    }
}
