use super::*;

const MAX_BODY: usize = 1 << 20;

fn sample() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    headers.append("vary", HeaderValue::from_static("Accept-Language"));
    headers.append("vary", HeaderValue::from_static("Accept-Encoding"));
    headers.insert("x-obs", HeaderValue::from_bytes(b"caf\xe9\tbar").unwrap());
    Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"{\"id\":7}"),
        freshness: Freshness {
            request_time: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            response_time: UNIX_EPOCH + Duration::new(1_700_000_001, 5),
            date_value: UNIX_EPOCH + Duration::new(1_700_000_000, 0),
            age_value: Duration::from_secs(3),
            lifetime: Duration::from_secs(30),
            stale_while_revalidate: Duration::from_millis(1500),
            stale_if_error: Duration::from_secs(60),
            must_revalidate: true,
            no_cache: false,
            immutable: true,
        },
    }
}

/// The layout written out independently of the encoder, without its caps, so the decoder can
/// be handed what the encoder refuses to write.
struct Raw {
    version: u8,
    status: u16,
    flags: u8,
    nanos: u32,
    count: Option<u16>,
    body_len: Option<u64>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    between: Vec<u8>,
}

impl Raw {
    fn new() -> Raw {
        Raw {
            version: VERSION,
            status: 200,
            flags: 0,
            nanos: 0,
            count: None,
            body_len: None,
            headers: Vec::new(),
            body: Vec::new(),
            between: Vec::new(),
        }
    }

    fn header(mut self, name: &[u8], value: &[u8]) -> Raw {
        self.headers.push((name.to_vec(), value.to_vec()));
        self
    }

    fn bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_slice(b"GWCE");
        out.put_u8(self.version);
        out.put_u16(self.status);
        out.put_u8(self.flags);
        for _ in 0..7 {
            out.put_u64(1);
            out.put_u32(self.nanos);
        }
        out.put_u16(self.count.unwrap_or(self.headers.len() as u16));
        for (n, v) in &self.headers {
            out.put_u16(n.len() as u16);
            out.put_slice(n);
            out.put_u32(v.len() as u32);
            out.put_slice(v);
        }
        out.put_u64(self.body_len.unwrap_or(self.body.len() as u64));
        out.put_slice(&self.body);
        out.put_slice(&self.between);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        out.freeze()
    }

    fn decode(&self) -> Result<Entry, DecodeError> {
        Entry::decode(&self.bytes(), MAX_BODY)
    }
}

#[test]
fn round_trip_keeps_every_field_and_repeated_headers() {
    let entry = sample();
    let bytes = entry.encode().unwrap();
    assert_eq!(bytes.len(), entry.encoded_len());
    let back = Entry::decode(&bytes, MAX_BODY).unwrap();
    assert_eq!(back, entry);
    let vary: Vec<_> = back.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Language", "Accept-Encoding"]);
}

#[test]
fn raw_layout_matches_the_encoder() {
    let mut headers = HeaderMap::new();
    headers.insert("etag", HeaderValue::from_static("\"x\""));
    let one = UNIX_EPOCH + Duration::from_secs(1);
    let entry = Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"hi"),
        freshness: Freshness {
            request_time: one,
            response_time: one,
            date_value: one,
            age_value: Duration::from_secs(1),
            lifetime: Duration::from_secs(1),
            stale_while_revalidate: Duration::from_secs(1),
            stale_if_error: Duration::from_secs(1),
            must_revalidate: false,
            no_cache: false,
            immutable: false,
        },
    };
    let mut raw = Raw::new().header(b"etag", b"\"x\"");
    raw.body = b"hi".to_vec();
    assert_eq!(entry.encode().unwrap(), raw.bytes());
}

#[test]
fn body_length_boundary_against_max_entry_size() {
    let cap = 1000;
    for (len, ok) in [(cap - 1, true), (cap, true), (cap + 1, false)] {
        let mut entry = sample();
        entry.body = Bytes::from(vec![b'x'; len]);
        let bytes = entry.encode().unwrap();
        let got = Entry::decode(&bytes, cap);
        if ok {
            assert_eq!(got.unwrap(), entry, "len {len}");
        } else {
            assert_eq!(
                got.unwrap_err(),
                DecodeError::TooLarge {
                    what: "body length",
                    len: len as u64,
                    cap: cap as u64
                }
            );
        }
    }
}

