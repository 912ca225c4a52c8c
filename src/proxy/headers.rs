//! Header handling every proxied request and response gets: hop-by-hop removal,
//! `X-Forwarded-*` and `Via`, and security headers. The configured rules themselves live in
//! [`header_rules`](crate::header_rules), below the request path.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

use crate::trusted_proxies::TrustedProxies;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Fields the gateway may add to an answer it makes from stored headers (`Age`, `X-Cache`,
/// `X-Request-Id`, security headers and the route's response rules), room kept for them.
const ADDED_FIELDS: usize = 8;

/// A copy of `stored` with room for the fields the gateway adds to an answer. A clone would
/// have no room left, and its first added field would grow both of the map's tables (measured:
/// ~1.4k instructions per cached answer, more than copying the few fields into a map sized
/// for them).
pub fn answer_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(stored.len() + ADDED_FIELDS);
    for (name, value) in stored {
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Removing a name hashes it whether or not it is there, and most messages carry none of
    // these or only `Connection: keep-alive`: one scan over the names finds the ones to remove.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Tokens naming a header of the fixed list are covered by the scan; parsing them again
        // would only cost.
        let named: Vec<HeaderName> = list_elements(headers, header::CONNECTION)
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|hop| hop.as_str().eq_ignore_ascii_case(token))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The elements of the comma-separated list field `name` (RFC 9110 §5.6.1), in order, without
/// the optional whitespace around them; values that are not text are passed over.
pub fn list_elements(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| element.trim_matches([' ', '\t']))
}

/// Removes every header in `names`, hashing a name only when the message has it: a scan over
/// a message's few names is cheaper than a hash per name, and most requests carry none of them.
pub fn remove_present(headers: &mut HeaderMap, names: &[HeaderName]) {
    if headers.keys().any(|name| names.contains(name)) {
        for name in names {
            headers.remove(name);
        }
    }
}

/// The client address a request is attributed to: the peer, or, when the peer is a trusted
/// proxy, the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let chain: Vec<&str> = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in chain.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(ip) => continue,
            Ok(ip) => return ip.to_canonical(),
            // A garbled entry ends the part of the chain we can believe.
            Err(_) => break,
        }
    }
    peer
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the gateway knows about the hop it received a request on.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The TCP peer's address as header text (made once per connection).
    pub peer: &'a HeaderValue,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// `http` or `https`, as the client reached the gateway.
    pub scheme: &'static str,
    /// The Host the client asked for (Host header or HTTP/2 authority).
    pub host: Option<&'a HeaderValue>,
    /// HTTP version the client used.
    pub version: Version,
}

/// Sets `X-Forwarded-For/-Proto/-Host` and appends to `Via`. From an untrusted peer, whatever
/// the client sent in these headers (and `Forwarded`, `X-Real-IP`) is replaced, so a client
/// cannot make the backend believe another address.
pub fn set_forwarding_headers(headers: &mut HeaderMap, hop: Hop<'_>) {
    let xff = if hop.trusted && headers.contains_key(&X_FORWARDED_FOR) {
        let mut chain = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            chain.extend_from_slice(value.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(hop.peer.as_bytes());
        HeaderValue::from_bytes(&chain).ok()
    } else {
        Some(hop.peer.clone())
    };
    if let Some(value) = xff {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !hop.trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.scheme));
    }
    if !hop.trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match hop.host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    if !hop.trusted {
        remove_present(headers, &[header::FORWARDED, X_REAL_IP]);
    }
    append_via(headers, hop.version);
}

fn append_via(headers: &mut HeaderMap, version: Version) {
    let ours = match version {
        Version::HTTP_2 => "2 gatehouse",
        Version::HTTP_10 => "1.0 gatehouse",
        _ => "1.1 gatehouse",
    };
    let existing: Vec<&str> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if existing.is_empty() {
        headers.insert(header::VIA, HeaderValue::from_static(ours));
        return;
    }
    let joined = format!("{}, {ours}", existing.join(", "));
    if let Ok(value) = HeaderValue::try_from(joined) {
        headers.insert(header::VIA, value);
    }
}

