//! Revalidating a stored response with the origin (RFC 9111 4.3): the conditional request
//! fields to send (4.3.1) and the merge of a 304 into the stored fields (4.3.4, 3.2).

use http::header::{
    HeaderName, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

use super::conditional::stored_etag;
use super::syntax::{date_field, is_token, list_items};

/// Replaces the conditional fields of `upstream`, the request that revalidates `stored`, with
/// the stored validators: `If-None-Match` with its `ETag`, `If-Modified-Since` with its
/// `Last-Modified` or, without one, its `Date` (RFC 9110 13.1.3). Values are sent as stored,
/// since some origins only honour exact matches. Returns whether any validator was added.
pub fn add_validators(stored: &HeaderMap, upstream: &mut HeaderMap) -> bool {
    // The client's own conditions are answered by the cache once the entry is refreshed.
    upstream.remove(IF_NONE_MATCH);
    upstream.remove(IF_MODIFIED_SINCE);
    let mut added = false;
    if stored_etag(stored).is_some() {
        if let Some(etag) = stored.get(ETAG) {
            upstream.insert(IF_NONE_MATCH, etag.clone());
            added = true;
        }
    }
    for name in [LAST_MODIFIED, DATE] {
        if date_field(stored, &name).valid().is_some() {
            if let Some(value) = stored.get(&name) {
                upstream.insert(IF_MODIFIED_SINCE, value.clone());
                added = true;
                break;
            }
        }
    }
    added
}

/// Whether a 304 may update the stored response it answers (RFC 9111 4.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotModifiedMatch {
    /// Its validator selects the stored response (or it has none, and the conditional request
    /// was built from the one stored response): the fields were merged.
    Updated,
    /// Its validator names another representation: nothing was changed; fetch unconditionally.
    Mismatch,
}

fn selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if not_modified.contains_key(ETAG) {
        let (Some(new), Some(old)) = (stored_etag(not_modified), stored_etag(stored)) else {
            return false;
        };
        return if new.weak {
            new.weak_eq(&old)
        } else {
            new.strong_eq(&old)
        };
    }
    if not_modified.contains_key(LAST_MODIFIED) {
        let new = date_field(not_modified, &LAST_MODIFIED).valid();
        return new.is_some() && new == date_field(stored, &LAST_MODIFIED).valid();
    }
    // No validator: there is one stored response per key, and the request was conditional on
    // it, so the 304 speaks of it.
    true
}

/// Fields a 304 never changes in a stored response: hop-by-hop fields and `Content-Length`
/// (RFC 9111 3.1, 3.2), the coding and range of the stored body, which a 304 cannot change
/// (3.2 allows the exception), and `Set-Cookie`, which must never reach another user.
static KEPT_AS_STORED: [HeaderName; 12] = [
    CONNECTION,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_RANGE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    SET_COOKIE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
];

fn listed_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(CONNECTION).iter().any(|line| {
        list_items(line.as_bytes())
            .flatten()
            .any(|option| is_token(option) && option.eq_ignore_ascii_case(name.as_str().as_bytes()))
    })
}

fn kept_as_stored(name: &HeaderName, not_modified: &HeaderMap) -> bool {
    KEPT_AS_STORED.contains(name)
        || name == "proxy-connection"
        || name == "proxy-authentication-info"
        || listed_in_connection(not_modified, name)
}

