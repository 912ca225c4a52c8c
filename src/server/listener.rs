//! Accepting connections and serving each one until it closes, idles out, or shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use http::request::Parts;
use http::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::builtin;
use super::http1::{ClientConnection, Http2Handoff};
use super::http2::serve_http2;
use super::https::serve_tls;
use super::state::GatewayState;
use super::workers::Workers;
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::observability::access_log::RequestRecord;
use crate::observability::panics;
use crate::observability::request_id::{request_id, X_REQUEST_ID};
use crate::proxy::body::ResponseBody;
use crate::proxy::pipeline::{self, ConnInfo, Gateway};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `server.listen`: routes, and the built-in endpoints when there is no admin listener.
    Main,
    /// `admin.listen`: only the built-in endpoints.
    Admin,
}

/// What a listener's connections speak under HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: HTTP/1.x, or HTTP/2 with prior knowledge.
    Plain,
    /// TLS (`server.tls`): HTTP/2 or HTTP/1.1 as ALPN chooses.
    Tls,
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
    /// On the least busy worker thread (the main and HTTPS listeners).
    Workers(Arc<Workers>),
}

/// Accepts connections until the phase leaves `Running` (the admin listener: until `Terminate`,
/// so probes see `/readyz` turn 503 and scrapes continue while the main listener drains).
pub async fn accept_loop(
    listener: TcpListener,
    role: Role,
    transport: Transport,
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
                            tokio::spawn(serve_counted(stream, peer, role, transport, state, phase, guard));
                        }
                        Placement::Workers(workers) => workers.assign(stream, peer, transport, guard),
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

/// Serves one connection, counted in the metrics and in [`OpenConnections`] (by `guard`) until
/// it closes.
pub(super) fn serve_counted<G: Send + 'static>(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    transport: Transport,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    guard: G,
) -> impl Future<Output = ()> + Send + 'static {
    state.metrics.connection_opened();
    let metrics = Arc::clone(&state.metrics);
    let serving = match transport {
        Transport::Plain => {
            Either::Left(ClientConnection::accept(stream, peer, role, state, phase).serve())
        }
        // Boxed: the TLS session's state would otherwise size every plain connection's task.
        Transport::Tls => Either::Right(Box::pin(serve_tls(stream, peer, state, phase))),
    };
    Counted {
        metrics,
        serving,
        http2: None,
        guard: Some(guard),
    }
}

pin_project_lite::pin_project! {
    /// A connection's task: serving it, then its bookkeeping once it closes. A plain struct
    /// rather than an `async` block, which would keep a second copy of the serving future
    /// (awaiting a captured future moves it) in every connection's task.
    struct Counted<F, G> {
        #[pin]
        serving: F,
        // Boxed: hyper's HTTP/2 connection state would otherwise size every connection's task.
        http2: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
        metrics: Arc<crate::observability::metrics::Metrics>,
        guard: Option<G>,
    }

    // In drop rather than at the end of `poll`: a task that panicked, or was cut at shutdown,
    // is dropped without finishing, and must still leave the counts right.
    impl<F, G> PinnedDrop for Counted<F, G> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.guard.take().is_some() {
                this.metrics.connection_closed();
            }
        }
    }
}

impl<F, G> Future for Counted<F, G>
where
    F: Future<Output = Option<Http2Handoff>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // A panic from here on is contained to this connection (observability::panics).
        panics::serving(|| loop {
            if let Some(http2) = this.http2.as_mut() {
                ready!(http2.as_mut().poll(cx));
                break Poll::Ready(());
            }
            match ready!(this.serving.as_mut().poll(cx)) {
                Some(handoff) => *this.http2 = Some(Box::pin(serve_http2(handoff))),
                None => break Poll::Ready(()),
            }
        })
    }
}

/// Built-in endpoints, then routes, for a request whose head had been read at `received`.
/// Returns the response and whether the access log wants a line for it; what happened goes
/// into `record`.
///
/// The head and the record are lent, not given: the head stays where the connection put it,
/// and the forwarder takes out only what it sends on; the record is written where the
/// connection keeps it (see [`pipeline::handle`]).
pub(super) async fn dispatch(
    state: &GatewayState,
    role: Role,
    conn: &ConnInfo,
    head: &mut Parts,
    body: RequestBody,
    received: Instant,
    record: &mut RequestRecord,
) -> (Response<ResponseBody>, bool) {
    let snapshot = state.snapshot.load_full();
    let builtins_here = match role {
        Role::Admin => true,
        Role::Main => snapshot.admin_listen.is_none(),
    };
    if builtins_here {
        if let Some(response) = builtin::serve(state, &head.method, head.uri.path()) {
            // Probes and scrapes every few seconds would drown the access log.
            return (response, false);
        }
    }
    if role == Role::Admin {
        let id = request_id(&head.headers);
        let mut response = GatewayError::NoRoute.to_response(&id);
        response.headers_mut().insert(X_REQUEST_ID, id);
        return (response, false);
    }
    let gateway = Gateway {
        snapshot: &snapshot,
        conn,
        metrics: &state.metrics,
    };
    pipeline::handle(gateway, head, body, received, record).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, D, E, G, H, F>(_: impl Fn(A, B, C, D, E, G, H) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of what an async function of the request path returns, without calling it.
    #[allow(clippy::type_complexity)]
    fn dispatch_output_size<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            &'a GatewayState,
            Role,
            &'a ConnInfo,
            &'a mut Parts,
            RequestBody,
            Instant,
            &'a mut RequestRecord,
        ) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut::Output>()
    }

    #[test]
    fn what_dispatch_returns_is_small() {
        // It is copied at each layer on its way back to the connection; the record is written
        // where the connection keeps it rather than returned with the response.
        let size = dispatch_output_size(dispatch);
        let response = std::mem::size_of::<Response<ResponseBody>>();
        eprintln!("dispatch output: {size} bytes, response: {response} bytes");
        assert!(size <= response + 8, "dispatch returns {size} bytes");
    }

    #[test]
    fn an_idle_connection_task_is_small() {
        // Every open connection is one task holding this future (its largest state is what an
        // idle connection costs); the per-request state lives in its own allocation.
        let size = future_size(serve_counted::<(ConnectionGuard, u64)>);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 896, "connection future is {size} bytes");
    }
}
