//! Keep-alive HTTP/1.1 connections to upstream targets, driven by the request that uses them.
//!
//! A general-purpose client (hyper-util's) runs every upstream connection as its own task and
//! passes each request and response between tasks through channels. A proxy can do better: the
//! task serving the client connection polls the upstream connection itself, first until the
//! response head arrives and then from inside the response body, so a request costs no extra
//! task wake-ups or cross-task hand-offs. Idle connections sit in a LIFO list per target and per
//! worker thread (a connection's socket belongs to the runtime of the worker that opened it, so
//! only that worker reuses it); a sweeper drops expired ones and ones the upstream closed.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::net::connect_any;
use crate::proxy::body::{BoxError, LimitedBody};
use crate::server::workers;

type Sender = http1::SendRequest<LimitedBody>;
type Conn = http1::Connection<TokioIo<TcpStream>, LimitedBody>;

/// Idle connections older than this are closed. Shorter than the keep-alive timeout of most
/// servers (nginx 75s), which avoids reusing one the server is about to close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Enough idle connections per target and worker for high concurrency without an unbounded pool.
const MAX_IDLE_PER_TARGET: usize = 1024;
/// How often idle connections are checked for expiry and for being closed by the upstream.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The settings a pool is made from; a reload that keeps them keeps the pool's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// `host:port` of each target, in order.
    pub targets: Vec<String>,
}

/// One upstream's connections, per target.
#[derive(Debug)]
pub struct Pool {
    settings: PoolSettings,
    /// Idle lists, worker-major: `worker * targets + target`. Made at first use, when the
    /// gateway's workers exist (pools are built while loading the config, before that).
    idle: OnceLock<Box<[Mutex<Vec<Idle>>]>>,
    sweeper_started: std::sync::Once,
}

struct Idle {
    conn: Connection,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish()
    }
}

