//! Serving an HTTP/1.x client connection (plain, or TLS after its handshake) with the gateway's
//! own loop over the sans-I/O pieces in [`crate::http1`], instead of hyper's server connection.
//!
//! hyper keeps an 8 KiB write buffer and a 16 KiB read buffer (plus its connection state) for as
//! long as a connection is open, which made every idle keep-alive connection cost ~36 KiB. Here
//! a connection that waits for its next request holds no buffer: [`Inbound`] takes one when bytes
//! arrive and gives it back when the request is done, and everything a request needs (the
//! pipeline's future, the response writer) lives in one allocation made for that request.
//!
//! Timeouts, as nginx has them: `request_header_timeout` runs from the first byte of a head (from
//! accept for the first one), `idle_timeout` from the end of the last response.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::listener::{dispatch, Phase, Role};
use super::side_wake::SideWake;
use super::state::GatewayState;
use super::upgrade::Switch;
use crate::body::{RequestBody, DRAIN_MAX_BYTES, DRAIN_MAX_TIME};
use crate::error::GatewayError;
use crate::http1::inbound::{BodyLeft, HeadReadError, Inbound};
use crate::http1::io::{BodySender, PollWrite, SendError};
use crate::http1::request::{HeadError, RequestHead, MAX_HEADER_NAME};
use crate::http1::response::{encode_response_head, Persistence, ResponseFraming};
use crate::http1::transport::Transport;
use crate::observability::access_log::{Completion, RequestRecord};
use crate::observability::request_id::{request_id, X_REQUEST_ID};
use crate::proxy::body::ResponseBody;
use crate::proxy::pipeline::{note_tls, ConnInfo};
use crate::proxy::upgrade::take_tunnel;

/// What one connection is served with, read from the config when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `server.request_header_timeout`.
    pub header_timeout: Duration,
    /// `server.idle_timeout`.
    pub idle_timeout: Duration,
    /// Largest request head read, in bytes.
    pub max_head: usize,
}

/// The first bytes of HTTP/2 with prior knowledge (RFC 9113 §3.4); no HTTP/1.1 method is `PRI`.
const H2_PREFACE_START: &[u8] = b"PRI ";
/// The whole client connection preface of HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The answer to a connection that starts like HTTP/2 but is not (RFC 9113 §3.4: a connection
/// error of type PROTOCOL_ERROR): the server's preface, an empty SETTINGS frame, which must be
/// its first frame, then GOAWAY with last-stream-id 0 and error code PROTOCOL_ERROR (0x1).
const H2_PREFACE_REFUSED: &[u8] = &[
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS: length 0, type 0x4, no flags, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY: length 8, type 0x7, no flags, stream 0
    0, 0, 0, 0, // last stream id
    0, 0, 0, 0x1, // PROTOCOL_ERROR
];

/// One client connection, from accept until it closes or turns out to speak HTTP/2.
///
/// Everything the connection keeps while it waits lives here once; the task that serves it
/// holds this and the state of one wait, nothing more.
pub(super) struct ClientConnection {
    inbound: Arc<Inbound>,
    conn: ConnInfo,
    role: Role,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    limits: Limits,
}

/// A connection whose first bytes were an HTTP/2 preface, with what was read of it.
pub(super) struct Http2Handoff {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes already read from it.
    pub read: Bytes,
    /// The peer and scheme.
    pub conn: ConnInfo,
    /// Which listener accepted it.
    pub role: Role,
    /// The gateway.
    pub state: Arc<GatewayState>,
    /// The gateway's phase.
    pub phase: watch::Receiver<Phase>,
    /// Its timeouts.
    pub limits: Limits,
}

impl ClientConnection {
    /// A connection just accepted, with the limits of the config in force now.
    pub(super) fn accept(
        stream: TcpStream,
        peer: SocketAddr,
        role: Role,
        state: Arc<GatewayState>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let limits = {
            let snapshot = state.snapshot.load();
            let server = &snapshot.server;
            Limits {
                header_timeout: server.request_header_timeout,
                idle_timeout: server.idle_timeout,
                max_head: usize::try_from(server.max_header_bytes).unwrap_or(usize::MAX),
            }
        };
        ClientConnection {
            inbound: Inbound::new(stream),
            conn: ConnInfo::new(peer),
            role,
            state,
            phase,
            limits,
        }
    }

