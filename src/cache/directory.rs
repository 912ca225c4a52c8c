//! What a URL key holds when its responses come in variants: a generation and the request
//! headers the responses vary on (see [`super::key`]).
//!
//! Encoded as `magic "GWCD" | version u8 | generation u64 | count u8 | per name: length u8,
//! name`, big-endian; the decoder is strict (every length checked, names validated, nothing
//! left over), since a shared Redis can hold anything under the prefix.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderName;

/// The first bytes of an encoded directory.
pub const MAGIC: [u8; 4] = *b"GWCD";
/// The encoding version written.
pub const VERSION: u8 = 1;
/// Header names one directory names at most; a response varying on more is not stored.
pub const MAX_NAMES: usize = 16;
/// Bytes of one name at most.
pub const MAX_NAME_LEN: usize = 64;

/// The variants of one URL: which generation they belong to and what they vary on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// Set when the directory is made; variants of another generation are unreachable.
    pub generation: u64,
    /// The request headers the stored responses' `Vary` names, lower-cased.
    pub vary: Box<[HeaderName]>,
}

/// Why bytes are not a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Not a directory of this version.
    #[error("not a cache directory of version {VERSION}")]
    UnknownFormat,
    /// A directory, but broken.
    #[error("malformed cache directory: {0}")]
    Malformed(&'static str),
}

impl Directory {
    /// A directory for responses varying on `vary`, with a fresh random generation; `None`
    /// when `vary` names more than [`MAX_NAMES`] or a name longer than [`MAX_NAME_LEN`].
    pub fn new(vary: &[HeaderName]) -> Option<Directory> {
        let fits = vary.len() <= MAX_NAMES && vary.iter().all(|n| n.as_str().len() <= MAX_NAME_LEN);
        fits.then(|| Directory {
            generation: fastrand::u64(..),
            vary: vary.into(),
        })
    }

    /// Whether `bytes` start like a directory (rather than a stored response).
    pub fn is_directory(bytes: &[u8]) -> bool {
        bytes.starts_with(&MAGIC)
    }

    /// The encoded form.
    pub fn encode(&self) -> Bytes {
        let names: usize = self.vary.iter().map(|n| 1 + n.as_str().len()).sum();
        let mut out = BytesMut::with_capacity(4 + 1 + 8 + 1 + names);
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u64(self.generation);
        // Bounded by MAX_NAMES and MAX_NAME_LEN when made by `new`.
        out.put_u8(self.vary.len().min(MAX_NAMES) as u8);
        for name in self.vary.iter().take(MAX_NAMES) {
            let name = name.as_str().as_bytes();
            let name = &name[..name.len().min(MAX_NAME_LEN)];
            out.put_u8(name.len() as u8);
            out.put_slice(name);
        }
        out.freeze()
    }

    /// Reads an encoded directory, refusing anything else.
    pub fn decode(bytes: &[u8]) -> Result<Directory, DirectoryError> {
        let rest = bytes
            .strip_prefix(&MAGIC)
            .ok_or(DirectoryError::UnknownFormat)?;
        let (&version, rest) = rest.split_first().ok_or(DirectoryError::UnknownFormat)?;
        if version != VERSION {
            return Err(DirectoryError::UnknownFormat);
        }
        let (generation, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(DirectoryError::Malformed("truncated generation"))?;
        let (&count, mut rest) = rest
            .split_first()
            .ok_or(DirectoryError::Malformed("truncated name count"))?;
        if usize::from(count) > MAX_NAMES {
            return Err(DirectoryError::Malformed("too many names"));
        }
        let mut vary = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (&len, after) = rest
                .split_first()
                .ok_or(DirectoryError::Malformed("truncated name length"))?;
            let len = usize::from(len);
            if len == 0 || len > MAX_NAME_LEN || after.len() < len {
                return Err(DirectoryError::Malformed("bad name length"));
            }
            let (raw, after) = after.split_at(len);
            let name = HeaderName::from_bytes(raw)
                .map_err(|_| DirectoryError::Malformed("invalid header name"))?;
            // HeaderName lower-cases; a name written in capitals was not written by us.
            if name.as_str().as_bytes() != raw {
                return Err(DirectoryError::Malformed("name not lower-case"));
            }
            vary.push(name);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(DirectoryError::Malformed("trailing bytes"));
        }
        Ok(Directory {
            generation: u64::from_be_bytes(*generation),
            vary: vary.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&'static str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    #[test]
    fn round_trips_and_generations_differ() {
        let a = Directory::new(&names(&["accept-language", "x-tenant"])).unwrap();
        let b = Directory::new(&names(&["accept-language", "x-tenant"])).unwrap();
        assert_ne!(a.generation, b.generation);
        let encoded = a.encode();
        assert!(Directory::is_directory(&encoded));
        assert_eq!(Directory::decode(&encoded), Ok(a));
        let empty = Directory::new(&[]).unwrap();
        assert_eq!(Directory::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn bounds_hold_at_their_limits() {
        let many: Vec<HeaderName> = (0..=MAX_NAMES)
            .map(|i| HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap())
            .collect();
        assert!(Directory::new(&many[..MAX_NAMES - 1]).is_some());
        assert!(Directory::new(&many[..MAX_NAMES]).is_some());
        assert!(Directory::new(&many[..=MAX_NAMES]).is_none());
        let name = |len: usize| HeaderName::from_bytes("a".repeat(len).as_bytes()).unwrap();
        for (len, ok) in [
            (MAX_NAME_LEN - 1, true),
            (MAX_NAME_LEN, true),
            (MAX_NAME_LEN + 1, false),
        ] {
            let made = Directory::new(&[name(len)]);
            assert_eq!(made.is_some(), ok, "{len}");
            if let Some(d) = made {
                assert_eq!(Directory::decode(&d.encode()), Ok(d));
            }
        }
        // A count over the bound is refused before any name is read.
        let mut forged = MAGIC.to_vec();
        forged.push(VERSION);
        forged.extend_from_slice(&[0; 8]);
        forged.push(MAX_NAMES as u8 + 1);
        assert_eq!(
            Directory::decode(&forged),
            Err(DirectoryError::Malformed("too many names"))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let d = Directory::new(&names(&["accept-language"])).unwrap();
        let encoded = d.encode().to_vec();
        assert_eq!(
            Directory::decode(b"GWCE\x01"),
            Err(DirectoryError::UnknownFormat)
        );
        let mut v2 = encoded.clone();
        v2[4] = 2;
        assert_eq!(Directory::decode(&v2), Err(DirectoryError::UnknownFormat));
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(Directory::decode(&trailing).is_err());
        let mut upper = encoded.clone();
        let at = upper.len() - 1;
        upper[at] = b'E';
        assert!(Directory::decode(&upper).is_err());
        for cut in 0..encoded.len() {
            assert!(Directory::decode(&encoded[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_decode_only_to_what_encodes_back() {
        let mut rng = fastrand::Rng::with_seed(15);
        let valid = Directory::new(&names(&["accept-language", "x-a"]))
            .unwrap()
            .encode();
        for _ in 0..50_000 {
            let mut bytes = if rng.bool() {
                valid.to_vec()
            } else {
                let len = rng.usize(0..40);
                let mut v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                if rng.bool() && v.len() >= 5 {
                    v[..4].copy_from_slice(&MAGIC);
                    v[4] = VERSION;
                }
                v
            };
            if !bytes.is_empty() {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            if let Ok(d) = Directory::decode(&bytes) {
                assert_eq!(&d.encode()[..], &bytes[..]);
            }
        }
    }
}
