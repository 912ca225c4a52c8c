//! One Redis connection kept up: a multiplexed connection (or a Cluster connection) made in
//! the background and made again with exponential backoff whenever a command finds it broken.
//! A command never waits for that: without a connection it fails at once, and with one it
//! fails after `command_timeout` at most.
//!
//! The connection's driver task lives on the tokio runtime that made it, so a connection is
//! used on that runtime only (see [`super::RedisClients`] for one per worker).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, IntoConnectionInfo, RedisError, RedisFuture,
    ScriptInvocation, TlsCertificates, Value,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{RedisSettings, RedisTarget, StoreError, INITIAL_BACKOFF};

/// Where the connection layer logs.
const LOG: &str = "gatehouse::redis";

/// A connection to one server, or to a Cluster (which routes each command by its keys' slot).
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

// Both kinds answer commands alike, so scripts and commands are written once for either.
impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Scripts loaded on every new connection, so a script's first call after a connect (or after
/// a Redis restart emptied its script cache) is one round trip. Calls still reload a script
/// Redis answers NOSCRIPT for. Clones share the list.
#[derive(Clone, Default)]
pub struct Preload(Arc<Mutex<Vec<redis::Script>>>);

impl Preload {
    /// Adds `script` (once, however often it is added).
    pub fn add(&self, script: &redis::Script) {
        let mut scripts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !scripts.iter().any(|s| s.get_hash() == script.get_hash()) {
            scripts.push(script.clone());
        }
    }

    fn scripts(&self) -> Vec<redis::Script> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Shared {
    settings: RedisSettings,
    preload: Preload,
    conn: ArcSwapOption<Conn>,
    /// Woken when the connection is found broken.
    lost: Notify,
    /// Woken when a connection is made.
    up: Notify,
    /// Why the last attempt to connect failed, until one succeeds.
    last_error: std::sync::Mutex<Option<String>>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One Redis connection kept up by a background task. Clones share the connection; the task
/// ends with the last clone.
#[derive(Clone)]
pub struct RedisConn {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("target", &self.shared.settings.target)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisConn {
    /// Starts connecting in the background and returns at once; commands fail with
    /// [`StoreError::Disconnected`] until the connection is up. Must be called on the tokio
    /// runtime that will use the connection: it is driven there. Every connection made loads
    /// the scripts in `preload` at that time.
    pub fn start(settings: RedisSettings, preload: Preload) -> RedisConn {
        let shared = Arc::new(Shared {
            settings,
            preload,
            conn: ArcSwapOption::empty(),
            lost: Notify::new(),
            up: Notify::new(),
            last_error: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(maintain(Arc::clone(&shared)));
        RedisConn {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Why the last attempt to connect failed, while no connection is up.
    pub fn last_error(&self) -> Option<String> {
        let last = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.clone()
    }

    /// The settings it connects with.
    pub fn settings(&self) -> &RedisSettings {
        &self.shared.settings
    }

    /// Whether a connection is up (as far as the last command could tell).
    pub fn is_connected(&self) -> bool {
        self.shared.conn.load().is_some()
    }

    /// Waits up to `within` for a connection; whether one is up.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.up.notified();
                tokio::pin!(notified);
                // Registered before the check, so a connection made in between still wakes it.
                notified.as_mut().enable();
                if self.is_connected() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// The connection up now, to send one or more commands on.
    pub fn current(&self) -> Result<Connection, StoreError> {
        match self.shared.conn.load_full() {
            Some(conn) => Ok(Connection {
                conn,
                owner: Arc::clone(&self.shared),
            }),
            None => Err(StoreError::Disconnected),
        }
    }

    /// Runs `cmd` on the connection up now (see [`Connection::query`]).
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.current()?.query(cmd).await
    }

    /// Runs a script on the connection up now (see [`Connection::invoke`]).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.current()?.invoke(invocation).await
    }
}

/// The connection that was up when [`RedisConn::current`] was asked. Commands on it take at
/// most `command_timeout`; one that finds it broken drops it (unless a newer one already
/// replaced it) and wakes the reconnect.
#[derive(Clone)]
pub struct Connection {
    conn: Arc<Conn>,
    owner: Arc<Shared>,
}

impl Connection {
    /// Whether it is a Cluster connection: a script's keys must then share one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(*self.conn, Conn::Cluster(_))
    }

    /// Sends `cmd` and decodes its answer.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = (*self.conn).clone();
        let timeout = self.owner.settings.command_timeout;
        self.outcome(tokio::time::timeout(timeout, cmd.query_async(&mut conn)).await)
    }

    /// Runs a script with EVALSHA (loading it on NOSCRIPT) and decodes its answer.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = (*self.conn).clone();
        let timeout = self.owner.settings.command_timeout;
        self.outcome(tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await)
    }

    /// One command's result as a [`StoreError`], dropping the connection when the error says
    /// it is broken.
    fn outcome<T>(
        &self,
        result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let timeout = self.owner.settings.command_timeout;
        match result {
            Err(_) => Err(StoreError::Timeout(timeout)),
            // The connection's own response timeout is the same bound; the connection stays
            // usable (late answers are matched and dropped), so it is kept.
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(timeout)),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.owner.lose(&self.conn);
                }
                Err(StoreError::Failed(e.to_string()))
            }
            Ok(Ok(value)) => Ok(value),
        }
    }
}