    /// A TLS connection whose handshake is done, on the main listener, served like a plain one.
    pub(super) fn over_tls(
        transport: Transport,
        conn: ConnInfo,
        state: Arc<GatewayState>,
        phase: watch::Receiver<Phase>,
        limits: Limits,
    ) -> Self {
        ClientConnection {
            inbound: Inbound::over(transport),
            conn,
            role: Role::Main,
            state,
            phase,
            limits,
        }
    }

    /// Serves requests until the client closes the connection, a timeout or an error ends it,
    /// or the gateway's phase says to stop. A connection that opens with the HTTP/2 preface is
    /// handed back for HTTP/2.
    pub(super) async fn serve(self) -> Option<Http2Handoff> {
        let mut phase = PhaseFollower::new(&self.phase);
        let close_after = AtomicBool::new(false);
        let mut first = true;
        let end = loop {
            // The head goes straight into the request's own allocation (the pipeline's state is
            // large, and an idle connection need not carry room for it). Nothing that holds a
            // head may live across an await here: even moved from, a local keeps its room in
            // the connection's future until its scope ends.
            let (inbound, limits) = (&self.inbound, &self.limits);
            let mut request = match next_head(inbound, &mut phase, self.role, limits, first).await {
                Ok(head) => {
                    if phase_says_close(phase.now, self.role) {
                        close_after.store(true, Ordering::Relaxed);
                    }
                    // Allocated before the future is made, so it is written straight into
                    // its box: `Box::pin(serve_request(..))` builds it on the stack first, and
                    // with `panic = "unwind"` (the stack copy must stay droppable while the
                    // allocation could unwind) that cost a memcpy of the whole state, ~5 KiB,
                    // per request.
                    let slot = Box::new_uninit();
                    Box::into_pin(Box::write(
                        slot,
                        serve_request(
                            &self.inbound,
                            head,
                            &self.conn,
                            self.role,
                            &self.state,
                            &close_after,
                        ),
                    ))
                }
                Err(stop) => break stop,
            };
            first = false;
            let keep_going = poll_fn(|cx| loop {
                if let Poll::Ready(keep_going) = request.as_mut().poll(cx) {
                    return Poll::Ready(keep_going);
                }
                match phase.poll_change(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Phase::Terminate) => return Poll::Ready(false),
                    Poll::Ready(now) => {
                        if phase_says_close(now, self.role) {
                            close_after.store(true, Ordering::Relaxed);
                        }
                    }
                }
            })
            .await;
            drop(request);
            if !keep_going {
                break Stop::Quietly;
            }
            self.inbound.release_buffer();
        };
        drop(phase);
        let tls = self.inbound.transport().is_tls();
        match end {
            Stop::Quietly => {
                if tls {
                    close_notify_now(&self.inbound);
                }
                None
            }
            Stop::Http2 if !tls => self.into_http2(),
            // Over TLS, HTTP/2 is chosen by ALPN (RFC 9113 §3.3), never by a preface sent on a
            // connection that agreed on HTTP/1.1 (or on nothing).
            Stop::Http2 | Stop::BadPreface => {
                Box::pin(refuse_http2(&self.inbound)).await;
                None
            }
            Stop::Refuse(error) => {
                Box::pin(refuse(&self.inbound, &self.conn, &self.state, error)).await;
                None
            }
        }
    }

    fn into_http2(self) -> Option<Http2Handoff> {
        let peer = self.conn.peer;
        match self.inbound.into_parts() {
            Ok((stream, read)) => Some(Http2Handoff {
                stream,
                read,
                conn: self.conn,
                role: self.role,
                state: self.state,
                phase: self.phase,
                limits: self.limits,
            }),
            Err(_) => {
                tracing::warn!(%peer, "connection still in use after protocol detection");
                None
            }
        }
    }
}

