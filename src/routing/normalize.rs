//! Canonical form of request paths, computed before route matching.
//!
//! The normalised path is also what gets forwarded, so the path a policy
//! approved and the path the backend serves can never disagree. Anything a
//! backend might interpret differently from us (encoded separators, `..;`,
//! backslashes) is refused instead of guessed at. That includes what a backend
//! that decodes twice would see (`%252e` is `%2e` after one decode, `.` after
//! two) and what a lenient decoder would make of bytes that are not UTF-8
//! (`%c0%ae` is an overlong `.`).

use std::borrow::Cow;

/// Why a request path was refused; each maps to HTTP 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not begin with `/`.
    #[error("request path must start with '/'")]
    NotAbsolute,
    /// A `%` is not followed by two hexadecimal digits.
    #[error("request path contains a '%' not followed by two hex digits")]
    InvalidPercentEncoding,
    /// The path contains `%2F`.
    #[error("request path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// The path contains `%5C`.
    #[error("request path contains an encoded backslash (%5C)")]
    EncodedBackslash,
    /// The path contains a NUL byte, raw or as `%00`.
    #[error("request path contains a NUL byte")]
    Nul,
    /// The path contains a raw backslash.
    #[error("request path contains a backslash")]
    Backslash,
    /// A `..` segment would climb above the root.
    #[error("request path climbs above the root with '..'")]
    AboveRoot,
    /// A `.` or `..` segment carries `;` parameters.
    #[error("request path has a '.' or '..' segment with ';' parameters")]
    DotSegmentWithParameters,
    /// An encoded `%` followed by what decodes to a dot, slash or backslash (`%252e`).
    #[error("request path contains a double-encoded dot, slash or backslash (such as %252E)")]
    DoubleEncoded,
    /// Percent-encoded bytes that are not UTF-8 (overlong, truncated, stray continuation).
    #[error("request path contains percent-encoded bytes that are not valid UTF-8")]
    InvalidUtf8,
}

impl PathError {
    /// Short snake_case reason, suitable for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "not_absolute",
            PathError::InvalidPercentEncoding => "invalid_percent_encoding",
            PathError::EncodedSlash => "encoded_slash",
            PathError::EncodedBackslash => "encoded_backslash",
            PathError::Nul => "nul",
            PathError::Backslash => "backslash",
            PathError::AboveRoot => "above_root",
            PathError::DotSegmentWithParameters => "dot_segment_with_parameters",
            PathError::DoubleEncoded => "double_encoded",
            PathError::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// Normalises an origin-form request path (no query string).
///
/// When several problems occur, the leftmost one is reported.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Almost every path is already normal; prove that cheaply and remember
    // where the clean prefix ends so the slow path need not redo it.
    let mut seg_slash = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                if matches!(bytes.get(i + 1), Some(b'/' | b'.')) {
                    return normalize_from(raw, i);
                }
                seg_slash = i;
            }
            b'%' | b'\\' | 0 => return normalize_from(raw, seg_slash),
            _ => {}
        }
    }
    Ok(Cow::Borrowed(raw))
}

