//! Invalidation after an unsafe request succeeds (RFC 9111 4.4): the target URI, plus the
//! `Location` and `Content-Location` targets when they share its origin.

use std::borrow::Cow;

use http::header::{HeaderName, CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode};

/// The request whose success invalidates entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// `http` or `https`, as the client reached the gateway.
    pub scheme: &'a str,
    /// The authority as received (`Host`): `host[:port]`.
    pub authority: &'a str,
    /// The path and query the cache keys by (already normalised by the caller).
    pub path_and_query: &'a str,
}

/// The path-and-query strings whose entries `response` invalidates, the target first, without
/// duplicates; empty for safe methods and error statuses. References in `Location` and
/// `Content-Location` are resolved against the target (RFC 3986 5.2) and dropped when they do
/// not parse or name another origin (RFC 9111 4.4: that would let one origin purge another's
/// entries). Callers normalise the results as they normalise request paths.
pub fn invalidation_targets<'a>(
    method: &Method,
    status: StatusCode,
    target: &RequestTarget<'a>,
    response: &'a HeaderMap,
) -> Vec<Cow<'a, str>> {
    // RFC 9110 9.2.1 safe methods; anything else, unknown methods included, invalidates.
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if safe.contains(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out: Vec<Cow<'a, str>> = vec![Cow::Borrowed(target.path_and_query)];
    for name in [LOCATION, CONTENT_LOCATION] {
        if let Some(resolved) = single_line(response, &name).and_then(|r| resolve(target, r)) {
            if !out.contains(&resolved) {
                out.push(resolved);
            }
        }
    }
    out
}

fn single_line<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Characters allowed in a URI reference (RFC 3986 2), `%` checked separately.
fn uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?#[]%".contains(&b)
}

