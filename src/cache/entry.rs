//! A stored response and its binary encoding.
//!
//! One encoding serves every store: the memory store sizes entries by it and the Redis store
//! keeps it as one binary-safe value. The decoder treats its input as untrusted (a shared Redis
//! can hold anything, including values of an older gateway or of other software under the same
//! prefix): every length is checked against a cap before it is used, every header is validated
//! as it would be off the wire, and a checksum over the whole value refuses corrupted bytes, so
//! a value decodes into exactly the entry that was encoded or not at all.
//!
//! Layout, integers big-endian:
//!
//! ```text
//! magic "GWCE" | version u8 | status u16
//! flags u8 (bit 0: must-revalidate, bit 1: no-cache, bit 2: immutable, others zero)
//! request_time, response_time, date_value: u64 seconds + u32 nanoseconds since the Unix epoch
//! age_value, lifetime, stale_while_revalidate, stale_if_error: u64 seconds + u32 nanoseconds
//! header count u16 | per header: name length u16, name, value length u32, value
//! body length u64 | body
//! xxh3-64 of every byte before it
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::policy::freshness::Freshness;

/// The first bytes of every encoded entry.
pub const MAGIC: [u8; 4] = *b"GWCE";
/// The encoding version written; any other version decodes to [`DecodeError::UnknownFormat`].
pub const VERSION: u8 = 1;
/// Header fields one entry holds at most (the upstream parser accepts 128; headers refreshed by
/// a 304 and added by the gateway fit in the rest).
pub const MAX_HEADERS: usize = 256;
/// Bytes of one header name at most.
pub const MAX_NAME_LEN: usize = 1024;
/// Bytes of one header value at most (the upstream's whole head is at most 64 KiB).
pub const MAX_VALUE_LEN: usize = 64 << 10;
/// Bytes of all header names and values together at most.
pub const MAX_HEADER_BYTES: usize = 128 << 10;

const FIXED_LEN: usize = 4 + 1 + 2 + 1 + 7 * 12 + 2;
const PER_HEADER_LEN: usize = 2 + 4;
const BODY_LEN_LEN: usize = 8;
const CHECKSUM_LEN: usize = 8;
const FLAG_MUST_REVALIDATE: u8 = 1;
const FLAG_NO_CACHE: u8 = 2;
const FLAG_IMMUTABLE: u8 = 4;
const FLAGS: u8 = FLAG_MUST_REVALIDATE | FLAG_NO_CACHE | FLAG_IMMUTABLE;

/// How long past its freshness an entry with an `ETag` or `Last-Modified` is kept for a
/// conditional revalidation (when its stale windows are shorter).
pub const KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(600);

/// A stored response: what the upstream sent, less hop-by-hop headers, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Final status of the response.
    pub status: StatusCode,
    /// Response headers as received, without hop-by-hop ones (the response path removes those
    /// before the store sees them); `ETag`, `Last-Modified`, `Date` and `Age` are among them.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// What its freshness follows from (RFC 9111 4.2), worked out when it was received. Times
    /// before the Unix epoch are encoded as the epoch.
    pub freshness: Freshness,
}

/// An entry that cannot be encoded within the caps the decoder enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More header fields than [`MAX_HEADERS`].
    #[error("{0} header fields, more than {MAX_HEADERS}")]
    TooManyHeaders(usize),
    /// A header name over [`MAX_NAME_LEN`] or value over [`MAX_VALUE_LEN`] bytes.
    #[error("header {0} is longer than a cached entry allows")]
    HeaderTooLong(HeaderName),
    /// Header names and values over [`MAX_HEADER_BYTES`] together.
    #[error("headers take {0} bytes, more than {MAX_HEADER_BYTES}")]
    HeadersTooLarge(usize),
}

/// Why bytes did not decode into an entry; every kind is a miss for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an entry of this encoding: another magic, or a version this build does not read
    /// (a value written by another gateway version); not corruption.
    #[error("not a cached entry of encoding version {VERSION}")]
    UnknownFormat,
    /// The value ends before its declared contents.
    #[error("cached entry truncated")]
    Truncated,
    /// The checksum does not match the contents.
    #[error("cached entry checksum mismatch")]
    Checksum,
    /// A declared length is over its cap.
    #[error("cached entry {what} of {len} is over the cap of {cap}")]
    TooLarge {
        /// Which length.
        what: &'static str,
        /// The declared length.
        len: u64,
        /// Its cap.
        cap: u64,
    },
    /// A field holds a value the encoder never writes.
    #[error("cached entry has an invalid {0}")]
    Invalid(&'static str),
    /// Bytes follow the checksum-covered contents.
    #[error("cached entry has trailing bytes")]
    TrailingBytes,
}