/// Slow path; `raw[..=slash]` is known to be normal and ends with `/`.
fn normalize_from(raw: &str, slash: usize) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Output {
        raw,
        owned: None,
        borrowed_len: slash + 1,
    };
    let mut pos = slash + 1;
    let mut utf8 = Utf8::default();
    loop {
        // Invariant: `out` ends with '/' whenever a segment starts.
        let seg_start = out.as_str().len();
        let mut run = pos;
        let mut i = pos;
        let mut encoded_percent = false;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'/' => break,
                b'\\' => return Err(PathError::Backslash),
                0 => return Err(PathError::Nul),
                b'%' => {
                    out.push(&raw[run..i]);
                    let v = push_escape(&mut out, bytes.get(i + 1..i + 3))?;
                    encoded_percent |= v == b'%';
                    utf8.feed(v)?;
                    i += 3;
                    run = i;
                    // The rest of a multi-byte character must be encoded too: raw text
                    // is whole characters, and a '/' or the end cuts the character short.
                    if utf8.pending() && bytes.get(i) != Some(&b'%') {
                        return Err(PathError::InvalidUtf8);
                    }
                }
                _ => i += 1,
            }
        }
        // `run` and `i` sit next to ASCII bytes or at the ends, so they are
        // always char boundaries.
        out.push(&raw[run..i]);
        if encoded_percent && hides_separator(&out.as_str()[seg_start..]) {
            return Err(PathError::DoubleEncoded);
        }
        let last = i >= bytes.len();
        match classify(&out.as_str()[seg_start..]) {
            // Merging slashes: the separator we already have is enough.
            Segment::Empty => {}
            Segment::Dot => out.truncate(seg_start),
            Segment::DotDot => {
                if seg_start <= 1 {
                    return Err(PathError::AboveRoot);
                }
                let parent = out.as_str()[..seg_start - 1]
                    .rfind('/')
                    .map_or(1, |j| j + 1);
                out.truncate(parent);
            }
            Segment::DotWithParameters => return Err(PathError::DotSegmentWithParameters),
            Segment::Normal => {
                if !last {
                    out.push("/");
                }
            }
        }
        if last {
            return Ok(out.finish());
        }
        pos = i + 1;
    }
}

/// Decodes or canonicalises the escape whose two digits (if present) follow a `%`;
/// returns the byte it encodes.
fn push_escape(out: &mut Output<'_>, digits: Option<&[u8]>) -> Result<u8, PathError> {
    let Some(&[hi, lo]) = digits else {
        return Err(PathError::InvalidPercentEncoding);
    };
    let (Some(h), Some(l)) = (char::from(hi).to_digit(16), char::from(lo).to_digit(16)) else {
        return Err(PathError::InvalidPercentEncoding);
    };
    match ((h << 4) | l) as u8 {
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::EncodedBackslash),
        0 => Err(PathError::Nul),
        // Unreserved characters mean the same encoded or not (RFC 3986
        // 6.2.2.2); decoding them lets `%2e%2e` be seen as the `..` it is.
        v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
            out.push_ascii(v);
            Ok(v)
        }
        v => {
            out.push_ascii(b'%');
            out.push_ascii(hi.to_ascii_uppercase());
            out.push_ascii(lo.to_ascii_uppercase());
            Ok(v)
        }
    }
}

/// Whether a normalised segment holds an encoded `%` that, decoded again (and again, past
/// any further `25`s), starts an escape of `.`, `/` or `\`. Hex digits are unreserved, so in
/// a normalised segment they are always plain text after the `%25`.
fn hides_separator(segment: &str) -> bool {
    segment.match_indices("%25").any(|(at, _)| {
        let mut rest = &segment.as_bytes()[at + 3..];
        while rest.starts_with(b"25") {
            rest = &rest[2..];
        }
        let next = rest.get(..2).map(<[u8]>::to_ascii_lowercase);
        matches!(next.as_deref(), Some(b"2e" | b"2f" | b"5c"))
    })
}

/// Checks that the bytes percent escapes decode to form UTF-8 (RFC 3629): no overlong forms,
/// surrogates, code points past U+10FFFF, stray continuation bytes or cut-short characters.
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected.
    need: u8,
    /// Range the next continuation byte must be in (narrower after some lead bytes).
    lo: u8,
    hi: u8,
}

impl Utf8 {
    fn pending(&self) -> bool {
        self.need > 0
    }

    fn feed(&mut self, b: u8) -> Result<(), PathError> {
        if self.need > 0 {
            if !(self.lo..=self.hi).contains(&b) {
                return Err(PathError::InvalidUtf8);
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xBF);
            return Ok(());
        }
        (self.need, self.lo, self.hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xE1..=0xEF => (2, 0x80, 0xBF),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(PathError::InvalidUtf8),
        };
        Ok(())
    }
}

enum Segment {
    Empty,
    Dot,
    DotDot,
    DotWithParameters,
    Normal,
}

fn classify(seg: &str) -> Segment {
    match seg {
        "" => Segment::Empty,
        "." => Segment::Dot,
        ".." => Segment::DotDot,
        // Some Java servers strip `;params` and would then see `..`, reaching
        // a path this gateway never matched a route or policy against.
        s if s.starts_with(".;") || s.starts_with("..;") => Segment::DotWithParameters,
        _ => Segment::Normal,
    }
}