/// Merges a 304 into the stored fields when its validator selects them (RFC 9111 4.3.4): each
/// field it carries replaces every stored line of that field, except the fields in
/// [`KEPT_AS_STORED`]. The caller then recomputes freshness from the merged fields with the
/// revalidation's request and response times, and checks storability again (a 304 may add
/// `no-store` or `private`).
pub fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) -> NotModifiedMatch {
    if !selects(stored, not_modified) {
        return NotModifiedMatch::Mismatch;
    }
    for name in not_modified.keys() {
        if kept_as_stored(name, not_modified) {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
    NotModifiedMatch::Updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AGE, CACHE_CONTROL, CONTENT_TYPE, EXPIRES};

    const OLD: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const NEW: &str = "Mon, 07 Nov 1994 08:49:37 GMT";

    fn map(fields: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append((*n).clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn rfc9111_4_3_1_etag_and_last_modified_become_conditions() {
        let stored = map(&[(&ETAG, r#"W/"v1""#), (&LAST_MODIFIED, OLD), (&DATE, NEW)]);
        let mut up = map(&[(&IF_NONE_MATCH, r#""client""#), (&IF_MODIFIED_SINCE, NEW)]);
        assert!(add_validators(&stored, &mut up));
        assert_eq!(up.get(IF_NONE_MATCH).unwrap(), r#"W/"v1""#);
        assert_eq!(up.get_all(IF_NONE_MATCH).iter().count(), 1);
        assert_eq!(up.get(IF_MODIFIED_SINCE).unwrap(), OLD);
    }

    #[test]
    fn rfc9110_13_1_3_date_stands_in_for_a_missing_last_modified() {
        let mut up = HeaderMap::new();
        assert!(add_validators(&map(&[(&DATE, NEW)]), &mut up));
        assert_eq!(up.get(IF_MODIFIED_SINCE).unwrap(), NEW);
        assert!(!up.contains_key(IF_NONE_MATCH));
    }

    #[test]
    fn unusable_validators_are_not_sent() {
        let mut up = map(&[(&IF_NONE_MATCH, "*")]);
        let stored = map(&[(&ETAG, "no-quotes"), (&LAST_MODIFIED, "yesterday")]);
        assert!(!add_validators(&stored, &mut up));
        assert!(up.is_empty());
    }

    #[test]
    fn rfc9111_4_3_4_strong_validator_must_match_strongly() {
        let mut stored = map(&[(&ETAG, r#""v1""#), (&CACHE_CONTROL, "max-age=1")]);
        let same = map(&[(&ETAG, r#""v1""#), (&CACHE_CONTROL, "max-age=60")]);
        assert_eq!(
            merge_not_modified(&mut stored, &same),
            NotModifiedMatch::Updated
        );
        assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=60");
        let other = map(&[(&ETAG, r#""v2""#), (&CACHE_CONTROL, "max-age=99")]);
        assert_eq!(
            merge_not_modified(&mut stored, &other),
            NotModifiedMatch::Mismatch
        );
        assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=60");
        let mut weak_stored = map(&[(&ETAG, r#"W/"v1""#)]);
        assert_eq!(
            merge_not_modified(&mut weak_stored, &map(&[(&ETAG, r#""v1""#)])),
            NotModifiedMatch::Mismatch
        );
    }

    #[test]
    fn rfc9111_4_3_4_weak_validator_matches_weakly() {
        let mut stored = map(&[(&ETAG, r#""v1""#)]);
        let weak = map(&[(&ETAG, r#"W/"v1""#), (&EXPIRES, NEW)]);
        assert_eq!(
            merge_not_modified(&mut stored, &weak),
            NotModifiedMatch::Updated
        );
        assert_eq!(stored.get(ETAG).unwrap(), r#"W/"v1""#);
        assert_eq!(stored.get(EXPIRES).unwrap(), NEW);
    }

    #[test]
    fn rfc9111_4_3_4_last_modified_or_no_validator() {
        let mut stored = map(&[(&LAST_MODIFIED, OLD)]);
        assert_eq!(
            merge_not_modified(&mut stored, &map(&[(&LAST_MODIFIED, NEW)])),
            NotModifiedMatch::Mismatch
        );
        assert_eq!(
            merge_not_modified(&mut stored, &map(&[(&LAST_MODIFIED, OLD), (&AGE, "3")])),
            NotModifiedMatch::Updated
        );
        assert_eq!(
            merge_not_modified(&mut stored, &map(&[(&DATE, NEW)])),
            NotModifiedMatch::Updated
        );
        assert_eq!(stored.get(DATE).unwrap(), NEW);
        assert_eq!(stored.get(AGE).unwrap(), "3");
        // A 304 with an unreadable ETag selects nothing.
        assert_eq!(
            merge_not_modified(&mut map(&[(&ETAG, r#""v1""#)]), &map(&[(&ETAG, "v1")])),
            NotModifiedMatch::Mismatch
        );
    }

    #[test]
    fn rfc9111_3_2_replaces_all_lines_but_keeps_length_coding_hop_by_hop_and_cookies() {
        let mut stored = map(&[
            (&CACHE_CONTROL, "max-age=1"),
            (&CACHE_CONTROL, "public"),
            (&CONTENT_LENGTH, "5"),
            (&CONTENT_ENCODING, "gzip"),
            (&CONTENT_TYPE, "text/plain"),
        ]);
        let x_hop = HeaderName::from_static("x-hop");
        let x_new = HeaderName::from_static("x-new");
        let nm = map(&[
            (&CACHE_CONTROL, "max-age=60"),
            (&CONTENT_LENGTH, "0"),
            (&CONTENT_ENCODING, "identity"),
            (&TRANSFER_ENCODING, "chunked"),
            (&CONNECTION, "x-hop"),
            (&x_hop, "1"),
            (&SET_COOKIE, "a=b"),
            (&HeaderName::from_static("keep-alive"), "timeout=5"),
            (&x_new, "2"),
            (&CONTENT_TYPE, "text/html"),
        ]);
        assert_eq!(
            merge_not_modified(&mut stored, &nm),
            NotModifiedMatch::Updated
        );
        assert_eq!(stored.get_all(CACHE_CONTROL).iter().count(), 1);
        assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=60");
        assert_eq!(stored.get(CONTENT_LENGTH).unwrap(), "5");
        assert_eq!(stored.get(CONTENT_ENCODING).unwrap(), "gzip");
        assert_eq!(stored.get(CONTENT_TYPE).unwrap(), "text/html");
        assert_eq!(stored.get(&x_new).unwrap(), "2");
        for gone in [&TRANSFER_ENCODING, &CONNECTION, &x_hop, &SET_COOKIE] {
            assert!(!stored.contains_key(gone), "{gone}");
        }
        assert!(!stored.contains_key("keep-alive"));
    }
}
