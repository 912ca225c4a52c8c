//! HTTP/1.1 on the upstream side, as bytes: the request head we send, the response head we
//! read, how the response body is delimited, and chunked decoding. No I/O here; the pool's
//! exchange feeds it buffers.
//!
//! Framing follows RFC 9112 §6: HEAD, 1xx, 204 and 304 answers have no body; a
//! `Transfer-Encoding: chunked` wins over Content-Length (and the connection is then not reused,
//! as the message was ambiguous); any other transfer coding is refused, as the gateway can
//! neither decode it nor pass it on; conflicting Content-Lengths are refused, identical ones
//! (`10, 10`) are relayed as one; anything else is read until the upstream closes. An HTTP/1.0
//! answer with Transfer-Encoding is decoded as chunked but its connection is closed after it
//! (RFC 9112 §6.1: its framing may have been mangled on the way).
//!
//! Every length taken from the peer is bounded before it is used: heads by
//! [`MAX_HEAD_BYTES`], Content-Length by its digit count, chunk lines and trailers by the
//! chunked decoder's limits; body lengths only ever shrink by what was actually read.

use bytes::{Buf, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::http1::chunked::{take_bytes, ChunkedDecoder, ChunkedError, Decoded};
pub use crate::http1::RequestFraming;
use crate::http1::{fields_size, parse_length, write_content_length, write_fields};

/// Largest response head accepted from an upstream.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Room for the fields the gateway adds to a response (X-Request-Id, security and CORS headers),
/// so the map is not grown and rehashed on every response.
const ADDED_BY_GATEWAY: usize = 6;
/// Most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;

/// An upstream spoke something other than valid HTTP/1.x.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The head could not be parsed.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The head was larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// A header name or value the HTTP types refuse.
    #[error("invalid response header")]
    Header,
    /// Content-Length missing digits, or several that disagree.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A transfer coding other than one `chunked`, which cannot be decoded or passed on.
    #[error("unsupported Transfer-Encoding (only a single `chunked` can be relayed)")]
    TransferEncoding,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// A malformed chunk size, chunk end or trailer section.
    #[error(transparent)]
    Chunked(#[from] ChunkedError),
}

/// Writes `METHOD target HTTP/1.1`, the headers and the framing header. The caller's
/// Content-Length and Transfer-Encoding are replaced by `framing`.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.reserve(method.as_str().len() + target.len() + fields_size(headers) + 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(headers, &[], out);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => write_content_length(n, out),
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// There is none.
    Empty,
    /// After this many bytes.
    Length(u64),
    /// At the last chunk.
    Chunked,
    /// When the upstream closes the connection.
    UntilClose,
}

/// Takes a response body out of a connection's read buffer, as its framing says. Pure: the
/// exchange reads the socket, this only decides what of the buffer is body.
#[derive(Debug)]
pub enum BodyDecoder {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, decoded as deployed servers send it.
    Chunked(ChunkedDecoder),
    /// Everything until the upstream closes.
    UntilClose,
    /// The body has ended.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyDecoder::Done,
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder::lenient()),
            BodyFraming::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Body bytes from the front of `buf` (never empty), `NeedMore` when `buf` holds none, or
    /// `End`. What follows the body stays in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        match self {
            BodyDecoder::Done => Ok(Decoded::End),
            _ if buf.is_empty() => Ok(Decoded::NeedMore),
            BodyDecoder::Length(left) => {
                // At most what is left, so the subtraction cannot wrap.
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                let data = take_bytes(buf, n as usize);
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            BodyDecoder::Chunked(decoder) => {
                let decoded = decoder.decode(buf)?;
                if decoded == Decoded::End {
                    *self = BodyDecoder::Done;
                }
                Ok(decoded)
            }
            BodyDecoder::UntilClose => {
                let len = buf.len();
                Ok(Decoded::Data(take_bytes(buf, len)))
            }
        }
    }

    /// The upstream closed the connection with `decode` wanting more: the end of a
    /// close-delimited body, anything else cut short.
    pub fn closed(&mut self) -> Result<(), BodyCut> {
        match self {
            BodyDecoder::UntilClose | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                Ok(())
            }
            _ => Err(BodyCut),
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// The exact length left, when the framing says it.
    pub fn exact_left(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            BodyDecoder::Done => Some(0),
            _ => None,
        }
    }
}

