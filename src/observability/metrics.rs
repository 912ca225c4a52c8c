//! Prometheus metrics for the gateway.
//!
//! Every label value comes from configuration (route, upstream and jwt provider names) or from a
//! small fixed set (methods, status classes, outcomes), so no client can make the number of
//! series grow.
//!
//! The per-request paths ([`RouteMetrics::record`], [`UpstreamMetrics::record`]) only touch
//! atomics: handles are looked up in the [`Family`] maps once and kept, because a `Family`
//! lookup takes a read lock and builds a label set. The crate's own `Histogram` takes a mutex on
//! every observation, so latencies go into `LatencyHistogram`, a fixed-bucket histogram made
//! of atomics.
//!
//! The output is the classic Prometheus text format (served as [`CONTENT_TYPE`]): the crate's
//! own `Counter` follows the OpenMetrics naming (`# TYPE foo counter` over `foo_total` samples),
//! which the classic parser reads as a counter without metadata, so counters go through
//! `TotalCounter` instead. The crate's trailing `# EOF` is a comment there and is kept.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Exposed metric names, as they appear in the scrape output and in queries.
pub mod names {
    /// Counter of finished requests, by route, method and status class.
    pub const REQUESTS_TOTAL: &str = "gatehouse_requests_total";
    /// Histogram of whole-request latency as seen by the gateway, by route.
    pub const REQUEST_DURATION_SECONDS: &str = "gatehouse_request_duration_seconds";
    /// Counter of upstream attempts, by upstream and outcome.
    pub const UPSTREAM_REQUESTS_TOTAL: &str = "gatehouse_upstream_requests_total";
    /// Histogram of time until an upstream's response headers, by upstream.
    pub const UPSTREAM_DURATION_SECONDS: &str = "gatehouse_upstream_duration_seconds";
    /// Counter of upstream response bodies that broke off after their headers, by upstream.
    pub const UPSTREAM_BODY_ERRORS_TOTAL: &str = "gatehouse_upstream_body_errors_total";
    /// Counter of retries sent to an upstream (attempts after a request's first), by upstream.
    pub const UPSTREAM_RETRIES_TOTAL: &str = "gatehouse_upstream_retries_total";
    /// Counter of retries the upstream's retry budget refused, by upstream.
    pub const UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL: &str =
        "gatehouse_upstream_retry_budget_exhausted_total";
    /// Gauge of an upstream's circuit breaker state: 0 closed, 1 open, 2 half-open.
    pub const CIRCUIT_STATE: &str = "gatehouse_circuit_state";
    /// Counter of circuit breaker state changes, by upstream and the state entered.
    pub const CIRCUIT_TRANSITIONS_TOTAL: &str = "gatehouse_circuit_transitions_total";
    /// Counter of targets ejected by outlier detection, by upstream.
    pub const UPSTREAM_EJECTIONS_TOTAL: &str = "gatehouse_upstream_ejections_total";
    /// Gauge of client connections currently open.
    pub const OPEN_CONNECTIONS: &str = "gatehouse_open_connections";
    /// Gauge of requests currently being handled.
    pub const REQUESTS_IN_FLIGHT: &str = "gatehouse_requests_in_flight";
    /// Counter of configuration reload attempts, by result.
    pub const CONFIG_RELOADS_TOTAL: &str = "gatehouse_config_reloads_total";
    /// Gauge holding the Unix time of the last successful reload.
    pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
        "gatehouse_config_last_reload_success_timestamp_seconds";
    /// Counter of requests refused by auth or authorize, by route and reason.
    pub const AUTH_FAILURES_TOTAL: &str = "gatehouse_auth_failures_total";
    /// Gauge holding the version number of the active configuration.
    pub const CONFIG_VERSION: &str = "gatehouse_config_version";
    /// Constant 1, labelled with the gateway version, so dashboards can join on it.
    pub const BUILD_INFO: &str = "gatehouse_build_info";
    /// Counter of `jwks_url` fetches, by provider and result (`success`, `failure`).
    pub const JWKS_REFRESHES_TOTAL: &str = "gatehouse_jwks_refreshes_total";
    /// Gauge of usable keys a `jwks_url` provider holds, by provider.
    pub const JWKS_KEYS: &str = "gatehouse_jwks_keys";
    /// Counter of tokens found in a jwt provider's cache of verified tokens, by provider.
    pub const JWT_CACHE_HITS_TOTAL: &str = "gatehouse_jwt_cache_hits_total";
    /// Counter of tokens not found there (verified in full), by provider.
    pub const JWT_CACHE_MISSES_TOTAL: &str = "gatehouse_jwt_cache_misses_total";
    /// Counter of panics caught while serving; each one closed the connection it happened on.
    pub const PANICS_TOTAL: &str = "gatehouse_panics_total";
    /// Counter of rate-limit decisions, by route and result (`allowed`, `limited`).
    pub const RATE_LIMIT_DECISIONS_TOTAL: &str = "gatehouse_rate_limit_decisions_total";
    /// Counter of answers on cache-enabled routes, by route and result (`hit`, `miss`,
    /// `stale`, `bypass`, `store_error`).
    pub const CACHE_RESULTS_TOTAL: &str = "gatehouse_cache_results_total";
    /// Gauge of responses held by a cache store, by store.
    pub const CACHE_ENTRIES: &str = "gatehouse_cache_entries";
    /// Gauge of bytes held by a cache store, by store.
    pub const CACHE_BYTES: &str = "gatehouse_cache_bytes";
    /// Counter of requests that waited for another request's upstream answer to one key.
    pub const CACHE_COALESCED_WAITS_TOTAL: &str = "gatehouse_cache_coalesced_waits_total";
    /// Counter of rate-limit store failures, by store and kind (`disconnected`, `timeout`,
    /// `failed`, `busy`).
    pub const RATE_LIMIT_STORE_ERRORS_TOTAL: &str = "gatehouse_rate_limit_store_errors_total";
    /// Gauge, 1 while a store's decisions fail and `on_store_error` answers instead, by store.
    pub const RATE_LIMIT_STORE_FALLBACK: &str = "gatehouse_rate_limit_store_fallback";
    /// Gauge, 1 while the last Redis decision was answered, 0 after one failed.
    pub const REDIS_UP: &str = "gatehouse_redis_up";
    /// Histogram of Redis rate-limit command time, answered or failed.
    pub const REDIS_COMMAND_DURATION_SECONDS: &str = "gatehouse_redis_command_duration_seconds";
    /// Counter of responses the gateway compressed, by route and encoding (`br`, `gzip`).
    pub const COMPRESSED_RESPONSES_TOTAL: &str = "gatehouse_compressed_responses_total";
    /// Counter of body bytes that went into the compressor, by route and encoding.
    pub const COMPRESSION_IN_BYTES_TOTAL: &str = "gatehouse_compression_in_bytes_total";
    /// Counter of compressed body bytes that came out of it, by route and encoding.
    pub const COMPRESSION_OUT_BYTES_TOTAL: &str = "gatehouse_compression_out_bytes_total";
    /// Gauge, 1 while an upstream target passes its active health checks, by upstream and target.
    pub const UPSTREAM_TARGET_HEALTHY: &str = "gatehouse_upstream_target_healthy";
    /// Counter of active health probes, by upstream, target and result (`ok`, `failed`).
    pub const HEALTH_CHECKS_TOTAL: &str = "gatehouse_health_checks_total";
    /// Gauge of the Unix time at which a `server.tls` certificate expires (notAfter), by name.
    pub const TLS_CERTIFICATE_EXPIRY_SECONDS: &str = "gatehouse_tls_certificate_expiry_seconds";
    /// Counter of requests that asked to upgrade (WebSocket and the like), by route, protocol
    /// (`websocket`, `other`) and outcome (`switched`, `refused`, `failed`).
    pub const UPGRADES_TOTAL: &str = "gatehouse_upgrades_total";
    /// Gauge of upgraded connections (tunnels) currently open.
    pub const TUNNELS_OPEN: &str = "gatehouse_tunnels_open";
    /// Counter of bytes carried by tunnels, by direction, added as each tunnel ends.
    pub const TUNNEL_BYTES_TOTAL: &str = "gatehouse_tunnel_bytes_total";
}

