//! Upstreams: named groups of targets, how one is chosen, and the pooled client that calls it.

pub mod answer;
pub mod balance;
pub mod breaker;
pub mod call;
pub mod exchange;
pub mod h1;
pub mod h2;
pub mod health;
pub mod outlier;
pub mod pool;
mod read_timer;
pub mod retry;
pub mod stream;
pub mod upgrade;
pub mod window;

use crate::observability::metrics::UpstreamMetrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use balance::{Balancer, InFlight};
use pool::Pool;

/// One entry of `upstreams:`, ready to serve.
#[derive(Debug)]
pub struct Upstream {
    /// Unique name; the label used in logs and metrics.
    pub name: Arc<str>,
    /// Where requests go.
    pub targets: Vec<Target>,
    /// Chooses among `targets`.
    pub balancer: Balancer,
    /// `circuit_breaker.max_requests`: requests in flight at most.
    pub bulkhead: Option<Bulkhead>,
    /// The circuit breaker (`circuit_breaker:` keys besides `max_requests`), kept across
    /// reloads while its settings do not change.
    pub breaker: Option<Arc<breaker::Breaker>>,
    /// `hash_on`, with `balance: hash`: what a request's key is.
    pub hash_on: Option<HashOn>,
    /// `outlier_detection`: targets ejected after runs of failures (kept across reloads).
    pub outliers: Option<Arc<outlier::Outliers>>,
    /// `health_check`: targets out of rotation while their probes fail; kept across reloads.
    pub health: Option<Arc<health::HealthChecker>>,
    /// `retry`: which failed attempts are tried again, and how.
    pub retry: Option<retry::RetryPolicy>,
    /// The retry budget, with `retry`; kept across reloads while its settings do not change.
    pub retry_budget: Option<Arc<retry::RetryBudget>>,
    /// Time allowed until response headers arrive (routes may override).
    pub timeout: Duration,
    /// Time allowed between two reads of the response body (routes may override).
    pub read_timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Keep-alive connections, kept across reloads while the pool settings do not change.
    pub pool: Arc<Pool>,
    /// With `protocol: h2` or `h2c`: the HTTP/2 client requests go through instead of `pool`
    /// (kept across reloads while its settings do not change).
    pub h2: Option<Arc<h2::H2Client>>,
    /// This upstream's call counters and latency histogram.
    pub metrics: UpstreamMetrics,
}

/// What `balance: hash` hashes (`hash_on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value (`header:NAME`).
    Header(http::HeaderName),
    /// The client address, after `trusted_proxies` (`ip`).
    Ip,
    /// A cookie's value (`cookie:NAME`).
    Cookie(Box<str>),
}

/// The value of cookie `name` among a request's `Cookie` fields.
pub fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// At most `max` requests in flight to one upstream (Envoy's sense of a circuit breaker): a
/// slow backend cannot hold every client connection of the gateway. Counted across workers
/// from the moment a request is admitted until its answer's body is done, in a count the
/// upstream keeps across reloads (requests admitted before a reload still count after it).
#[derive(Debug)]
pub struct Bulkhead {
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

/// One admitted request; it leaves the count when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// Room for `max` requests in flight, counted in `in_flight`.
    pub fn new(max: u32, in_flight: Arc<AtomicUsize>) -> Self {
        Bulkhead {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            in_flight,
        }
    }

    /// Admits one more request, or `None` when `max` are already in flight.
    pub fn admit(&self) -> Option<Admitted> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Admitted(Arc::clone(&self.in_flight)))
    }
}

