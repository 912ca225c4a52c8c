//! Route `cors:`: preflight answers and the headers added to actual responses.
//!
//! Every header value is built once in [`CorsPolicy::new`]; per request the policy only
//! compares bytes and clones prebuilt values (a reference-count bump, not a copy).

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The `cors:` section as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// Exact origins (`scheme://host[:port]`), or the single entry `"*"`.
    pub origins: Vec<String>,
    /// Methods a preflight may ask for.
    pub methods: Vec<Method>,
    /// Request headers a preflight may ask for (compared case-insensitively).
    pub headers: Vec<String>,
    /// Whether browsers may send cookies / `Authorization` cross-origin.
    pub credentials: bool,
    /// How long browsers may cache a preflight answer; absent leaves it to the browser.
    pub max_age: Option<Duration>,
}

/// A validated `cors:` section with every response header value prebuilt.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Origins,
    methods: Box<[Method]>,
    headers: Box<[HeaderName]>,
    credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    List(Box<[AllowedOrigin]>),
}

#[derive(Debug, Clone)]
struct AllowedOrigin {
    /// Normalised (lowercase, default port dropped) so it equals what browsers send.
    origin: Box<str>,
    /// The same text as a header value; sent back instead of the request's bytes so that the
    /// response can only ever name an origin the operator wrote down.
    value: HeaderValue,
}

impl CorsPolicy {
    /// Validates the settings and prebuilds the header values.
    pub fn new(settings: CorsSettings) -> Result<CorsPolicy, String> {
        let CorsSettings {
            origins,
            methods,
            headers,
            credentials,
            max_age,
        } = settings;

        if origins.is_empty() {
            return Err("cors: origins must not be empty".into());
        }
        let origins = if origins.iter().any(|o| o == "*") {
            // Browsers refuse `*` on credentialed requests, and reflecting the origin instead
            // would hand every site on the web the user's cookies.
            if credentials {
                return Err("cors: origins \"*\" cannot be combined with credentials: true".into());
            }
            if origins.len() > 1 {
                return Err("cors: origins \"*\" must be the only entry".into());
            }
            Origins::Any
        } else {
            let mut list = Vec::with_capacity(origins.len());
            for raw in &origins {
                let origin = normalize_origin(raw).ok_or_else(|| {
                    format!(
                        "cors: origin {raw:?} is not valid: expected scheme://host[:port] \
                         (no path, not even a trailing slash) or \"*\""
                    )
                })?;
                let value = HeaderValue::from_str(&origin)
                    .map_err(|_| format!("cors: origin {raw:?} is not a valid header value"))?;
                list.push(AllowedOrigin {
                    origin: origin.into(),
                    value,
                });
            }
            Origins::List(list.into())
        };

        // An empty list would make every preflight fail; that is never what an operator who
        // wrote a `cors:` section meant, so say so at load instead.
        if methods.is_empty() {
            return Err("cors: methods must not be empty".into());
        }
        let allow_methods = join(methods.iter().map(Method::as_str))
            .map_err(|_| "cors: methods cannot be sent as a header value".to_string())?;

        let mut names = Vec::with_capacity(headers.len());
        for h in &headers {
            // `*` means "any header" to browsers only without credentials and never covers
            // Authorization; too subtle to offer implicitly, so names must be listed.
            if h == "*" {
                return Err("cors: headers \"*\" is not supported; list the header names".into());
            }
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("cors: header {h:?} is not a valid header name"))?;
            names.push(name);
        }
        let allow_headers = if headers.is_empty() {
            None
        } else {
            Some(
                join(headers.iter().map(String::as_str))
                    .map_err(|_| "cors: headers cannot be sent as a header value".to_string())?,
            )
        };

