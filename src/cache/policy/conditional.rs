//! A client's conditional request against a stored response (RFC 9110 13, RFC 9111 4.3.2):
//! entity tags, `If-None-Match`, `If-Modified-Since`, and what a 304 carries.

use std::time::SystemTime;

use http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, Method, StatusCode};

use super::syntax::{date_field, list_items};

/// An entity tag (RFC 9110 8.8.3): `[W/] "opaque"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// Written with the `W/` prefix.
    pub weak: bool,
    /// The characters between the quotes.
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses exactly one entity tag spanning all of `s`.
    pub fn parse(s: &'a [u8]) -> Option<Self> {
        let (weak, rest) = match s.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let opaque = rest.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        // etagc = %x21 / %x23-7E / obs-text
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        Some(EntityTag { weak, opaque })
    }

    /// Weak comparison (RFC 9110 8.8.3.2): the opaque parts match, either may be weak.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison (RFC 9110 8.8.3.2): both strong and the opaque parts match.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// The one entity tag of a response's `ETag` (one line, one well-formed tag), if any.
pub fn stored_etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    let mut lines = headers.get_all(ETAG).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    EntityTag::parse(super::syntax::trim_ows(first.as_bytes()))
}

/// What an `If-None-Match` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoneMatch {
    Absent,
    /// It matches the stored response: the condition is false.
    Matches,
    /// It does not match, or cannot be read (a wrong 304 would leave the client with a
    /// representation it should not keep, a needless 200 costs only bytes).
    DoesNotMatch,
}

fn if_none_match(request: &HeaderMap, etag: Option<EntityTag<'_>>) -> NoneMatch {
    let mut any_line = false;
    let mut matched = false;
    for line in request.get_all(IF_NONE_MATCH) {
        any_line = true;
        for item in list_items(line.as_bytes()) {
            match item {
                Ok([]) => {}
                // A stored response is a current representation (RFC 9110 13.1.2).
                Ok(b"*") => matched = true,
                Ok(tag) => match EntityTag::parse(tag) {
                    Some(tag) => matched |= etag.is_some_and(|e| e.weak_eq(&tag)),
                    None => return NoneMatch::DoesNotMatch,
                },
                Err(_) => return NoneMatch::DoesNotMatch,
            }
        }
    }
    match (any_line, matched) {
        (false, _) => NoneMatch::Absent,
        (true, true) => NoneMatch::Matches,
        (true, false) => NoneMatch::DoesNotMatch,
    }
}

/// How the cache answers a client's conditional request from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConditional {
    /// Answer 304 with [`not_modified_headers`].
    NotModified,
    /// Answer with the stored response in full.
    Full,
    /// The request has preconditions the cache does not evaluate (`If-Match`,
    /// `If-Unmodified-Since`, `If-Range`): send it upstream, which may answer 412 or 206.
    Forward,
}

/// Evaluates `request`'s `If-None-Match` / `If-Modified-Since` against a stored response
/// (`stored_status`, `stored`, received at `received`) in RFC 9110 13.2.2 order.
pub fn evaluate_conditional(
    method: &Method,
    request: &HeaderMap,
    stored_status: StatusCode,
    stored: &HeaderMap,
    received: SystemTime,
) -> ClientConditional {
    if [IF_MATCH, IF_UNMODIFIED_SINCE, IF_RANGE]
        .iter()
        .any(|h| request.contains_key(h))
    {
        return ClientConditional::Forward;
    }
    // RFC 9110 13.2.1: preconditions apply only where the unconditional answer would be 2xx;
    // 13.1.2 / 13.1.3: a 304 answers only GET and HEAD.
    if !stored_status.is_success() || (method != Method::GET && method != Method::HEAD) {
        return ClientConditional::Full;
    }
    match if_none_match(request, stored_etag(stored)) {
        NoneMatch::Matches => return ClientConditional::NotModified,
        NoneMatch::DoesNotMatch => return ClientConditional::Full,
        // RFC 9110 13.1.3: If-Modified-Since counts only without If-None-Match.
        NoneMatch::Absent => {}
    }
    // An unreadable date, or more than one line, is ignored (RFC 9110 13.1.3).
    let Some(since) = date_field(request, &IF_MODIFIED_SINCE).valid() else {
        return ClientConditional::Full;
    };
    // RFC 9111 4.3.2: without Last-Modified, the stored Date, else the time it was received.
    let modified = date_field(stored, &LAST_MODIFIED)
        .valid()
        .or_else(|| date_field(stored, &DATE).valid())
        .unwrap_or(received);
    if modified <= since {
        ClientConditional::NotModified
    } else {
        ClientConditional::Full
    }
}