/// The `protocol` label of [`names::UPGRADES_TOTAL`]: a fixed set, as the client names the
/// protocol.
pub const UPGRADE_PROTOCOLS: [&str; 2] = ["websocket", "other"];
/// The `outcome` label of [`names::UPGRADES_TOTAL`]: the upstream switched (`101`), answered
/// otherwise, or gave no answer.
pub const UPGRADE_OUTCOMES: [&str; 3] = ["switched", "refused", "failed"];
/// The `direction` label of [`names::TUNNEL_BYTES_TOTAL`].
const TUNNEL_DIRECTIONS: [&str; 2] = ["client_to_upstream", "upstream_to_client"];

/// Route label for requests no configured route answered, so they are still counted without
/// putting the path into a label. A configured route with this name would share its series.
pub const UNMATCHED_ROUTE: &str = "_unmatched";

/// What the `/metrics` response must declare: [`Metrics::encode`] writes the classic text
/// format, whose counter metadata an OpenMetrics parser would misread.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Method label values; the last one stands for every other method, so a client inventing
/// methods cannot create series.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// Status label values. `http::StatusCode` accepts 100..=999; codes past 599 have no class of
/// their own in RFC 9110, so they share "other" rather than being passed off as server errors.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Outcome label values, indexed by [`UpstreamOutcome`].
const OUTCOMES: [&str; 6] = [
    "response",
    "connect_error",
    "timeout",
    "error",
    "overloaded",
    "circuit_open",
];

/// Circuit states as the `to` label names them, indexed by their gauge value.
pub const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// Result label values of health probes, indexed by whether the probe failed.
const PROBE_RESULTS: [&str; 2] = ["ok", "failed"];

/// Result label values of rate-limit decisions.
const DECISION_RESULTS: [&str; 2] = ["allowed", "limited"];

/// Result label values of cache lookups.
const CACHE_RESULTS: [&str; 5] = ["hit", "miss", "stale", "bypass", "store_error"];

/// Kinds of rate-limit store failures (`StoreError::kind`).
const STORE_ERROR_KINDS: [&str; 4] = ["disconnected", "timeout", "failed", "busy"];

/// Encoding label values of compressed responses, in the order of `compress::Coding`.
pub const ENCODINGS: [&str; 2] = ["br", "gzip"];

/// Result label values of JWKS fetches.
const JWKS_RESULTS: [&str; 2] = ["success", "failure"];

/// Result label values, indexed by [`ReloadResult`].
const RELOAD_RESULTS: [&str; 3] = ["success", "failure", "unchanged"];

/// Bucket upper bounds in nanoseconds: 0.5 ms (a local upstream answering from memory) up to
/// 30 s (the longest timeouts worth telling apart), in 1-2.5-5 steps so `le` values read well.
/// Integers make the bucket choice exact and cheap.
const BUCKET_BOUNDS_NANOS: [u64; 15] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// One slot per finite bound plus the `+Inf` bucket.
const BUCKETS: usize = BUCKET_BOUNDS_NANOS.len() + 1;

/// How a proxied attempt ended, as far as the upstream is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// Response headers arrived, whatever their status.
    Response,
    /// No connection could be made.
    ConnectError,
    /// The upstream took longer than its configured timeout.
    Timeout,
    /// The connection failed after it was made.
    Error,
    /// Not sent: `circuit_breaker.max_requests` were already in flight.
    Overloaded,
    /// Not sent: the upstream's circuit breaker is open.
    CircuitOpen,
}

