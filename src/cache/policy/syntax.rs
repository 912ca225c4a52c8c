//! The pieces of RFC 9110 field syntax the caching rules share: tokens, quoted strings, lists,
//! delta-seconds and HTTP-dates. Everything works on borrowed bytes and never allocates.

use std::time::SystemTime;

use http::header::HeaderName;
use http::HeaderMap;

/// The largest delta-seconds value kept (RFC 9111 1.2.2): 2^31, what larger values become.
pub const DELTA_SECONDS_CAP: u32 = 1 << 31;

/// `tchar` of RFC 9110 5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty run of `tchar`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing optional whitespace (SP / HTAB).
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The inside of a quoted-string (RFC 9110 5.6.4) spanning all of `s`, escapes left in place;
/// `None` when `s` is not exactly one well-formed quoted-string.
pub(crate) fn quoted_inner(s: &[u8]) -> Option<&[u8]> {
    let inner = s.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => {
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                let next = *inner.get(i + 1)?;
                if !(next == b'\t' || next == b' ' || (0x21..=0x7e).contains(&next) || next >= 0x80)
                {
                    return None;
                }
                i += 2;
            }
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text: an unescaped DQUOTE
            // here would end the string early.
            b'"' => return None,
            b if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 => i += 1,
            _ => return None,
        }
    }
    Some(inner)
}

/// Elements of a comma-separated list (RFC 9110 5.6.1), split at commas outside quoted strings
/// and trimmed of whitespace. Empty elements are yielded (callers skip them, as 5.6.1 asks); an
/// unterminated quoted string yields one error and ends the list.
pub(crate) struct ListItems<'a> {
    rest: &'a [u8],
    done: bool,
}

/// A list element that cannot be read: an unterminated quoted string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unterminated;

/// The elements of one field line's list value.
pub(crate) fn list_items(value: &[u8]) -> ListItems<'_> {
    ListItems {
        rest: value,
        done: false,
    }
}

impl<'a> Iterator for ListItems<'a> {
    type Item = Result<&'a [u8], Unterminated>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in self.rest.iter().enumerate() {
            if quoted {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    quoted = false;
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == b',' {
                let item = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                return Some(Ok(trim_ows(item)));
            }
        }
        self.done = true;
        if quoted {
            return Some(Err(Unterminated));
        }
        Some(Ok(trim_ows(self.rest)))
    }
}

/// delta-seconds (RFC 9111 1.2.2): one or more digits, values over 2^31 taken as 2^31.
pub(crate) fn delta_seconds(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u32 = 0;
    for &d in s {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(d - b'0')))
            .map_or(DELTA_SECONDS_CAP, |v| v.min(DELTA_SECONDS_CAP));
    }
    Some(value)
}

/// An HTTP-date header field as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateField {
    /// The field is not there.
    Absent,
    /// Exactly one field line holding a date in one of the three formats of RFC 9110 5.6.7.
    Valid(SystemTime),
    /// Present but unusable: not a date, or more than one field line.
    Invalid,
}

impl DateField {
    /// The date, when valid.
    pub fn valid(self) -> Option<SystemTime> {
        match self {
            DateField::Valid(t) => Some(t),
            _ => None,
        }
    }
}