/// The upstream closed the connection before the end of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream closed the connection before the end of the body")]
pub struct BodyCut;

/// A parsed response head and what it says about the body and the connection.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields as sent, values sharing the read buffer's memory, less those that only
    /// describe this connection and are never relayed: `Keep-Alive`, `Transfer-Encoding`, and
    /// `Connection` unless it names other fields (which the relay must then remove).
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request once this body is read.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`. `Ok(None)` means more bytes are needed;
/// on success the head's bytes are removed from `buf`. Interim (1xx) responses are skipped; a
/// `101` is refused, as the request asked for no upgrade.
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, ProtocolError> {
    parse_head(buf, request_method, false)
}

/// [`parse_response_head`] for a request that asked to upgrade: a `101` is the answer (with no
/// body; the bytes after it are the new protocol's), and it must name the protocol switched
/// to in `Upgrade` (RFC 9110 §15.2.2).
pub fn parse_upgrade_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, ProtocolError> {
    parse_head(buf, request_method, true)
}

fn parse_head(
    buf: &mut BytesMut,
    request_method: &Method,
    upgrade: bool,
) -> Result<Option<ResponseHead>, ProtocolError> {
    loop {
        let Some((len, status, version, spans)) = parse_spans(buf)? else {
            return Ok(None);
        };
        if (100..200).contains(&status) && !(upgrade && status == 101) {
            if status == 101 {
                return Err(ProtocolError::UnexpectedUpgrade);
            }
            buf.advance(len);
            continue;
        }
        let head = buf.split_to(len).freeze();
        // Framing and persistence come from the raw fields, so the map is built once, without
        // the fields that are dropped anyway, and never searched.
        let mut facts = FramingFacts::default();
        for span in &spans {
            facts.note(
                span.field,
                &head[span.value[0] as usize..span.value[1] as usize],
            );
        }
        let status =
            StatusCode::from_u16(status).map_err(|_| ProtocolError::Head("status".into()))?;
        let (framing, ambiguous) = facts.body_framing(request_method, status)?;
        let keep_alive =
            !ambiguous && framing != BodyFraming::UntilClose && facts.persists(version);
        // A list or repeated field of one agreeing value is relayed as a single value.
        let relay_length = !ambiguous && facts.length_values == 1;
        let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_BY_GATEWAY);
        for span in &spans {
            let relayed = match span.field {
                Field::KeepAlive | Field::TransferEncoding => false,
                Field::Connection => facts.connection_names_others,
                // A relay must not pass both framings on; chunked is the one that was used.
                Field::ContentLength => relay_length,
                Field::Other => true,
            };
            if !relayed {
                continue;
            }
            let name = &head[span.name[0] as usize..span.name[1] as usize];
            let name = HeaderName::from_bytes(name).map_err(|_| ProtocolError::Header)?;
            let value = head.slice(span.value[0] as usize..span.value[1] as usize);
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| ProtocolError::Header)?;
            headers.append(name, value);
        }
        if let (false, false, Some(n)) = (ambiguous, relay_length, facts.length) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if !headers.contains_key(http::header::UPGRADE) {
                return Err(ProtocolError::Head("101 without Upgrade".into()));
            }
            // Whatever it said of framing, nothing after the head is a body.
            return Ok(Some(ResponseHead {
                status,
                version,
                headers,
                framing: BodyFraming::Empty,
                keep_alive: false,
            }));
        }
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Where a header's name and value sit in the buffer (start, end), and which field it is.
struct Span {
    name: [u32; 2],
    value: [u32; 2],
    field: Field,
}

/// The spans of a head's header fields, in order.
type Spans = Vec<Span>;

/// Runs httparse over `buf` and returns the head length, status, version and where each
/// header's name and value sit in `buf`.
fn parse_spans(buf: &BytesMut) -> Result<Option<(usize, u16, Version, Spans)>, ProtocolError> {
    // Uninitialised slots: httparse fills only as many as the head has.
    let mut fields = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProtocolError::Head(format!(
                "more than {MAX_HEADERS} header fields"
            )))
        }
        Err(e) => return Err(ProtocolError::Head(e.to_string())),
    };
    if len > MAX_HEAD_BYTES {
        return Err(ProtocolError::HeadTooLarge);
    }
    // Offsets fit in u32: the head is at most MAX_HEAD_BYTES long.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let spans = response
        .headers
        .iter()
        .map(|h| {
            let (name, value) = (offset(h.name.as_bytes()), offset(h.value));
            Span {
                name: [name, name + h.name.len() as u32],
                value: [value, value + h.value.len() as u32],
                field: Field::of(h.name.as_bytes()),
            }
        })
        .collect();
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = response.code.unwrap_or(0);
    Ok(Some((len, status, version, spans)))
}

/// The response fields that decide framing and persistence, recognised by name alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Field {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            14 if is("content-length") => Field::ContentLength,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::KeepAlive,
            _ => Field::Other,
        }
    }
}

/// What a response head's framing and connection fields say, gathered field by field.
#[derive(Default)]
struct FramingFacts {
    /// Some Content-Length field was present.
    has_length: bool,
    /// The one length every Content-Length value agrees on, once one was seen.
    length: Option<u64>,
    /// A Content-Length value was not a number or disagreed with another.
    bad_length: bool,
    /// Content-Length values seen, across fields and lists (saturating).
    length_values: u32,
    /// Some Transfer-Encoding field was present.
    has_coding: bool,
    /// Transfer codings named, across fields and lists (saturating).
    codings: u32,
    /// Some coding was `chunked`; with `codings == 1`, the only acceptable coding.
    chunked: bool,
    /// `Connection: close` was sent.
    close: bool,
    /// `Connection: keep-alive` was sent.
    keep_alive: bool,
    /// A Connection token names some other field, so Connection is relayed for its removal.
    connection_names_others: bool,
}

impl FramingFacts {
    fn note(&mut self, field: Field, value: &[u8]) {
        match field {
            Field::ContentLength => {
                self.has_length = true;
                for part in value.split(|&b| b == b',') {
                    self.length_values = self.length_values.saturating_add(1);
                    match parse_length(part.trim_ascii()) {
                        Some(n) if self.length.is_none_or(|seen| seen == n) => {
                            self.length = Some(n)
                        }
                        _ => self.bad_length = true,
                    }
                }
            }
            Field::TransferEncoding => {
                self.has_coding = true;
                // Empty list elements are allowed and mean nothing (RFC 9110 §5.6.1).
                for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if !coding.is_empty() {
                        self.codings = self.codings.saturating_add(1);
                        self.chunked |= coding.eq_ignore_ascii_case(b"chunked");
                    }
                }
            }
            Field::Connection => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if !token.is_empty() {
                        self.connection_names_others = true;
                    }
                }
            }
            Field::KeepAlive | Field::Other => {}
        }
    }

    /// The body framing, and whether the head was ambiguous (both framing fields present).
    fn body_framing(
        &self,
        method: &Method,
        status: StatusCode,
    ) -> Result<(BodyFraming, bool), ProtocolError> {
        // Checked whether or not a body follows: the value is relayed, and a relay must not
        // pass on a length that could be read two ways.
        if self.bad_length && !self.has_coding {
            return Err(ProtocolError::ContentLength);
        }
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            // A HEAD answer's codings describe a body that is not sent: nothing to decode.
            return Ok((BodyFraming::Empty, false));
        }
        if self.has_coding {
            if self.codings != 1 || !self.chunked {
                return Err(ProtocolError::TransferEncoding);
            }
            return Ok((BodyFraming::Chunked, self.has_length));
        }
        match self.length {
            Some(n) => Ok((BodyFraming::Length(n), false)),
            None => Ok((BodyFraming::UntilClose, false)),
        }
    }

    /// Whether the upstream offers the connection for another request. Never after an
    /// HTTP/1.0 answer with Transfer-Encoding (RFC 9112 §6.1: treated as faulty framing).
    fn persists(&self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.close,
            _ => self.keep_alive && !self.has_coding,
        }
    }
}

#[cfg(test)]
mod tests;