/// How a configuration reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new configuration is active.
    Success,
    /// The new configuration was rejected; the old one stays active.
    Failure,
    /// The files changed on disk but described the same configuration.
    Unchanged,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamNameLabels {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitTransitionLabels {
    upstream: Arc<str>,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: Arc<str>,
    target: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    upstream: Arc<str>,
    target: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksRefreshLabels {
    provider: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    route: Arc<str>,
    protocol: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelBytesLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncodingLabels {
    route: Arc<str>,
    encoding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    store: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A counter whose metadata carries the full `_total` name, as the classic text format expects;
/// the sample is written under that same name.
#[derive(Clone, Debug, Default)]
struct TotalCounter(Counter);

impl TypedMetric for TotalCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for TotalCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The gauge encoder writes a bare `name{labels} value` line, which is exactly a classic
        // counter sample.
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A classic histogram with fixed buckets whose observations are two relaxed atomic adds.
///
/// The count is derived from the buckets when encoding, so `_count` and the `+Inf` bucket always
/// agree even when a scrape races with observations; `_sum` may lag by the racing observations,
/// which no query relies on.
#[derive(Clone, Debug, Default)]
struct LatencyHistogram {
    cells: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per-bucket (not cumulative) counts; the encoder accumulates them.
    buckets: [AtomicU64; BUCKETS],
    /// Nanoseconds rather than f64 seconds so that adding is a single `fetch_add`.
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.cells.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKETS];
        let mut count = 0u64;
        for (i, (bound, n)) in buckets.iter_mut().enumerate() {
            if let Some(&nanos) = BUCKET_BOUNDS_NANOS.get(i) {
                *bound = nanos as f64 / 1e9;
            }
            *n = self.cells.buckets[i].load(Ordering::Relaxed);
            count += *n;
        }
        let sum = self.cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The process-wide registry and every metric family in it.
///
/// Created once at startup and shared as `Arc<Metrics>`; per-route and per-upstream handles are
/// taken from it when a configuration is loaded, not per request.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, TotalCounter>,
    request_duration: Family<RouteLabels, LatencyHistogram>,
    upstream_requests: Family<UpstreamLabels, TotalCounter>,
    upstream_duration: Family<UpstreamNameLabels, LatencyHistogram>,
    upstream_body_errors: Family<UpstreamNameLabels, TotalCounter>,
    circuit_state: Family<UpstreamNameLabels, Gauge>,
    circuit_transitions: Family<CircuitTransitionLabels, TotalCounter>,
    target_healthy: Family<TargetLabels, Gauge>,
    health_checks: Family<ProbeLabels, TotalCounter>,
    upstream_retries: Family<UpstreamNameLabels, TotalCounter>,
    upstream_retry_budget_exhausted: Family<UpstreamNameLabels, TotalCounter>,
    upstream_ejections: Family<UpstreamNameLabels, TotalCounter>,
    open_connections: Gauge,
    requests_in_flight: Gauge,
    auth_failures: Family<AuthFailureLabels, TotalCounter>,
    jwks_refreshes: Family<JwksRefreshLabels, TotalCounter>,
    jwks_keys: Family<ProviderLabels, Gauge>,
    tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    jwt_cache_hits: Family<ProviderLabels, TotalCounter>,
    jwt_cache_misses: Family<ProviderLabels, TotalCounter>,
    config_reloads: [Counter; 3],
    config_last_reload_success: Gauge<f64, AtomicU64>,
    config_version: Gauge<u64, AtomicU64>,
    panics: TotalCounter,
    rate_limit_decisions: Family<DecisionLabels, TotalCounter>,
    cache_results: Family<DecisionLabels, TotalCounter>,
    cache_entries: Family<StoreLabels, Gauge>,
    cache_bytes: Family<StoreLabels, Gauge>,
    cache_coalesced_waits: TotalCounter,
    store_errors: Family<StoreErrorLabels, TotalCounter>,
    store_fallback: Family<StoreLabels, Gauge>,
    redis_up: Gauge,
    redis_duration: LatencyHistogram,
    compressed_responses: Family<EncodingLabels, TotalCounter>,
    compression_in_bytes: Family<EncodingLabels, TotalCounter>,
    compression_out_bytes: Family<EncodingLabels, TotalCounter>,
    upgrades: Family<UpgradeLabels, TotalCounter>,
    tunnels_open: Gauge,
    tunnel_bytes: Family<TunnelBytesLabels, TotalCounter>,
    /// Live route handles, so every `route()` call for a name shares one lazily filled counter
    /// table and `forget_route` can stop old handles from recreating series it removed.
    routes: Mutex<HashMap<Arc<str>, Arc<RouteInner>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every critical section is a
    // single insert, remove or flag store.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Registers every family, so the scrape output always lists all metric names, and sets the
    /// build info; reload counters start at zero so `rate()` works before the first reload.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();

        let requests = Family::<RequestLabels, TotalCounter>::default();
        registry.register(
            names::REQUESTS_TOTAL,
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, LatencyHistogram>::default();
        registry.register(
            names::REQUEST_DURATION_SECONDS,
            "Time from request received to response headers sent, by route",
            request_duration.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, TotalCounter>::default();
        registry.register(
            names::UPSTREAM_REQUESTS_TOTAL,
            "Attempts sent to an upstream, by outcome",
            upstream_requests.clone(),
        );
        let upstream_duration = Family::<UpstreamNameLabels, LatencyHistogram>::default();
        registry.register(
            names::UPSTREAM_DURATION_SECONDS,
            "Time until an upstream's response headers, for attempts that got a response",
            upstream_duration.clone(),
        );
        let upstream_body_errors = Family::<UpstreamNameLabels, TotalCounter>::default();
        registry.register(
            names::UPSTREAM_BODY_ERRORS_TOTAL,
            "Upstream response bodies that broke off after their headers (cut short, malformed, or read_timeout)",
            upstream_body_errors.clone(),
        );
        let circuit_state = Family::<UpstreamNameLabels, Gauge>::default();
        registry.register(
            names::CIRCUIT_STATE,
            "State of an upstream's circuit breaker: 0 closed, 1 open, 2 half_open",
            circuit_state.clone(),
        );
        let circuit_transitions = Family::<CircuitTransitionLabels, TotalCounter>::default();
        registry.register(
            names::CIRCUIT_TRANSITIONS_TOTAL,
            "Circuit breaker state changes, by the state entered",
            circuit_transitions.clone(),
        );
        let target_healthy = Family::<TargetLabels, Gauge>::default();
        registry.register(
            names::UPSTREAM_TARGET_HEALTHY,
            "1 while an upstream target passes its active health checks, 0 while it is out",
            target_healthy.clone(),
        );
        let health_checks = Family::<ProbeLabels, TotalCounter>::default();
        registry.register(
            names::HEALTH_CHECKS_TOTAL,
            "Active health probes of upstream targets, by result",
            health_checks.clone(),
        );
        let upstream_retries = Family::<UpstreamNameLabels, TotalCounter>::default();
        registry.register(
            names::UPSTREAM_RETRIES_TOTAL,
            "Retries sent to an upstream (attempts after a request's first)",
            upstream_retries.clone(),
        );
        let upstream_retry_budget_exhausted = Family::<UpstreamNameLabels, TotalCounter>::default();
        registry.register(
            names::UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL,
            "Retries not sent because the upstream's retry budget was spent",
            upstream_retry_budget_exhausted.clone(),
        );
        let upstream_ejections = Family::<UpstreamNameLabels, TotalCounter>::default();
        registry.register(
            names::UPSTREAM_EJECTIONS_TOTAL,
            "Targets ejected by outlier detection after consecutive failures",
            upstream_ejections.clone(),
        );

        let open_connections = Gauge::default();
        registry.register(
            names::OPEN_CONNECTIONS,
            "Client connections currently open",
            open_connections.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            names::REQUESTS_IN_FLIGHT,
            "Requests currently being handled",
            requests_in_flight.clone(),
        );

        let auth_failures = Family::<AuthFailureLabels, TotalCounter>::default();
        registry.register(
            names::AUTH_FAILURES_TOTAL,
            "Requests refused by a route's auth (401) or authorize (403) rules, by reason",
            auth_failures.clone(),
        );

        let jwks_refreshes = Family::<JwksRefreshLabels, TotalCounter>::default();
        registry.register(
            names::JWKS_REFRESHES_TOTAL,
            "Fetches of a jwt provider's jwks_url, by result; a failure keeps the last good keys",
            jwks_refreshes.clone(),
        );
        let jwks_keys = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            names::JWKS_KEYS,
            "Usable verification keys a jwks_url provider holds",
            jwks_keys.clone(),
        );
        let tls_certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            names::TLS_CERTIFICATE_EXPIRY_SECONDS,
            "Unix time at which a server.tls certificate expires (notAfter), by its first SAN or file name",
            tls_certificate_expiry.clone(),
        );
        let jwt_cache_hits = Family::<ProviderLabels, TotalCounter>::default();
        registry.register(
            names::JWT_CACHE_HITS_TOTAL,
            "Tokens a jwt provider found among those it verified before (exp, nbf, iat still checked)",
            jwt_cache_hits.clone(),
        );
        let jwt_cache_misses = Family::<ProviderLabels, TotalCounter>::default();
        registry.register(
            names::JWT_CACHE_MISSES_TOTAL,
            "Tokens a jwt provider verified in full, signature included",
            jwt_cache_misses.clone(),
        );

        let reloads = Family::<ReloadLabels, TotalCounter>::default();
        registry.register(
            names::CONFIG_RELOADS_TOTAL,
            "Configuration reload attempts, by result",
            reloads.clone(),
        );
        let config_reloads =
            RELOAD_RESULTS.map(|result| reloads.get_or_create(&ReloadLabels { result }).0.clone());
        let config_last_reload_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            names::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
            "Unix time of the last successful configuration reload",
            config_last_reload_success.clone(),
        );
        let config_version = Gauge::<u64, AtomicU64>::default();
        registry.register(
            names::CONFIG_VERSION,
            "Version number of the active configuration",
            config_version.clone(),
        );
        let panics = TotalCounter::default();
        registry.register(
            names::PANICS_TOTAL,
            "Panics caught while serving; each closed only the connection it happened on",
            panics.clone(),
        );

        let rate_limit_decisions = Family::<DecisionLabels, TotalCounter>::default();
        registry.register(
            names::RATE_LIMIT_DECISIONS_TOTAL,
            "Rate-limit decisions on routes with limits, by result (allowed, limited)",
            rate_limit_decisions.clone(),
        );
        let cache_results = Family::<DecisionLabels, TotalCounter>::default();
        registry.register(
            names::CACHE_RESULTS_TOTAL,
            "Answers on cache-enabled routes, by result (hit, miss, stale, bypass, store_error)",
            cache_results.clone(),
        );
        let cache_entries = Family::<StoreLabels, Gauge>::default();
        registry.register(
            names::CACHE_ENTRIES,
            "Responses held by a cache store",
            cache_entries.clone(),
        );
        let cache_bytes = Family::<StoreLabels, Gauge>::default();
        registry.register(
            names::CACHE_BYTES,
            "Bytes held by a cache store (entries as encoded, with their keys)",
            cache_bytes.clone(),
        );
        let cache_coalesced_waits = TotalCounter::default();
        registry.register(
            names::CACHE_COALESCED_WAITS_TOTAL,
            "Requests that waited for another request's upstream answer to the same cache key",
            cache_coalesced_waits.clone(),
        );
        let store_errors = Family::<StoreErrorLabels, TotalCounter>::default();
        registry.register(
            names::RATE_LIMIT_STORE_ERRORS_TOTAL,
            "Rate-limit decisions the store could not make, by kind; on_store_error answered them",
            store_errors.clone(),
        );
        // The Redis series exist from the start, like `gatehouse_redis_up`, so dashboards and
        // alerts see zeros rather than nothing before the first outage.
        for kind in STORE_ERROR_KINDS {
            drop(store_errors.get_or_create(&StoreErrorLabels {
                store: "redis",
                kind,
            }));
        }
        let store_fallback = Family::<StoreLabels, Gauge>::default();
        drop(store_fallback.get_or_create(&StoreLabels { store: "redis" }));
        registry.register(
            names::RATE_LIMIT_STORE_FALLBACK,
            "1 while a rate-limit store fails and on_store_error decides instead",
            store_fallback.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            names::REDIS_UP,
            "1 while the last Redis rate-limit decision was answered, 0 after one failed",
            redis_up.clone(),
        );
        let redis_duration = LatencyHistogram::default();
        registry.register(
            names::REDIS_COMMAND_DURATION_SECONDS,
            "Time of one Redis rate-limit decision (one EVALSHA round trip), answered or failed",
            redis_duration.clone(),
        );

        let compressed_responses = Family::<EncodingLabels, TotalCounter>::default();
        registry.register(
            names::COMPRESSED_RESPONSES_TOTAL,
            "Responses of compress routes the gateway compressed, by encoding",
            compressed_responses.clone(),
        );
        let compression_in_bytes = Family::<EncodingLabels, TotalCounter>::default();
        registry.register(
            names::COMPRESSION_IN_BYTES_TOTAL,
            "Body bytes that went into the compressor, by encoding",
            compression_in_bytes.clone(),
        );
        let compression_out_bytes = Family::<EncodingLabels, TotalCounter>::default();
        registry.register(
            names::COMPRESSION_OUT_BYTES_TOTAL,
            "Compressed body bytes sent, by encoding",
            compression_out_bytes.clone(),
        );

        let upgrades = Family::<UpgradeLabels, TotalCounter>::default();
        registry.register(
            names::UPGRADES_TOTAL,
            "Requests that asked to upgrade the connection (WebSocket and the like), by protocol and outcome (switched, refused, failed)",
            upgrades.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            names::TUNNELS_OPEN,
            "Upgraded connections currently tunnelled between a client and an upstream",
            tunnels_open.clone(),
        );
        let tunnel_bytes = Family::<TunnelBytesLabels, TotalCounter>::default();
        // Two series, there from the start: a rate is defined before the first tunnel.
        for direction in TUNNEL_DIRECTIONS {
            drop(tunnel_bytes.get_or_create(&TunnelBytesLabels { direction }));
        }
        registry.register(
            names::TUNNEL_BYTES_TOTAL,
            "Bytes carried by tunnels, by direction; added when each tunnel closes",
            tunnel_bytes.clone(),
        );

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            names::BUILD_INFO,
            "Always 1; the version label identifies the running build",
            build_info,
        );

        Arc::new(Metrics {
            registry,
            requests,
            request_duration,
            upstream_requests,
            upstream_duration,
            upstream_body_errors,
            circuit_state,
            circuit_transitions,
            target_healthy,
            health_checks,
            upstream_retries,
            upstream_retry_budget_exhausted,
            upstream_ejections,
            open_connections,
            requests_in_flight,
            auth_failures,
            jwks_refreshes,
            jwks_keys,
            tls_certificate_expiry,
            jwt_cache_hits,
            jwt_cache_misses,
            config_reloads,
            config_last_reload_success,
            config_version,
            panics,
            rate_limit_decisions,
            cache_results,
            cache_entries,
            cache_bytes,
            cache_coalesced_waits,
            store_errors,
            store_fallback,
            redis_up,
            redis_duration,
            compressed_responses,
            compression_in_bytes,
            compression_out_bytes,
            upgrades,
            tunnels_open,
            tunnel_bytes,
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// Handles for one route; called at config load (not on the request path).
    ///
    /// Calling it again for the same name returns handles sharing the same series.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let mut routes = lock(&self.routes);
        if let Some(inner) = routes.get(route) {
            return RouteMetrics {
                inner: inner.clone(),
            };
        }
        let name: Arc<str> = Arc::from(route);
        let duration = self
            .request_duration
            .get_or_create(&RouteLabels {
                route: name.clone(),
            })
            .clone();
        let inner = Arc::new(RouteInner {
            name: name.clone(),
            requests: Default::default(),
            duration,
            family: self.requests.clone(),
            retired: Mutex::new(false),
        });
        routes.insert(name, inner.clone());
        RouteMetrics { inner }
    }

    /// Handles for requests that matched no route / were answered by built-in endpoints.
    ///
    /// Their route label is [`UNMATCHED_ROUTE`].
    pub fn unrouted(&self) -> RouteMetrics {
        self.route(UNMATCHED_ROUTE)
    }

    /// Handles for one upstream; called at config load (not on the request path).
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        let name: Arc<str> = Arc::from(upstream);
        let outcomes = OUTCOMES.map(|outcome| {
            self.upstream_requests
                .get_or_create(&UpstreamLabels {
                    upstream: name.clone(),
                    outcome,
                })
                .0
                .clone()
        });
        let body_errors = self
            .upstream_body_errors
            .get_or_create(&UpstreamNameLabels {
                upstream: name.clone(),
            })
            .0
            .clone();
        let labels = UpstreamNameLabels {
            upstream: name.clone(),
        };
        let retries = self.upstream_retries.get_or_create(&labels).0.clone();
        let budget_exhausted = self
            .upstream_retry_budget_exhausted
            .get_or_create(&labels)
            .0
            .clone();
        let ejections = self
            .upstream_ejections
            .get_or_create(&UpstreamNameLabels {
                upstream: name.clone(),
            })
            .0
            .clone();
        let duration = self
            .upstream_duration
            .get_or_create(&UpstreamNameLabels { upstream: name })
            .clone();
        UpstreamMetrics {
            inner: Arc::new(UpstreamInner {
                outcomes,
                duration,
                body_errors,
                retries,
                budget_exhausted,
                ejections,
            }),
        }
    }

    /// Handles for one upstream's circuit breaker; called when a breaker is made (config load).
    /// Every `to` series starts at zero, so alerts on `increase()` work from the first opening.
    pub fn circuit(&self, upstream: &str) -> CircuitMetrics {
        let name: Arc<str> = Arc::from(upstream);
        let transitions = CIRCUIT_STATES.map(|to| {
            self.circuit_transitions
                .get_or_create(&CircuitTransitionLabels {
                    upstream: name.clone(),
                    to,
                })
                .0
                .clone()
        });
        let state = self
            .circuit_state
            .get_or_create(&UpstreamNameLabels { upstream: name })
            .clone();
        CircuitMetrics { state, transitions }
    }

    /// Drops an upstream's circuit series, when the upstream or its breaker is gone.
    pub fn forget_circuit(&self, upstream: &str) {
        let name: Arc<str> = Arc::from(upstream);
        for to in CIRCUIT_STATES {
            self.circuit_transitions.remove(&CircuitTransitionLabels {
                upstream: name.clone(),
                to,
            });
        }
        self.circuit_state
            .remove(&UpstreamNameLabels { upstream: name });
    }

    /// Handles for the active health checks of one upstream target; called at config load.
    /// Both results start at zero so `rate()` and alerts work before the first failure.
    pub fn target_health(&self, upstream: &str, target: &str) -> TargetHealthMetrics {
        let (upstream, target): (Arc<str>, Arc<str>) = (Arc::from(upstream), Arc::from(target));
        let probes = PROBE_RESULTS.map(|result| {
            self.health_checks
                .get_or_create(&ProbeLabels {
                    upstream: upstream.clone(),
                    target: target.clone(),
                    result,
                })
                .0
                .clone()
        });
        let healthy = self
            .target_healthy
            .get_or_create(&TargetLabels { upstream, target })
            .clone();
        TargetHealthMetrics {
            inner: Arc::new(TargetHealthInner { probes, healthy }),
        }
    }

    /// Drops the health series of a target no live config checks any more.
    pub fn forget_target_health(&self, upstream: &str, target: &str) {
        let (upstream, target): (Arc<str>, Arc<str>) = (Arc::from(upstream), Arc::from(target));
        for result in PROBE_RESULTS {
            self.health_checks.remove(&ProbeLabels {
                upstream: upstream.clone(),
                target: target.clone(),
                result,
            });
        }
        self.target_healthy
            .remove(&TargetLabels { upstream, target });
    }

    /// A request refused by auth or authorize; `reason` is the error code sent to the client.
    /// Only refusals pay for the label lookup; allowed requests touch nothing here.
    pub fn auth_failure(&self, route: &str, reason: &'static str) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels {
                route: Arc::from(route),
                reason,
            })
            .0
            .inc();
    }

    /// Handles for a `jwks_url` provider's refresher; called at config load. Both results start
    /// at zero so `rate()` and alerts work before the first failure.
    pub fn jwks(&self, provider: &str) -> JwksMetrics {
        let name: Arc<str> = Arc::from(provider);
        let results = JWKS_RESULTS.map(|result| {
            self.jwks_refreshes
                .get_or_create(&JwksRefreshLabels {
                    provider: name.clone(),
                    result,
                })
                .0
                .clone()
        });
        let keys = self
            .jwks_keys
            .get_or_create(&ProviderLabels { provider: name })
            .clone();
        JwksMetrics {
            inner: Arc::new(JwksInner { results, keys }),
        }
    }

    /// Sets the expiry of the HTTPS listener's certificates to `certificates` (name, notAfter
    /// as Unix time), dropping the series of certificates no longer served.
    pub fn set_tls_certificates<'a>(&self, certificates: impl IntoIterator<Item = (&'a str, i64)>) {
        self.tls_certificate_expiry.clear();
        for (name, not_after) in certificates {
            self.tls_certificate_expiry
                .get_or_create(&CertificateLabels {
                    name: name.to_owned(),
                })
                .set(not_after);
        }
    }

    /// Drops a `jwks_url` provider removed by a reload (or no longer fetching), so its series
    /// stop being exported.
    pub fn forget_jwks(&self, provider: &str) {
        let name: Arc<str> = Arc::from(provider);
        for result in JWKS_RESULTS {
            self.jwks_refreshes.remove(&JwksRefreshLabels {
                provider: name.clone(),
                result,
            });
        }
        self.jwks_keys.remove(&ProviderLabels { provider: name });
    }

    /// Handles for a jwt provider's token cache; called at config load. Providers rebuilt by a
    /// reload get the same series.
    pub fn jwt_cache(&self, provider: &str) -> JwtCacheMetrics {
        let labels = ProviderLabels {
            provider: Arc::from(provider),
        };
        JwtCacheMetrics {
            hits: self.jwt_cache_hits.get_or_create(&labels).0.clone(),
            misses: self.jwt_cache_misses.get_or_create(&labels).0.clone(),
        }
    }

    /// Drops the token-cache series of a jwt provider a reload removed.
    pub fn forget_jwt_cache(&self, provider: &str) {
        let labels = ProviderLabels {
            provider: Arc::from(provider),
        };
        self.jwt_cache_hits.remove(&labels);
        self.jwt_cache_misses.remove(&labels);
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// A client connection ended; pair with every [`Metrics::connection_opened`].
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// A request started being handled.
    pub fn request_started(&self) {
        self.requests_in_flight.inc();
    }

    /// A request finished, successfully or not; pair with every [`Metrics::request_started`].
    pub fn request_finished(&self) {
        self.requests_in_flight.dec();
    }

    /// Counts a reload attempt; a success also stamps the time, so alerts can fire on a stale
    /// configuration as well as on failures.
    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads[result as usize].inc();
        if result == ReloadResult::Success {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            self.config_last_reload_success.set(now);
        }
    }

    /// Publishes the active configuration's version, to tell which config every instance runs.
    pub fn set_config_version(&self, version: u64) {
        self.config_version.set(version);
    }

    /// Counts a panic caught while serving (see `observability::panics`).
    pub fn panicked(&self) {
        self.panics.0.inc();
    }

    /// The scrape body: OpenMetrics text ending in `# EOF`; serve it as [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail and every registered metric encodes as text");
        out
    }

    /// Decision counters of a route with rate limits; called at config load.
    pub fn rate_limit_decisions(&self, route: &str) -> DecisionMetrics {
        let name: Arc<str> = Arc::from(route);
        let [allowed, limited] = DECISION_RESULTS.map(|result| {
            self.rate_limit_decisions
                .get_or_create(&DecisionLabels {
                    route: name.clone(),
                    result,
                })
                .0
                .clone()
        });
        DecisionMetrics { allowed, limited }
    }

    /// Result counters of a cache-enabled route; called at config load.
    pub fn cache_results(&self, route: &str) -> CacheResultMetrics {
        let name: Arc<str> = Arc::from(route);
        let counters = CACHE_RESULTS.map(|result| {
            self.cache_results
                .get_or_create(&DecisionLabels {
                    route: name.clone(),
                    result,
                })
                .0
                .clone()
        });
        CacheResultMetrics { counters }
    }

    /// Gauges and counters of the cache store `store` (`memory` or `redis`).
    pub fn cache_store(&self, store: &'static str) -> CacheStoreMetrics {
        CacheStoreMetrics {
            entries: self
                .cache_entries
                .get_or_create(&StoreLabels { store })
                .clone(),
            bytes: self
                .cache_bytes
                .get_or_create(&StoreLabels { store })
                .clone(),
            coalesced_waits: self.cache_coalesced_waits.0.clone(),
        }
    }

    /// Compression counters of a `compress` route; called at config load. Both encodings start
    /// at zero so ratios can be computed before the first compressed response.
    pub fn compression(&self, route: &str) -> CompressionMetrics {
        let name: Arc<str> = Arc::from(route);
        let per = |family: &Family<EncodingLabels, TotalCounter>| {
            ENCODINGS.map(|encoding| {
                family
                    .get_or_create(&EncodingLabels {
                        route: name.clone(),
                        encoding,
                    })
                    .0
                    .clone()
            })
        };
        CompressionMetrics {
            responses: per(&self.compressed_responses),
            bytes_in: per(&self.compression_in_bytes),
            bytes_out: per(&self.compression_out_bytes),
        }
    }

    /// Handles for the Redis rate-limit store; called at config load. Every error kind starts
    /// at zero so alerts work before the first outage.
    pub fn redis_store(&self) -> StoreMetrics {
        let store = "redis";
        let errors = STORE_ERROR_KINDS.map(|kind| {
            self.store_errors
                .get_or_create(&StoreErrorLabels { store, kind })
                .0
                .clone()
        });
        StoreMetrics {
            errors,
            fallback: self
                .store_fallback
                .get_or_create(&StoreLabels { store })
                .clone(),
            up: self.redis_up.clone(),
            duration: self.redis_duration.clone(),
        }
    }

    /// Drops a route removed by a reload, so its series stop being exported.
    ///
    /// Handles still held by in-flight requests keep working but no longer reach the output.
    pub fn forget_route(&self, route: &str) {
        let inner = lock(&self.routes).remove(route);
        let name: Arc<str> = Arc::from(route);
        // Holding the flag while removing means a handle filling its table concurrently either
        // finished before (and its series is removed here) or sees the flag (and stays detached).
        let _retired = inner.as_ref().map(|inner| {
            let mut retired = lock(&inner.retired);
            *retired = true;
            retired
        });
        for method in METHODS {
            for status in STATUS_CLASSES {
                self.requests.remove(&RequestLabels {
                    route: name.clone(),
                    method,
                    status,
                });
            }
        }
        for result in DECISION_RESULTS {
            self.rate_limit_decisions.remove(&DecisionLabels {
                route: name.clone(),
                result,
            });
        }
        for result in CACHE_RESULTS {
            self.cache_results.remove(&DecisionLabels {
                route: name.clone(),
                result,
            });
        }
        for encoding in ENCODINGS {
            let labels = EncodingLabels {
                route: name.clone(),
                encoding,
            };
            self.compressed_responses.remove(&labels);
            self.compression_in_bytes.remove(&labels);
            self.compression_out_bytes.remove(&labels);
        }
        for protocol in UPGRADE_PROTOCOLS {
            for outcome in UPGRADE_OUTCOMES {
                self.upgrades.remove(&UpgradeLabels {
                    route: name.clone(),
                    protocol,
                    outcome,
                });
            }
        }
        self.request_duration.remove(&RouteLabels { route: name });
    }

    /// Counts one request that asked to upgrade; `protocol` and `outcome` come from
    /// [`UPGRADE_PROTOCOLS`] and [`UPGRADE_OUTCOMES`]. Upgrades are rare next to requests, so
    /// the family is looked up here rather than through a handle kept per route.
    pub fn upgrade(&self, route: &str, protocol: &'static str, outcome: &'static str) {
        self.upgrades
            .get_or_create(&UpgradeLabels {
                route: Arc::from(route),
                protocol,
                outcome,
            })
            .0
            .inc();
    }

    /// Handles for one tunnel.
    pub fn tunnel(&self) -> TunnelMetrics {
        let [to_upstream, to_client] = TUNNEL_DIRECTIONS.map(|direction| {
            self.tunnel_bytes
                .get_or_create(&TunnelBytesLabels { direction })
                .0
                .clone()
        });
        TunnelMetrics {
            open: self.tunnels_open.clone(),
            to_upstream,
            to_client,
        }
    }

    /// Drops an upstream removed by a reload, so its series stop being exported.
    pub fn forget_upstream(&self, upstream: &str) {
        self.forget_circuit(upstream);
        let name: Arc<str> = Arc::from(upstream);
        for outcome in OUTCOMES {
            self.upstream_requests.remove(&UpstreamLabels {
                upstream: name.clone(),
                outcome,
            });
        }
        let labels = UpstreamNameLabels {
            upstream: name.clone(),
        };
        self.upstream_body_errors.remove(&labels);
        self.upstream_retries.remove(&labels);
        self.upstream_retry_budget_exhausted.remove(&labels);
        self.upstream_ejections.remove(&labels);
        self.upstream_duration
            .remove(&UpstreamNameLabels { upstream: name });
    }
}