impl DecodeError {
    /// Whether the value is simply not ours to read (another format or version), as opposed to
    /// a damaged value of ours.
    pub fn is_unknown_format(&self) -> bool {
        matches!(self, DecodeError::UnknownFormat)
    }
}

impl Entry {
    /// When the entry stops being of any use: past its freshness and the longer of its stale
    /// windows (at least [`KEEP_FOR_REVALIDATION`] when it has a validator). An upper bound: the entry's `Age` only makes it stale sooner. Saturates far in
    /// the future instead of overflowing.
    pub fn useless_after(&self) -> SystemTime {
        let f = &self.freshness;
        let mut stale = f.stale_while_revalidate.max(f.stale_if_error);
        if self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
        {
            // Stale but with a validator, it still saves the body's transfer: a revalidation
            // answered 304 serves it again.
            stale = stale.max(KEEP_FOR_REVALIDATION);
        }
        // About 2,000 years on: past any real lifetime, and representable on every platform.
        let far = UNIX_EPOCH + Duration::from_secs(1 << 36);
        f.lifetime
            .checked_add(stale)
            .and_then(|d| f.response_time.checked_add(d))
            .unwrap_or(far)
    }

    /// Bytes [`encode`](Self::encode) produces for this entry.
    pub fn encoded_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| PER_HEADER_LEN + n.as_str().len() + v.len())
            .sum();
        FIXED_LEN + headers + BODY_LEN_LEN + self.body.len() + CHECKSUM_LEN
    }

    /// The entry as one value, refused when its headers pass the decoder's caps. The body is
    /// not checked here: the store that takes it knows its `max_entry_size`.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let count = self.headers.len();
        if count > MAX_HEADERS {
            return Err(EncodeError::TooManyHeaders(count));
        }
        let mut header_bytes = 0usize;
        for (name, value) in &self.headers {
            if name.as_str().len() > MAX_NAME_LEN || value.len() > MAX_VALUE_LEN {
                return Err(EncodeError::HeaderTooLong(name.clone()));
            }
            header_bytes += name.as_str().len() + value.len();
        }
        if header_bytes > MAX_HEADER_BYTES {
            return Err(EncodeError::HeadersTooLarge(header_bytes));
        }
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u16(self.status.as_u16());
        let f = &self.freshness;
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        out.put_u8(
            flag(f.must_revalidate, FLAG_MUST_REVALIDATE)
                | flag(f.no_cache, FLAG_NO_CACHE)
                | flag(f.immutable, FLAG_IMMUTABLE),
        );
        for time in [f.request_time, f.response_time, f.date_value] {
            put_duration(
                &mut out,
                time.duration_since(UNIX_EPOCH).unwrap_or_default(),
            );
        }
        for d in [
            f.age_value,
            f.lifetime,
            f.stale_while_revalidate,
            f.stale_if_error,
        ] {
            put_duration(&mut out, d);
        }
        // Both fit: checked against MAX_HEADERS and MAX_NAME_LEN / MAX_VALUE_LEN above.
        out.put_u16(count as u16);
        for (name, value) in &self.headers {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        Ok(out.freeze())
    }

    /// Decodes a value [`encode`](Self::encode) wrote, with a body of at most `max_body` bytes
    /// (the configured `max_entry_size`). The body and header values share `value`'s memory.
    pub fn decode(value: &Bytes, max_body: usize) -> Result<Entry, DecodeError> {
        if value.len() < MAGIC.len() + 1 || value[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::UnknownFormat);
        }
        if value[MAGIC.len()] != VERSION {
            return Err(DecodeError::UnknownFormat);
        }
        let Some(covered_len) = value.len().checked_sub(CHECKSUM_LEN) else {
            return Err(DecodeError::Truncated);
        };
        if covered_len < FIXED_LEN {
            return Err(DecodeError::Truncated);
        }
        let (covered, sum) = value.split_at(covered_len);
        if xxhash_rust::xxh3::xxh3_64(covered) != u64::from_be_bytes(sum.try_into().unwrap()) {
            return Err(DecodeError::Checksum);
        }
        // The checksum matching does not make the contents trusted (anyone can compute it):
        // every field is still checked.
        let mut r = Reader {
            src: value,
            pos: MAGIC.len() + 1,
            end: covered_len,
        };
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Invalid("status"))?;
        if status.as_u16() < 200 {
            return Err(DecodeError::Invalid("status"));
        }
        let flags = r.u8()?;
        if flags & !FLAGS != 0 {
            return Err(DecodeError::Invalid("flags"));
        }
        let request_time = r.time()?;
        let response_time = r.time()?;
        let date_value = r.time()?;
        let age_value = r.duration()?;
        let lifetime = r.duration()?;
        let stale_while_revalidate = r.duration()?;
        let stale_if_error = r.duration()?;
        let count = usize::from(r.u16()?);
        check_cap("header count", count as u64, MAX_HEADERS)?;
        let mut headers = HeaderMap::with_capacity(count);
        let mut header_bytes = 0usize;
        for _ in 0..count {
            let name_len = usize::from(r.u16()?);
            check_cap("header name length", name_len as u64, MAX_NAME_LEN)?;
            let name = r.take(name_len)?;
            let parsed =
                HeaderName::from_bytes(&name).map_err(|_| DecodeError::Invalid("header name"))?;
            // The encoder writes names as `http` keeps them (lowercase): another spelling is
            // not ours.
            if parsed.as_str().as_bytes() != &name[..] {
                return Err(DecodeError::Invalid("header name"));
            }
            let value_len = r.u32()?;
            check_cap("header value length", u64::from(value_len), MAX_VALUE_LEN)?;
            let value = r.take(value_len as usize)?;
            header_bytes = header_bytes
                .checked_add(name_len + value.len())
                .ok_or(DecodeError::Invalid("header bytes"))?;
            check_cap("header bytes", header_bytes as u64, MAX_HEADER_BYTES)?;
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| DecodeError::Invalid("header value"))?;
            headers.append(parsed, value);
        }
        let body_len = r.u64()?;
        check_cap("body length", body_len, max_body)?;
        let body = r.take(usize::try_from(body_len).map_err(|_| DecodeError::Truncated)?)?;
        if r.pos != r.end {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Entry {
            status,
            headers,
            body,
            freshness: Freshness {
                request_time,
                response_time,
                date_value,
                age_value,
                lifetime,
                stale_while_revalidate,
                stale_if_error,
                must_revalidate: flags & FLAG_MUST_REVALIDATE != 0,
                no_cache: flags & FLAG_NO_CACHE != 0,
                immutable: flags & FLAG_IMMUTABLE != 0,
            },
        })
    }
}