/// The stored fields a 304 must carry (RFC 9110 15.4.5), plus `Last-Modified`, which it may.
pub static NOT_MODIFIED_FIELDS: [HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    VARY,
    LAST_MODIFIED,
];

/// Copies into `out` the fields of `stored` a 304 carries (every line of each); the caller adds
/// `Age` and its own fields (`X-Cache`, ...).
pub fn not_modified_headers(stored: &HeaderMap, out: &mut HeaderMap) {
    for name in NOT_MODIFIED_FIELDS.iter() {
        for value in stored.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn map(fields: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append((*n).clone(), v.parse().unwrap());
        }
        h
    }

    const OLD: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const NEW: &str = "Mon, 07 Nov 1994 08:49:37 GMT";

    fn eval(request: &[(&HeaderName, &str)], stored: &[(&HeaderName, &str)]) -> ClientConditional {
        evaluate_conditional(
            &Method::GET,
            &map(request),
            StatusCode::OK,
            &map(stored),
            UNIX_EPOCH + Duration::from_secs(784_111_777),
        )
    }

    #[test]
    fn rfc9110_8_8_3_entity_tag_syntax() {
        assert_eq!(
            EntityTag::parse(br#"W/"xyzzy""#),
            Some(EntityTag {
                weak: true,
                opaque: b"xyzzy"
            })
        );
        assert_eq!(
            EntityTag::parse(br#""""#),
            Some(EntityTag {
                weak: false,
                opaque: b""
            })
        );
        for bad in [
            &b"xyzzy"[..],
            br#"w/"x""#,
            br#""a"b""#,
            br#""a b""#,
            b"\"",
            br#" "x""#,
        ] {
            assert_eq!(EntityTag::parse(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn rfc9110_8_8_3_2_weak_and_strong_comparison_table() {
        let t = |s: &'static str| EntityTag::parse(s.as_bytes()).unwrap();
        // The table of RFC 9110 8.8.3.2.
        assert!(!t(r#"W/"1""#).strong_eq(&t(r#"W/"1""#)));
        assert!(t(r#"W/"1""#).weak_eq(&t(r#"W/"1""#)));
        assert!(!t(r#"W/"1""#).strong_eq(&t(r#"W/"2""#)));
        assert!(!t(r#"W/"1""#).weak_eq(&t(r#"W/"2""#)));
        assert!(!t(r#"W/"1""#).strong_eq(&t(r#""1""#)));
        assert!(t(r#"W/"1""#).weak_eq(&t(r#""1""#)));
        assert!(t(r#""1""#).strong_eq(&t(r#""1""#)));
        assert!(t(r#""1""#).weak_eq(&t(r#""1""#)));
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match_weak_comparison_lists_and_star() {
        let stored = [(&ETAG, r#""v2""#)];
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, r#""v1", W/"v2""#)], &stored),
            ClientConditional::NotModified
        );
        assert_eq!(
            eval(
                &[(&IF_NONE_MATCH, r#""v1""#), (&IF_NONE_MATCH, r#""v2""#)],
                &stored
            ),
            ClientConditional::NotModified
        );
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, r#""v1""#)], &stored),
            ClientConditional::Full
        );
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, "*")], &[]),
            ClientConditional::NotModified
        );
        // No stored ETag: no tag matches.
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, r#""v2""#)], &[]),
            ClientConditional::Full
        );
        // Unreadable: never a 304.
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, r#""v2", v3"#)], &stored),
            ClientConditional::Full
        );
    }

    #[test]
    fn rfc9110_13_1_3_if_none_match_takes_precedence_over_if_modified_since() {
        let stored = [(&ETAG, r#""v2""#), (&LAST_MODIFIED, OLD)];
        assert_eq!(
            eval(
                &[(&IF_NONE_MATCH, r#""v1""#), (&IF_MODIFIED_SINCE, NEW)],
                &stored
            ),
            ClientConditional::Full
        );
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since_against_last_modified() {
        let stored = [(&LAST_MODIFIED, OLD)];
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, OLD)], &stored),
            ClientConditional::NotModified
        );
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, NEW)], &stored),
            ClientConditional::NotModified
        );
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, OLD)], &[(&LAST_MODIFIED, NEW)]),
            ClientConditional::Full
        );
        // Invalid date or two lines: ignored.
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, "yesterday")], &stored),
            ClientConditional::Full
        );
        assert_eq!(
            eval(
                &[(&IF_MODIFIED_SINCE, NEW), (&IF_MODIFIED_SINCE, NEW)],
                &stored
            ),
            ClientConditional::Full
        );
    }

    #[test]
    fn rfc9111_4_3_2_if_modified_since_falls_back_to_date_then_receipt_time() {
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, OLD)], &[(&DATE, NEW)]),
            ClientConditional::Full
        );
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, NEW)], &[(&DATE, OLD)]),
            ClientConditional::NotModified
        );
        // Received at OLD, no Date or Last-Modified.
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, OLD)], &[]),
            ClientConditional::NotModified
        );
    }

    #[test]
    fn rfc9110_13_2_1_only_for_get_head_and_2xx() {
        let request = map(&[(&IF_NONE_MATCH, "*")]);
        let t = UNIX_EPOCH;
        let empty = HeaderMap::new();
        assert_eq!(
            evaluate_conditional(&Method::HEAD, &request, StatusCode::OK, &empty, t),
            ClientConditional::NotModified
        );
        assert_eq!(
            evaluate_conditional(&Method::GET, &request, StatusCode::NOT_FOUND, &empty, t),
            ClientConditional::Full
        );
        let ims = map(&[(&IF_MODIFIED_SINCE, NEW)]);
        assert_eq!(
            evaluate_conditional(&Method::POST, &ims, StatusCode::OK, &empty, t),
            ClientConditional::Full
        );
    }

    #[test]
    fn rfc9110_13_2_2_preconditions_the_cache_does_not_evaluate_go_upstream() {
        for h in [&IF_MATCH, &IF_UNMODIFIED_SINCE, &IF_RANGE] {
            assert_eq!(
                eval(&[(h, r#""v1""#), (&IF_NONE_MATCH, "*")], &[]),
                ClientConditional::Forward
            );
        }
    }

    #[test]
    fn rfc9110_15_4_5_a_304_carries_the_validator_and_cache_fields() {
        let stored = map(&[
            (&ETAG, r#""v1""#),
            (&CACHE_CONTROL, "max-age=60"),
            (&CACHE_CONTROL, "public"),
            (&DATE, OLD),
            (&EXPIRES, NEW),
            (&VARY, "accept"),
            (&CONTENT_LOCATION, "/a"),
            (&LAST_MODIFIED, OLD),
            (&http::header::CONTENT_TYPE, "text/plain"),
            (&http::header::CONTENT_LENGTH, "5"),
        ]);
        let mut out = HeaderMap::new();
        not_modified_headers(&stored, &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(out.get_all(CACHE_CONTROL).iter().count(), 2);
        assert!(!out.contains_key(http::header::CONTENT_TYPE));
        assert!(!out.contains_key(http::header::CONTENT_LENGTH));
    }

    #[test]
    fn entity_tags_round_trip_and_random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0xe7a6);
        for _ in 0..20_000 {
            let opaque: Vec<u8> = (0..rng.usize(..10))
                .map(|_| loop {
                    let b = rng.u8(0x21..);
                    if b != b'"' && b != 0x7f {
                        break b;
                    }
                })
                .collect();
            let weak = rng.bool();
            let mut wire = if weak {
                b"W/\"".to_vec()
            } else {
                b"\"".to_vec()
            };
            wire.extend_from_slice(&opaque);
            wire.push(b'"');
            assert_eq!(
                EntityTag::parse(&wire),
                Some(EntityTag {
                    weak,
                    opaque: &opaque
                })
            );
            let noise: Vec<u8> = (0..rng.usize(..16)).map(|_| rng.u8(..)).collect();
            let _ = EntityTag::parse(&noise);
            if let Ok(v) = http::HeaderValue::from_bytes(&noise) {
                let mut req = HeaderMap::new();
                req.insert(IF_NONE_MATCH, v.clone());
                req.insert(IF_MODIFIED_SINCE, v.clone());
                let mut stored = HeaderMap::new();
                stored.insert(ETAG, v.clone());
                stored.insert(LAST_MODIFIED, v);
                let _ =
                    evaluate_conditional(&Method::GET, &req, StatusCode::OK, &stored, UNIX_EPOCH);
            }
        }
    }
}
