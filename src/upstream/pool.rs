//! Pooled keep-alive HTTP/1.1 clients, one per upstream.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::proxy::body::LimitedBody;

/// A client with its own connection pool.
pub type UpstreamClient = Client<HttpConnector, LimitedBody>;

/// The settings a pool is made from; a reload that keeps them keeps the pool's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
}

/// Idle connections older than this are closed. Shorter than the keep-alive timeout of most
/// servers (nginx 75s, Apache 5s is the outlier), which avoids reusing one the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Enough idle connections per target for high concurrency without an unbounded pool.
const POOL_MAX_IDLE_PER_TARGET: usize = 1024;

/// Makes a new client and pool.
pub fn new_client(settings: &PoolSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_TARGET)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
