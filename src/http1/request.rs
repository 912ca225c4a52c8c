//! Request heads from clients, parsed strictly: a request that two HTTP implementations could
//! read differently (two framings, two hosts, a coding the gateway cannot decode) is refused,
//! because the gateway and the upstream behind it must never disagree on where a request ends.
//!
//! Refused, with the RFC 9112 section that allows the refusal where it leaves a choice:
//! - `Transfer-Encoding` other than exactly one `chunked` (§6.1; HTTP/1.0 requests may not use it);
//! - `Transfer-Encoding` together with `Content-Length` (§6.1 lets a server drop the length and
//!   close afterwards; refusing is the safer choice);
//! - `Content-Length` that is not one plain decimal number (lists, repeats, signs: §6.3);
//! - HTTP/1.1 without exactly one `Host`, or a `Host` that is not `host[:port]` (§3.2);
//! - authority-form targets except for CONNECT and `*` except for OPTIONS (§3.2.3, §3.2.4);
//! - absolute-form targets other than `http` and `https`, with user information (RFC 9110
//!   §4.2.4), or with an authority that is not a valid `host[:port]`.
//!
//! An absolute-form target's authority wins over `Host` (§3.2.2): the head's `Host` is replaced
//! by it, so routing, `X-Forwarded-Host` and the upstream's `Host` all name the same host.
//! - obsolete line folding, whitespace before a colon, invalid bytes anywhere (httparse);
//! - a field name longer than [`MAX_HEADER_NAME`] bytes (431: no real field name comes close, and
//!   some servers behind a gateway keep names in fixed buffers).

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use super::{parse_length, RequestFraming};

/// Room for the fields the gateway adds before forwarding (X-Forwarded-For, -Proto, -Host, Via,
/// X-Request-Id, identity headers), so the map is not grown and rehashed on every request.
const ADDED_BY_GATEWAY: usize = 8;

/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 100;

/// Longest header field name, in bytes.
pub const MAX_HEADER_NAME: usize = 1024;

/// A request head, with what it says about its body and its connection.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and header fields (values share the read buffer's memory).
    pub parts: Parts,
    /// How the body is delimited.
    pub framing: RequestFraming,
    /// Whether the client offers the connection for another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request: the client waits for a go-ahead.
    pub expect_continue: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head did not end within the limit, or has too many fields.
    #[error("request head too large")]
    TooLarge,
    /// A field name is longer than [`MAX_HEADER_NAME`].
    #[error("header field name too long")]
    NameTooLong,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("HTTP version not supported")]
    Version,
    /// Not a valid request head, or one the gateway refuses (see the module documentation).
    #[error("{0}")]
    Malformed(&'static str),
}

/// Parses a request head from the front of `buf`. `Ok(None)` means more bytes are needed; on
/// success the head's bytes are removed from `buf`, and on an error they stay in it. `limit`
/// bounds the head's size in bytes.
pub fn parse_request_head(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > limit {
        return Err(HeadError::TooLarge);
    }
    // httparse takes a bare LF as a line end (RFC 9112 §2.2 allows it); the gateway does not.
    if has_bare_lf(&buf[..len]) {
        return Err(HeadError::Malformed("line not ended by CRLF"));
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Version),
    };
    let method = request.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;

    // Offsets into the head (at most `limit` long), so the parts can share its memory.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = span(request.path.unwrap_or_default().as_bytes());
    if request
        .headers
        .iter()
        .any(|h| h.name.len() > MAX_HEADER_NAME)
    {
        return Err(HeadError::NameTooLong);
    }
    let mut facts = Facts::default();
    let spans: Vec<_> = request
        .headers
        .iter()
        .map(|h| {
            let value = span(h.value);
            facts.note(h.name.as_bytes(), h.value, &value);
            (span(h.name.as_bytes()), value)
        })
        .collect();
    let head = buf.split_to(len).freeze();
    let built = build_head(&head, method, version, target, spans, &facts);
    if built.is_err() {
        // A refused head goes back where it was, for the log line that says what was refused.
        let mut whole = BytesMut::with_capacity(head.len() + buf.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(buf);
        *buf = whole;
    }
    built.map(Some)
}

/// The parts of a head whose bytes are `head`, with field spans into it.
fn build_head(
    head: &Bytes,
    method: Method,
    version: Version,
    target: Span,
    spans: Vec<(Span, Span)>,
    facts: &Facts,
) -> Result<RequestHead, HeadError> {
    let uri = parse_target(head.slice(target), &method)?;
    let framing = facts.framing(version)?;
    facts.check_host(version, head)?;
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_BY_GATEWAY);
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name])
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    if let Some(authority) = uri.authority().filter(|_| uri.scheme().is_some()) {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| HeadError::Malformed("invalid request target"))?;
        headers.insert(http::header::HOST, host);
    }

    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    let keep_alive = match version {
        Version::HTTP_11 => !facts.close,
        _ => facts.keep_alive && !facts.close,
    };
    Ok(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue: facts.expect_continue && version == Version::HTTP_11,
    })
}

