//! `Cache-Control` (RFC 9111 5.2) read from every field line of a request or a response.
//!
//! Strict where a wrong reading could serve what must not be served: a field that does not
//! parse marks the whole set `malformed` (callers neither store nor serve from the cache, since
//! the unreadable part may have said `no-store`); a numeric directive that is malformed or given
//! twice with different values becomes [`Seconds::Invalid`], which every reader interprets the
//! conservative way (RFC 9111 4.2.1). Unknown directives are ignored (5.2.3).

use http::header::CACHE_CONTROL;
use http::HeaderMap;

use super::syntax::{delta_seconds, is_token, list_items, quoted_inner, DELTA_SECONDS_CAP};

/// A directive's argument as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument<'a> {
    /// `name=token`.
    Token(&'a [u8]),
    /// `name="..."`: the inside of the quoted string, escapes left in place.
    Quoted(&'a [u8]),
}

/// One directive as written: its name (any case) and its argument, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive<'a> {
    /// The directive name, compared case-insensitively (RFC 9111 5.2).
    pub name: &'a [u8],
    /// The argument after `=`.
    pub argument: Option<Argument<'a>>,
}

/// A `Cache-Control` element that is not `token [ "=" ( token / quoted-string ) ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Cache-Control directive")]
pub struct Malformed;

/// The directives of one field line, in order; empty list elements are skipped (RFC 9110
/// 5.6.1), anything else that does not parse is an error item.
pub fn directives(value: &[u8]) -> impl Iterator<Item = Result<Directive<'_>, Malformed>> {
    list_items(value).filter_map(|item| match item {
        Ok([]) => None,
        Ok(element) => Some(directive(element)),
        Err(_) => Some(Err(Malformed)),
    })
}

fn directive(element: &[u8]) -> Result<Directive<'_>, Malformed> {
    // No whitespace is allowed around "=" (RFC 9111 5.2 grammar), so a split at the first "="
    // leaves the name and argument as they must be.
    let (name, argument) = match element.iter().position(|&b| b == b'=') {
        None => (element, None),
        Some(eq) => (&element[..eq], Some(&element[eq + 1..])),
    };
    if !is_token(name) {
        return Err(Malformed);
    }
    let argument = match argument {
        None => None,
        Some(arg) if is_token(arg) => Some(Argument::Token(arg)),
        Some(arg) => Some(Argument::Quoted(quoted_inner(arg).ok_or(Malformed)?)),
    };
    Ok(Directive { name, argument })
}

/// A delta-seconds directive as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seconds {
    /// Not given.
    #[default]
    Absent,
    /// Given once (or repeated with the same value); capped at 2^31 (RFC 9111 1.2.2).
    Valid(u32),
    /// Given without a number, with something else than digits, or twice with different values.
    Invalid,
}

impl Seconds {
    /// Whether the directive was there at all, valid or not.
    pub fn is_present(self) -> bool {
        self != Seconds::Absent
    }

    fn read(argument: Option<Argument<'_>>) -> Seconds {
        // Senders must use the token form, but RFC 9111 5.2 asks recipients to accept both.
        let digits = match argument {
            Some(Argument::Token(t)) | Some(Argument::Quoted(t)) => t,
            None => return Seconds::Invalid,
        };
        delta_seconds(digits).map_or(Seconds::Invalid, Seconds::Valid)
    }

    fn merge(self, next: Seconds) -> Seconds {
        match (self, next) {
            (Seconds::Absent, n) => n,
            (Seconds::Valid(a), Seconds::Valid(b)) if a == b => self,
            _ => Seconds::Invalid,
        }
    }
}