        Ok(CorsPolicy {
            origins,
            methods: methods.into(),
            headers: names.into(),
            credentials,
            allow_methods,
            allow_headers,
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
        })
    }

    /// Whether the request is a CORS preflight, which the gateway answers itself (before auth,
    /// since browsers never attach credentials to a preflight).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The headers of the preflight answer; the caller sends them with status 204 and an empty
    /// body. A refused preflight still gets a 204 but no `Access-Control-Allow-*` headers: the
    /// browser then blocks the request, and the status leaks nothing about the policy.
    pub fn preflight(&self, request_headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(8);
        // Caches must key on all three, whether or not this particular answer allows.
        out.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let Some(origin) = self.allowed_origin(request_headers) else {
            return out;
        };
        if !self.method_allowed(request_headers) || !self.headers_allowed(request_headers) {
            return out;
        }
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(h) = &self.allow_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        if let Some(age) = &self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out
    }

    /// Adds the CORS headers to an actual (non-preflight) response, including gateway-made
    /// error responses, so browsers can read why a call failed.
    ///
    /// The gateway's policy replaces whatever the upstream said about CORS: an upstream that
    /// reflects any origin must not widen what the route allows.
    pub fn apply(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        // Added even when this response carries no CORS headers: a shared cache that stored
        // it for one origin (or for none) must not serve it to another.
        add_vary_origin(response_headers);
        match self.allowed_origin(request_headers) {
            Some(origin) => {
                response_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                if self.credentials {
                    response_headers.insert(
                        ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                } else {
                    response_headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
                }
            }
            None => {
                response_headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
                response_headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
            }
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its origin is allowed.
    fn allowed_origin(&self, request_headers: &HeaderMap) -> Option<HeaderValue> {
        let mut all = request_headers.get_all(ORIGIN).iter();
        let origin = all.next()?.as_bytes();
        // Browsers send exactly one; several means a hand-made request, and picking one of
        // them would be guessing.
        if all.next().is_some() {
            return None;
        }
        match &self.origins {
            // Sandboxed iframes and file: pages send "null"; many unrelated documents share
            // it, so it only passes when configured literally, never through `*`.
            Origins::Any if origin.eq_ignore_ascii_case(b"null") => None,
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => list
                .iter()
                .find(|o| o.origin.as_bytes().eq_ignore_ascii_case(origin))
                .map(|o| o.value.clone()),
        }
    }

    fn method_allowed(&self, request_headers: &HeaderMap) -> bool {
        let Some(wanted) = request_headers.get(ACCESS_CONTROL_REQUEST_METHOD) else {
            return false;
        };
        // Method names are case-sensitive (RFC 9110), and browsers upper-case the standard
        // ones before asking.
        let wanted = wanted.as_bytes().trim_ascii();
        self.methods.iter().any(|m| m.as_str().as_bytes() == wanted)
    }

    fn headers_allowed(&self, request_headers: &HeaderMap) -> bool {
        request_headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|name| !name.is_empty())
            .all(|name| {
                // `HeaderName` is stored lowercase, so only the request side needs folding.
                self.headers
                    .iter()
                    .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
            })
    }
}

/// Joins with ", " into one header value (config load only).
fn join<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let joined: Vec<&str> = items.collect();
    HeaderValue::from_str(&joined.join(", "))
}

