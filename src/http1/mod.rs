//! HTTP/1.1 on the wire, shared by the client side (requests from clients, responses to them)
//! and the upstream side: chunked coding, field classification, number formats. No I/O here
//! except in [`io`], which holds the non-blocking socket helpers both sides drive.

pub mod chunked;
pub mod inbound;
pub mod io;
pub mod request;
pub mod response;
pub mod transport;

use http::header::{self, HeaderMap, HeaderName};
use http::Method;

/// How a request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing for a body of `exact` bytes (`None` when unknown). Methods whose requests
    /// usually carry a body say `Content-Length: 0` when empty, as clients do.
    pub fn for_body(method: &Method, exact: Option<u64>) -> Self {
        match exact {
            None => RequestFraming::Chunked,
            Some(0) if !expects_body(method) => RequestFraming::None,
            Some(n) => RequestFraming::Length(n),
        }
    }
}

fn expects_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The bytes `headers` take on the wire (`name: value` and CRLF each).
///
/// Only ever a capacity to reserve, so it adds with `wrapping_add`: a map in memory cannot
/// come near `usize::MAX` bytes, and with `overflow-checks` every field's additions would be
/// checked (this ran twice per proxied request).
pub fn fields_size(headers: &HeaderMap) -> usize {
    headers.iter().fold(0, |size: usize, (name, value)| {
        size.wrapping_add(name.as_str().len())
            .wrapping_add(value.len())
            .wrapping_add(4)
    })
}

/// Writes each field as `name: value` and CRLF, except the framing fields (Content-Length and
/// Transfer-Encoding: the writer of a message frames it itself) and those `skip` names.
///
/// Heads are written into a `Vec` (then turned into `Bytes` without a copy) rather than a
/// `BytesMut`: `Vec::extend_from_slice` comes precompiled with the standard library, so a
/// build with `overflow-checks` does not check every append's arithmetic, and it stays small
/// enough to inline.
pub fn write_fields(headers: &HeaderMap, skip: &[HeaderName], out: &mut Vec<u8>) {
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || skip.contains(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes a `content-length` field of `n`.
pub fn write_content_length(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa(n, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal into the end of `buf` and returns the digits.
pub fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// A Content-Length value: 1 to 19 decimal digits (so it fits in a u64), nothing else.
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// RFC 9110 `tchar`: what a token (a method, a field name, a coding) is made of.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for n in [0, 7, 10, 4096, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(
            parse_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"0x1",
            b"1,1",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