/// Feeds every directive of every `Cache-Control` line to `each`; true when one was malformed.
fn each_directive(headers: &HeaderMap, mut each: impl FnMut(&[u8], Option<Argument<'_>>)) -> bool {
    let mut malformed = false;
    for line in headers.get_all(CACHE_CONTROL) {
        for d in directives(line.as_bytes()) {
            match d {
                Ok(d) => each(d.name, d.argument),
                Err(Malformed) => malformed = true,
            }
        }
    }
    malformed
}

/// The response directives a shared cache acts on (RFC 9111 5.2.2, RFC 5861, RFC 8246).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseCacheControl {
    /// `max-age=N`.
    pub max_age: Seconds,
    /// `s-maxage=N`: overrides `max-age` for shared caches and implies `proxy-revalidate`.
    pub s_maxage: Seconds,
    /// `no-store` (an argument, which the RFC does not define, is ignored).
    pub no_store: bool,
    /// `no-cache`, with or without a field list: the qualified form is treated as unqualified.
    pub no_cache: bool,
    /// `private`, with or without a field list: the qualified form is treated as unqualified.
    pub private: bool,
    /// `public` (ignored when written with an argument: it only ever widens what is stored).
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `immutable` (ignored when written with an argument).
    pub immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861 3).
    pub stale_while_revalidate: Seconds,
    /// `stale-if-error=N` (RFC 5861 4).
    pub stale_if_error: Seconds,
    /// Some `Cache-Control` element did not parse.
    pub malformed: bool,
}

impl ResponseCacheControl {
    /// Reads every `Cache-Control` line of a response.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = ResponseCacheControl::default();
        cc.malformed = each_directive(headers, |name, argument| {
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("max-age") {
                cc.max_age = cc.max_age.merge(Seconds::read(argument));
            } else if is("s-maxage") {
                cc.s_maxage = cc.s_maxage.merge(Seconds::read(argument));
            } else if is("no-store") {
                cc.no_store = true;
            } else if is("no-cache") {
                cc.no_cache = true;
            } else if is("private") {
                cc.private = true;
            } else if is("public") {
                cc.public |= argument.is_none();
            } else if is("must-revalidate") {
                cc.must_revalidate = true;
            } else if is("proxy-revalidate") {
                cc.proxy_revalidate = true;
            } else if is("immutable") {
                cc.immutable |= argument.is_none();
            } else if is("stale-while-revalidate") {
                cc.stale_while_revalidate =
                    cc.stale_while_revalidate.merge(Seconds::read(argument));
            } else if is("stale-if-error") {
                cc.stale_if_error = cc.stale_if_error.merge(Seconds::read(argument));
            }
        });
        cc
    }

    /// Whether a stale copy may never be served, not even when the origin fails (RFC 9111
    /// 4.2.4): `must-revalidate`, `proxy-revalidate`, `no-cache`, or `s-maxage` (5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache || self.s_maxage.is_present()
    }
}

/// The request directives a shared cache acts on (RFC 9111 5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestCacheControl {
    /// `no-cache`: the stored response must be revalidated before use.
    pub no_cache: bool,
    /// `no-store`: neither stored nor answered from the cache.
    pub no_store: bool,
    /// `max-age=N`: the client accepts no response older than N seconds.
    pub max_age: Seconds,
    /// `max-stale[=N]`: the client accepts a response stale by up to N seconds; without a value
    /// by any amount, kept as 2^31.
    pub max_stale: Seconds,
    /// `min-fresh=N`: the client wants a response fresh for at least N more seconds.
    pub min_fresh: Seconds,
    /// `only-if-cached`: answer from the cache or with 504, never go upstream.
    pub only_if_cached: bool,
    /// Some `Cache-Control` element did not parse.
    pub malformed: bool,
}