/// Output buffer that stays a borrowed prefix of the input for as long as
/// the produced text matches it, so normal paths that still take the slow
/// path (e.g. `/.well-known/x`, `/a%3Ab`) cost no allocation.
struct Output<'a> {
    raw: &'a str,
    owned: Option<String>,
    borrowed_len: usize,
}

impl<'a> Output<'a> {
    fn as_str(&self) -> &str {
        match &self.owned {
            Some(s) => s,
            None => &self.raw[..self.borrowed_len],
        }
    }

    fn push(&mut self, s: &str) {
        if let Some(owned) = &mut self.owned {
            owned.push_str(s);
            return;
        }
        if self.raw[self.borrowed_len..].starts_with(s) {
            self.borrowed_len += s.len();
        } else {
            // Normalising never lengthens a path, so this never reallocates.
            let mut owned = String::with_capacity(self.raw.len());
            owned.push_str(&self.raw[..self.borrowed_len]);
            owned.push_str(s);
            self.owned = Some(owned);
        }
    }

    fn push_ascii(&mut self, b: u8) {
        let mut buf = [0; 4];
        self.push(char::from(b).encode_utf8(&mut buf));
    }

    fn truncate(&mut self, len: usize) {
        match &mut self.owned {
            Some(s) => s.truncate(len),
            None => self.borrowed_len = len,
        }
    }