#[test]
fn header_count_boundary() {
    for (count, ok) in [
        (MAX_HEADERS - 1, true),
        (MAX_HEADERS, true),
        (MAX_HEADERS + 1, false),
    ] {
        let mut entry = sample();
        entry.headers.clear();
        let mut raw = Raw::new();
        for i in 0..count {
            entry
                .headers
                .append("x-n", HeaderValue::from_str(&i.to_string()).unwrap());
            raw = raw.header(b"x-n", i.to_string().as_bytes());
        }
        assert_eq!(entry.encode().is_ok(), ok, "encode {count}");
        assert_eq!(raw.decode().is_ok(), ok, "decode {count}");
        if !ok {
            assert_eq!(entry.encode(), Err(EncodeError::TooManyHeaders(count)));
            assert!(matches!(
                raw.decode(),
                Err(DecodeError::TooLarge {
                    what: "header count",
                    ..
                })
            ));
        }
    }
}

#[test]
fn header_name_length_boundary() {
    for (len, ok) in [
        (MAX_NAME_LEN - 1, true),
        (MAX_NAME_LEN, true),
        (MAX_NAME_LEN + 1, false),
    ] {
        let name = vec![b'n'; len];
        let mut entry = sample();
        entry.headers.insert(
            HeaderName::from_bytes(&name).unwrap(),
            HeaderValue::from_static("v"),
        );
        assert_eq!(entry.encode().is_ok(), ok, "encode {len}");
        let raw = Raw::new().header(&name, b"v");
        assert_eq!(raw.decode().is_ok(), ok, "decode {len}");
        if ok {
            let bytes = entry.encode().unwrap();
            assert_eq!(Entry::decode(&bytes, MAX_BODY).unwrap(), entry);
        }
    }
}

#[test]
fn header_value_length_boundary() {
    for (len, ok) in [
        (MAX_VALUE_LEN - 1, true),
        (MAX_VALUE_LEN, true),
        (MAX_VALUE_LEN + 1, false),
    ] {
        let value = vec![b'v'; len];
        let mut entry = sample();
        entry
            .headers
            .insert("x-big", HeaderValue::from_bytes(&value).unwrap());
        assert_eq!(entry.encode().is_ok(), ok, "encode {len}");
        let raw = Raw::new().header(b"x-big", &value);
        assert_eq!(raw.decode().is_ok(), ok, "decode {len}");
    }
}

#[test]
fn total_header_bytes_boundary() {
    // Two headers named "a" and "b": 2 name bytes, one full-size value, one sized to land on
    // the cap.
    let rest = MAX_HEADER_BYTES - 2 - MAX_VALUE_LEN;
    for (delta, ok) in [(-1i64, true), (0, true), (1, false)] {
        let second = (rest as i64 + delta) as usize;
        let (a, b) = (vec![b'v'; MAX_VALUE_LEN], vec![b'w'; second]);
        let mut entry = sample();
        entry.headers.clear();
        entry
            .headers
            .insert("a", HeaderValue::from_bytes(&a).unwrap());
        entry
            .headers
            .insert("b", HeaderValue::from_bytes(&b).unwrap());
        assert_eq!(entry.encode().is_ok(), ok, "encode {delta}");
        assert_eq!(
            Raw::new()
                .header(b"a", &a)
                .header(b"b", &b)
                .decode()
                .is_ok(),
            ok,
            "decode {delta}"
        );
    }
}

#[test]
fn invalid_header_names_and_values_are_refused() {
    for name in [&b"Content-Type"[..], b"bad name", b"", b"x:y", b"\xff"] {
        assert_eq!(
            Raw::new().header(name, b"v").decode(),
            Err(DecodeError::Invalid("header name")),
            "{name:?}"
        );
    }
    for value in [&b"a\nb"[..], b"a\rb", b"a\0b", b"\x7f"] {
        assert_eq!(
            Raw::new().header(b"x", value).decode(),
            Err(DecodeError::Invalid("header value")),
            "{value:?}"
        );
    }
    assert!(Raw::new().header(b"x", b"").decode().is_ok());
}