/// Per-route handles, cheap to clone into every request's context.
#[derive(Clone)]
pub struct RouteMetrics {
    inner: Arc<RouteInner>,
}

struct RouteInner {
    name: Arc<str>,
    /// Counters by method × status class, fetched from the family the first time each pair is
    /// seen so that unused combinations never become (zero-valued) series.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len()],
    duration: LatencyHistogram,
    family: Family<RequestLabels, TotalCounter>,
    /// Set by `forget_route`; a later first-use must not put the route back into the output.
    retired: Mutex<bool>,
}

impl fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.inner.name)
            .finish_non_exhaustive()
    }
}

fn method_index(method: &Method) -> usize {
    // Comparing `Method`s is a tag comparison for the standard ones; no string work.
    if *method == Method::GET {
        0
    } else if *method == Method::HEAD {
        1
    } else if *method == Method::POST {
        2
    } else if *method == Method::PUT {
        3
    } else if *method == Method::DELETE {
        4
    } else if *method == Method::PATCH {
        5
    } else if *method == Method::OPTIONS {
        6
    } else if *method == Method::CONNECT {
        7
    } else if *method == Method::TRACE {
        8
    } else {
        9
    }
}

fn status_index(status: StatusCode) -> usize {
    match status.as_u16() / 100 {
        class @ 1..=5 => usize::from(class - 1),
        _ => 5,
    }
}