fn put_duration(out: &mut BytesMut, d: Duration) {
    out.put_u64(d.as_secs());
    out.put_u32(d.subsec_nanos());
}

fn check_cap(what: &'static str, len: u64, cap: usize) -> Result<(), DecodeError> {
    let cap = cap as u64;
    if len > cap {
        return Err(DecodeError::TooLarge { what, len, cap });
    }
    Ok(())
}

/// Reads fields from `src[pos..end]`; every read checks the bytes left first.
struct Reader<'a> {
    src: &'a Bytes,
    pos: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let next = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        if next > self.end {
            return Err(DecodeError::Truncated);
        }
        let out = self.src.slice(self.pos..next);
        self.pos = next;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let next = self.pos.checked_add(N).ok_or(DecodeError::Truncated)?;
        if next > self.end {
            return Err(DecodeError::Truncated);
        }
        let out = self.src[self.pos..next].try_into().unwrap();
        self.pos = next;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn duration(&mut self) -> Result<Duration, DecodeError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        // Below one second, so Duration::new never carries (and never panics).
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid("duration"));
        }
        Ok(Duration::new(secs, nanos))
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let since = self.duration()?;
        UNIX_EPOCH
            .checked_add(since)
            .ok_or(DecodeError::Invalid("time"))
    }
}

#[cfg(test)]
mod tests;