impl RequestCacheControl {
    /// Reads every `Cache-Control` line of a request.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = RequestCacheControl::default();
        cc.malformed = each_directive(headers, |name, argument| {
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("no-cache") {
                cc.no_cache = true;
            } else if is("no-store") {
                cc.no_store = true;
            } else if is("max-age") {
                cc.max_age = cc.max_age.merge(Seconds::read(argument));
            } else if is("max-stale") {
                let value = match argument {
                    None => Seconds::Valid(DELTA_SECONDS_CAP),
                    some => Seconds::read(some),
                };
                cc.max_stale = cc.max_stale.merge(value);
            } else if is("min-fresh") {
                cc.min_fresh = cc.min_fresh.merge(Seconds::read(argument));
            } else if is("only-if-cached") {
                cc.only_if_cached = true;
            }
        });
        cc
    }

    /// Whether the client asked for revalidation: `no-cache`, `max-age=0`, or a `max-age` that
    /// cannot be read (revalidating is the safe reading).
    pub fn wants_revalidation(&self) -> bool {
        self.no_cache || matches!(self.max_age, Seconds::Valid(0) | Seconds::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, l.parse().unwrap());
        }
        h
    }

    fn resp(lines: &[&str]) -> ResponseCacheControl {
        ResponseCacheControl::parse(&headers(lines))
    }

    fn req(lines: &[&str]) -> RequestCacheControl {
        RequestCacheControl::parse(&headers(lines))
    }

    #[test]
    fn rfc9111_5_2_directives_from_all_lines_any_case() {
        let cc = resp(&[
            "Max-Age=60, PUBLIC",
            "s-maxage=30",
            "Must-Revalidate,immutable",
        ]);
        assert_eq!(cc.max_age, Seconds::Valid(60));
        assert_eq!(cc.s_maxage, Seconds::Valid(30));
        assert!(cc.public && cc.must_revalidate && cc.immutable);
        assert!(!cc.no_store && !cc.private && !cc.malformed);
    }

    #[test]
    fn rfc9111_5_2_quoted_arguments_are_accepted_for_numbers() {
        assert_eq!(resp(&[r#"max-age="60""#]).max_age, Seconds::Valid(60));
        assert_eq!(resp(&[r#"max-age="6\0""#]).max_age, Seconds::Invalid);
    }

    #[test]
    fn rfc9111_5_2_2_4_and_5_2_2_7_qualified_no_cache_and_private_count_as_unqualified() {
        let cc = resp(&[r#"no-cache="Set-Cookie, X-Foo", private="Authorization""#]);
        assert!(cc.no_cache && cc.private && !cc.malformed);
        assert!(resp(&["no-cache=set-cookie"]).no_cache);
    }

    #[test]
    fn rfc9111_5_2_2_stale_extensions_rfc5861() {
        let cc = resp(&["stale-while-revalidate=30, stale-if-error=600"]);
        assert_eq!(cc.stale_while_revalidate, Seconds::Valid(30));
        assert_eq!(cc.stale_if_error, Seconds::Valid(600));
    }

    #[test]
    fn rfc9111_5_2_3_unknown_directives_are_ignored() {
        let cc = resp(&[r#"community="UCI", foo, max-age=5, bar=baz"#]);
        assert_eq!(cc.max_age, Seconds::Valid(5));
        assert!(!cc.malformed);
    }

    #[test]
    fn rfc9111_4_2_1_invalid_or_conflicting_freshness_is_invalid() {
        assert_eq!(resp(&["max-age=abc"]).max_age, Seconds::Invalid);
        assert_eq!(resp(&["max-age"]).max_age, Seconds::Invalid);
        assert_eq!(resp(&["max-age=-1"]).max_age, Seconds::Invalid);
        assert_eq!(resp(&["max-age=5", "max-age=6"]).max_age, Seconds::Invalid);
        assert_eq!(resp(&["max-age=5, max-age=5"]).max_age, Seconds::Valid(5));
        assert_eq!(resp(&["s-maxage=1, s-maxage=2"]).s_maxage, Seconds::Invalid);
    }

    #[test]
    fn rfc9111_1_2_2_large_values_cap_at_2_pow_31() {
        assert_eq!(
            resp(&["max-age=99999999999999"]).max_age,
            Seconds::Valid(DELTA_SECONDS_CAP)
        );
        assert_eq!(
            resp(&["max-age=2147483647"]).max_age,
            Seconds::Valid(DELTA_SECONDS_CAP - 1)
        );
        assert_eq!(
            resp(&["max-age=2147483648"]).max_age,
            Seconds::Valid(DELTA_SECONDS_CAP)
        );
    }

    #[test]
    fn malformed_elements_mark_the_set_malformed() {
        for bad in [
            "max-age = 5",
            "no store",
            r#"private="a"b"#,
            r#"no-cache="unterminated"#,
            "max-age=",
            "=5",
        ] {
            assert!(resp(&[bad]).malformed, "{bad}");
            assert!(req(&[bad]).malformed, "{bad}");
        }
        // RFC 9110 5.6.1: empty elements are fine.
        assert!(!resp(&[", ,max-age=5,"]).malformed);
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let cc = req(&[
            "no-cache, no-store",
            "max-age=10, min-fresh=5, only-if-cached",
        ]);
        assert!(cc.no_cache && cc.no_store && cc.only_if_cached);
        assert_eq!(cc.max_age, Seconds::Valid(10));
        assert_eq!(cc.min_fresh, Seconds::Valid(5));
        assert_eq!(
            req(&["max-stale"]).max_stale,
            Seconds::Valid(DELTA_SECONDS_CAP)
        );
        assert_eq!(req(&["max-stale=7"]).max_stale, Seconds::Valid(7));
        assert_eq!(req(&["max-stale, max-stale=7"]).max_stale, Seconds::Invalid);
    }

    #[test]
    fn rfc9111_5_2_1_1_and_5_2_1_4_revalidation_requests() {
        assert!(req(&["max-age=0"]).wants_revalidation());
        assert!(req(&["no-cache"]).wants_revalidation());
        assert!(req(&["max-age=x"]).wants_revalidation());
        assert!(!req(&["max-age=1"]).wants_revalidation());
        assert!(!req(&[]).wants_revalidation());
    }

    #[test]
    fn rfc9111_4_2_4_directives_that_forbid_stale() {
        assert!(resp(&["must-revalidate"]).forbids_stale());
        assert!(resp(&["proxy-revalidate"]).forbids_stale());
        assert!(resp(&["no-cache"]).forbids_stale());
        assert!(resp(&["s-maxage=10"]).forbids_stale());
        assert!(!resp(&["max-age=10, stale-if-error=60"]).forbids_stale());
    }

    #[test]
    fn random_bytes_never_panic_and_directives_round_trip() {
        let mut rng = fastrand::Rng::with_seed(0xcc_0001);
        let alphabet = b"\"\\,= \tmax-age0159sprivate\x80";
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rng.usize(..48))
                .map(|_| {
                    if rng.u8(..4) == 0 {
                        rng.u8(..)
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            let _ = directives(&bytes).count();
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(CACHE_CONTROL, v);
                let _ = ResponseCacheControl::parse(&h);
                let _ = RequestCacheControl::parse(&h);
            }
        }
        // Writing directives and reading them back gives the same directives.
        for _ in 0..5_000 {
            let mut written = Vec::new();
            let mut wire = String::new();
            for i in 0..rng.usize(1..6) {
                let name: String = (0..rng.usize(1..8))
                    .map(|_| char::from(b"abz-09!~"[rng.usize(..8)]))
                    .collect();
                let arg = match rng.u8(..3) {
                    0 => None,
                    1 => Some(Argument::Token(b"tok9")),
                    _ => Some(Argument::Quoted(&br#"a, \"b\" c"#[..])),
                };
                if i > 0 {
                    wire.push_str(if rng.bool() { "," } else { " , " });
                }
                wire.push_str(&name);
                match arg {
                    None => {}
                    Some(Argument::Token(t)) => {
                        wire.push('=');
                        wire.push_str(std::str::from_utf8(t).unwrap());
                    }
                    Some(Argument::Quoted(q)) => {
                        wire.push_str("=\"");
                        wire.push_str(std::str::from_utf8(q).unwrap());
                        wire.push('"');
                    }
                }
                written.push((name, arg));
            }
            let read: Vec<Directive<'_>> = directives(wire.as_bytes())
                .map(|d| d.expect("well-formed"))
                .collect();
            assert_eq!(read.len(), written.len(), "{wire}");
            for (d, (name, arg)) in read.iter().zip(&written) {
                assert_eq!(d.name, name.as_bytes());
                assert_eq!(&d.argument, arg);
            }
        }
    }
}