impl RouteMetrics {
    /// One finished request: counter gatehouse_requests_total{route,method,status} (status = "1xx".."5xx"), histogram gatehouse_request_duration_seconds{route}.
    ///
    /// Lock- and allocation-free once the (method, status class) pair has been seen on this
    /// route. Statuses above 599 are labelled "other".
    pub fn record(&self, method: &Method, status: StatusCode, duration: Duration) {
        let (m, s) = (method_index(method), status_index(status));
        let counter = match self.inner.requests[m][s].get() {
            Some(counter) => counter,
            None => self.inner.first_use(m, s),
        };
        counter.inc();
        self.inner.duration.observe(duration);
    }
}

impl RouteInner {
    #[cold]
    fn first_use(&self, m: usize, s: usize) -> &Counter {
        self.requests[m][s].get_or_init(|| {
            let retired = lock(&self.retired);
            if *retired {
                return Counter::default();
            }
            self.family
                .get_or_create(&RequestLabels {
                    route: self.name.clone(),
                    method: METHODS[m],
                    status: STATUS_CLASSES[s],
                })
                .0
                .clone()
        })
    }
}

/// One tunnel's handles: the open gauge and the byte counters.
#[derive(Clone, Debug)]
pub struct TunnelMetrics {
    open: Gauge,
    to_upstream: Counter,
    to_client: Counter,
}

