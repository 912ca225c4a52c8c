//! Redis connections for every store that keeps its data in Redis (rate-limit buckets, cached
//! responses): where Redis is and how to reach it (`redis:` with defaults applied), one
//! connection kept up in the background ([`RedisConn`]), and one such connection per worker
//! for each `redis:` setting ([`RedisClients`]), whichever stores use it.
//!
//! What is shared and what is not: a worker holds ONE connection per `redis:` setting, so the
//! stores on it share its reconnect loop, its first-connection wait and its command timeout;
//! a multiplexed connection pipelines the commands of all of them. What a store makes of a
//! failure is its own: its health state, metrics (each has its own `store` label) and the log
//! line when it goes down or comes back stay with the store, because a rate limiter falls back
//! to `on_store_error` and a cache serves from upstream, and an operator must see which one
//! degraded. The connection layer logs only its own events (lost, cannot connect, connected).

pub mod clients;
pub mod conn;

use std::time::Duration;

pub use clients::RedisClients;
pub use conn::{Connection, Preload, RedisConn};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy in front of several): `redis://` or `rediss://` (TLS).
    Url(String),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// `redis:` with defaults applied.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where to connect.
    pub target: RedisTarget,
    /// AUTH password, when set.
    pub password: Option<String>,
    /// Time allowed to connect (TCP, TLS and handshake).
    pub connect_timeout: Duration,
    /// Time allowed for one command, from sending to the answer.
    pub command_timeout: Duration,
    /// The longest pause between two reconnect attempts.
    pub reconnect_max_backoff: Duration,
    /// The CA certificates `rediss://` trusts instead of the built-in Mozilla roots.
    pub ca_file: Option<CaFile>,
}

// The password stays out of logs and panics.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &self.target)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

pub use crate::tls::client::{CaFile, CaFileError};

/// The first pause before reconnecting; it doubles up to `reconnect_max_backoff`.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Why a Redis store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection right now; one is being made in the background.
    #[error("Redis store unavailable: not connected to Redis")]
    Disconnected,
    /// Redis did not answer within `redis.command_timeout`.
    #[error("Redis store timed out after {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("Redis store failed: {0}")]
    Failed(String),
    /// This many commands already wait for the store (it answers slower than they come).
    #[error("Redis store busy: {0} commands already waiting")]
    Busy(usize),
}

impl StoreError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Disconnected => "disconnected",
            StoreError::Timeout(_) => "timeout",
            StoreError::Failed(_) => "failed",
            StoreError::Busy(_) => "busy",
        }
    }
}