/// Reads the date field `name` of `headers`; two lines count as invalid, since RFC 9111 4.2.1
/// lets a cache treat a response with two `Expires` lines as stale and we never guess which.
pub fn date_field(headers: &HeaderMap, name: &HeaderName) -> DateField {
    let mut lines = headers.get_all(name).iter();
    let Some(first) = lines.next() else {
        return DateField::Absent;
    };
    if lines.next().is_some() {
        return DateField::Invalid;
    }
    // httpdate accepts IMF-fixdate, the obsolete RFC 850 form and asctime, as 5.6.7 requires of
    // recipients, and checks that the weekday matches the date.
    match first.to_str().ok().map(httpdate::parse_http_date) {
        Some(Ok(t)) => DateField::Valid(t),
        _ => DateField::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn items(s: &str) -> Vec<Result<&[u8], Unterminated>> {
        list_items(s.as_bytes()).collect()
    }

    #[test]
    fn rfc9110_5_6_1_lists_split_at_commas_outside_quotes_and_keep_empty_elements() {
        assert_eq!(
            items(r#" a , "b,\"c" ,,d "#),
            vec![
                Ok(&b"a"[..]),
                Ok(&br#""b,\"c""#[..]),
                Ok(&b""[..]),
                Ok(&b"d"[..])
            ]
        );
        assert_eq!(items(r#"a, "b"#), vec![Ok(&b"a"[..]), Err(Unterminated)]);
        assert_eq!(items(""), vec![Ok(&b""[..])]);
    }

    #[test]
    fn rfc9110_5_6_4_quoted_strings_are_strict() {
        assert_eq!(quoted_inner(br#""a\"b""#), Some(&br#"a\"b"#[..]));
        assert_eq!(quoted_inner(br#""""#), Some(&b""[..]));
        assert_eq!(quoted_inner(br#""a"b""#), None);
        assert_eq!(quoted_inner(br#""a\""#), None);
        assert_eq!(quoted_inner(b"\"a\x01\""), None);
        assert_eq!(quoted_inner(b"\""), None);
    }

    #[test]
    fn rfc9111_1_2_2_delta_seconds_cap_at_2_pow_31() {
        assert_eq!(delta_seconds(b"0"), Some(0));
        assert_eq!(delta_seconds(b"2147483647"), Some(2_147_483_647));
        assert_eq!(delta_seconds(b"2147483648"), Some(DELTA_SECONDS_CAP));
        assert_eq!(delta_seconds(b"2147483649"), Some(DELTA_SECONDS_CAP));
        assert_eq!(
            delta_seconds(b"99999999999999999999999"),
            Some(DELTA_SECONDS_CAP)
        );
        assert_eq!(delta_seconds(b""), None);
        assert_eq!(delta_seconds(b"-1"), None);
        assert_eq!(delta_seconds(b"1.5"), None);
        assert_eq!(delta_seconds(b" 1"), None);
    }

    #[test]
    fn rfc9110_5_6_7_all_three_date_formats_are_accepted() {
        let expected = UNIX_EPOCH + Duration::from_secs(784_111_777);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::header::DATE, date.parse().unwrap());
            assert_eq!(
                date_field(&h, &http::header::DATE),
                DateField::Valid(expected),
                "{date}"
            );
        }
    }

    #[test]
    fn rfc9111_4_2_1_two_date_lines_or_garbage_are_invalid() {
        let mut h = HeaderMap::new();
        assert_eq!(date_field(&h, &http::header::EXPIRES), DateField::Absent);
        h.append(http::header::EXPIRES, "0".parse().unwrap());
        assert_eq!(date_field(&h, &http::header::EXPIRES), DateField::Invalid);
        h.insert(
            http::header::EXPIRES,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        h.append(
            http::header::EXPIRES,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(date_field(&h, &http::header::EXPIRES), DateField::Invalid);
        // Wrong weekday for the date.
        h.insert(
            http::header::EXPIRES,
            "Mon, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(date_field(&h, &http::header::EXPIRES), DateField::Invalid);
    }

    #[test]
    fn random_bytes_never_panic_the_field_parsers() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
        let alphabet = b"\"\\, \t=a0GMTSun:-9\x80\x01";
        for _ in 0..20_000 {
            let len = rng.usize(..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.bool() {
                        alphabet[rng.usize(..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect();
            let _ = list_items(&bytes).count();
            let _ = quoted_inner(&bytes);
            let _ = delta_seconds(&bytes);
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(http::header::DATE, v);
                let _ = date_field(&h, &http::header::DATE);
            }
        }
    }

    #[test]
    fn mutated_dates_never_panic_and_formatted_dates_round_trip() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0004);
        let seeds = [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ];
        let swaps = b"0123456789 :-,ADFJMNOSTWaceghlnoprtuvy";
        for _ in 0..30_000 {
            let mut bytes = seeds[rng.usize(..3)].as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[i] = swaps[rng.usize(..swaps.len())],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, swaps[rng.usize(..swaps.len())]),
                }
            }
            let mut h = HeaderMap::new();
            h.insert(
                http::header::DATE,
                http::HeaderValue::from_bytes(&bytes).unwrap(),
            );
            let _ = date_field(&h, &http::header::DATE);
        }
        // Any second from 1970 to 9999 formats as IMF-fixdate and reads back.
        for _ in 0..10_000 {
            let t = UNIX_EPOCH + Duration::from_secs(rng.u64(..253_402_300_799));
            let mut h = HeaderMap::new();
            h.insert(
                http::header::DATE,
                httpdate::fmt_http_date(t).parse().unwrap(),
            );
            assert_eq!(date_field(&h, &http::header::DATE), DateField::Valid(t));
        }
    }

    #[test]
    fn list_elements_round_trip_through_join() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0002);
        for _ in 0..5_000 {
            let n = rng.usize(1..6);
            let elements: Vec<String> = (0..n)
                .map(|_| {
                    if rng.bool() {
                        (0..rng.usize(1..6))
                            .map(|_| char::from(b"abc-9"[rng.usize(..5)]))
                            .collect()
                    } else {
                        let inner: String = (0..rng.usize(..6))
                            .map(|_| ["x", ",", " ", "\\\"", "\\\\"][rng.usize(..5)])
                            .collect();
                        format!("\"{inner}\"")
                    }
                })
                .collect();
            let joined = elements.join(if rng.bool() { "," } else { " ,\t" });
            let parsed: Vec<&[u8]> = list_items(joined.as_bytes())
                .map(|r| r.expect("well-formed"))
                .collect();
            let want: Vec<&[u8]> = elements.iter().map(|e| e.as_bytes()).collect();
            assert_eq!(parsed, want, "{joined}");
        }
    }

    #[test]
    fn delta_seconds_round_trip_below_the_cap() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0003);
        for _ in 0..10_000 {
            let v = rng.u32(..=DELTA_SECONDS_CAP);
            assert_eq!(delta_seconds(v.to_string().as_bytes()), Some(v));
            let big = u64::from(DELTA_SECONDS_CAP) + rng.u64(..1 << 40);
            assert_eq!(
                delta_seconds(big.to_string().as_bytes()),
                Some(DELTA_SECONDS_CAP)
            );
        }
    }
}
