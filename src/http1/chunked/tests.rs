use super::*;

/// Feeds `wire` to `decoder` in pieces of `step` bytes; the body and whatever followed it.
fn dechunk_with(
    mut decoder: ChunkedDecoder,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok((body, buf.to_vec())),
            Decoded::NeedMore if fed < wire.len() => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
            Decoded::NeedMore => return Err(ChunkedError("ran out of input")),
        }
    }
}

fn strict(wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
    dechunk_with(ChunkedDecoder::strict(), wire, 64)
}

fn lenient(wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
    dechunk_with(ChunkedDecoder::lenient(), wire, 64)
}

#[test]
fn bodies_decode_whatever_the_read_sizes() {
    let wire =
        b"5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA;a=b;c\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
    for step in 1..wire.len() {
        for decoder in [ChunkedDecoder::strict(), ChunkedDecoder::lenient()] {
            let (body, rest) = dechunk_with(decoder, wire, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert!(
                b"NEXT".starts_with(&rest),
                "the next message is left alone (step {step})"
            );
        }
    }
}

#[test]
fn lenient_accepts_bare_lf_and_whitespace_after_the_size() {
    let (body, rest) = lenient(b"3\nabc\r\n0\n\n").unwrap();
    assert_eq!((body.as_slice(), rest.as_slice()), (&b"abc"[..], &b""[..]));
    assert_eq!(lenient(b"3 \r\nabc\n0\r\n\r\n").unwrap().0, b"abc");
    for wire in [
        &b"3\nabc\r\n0\r\n\r\n"[..],
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\n0\r\n\r\n",
    ] {
        assert!(strict(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn malformed_bodies_are_refused_by_both() {
    let bad: [&[u8]; 8] = [
        b"g\r\nabc\r\n0\r\n\r\n",
        b"\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"3 x\r\nabc\r\n0\r\n\r\n",
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"+3\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"10000000000000000\r\n",
    ];
    for wire in bad {
        for result in [strict(wire), lenient(wire)] {
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }
}

#[test]
fn strict_refuses_what_the_grammar_does_not_allow() {
    let bad: [&[u8]; 13] = [
        b" 3\r\nabc\r\n0\r\n\r\n",         // leading whitespace
        b"\t3\r\nabc\r\n0\r\n\r\n",        // leading tab
        b"3\0\r\nabc\r\n0\r\n\r\n",        // NUL in the size line
        b"3\rx\r\nabc\r\n0\r\n\r\n",       // bare CR in the size line
        b"3;\r\nabc\r\n0\r\n\r\n",         // extension without a name
        b"3;a=\r\nabc\r\n0\r\n\r\n",       // extension without a value
        b"3;a \r\nabc\r\n0\r\n\r\n",       // whitespace at the end of the line
        b"3;a=\"x\r\nabc\r\n0\r\n\r\n",    // unterminated quoted string
        b"3;a=b c\r\nabc\r\n0\r\n\r\n",    // two values
        b"3;a\x01\r\nabc\r\n0\r\n\r\n",    // control character
        b"3\r\nabc\r\r\n0\r\n\r\n",        // data longer than its size
        b"3\r\nabc0\r\n\r\n",              // no CRLF after the data
        b"3\r\nabc\r\n0\r\nX-A 1\r\n\r\n", // trailer without a colon
    ];
    for wire in bad {
        assert!(strict(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
    }
    assert_eq!(
        strict(b"3\r\nabc\r\n"),
        Err(ChunkedError("ran out of input")),
        "no last chunk: the body never ends"
    );
    assert_eq!(
        strict(b"3 ;a = b\r\nabc\r\n0\r\n\r\n").unwrap().0,
        b"abc",
        "BWS"
    );
    assert_eq!(
        strict(b"3;a=\"q\\\"x\"\r\nabc\r\n0\r\n\r\n").unwrap().0,
        b"abc",
        "quoted-pair in a quoted extension value"
    );
}

#[test]
fn sizes_up_to_sixteen_hex_digits_and_no_overflow() {
    // Sixteen digits fit in a u64; the decoder then waits for that much data.
    let mut decoder = ChunkedDecoder::strict();
    let mut buf = BytesMut::from(&b"FFFFFFFFFFFFFFFF\r\nab"[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"ab"))
    );
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::NeedMore);
    assert!(strict(b"00000000000000000003\r\nabc\r\n0\r\n\r\n").is_err());
}

#[test]
fn size_line_limit() {
    // The line with its CRLF: MAX_CHUNK_LINE - 1 and MAX_CHUNK_LINE fit, one more does not.
    for (line_len, ok) in [
        (MAX_CHUNK_LINE - 1, true),
        (MAX_CHUNK_LINE, true),
        (MAX_CHUNK_LINE + 1, false),
    ] {
        let ext = "e".repeat(line_len - "1;\r\n".len());
        let wire = format!("1;{ext}\r\nx\r\n0\r\n\r\n");
        for decoder in [ChunkedDecoder::strict(), ChunkedDecoder::lenient()] {
            let result = dechunk_with(decoder, wire.as_bytes(), 1 << 20);
            assert_eq!(result.is_ok(), ok, "line of {line_len} bytes");
        }
    }
}

#[test]
fn trailer_limit_holds_at_every_boundary() {
    // Trailer section (fields and the closing CRLF) of exactly `total` bytes.
    let section = |total: usize| {
        let field = "X-T: ".to_string() + &"v".repeat(total - "X-T: \r\n\r\n".len());
        format!("0\r\n{field}\r\n\r\nNEXT")
    };
    for (total, ok) in [
        (MAX_TRAILER_BYTES - 1, true),
        (MAX_TRAILER_BYTES, true),
        (MAX_TRAILER_BYTES + 1, false),
    ] {
        for step in [1 << 20, 7] {
            for decoder in [ChunkedDecoder::strict(), ChunkedDecoder::lenient()] {
                let result = dechunk_with(decoder, section(total).as_bytes(), step);
                assert_eq!(result.is_ok(), ok, "trailers of {total} bytes, step {step}");
            }
        }
    }
    // Many small fields count as much as one large one.
    let many = format!(
        "0\r\n{}\r\n",
        "X-T: v\r\n".repeat(MAX_TRAILER_BYTES / 8 + 1)
    );
    assert!(strict(many.as_bytes()).is_err());
    // A trailer that never ends is refused once it passes the limit, not buffered forever.
    let endless = format!("0\r\nX-T: {}", "v".repeat(MAX_TRAILER_BYTES * 4));
    assert_eq!(
        lenient(endless.as_bytes()),
        Err(ChunkedError("line too long"))
    );
}

/// Encodes `body` in chunks of the given sizes (cycled), with random extensions.
fn encode(body: &[u8], sizes: &[usize], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let n = sizes[i % sizes.len()].min(body.len() - at).max(1);
        i += 1;
        let size = if rng.bool() {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        wire.extend_from_slice(size.as_bytes());
        if rng.u8(..4) == 0 {
            wire.extend_from_slice(b";name=\"v a\";flag");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&body[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    wire.extend_from_slice(b"0\r\n");
    if rng.bool() {
        wire.extend_from_slice(b"X-Sum: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

#[test]
fn random_bodies_round_trip_at_random_read_sizes() {
    let mut rng = fastrand::Rng::with_seed(0x6a7e_4005e);
    for _ in 0..300 {
        let body: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect();
        let sizes: Vec<usize> = (0..rng.usize(1..5)).map(|_| rng.usize(1..700)).collect();
        let wire = encode(&body, &sizes, &mut rng);
        let step = rng.usize(1..200);
        let (decoded, rest) = dechunk_with(ChunkedDecoder::strict(), &wire, step).unwrap();
        assert_eq!(decoded, body);
        assert!(rest.is_empty());
    }
}

#[test]
fn mutated_bodies_never_panic_and_never_yield_more_than_was_sent() {
    let mut rng = fastrand::Rng::with_seed(0xc4a2_71ed);
    let alphabet = b"0123456789abcdefABCDEF;=\" \t\r\n\0xX-+";
    for _ in 0..3000 {
        let body: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        let mut wire = encode(&body, &[rng.usize(1..50)], &mut rng);
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..wire.len());
            match rng.u8(..3) {
                0 => wire[at] = alphabet[rng.usize(..alphabet.len())],
                1 => {
                    wire.remove(at);
                }
                _ => wire.insert(at, alphabet[rng.usize(..alphabet.len())]),
            }
        }
        for decoder in [ChunkedDecoder::strict(), ChunkedDecoder::lenient()] {
            if let Ok((decoded, _)) = dechunk_with(decoder, &wire, rng.usize(1..64)) {
                assert!(decoded.len() <= wire.len());
            }
        }
    }
}

#[test]
fn large_pieces_are_handed_out_without_copying() {
    let mut buf = BytesMut::from(&[7u8; 10_000][..]);
    let base = buf.as_ptr();
    let big = take_bytes(&mut buf, 8_000);
    assert_eq!(big.as_ptr(), base, "shares the read buffer");
    let small = take_bytes(&mut buf, 100);
    assert_ne!(small.as_ptr(), unsafe_free_offset(base, 8_000));
    assert_eq!(buf.len(), 1_900);
}

/// Where `offset` bytes after `base` is, as an address (no pointer is dereferenced).
fn unsafe_free_offset(base: *const u8, offset: usize) -> *const u8 {
    base.wrapping_add(offset)
}

#[test]
fn chunk_size_lines_are_hex() {
    assert_eq!(chunk_size_line(255), Bytes::from_static(b"FF\r\n"));
    assert_eq!(chunk_size_line(1), Bytes::from_static(b"1\r\n"));
}
