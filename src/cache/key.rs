//! Cache keys: which stored response a request may be answered with.
//!
//! Two levels. The **URL key** is `PREFIX` + host + normalised path + `?query` as received:
//! it is what an unsafe method invalidates, and it holds either the response itself (when
//! nothing varies) or a directory ([`super::directory::Directory`]) naming a generation and
//! the request headers the stored responses vary on. A **variant key** adds the generation and
//! a digest of what tells variants apart: the route's `vary` headers, the caller's `sub` on
//! `per_user` routes, and the headers the response's own `Vary` names. Invalidation removes
//! the URL key; a new directory gets a new generation, so the old variants can never be
//! reached again and expire on their own.
//!
//! Digests keep keys short and keep header values and user ids out of Redis key names; they
//! are SHA-256 over length-prefixed fields, so two different inputs never share a key in
//! practice. URL keys are readable, so tooling that scans the prefix (`gwcache:` by default)
//! sees which URLs are cached.

use http::{HeaderMap, HeaderName};

/// Bytes of SHA-256 kept in a key's digests (128 bits).
const DIGEST_BYTES: usize = 16;

/// The longest host + path + query kept as written; longer ones are digested, so a client
/// cannot make keys of any size.
pub const MAX_READABLE: usize = 512;

/// The key of a URL: prefix, host (lower-cased, no port; empty when none), normalised path
/// and the query as received.
pub fn url_key(prefix: &str, host: &str, path: &str, query: Option<&str>) -> String {
    let readable = host.len() + path.len() + query.map_or(0, |q| q.len() + 1);
    let mut key = String::with_capacity(prefix.len() + readable.min(MAX_READABLE + 5) + 1);
    key.push_str(prefix);
    if readable <= MAX_READABLE {
        key.push_str(host);
        key.push_str(path);
        if let Some(query) = query {
            key.push('?');
            key.push_str(query);
        }
    } else {
        let mut digest = Digest::new();
        digest.field(host.as_bytes());
        digest.field(path.as_bytes());
        match query {
            Some(query) => digest.field(query.as_bytes()),
            None => digest.absent(),
        }
        key.push_str("#url=");
        digest.push_hex(&mut key);
    }
    key
}

/// What tells one request's variant apart, besides the URL and the response's `Vary`.
#[derive(Debug, Clone, Copy)]
pub struct Variant<'a> {
    /// The route's `vary` headers.
    pub route_vary: &'a [HeaderName],
    /// The caller's `sub`, on `per_user` routes.
    pub user: Option<&'a str>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

impl Variant<'_> {
    /// Whether requests to one URL can differ in anything but the response's `Vary`.
    pub fn varies(&self) -> bool {
        !self.route_vary.is_empty() || self.user.is_some()
    }

    /// The key of this request's variant of `url_key`, in directory `generation`, with the
    /// response's `Vary` names `response_vary`.
    pub fn key(&self, url_key: &str, generation: u64, response_vary: &[HeaderName]) -> String {
        let mut key = String::with_capacity(url_key.len() + 20 + 3 + 2 * DIGEST_BYTES);
        key.push_str(url_key);
        key.push_str("|g=");
        key.push_str(&format!("{generation:016x}"));
        key.push_str("|v=");
        let mut digest = Digest::new();
        headers_into(&mut digest, self.route_vary, self.headers);
        match self.user {
            Some(user) => digest.field(user.as_bytes()),
            None => digest.absent(),
        }
        headers_into(&mut digest, response_vary, self.headers);
        digest.push_hex(&mut key);
        key
    }

    /// The key concurrent misses coalesce on: the URL and everything known before the
    /// response (its `Vary` is not).
    pub fn flight_key(&self, url_key: &str) -> String {
        if !self.varies() {
            return url_key.to_string();
        }
        self.key(url_key, 0, &[])
    }
}

/// Adds the values of `names` in `headers` to `digest`, each name's lines joined as one field
/// list would be: absent, present-but-empty and present are all told apart.
fn headers_into(digest: &mut Digest, names: &[HeaderName], headers: &HeaderMap) {
    digest.field(&(names.len() as u64).to_be_bytes());
    for name in names {
        digest.field(name.as_str().as_bytes());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            digest.absent();
            continue;
        }
        let mut joined = Vec::new();
        for (i, value) in values.enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes().trim_ascii());
        }
        digest.field(&joined);
    }
}

/// SHA-256 over length-prefixed fields, so no two lists of fields hash alike by moving bytes
/// from one field to the next.
struct Digest(ring::digest::Context);

