//! Everything a request needs from the config, built once per load and swapped in whole.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::routing::router::Router;
use crate::trusted_proxies::TrustedProxies;
use crate::upstream::Upstream;

/// One loaded, validated config. Requests in flight keep the snapshot they started with.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts successful loads in this process, starting at 1.
    pub version: u64,
    /// A hash of every file's content, identical for identical config.
    pub content_hash: String,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// The files it was read from, gateway.yaml first.
    pub files: Vec<PathBuf>,
    /// The routes folder (which may not exist).
    pub routes_dir: PathBuf,
    /// `server:` settings.
    pub server: ServerSettings,
    /// `admin.listen`, when the built-in endpoints have their own listener.
    pub admin_listen: Option<SocketAddr>,
    /// `logging:` settings.
    pub logging: LoggingSettings,
    /// The routing table.
    pub router: Router,
    /// Every upstream, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `jwt.providers` by name, in file order.
    pub providers: crate::config::identity::Providers,
    /// Headers any provider sets from claims; removed from every incoming request.
    pub identity_headers: Vec<http::HeaderName>,
    /// `rate_limit:` (the process-wide settings).
    pub rate_limit: crate::ratelimit::RateLimitSettings,
    /// `cache:` with defaults applied.
    pub cache: crate::cache::settings::CacheSettings,
    /// The cache's store, coalescer and metrics, when a route caches.
    pub cache_runtime: Option<crate::cache::store::CacheRuntime>,
    /// `redis:`, when written.
    pub redis: Option<crate::ratelimit::RedisSettings>,
    /// The stores the routes' rate limits are decided in.
    pub limiter: crate::ratelimit::Limiter,
    /// Things that do not stop the config but are surely not meant (a route that can never be
    /// chosen), with their positions; `check` prints them and every load logs them.
    pub warnings: Vec<super::ConfigError>,
}

impl Snapshot {
    /// Logs each warning, once per load.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(warning = %warning, "config warning");
        }
    }
}

/// `server:` with defaults applied.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Main listener.
    pub listen: SocketAddr,
    /// Request-serving threads (`None`: one per core). Read at start only.
    pub workers: Option<usize>,
    /// 413 above this, unless a route says otherwise.
    pub max_request_body: u64,
    /// 431 above this.
    pub max_header_bytes: u64,
    /// Time to send a complete request head.
    pub request_header_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Default for routes' `security_headers`.
    pub security_headers: bool,
    /// `server.tls`: the HTTPS listener, its certificates loaded.
    pub tls: Option<crate::tls::server::TlsListener>,
}

/// `logging:` with defaults applied.
#[derive(Debug, Clone)]
pub struct LoggingSettings {
    /// Line format.
    pub format: LogFormat,
    /// Filter directive, e.g. `info`.
    pub level: String,
    /// Whether each request is logged.
    pub access_log: bool,
}

/// How process log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}