#[test]
fn invalid_fixed_fields_are_refused() {
    for status in [0u16, 99, 100, 199, 1000, u16::MAX] {
        let mut raw = Raw::new();
        raw.status = status;
        assert_eq!(
            raw.decode(),
            Err(DecodeError::Invalid("status")),
            "{status}"
        );
    }
    for status in [200u16, 304, 599, 999] {
        let mut raw = Raw::new();
        raw.status = status;
        assert!(raw.decode().is_ok(), "{status}");
    }
    let mut raw = Raw::new();
    raw.flags = 8;
    assert_eq!(raw.decode(), Err(DecodeError::Invalid("flags")));
    raw.flags = 1;
    assert!(raw.decode().unwrap().freshness.must_revalidate);
    raw.flags = 7;
    let all = raw.decode().unwrap().freshness;
    assert!(all.must_revalidate && all.no_cache && all.immutable);
    let mut raw = Raw::new();
    raw.nanos = 999_999_999;
    assert!(raw.decode().is_ok());
    raw.nanos = 1_000_000_000;
    assert_eq!(raw.decode(), Err(DecodeError::Invalid("duration")));
}

#[test]
fn declared_lengths_past_the_end_are_truncation() {
    let mut raw = Raw::new().header(b"x", b"v");
    raw.count = Some(2);
    assert!(raw.decode().is_err());
    let mut raw = Raw::new();
    raw.body = b"abc".to_vec();
    raw.body_len = Some(4);
    assert_eq!(raw.decode(), Err(DecodeError::Truncated));
    raw.body_len = Some(u64::MAX);
    assert!(matches!(raw.decode(), Err(DecodeError::TooLarge { .. })));
    assert_eq!(
        Entry::decode(&raw.bytes(), usize::MAX),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut raw = Raw::new();
    raw.body = b"body".to_vec();
    raw.between = b"!".to_vec();
    assert_eq!(raw.decode(), Err(DecodeError::TrailingBytes));
    let mut after = BytesMut::from(&sample().encode().unwrap()[..]);
    after.put_u8(0);
    assert_eq!(
        Entry::decode(&after.freeze(), MAX_BODY),
        Err(DecodeError::Checksum)
    );
}

#[test]
fn other_formats_and_versions_are_not_ours() {
    let mut raw = Raw::new();
    for version in [0u8, 2, 255] {
        raw.version = version;
        let err = raw.decode().unwrap_err();
        assert!(err.is_unknown_format(), "{version}");
    }
    for value in [
        &b""[..],
        b"GWC",
        b"GWCE",
        b"{\"status\":200}",
        b"\x00\x00\x00\x00\x01",
    ] {
        let err = Entry::decode(&Bytes::copy_from_slice(value), MAX_BODY).unwrap_err();
        assert!(err.is_unknown_format(), "{value:?}");
    }
    let short = Entry::decode(&Bytes::from_static(b"GWCE\x01\x00"), MAX_BODY).unwrap_err();
    assert_eq!(short, DecodeError::Truncated);
    assert!(!short.is_unknown_format());
}

#[test]
fn useless_after_adds_the_longer_stale_window_and_saturates() {
    // Fresh 30 s, stale-if-error 60 s; with an ETag kept at least 10 minutes past freshness.
    let entry = sample();
    assert_eq!(
        entry.useless_after(),
        entry.freshness.response_time + Duration::from_secs(30) + KEEP_FOR_REVALIDATION
    );
    let mut unvalidated = sample();
    unvalidated.headers.remove("etag");
    assert_eq!(
        unvalidated.useless_after(),
        unvalidated.freshness.response_time + Duration::from_secs(90)
    );
    let mut huge = sample();
    huge.freshness.lifetime = Duration::MAX;
    assert!(huge.useless_after() > entry.useless_after());
}

fn random_entry(rng: &mut fastrand::Rng) -> Entry {
    const NAMES: [&str; 6] = [
        "etag",
        "vary",
        "x-a",
        "content-type",
        "cache-control",
        "age",
    ];
    let mut headers = HeaderMap::new();
    for _ in 0..rng.usize(0..8) {
        let value: Vec<u8> = (0..rng.usize(0..20))
            .map(|_| match rng.u8(..) {
                b @ (b'\t' | b' '..=b'~' | 0x80..=0xff) => b,
                _ => b'x',
            })
            .collect();
        headers.append(
            NAMES[rng.usize(..NAMES.len())],
            HeaderValue::from_bytes(&value).unwrap(),
        );
    }
    let body: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
    let time = |rng: &mut fastrand::Rng| {
        UNIX_EPOCH + Duration::new(rng.u64(..1 << 40), rng.u32(..1_000_000_000))
    };
    let dur = |rng: &mut fastrand::Rng| Duration::new(rng.u64(..), rng.u32(..1_000_000_000));
    Entry {
        status: StatusCode::from_u16(rng.u16(200..1000)).unwrap(),
        headers,
        body: body.into(),
        freshness: Freshness {
            request_time: time(rng),
            response_time: time(rng),
            date_value: time(rng),
            age_value: dur(rng),
            lifetime: dur(rng),
            stale_while_revalidate: dur(rng),
            stale_if_error: dur(rng),
            must_revalidate: rng.bool(),
            no_cache: rng.bool(),
            immutable: rng.bool(),
        },
    }
}

#[test]
fn fuzz_truncations_mutations_and_noise_never_panic_nor_decode_differently() {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let entry = random_entry(&mut rng);
        let bytes = entry.encode().unwrap();
        assert_eq!(Entry::decode(&bytes, MAX_BODY).as_ref(), Ok(&entry));
        // Every truncation.
        for len in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes.slice(..len), MAX_BODY).is_err(),
                "{len}"
            );
        }
        // Random single-byte changes and random runs of changes.
        for _ in 0..200 {
            let mut mutated = bytes.to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..mutated.len());
                mutated[at] ^= rng.u8(1..);
            }
            if let Ok(decoded) = Entry::decode(&Bytes::from(mutated), MAX_BODY) {
                assert_eq!(decoded, entry);
            }
        }
        // Bytes inserted.
        let mut longer = bytes.to_vec();
        longer.insert(rng.usize(..=longer.len()), rng.u8(..));
        assert!(Entry::decode(&Bytes::from(longer), MAX_BODY).is_err());
    }
    // Noise, bare and behind a valid magic and version so that it reaches the field parser.
    for _ in 0..20_000 {
        let mut noise: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        if rng.bool() {
            noise.splice(0..0, MAGIC.iter().copied().chain([VERSION]));
        }
        let _ = Entry::decode(&Bytes::from(noise), MAX_BODY);
    }
}

