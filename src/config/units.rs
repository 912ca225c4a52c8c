//! Durations and sizes as people write them in config files.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

const DURATION_HINT: &str = "expected a number followed by ms, s, m, h or d (e.g. 250ms, 2s, 1m)";
const SIZE_HINT: &str = "expected a number of bytes, optionally followed by B, KB, MB, GB, TB, \
                         KiB, MiB, GiB or TiB (e.g. 1048576, 512KiB, 10MiB)";

// Largest first: a compound must use strictly increasing indices, which rules
// out both `1s1s` and `1s1m` with one comparison.
const DURATION_UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

fn leading_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Parses a duration such as `250ms`, `2s`, `1m`, `1h`, `1d`, or a compound `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let invalid = |why: &str| format!("invalid duration \"{t}\": {why}");
    if t.is_empty() {
        return Err(format!("empty duration: {DURATION_HINT}"));
    }
    if t.starts_with('-') {
        return Err(invalid("durations cannot be negative"));
    }
    if leading_digits(t) == t.len() {
        return Err(format!("\"{t}\" has no unit; write {t}s or {t}ms"));
    }
    if t.contains(char::is_whitespace) {
        return Err(invalid("remove the spaces (e.g. 1m30s)"));
    }

    let mut total_ms: u128 = 0;
    let mut prev: Option<usize> = None;
    let mut rest = t;
    while !rest.is_empty() {
        let (num, after) = rest.split_at(leading_digits(rest));
        if num.is_empty() {
            return Err(invalid(DURATION_HINT));
        }
        if after.starts_with(['.', ',']) {
            return Err(invalid(
                "fractional numbers are not supported; use a smaller unit \
                 (e.g. 1500ms instead of 1.5s)",
            ));
        }
        let (unit, tail) =
            after.split_at(after.bytes().take_while(u8::is_ascii_alphabetic).count());
        if unit.is_empty() {
            // Only reachable after an earlier unit, so the next smaller unit is
            // almost certainly what was meant (`1h30` -> `1h30m`).
            let next = prev.and_then(|p| DURATION_UNITS.get(p + 1));
            return Err(match (next, tail.is_empty()) {
                (Some((u, _)), true) => invalid(&format!("\"{num}\" has no unit; write {t}{u}")),
                _ => invalid(DURATION_HINT),
            });
        }
        let Some(idx) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
            let same_letters = DURATION_UNITS
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(unit));
            return Err(match same_letters {
                Some((u, _)) => invalid(&format!(
                    "units are case-sensitive; write \"{u}\" instead of \"{unit}\""
                )),
                None => invalid(DURATION_HINT),
            });
        };
        match prev {
            Some(p) if p == idx => {
                return Err(invalid(&format!("unit \"{unit}\" appears more than once")));
            }
            Some(p) if p > idx => {
                return Err(invalid(
                    "units must go from largest to smallest (d, h, m, s, ms), e.g. 1m30s",
                ));
            }
            _ => {}
        }
        prev = Some(idx);
        let too_large = || invalid("value is too large");
        let n: u128 = num.parse().map_err(|_| too_large())?;
        total_ms = n
            .checked_mul(DURATION_UNITS[idx].1)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(too_large)?;
        rest = tail;
    }

    let secs = u64::try_from(total_ms / 1000).map_err(|_| invalid("value is too large"))?;
    // The remainder is below 1000 ms, so it always fits in nanoseconds as u32.
    let nanos = (total_ms % 1000) as u32 * 1_000_000;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way a user would write it (`250ms`, `30s`, `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let sub_ms = d.subsec_nanos() % 1_000_000;
    let mut rest = d.as_millis();
    if rest == 0 && sub_ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, ms) in DURATION_UNITS {
        let n = rest / ms;
        rest %= ms;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    // Config cannot express sub-millisecond precision, but measured durations
    // can carry it; showing it beats silently printing `0s` for 300µs.
    if sub_ms > 0 {
        let (micros, nanos) = (sub_ms / 1000, sub_ms % 1000);
        if nanos == 0 {
            out.push_str(&format!("{micros}us"));
        } else {
            out.push_str(&format!("{sub_ms}ns"));
        }
    }
    out
}