    fn finish(self) -> Cow<'a, str> {
        match self.owned {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(&self.raw[..self.borrowed_len]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PathError::*;
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/api/v1/orders/7", Ok("/api/v1/orders/7")),
            ("", Err(NotAbsolute)),
            ("%2F", Err(NotAbsolute)),
            ("//", Ok("/")),
            ("//a///b", Ok("/a/b")),
            ("/a/", Ok("/a/")),
            ("/.", Ok("/")),
            ("/..", Err(AboveRoot)),
            ("/a/..", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/a/./b/", Ok("/a/b/")),
            ("/a//b/../c", Ok("/a/c")),
            ("/a/../b", Ok("/b")),
            ("/a/../..", Err(AboveRoot)),
            ("/a/b/../../c", Ok("/c")),
            ("/./../x", Err(AboveRoot)),
            ("/a/b/%2e%2e/%2E/c", Ok("/a/c")),
            ("/a/%2e%2E", Ok("/")),
            ("/%2e%2e/x", Err(AboveRoot)),
            ("/a/%2e", Ok("/a/")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/..b/.c", Ok("/a/..b/.c")),
            ("/%41%42", Ok("/AB")),
            ("/%7e", Ok("/~")),
            ("/%7E%2d%5f%30", Ok("/~-_0")),
            ("/%3a", Ok("/%3A")),
            ("/a%3Ab", Ok("/a%3Ab")),
            ("/%c3%a9", Ok("/%C3%A9")),
            ("/%252F", Err(DoubleEncoded)),
            ("/%252f", Err(DoubleEncoded)),
            ("/%252e", Err(DoubleEncoded)),
            ("/%252E%252E/x", Err(DoubleEncoded)),
            ("/a/%255c", Err(DoubleEncoded)),
            ("/a/%255C/b", Err(DoubleEncoded)),
            ("/%25%32%65", Err(DoubleEncoded)),
            ("/%25252e", Err(DoubleEncoded)),
            ("/%25%252e", Err(DoubleEncoded)),
            ("/x%252Fy", Err(DoubleEncoded)),
            ("/%25", Ok("/%25")),
            ("/%2541", Ok("/%2541")),
            ("/%25252", Ok("/%25252")),
            ("/%25/2e", Ok("/%25/2e")),
            ("/100%25off", Ok("/100%25off")),
            ("/%c0%ae", Err(InvalidUtf8)),
            ("/%C0%AE%C0%AE/x", Err(InvalidUtf8)),
            ("/%c1%9c", Err(InvalidUtf8)),
            ("/%e0%80%ae", Err(InvalidUtf8)),
            ("/%f0%80%80%ae", Err(InvalidUtf8)),
            ("/%ed%a0%80", Err(InvalidUtf8)),
            ("/%f4%90%80%80", Err(InvalidUtf8)),
            ("/%f5%80%80%80", Err(InvalidUtf8)),
            ("/%80", Err(InvalidUtf8)),
            ("/a%bf", Err(InvalidUtf8)),
            ("/%c3%a9%a9", Err(InvalidUtf8)),
            ("/%c3", Err(InvalidUtf8)),
            ("/%c3/x", Err(InvalidUtf8)),
            ("/%e2%82", Err(InvalidUtf8)),
            ("/%e2%82x", Err(InvalidUtf8)),
            ("/%c3%41", Err(InvalidUtf8)),
            ("/%c3é", Err(InvalidUtf8)),
            ("/é%a9", Err(InvalidUtf8)),
            ("/%ff", Err(InvalidUtf8)),
            ("/%e2%82%ac", Ok("/%E2%82%AC")),
            ("/%f0%9f%98%80", Ok("/%F0%9F%98%80")),
            ("/%f4%8f%bf%bf", Ok("/%F4%8F%BF%BF")),
            ("/%ed%9f%bf", Ok("/%ED%9F%BF")),
            ("/%zz", Err(InvalidPercentEncoding)),
            ("/%4", Err(InvalidPercentEncoding)),
            ("/a%", Err(InvalidPercentEncoding)),
            ("/%+1", Err(InvalidPercentEncoding)),
            ("/a%2Fb", Err(EncodedSlash)),
            ("/a%2fb", Err(EncodedSlash)),
            ("/%5c", Err(EncodedBackslash)),
            ("/%00", Err(Nul)),
            ("/a\0b", Err(Nul)),
            ("/a\\b", Err(Backslash)),
            ("/..;/x", Err(DotSegmentWithParameters)),
            ("/.;foo/", Err(DotSegmentWithParameters)),
            ("/a/%2e%2e;x/b", Err(DotSegmentWithParameters)),
            ("/...;/x", Ok("/...;/x")),
            ("/a;b=c/d", Ok("/a;b=c/d")),
            ("/a:b@c+d", Ok("/a:b@c+d")),
            ("/café", Ok("/café")),
            ("/café/../x%c3%a9", Ok("/x%C3%A9")),
            ("/café/../x%c3", Err(InvalidUtf8)),
            ("/../%2F", Err(AboveRoot)),
        ];
        assert!(cases.len() >= 40);
        for (input, expected) in cases {
            let got = normalize_path(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "input {input:?}");
        }
    }

    #[test]
    fn borrows_when_already_normal() {
        assert!(matches!(
            normalize_path("/api/v1/x").unwrap(),
            Cow::Borrowed(_)
        ));
        for path in ["/.well-known/x", "/a%3Ab", "/a/.../b", "/a/b/.."] {
            let borrowed = matches!(normalize_path(path), Ok(Cow::Borrowed(_)));
            assert!(borrowed, "{path}");
        }
        assert!(matches!(normalize_path("/%41").unwrap(), Cow::Owned(_)));
        assert_eq!(EncodedSlash.code(), "encoded_slash");
    }

    /// Deliberately naive model: decode everything, then split and resolve.
    fn model(raw: &str) -> Option<String> {
        let b = raw.as_bytes();
        if b.first() != Some(&b'/') || raw.contains(['\\', '\0']) {
            return None;
        }
        let (mut decoded, mut i) = (String::new(), 0);
        // Every byte once decoded, to judge what a decoding backend would see.
        let mut all = Vec::new();
        while i < b.len() {
            if b[i] != b'%' {
                decoded.push(char::from(b[i]));
                all.push(b[i]);
                i += 1;
                continue;
            }
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
            let v = u8::from_str_radix(hex?, 16).ok()?;
            all.push(v);
            if matches!(v, b'/' | b'\\' | 0) {
                return None;
            } else if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                decoded.push(char::from(v));
            } else {
                decoded.push_str(&format!("%{}", hex?.to_ascii_uppercase()));
            }
            i += 3;
        }
        std::str::from_utf8(&all).ok()?;
        if decodes_to_escaped_separator(all) {
            return None;
        }
        let segs: Vec<&str> = decoded[1..].split('/').collect();
        let mut stack = Vec::new();
        for (k, seg) in segs.iter().enumerate() {
            match *seg {
                "" | "." => {}
                ".." => drop(stack.pop()?),
                s if s.starts_with(".;") || s.starts_with("..;") => return None,
                s => {
                    stack.push(s);
                    continue;
                }
            }
            // A trailing empty, `.` or `..` segment leaves a trailing slash.
            if k + 1 == segs.len() {
                stack.push("");
            }
        }
        Some(format!("/{}", stack.join("/")))
    }

    /// Decodes every valid escape once, leaving anything else as it is (a lenient backend).
    fn decode_once(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) if b[i] == b'%' && hex.is_some_and(|h| !h.starts_with('+')) => {
                    out.push(v);
                    i += 3;
                }
                _ => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// Whether decoding `b` again, as often as it changes, ever meets an escaped dot, slash or
    /// backslash.
    fn decodes_to_escaped_separator(mut b: Vec<u8>) -> bool {
        loop {
            let lower = b.to_ascii_lowercase();
            if [b"%2e", b"%2f", b"%5c"]
                .iter()
                .any(|bad| lower.windows(3).any(|w| w == *bad))
            {
                return true;
            }
            let next = decode_once(&b);
            if next == b {
                return false;
            }
            b = next;
        }
    }

    #[test]
    fn what_a_twice_decoding_or_lenient_backend_sees_is_never_hidden() {
        // Pieces that build double (and triple) encodings and broken UTF-8 of every kind.
        const PIECES: [&str; 26] = [
            "/", ".", "a", "%25", "%2525", "25", "2e", "2E", "2f", "5c", "5C", "%2e", "%2E", "%32",
            "%35", "%65", "%63", "%c0", "%ae", "%e0", "%80", "%c3", "%a9", "%e2", "%82", "%ac",
        ];
        let mut rng = fastrand::Rng::with_seed(0x9a7b_0e5e);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..50_000 {
            let mut input = String::from("/");
            for _ in 0..rng.usize(1..10) {
                input.push_str(PIECES[rng.usize(..PIECES.len())]);
            }
            let Ok(out) = normalize_path(&input) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let once = decode_once(out.as_bytes());
            assert!(
                std::str::from_utf8(&once).is_ok(),
                "{input:?} -> {out:?} decodes to bytes that are not UTF-8"
            );
            assert!(
                !decodes_to_escaped_separator(out.as_bytes().to_vec()),
                "{input:?} -> {out:?} hides a dot, slash or backslash"
            );
            // What one decode of the output shows has the same segments as the output.
            assert_eq!(
                once.iter().filter(|&&c| c == b'/').count(),
                out.matches('/').count(),
                "{input:?} -> {out:?}"
            );
        }
        assert!(
            accepted > 5_000 && refused > 5_000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn properties_on_pseudo_random_paths() {
        const ALPHABET: &[u8] = b"/.%2eEfF5cab;~041";
        const BANNED: [&str; 10] = [
            "//", "/./", "/../", "%2F", "%2f", "%5C", "%5c", "%00", "%2E", "%2e",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut input = String::from("/");
            for _ in 0..=next() % 16 {
                input.push(char::from(ALPHABET[next() % ALPHABET.len()]));
            }
            let result = normalize_path(&input);
            assert_eq!(
                result.as_deref().ok(),
                model(&input).as_deref(),
                "{input:?}"
            );
            let Ok(out) = result else { continue };
            accepted += 1;
            let again = normalize_path(&out);
            assert!(matches!(again, Ok(Cow::Borrowed(s)) if s == out), "{out:?}");
            assert!(out.starts_with('/'), "{out:?}");
            for bad in BANNED {
                assert!(!out.contains(bad), "{input:?} -> {out:?} contains {bad}");
            }
            assert!(!out.ends_with("/.") && !out.ends_with("/.."), "{out:?}");
            for (i, _) in out.match_indices('%') {
                let hex = &out.as_bytes()[i + 1..i + 3];
                assert!(!hex.iter().any(u8::is_ascii_lowercase), "{out:?}");
            }
        }
        assert!(accepted > 1000, "only {accepted} accepted");
    }
}
