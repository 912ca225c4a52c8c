//! Strict base64 decoding for token segments and PEM bodies.
//!
//! Written here rather than pulled in as a crate because the rules are security-relevant and
//! small: token segments must be base64url without padding and *canonical* (unused trailing bits
//! zero), so one header or payload has exactly one encoding and a token cannot be re-spelled
//! without changing the signed bytes.

/// Value of a base64url symbol (RFC 4648 §5).
fn url_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Value of a standard base64 symbol (RFC 4648 §4), as used in PEM bodies.
fn std_value(c: u8) -> Option<u8> {
    match c {
        b'+' => Some(62),
        b'/' => Some(63),
        b'-' | b'_' => None,
        _ => url_value(c),
    }
}

/// Number of bytes `symbols` unpadded symbols decode to; `None` for an impossible length.
fn decoded_len(symbols: usize) -> Option<usize> {
    let whole = symbols / 4 * 3;
    match symbols % 4 {
        0 => Some(whole),
        2 => Some(whole + 1),
        3 => Some(whole + 2),
        _ => None,
    }
}

/// Decodes unpadded symbols with `value` into the start of `out`, which must hold at least
/// [`decoded_len`] bytes; returns that length. `None` on any foreign symbol, an impossible
/// length or non-zero trailing bits.
fn decode_into(input: &[u8], value: fn(u8) -> Option<u8>, out: &mut [u8]) -> Option<usize> {
    let len = decoded_len(input.len())?;
    let out = out.get_mut(..len)?;
    let mut chunks = input.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(3);
    for (chunk, out) in (&mut chunks).zip(&mut outs) {
        let n = (u32::from(value(chunk[0])?) << 18)
            | (u32::from(value(chunk[1])?) << 12)
            | (u32::from(value(chunk[2])?) << 6)
            | u32::from(value(chunk[3])?);
        out.copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    match (chunks.remainder(), outs.into_remainder()) {
        ([], []) => {}
        (&[a, b], [x]) => {
            let (a, b) = (value(a)?, value(b)?);
            if b & 0x0f != 0 {
                return None;
            }
            *x = (a << 2) | (b >> 4);
        }
        (&[a, b, c], [x, y]) => {
            let (a, b, c) = (value(a)?, value(b)?, value(c)?);
            if c & 0x03 != 0 {
                return None;
            }
            *x = (a << 2) | (b >> 4);
            *y = (b << 4) | (c >> 2);
        }
        _ => return None,
    }
    Some(len)
}

/// Decodes unpadded symbols with `value` into a new vector (see [`decode_into`]).
fn decode_with(input: &[u8], value: fn(u8) -> Option<u8>) -> Option<Vec<u8>> {
    let mut out = vec![0; decoded_len(input.len())?];
    decode_into(input, value, &mut out)?;
    Some(out)
}

/// Decodes one JWS segment: base64url, no padding, canonical.
pub(super) fn decode_url(input: &[u8]) -> Option<Vec<u8>> {
    decode_with(input, url_value)
}

/// Decodes one JWS segment like [`decode_url`], into `buffer` instead of a new allocation (the
/// signature, on the request path). `None` also when the result would not fit.
pub(super) fn decode_url_into<'a>(input: &[u8], buffer: &'a mut [u8]) -> Option<&'a [u8]> {
    let len = decode_into(input, url_value, buffer)?;
    Some(&buffer[..len])
}

/// Whether `input` would decode with [`decode_url`], without decoding it (the signature segment
/// is only decoded once a key has been found for it).
pub(super) fn is_canonical_url(input: &[u8]) -> bool {
    if input.len() % 4 == 1 || input.iter().any(|&c| url_value(c).is_none()) {
        return false;
    }
    let last = input.last().map_or(0, |&c| url_value(c).unwrap_or(0));
    match input.len() % 4 {
        2 => last & 0x0f == 0,
        3 => last & 0x03 == 0,
        _ => true,
    }
}

/// Decodes a PEM body: standard alphabet, line breaks and other ASCII whitespace ignored,
/// optional `=` padding only at the end.
pub(super) fn decode_pem_body(body: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let unpadded = symbols
        .strip_suffix(b"==")
        .unwrap_or_else(|| symbols.strip_suffix(b"=").unwrap_or(symbols.as_slice()));
    if unpadded.len() != symbols.len() && !symbols.len().is_multiple_of(4) {
        return None;
    }
    decode_with(unpadded, std_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trips_and_rejects_non_canonical() {
        assert_eq!(decode_url(b"").unwrap(), b"");
        assert_eq!(decode_url(b"Zg").unwrap(), b"f");
        assert_eq!(decode_url(b"Zm8").unwrap(), b"fo");
        assert_eq!(decode_url(b"Zm9v").unwrap(), b"foo");
        assert_eq!(decode_url(b"-_8").unwrap(), [0xfb, 0xff]);
        // Trailing bits set: same byte as "Zg", a second spelling that must not be accepted.
        assert!(decode_url(b"Zh").is_none());
        assert!(decode_url(b"Zm9").is_none());
        assert!(decode_url(b"Zg==").is_none());
        assert!(decode_url(b"Z").is_none());
        assert!(decode_url(b"+/8").is_none());
        assert!(decode_url(b"Zm 9v").is_none());
        assert!(is_canonical_url(b"Zm8"));
        assert!(!is_canonical_url(b"Zm9"));
        assert!(!is_canonical_url(b"Zg=="));
    }

    #[test]
    fn url_into_buffer() {
        let mut buffer = [0u8; 3];
        assert_eq!(decode_url_into(b"Zm9v", &mut buffer), Some(&b"foo"[..]));
        assert_eq!(decode_url_into(b"Zm8", &mut buffer), Some(&b"fo"[..]));
        assert_eq!(decode_url_into(b"", &mut buffer), Some(&b""[..]));
        assert_eq!(
            decode_url_into(b"Zm9vYg", &mut buffer),
            None,
            "does not fit"
        );
        assert_eq!(decode_url_into(b"Zm9", &mut buffer), None, "non-canonical");
        assert_eq!(
            decode_url_into(b"Zm9!", &mut buffer),
            None,
            "foreign symbol"
        );
        assert_eq!(
            decode_url_into(b"Zm9vY", &mut [0u8; 8]),
            None,
            "impossible length"
        );
        let mut big = [0u8; 64];
        for text in [&b"Zg"[..], b"Zm8", b"Zm9v", b"Zm9vYmFy", b"-_8", b"Zm9vYg"] {
            assert_eq!(
                decode_url_into(text, &mut big).map(<[u8]>::to_vec),
                decode_url(text)
            );
        }
    }

    #[test]
    fn pem_body() {
        assert_eq!(decode_pem_body("Zm9v\nYmFy\r\n").unwrap(), b"foobar");
        assert_eq!(decode_pem_body("Zg==").unwrap(), b"f");
        assert_eq!(decode_pem_body("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(decode_pem_body("Zg=").is_none());
        assert!(decode_pem_body("Z=g=").is_none());
        assert!(decode_pem_body("-_8=").is_none());
    }
}