/// An open HTTP/1.1 connection to one target.
pub struct Connection {
    sender: Sender,
    // Boxed so handing a connection between pool, request and response body moves a pointer,
    // not hyper's whole connection state (~700 bytes).
    conn: Box<Conn>,
    /// Index of its idle list (target and worker).
    slot: usize,
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No TCP connection could be made.
    #[error("connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// The exchange failed after connecting.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Pool {
    /// An empty pool for these targets.
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(Pool {
            settings,
            idle: OnceLock::new(),
            sweeper_started: std::sync::Once::new(),
        })
    }

    /// Sends `request` to target `target`, on an idle connection when one is usable, and
    /// returns the response once its head has arrived. The body streams as it is read.
    pub async fn send(
        self: &Arc<Self>,
        target: usize,
        request: Request<LimitedBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut request = request;
        // One retry, only for a reused connection that turned out closed before the request
        // was written: the request is handed back untouched, so resending is always safe.
        for _ in 0..2 {
            let (connection, reused) = match self.checkout(target).await {
                Some(connection) => (connection, true),
                None => (self.connect(target).await?, false),
            };
            match self.exchange(connection, request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let connection = self.connect(target).await?;
        self.exchange(connection, request)
            .await
            .map_err(|e| SendError::Http(e.into_error()))
    }

    async fn exchange(
        self: &Arc<Self>,
        connection: Connection,
        request: Request<LimitedBody>,
    ) -> Result<Response<UpstreamBody>, hyper::client::conn::TrySendError<Request<LimitedBody>>>
    {
        let Connection {
            mut sender,
            mut conn,
            slot,
        } = connection;
        let mut response = std::pin::pin!(sender.try_send_request(request));
        let mut conn_done = false;
        let head = poll_fn(|cx| {
            if let Poll::Ready(result) = response.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // Drive the connection: writes the request, reads the response head.
            if !conn_done && Pin::new(&mut conn).poll(cx).is_ready() {
                // The connection ended; the response future resolves with why on next poll.
                conn_done = true;
                return response.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await?;
        let (parts, body) = head.into_parts();
        let connection = (!conn_done).then(|| Connection { sender, conn, slot });
        Ok(Response::from_parts(
            parts,
            UpstreamBody {
                body,
                connection,
                pool: Arc::downgrade(self),
            },
        ))
    }

    /// An idle connection that is still open, most recently used first.
    async fn checkout(self: &Arc<Self>, target: usize) -> Option<Connection> {
        loop {
            let idle = {
                let mut list = self.lists()[self.slot(target)]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                list.pop()?
            };
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            let mut connection = idle.conn;
            if connection.ready().await {
                return Some(connection);
            }
        }
    }

    async fn connect(self: &Arc<Self>, target: usize) -> Result<Connection, SendError> {
        self.start_sweeper();
        let authority = &self.settings.targets[target];
        let connect_error = |source| SendError::Connect {
            target: authority.clone(),
            source,
        };
        let stream = tokio::time::timeout(self.settings.connect_timeout, connect_tcp(authority))
            .await
            .map_err(|_| {
                connect_error(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            })?
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Connection {
            sender,
            conn: Box::new(conn),
            slot: self.slot(target),
        })
    }

    fn checkin(&self, connection: Connection) {
        let mut list = self.lists()[connection.slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle {
                conn: connection,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections across all targets (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.lists()
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn lists(&self) -> &[Mutex<Vec<Idle>>] {
        self.idle.get_or_init(|| {
            let count = workers::slots() * self.settings.targets.len();
            (0..count).map(|_| Mutex::new(Vec::new())).collect()
        })
    }

    /// The idle list for `target` of the calling worker (the first worker's off worker threads).
    fn slot(&self, target: usize) -> usize {
        let targets = self.settings.targets.len().max(1);
        let workers = (self.lists().len() / targets).max(1);
        workers::current().unwrap_or(0) % workers * targets + target
    }

    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper_started.call_once(|| {
            let pool = Arc::downgrade(self);
            tokio::spawn(sweep(pool));
        });
    }
}

/// Drops expired idle connections and those the upstream closed, until the pool is gone.
async fn sweep(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut noop = Context::from_waker(std::task::Waker::noop());
        for list in pool.lists() {
            let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
            list.retain_mut(|idle| {
                idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.poll_open(&mut noop)
            });
        }
    }
}

impl Connection {
    /// Polls the connection once: reads an EOF or error the upstream sent while it was idle.
    /// Returns whether it is still open.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.conn).poll(cx).is_pending() && !self.sender.is_closed()
    }

    /// Waits until the connection can take a request; false when it closed instead.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if !self.poll_open(cx) {
                return Poll::Ready(false);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(result) => Poll::Ready(result.is_ok()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

async fn connect_tcp(authority: &str) -> io::Result<TcpStream> {
    if has_port(authority) {
        connect_any(authority).await
    } else {
        connect_any(format!("{authority}:80")).await
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    }
}

/// An upstream response body. Reading it also drives the upstream connection; at its end the
/// connection goes back to the pool.
pub struct UpstreamBody {
    body: Incoming,
    connection: Option<Connection>,
    pool: Weak<Pool>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        // One more poll lets the connection finish the message and ask for the next one.
        if connection.poll_open(cx) && connection.sender.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.checkin(connection);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(connection) = this.connection.as_mut() {
            if Pin::new(&mut connection.conn).poll(cx).is_ready() {
                // Closed or failed: whatever it delivered is still readable from the body.
                this.connection = None;
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.connection = None,
            _ => {}
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body dropped at its end (HEAD, 204, or fully read without a final poll) leaves a
        // reusable connection; one dropped part-way does not.
        if self.body.is_end_stream() {
            let mut noop = Context::from_waker(std::task::Waker::noop());
            self.release(&mut noop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert!(has_port("127.0.0.1:80"));
        assert!(has_port("backend:8080"));
        assert!(!has_port("backend"));
        assert!(has_port("[::1]:80"));
        assert!(!has_port("[::1]"));
    }
}