/// Where something sits in a head, in bytes.
type Span = std::ops::Range<usize>;

/// The path of the request line at the front of `buf`, as received and without its query, for
/// the log line of a head that was refused: `None` unless the line has a method, a target and
/// the space after it.
pub fn raw_target_path(buf: &[u8]) -> Option<&[u8]> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let mut words = line.splitn(3, |&b| b == b' ');
    let (_method, target, _rest) = (words.next()?, words.next()?, words.next()?);
    let path = target.split(|&b| b == b'?').next()?;
    (!path.is_empty()).then_some(path)
}

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The request target: origin-form for any method, absolute-form for any method,
/// authority-form only for CONNECT and `*` only for OPTIONS.
fn parse_target(target: Bytes, method: &Method) -> Result<Uri, HeadError> {
    let form_ok = match target.first() {
        Some(b'/') => true,
        Some(b'*') if target.len() == 1 => *method == Method::OPTIONS,
        Some(_) => true,
        None => false,
    };
    if !form_ok {
        return Err(HeadError::Malformed("invalid request target"));
    }
    let uri = Uri::from_maybe_shared(target)
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if authority_form != (*method == Method::CONNECT) {
        return Err(HeadError::Malformed("invalid request target"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(HeadError::Malformed(
                "request target scheme is not http or https",
            ));
        }
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            return Err(HeadError::Malformed(
                "user information in the request target",
            ));
        }
        if !valid_host(authority.as_bytes()) {
            return Err(HeadError::Malformed("invalid host in the request target"));
        }
    }
    Ok(uri)
}

/// What the framing and connection fields of a head say, gathered field by field.
#[derive(Default)]
struct Facts {
    lengths: u32,
    length: Option<u64>,
    codings: u32,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    hosts: u32,
    /// Where the last Host value sits in the head.
    host: std::ops::Range<usize>,
}

impl Facts {
    fn note(&mut self, name: &[u8], value: &[u8], at: &std::ops::Range<usize>) {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            14 if is("content-length") => {
                self.lengths += 1;
                self.length = parse_length(value);
            }
            17 if is("transfer-encoding") => {
                self.codings += 1;
                self.chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            10 if is("connection") => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    }
                }
            }
            6 if is("expect") => {
                self.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            4 if is("host") => {
                self.hosts += 1;
                self.host = at.clone();
            }
            _ => {}
        }
    }

    fn framing(&self, version: Version) -> Result<RequestFraming, HeadError> {
        use HeadError::Malformed;
        match (self.codings, self.lengths) {
            (0, 0) => Ok(RequestFraming::None),
            (0, 1) => match self.length {
                Some(0) => Ok(RequestFraming::None),
                Some(n) => Ok(RequestFraming::Length(n)),
                None => Err(Malformed("invalid Content-Length")),
            },
            (0, _) => Err(Malformed("more than one Content-Length field")),
            (_, 0) if version == Version::HTTP_10 => {
                Err(Malformed("Transfer-Encoding in an HTTP/1.0 request"))
            }
            (1, 0) if self.chunked => Ok(RequestFraming::Chunked),
            (_, 0) => Err(Malformed("Transfer-Encoding other than chunked")),
            (_, _) => Err(Malformed("both Transfer-Encoding and Content-Length")),
        }
    }

    fn check_host(&self, version: Version, head: &Bytes) -> Result<(), HeadError> {
        use HeadError::Malformed;
        match (self.hosts, version) {
            (0, Version::HTTP_10) => return Ok(()),
            (0, _) => return Err(Malformed("missing Host")),
            (1, _) => {}
            _ => return Err(Malformed("more than one Host field")),
        }
        let value = &head[self.host.clone()];
        if value.is_empty() || valid_host(value) {
            Ok(())
        } else {
            Err(Malformed("invalid Host"))
        }
    }
}

/// `uri-host [ ":" port ]`: a name of letters, digits, `-`, `.`, `_` and `~`, an IPv4
/// address, or an IPv6 address in brackets; the port, when present, 1 to 5 digits up to 65535.
/// Percent-encoded and other characters the URI grammar would allow in a name are refused: no
/// DNS name needs them, and an upstream might decode them differently.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => {
            let Some(end) = value.iter().position(|&b| b == b']') else {
                return false;
            };
            let ip = std::str::from_utf8(&value[1..end]).ok();
            if ip.is_none_or(|ip| ip.parse::<std::net::Ipv6Addr>().is_err()) {
                return false;
            }
            match &value[end + 1..] {
                [] => return true,
                [b':', port @ ..] => (&value[..=end], Some(port)),
                _ => return false,
            }
        }
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        },
    };
    let name_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = port.is_none_or(|digits| {
        (1..=5).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
            && digits
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                <= 65535
    });
    name_ok && port_ok
}

#[cfg(test)]
mod tests;