impl TunnelMetrics {
    /// Gauge gatehouse_tunnels_open, up until the returned guard is dropped.
    pub fn opened(&self) -> TunnelOpen {
        self.open.inc();
        TunnelOpen(self.open.clone())
    }

    /// Counter gatehouse_tunnel_bytes_total{direction}.
    pub fn bytes(&self, to_upstream: u64, to_client: u64) {
        self.to_upstream.inc_by(to_upstream);
        self.to_client.inc_by(to_client);
    }
}

/// Counts a tunnel in gatehouse_tunnels_open while it lives.
#[derive(Debug)]
pub struct TunnelOpen(Gauge);

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A limited route's decision counters.
#[derive(Clone, Debug, Default)]
pub struct DecisionMetrics {
    allowed: Counter,
    limited: Counter,
}

impl DecisionMetrics {
    /// counter gatehouse_rate_limit_decisions_total{route,result}; one atomic add.
    pub fn record(&self, allowed: bool) {
        if allowed {
            self.allowed.inc();
        } else {
            self.limited.inc();
        }
    }
}

/// What a cache lookup came to, for `gatehouse_cache_results_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Answered from the store.
    Hit = 0,
    /// Not in the store (or not usable): answered by the upstream.
    Miss = 1,
    /// A stale entry answered because the upstream failed.
    Stale = 2,
    /// The cache was not used (the request said `no-store`, or a method the cache skips).
    Bypass = 3,
    /// The store failed; answered by the upstream.
    StoreError = 4,
}

/// A cache-enabled route's result counters.
#[derive(Clone, Debug, Default)]
pub struct CacheResultMetrics {
    counters: [Counter; CACHE_RESULTS.len()],
}

impl CacheResultMetrics {
    /// counter gatehouse_cache_results_total{route,result}; one atomic add.
    pub fn record(&self, result: CacheResult) {
        self.counters[result as usize].inc();
    }
}

/// A cache store's gauges, and the coalescing counter.
#[derive(Clone, Debug, Default)]
pub struct CacheStoreMetrics {
    entries: Gauge,
    bytes: Gauge,
    coalesced_waits: Counter,
}

impl CacheStoreMetrics {
    /// gauges gatehouse_cache_entries{store} and gatehouse_cache_bytes{store}.
    pub fn set_size(&self, entries: u64, bytes: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// counter gatehouse_cache_coalesced_waits_total.
    pub fn coalesced_wait(&self) {
        self.coalesced_waits.inc();
    }
}

/// A `compress` route's counters, one of each per encoding (indexed like [`ENCODINGS`]).
#[derive(Clone, Debug, Default)]
pub struct CompressionMetrics {
    responses: [Counter; ENCODINGS.len()],
    bytes_in: [Counter; ENCODINGS.len()],
    bytes_out: [Counter; ENCODINGS.len()],
}

impl CompressionMetrics {
    /// Counter gatehouse_compressed_responses_total{route,encoding}.
    pub fn response(&self, encoding: usize) {
        self.responses[encoding].inc();
    }

    /// Counters gatehouse_compression_{in,out}_bytes_total{route,encoding}: bytes that went
    /// into the compressor and came out of it.
    pub fn bytes(&self, encoding: usize, bytes_in: u64, bytes_out: u64) {
        if bytes_in != 0 {
            self.bytes_in[encoding].inc_by(bytes_in);
        }
        if bytes_out != 0 {
            self.bytes_out[encoding].inc_by(bytes_out);
        }
    }
}

/// The Redis rate-limit store's handles.
#[derive(Clone)]
pub struct StoreMetrics {
    errors: [Counter; STORE_ERROR_KINDS.len()],
    fallback: Gauge,
    up: Gauge,
    duration: LatencyHistogram,
}

impl fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

impl StoreMetrics {
    /// Handles that reach no output, for stores made outside a gateway.
    pub fn detached() -> Self {
        StoreMetrics {
            errors: Default::default(),
            fallback: Gauge::default(),
            up: Gauge::default(),
            duration: LatencyHistogram::default(),
        }
    }

