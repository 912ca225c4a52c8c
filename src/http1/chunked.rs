//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally from a read buffer.
//!
//! Two dialects: [`ChunkedDecoder::strict`] for bodies from clients, where any deviation from the
//! grammar is refused (a body two parsers could read differently is how requests are smuggled),
//! and [`ChunkedDecoder::lenient`] for upstream responses, which also accepts a bare LF as a
//! line end and whitespace after the chunk size, as deployed servers send.

use bytes::{Buf, Bytes, BytesMut};

use super::is_tchar;

/// Longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4 << 10;
/// Most trailer-section bytes accepted (and discarded) after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 << 10;
/// Most hex digits in a chunk size: 16 fill a u64; more cannot be a size anyone sends.
const MAX_SIZE_DIGITS: usize = 16;

/// A chunked body broke the grammar or a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkedError(pub &'static str);

/// What the decoder got out of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ran out mid-message; read more and call again.
    NeedMore,
    /// The last chunk and the trailers were read.
    End,
}

/// Decodes a chunked body incrementally, handing out data without copying large pieces.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
    strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
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
    /// Exactly the RFC grammar: CRLF line ends, nothing but hex digits before `;` or CRLF.
    pub fn strict() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailer_bytes: 0,
            strict: true,
        }
    }

    /// Also accepts bare LF line ends and whitespace after the size.
    pub fn lenient() -> Self {
        ChunkedDecoder {
            strict: false,
            ..ChunkedDecoder::strict()
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::End
    }

    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                ChunkState::End => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some((len, used)) = self.find_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = self.parse_size(&buf[..len])?;
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
                    let n = left.min(buf.len() as u64) as usize;
                    self.state = if n as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(take_bytes(buf, n)));
                }
                ChunkState::DataEnd => {
                    let end: &[u8] = match buf.first() {
                        None => return Ok(Decoded::NeedMore),
                        Some(b'\n') if !self.strict => b"\n",
                        Some(_) => b"\r\n",
                    };
                    if buf.len() < end.len() {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..end.len()] != end {
                        return Err(ChunkedError("chunk data not followed by CRLF"));
                    }
                    buf.advance(end.len());
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // The whole section, its closing empty line included, must fit the limit.
                    let room = MAX_TRAILER_BYTES.saturating_sub(self.trailer_bytes);
                    let Some((len, used)) = self.find_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if self.strict && len > 0 {
                        check_trailer_field(&buf[..len])?;
                    }
                    buf.advance(used);
                    self.trailer_bytes += used;
                    if len == 0 {
                        self.state = ChunkState::End;
                    }
                }
            }
        }
    }

    /// The line at the front of `buf`, at most `max` bytes with its line end: its length without
    /// the line end and the bytes it takes up with it, or `None` while no line end has arrived.
    fn find_line(&self, buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, ChunkedError> {
        let Some(at) = buf.iter().take(max).position(|&b| b == b'\n') else {
            return if buf.len() >= max {
                Err(ChunkedError("line too long"))
            } else {
                Ok(None)
            };
        };
        let line = &buf[..at];
        let len = match line.last() {
            Some(b'\r') => at - 1,
            _ if self.strict => return Err(ChunkedError("line not ended by CRLF")),
            _ => at,
        };
        if self.strict && line[..len].contains(&b'\r') {
            return Err(ChunkedError("bare CR"));
        }
        Ok(Some((len, at + 1)))
    }

    fn parse_size(&self, line: &[u8]) -> Result<u64, ChunkedError> {
        let digits_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let (digits, rest) = line.split_at(digits_end);
        if digits.is_empty() || digits.len() > MAX_SIZE_DIGITS {
            return Err(ChunkedError("invalid chunk size"));
        }
        let size = digits.iter().try_fold(0u64, |n, d| {
            let digit = (*d as char).to_digit(16)?;
            n.checked_mul(16)?.checked_add(u64::from(digit))
        });
        let size = size.ok_or(ChunkedError("chunk size overflows"))?;
        if self.strict {
            check_extensions(rest)?;
        } else {
            let rest = rest.trim_ascii_start();
            if !rest.is_empty() && rest[0] != b';' {
                return Err(ChunkedError("invalid chunk size"));
            }
        }
        Ok(size)
    }
}

/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, value a token or a quoted string: the
/// extensions are ignored, but only once they are known to be well formed. Whitespace is
/// accepted only where the grammar has it (never at the end of the line).
fn check_extensions(line: &[u8]) -> Result<(), ChunkedError> {
    const BAD: ChunkedError = ChunkedError("invalid chunk extension");
    let ws = |at: usize| -> usize {
        line[at..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count()
    };
    let mut at = 0;
    while at < line.len() {
        at += ws(at);
        if line.get(at) != Some(&b';') {
            return Err(BAD);
        }
        at += 1;
        at += ws(at);
        let name = token_len(&line[at..]);
        if name == 0 {
            return Err(BAD);
        }
        at += name;
        let equals = at + ws(at);
        if line.get(equals) == Some(&b'=') {
            at = equals + 1;
            at += ws(at);
            let value = match line.get(at) {
                Some(b'"') => quoted_len(&line[at..]).ok_or(BAD)?,
                _ => token_len(&line[at..]),
            };
            if value == 0 {
                return Err(BAD);
            }
            at += value;
        }
    }
    Ok(())
}

/// A trailer line is a field line: a token, a colon, and a value of visible characters.
fn check_trailer_field(line: &[u8]) -> Result<(), ChunkedError> {
    let name = token_len(line);
    let ok = name > 0
        && line.get(name) == Some(&b':')
        && line[name + 1..]
            .iter()
            .all(|&b| b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f));
    if ok {
        Ok(())
    } else {
        Err(ChunkedError("invalid trailer field"))
    }
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_tchar(b)).count()
}

/// Length of the quoted string at the front of `s` (quotes included), if it is well formed.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\'
                if i + 1 < s.len()
                    && s[i + 1] != 0x7f
                    && (s[i + 1] >= 0x20 || s[i + 1] == b'\t') =>
            {
                i += 2
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
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

/// The chunk-size line that precedes `len` bytes of a chunked body.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:X}\r\n"))
}

#[cfg(test)]
mod tests;
