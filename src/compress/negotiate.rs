//! `Accept-Encoding` (RFC 9110 12.5.3): which content coding a client gets.

use http::header::{HeaderMap, ACCEPT_ENCODING};

use super::Coding;

/// A weight in thousandths: RFC 9110 12.4.2 allows at most three decimals, so every qvalue is
/// an exact integer here and equal weights compare equal.
pub type Weight = u16;

/// The largest weight, `q=1`.
pub const FULL: Weight = 1000;

/// An `Accept-Encoding` field that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Accept-Encoding")]
pub struct Malformed;

/// What a request's `Accept-Encoding` fields say about the codings the gateway can produce.
///
/// Each is `None` when the field names neither it nor `*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The weight of `br`.
    pub br: Option<Weight>,
    /// The weight of `gzip` (or its alias `x-gzip`).
    pub gzip: Option<Weight>,
    /// The weight of `*`: every coding not named.
    pub any: Option<Weight>,
}

impl Accepted {
    /// The coding to send: the one with the higher weight, `br` when they are equal (a client
    /// that lists it is a recent one); `None` (identity) when neither is acceptable.
    pub fn choose(&self) -> Option<Coding> {
        let br = self.br.or(self.any).unwrap_or(0);
        let gzip = self.gzip.or(self.any).unwrap_or(0);
        match (br, gzip) {
            (0, 0) => None,
            (br, gzip) if br >= gzip => Some(Coding::Br),
            _ => Some(Coding::Gzip),
        }
    }
}

/// The coding a request with these headers gets, or `None` for identity.
///
/// No field means identity: RFC 9110 allows any coding then, but clients that say nothing
/// are often tools that cannot decode. A malformed field means identity too: a client whose
/// field cannot be read is not sent something it may not understand.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let mut accepted = Accepted::default();
    for value in headers.get_all(ACCEPT_ENCODING) {
        if parse_into(value.as_bytes(), &mut accepted).is_err() {
            return None;
        }
    }
    accepted.choose()
}

/// Reads one `Accept-Encoding` field value into `accepted`, strictly:
///
/// ```text
/// Accept-Encoding = #( codings [ OWS ";" OWS "q=" qvalue ] )
/// codings         = token                       ; content-coding, "identity" or "*"
/// qvalue          = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
/// ```
///
/// Empty list elements are allowed (RFC 9110 5.6.1). A coding named twice keeps its lowest
/// weight, so `q=0` anywhere excludes it.
pub fn parse_into(value: &[u8], accepted: &mut Accepted) -> Result<(), Malformed> {
    for element in value.split(|&b| b == b',') {
        let element = trim(element);
        if element.is_empty() {
            continue;
        }
        let (coding, weight) = match element.iter().position(|&b| b == b';') {
            Some(semi) => (trim(&element[..semi]), weight(trim(&element[semi + 1..]))?),
            None => (element, FULL),
        };
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return Err(Malformed);
        }
        let slot = if coding.eq_ignore_ascii_case(b"br") {
            &mut accepted.br
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            // RFC 9110 8.4.1.3: x-gzip is the same coding.
            &mut accepted.gzip
        } else if coding == b"*" {
            &mut accepted.any
        } else {
            continue;
        };
        *slot = Some(slot.map_or(weight, |w| w.min(weight)));
    }
    Ok(())
}