    /// counter gatehouse_rate_limit_store_errors_total{store,kind}.
    pub fn error(&self, kind: &str) {
        if let Some(i) = STORE_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].inc();
        }
    }

    /// histogram gatehouse_redis_command_duration_seconds.
    pub fn command(&self, took: Duration) {
        self.duration.observe(took);
    }

    /// gauges gatehouse_redis_up and gatehouse_rate_limit_store_fallback{store}, on a change.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
        self.fallback.set(i64::from(!up));
    }
}

/// Per-upstream handles, cheap to clone into every request's context.
#[derive(Clone)]
pub struct UpstreamMetrics {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    outcomes: [Counter; OUTCOMES.len()],
    duration: LatencyHistogram,
    body_errors: Counter,
    retries: Counter,
    budget_exhausted: Counter,
    ejections: Counter,
}

impl fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamMetrics").finish_non_exhaustive()
    }
}

impl UpstreamMetrics {
    /// counter gatehouse_upstream_requests_total{upstream,outcome}, histogram gatehouse_upstream_duration_seconds{upstream} (time to response headers).
    ///
    /// Only [`UpstreamOutcome::Response`] is timed: failures have no response headers, and fast
    /// connection refusals would otherwise make the upstream look quicker. Lock- and
    /// allocation-free.
    pub fn record(&self, outcome: UpstreamOutcome, duration: Duration) {
        self.inner.outcomes[outcome as usize].inc();
        if outcome == UpstreamOutcome::Response {
            self.inner.duration.observe(duration);
        }
    }

    /// Counter gatehouse_upstream_body_errors_total{upstream}: a response body broke off.
    pub fn body_error(&self) {
        self.inner.body_errors.inc();
    }

    /// Counter gatehouse_upstream_retries_total{upstream}: a retry is being sent.
    pub fn retried(&self) {
        self.inner.retries.inc();
    }

    /// Counter gatehouse_upstream_retry_budget_exhausted_total{upstream}: the retry budget
    /// refused a retry.
    pub fn retry_budget_exhausted(&self) {
        self.inner.budget_exhausted.inc();
    }

    /// counter gatehouse_upstream_ejections_total{upstream}: outlier detection ejected a target.
    pub fn ejection(&self) {
        self.inner.ejections.inc();
    }
}

/// One circuit breaker's gauge and transition counters; the default counts into series nobody
/// exports (unit tests, breakers built outside a gateway).
#[derive(Clone, Debug, Default)]
pub struct CircuitMetrics {
    state: Gauge,
    transitions: [Counter; CIRCUIT_STATES.len()],
}

impl CircuitMetrics {
    /// Gauge gatehouse_circuit_state{upstream} to `state` (an index of [`CIRCUIT_STATES`]),
    /// without counting a transition: a new breaker starts closed.
    pub fn set_state(&self, state: usize) {
        self.state.set(i64::try_from(state).unwrap_or(0));
    }

    /// The breaker entered `state`: the gauge, and counter
    /// gatehouse_circuit_transitions_total{upstream,to}.
    pub fn transition(&self, state: usize) {
        self.set_state(state);
        if let Some(counter) = self.transitions.get(state) {
            counter.inc();
        }
    }
}

/// One upstream target's health-check handles: probe results and whether it is in rotation.
#[derive(Clone)]
pub struct TargetHealthMetrics {
    inner: Arc<TargetHealthInner>,
}

struct TargetHealthInner {
    probes: [Counter; PROBE_RESULTS.len()],
    healthy: Gauge,
}

impl fmt::Debug for TargetHealthMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetHealthMetrics")
            .finish_non_exhaustive()
    }
}

impl TargetHealthMetrics {
    /// One probe ended: counter gatehouse_health_checks_total{upstream,target,result}.
    pub fn probed(&self, ok: bool) {
        self.inner.probes[usize::from(!ok)].inc();
    }

    /// Gauge gatehouse_upstream_target_healthy{upstream,target}: 1 in rotation, 0 out.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.set(i64::from(healthy));
    }
}

/// A jwt provider's token-cache counters; the default counts into series nobody exports (tests,
/// providers built outside a gateway).
#[derive(Clone, Default)]
pub struct JwtCacheMetrics {
    hits: Counter,
    misses: Counter,
}

impl fmt::Debug for JwtCacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtCacheMetrics").finish_non_exhaustive()
    }
}

impl JwtCacheMetrics {
    /// Counter gatehouse_jwt_cache_hits_total{provider}.
    pub fn hit(&self) {
        self.hits.inc();
    }

    /// Counter gatehouse_jwt_cache_misses_total{provider}.
    pub fn miss(&self) {
        self.misses.inc();
    }
}

/// A `jwks_url` provider's handles: refresh results and the current key count.
#[derive(Clone)]
pub struct JwksMetrics {
    inner: Arc<JwksInner>,
}

struct JwksInner {
    results: [Counter; JWKS_RESULTS.len()],
    keys: Gauge,
}

impl fmt::Debug for JwksMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksMetrics").finish_non_exhaustive()
    }
}

impl JwksMetrics {
    /// One fetch ended: counter gatehouse_jwks_refreshes_total{provider,result}.
    pub fn refreshed(&self, success: bool) {
        self.inner.results[usize::from(!success)].inc();
    }