/// Whether `phase` means the connection closes after the request in hand.
fn phase_says_close(phase: Phase, role: Role) -> bool {
    match phase {
        Phase::Running => false,
        // The admin listener keeps answering probes and scrapes while the gateway drains.
        Phase::Draining => role == Role::Main,
        Phase::Terminate => true,
    }
}

/// Why no request head came.
enum Stop {
    /// Closed, timed out, or told to stop: nothing to answer.
    Quietly,
    /// The connection opened with the HTTP/2 preface.
    Http2,
    /// The connection opened like the HTTP/2 preface, but its preface is not valid.
    BadPreface,
    /// A head was refused: answer this, then close.
    Refuse(GatewayError),
}

/// Waits for the next request head: first for its first byte (the idle clock, or the header
/// clock for a connection's first request), then for the rest (the header clock). The first
/// bytes of a connection also say whether it speaks HTTP/2.
async fn next_head(
    inbound: &Inbound,
    phase: &mut PhaseFollower,
    role: Role,
    limits: &Limits,
    first: bool,
) -> Result<RequestHead, Stop> {
    let mut in_head = first || inbound.buffered() > 0;
    let mut detecting = first;
    let clock = if in_head {
        limits.header_timeout
    } else {
        limits.idle_timeout
    };
    let mut timer = pin!(tokio::time::sleep(clock));
    poll_fn(|cx| loop {
        // Idle: close now. In the middle of a head: serve it, then close.
        if phase.now == Phase::Terminate
            || (phase_says_close(phase.now, role) && inbound.buffered() == 0)
        {
            return Poll::Ready(Err(Stop::Quietly));
        }
        if let Some(outcome) = poll_head(inbound, cx, *limits, &mut detecting) {
            return Poll::Ready(outcome);
        }
        if !in_head && inbound.buffered() > 0 {
            in_head = true;
            let deadline = tokio::time::Instant::now() + limits.header_timeout;
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            if in_head {
                tracing::debug!(timeout = ?limits.header_timeout, "closing connection: request head not received in time");
            }
            return Poll::Ready(Err(Stop::Quietly));
        }
        if phase.poll_change(cx).is_pending() {
            return Poll::Pending;
        }
        // The phase changed: look at it again above.
    })
    .await
}

/// The next change of the gateway's phase, with the receiver to wait for the one after.
type PhaseChange = Pin<Box<dyn Future<Output = (Phase, watch::Receiver<Phase>)> + Send>>;

fn next_phase(mut phase: watch::Receiver<Phase>) -> PhaseChange {
    Box::pin(async move {
        let now = match phase.changed().await {
            Ok(()) => *phase.borrow_and_update(),
            Err(_) => Phase::Terminate,
        };
        (now, phase)
    })
}

/// The gateway's phase as one connection follows it. Its registration with the phase watch is
/// made once and kept until the phase changes, and polled only after it woke the task:
/// registering or polling for every request would take the watch's lock, which every
/// connection of every worker shares.
struct PhaseFollower {
    /// The phase as last seen.
    now: Phase,
    change: PhaseChange,
    wake: SideWake,
}

impl PhaseFollower {
    fn new(phase: &watch::Receiver<Phase>) -> Self {
        let mut phase = phase.clone();
        let now = *phase.borrow_and_update();
        PhaseFollower {
            now,
            change: next_phase(phase),
            wake: SideWake::new(),
        }
    }

