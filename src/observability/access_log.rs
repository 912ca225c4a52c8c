//! One access-log line and one set of request metrics per request, written when the response
//! body is finished (or abandoned), so status, bytes and duration are final.
//!
//! Only facts the gateway decided are logged: never headers, query strings, or bodies, so
//! Authorization, cookies and tokens in URLs cannot leak into logs.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, StatusCode};

use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::routing::normalize::normalize_path;
use crate::routing::route::Route;

/// What a request's log line and metrics need of it; the request path fills it in.
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// The route that served it.
    pub route: Option<Arc<Route>>,
    /// The request id sent back to the client.
    pub request_id: Option<HeaderValue>,
    /// Where it came from (after `trusted_proxies`); only filled when access logs are on.
    pub client_ip: Option<IpAddr>,
    /// The normalised path, without query; only filled when access logs are on.
    pub path: Option<Box<str>>,
    /// The path as received, without query, when it could not be normalised (or the head it
    /// came in was refused); only filled when access logs are on.
    pub raw_path: Option<Box<str>>,
    /// The upstream target called.
    pub upstream_target: Option<Arc<str>>,
    /// Time from sending upstream to its response headers.
    pub upstream_duration: Option<Duration>,
    /// Request body bytes read, shared with the body as it streams upstream.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// Why the response failed, when the gateway knows (`upstream_body_error`).
    pub error: Option<&'static str>,
    /// On a TLS connection, the server name the client sent in SNI (empty without one); only
    /// filled when access logs are on.
    pub tls: Option<Arc<str>>,
}

impl RequestRecord {
    /// Notes the path of a request that no route served: normalised, or as received (logged as
    /// `raw_path`) when normalisation refused it.
    pub fn note_unrouted_path(&mut self, raw: &str) {
        match normalize_path(raw) {
            Ok(path) => self.path = Some(path.into()),
            Err(_) => self.raw_path = Some(raw.into()),
        }
    }
}

/// Finishes a request's accounting when dropped; owned by the response body.
#[derive(Debug)]
pub struct Completion {
    started: Instant,
    method: Method,
    status: StatusCode,
    record: RequestRecord,
    route_metrics: RouteMetrics,
    metrics: Arc<Metrics>,
    access_log: bool,
    /// Response body bytes sent so far.
    pub bytes_out: u64,
    /// Whether the whole body was sent.
    pub completed: bool,
}

impl Completion {
    /// Starts accounting for a response with `status`; `unrouted` counts requests no route
    /// served.
    pub fn new(
        started: Instant,
        method: Method,
        status: StatusCode,
        record: RequestRecord,
        (metrics, unrouted): (&Arc<Metrics>, &RouteMetrics),
        access_log: bool,
    ) -> Self {
        let route_metrics = match &record.route {
            Some(route) => route.metrics.clone(),
            None => unrouted.clone(),
        };
        Completion {
            started,
            method,
            status,
            record,
            route_metrics,
            metrics: Arc::clone(metrics),
            access_log,
            bytes_out: 0,
            completed: false,
        }
    }
}

/// Access-log reason for an upstream body that broke off.
pub const UPSTREAM_BODY_ERROR: &str = "upstream_body_error";

impl Completion {
    /// The response body failed while being sent. The only bodies that can fail are relayed
    /// upstream bodies (the gateway's own are in memory), so the reason is known here; the
    /// server notes it as it sees the error, which costs the request path nothing.
    pub fn body_failed(&mut self) {
        self.record.error.get_or_insert(UPSTREAM_BODY_ERROR);
    }
}

impl Completion {
    /// The request became a tunnel that carried these bytes (request side, response side) and
    /// has ended, cleanly or not; dropped after this, the line's duration is the tunnel's too.
    pub fn tunnelled(&mut self, bytes_in: u64, bytes_out: u64, clean: bool) {
        self.record.bytes_in = Some(Arc::new(AtomicU64::new(bytes_in)));
        self.bytes_out = bytes_out;
        self.completed = clean;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        self.route_metrics
            .record(&self.method, self.status, duration);
        self.metrics.request_finished();
        if !self.access_log {
            return;
        }
        let r = &self.record;
        let bytes_in = r.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed));
        tracing::info!(
            target: "gatehouse::access",
            request_id = r.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client_ip = %r.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            method = %self.method,
            path = r.path.as_deref().unwrap_or(""),
            raw_path = r.raw_path.as_deref(),
            route = r.route.as_ref().map_or("", |route| &*route.name),
            upstream = r.upstream_target.as_deref().unwrap_or(""),
            status = self.status.as_u16(),
            bytes_in,
            bytes_out = self.bytes_out,
            duration_ms = duration.as_secs_f64() * 1000.0,
            upstream_ms = r.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
            completed = self.completed,
            error = r.error,
            tls = r.tls.as_deref(),
            "request"
        );
    }
}