impl Shared {
    /// Drops `broken` (unless a newer connection already replaced it) and wakes the reconnect.
    fn lose(&self, broken: &Arc<Conn>) {
        let previous = self.conn.compare_and_swap(broken, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, broken)) {
            tracing::warn!(target: LOG, "redis connection lost; reconnecting in the background");
            self.lost.notify_one();
        }
    }
}

/// Keeps a connection up: connects, waits until a command finds it broken, and connects again,
/// pausing between failed attempts from [`INITIAL_BACKOFF`] doubling to the configured maximum.
async fn maintain(shared: Arc<Shared>) {
    let settings = &shared.settings;
    loop {
        let mut backoff = INITIAL_BACKOFF.min(settings.reconnect_max_backoff);
        let mut failures = 0u32;
        loop {
            let attempt = tokio::time::timeout(settings.connect_timeout, connect(&shared));
            let error = match attempt.await {
                Ok(Ok(conn)) => {
                    *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    shared.conn.store(Some(Arc::new(conn)));
                    shared.up.notify_waiters();
                    tracing::info!(target: LOG, "redis connected");
                    break;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no connection within {:?}", settings.connect_timeout),
            };
            if failures == 0 {
                tracing::warn!(target: LOG, error = %error, "cannot connect to redis; retrying with backoff");
            }
            *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            failures = failures.saturating_add(1);
            // Jitter spreads the reconnects of many workers and instances after an outage.
            let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(settings.reconnect_max_backoff);
        }
        shared.lost.notified().await;
    }
}

/// The trusted roots for `rediss://`: the CA file's, when set.
fn certificates(settings: &RedisSettings) -> Option<TlsCertificates> {
    settings.ca_file.as_ref().map(|ca| TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.pem.to_vec()),
    })
}

async fn connect(shared: &Shared) -> Result<Conn, RedisError> {
    let s = &shared.settings;
    let mut conn = match &s.target {
        RedisTarget::Url(url) => {
            let mut info = url.as_str().into_connection_info()?;
            if let Some(password) = &s.password {
                let redis = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis);
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(s.connect_timeout))
                .set_response_timeout(Some(s.command_timeout));
            let client = match certificates(s) {
                Some(certs) => redis::Client::build_with_tls(info, certs)?,
                None => redis::Client::open(info)?,
            };
            Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        }
        RedisTarget::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().cloned())
                .connection_timeout(s.connect_timeout)
                .response_timeout(s.command_timeout)
                // A failed command is answered by its store at once, not retried.
                .retries(0);
            if let Some(password) = &s.password {
                builder = builder.password(password);
            }
            if let Some(certs) = certificates(s) {
                builder = builder.certs(certs);
            }
            Conn::Cluster(builder.build()?.get_async_connection().await?)
        }
    };
    // Loaded now so a script's first call is one round trip; NOSCRIPT later reloads it.
    for script in shared.preload.scripts() {
        script.prepare_invoke().load_async(&mut conn).await?;
    }
    Ok(conn)
}