/// One backend address.
#[derive(Debug, Clone)]
pub struct Target {
    /// As configured, for logs and `explain`.
    pub url: Arc<str>,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port` as configured (the port defaults to 80, or 443 for `https`).
    pub authority: Authority,
    /// The authority as a Host header value, for routes with `preserve_host: false`.
    pub host_header: http::HeaderValue,
    /// Relative share of requests.
    pub weight: u32,
}

impl Upstream {
    /// The index of the target for the next request among the healthy ones `allowed` accepts
    /// (with `key`, its `hash_on` value) and, under `least_requests`, the mark that counts the
    /// request in flight there (hold it until the answer's body is done).
    ///
    /// Unhealthy targets are never picked, not even when all are: the active check is the
    /// operator's own definition of healthy, and sending to targets it marked dead would turn a
    /// clear 503 into slow timeouts.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<(usize, Option<InFlight>)> {
        let allowed = |i: usize| allowed(i) && self.is_healthy(i);
        match &self.outliers {
            None => self.balancer.pick(key, allowed),
            // Ejected targets are passed over; should every allowed one be out, they serve
            // again (healthy ones only: `allowed` still applies).
            Some(outliers) => self
                .balancer
                .pick(key, |i| allowed(i) && outliers.is_in(i))
                .or_else(|| self.balancer.pick(key, allowed)),
        }
    }

    /// Whether target `index` passes its active health checks (always, without them).
    pub fn is_healthy(&self, index: usize) -> bool {
        self.health.as_ref().is_none_or(|h| h.is_healthy(index))
    }

    /// Whether requests go upstream over HTTP/2 (`protocol: h2` or `h2c`).
    pub fn speaks_h2(&self) -> bool {
        self.h2.is_some()
    }

    /// Whether active health checks have taken every target out.
    pub fn none_healthy(&self) -> bool {
        self.health.is_some() && !(0..self.targets.len()).any(|i| self.is_healthy(i))
    }
}

/// Where to connect for a target's authority: `host:port`, port 80 (`http`) or 443 (`https`)
/// when the URL names none.
pub fn connect_address(scheme: &Scheme, authority: &Authority) -> String {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(default)
    )
}

/// Parses a target URL: `http://host:port` or `https://host:port` with no path, query or
/// credentials.
pub fn parse_target(url: &str) -> Result<(Scheme, Authority), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid target URL `{url}`: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(other) => {
            return Err(format!(
                "target `{url}`: unsupported scheme `{other}`; use http:// or https://"
            ))
        }
        None => return Err(format!("target `{url}` needs a scheme, e.g. http://{url}")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("target `{url}` has no host"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(format!(
            "target `{url}`: credentials in target URLs are not supported"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "target `{url}` has a path or query; a target is scheme://host:port \
             (change paths with the route's strip_prefix or rewrite)"
        ));
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (scheme, authority) = parse_target("http://127.0.0.1:4003").unwrap();
        assert_eq!(scheme, Scheme::HTTP);
        assert_eq!(authority.as_str(), "127.0.0.1:4003");
        assert_eq!(
            parse_target("http://backend/").unwrap().1.as_str(),
            "backend"
        );
        for (bad, expect) in [
            ("ftp://x", "unsupported scheme"),
            ("127.0.0.1:80", "needs a scheme"),
            ("http://x:1/api", "has a path"),
            ("http://u:p@x:1", "credentials"),
            ("http://", "invalid target"),
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(err.contains(expect), "{bad}: {err}");
        }
    }

    #[test]
    fn connect_addresses_always_have_a_port() {
        for (url, address) in [
            ("http://127.0.0.1:4003", "127.0.0.1:4003"),
            ("http://backend", "backend:80"),
            ("http://backend:8080/", "backend:8080"),
            ("http://[::1]", "[::1]:80"),
            ("http://[::1]:81", "[::1]:81"),
            ("https://backend", "backend:443"),
            ("https://backend:8443", "backend:8443"),
            ("https://[::1]", "[::1]:443"),
        ] {
            let (scheme, authority) = parse_target(url).unwrap();
            assert_eq!(connect_address(&scheme, &authority), address, "{url}");
        }
    }

    #[test]
    fn cookie_values_are_found_by_exact_name() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; session=abc; b=".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "other=x".parse().unwrap());
        assert_eq!(cookie_value(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&headers, "b"), Some(&b""[..]));
        assert_eq!(cookie_value(&headers, "other"), Some(&b"x"[..]));
        assert_eq!(cookie_value(&headers, "sess"), None);
        assert_eq!(cookie_value(&headers, "missing"), None);
        assert_eq!(cookie_value(&http::HeaderMap::new(), "a"), None);
    }
}