impl Digest {
    fn new() -> Self {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn absent(&mut self) {
        self.0.update(&u64::MAX.to_be_bytes());
    }

    fn push_hex(self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = self.0.finish();
        for &b in &digest.as_ref()[..DIGEST_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn url_keys_are_readable_and_tell_an_empty_query_from_none() {
        assert_eq!(
            url_key("gwcache:", "api.example.com", "/items", Some("page=2")),
            "gwcache:api.example.com/items?page=2"
        );
        assert_eq!(url_key("gwcache:", "", "/", None), "gwcache:/");
        assert_ne!(
            url_key("p:", "h", "/a", None),
            url_key("p:", "h", "/a", Some(""))
        );
    }

    #[test]
    fn long_urls_are_digested_at_the_bound() {
        for (len, readable) in [
            (MAX_READABLE - 1, true),
            (MAX_READABLE, true),
            (MAX_READABLE + 1, false),
        ] {
            // Host "h" (1 byte) + path.
            let path = format!("/{}", "a".repeat(len - 2));
            let key = url_key("gwcache:", "h", &path, None);
            assert_eq!(key.contains(&path), readable, "{len}");
            if !readable {
                assert!(key.starts_with("gwcache:#url="), "{key}");
                assert_eq!(key.len(), "gwcache:#url=".len() + 2 * DIGEST_BYTES);
            }
        }
        let long = "a".repeat(MAX_READABLE);
        assert_ne!(
            url_key("p:", "h", &format!("/{long}"), None),
            url_key("p:", "h", &format!("/{long}"), Some(""))
        );
    }

    #[test]
    fn route_vary_users_and_response_vary_make_their_own_variants() {
        let lang = [HeaderName::from_static("accept-language")];
        let en = headers(&[("accept-language", "en"), ("x-other", "1")]);
        let en_other = headers(&[("accept-language", "en"), ("x-other", "2")]);
        let fr = headers(&[("accept-language", "fr")]);
        let empty = headers(&[("accept-language", "")]);
        let none = HeaderMap::new();
        let key = |h: &HeaderMap, user: Option<&str>, rv: &[HeaderName]| {
            Variant {
                route_vary: &lang,
                user,
                headers: h,
            }
            .key("gwcache:h/x", 7, rv)
        };
        let keys = [
            key(&en, None, &[]),
            key(&fr, None, &[]),
            key(&empty, None, &[]),
            key(&none, None, &[]),
            key(&en, Some("alice"), &[]),
            key(&en, Some("bob"), &[]),
            key(&en, None, &[HeaderName::from_static("x-other")]),
            key(&en_other, None, &[HeaderName::from_static("x-other")]),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(a.starts_with("gwcache:h/x|g=0000000000000007|v="), "{a}");
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(key(&en, None, &[]), key(&en_other, None, &[]));
        assert!(!keys[4].contains("alice"), "user ids stay out of key names");
        // Another generation is another key.
        let v = Variant {
            route_vary: &lang,
            user: None,
            headers: &en,
        };
        assert_ne!(v.key("k", 1, &[]), v.key("k", 2, &[]));
    }

    #[test]
    fn lines_of_one_field_are_one_list() {
        let names = [HeaderName::from_static("accept-language")];
        let split = headers(&[("accept-language", "en"), ("accept-language", " fr ")]);
        let joined = headers(&[("accept-language", "en, fr")]);
        let v = |h| Variant {
            route_vary: &names,
            user: None,
            headers: h,
        };
        assert_eq!(v(&split).key("k", 0, &[]), v(&joined).key("k", 0, &[]));
    }

    #[test]
    fn fields_cannot_trade_bytes() {
        let ab = [HeaderName::from_static("a"), HeaderName::from_static("b")];
        let one = headers(&[("a", "x,y"), ("b", "z")]);
        let two = headers(&[("a", "x"), ("b", "y,z")]);
        let v = |h| Variant {
            route_vary: &ab,
            user: None,
            headers: h,
        };
        assert_ne!(v(&one).key("k", 0, &[]), v(&two).key("k", 0, &[]));
        // A route header and a response header of the same value are different places.
        let a = [HeaderName::from_static("a")];
        let h = headers(&[("a", "1")]);
        let route_side = Variant {
            route_vary: &a,
            user: None,
            headers: &h,
        };
        let response_side = Variant {
            route_vary: &[],
            user: None,
            headers: &h,
        };
        assert_ne!(route_side.key("k", 0, &[]), response_side.key("k", 0, &a));
    }

    #[test]
    fn flights_are_the_url_unless_something_varies() {
        let none = HeaderMap::new();
        let plain = Variant {
            route_vary: &[],
            user: None,
            headers: &none,
        };
        assert!(!plain.varies());
        assert_eq!(plain.flight_key("gwcache:h/x"), "gwcache:h/x");
        let alice = Variant {
            user: Some("alice"),
            ..plain
        };
        let bob = Variant {
            user: Some("bob"),
            ..plain
        };
        assert_ne!(alice.flight_key("k"), bob.flight_key("k"));
    }
}