    /// The new phase once it changed (then the next change is waited for).
    fn poll_change(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Phase> {
        let change = &mut self.change;
        let (now, phase) = ready!(self
            .wake
            .poll_if_woken(cx, |side_cx| change.as_mut().poll(side_cx)));
        self.now = now;
        self.change = next_phase(phase);
        self.wake.rearm();
        Poll::Ready(now)
    }
}

/// One look for the next head: `None` while it is still coming.
fn poll_head(
    inbound: &Inbound,
    cx: &mut std::task::Context<'_>,
    limits: Limits,
    detecting: &mut bool,
) -> Option<Result<RequestHead, Stop>> {
    while *detecting {
        // Once a connection says `PRI `, it is HTTP/2 or nothing: its whole preface decides.
        let preface = match inbound.starts_with(H2_PREFACE_START) {
            Some(true) => inbound.starts_with(H2_PREFACE),
            Some(false) => {
                *detecting = false;
                break;
            }
            None => None,
        };
        match preface {
            Some(true) => return Some(Err(Stop::Http2)),
            Some(false) => return Some(Err(Stop::BadPreface)),
            None => match inbound.poll_read_some(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(Err(Stop::Quietly)),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return None,
            },
        }
    }
    match inbound.poll_head(cx, limits.max_head) {
        Poll::Pending => None,
        Poll::Ready(Ok(Some(head))) => Some(Ok(head)),
        Poll::Ready(Ok(None) | Err(HeadReadError::Closed(_))) => Some(Err(Stop::Quietly)),
        Poll::Ready(Err(HeadReadError::Head(error))) => {
            Some(Err(Stop::Refuse(head_error(error, limits))))
        }
    }
}

/// The gateway's error for a refused head.
fn head_error(error: HeadError, limits: Limits) -> GatewayError {
    match error {
        HeadError::TooLarge => GatewayError::HeadersTooLarge {
            limit: limits.max_head as u64,
        },
        HeadError::NameTooLong => GatewayError::HeaderNameTooLong {
            limit: MAX_HEADER_NAME,
        },
        HeadError::Version => GatewayError::VersionNotSupported,
        HeadError::Malformed(what) => GatewayError::BadRequest(what),
    }
}

/// Answers a refused head with its error and closes the connection.
async fn refuse(inbound: &Inbound, conn: &ConnInfo, state: &GatewayState, error: GatewayError) {
    let id = request_id(&http::HeaderMap::new());
    let mut response = error.to_response(&id);
    response.headers_mut().insert(X_REQUEST_ID, id.clone());
    state.metrics.request_started();
    let access_log = state.snapshot.load().logging.access_log;
    let mut record = RequestRecord::default();
    if access_log {
        // Its fields were not read, so `trusted_proxies` cannot apply: the peer is the client.
        record.client_ip = Some(conn.peer.ip().to_canonical());
        record.raw_path = inbound.refused_path();
        record.request_id = Some(id);
    }
    note_tls(&mut record, conn, access_log);
    // The head was refused, so its method (if it had one) is not to be trusted: counted as
    // OTHER in the metrics rather than as some real method.
    let unparsed = Method::from_bytes(b"-").expect("`-` is a valid method token");
    let completion = Completion::new(
        Instant::now(),
        unparsed,
        response.status(),
        record,
        (&state.metrics, &state.unrouted),
        access_log,
    );
    let sent = send_response(
        inbound,
        response,
        false,
        Version::HTTP_11,
        Persistence::Close,
    )
    .await;
    finish_completion(completion, &sent);
    linger_close(inbound).await;
}

/// Says `close_notify` to a TLS client whose connection ends without an answer (it closed, or
/// a timeout ran out), if the socket takes it now: the client then sees a clean end rather than
/// a truncation. Nothing is waited for.
fn close_notify_now(inbound: &Inbound) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = inbound.transport().poll_shutdown_write(&mut cx);
}