/// `Strict-Transport-Security` as the gateway sends it: one year, the usual value once HTTPS
/// is known to work. Without `includeSubDomains`: the gateway knows the names it serves, not
/// every name below them, and a sibling host still on plain HTTP would become unreachable for
/// a year. Without `preload`, which is a promise only the domain's owner can make. An operator
/// who wants either sets the field with the route's `response_headers`, which comes first.
const HSTS: &str = "max-age=31536000";

/// Adds browser security headers the upstream did not set itself; `tls`: the request came over
/// TLS, so HSTS is added too (RFC 6797 §7.2: never over insecure transport).
pub fn add_security_headers(headers: &mut HeaderMap, tls: bool) {
    const DEFAULTS: [(HeaderName, &str); 3] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    ];
    for (name, value) in DEFAULTS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if tls && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_rules::HeaderRules;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn answer_headers_copy_every_field_in_order_with_room_for_the_gateway_s_own() {
        let stored = map(&[
            ("server", "origin"),
            ("set-cookie", "a=1"),
            ("x-custom", "one"),
            ("set-cookie", "b=2"),
            ("content-type", "text/plain"),
        ]);
        let copy = answer_headers(&stored);
        assert_eq!(copy, stored);
        let order = |h: &HeaderMap| -> Vec<(String, String)> {
            h.iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        };
        assert_eq!(order(&copy), order(&stored));
        assert!(copy.capacity() >= stored.len() + ADDED_FIELDS);
        assert!(answer_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");

        // Tokens in any case, naming listed and unlisted headers, across several Connection lines.
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", " TE ,close"),
            ("close", "reserved name, still named"),
            ("proxy-authorization", "Basic eA=="),
            ("content-length", "3"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["content-length"], "3");

        // The common answer: only Connection itself goes.
        let mut h = map(&[("connection", "keep-alive"), ("server", "origin")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["server"], "origin");
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies(vec![
            TrustedProxies::parse_entry("10.0.0.0/8").unwrap(),
            TrustedProxies::parse_entry("127.0.0.1").unwrap(),
        ])
    }

    #[test]
    fn client_ip_walks_trusted_chain() {
        let h = map(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted()).to_string(), "203.0.113.9");
        let untrusted: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted()), untrusted);
        let garbled = map(&[("x-forwarded-for", "203.0.113.9, junk")]);
        assert_eq!(client_ip(peer, &garbled, &trusted()), peer);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(trusted().contains(mapped));
    }

    #[test]
    fn forwarding_headers_trusted_and_not() {
        let host = HeaderValue::from_static("api.example.com");
        let peers = [
            HeaderValue::from_static("198.51.100.7"),
            HeaderValue::from_static("10.0.0.5"),
        ];
        let hop = |peer: &str, trusted: bool| Hop {
            peer: peers.iter().find(|p| *p == peer).unwrap(),
            trusted,
            scheme: "http",
            host: Some(&host),
            version: Version::HTTP_11,
        };
        let incoming = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ];
        let mut h = map(&incoming);
        set_forwarding_headers(&mut h, hop("198.51.100.7", false));
        assert_eq!(h["x-forwarded-for"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x-real-ip"));
        assert_eq!(h["via"], "1.1 gatehouse");

        let mut h = map(&incoming);
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("via", HeaderValue::from_static("1.1 edge"));
        set_forwarding_headers(&mut h, hop("10.0.0.5", true));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["via"], "1.1 edge, 1.1 gatehouse");
    }

    #[test]
    fn rules_and_security_headers() {
        let rules = HeaderRules {
            remove: vec![HeaderName::from_static("server")],
            set: vec![(
                HeaderName::from_static("x-gateway"),
                HeaderValue::from_static("gatehouse"),
            )],
        };
        let mut h = map(&[
            ("server", "backend"),
            ("x-gateway", "old"),
            ("x-frame-options", "DENY"),
        ]);
        rules.apply(&mut h);
        add_security_headers(&mut h, false);
        assert!(!h.contains_key("server"));
        assert_eq!(h["x-gateway"], "gatehouse");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(!h.contains_key("strict-transport-security"));
        add_security_headers(&mut h, true);
        assert_eq!(h["strict-transport-security"], "max-age=31536000");
        let mut own = map(&[("strict-transport-security", "max-age=60")]);
        add_security_headers(&mut own, true);
        assert_eq!(own["strict-transport-security"], "max-age=60");
    }
}