/// Parses a size: bytes as an integer (`1048576`), or `512KiB`, `10MiB`, `1GiB`, `1TiB` (1024-based), `KB`/`MB`/`GB` (1000-based), `B`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let invalid = |why: &str| format!("invalid size \"{t}\": {why}");
    if t.is_empty() {
        return Err(format!("empty size: {SIZE_HINT}"));
    }
    if t.starts_with('-') {
        return Err(invalid("sizes cannot be negative"));
    }
    if t.contains(char::is_whitespace) {
        return Err(invalid(
            "remove the space between the number and the unit (e.g. 10MiB)",
        ));
    }
    let (num, unit) = t.split_at(leading_digits(t));
    if num.is_empty() {
        return Err(invalid(SIZE_HINT));
    }
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "fractional numbers are not supported; use a smaller unit \
             (e.g. 1536MiB instead of 1.5GiB)",
        ));
    }
    let mult = if unit.is_empty() {
        1
    } else if let Some((_, m)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
        *m
    } else if let Some((u, _)) = SIZE_UNITS
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
    {
        return Err(invalid(&format!(
            "units are case-sensitive; write \"{u}\" instead of \"{unit}\""
        )));
    } else {
        return Err(invalid(&format!("unknown unit \"{unit}\"; {SIZE_HINT}")));
    };
    let too_large = || invalid(&format!("too large (the maximum is {} bytes)", u64::MAX));
    let n: u64 = num.parse().map_err(|_| too_large())?;
    n.checked_mul(mult).ok_or_else(too_large)
}