/// Answers an invalid HTTP/2 preface with GOAWAY(PROTOCOL_ERROR) and closes the connection.
async fn refuse_http2(inbound: &Inbound) {
    let mut stream = inbound.transport();
    let mut left = H2_PREFACE_REFUSED;
    let write = poll_fn(|cx| {
        while !left.is_empty() {
            let n = ready!(stream.poll_write_vectored(cx, &[IoSlice::new(left)]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            left = &left[n..];
        }
        stream.poll_flush(cx)
    });
    match tokio::time::timeout(LINGER_TIME, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "GOAWAY for an invalid HTTP/2 preface not sent"),
        Err(_) => tracing::debug!("GOAWAY for an invalid HTTP/2 preface not sent in time"),
    }
    linger_close(inbound).await;
}

/// Serves one request: the pipeline, then the response; returns whether the connection can
/// carry another request.
async fn serve_request(
    inbound: &Arc<Inbound>,
    head: RequestHead,
    conn: &ConnInfo,
    role: Role,
    state: &Arc<GatewayState>,
    close_after: &AtomicBool,
) -> bool {
    let RequestHead {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    let started = Instant::now();
    state.metrics.request_started();
    let method = parts.method.clone();
    let version = parts.version;
    let body = RequestBody::Http1(inbound.start_body(framing, expect_continue));
    let mut record = RequestRecord::default();
    let dispatched = dispatch(state, role, conn, &mut parts, body, started, &mut record).await;
    // What the request left of its head goes now, as when the head was the pipeline's.
    drop(parts);
    let (mut response, access_log) = dispatched;
    let completion = Completion::new(
        started,
        method.clone(),
        response.status(),
        record,
        (&state.metrics, &state.unrouted),
        access_log,
    );
    if let Some((upstream, metrics)) = take_tunnel(&mut response) {
        // The connection is the tunnel's now, and closes with it.
        let (parts, body) = response.into_parts();
        let switch = Switch {
            upstream,
            metrics,
            completion,
            body,
            idle_timeout: state.snapshot.load().server.idle_timeout,
            guard: None,
        };
        let head = Response::from_parts(parts, ResponseBody::Empty);
        // Boxed: the tunnel's state would otherwise make every request's allocation larger.
        Box::pin(super::upgrade::serve_http1(inbound, head, switch)).await;
        return false;
    }

    // When the connection will close after this answer, the answer says so.
    let mut close = !keep_alive || close_after.load(Ordering::Relaxed) || inbound.ends_connection();
    let persistence = if close {
        Persistence::Close
    } else if version == Version::HTTP_10 {
        Persistence::KeepAliveAnnounced
    } else {
        Persistence::KeepAlive
    };
    let mut sending = start_response(
        inbound,
        response,
        method == Method::HEAD,
        version,
        persistence,
    );
    let sent = sending.send(inbound).await;
    // The body goes (and with it an upstream connection, back to its pool) before the request
    // is counted as finished, as when it was dropped inside the sending future.
    drop(sending);
    finish_completion(completion, &sent);
    close |= !sent.complete || sent.until_close;
    let left = inbound.finish_body();
    if !close {
        close = !discard_unread_body(inbound, left).await;
    }
    if close {
        linger_close(inbound).await;
    }
    !close
}

/// What writing a response achieved.
struct Sent {
    /// Body bytes written.
    body_bytes: u64,
    /// The whole response was written.
    complete: bool,
    /// The body itself failed (rather than the client going away).
    body_failed: bool,
    /// The body was delimited by closing the connection.
    until_close: bool,
}

/// Writes `response` (no body for HEAD requests and statuses that have none), framed by its
/// body's known length, chunked, or by closing for HTTP/1.0 clients.
async fn send_response(
    inbound: &Inbound,
    response: Response<ResponseBody>,
    head_request: bool,
    version: Version,
    persistence: Persistence,
) -> Sent {
    let mut sending = start_response(inbound, response, head_request, version, persistence);
    sending.send(inbound).await
}

/// A response whose head is encoded, on its way to the client.
struct Sending {
    sender: BodySender<ResponseBody>,
    framing: ResponseFraming,
}

impl Sending {
    /// Writes the head and body; what that achieved.
    async fn send(&mut self, inbound: &Inbound) -> Sent {
        let sender = &mut self.sender;
        let result = poll_fn(|cx| sender.poll_send(inbound.transport(), cx)).await;
        if let Err(error) = &result {
            tracing::debug!(%error, "response not sent in full");
        }
        Sent {
            body_bytes: sender.body_bytes,
            complete: result.is_ok(),
            body_failed: matches!(result, Err(SendError::Body(_))),
            until_close: self.framing == ResponseFraming::UntilClose,
        }
    }
}

/// Encodes the head of `response` and readies its body for [`Sending::send`]. Not `async`:
/// the response is taken apart right where it lies instead of being moved into one more
/// future's state (a memcpy of the whole response per request with `panic = "unwind"`).
fn start_response(
    inbound: &Inbound,
    response: Response<ResponseBody>,
    head_request: bool,
    version: Version,
    mut persistence: Persistence,
) -> Sending {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Bodiless(bodiless_length(status, &parts.headers, &body, head_request))
    } else if let Some(n) = body.size_hint().exact() {
        ResponseFraming::Length(n)
    } else if version == Version::HTTP_11 {
        ResponseFraming::Chunked
    } else {
        persistence = Persistence::Close;
        ResponseFraming::UntilClose
    };
    let mut head = Vec::new();
    encode_response_head(status, &parts.headers, framing, persistence, &mut head);
    drop(parts);
    inbound.response_started();
    let body = (!bodiless).then_some(body);
    Sending {
        sender: BodySender::new(Bytes::from(head), body, framing == ResponseFraming::Chunked),
        framing,
    }
}

/// The Content-Length a bodiless response announces: the one it carries, or for a HEAD request
/// the size of the body the gateway itself would have sent. 1xx and 204 announce none.
fn bodiless_length(
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &ResponseBody,
    head_request: bool,
) -> Option<u64> {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return None;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| crate::http1::parse_length(v.as_bytes()));
    // An upstream's own answer to HEAD says its length itself, or not at all.
    let own_body = !matches!(body, ResponseBody::Upstream(_));
    declared.or_else(|| {
        (head_request && own_body && status != StatusCode::NOT_MODIFIED)
            .then(|| body.size_hint().exact())
            .flatten()
    })
}