/// Ensures `Vary` lists `Origin`, keeping one merged value rather than a second `Vary` line
/// because some caches only read the first.
fn add_vary_origin(headers: &mut HeaderMap) {
    let mut existing = false;
    for value in headers.get_all(VARY) {
        existing = true;
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            // `*` already varies on everything.
            if token == b"*" || token.eq_ignore_ascii_case(b"origin") {
                return;
            }
        }
    }
    if !existing {
        headers.insert(VARY, HeaderValue::from_static("Origin"));
        return;
    }
    // Only reached when the upstream set a Vary without Origin: the one allocation we cannot
    // avoid, since the merged value is new bytes.
    let mut merged = Vec::with_capacity(64);
    for value in headers.get_all(VARY) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() {
                merged.extend_from_slice(token);
                merged.extend_from_slice(b", ");
            }
        }
    }
    merged.extend_from_slice(b"Origin");
    match HeaderValue::from_bytes(&merged) {
        Ok(v) => {
            headers.insert(VARY, v);
        }
        // The existing tokens came out of a valid header value, so this is unreachable in
        // practice; appending still gets Origin listed.
        Err(_) => {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Normalises a configured origin to the form browsers serialise (`Origin` header): scheme
/// and host lowercase, default port omitted. `None` when it is not `scheme://host[:port]`.
fn normalize_origin(raw: &str) -> Option<String> {
    if raw == "null" {
        return Some(raw.to_string());
    }
    let (scheme, rest) = raw.split_once("://")?;
    let mut sb = scheme.bytes();
    if !sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();

    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&rest[..addr.len() + 2], port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return None;
        }
        (host, port)
    };
    let host = host.to_ascii_lowercase();

    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u16 = p.parse().ok()?;
            match (scheme.as_str(), n) {
                ("http", 80) | ("https", 443) => None,
                _ => Some(n),
            }
        }
    };
    Some(match port {
        Some(n) => format!("{scheme}://{host}:{n}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CorsSettings {
        CorsSettings {
            origins: vec!["https://app.example.com".into()],
            methods: vec![Method::GET, Method::POST],
            headers: vec!["Authorization".into(), "Content-Type".into()],
            credentials: true,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn policy() -> CorsPolicy {
        CorsPolicy::new(settings()).unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get(h: &HeaderMap, name: HeaderName) -> Option<&str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    fn has_any_allow(h: &HeaderMap) -> bool {
        h.keys()
            .any(|k| k.as_str().starts_with("access-control-allow-"))
    }

    const PREFLIGHT_VARY: &str =
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

    #[test]
    fn config_errors() {
        let err = |s: CorsSettings| CorsPolicy::new(s).unwrap_err();
        assert_eq!(
            err(CorsSettings {
                origins: vec![],
                ..settings()
            }),
            "cors: origins must not be empty"
        );
        assert_eq!(
            err(CorsSettings {
                origins: vec!["*".into()],
                ..settings()
            }),
            "cors: origins \"*\" cannot be combined with credentials: true"
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://",
            "https://user@app.example.com",
            "https://app.example.com:",
            "https://app.example.com:99999",
            "https://app.example.com:80a",
            "https://app.example.com?x",
            "1https://app.example.com",
            "https://[zz]",
            " https://app.example.com",
            "*.example.com",
        ] {
            let e = err(CorsSettings {
                origins: vec![bad.into()],
                ..settings()
            });
            assert!(e.contains("is not valid"), "{bad}: {e}");
        }
        assert!(err(CorsSettings {
            origins: vec!["*".into(), "https://a.example".into()],
            credentials: false,
            ..settings()
        })
        .contains("only entry"));
        assert!(err(CorsSettings {
            methods: vec![],
            ..settings()
        })
        .contains("methods"));
        assert!(err(CorsSettings {
            headers: vec!["bad header".into()],
            ..settings()
        })
        .contains("not a valid header name"));

        for good in [
            "http://localhost:3000",
            "https://[::1]:8443",
            "HTTPS://App.Example.COM",
            "null",
        ] {
            assert!(
                CorsPolicy::new(CorsSettings {
                    origins: vec![good.into()],
                    ..settings()
                })
                .is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn detects_preflight() {
        let full = req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(CorsPolicy::is_preflight(&Method::OPTIONS, &full));
        assert!(!CorsPolicy::is_preflight(&Method::POST, &full));
        let no_acrm = req(&[("origin", "https://app.example.com")]);
        assert!(!CorsPolicy::is_preflight(&Method::OPTIONS, &no_acrm));
        let no_origin = req(&[("access-control-request-method", "POST")]);
        assert!(!CorsPolicy::is_preflight(&Method::OPTIONS, &no_origin));
    }

    #[test]
    fn preflight_allowed() {
        let h = policy().preflight(&req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,AUTHORIZATION",
            ),
        ]));
        assert_eq!(
            get(&h, ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(get(&h, ACCESS_CONTROL_ALLOW_METHODS), Some("GET, POST"));
        assert_eq!(
            get(&h, ACCESS_CONTROL_ALLOW_HEADERS),
            Some("Authorization, Content-Type")
        );
        assert_eq!(get(&h, ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(&h, ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(&h, VARY), Some(PREFLIGHT_VARY));

        // No requested headers at all is fine; several ACRH lines are all checked.
        let h = policy().preflight(&req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ]));
        assert!(h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let h = policy().preflight(&req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
            ("access-control-request-headers", " Content-Type , "),
        ]));
        assert!(h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn preflight_matches_configured_origin_normalised() {
        let p = CorsPolicy::new(CorsSettings {
            origins: vec!["HTTPS://App.Example.com:443".into()],
            ..settings()
        })
        .unwrap();
        let h = p.preflight(&req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ]));
        assert_eq!(
            get(&h, ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
    }

    #[test]
    fn preflight_refused() {
        let cases: &[&[(&str, &str)]] = &[
            // origin not listed, look-alikes, null
            &[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "GET"),
            ],
            &[
                ("origin", "https://app.example.com.evil.com"),
                ("access-control-request-method", "GET"),
            ],
            &[
                ("origin", "http://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
            &[("origin", "null"), ("access-control-request-method", "GET")],
            // two Origin headers
            &[
                ("origin", "https://app.example.com"),
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "GET"),
            ],
            // method not listed, or wrong case
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ],
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "post"),
            ],
            // one header not listed
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-secret"),
            ],
        ];
        for (i, case) in cases.iter().enumerate() {
            let h = policy().preflight(&req(case));
            assert!(!has_any_allow(&h), "case {i}: {h:?}");
            assert_eq!(get(&h, VARY), Some(PREFLIGHT_VARY), "case {i}");
        }
    }

    #[test]
    fn wildcard_without_credentials() {
        let p = CorsPolicy::new(CorsSettings {
            origins: vec!["*".into()],
            credentials: false,
            max_age: None,
            headers: vec![],
            ..settings()
        })
        .unwrap();
        let h = p.preflight(&req(&[
            ("origin", "https://anything.example"),
            ("access-control-request-method", "GET"),
        ]));
        assert_eq!(get(&h, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(!h.contains_key(ACCESS_CONTROL_MAX_AGE));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
        // with no headers configured, any requested header is refused
        let h = p.preflight(&req(&[
            ("origin", "https://anything.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-custom"),
        ]));
        assert!(!has_any_allow(&h));

        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "https://anything.example")]), &mut resp);
        assert_eq!(get(&resp, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));

        // "null" is not covered by "*"
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "null")]), &mut resp);
        assert!(!has_any_allow(&resp));
    }

    #[test]
    fn literal_null_origin() {
        let p = CorsPolicy::new(CorsSettings {
            origins: vec!["null".into()],
            ..settings()
        })
        .unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "null")]), &mut resp);
        assert_eq!(get(&resp, ACCESS_CONTROL_ALLOW_ORIGIN), Some("null"));
    }

    #[test]
    fn actual_response_allowed() {
        let mut resp = HeaderMap::new();
        policy().apply(&req(&[("origin", "https://app.example.com")]), &mut resp);
        assert_eq!(
            get(&resp, ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(get(&resp, ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(&resp, VARY), Some("Origin"));
        // preflight-only headers stay off actual responses
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
        assert!(!resp.contains_key(ACCESS_CONTROL_MAX_AGE));
    }

    #[test]
    fn actual_response_disallowed() {
        // An upstream that reflects any origin is overridden.
        let mut resp = req(&[
            ("access-control-allow-origin", "https://evil.example.com"),
            ("access-control-allow-credentials", "true"),
        ]);
        policy().apply(&req(&[("origin", "https://evil.example.com")]), &mut resp);
        assert!(!has_any_allow(&resp));
        assert_eq!(get(&resp, VARY), Some("Origin"));

        let mut resp = HeaderMap::new();
        policy().apply(&HeaderMap::new(), &mut resp);
        assert!(!has_any_allow(&resp));
        assert_eq!(get(&resp, VARY), Some("Origin"));
    }

    #[test]
    fn vary_merging() {
        let origin = req(&[("origin", "https://app.example.com")]);

        let mut resp = req(&[("vary", "Accept-Encoding")]);
        policy().apply(&origin, &mut resp);
        let vary: Vec<_> = resp.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding, Origin"]);

        // applied twice: no duplicate
        policy().apply(&origin, &mut resp);
        let vary: Vec<_> = resp.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding, Origin"]);

        // already present in another case, or `*`: untouched
        for existing in ["accept-encoding, origin", "*"] {
            let mut resp = req(&[("vary", existing)]);
            policy().apply(&origin, &mut resp);
            let vary: Vec<_> = resp.get_all(VARY).iter().collect();
            assert_eq!(vary, [existing]);
        }

        // several Vary lines collapse into one
        let mut resp = req(&[("vary", "Accept-Encoding"), ("vary", "Accept-Language")]);
        policy().apply(&origin, &mut resp);
        let vary: Vec<_> = resp.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding, Accept-Language, Origin"]);
    }
}
