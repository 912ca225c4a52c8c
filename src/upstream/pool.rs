//! Keep-alive HTTP/1.1 connections to upstream targets, driven by the request that uses them.
//!
//! A general-purpose client runs every upstream connection as its own task and passes each
//! request and response between tasks through channels. A proxy can do better: the task serving
//! the client connection writes the request and reads the response itself (see
//! [`exchange`](super::exchange)), so a request costs no extra task wake-ups or hand-offs. Idle
//! connections sit in a LIFO list per target and per worker thread (a connection's socket
//! belongs to the runtime of the worker that opened it, so only that worker reuses it); a
//! sweeper drops expired ones and ones the upstream closed.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body::Body;

use super::call::is_idempotent;
use super::exchange::{exchange, Connection, ExchangeError, Failed, Upload};
use super::h1::{encode_request_head, RequestFraming};
use super::stream::{connect, ConnectTarget, UpstreamTls};
use super::upgrade::UpgradeRequested;
use crate::body::LimitedBody;
use crate::per_worker::PerWorker;

pub use super::exchange::{ReadTimeout, UpstreamBody};

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
    /// Time allowed to establish a connection: TCP, and the TLS handshake for `https://`.
    pub connect_timeout: Duration,
    /// Where to connect for each target, in order.
    pub targets: Vec<ConnectTarget>,
    /// The TLS client for `https://` targets; part of the settings, so a change makes a new pool.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// One upstream's connections, per target.
#[derive(Debug)]
pub struct Pool {
    settings: PoolSettings,
    /// Each worker's idle lists, one per target, made when the worker first uses the pool.
    idle: PerWorker<Box<[IdleList]>>,
    sweeper_started: std::sync::Once,
}

/// One idle list, alone on its cache lines: every request locks its worker's list twice, and
/// lists of different workers sharing a line would make the workers' caches fight over it.
#[derive(Debug, Default)]
#[repr(align(128))]
struct IdleList(Mutex<Vec<Idle>>);

impl IdleList {
    /// The list; a panic elsewhere while it was held leaves plain data that is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
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

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No TCP connection (or, for `https://`, no TLS session) could be made.
    #[error("connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// The exchange failed after connecting.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl Pool {
    /// An empty pool for these targets.
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(Pool {
            settings,
            idle: PerWorker::new(),
            sweeper_started: std::sync::Once::new(),
        })
    }

    /// Sends the request `parts` (origin-form target, headers as they should arrive) and
    /// `body` to target `target`, on an idle connection when one is usable, and returns the
    /// response once its head has arrived. Both bodies stream; the response body fails once
    /// the upstream sends nothing for `read_timeout` before its end.
    ///
    /// A reused connection the upstream closed while it sat idle is the one failure retried:
    /// only when the upstream closed it before answering, the request body was never read, and
    /// the method is idempotent (the upstream may have seen the head).
    ///
    /// The head is borrowed: it is only encoded here, and a head moved into this future (and
    /// on into its locals) is copied each time, which with `panic = "unwind"` the compiler
    /// does not elide.
    pub async fn send(
        self: &Arc<Self>,
        target: usize,
        parts: &Parts,
        body: LimitedBody,
        read_timeout: Duration,
    ) -> Result<Response<Box<UpstreamBody>>, SendError> {
        let upgrade = parts.extensions.get::<UpgradeRequested>().is_some();
        let framing = RequestFraming::for_body(&parts.method, body.size_hint().exact());
        let chunked = framing == RequestFraming::Chunked;
        let request_target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Encoded again for a retry rather than kept twice: retries are rare, a shared copy of
        // the head on every request is not free.
        let head = || {
            let mut head = Vec::new();
            encode_request_head(
                &parts.method,
                request_target,
                &parts.headers,
                framing,
                &mut head,
            );
            Bytes::from(head)
        };
        let body = (!body.is_end_stream()).then_some(body);
        let mut upload = Upload::new(head(), body, chunked);
        let mut retried = false;
        loop {
            // A retry goes to a new connection: other idle ones may be just as stale.
            let idle = if retried { None } else { self.checkout(target) };
            let (connection, reused) = match idle {
                Some(connection) => (connection, true),
                None => (self.connect(target).await?, false),
            };
            let pool = Arc::downgrade(self);
            let exchanged = exchange(
                connection,
                &mut upload,
                &parts.method,
                upgrade,
                read_timeout,
                pool,
            )
            .await;
            let Failed {
                error,
                closed_before_answer,
            } = match exchanged {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            let retry = reused && closed_before_answer && is_idempotent(&parts.method);
            match upload.take_untouched_body() {
                Some(body) if retry => upload = Upload::new(head(), body, chunked),
                _ => return Err(error.into()),
            }
            retried = true;
        }
    }

    /// An idle connection that is still open, most recently used first.
    fn checkout(&self, target: usize) -> Option<Connection> {
        let mut list = self.list(self.home(target)).lock();
        while let Some(mut idle) = list.pop() {
            if idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.is_open() {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn connect(self: &Arc<Self>, target: usize) -> Result<Connection, SendError> {
        self.start_sweeper();
        let connect_target = &self.settings.targets[target];
        let connect_error = |source| SendError::Connect {
            target: connect_target.address.clone(),
            source,
        };
        let stream = tokio::time::timeout(
            self.settings.connect_timeout,
            connect(connect_target, self.settings.tls.as_deref()),
        )
        .await
        .map_err(|_| connect_error(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
        .map_err(|e| connect_error(e.into()))?;
        Ok(Connection::new(stream, self.home(target)))
    }

    /// Takes back a connection whose exchange ended cleanly.
    pub(super) fn checkin(&self, connection: Connection) {
        let mut list = self.list(connection.slot).lock();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle {
                conn: connection,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections across all targets (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.all_lists().map(|l| l.lock().len()).sum()
    }

    /// Every worker's idle lists.
    fn all_lists(&self) -> impl Iterator<Item = &IdleList> {
        self.idle.iter().flat_map(|lists| lists.iter())
    }

    /// Where a connection to `target` opened on the calling thread idles, as one index: the
    /// calling worker's slot (see [`PerWorker`] for threads that are not workers) and the target.
    fn home(&self, target: usize) -> usize {
        self.idle.here() * self.target_count() + target
    }

    /// The idle list at `home`, made with the rest of its worker's lists on first use.
    fn list(&self, home: usize) -> &IdleList {
        let targets = self.target_count();
        let lists = self.idle.get_or_init_at(home / targets, || {
            (0..targets).map(|_| IdleList::default()).collect()
        });
        &lists[home % targets]
    }

    fn target_count(&self) -> usize {
        self.settings.targets.len().max(1)
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
        for list in pool.all_lists() {
            let mut list = list.lock();
            list.retain_mut(|idle| idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.is_open());
        }
    }
}