    /// Gauge gatehouse_jwks_keys{provider}: the keys now in use.
    pub fn set_keys(&self, count: usize) {
        self.inner
            .keys
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn assert_line(out: &str, line: &str) {
        assert!(
            out.lines().any(|l| l == line),
            "missing line {line:?} in:\n{out}"
        );
    }

    fn sample(out: &str, prefix: &str) -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no sample starting with {prefix:?} in:\n{out}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn records_requests_upstreams_gauges_and_reloads() {
        let metrics = Metrics::new();
        let a = metrics.route("a");
        let b = metrics.route("b");
        a.record(&Method::GET, StatusCode::OK, ms(3));
        a.clone()
            .record(&Method::GET, StatusCode::NO_CONTENT, ms(40));
        a.record(&Method::POST, StatusCode::BAD_GATEWAY, ms(2_000));
        // A second handle for the same route must add to the same series.
        metrics
            .route("a")
            .record(&Method::GET, StatusCode::NOT_FOUND, ms(1));
        b.record(
            &Method::from_bytes(b"PURGE").unwrap(),
            StatusCode::OK,
            ms(1),
        );
        b.record(&Method::HEAD, StatusCode::from_u16(799).unwrap(), ms(1));
        metrics
            .unrouted()
            .record(&Method::GET, StatusCode::NOT_FOUND, ms(0));

        let up = metrics.upstream("pool-1");
        up.record(UpstreamOutcome::Response, ms(2));
        up.record(UpstreamOutcome::Response, ms(700));
        up.body_error();
        up.retried();
        up.retried();
        up.retry_budget_exhausted();
        up.record(UpstreamOutcome::Timeout, ms(30_000));
        up.record(UpstreamOutcome::ConnectError, ms(1));

        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.request_started();
        metrics.request_started();
        metrics.request_finished();
        metrics.request_finished();
        metrics.config_reloaded(ReloadResult::Failure);
        metrics.config_reloaded(ReloadResult::Unchanged);
        metrics.config_reloaded(ReloadResult::Unchanged);
        metrics.set_config_version(42);

        let out = metrics.encode();
        assert!(out.ends_with("# EOF\n"), "{out}");
        // Classic text format: counter metadata names the `_total` series itself.
        assert_line(&out, "# TYPE gatehouse_requests_total counter");
        assert_line(&out, "# TYPE gatehouse_request_duration_seconds histogram");
        for line in [
            r#"gatehouse_requests_total{route="a",method="GET",status="2xx"} 2"#,
            r#"gatehouse_requests_total{route="a",method="GET",status="4xx"} 1"#,
            r#"gatehouse_requests_total{route="a",method="POST",status="5xx"} 1"#,
            r#"gatehouse_requests_total{route="b",method="OTHER",status="2xx"} 1"#,
            r#"gatehouse_requests_total{route="b",method="HEAD",status="other"} 1"#,
            r#"gatehouse_requests_total{route="_unmatched",method="GET",status="4xx"} 1"#,
            r#"gatehouse_request_duration_seconds_count{route="a"} 4"#,
            r#"gatehouse_request_duration_seconds_count{route="b"} 2"#,
            r#"gatehouse_request_duration_seconds_bucket{le="0.005",route="a"} 2"#,
            r#"gatehouse_request_duration_seconds_bucket{le="0.05",route="a"} 3"#,
            r#"gatehouse_request_duration_seconds_bucket{le="+Inf",route="a"} 4"#,
            r#"gatehouse_request_duration_seconds_sum{route="a"} 2.044"#,
            r#"gatehouse_upstream_requests_total{upstream="pool-1",outcome="response"} 2"#,
            r#"gatehouse_upstream_requests_total{upstream="pool-1",outcome="timeout"} 1"#,
            r#"gatehouse_upstream_requests_total{upstream="pool-1",outcome="connect_error"} 1"#,
            r#"gatehouse_upstream_requests_total{upstream="pool-1",outcome="error"} 0"#,
            r#"gatehouse_upstream_body_errors_total{upstream="pool-1"} 1"#,
            r#"gatehouse_upstream_retries_total{upstream="pool-1"} 2"#,
            r#"gatehouse_upstream_retry_budget_exhausted_total{upstream="pool-1"} 1"#,
            r#"gatehouse_upstream_duration_seconds_count{upstream="pool-1"} 2"#,
            r#"gatehouse_upstream_duration_seconds_bucket{le="0.5",upstream="pool-1"} 1"#,
            r#"gatehouse_upstream_duration_seconds_bucket{le="1.0",upstream="pool-1"} 2"#,
            "gatehouse_open_connections 1",
            "gatehouse_requests_in_flight 0",
            r#"gatehouse_config_reloads_total{result="success"} 0"#,
            r#"gatehouse_config_reloads_total{result="failure"} 1"#,
            r#"gatehouse_config_reloads_total{result="unchanged"} 2"#,
            "gatehouse_config_version 42",
            &format!(
                r#"gatehouse_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert_line(&out, line);
        }
        // Combinations never seen must not exist as zero-valued series.
        assert!(!out.contains(r#"route="a",method="PUT""#), "{out}");
        assert_eq!(
            sample(
                &out,
                "gatehouse_config_last_reload_success_timestamp_seconds "
            ),
            0.0
        );

        metrics.config_reloaded(ReloadResult::Success);
        let out = metrics.encode();
        assert_line(
            &out,
            r#"gatehouse_config_reloads_total{result="success"} 1"#,
        );
        let stamp = sample(
            &out,
            "gatehouse_config_last_reload_success_timestamp_seconds ",
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stamp > 0.0 && stamp <= now, "{stamp} vs {now}");

        metrics.connection_closed();
        assert_line(&metrics.encode(), "gatehouse_open_connections 0");
    }

    #[test]
    fn forget_route_and_upstream_remove_only_their_series() {
        let metrics = Metrics::new();
        let gone = metrics.route("gone");
        let kept = metrics.route("kept");
        gone.record(&Method::GET, StatusCode::OK, ms(1));
        gone.record(&Method::DELETE, StatusCode::FORBIDDEN, ms(1));
        kept.record(&Method::GET, StatusCode::OK, ms(1));
        metrics
            .upstream("old")
            .record(UpstreamOutcome::Response, ms(1));
        metrics
            .upstream("new")
            .record(UpstreamOutcome::Error, ms(1));

        metrics.forget_route("gone");
        metrics.forget_upstream("old");
        let out = metrics.encode();
        assert!(!out.contains(r#"route="gone""#), "{out}");
        assert!(!out.contains(r#"upstream="old""#), "{out}");
        assert_line(
            &out,
            r#"gatehouse_requests_total{route="kept",method="GET",status="2xx"} 1"#,
        );
        assert_line(
            &out,
            r#"gatehouse_request_duration_seconds_count{route="kept"} 1"#,
        );
        assert_line(
            &out,
            r#"gatehouse_upstream_requests_total{upstream="new",outcome="error"} 1"#,
        );

        // An in-flight request on the old handle, even with a pair it never saw, stays out.
        gone.record(&Method::PATCH, StatusCode::OK, ms(1));
        gone.record(&Method::GET, StatusCode::OK, ms(1));
        assert!(!metrics.encode().contains(r#"route="gone""#));

        // A later reload that brings the route back starts fresh series.
        metrics
            .route("gone")
            .record(&Method::GET, StatusCode::OK, ms(1));
        let out = metrics.encode();
        assert_line(
            &out,
            r#"gatehouse_requests_total{route="gone",method="GET",status="2xx"} 1"#,
        );
        assert!(!out.contains(r#"route="gone",method="PATCH""#), "{out}");
    }

    #[test]
    fn handles_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Metrics>();
        shareable::<RouteMetrics>();
        shareable::<UpstreamMetrics>();
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_nanos(500_001));
        h.observe(Duration::from_secs(31));
        h.observe(Duration::MAX);
        let counts: Vec<u64> = h
            .cells
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[BUCKETS - 1], 2);
    }

    #[test]
    fn status_and_method_labels_are_bounded() {
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::CONTINUE)], "1xx");
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::OK)], "2xx");
        assert_eq!(
            STATUS_CLASSES[status_index(StatusCode::PERMANENT_REDIRECT)],
            "3xx"
        );
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::IM_A_TEAPOT)], "4xx");
        assert_eq!(
            STATUS_CLASSES[status_index(StatusCode::from_u16(599).unwrap())],
            "5xx"
        );
        assert_eq!(
            STATUS_CLASSES[status_index(StatusCode::from_u16(999).unwrap())],
            "other"
        );
        for (i, name) in METHODS.iter().enumerate().take(9) {
            assert_eq!(
                method_index(&Method::from_bytes(name.as_bytes()).unwrap()),
                i
            );
        }
        assert_eq!(method_index(&Method::from_bytes(b"get").unwrap()), 9);
        assert_eq!(
            method_index(&Method::from_bytes(b"A-VERY-LONG-EXTENSION-METHOD").unwrap()),
            9
        );
    }

    #[test]
    fn jwks_series_are_per_provider_and_forgotten_with_it() {
        let metrics = Metrics::new();
        let idp = metrics.jwks("idp");
        idp.refreshed(true);
        idp.refreshed(true);
        idp.refreshed(false);
        idp.set_keys(3);
        // A second handle (a reload) shares the series.
        metrics.jwks("idp").refreshed(false);
        metrics.jwks("other");
        let out = metrics.encode();
        assert_line(&out, "# TYPE gatehouse_jwks_refreshes_total counter");
        assert_line(
            &out,
            "gatehouse_jwks_refreshes_total{provider=\"idp\",result=\"success\"} 2",
        );
        assert_line(
            &out,
            "gatehouse_jwks_refreshes_total{provider=\"idp\",result=\"failure\"} 2",
        );
        assert_line(
            &out,
            "gatehouse_jwks_refreshes_total{provider=\"other\",result=\"failure\"} 0",
        );
        assert_line(&out, "gatehouse_jwks_keys{provider=\"idp\"} 3");
        assert_line(&out, "gatehouse_jwks_keys{provider=\"other\"} 0");

        metrics.forget_jwks("idp");
        idp.refreshed(true);
        let out = metrics.encode();
        assert!(!out.contains("provider=\"idp\""), "{out}");
        assert_line(&out, "gatehouse_jwks_keys{provider=\"other\"} 0");
    }

    #[test]
    fn promtool_accepts_the_output() {
        let metrics = Metrics::new();
        metrics.jwks("idp").refreshed(false);
        metrics
            .route("a \"quoted\\\" route")
            .record(&Method::GET, StatusCode::OK, ms(5));
        metrics
            .upstream("u")
            .record(UpstreamOutcome::Response, ms(5));
        metrics.config_reloaded(ReloadResult::Success);
        metrics.set_config_version(3);
        metrics.connection_opened();
        let out = metrics.encode();

        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("note: promtool not on PATH; skipping the promtool check");
                return;
            }
            Err(e) => panic!("starting promtool: {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(out.as_bytes())
            .unwrap();
        let result = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&result.stdout);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            result.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
            "promtool: {}\nstdout: {stdout}\nstderr: {stderr}\ninput:\n{out}",
            result.status
        );
    }
}