fn valid_percents(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            match s.get(i + 1..i + 3) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// Splits `host[:port]` into a lower-cased comparable host and the port (the scheme's default
/// when absent or empty); `None` for userinfo or a malformed authority.
fn origin_parts(scheme: &str, authority: &str) -> Option<(String, u16)> {
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        return None;
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        (host, &rest[end + 1..])
    } else {
        match authority.rfind(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    if host.is_empty() || host.bytes().any(|b| !uri_char(b) || b"/?#@".contains(&b)) {
        return None;
    }
    let port = match port {
        "" | ":" => default,
        p => {
            let digits = p.strip_prefix(':')?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()?
        }
    };
    Some((host.to_ascii_lowercase(), port))
}

fn resolve<'a>(target: &RequestTarget<'_>, reference: &'a str) -> Option<Cow<'a, str>> {
    let bytes = reference.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(|&b| uri_char(b)) || !valid_percents(bytes) {
        return None;
    }
    let reference = match reference.find('#') {
        Some(i) => &reference[..i],
        None => reference,
    };
    if reference.is_empty() {
        return None;
    }
    let (path, query) = match reference.find('?') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    // A scheme is a letter then letters, digits, "+", "-" or "." up to ":" (RFC 3986 3.1).
    let scheme_end = path.find(':').filter(|&i| {
        let s = &path[..i];
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let (scheme, rest) = match scheme_end {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (target.scheme, path),
    };
    if scheme_end.is_some() && !scheme.eq_ignore_ascii_case(target.scheme) {
        return None;
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        let (authority, abs_path) = after.split_at(end);
        if origin_parts(scheme, authority)? != origin_parts(target.scheme, target.authority)? {
            return None;
        }
        let abs_path = if abs_path.is_empty() { "/" } else { abs_path };
        return Some(join(remove_dot_segments(abs_path), query));
    }
    if scheme_end.is_some() {
        // "http:foo" (no authority) is not a URL we could key.
        return None;
    }
    if rest.starts_with('/') {
        return Some(join(remove_dot_segments(rest), query));
    }
    let base = target
        .path_and_query
        .split_once('?')
        .map_or(target.path_and_query, |(p, _)| p);
    if rest.is_empty() {
        // "?q": the target's path with another query (RFC 3986 5.2.2).
        return Some(Cow::Owned(format!("{base}{query}")));
    }
    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
    let merged = format!("{}{rest}", if dir.is_empty() { "/" } else { dir });
    Some(Cow::Owned(
        join(remove_dot_segments(&merged), query).into_owned(),
    ))
}

fn join<'a>(path: Cow<'a, str>, query: &'a str) -> Cow<'a, str> {
    if query.is_empty() {
        return path;
    }
    match path {
        // The path and query are adjacent in the reference: borrow them together.
        Cow::Borrowed(p) => Cow::Owned(format!("{p}{query}")),
        Cow::Owned(mut p) => {
            p.push_str(query);
            Cow::Owned(p)
        }
    }
}

/// RFC 3986 5.2.4 on an absolute path; borrows when there is no dot segment.
fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(|s| s == "." || s == "..") {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves the path ending in "/".
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: RequestTarget<'static> = RequestTarget {
        scheme: "https",
        authority: "api.example.com",
        path_and_query: "/v1/items/7?x=1",
    };

    fn targets(method: Method, status: u16, fields: &[(&HeaderName, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append((*n).clone(), v.parse().unwrap());
        }
        invalidation_targets(&method, StatusCode::from_u16(status).unwrap(), &TARGET, &h)
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn rfc9111_4_4_unsafe_success_invalidates_the_target() {
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for status in [200, 201, 204, 301, 303] {
                assert_eq!(targets(m.clone(), status, &[]), vec!["/v1/items/7?x=1"]);
            }
        }
        let unknown = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(targets(unknown, 200, &[]).len(), 1);
    }

    #[test]
    fn rfc9111_4_4_safe_methods_and_errors_invalidate_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(targets(m, 200, &[(&LOCATION, "/a")]).is_empty());
        }
        for status in [400, 404, 409, 500, 503] {
            assert!(targets(Method::POST, status, &[(&LOCATION, "/a")]).is_empty());
        }
    }

    #[test]
    fn rfc9111_4_4_same_origin_location_and_content_location() {
        assert_eq!(
            targets(
                Method::POST,
                201,
                &[
                    (&LOCATION, "https://API.example.com:443/v1/items/8"),
                    (&CONTENT_LOCATION, "/v1/items/8?view=full#frag")
                ]
            ),
            vec!["/v1/items/7?x=1", "/v1/items/8", "/v1/items/8?view=full"]
        );
        assert_eq!(
            targets(Method::POST, 201, &[(&LOCATION, "//api.example.com")]),
            vec!["/v1/items/7?x=1", "/"]
        );
    }

    #[test]
    fn rfc9111_4_4_other_origins_are_refused() {
        for other in [
            "https://evil.example.com/v1/items/8",
            "http://api.example.com/v1/items/8",
            "https://api.example.com:8443/v1/items/8",
            "//evil.example.com/x",
            "https://user@api.example.com/x",
            "ftp://api.example.com/x",
            "https:relative",
        ] {
            assert_eq!(
                targets(Method::PUT, 200, &[(&LOCATION, other)]),
                vec!["/v1/items/7?x=1"],
                "{other}"
            );
        }
    }

    #[test]
    fn rfc3986_5_2_relative_references_resolve_against_the_target() {
        let one = |r: &str| targets(Method::POST, 201, &[(&LOCATION, r)]).pop().unwrap();
        assert_eq!(one("8"), "/v1/items/8");
        assert_eq!(one("../users/1?a=b"), "/v1/users/1?a=b");
        assert_eq!(one("./"), "/v1/items/");
        assert_eq!(one("?y=2"), "/v1/items/7?y=2");
        assert_eq!(one("/a/./b/../c"), "/a/c");
        assert_eq!(one("../../../../x"), "/x");
        assert_eq!(one("/a/.."), "/");
    }

    #[test]
    fn malformed_references_are_dropped() {
        for bad in [
            "/a b",
            "/a%zz",
            "/a\\b",
            "https://[::1/x",
            "https://api.example.com:x/",
        ] {
            let mut h = HeaderMap::new();
            h.insert(LOCATION, http::HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                invalidation_targets(&Method::POST, StatusCode::OK, &TARGET, &h).len(),
                1,
                "{bad}"
            );
        }
        // Two Location lines: which one is meant is unknown.
        assert_eq!(
            targets(Method::POST, 201, &[(&LOCATION, "/a"), (&LOCATION, "/b")]).len(),
            1
        );
    }

    #[test]
    fn ipv6_and_default_ports_compare_as_origins() {
        let target = RequestTarget {
            scheme: "http",
            authority: "[::1]:80",
            path_and_query: "/",
        };
        let mut h = HeaderMap::new();
        h.insert(LOCATION, "http://[::1]/x".parse().unwrap());
        assert_eq!(
            invalidation_targets(&Method::POST, StatusCode::OK, &target, &h),
            vec![Cow::Borrowed("/"), Cow::Borrowed("/x")]
        );
    }

    #[test]
    fn random_references_never_panic_and_stay_absolute_paths() {
        let mut rng = fastrand::Rng::with_seed(0x1a7a);
        let alphabet = b"/.?#:@[]%2fhttps:/api.example.com";
        for _ in 0..30_000 {
            let r: Vec<u8> = (0..rng.usize(..30))
                .map(|_| {
                    if rng.u8(..8) == 0 {
                        rng.u8(..)
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            let Ok(v) = http::HeaderValue::from_bytes(&r) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LOCATION, v);
            for t in invalidation_targets(&Method::DELETE, StatusCode::OK, &TARGET, &h) {
                assert!(t.starts_with('/'), "{t:?} from {r:?}");
                let path = t.split('?').next().unwrap();
                assert!(!path.split('/').any(|s| s == ".." || s == "."), "{t:?}");
                assert!(!t.contains('#'));
            }
        }
    }
}
