//! HTTP/1.1 on the upstream side, as bytes: the request head we send, the response head we
//! read, how the response body is delimited, and chunked decoding. No I/O here; the pool's
//! exchange feeds it buffers.
//!
//! Framing follows RFC 9112 §6: HEAD, 1xx, 204 and 304 answers have no body; a
//! Transfer-Encoding ending in `chunked` wins over Content-Length (and the connection is then
//! not reused, as the message was ambiguous); conflicting Content-Lengths are refused; anything
//! else is read until the upstream closes.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Largest response head accepted from an upstream.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size, extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4 << 10;
/// Most trailer bytes accepted (and discarded) at the end of a chunked body.
const MAX_TRAILER_BYTES: usize = 16 << 10;

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
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// A malformed chunk size, chunk end or trailer section.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

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

/// Writes `METHOD target HTTP/1.1`, the headers and the framing header. The caller's
/// Content-Length and Transfer-Encoding are replaced by `framing`.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + fields + 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The chunk-size line that precedes `len` bytes of a chunked body.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:X}\r\n"))
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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
/// on success the head's bytes are removed from `buf`. Interim (1xx) responses are skipped.
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, ProtocolError> {
    loop {
        let Some((len, status, version, spans)) = parse_spans(buf)? else {
            return Ok(None);
        };
        if (100..200).contains(&status) {
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
        let mut headers = HeaderMap::with_capacity(spans.len());
        for span in &spans {
            let relayed = match span.field {
                Field::KeepAlive | Field::TransferEncoding => false,
                Field::Connection => facts.connection_names_others,
                // A relay must not pass both framings on; chunked is the one that was used.
                Field::ContentLength => !ambiguous,
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
    /// Some Transfer-Encoding field was present.
    has_coding: bool,
    /// The last Transfer-Encoding field ends in `chunked`.
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
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
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
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((BodyFraming::Empty, false));
        }
        if self.has_coding {
            let framing = if self.chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            };
            return Ok((framing, self.has_length));
        }
        if !self.has_length {
            return Ok((BodyFraming::UntilClose, false));
        }
        if self.bad_length {
            return Err(ProtocolError::ContentLength);
        }
        Ok((BodyFraming::Length(self.length.unwrap_or(0)), false))
    }

    /// Whether the upstream offers the connection for another request.
    fn persists(&self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.close,
            _ => self.keep_alive,
        }
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What the chunked decoder got out of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ran out mid-message; read more and call again.
    NeedMore,
    /// The last chunk and the trailers were read.
    End,
}

/// Decodes a chunked body incrementally, handing out data without copying it.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// Done.
    End,
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                ChunkState::End => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some((len, used)) =
                        find_line(buf, MAX_CHUNK_LINE, "chunk size line too long")?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..len])?;
                    buf.advance(used);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (left.min(buf.len() as u64)) as usize;
                    self.state = if n as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(take_bytes(buf, n)));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunked("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let room = MAX_TRAILER_BYTES - self.trailer_bytes;
                    let Some((len, used)) = find_line(buf, room, "trailers too large")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(used);
                    self.trailer_bytes += len + 2;
                    if len == 0 {
                        self.state = ChunkState::End;
                    }
                }
            }
        }
    }
}

/// Body bytes from the front of `buf`. Small pieces are copied so the read buffer's memory
/// stays with the connection and is reused for the next read instead of reallocated.
pub fn take_bytes(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= 4096 {
        let bytes = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        bytes
    } else {
        buf.split_to(n).freeze()
    }
}

/// Finds the CRLF-terminated line at the front of `buf`: its length without the CRLF and the
/// bytes it takes up with it, or `None` if none is complete yet. A bare LF ends a line too, as
/// lenient parsers accept. The line is read in place, so the read buffer is never split.
fn find_line(
    buf: &[u8],
    max: usize,
    too_long: &'static str,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let Some(at) = buf.iter().take(max + 2).position(|&b| b == b'\n') else {
        return if buf.len() > max {
            Err(ProtocolError::Chunked(too_long))
        } else {
            Ok(None)
        };
    };
    let len = if at > 0 && buf[at - 1] == b'\r' {
        at - 1
    } else {
        at
    };
    Ok(Some((len, at + 1)))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(ProtocolError::Chunked("invalid chunk size"));
    }
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(ProtocolError::Chunked("invalid chunk size"));
    }
    let size = digits.iter().fold(0u64, |n, d| {
        n * 16 + u64::from((*d as char).to_digit(16).unwrap_or(0))
    });
    Ok(size)
}

#[cfg(test)]
mod tests;