/// A duration read from config (`timeout: 2s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// A size read from config (`max_request_body: 10MiB` or `10485760`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 250ms, 2s, 1m or 1h")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(ConfigDuration).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ConfigSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as 1048576, 512KiB or 10MiB")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map(ConfigSize).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ConfigSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(ConfigSize)
            .map_err(|_| E::custom(format!("invalid size {v}: sizes cannot be negative")))
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `any` rather than `u64`: a strict integer request would make
        // self-describing formats reject `10MiB` before our visitor sees it.
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error, I64Deserializer, StrDeserializer, U64Deserializer};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn check_errors<T: fmt::Debug>(parse: fn(&str) -> Result<T, String>, cases: &[(&str, &str)]) {
        for (input, want) in cases {
            let err = parse(input).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    // Canonical spellings: each must parse to the value and format back to itself.
    #[rustfmt::skip]
    const CANONICAL: &[(&str, u64)] = &[
        ("0s", 0), ("1ms", 1), ("250ms", 250), ("1s", 1_000), ("1s500ms", 1_500),
        ("30s", 30_000), ("1m", 60_000), ("1m30s", 90_000), ("1h", 3_600_000),
        ("1h1m", 3_660_000), ("1h30m", 5_400_000), ("1d", 86_400_000),
        ("10d", 864_000_000), ("1d2h3m4s5ms", 93_784_005),
    ];

    #[test]
    fn durations_that_parse() {
        let max_secs = format!("{}s", u64::MAX);
        #[rustfmt::skip]
        let other: &[(&str, Duration)] = &[
            ("0ms", ms(0)), ("90s", ms(90_000)), ("1500ms", ms(1_500)), ("007s", ms(7_000)),
            ("  2s\t", ms(2_000)), ("\n1m\n", ms(60_000)),
            (&max_secs, Duration::from_secs(u64::MAX)),
        ];
        let canonical = CANONICAL.iter().map(|(s, n)| (*s, ms(*n)));
        for (input, want) in canonical.chain(other.iter().copied()) {
            assert_eq!(parse_duration(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn durations_that_fail() {
        let too_big = format!("{}d", u64::MAX / 86_400 + 1);
        check_errors(
            parse_duration,
            &[
                ("", "empty duration: expected a number followed by ms"),
                ("   ", "empty duration"),
                ("5x", "invalid duration \"5x\": expected a number followed"),
                ("30", "\"30\" has no unit; write 30s or 30ms"),
                (" 30 ", "\"30\" has no unit; write 30s or 30ms"),
                ("-5s", "durations cannot be negative"),
                ("1.5s", "fractional numbers are not supported"),
                ("0,5s", "fractional numbers are not supported"),
                ("1s1s", "unit \"s\" appears more than once"),
                ("1m2m", "unit \"m\" appears more than once"),
                ("1s1m", "units must go from largest to smallest"),
                ("1ms1s", "units must go from largest to smallest"),
                ("1h30", "\"30\" has no unit; write 1h30m"),
                ("1ms30", "expected a number followed by ms"),
                ("2S", "case-sensitive; write \"s\" instead of \"S\""),
                ("2MS", "write \"ms\" instead of \"MS\""),
                ("1H", "write \"h\" instead of \"H\""),
                ("s", "expected a number followed by ms"),
                ("+5s", "expected a number followed by ms"),
                ("2sec", "expected a number followed by ms"),
                ("1m 30s", "remove the spaces"),
                ("99999999999999999999999999999999999999d", "too large"),
                (&too_big, "value is too large"),
            ],
        );
    }

    #[test]
    fn format_round_trips() {
        for (text, n) in CANONICAL {
            assert_eq!(format_duration(ms(*n)), *text);
        }
        let max = Duration::new(u64::MAX, 999_000_000);
        assert_eq!(format_duration(max), "213503982334601d7h15s999ms");
        let more = [ms(59_999), ms(61_001), ms(7 * 86_400_000 + 1), max];
        for d in CANONICAL.iter().map(|(_, n)| ms(*n)).chain(more) {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        // Sub-millisecond parts are shown rather than dropped.
        assert_eq!(format_duration(Duration::from_micros(300)), "300us");
        assert_eq!(format_duration(Duration::new(1, 1_000_001)), "1s1ms1ns");
    }

    #[test]
    fn sizes_that_parse() {
        let max = u64::MAX.to_string();
        #[rustfmt::skip]
        let cases: &[(&str, u64)] = &[
            ("0", 0), ("1048576", 1_048_576), ("0B", 0), ("1B", 1), ("1KB", 1_000),
            ("1MB", 1_000_000), ("1GB", 1_000_000_000), ("1TB", 1_000_000_000_000),
            ("512KiB", 512 * 1024), ("10MiB", 10 << 20), ("1GiB", 1 << 30), ("1TiB", 1 << 40),
            ("16777215TiB", 16_777_215 << 40), (" 10MiB\n", 10 << 20), (&max, u64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn sizes_that_fail() {
        check_errors(
            parse_size,
            &[
                ("", "empty size: expected a number of bytes"),
                (" ", "empty size"),
                ("-1", "invalid size \"-1\": sizes cannot be negative"),
                ("-5MiB", "sizes cannot be negative"),
                ("1.5GiB", "fractional numbers are not supported"),
                ("10mib", "case-sensitive; write \"MiB\" instead of \"mib\""),
                ("1kb", "write \"KB\" instead of \"kb\""),
                ("1KIB", "write \"KiB\" instead of \"KIB\""),
                ("1b", "write \"B\" instead of \"b\""),
                ("10M", "unknown unit \"M\"; expected a number of bytes"),
                ("10XB", "unknown unit \"XB\""),
                ("1MiB512KiB", "unknown unit \"MiB512KiB\""),
                ("MiB", "invalid size \"MiB\": expected a number of bytes"),
                ("+5", "expected a number of bytes"),
                ("10 MiB", "remove the space"),
                (
                    "18446744073709551616",
                    "the maximum is 18446744073709551615",
                ),
                ("16777216TiB", "too large"),
                ("18446744073709551616TiB", "too large"),
            ],
        );
    }

    fn duration_from(s: &str) -> Result<ConfigDuration, String> {
        ConfigDuration::deserialize(StrDeserializer::<Error>::new(s)).map_err(|e| e.to_string())
    }

    fn size_from(s: &str) -> Result<ConfigSize, String> {
        ConfigSize::deserialize(StrDeserializer::<Error>::new(s)).map_err(|e| e.to_string())
    }

    #[test]
    fn serde_duration() {
        assert_eq!(duration_from("2s"), Ok(ConfigDuration(ms(2_000))));
        assert_eq!(
            duration_from("5x").unwrap_err(),
            "invalid duration \"5x\": expected a number followed by ms, s, m, h or d (e.g. 250ms, 2s, 1m)"
        );
        assert_eq!(
            duration_from("30").unwrap_err(),
            "\"30\" has no unit; write 30s or 30ms"
        );
        let err = ConfigDuration::deserialize(U64Deserializer::<Error>::new(30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: integer `30`, expected a duration such as 250ms, 2s, 1m or 1h"
        );
    }

    #[test]
    fn serde_size() {
        assert_eq!(size_from("10MiB"), Ok(ConfigSize(10 << 20)));
        assert_eq!(size_from("10485760"), Ok(ConfigSize(10 << 20)));
        assert_eq!(
            size_from("10mib").unwrap_err(),
            "invalid size \"10mib\": units are case-sensitive; write \"MiB\" instead of \"mib\""
        );
        let from_u64 = ConfigSize::deserialize(U64Deserializer::<Error>::new(4096));
        assert_eq!(from_u64, Ok(ConfigSize(4096)));
        let from_i64 = ConfigSize::deserialize(I64Deserializer::<Error>::new(7));
        assert_eq!(from_i64, Ok(ConfigSize(7)));
        let err = ConfigSize::deserialize(I64Deserializer::<Error>::new(-5)).unwrap_err();
        assert_eq!(err.to_string(), "invalid size -5: sizes cannot be negative");
    }
}
