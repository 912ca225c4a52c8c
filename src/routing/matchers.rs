//! The conditions of a route's `match:`, compiled once at load time.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

/// Which request hosts a route accepts.
#[derive(Debug, Clone)]
pub enum HostMatcher {
    /// Any host (no `host:` given).
    Any,
    /// One host, lower-cased, without port.
    Exact(Box<str>),
    /// `*.example.com`: any subdomain at any depth, held as `.example.com`; not the bare domain.
    Suffix(Box<str>),
}

impl HostMatcher {
    /// Parses a configured `host:` value.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        let (is_wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "invalid host `{pattern}`: expected a name such as api.example.com or *.example.com \
                 (no port, no scheme; `*` only as the whole first label)"
            ));
        }
        Ok(if is_wildcard {
            HostMatcher::Suffix(format!(".{name}").into())
        } else {
            HostMatcher::Exact(name.into())
        })
    }

    /// Whether `host` (already lower-cased, without port) is accepted.
    pub fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (HostMatcher::Any, _) => true,
            (HostMatcher::Exact(h), Some(host)) => **h == *host,
            (HostMatcher::Suffix(s), Some(host)) => host.len() > s.len() && host.ends_with(&**s),
            (_, None) => false,
        }
    }

    /// How the condition reads in `explain`.
    pub fn describe(&self) -> String {
        match self {
            HostMatcher::Any => "any host".into(),
            HostMatcher::Exact(h) => format!("host {h}"),
            HostMatcher::Suffix(s) => format!("host *{s}"),
        }
    }
}

/// Which paths a route accepts; matched against the normalised path.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// `path:` — the prefix itself, or the prefix followed by `/...`.
    Prefix(Box<str>),
    /// `path_exact:`
    Exact(Box<str>),
    /// `path_regex:` — searched in the path (anchor it with `^...$` for a whole match).
    Regex(Regex),
}

impl PathMatcher {
    /// Whether the normalised `path` is accepted.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix(prefix) => prefix_matches(prefix, path),
            PathMatcher::Exact(exact) => **exact == *path,
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }

    /// How the condition reads in `explain`.
    pub fn describe(&self) -> String {
        match self {
            PathMatcher::Prefix(p) => format!("path prefix {p}"),
            PathMatcher::Exact(p) => format!("exact path {p}"),
            PathMatcher::Regex(re) => format!("path regex {}", re.as_str()),
        }
    }
}

/// A prefix matches on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
/// A prefix ending in `/` (including `/` itself) matches anything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The methods a route allows. GET also allows HEAD, as every HTTP server does.
#[derive(Debug, Clone)]
pub struct MethodSet(Vec<Method>);

impl MethodSet {
    /// Parses configured method names; they are upper-cased.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut methods = Vec::new();
        for name in names {
            let upper = name.trim().to_ascii_uppercase();
            let method = Method::from_bytes(upper.as_bytes())
                .map_err(|_| format!("invalid method `{name}`"))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        Ok(MethodSet(methods))
    }

    /// Whether `method` is allowed.
    pub fn allows(&self, method: &Method) -> bool {
        self.0.contains(method)
    }

    /// The allowed methods, in configured order.
    pub fn methods(&self) -> &[Method] {
        &self.0
    }
}

/// A request header that must be present with exactly this value.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    /// Header name (case-insensitive by construction).
    pub name: HeaderName,
    /// Exact value; any one of several values of the header may match.
    pub value: HeaderValue,
}

impl HeaderCondition {
    /// Whether the request's headers satisfy this condition.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| v == self.value)
    }
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header,
/// without port or trailing dot, lower-cased.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    let raw = match uri.authority() {
        Some(authority) => authority.host(),
        None => {
            let value = headers.get(http::header::HOST)?.to_str().ok()?;
            strip_port(value)
        }
    };
    let host = raw.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: `[::1]:8080` -> `[::1]`.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        for (prefix, path, expected) in [
            ("/api/v1/orders", "/api/v1/orders", true),
            ("/api/v1/orders", "/api/v1/orders/", true),
            ("/api/v1/orders", "/api/v1/orders/7", true),
            ("/api/v1/orders", "/api/v1/ordersX", false),
            ("/api/v1/orders", "/api/v1", false),
            ("/api/", "/api/x", true),
            ("/api/", "/api", false),
            ("/", "/anything", true),
            ("/", "/", true),
        ] {
            assert_eq!(prefix_matches(prefix, path), expected, "{prefix} vs {path}");
        }
    }

    #[test]
    fn hosts() {
        let exact = HostMatcher::parse("API.Example.com.").unwrap();
        assert!(exact.matches(Some("api.example.com")));
        assert!(!exact.matches(Some("x.api.example.com")));
        assert!(!exact.matches(None));
        let wild = HostMatcher::parse("*.example.com").unwrap();
        assert!(wild.matches(Some("a.example.com")));
        assert!(wild.matches(Some("a.b.example.com")));
        assert!(!wild.matches(Some("example.com")));
        assert!(!wild.matches(Some("badexample.com")));
        for bad in ["", "*", "a.*.com", "api.example.com:80", "http://x", "a..b"] {
            assert!(HostMatcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_host_strips_port_and_case() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("API.example.com:8080"));
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&uri, &headers).unwrap(), "api.example.com");
        headers.insert("host", HeaderValue::from_static("[::1]:8080"));
        assert_eq!(request_host(&uri, &headers).unwrap(), "[::1]");
        let uri: http::Uri = "http://h2.example.com/x".parse().unwrap();
        assert_eq!(request_host(&uri, &headers).unwrap(), "h2.example.com");
    }

    #[test]
    fn methods() {
        let set = MethodSet::parse(["get", "POST"]).unwrap();
        assert!(set.allows(&Method::GET));
        assert!(set.allows(&Method::HEAD));
        assert!(set.allows(&Method::POST));
        assert!(!set.allows(&Method::DELETE));
        assert!(MethodSet::parse(["GE T"]).is_err());
    }
}
