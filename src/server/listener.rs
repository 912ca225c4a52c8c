//! Accepting connections and serving each one until it closes, idles out, or shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{header, Method, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::builtin;
use super::connection::{Activity, TrackedBody, TrackedIo, Verdict};
use super::side_wake::SideWake;
use super::state::GatewayState;
use super::workers::Workers;
use crate::error::GatewayError;
use crate::observability::access_log::{Completion, RequestRecord};
use crate::observability::request_id::{request_id, X_REQUEST_ID};
use crate::proxy::body::ResponseBody;
use crate::proxy::pipeline::{self, ConnInfo};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `server.listen`: routes, and the built-in endpoints when there is no admin listener.
    Main,
    /// `admin.listen`: only the built-in endpoints.
    Admin,
}

/// Where the process is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Finish in-flight requests, close idle connections, accept nothing new.
    Draining,
    /// Close everything now.
    Terminate,
}

/// Counts open connections so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct OpenConnections {
    count: AtomicUsize,
    closed: Notify,
}

impl OpenConnections {
    /// Connections currently open.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn open(self: &Arc<Self>) -> ConnectionGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(Arc::clone(self))
    }
}

/// Holds one count of [`OpenConnections`] while its connection is open.
pub struct ConnectionGuard(Arc<OpenConnections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// Where accepted connections are served.
pub enum Placement {
    /// On the runtime that accepted them (the admin listener: a few probes and scrapes).
    Here,
    /// On the least busy worker thread (the main listener).
    Workers(Workers),
}

/// Accepts connections until the phase leaves `Running` (the admin listener: until `Terminate`,
/// so probes see `/readyz` turn 503 and scrapes continue while the main listener drains).
pub async fn accept_loop(
    listener: TcpListener,
    role: Role,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    open: Arc<OpenConnections>,
    placement: Placement,
) {
    let mut stop = phase.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let guard = open.open();
                    match &placement {
                        Placement::Here => {
                            let (state, phase) = (Arc::clone(&state), phase.clone());
                            tokio::spawn(serve_counted(stream, peer, role, state, phase, guard));
                        }
                        Placement::Workers(workers) => workers.assign(stream, peer, guard),
                    }
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stops_accepting(&mut stop, role) => break,
        }
    }
}

/// Resolves once a listener of `role` must stop accepting (or the gateway is gone).
async fn stops_accepting(phase: &mut watch::Receiver<Phase>, role: Role) {
    let keeps_accepting = |now: Phase| match role {
        Role::Main => now == Phase::Running,
        Role::Admin => now != Phase::Terminate,
    };
    while keeps_accepting(*phase.borrow_and_update()) {
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// Serves one connection, counted in the metrics and in [`OpenConnections`] until it closes.
pub(super) async fn serve_counted(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    guard: ConnectionGuard,
) {
    state.metrics.connection_opened();
    let metrics = Arc::clone(&state.metrics);
    serve_connection(stream, peer, role, state, phase).await;
    metrics.connection_closed();
    drop(guard);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    state: Arc<GatewayState>,
    mut phase: watch::Receiver<Phase>,
) {
    let _ = stream.set_nodelay(true);
    let (builder, header_timeout, idle_timeout) = {
        let snapshot = state.snapshot.load();
        let server = &snapshot.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Twice the limit: heads just over it still parse, so our check answers 431 in JSON;
        // hyper's own bare 431 only meets heads far beyond it.
        let buffer = (server.max_header_bytes.saturating_mul(2)).clamp(16 << 10, 16 << 20) as usize;
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(buffer)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(server.max_concurrent_streams)
            .max_header_list_size(buffer.min(u32::MAX as usize) as u32);
        (builder, server.request_header_timeout, server.idle_timeout)
    };

    let activity = Activity::new();
    let io = TokioIo::new(TrackedIo::new(stream, Arc::clone(&activity)));
    let conn_info = Arc::new(ConnInfo::new(peer, "http"));
    let service_activity = Arc::clone(&activity);
    let service = service_fn(move |request: Request<Incoming>| {
        let state = Arc::clone(&state);
        let conn_info = Arc::clone(&conn_info);
        let guard = service_activity.request_started();
        async move {
            let started = Instant::now();
            state.metrics.request_started();
            let method = request.method().clone();
            let (mut response, record, access_log) =
                dispatch(&state, role, &conn_info, request).await;
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
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, guard, completion)))
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    let watchdog = tokio::time::sleep(header_timeout.min(idle_timeout));
    tokio::pin!(watchdog);
    let side = SideWake::new();
    let mut draining = false;
    loop {
        let event = {
            let changed = phase.changed();
            tokio::pin!(changed);
            side.rearm();
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Closed(result));
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
            Event::Watchdog => match activity.verdict(header_timeout, idle_timeout) {
                Verdict::Wait(after) => {
                    watchdog.as_mut().reset(tokio::time::Instant::now() + after)
                }
                Verdict::SlowHeaders => {
                    tracing::debug!(%peer, timeout = ?header_timeout, "closing connection: request head not received in time");
                    return;
                }
                Verdict::Idle => {
                    conn.as_mut().graceful_shutdown();
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
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    Phase::Draining => {}
                    Phase::Terminate => return,
                }
            }
        }
    }
}

/// What ended one wait of a connection's loop.
enum Event<E> {
    /// The connection is done (closed, failed, or shut down).
    Closed(Result<(), E>),
    /// The slow-header / idle watchdog fired.
    Watchdog,
    /// The gateway's phase changed (or its sender is gone).
    Phase(Result<(), watch::error::RecvError>),
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

/// Built-in endpoints, then routes. Returns the response, what happened, and whether the
/// access log wants a line for it.
async fn dispatch(
    state: &GatewayState,
    role: Role,
    conn: &ConnInfo,
    request: Request<Incoming>,
) -> (Response<ResponseBody>, RequestRecord, bool) {
    let snapshot = state.snapshot.load_full();
    let builtins_here = match role {
        Role::Admin => true,
        Role::Main => snapshot.admin_listen.is_none(),
    };
    if builtins_here {
        if let Some(response) = builtin::serve(state, request.method(), request.uri().path()) {
            // Probes and scrapes every few seconds would drown the access log.
            return (response, RequestRecord::default(), false);
        }
    }
    if role == Role::Admin {
        let id = request_id(request.headers());
        let mut response = GatewayError::NoRoute.to_response(&id);
        response.headers_mut().insert(X_REQUEST_ID, id);
        return (response, RequestRecord::default(), false);
    }
    let access_log = snapshot.logging.access_log;
    let (response, record) = pipeline::handle(&snapshot, conn, request, &state.metrics).await;
    (response, record, access_log)
}
