//! A route as the request path uses it: conditions, action and policies, all prebuilt.

use crate::observability::metrics::RouteMetrics;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::matchers::{prefix_matches, HeaderCondition, HostMatcher, MethodSet, PathMatcher};
use crate::header_rules::HeaderRules;
use crate::upstream::Upstream;

/// One entry of `routes:`, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Unique name; the label used in logs and metrics.
    pub name: Arc<str>,
    /// `file:line` where it is defined, for `explain` and errors.
    pub defined_at: String,
    /// `match.host`.
    pub host: HostMatcher,
    /// `match.path` / `path_exact` / `path_regex`.
    pub path: PathMatcher,
    /// `match.methods`; `None` allows every method.
    pub methods: Option<MethodSet>,
    /// `match.headers`.
    pub headers: Vec<HeaderCondition>,
    /// What to do with a matching request.
    pub action: RouteAction,
    /// Edits to the request headers sent upstream.
    pub request_headers: HeaderRules,
    /// Edits to the response headers sent to the client.
    pub response_headers: HeaderRules,
    /// Request bodies larger than this get 413.
    pub max_request_body: u64,
    /// Whether security headers are added to responses.
    pub security_headers: bool,
    /// This route's request counters and latency histogram.
    pub metrics: RouteMetrics,
    /// Who may call it: auth, authorize, cors.
    pub policy: crate::auth::RoutePolicy,
    /// Request rate limits; every one applies.
    pub rate_limits: Vec<crate::ratelimit::RateLimit>,
    /// Counts this route's rate-limit decisions (detached when it has no limits).
    pub rate_limit_decisions: crate::observability::metrics::DecisionMetrics,
    /// Response caching, when the route has `cache`.
    pub cache: Option<Arc<crate::cache::settings::RouteCache>>,
    /// Counters of what the cache made of its requests (detached without `cache`).
    pub cache_results: crate::observability::metrics::CacheResultMetrics,
    /// `compress: true`: responses are compressed for clients that accept it.
    pub compress: Option<crate::compress::CompressPolicy>,
}

/// What a route does with a request.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to an upstream.
    Proxy(ProxyAction),
    /// Answer with a fixed response.
    Respond(StaticResponse),
}

/// How a request is forwarded.
#[derive(Debug)]
pub struct ProxyAction {
    /// Where it goes.
    pub upstream: Arc<Upstream>,
    /// How the path changes on the way.
    pub rewrite: PathRewrite,
    /// Send the client's Host (true) or the target's authority (false).
    pub preserve_host: bool,
    /// Time allowed until response headers arrive.
    pub timeout: Duration,
    /// Time allowed between two reads of the response body.
    pub read_timeout: Duration,
}

/// A fixed response, built once.
#[derive(Debug)]
pub struct StaticResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers, including Content-Type when configured.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

/// A change to the leading part of the path before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The path goes upstream as normalised.
    Keep,
    /// `prefix` (on a segment boundary) is replaced by `to`; `strip_prefix` is `to: ""`.
    Prefix {
        /// What the path starts with.
        prefix: Box<str>,
        /// What replaces it.
        to: Box<str>,
    },
}

impl PathRewrite {
    /// The upstream path for a normalised request path.
    pub fn apply<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let PathRewrite::Prefix { prefix, to } = self else {
            return Cow::Borrowed(path);
        };
        if !prefix_matches(prefix, path) {
            return Cow::Borrowed(path);
        }
        let rest = &path[prefix.len()..];
        let mut out = String::with_capacity(to.len() + rest.len() + 1);
        out.push_str(to);
        match (out.ends_with('/'), rest.starts_with('/')) {
            (true, true) => out.push_str(&rest[1..]),
            (false, false) if !rest.is_empty() => {
                out.push('/');
                out.push_str(rest);
            }
            _ => out.push_str(rest),
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        Cow::Owned(out)
    }
}

impl Route {
    /// Whether the route's methods allow `method` (no `methods:` allows all).
    pub fn allows_method(&self, method: &http::Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.allows(method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(prefix: &str, to: &str) -> PathRewrite {
        PathRewrite::Prefix {
            prefix: prefix.into(),
            to: to.into(),
        }
    }

    #[test]
    fn strip_and_rewrite() {
        let strip = rewrite("/api/v1", "");
        assert_eq!(strip.apply("/api/v1/orders/7"), "/orders/7");
        assert_eq!(strip.apply("/api/v1"), "/");
        assert_eq!(strip.apply("/api/v1/"), "/");
        assert_eq!(strip.apply("/api/v10"), "/api/v10");
        assert_eq!(strip.apply("/other"), "/other");

        let swap = rewrite("/api/v1", "/v1");
        assert_eq!(swap.apply("/api/v1/orders"), "/v1/orders");
        assert_eq!(swap.apply("/api/v1"), "/v1");
        let slash = rewrite("/api/", "/internal/");
        assert_eq!(slash.apply("/api/x"), "/internal/x");
        let root = rewrite("/", "/base");
        assert_eq!(root.apply("/x/y"), "/base/x/y");
        assert_eq!(PathRewrite::Keep.apply("/k"), "/k");
    }
}