#[test]
fn fuzz_checksummed_noise_reaches_every_check_without_panicking() {
    // A valid checksum over random fields: what a writer of a deliberately malformed value
    // could store.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let mut out = BytesMut::new();
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        let mut fields: Vec<u8> = (0..rng.usize(0..190)).map(|_| rng.u8(..)).collect();
        if rng.bool() && fields.len() >= 97 {
            // A plausible fixed part so that the header and body parsers see input too:
            // status, flags, 7 times and durations of 12 bytes, header count, body length.
            fields[0..2].copy_from_slice(&200u16.to_be_bytes());
            fields[2] = 0;
            fields[3..87].fill(0);
            let count = rng.u8(0..3);
            fields[87..89].copy_from_slice(&[0, count]);
            if count == 0 {
                let rest = (fields.len() - 97) as u64;
                fields[89..97].copy_from_slice(&rest.to_be_bytes());
            }
        }
        out.put_slice(&fields);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        let bytes = out.freeze();
        if let Ok(entry) = Entry::decode(&bytes, MAX_BODY) {
            // Whatever decodes encodes back into the same bytes: nothing was read loosely.
            assert_eq!(entry.encode().unwrap(), bytes);
            accepted += 1;
        }
    }
    assert!(accepted > 0, "the generator never reached a valid value");
}