/// The weight of `q=qvalue` (the name is case-insensitive, RFC 9110 12.4.2).
fn weight(param: &[u8]) -> Result<Weight, Malformed> {
    let value = match param {
        [q, b'=', value @ ..] if q.eq_ignore_ascii_case(&b'q') => value,
        _ => return Err(Malformed),
    };
    let (whole, decimals) = match value {
        [whole] => (*whole, &[][..]),
        [whole, b'.', decimals @ ..] if decimals.len() <= 3 => (*whole, decimals),
        _ => return Err(Malformed),
    };
    if !decimals.iter().all(u8::is_ascii_digit) {
        return Err(Malformed);
    }
    let mut thousandths: Weight = 0;
    for (i, digit) in decimals.iter().enumerate() {
        thousandths += Weight::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b'0' => Ok(thousandths),
        b'1' if thousandths == 0 => Ok(FULL),
        _ => Err(Malformed),
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 9110 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(value: &str) -> Result<Accepted, Malformed> {
        let mut accepted = Accepted::default();
        parse_into(value.as_bytes(), &mut accepted).map(|()| accepted)
    }

    fn chosen(values: &[&[u8]]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_bytes(value).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn chooses_the_preferred_acceptable_coding() {
        let cases: &[(&str, Option<Coding>)] = &[
            ("gzip", Some(Coding::Gzip)),
            ("br", Some(Coding::Br)),
            ("gzip, deflate, br", Some(Coding::Br)),
            ("gzip, br;q=0.9", Some(Coding::Gzip)),
            ("gzip;q=0.5, br;q=0.5", Some(Coding::Br)),
            ("gzip;q=1.000, br;q=0.999", Some(Coding::Gzip)),
            ("BR;Q=0.001", Some(Coding::Br)),
            ("x-gzip", Some(Coding::Gzip)),
            ("*", Some(Coding::Br)),
            ("*;q=0.1, gzip", Some(Coding::Gzip)),
            ("*, br;q=0", Some(Coding::Gzip)),
            ("*;q=0", None),
            ("gzip;q=0, br;q=0", None),
            ("br;q=0, gzip;q=0.0", None),
            ("gzip;q=0.5, gzip;q=0", None),
            ("identity", None),
            ("deflate, identity;q=0", None),
            ("", None),
            (" ,, gzip ,", Some(Coding::Gzip)),
            ("gzip \t; \tq=0.5", Some(Coding::Gzip)),
        ];
        for (value, expected) in cases {
            assert_eq!(chosen(&[value.as_bytes()]), *expected, "{value:?}");
        }
    }

    #[test]
    fn several_fields_are_one_list() {
        assert_eq!(chosen(&[b"gzip", b"br;q=0.1"]), Some(Coding::Gzip));
        assert_eq!(chosen(&[b"br", b"br;q=0"]), None);
        assert_eq!(chosen(&[]), None);
        // One malformed field spoils the list: it is not known what the client meant.
        assert_eq!(chosen(&[b"gzip", b"br;q=2"]), None);
    }

    #[test]
    fn qvalues_are_read_to_the_thousandth() {
        let gzip = |q: &str| parse(&format!("gzip;q={q}")).map(|a| a.gzip.unwrap());
        assert_eq!(gzip("0"), Ok(0));
        assert_eq!(gzip("0."), Ok(0));
        assert_eq!(gzip("0.5"), Ok(500));
        assert_eq!(gzip("0.05"), Ok(50));
        assert_eq!(gzip("0.123"), Ok(123));
        assert_eq!(gzip("0.999"), Ok(999));
        assert_eq!(gzip("1"), Ok(1000));
        assert_eq!(gzip("1."), Ok(1000));
        assert_eq!(gzip("1.000"), Ok(1000));
        // A comma ends the element: `5` is a coding of its own.
        assert_eq!(gzip("0,5"), Ok(0));
        for bad in [
            "", "0.1234", "1.001", "1.5", "2", "-0", ".5", "0.5x", "01", "0.a", "1e0", " 1",
        ] {
            assert_eq!(gzip(bad), Err(Malformed), "q={bad:?}");
        }
    }

    #[test]
    fn malformed_elements_are_refused() {
        for bad in [
            "gzip;",
            "gzip;level=1",
            "gzip;q=0.5;q=1",
            "gzip;q =1",
            "gzip;q= 1",
            ";q=1",
            "gz ip",
            "gzip/1",
            "\"gzip\"",
            "br;q=1, gzip;x",
            "gzip\u{7f}",
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{bad:?}");
        }
    }

    /// Random bytes, and random mixes of the grammar's own pieces, never panic; whatever is
    /// accepted yields weights within 0..=1000.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(0xacce_9701);
        let pieces: &[&[u8]] = &[
            b"gzip",
            b"br",
            b"*",
            b"identity",
            b"x-gzip",
            b";",
            b",",
            b" ",
            b"\t",
            b"q=",
            b"Q=",
            b"0",
            b"1",
            b".",
            b"5",
            b"999",
            b"=",
            b"\xff",
            b"\"",
            b"\x00",
        ];
        for round in 0..20_000 {
            let value: Vec<u8> = if round % 2 == 0 {
                (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect()
            } else {
                (0..rng.usize(0..12))
                    .flat_map(|_| pieces[rng.usize(..pieces.len())].iter().copied())
                    .collect()
            };
            let mut accepted = Accepted::default();
            if parse_into(&value, &mut accepted).is_ok() {
                for weight in [accepted.br, accepted.gzip, accepted.any]
                    .into_iter()
                    .flatten()
                {
                    assert!(weight <= FULL, "{value:?}");
                }
                let _ = accepted.choose();
            }
        }
    }
}