fn finish_completion(mut completion: Completion, sent: &Sent) {
    completion.bytes_out = sent.body_bytes;
    completion.completed = sent.complete;
    if sent.body_failed {
        completion.body_failed();
    }
}

/// Reads what the client still sends of a body nobody read, within the drain limits, so the
/// connection can carry the next request. `false`: it has to close instead.
async fn discard_unread_body(inbound: &Inbound, left: BodyLeft) -> bool {
    match left {
        BodyLeft::Nothing => return true,
        BodyLeft::Broken => return false,
        BodyLeft::Unread(Some(left)) if left > DRAIN_MAX_BYTES => return false,
        BodyLeft::Unread(_) => {}
    }
    let mut budget = DRAIN_MAX_BYTES;
    let discard = poll_fn(|cx| inbound.poll_discard_body(cx, &mut budget));
    matches!(
        tokio::time::timeout(DRAIN_MAX_TIME, discard).await,
        Ok(Ok(true))
    )
}

/// The longest a closing connection reads and discards what the client still sends (nginx's
/// `lingering_time` is 30 s; clients that answered requests they had not finished sending stop
/// well within this).
const LINGER_TIME: Duration = Duration::from_secs(5);

/// Closes the connection after its last response without destroying that response: the
/// sending side is shut, then what the client still sends is read and discarded until it
/// closes too, for at most [`LINGER_TIME`] (nginx's lingering close).
async fn linger_close(inbound: &Inbound) {
    // Under TLS `close_notify` goes first, and may have to wait for room in the socket.
    let shutdown = poll_fn(|cx| inbound.transport().poll_shutdown_write(cx));
    if !matches!(
        tokio::time::timeout(LINGER_TIME, shutdown).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // Until the client closes: a close with unread bytes makes the kernel reset the connection,
    // and a reset can destroy the answer in the client's receive buffer before it reads it.
    let discard = poll_fn(|cx| loop {
        match ready!(inbound.poll_discard(cx)) {
            Ok(0) | Err(_) => return Poll::Ready(()),
            Ok(_) => {}
        }
    });
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}
