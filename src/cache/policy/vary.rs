//! `Vary` (RFC 9111 4.1): the request fields a stored response depends on, and the bytes that
//! tell one stored variant from another.

use http::header::{HeaderName, VARY};
use http::HeaderMap;

use super::syntax::{is_token, list_items};

/// A response's `Vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// `*`, or a `Vary` that does not parse: no later request can be matched to the response.
    Any,
    /// The request fields it varies on, lower-cased, sorted and without duplicates (so
    /// `Vary: B, a` and `Vary: A, b, a` give the same variant keys); empty without `Vary`.
    Fields(Vec<HeaderName>),
}

/// Reads every `Vary` line of a response.
pub fn parse_vary(headers: &HeaderMap) -> Vary {
    let mut names = Vec::new();
    for line in headers.get_all(VARY) {
        for item in list_items(line.as_bytes()) {
            match item {
                Ok([]) => {}
                Ok(b"*") => return Vary::Any,
                Ok(name) if is_token(name) => match HeaderName::from_bytes(name) {
                    Ok(n) => names.push(n),
                    Err(_) => return Vary::Any,
                },
                // A name we cannot read could be one the origin varies on: refusing the
                // response is the only way not to mix variants.
                _ => return Vary::Any,
            }
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Vary::Fields(names)
}

/// Appends to `out` the bytes one variant is keyed by: for each of `names`, its length-prefixed
/// name and the request's value for it (absent, or all lines joined with ", " and whitespace
/// around list commas removed, RFC 9111 4.1). Every part is length-prefixed, so no two
/// different sets of values give the same bytes.
pub fn variant_key(names: &[HeaderName], request: &HeaderMap, out: &mut Vec<u8>) {
    for name in names {
        push_len_prefixed(out, name.as_str().as_bytes());
        let mut lines = request.get_all(name).iter().peekable();
        if lines.peek().is_none() {
            // Absent differs from present-and-empty.
            out.push(0);
            continue;
        }
        out.push(1);
        let len_at = out.len();
        out.extend_from_slice(&[0; 8]);
        let start = out.len();
        let mut first = true;
        for line in lines {
            let bytes = line.as_bytes();
            // A line with an unterminated quote is kept whole, only trimmed.
            let well_formed = list_items(bytes).all(|i| i.is_ok());
            let mut push = |element: &[u8]| {
                if !first {
                    out.extend_from_slice(b", ");
                }
                first = false;
                out.extend_from_slice(element);
            };
            if well_formed {
                for element in list_items(bytes).flatten() {
                    push(element);
                }
            } else {
                push(super::syntax::trim_ows(bytes));
            }
        }
        let len = (out.len() - start) as u64;
        out[len_at..start].copy_from_slice(&len.to_be_bytes());
    }
}

fn push_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary(lines: &[&str]) -> Vary {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(VARY, l.parse().unwrap());
        }
        parse_vary(&h)
    }

    fn names(list: &[&str]) -> Vec<HeaderName> {
        list.iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect()
    }

    fn key(names_: &[&str], request: &[(&str, &str)]) -> Vec<u8> {
        let mut h = HeaderMap::new();
        for (n, v) in request {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        let mut out = Vec::new();
        variant_key(&names(names_), &h, &mut out);
        out
    }

    #[test]
    fn rfc9111_4_1_vary_lists_lower_cased_sorted_deduplicated() {
        assert_eq!(vary(&[]), Vary::Fields(vec![]));
        assert_eq!(
            vary(&["Accept-Language, ACCEPT", "accept-encoding,accept"]),
            Vary::Fields(names(&["accept", "accept-encoding", "accept-language"]))
        );
        assert_eq!(vary(&[" , accept ,"]), Vary::Fields(names(&["accept"])));
    }

    #[test]
    fn rfc9111_4_1_vary_star_or_unreadable_matches_nothing() {
        assert_eq!(vary(&["*"]), Vary::Any);
        assert_eq!(vary(&["accept", "*"]), Vary::Any);
        assert_eq!(vary(&["accept, x y"]), Vary::Any);
        assert_eq!(vary(&["\"accept\""]), Vary::Any);
    }

    #[test]
    fn rfc9111_4_1_values_are_normalised_by_combining_lines_and_whitespace() {
        let one = key(&["accept"], &[("accept", "text/html,  application/json")]);
        let two = key(
            &["accept"],
            &[("accept", "text/html"), ("accept", "application/json")],
        );
        let three = key(&["accept"], &[("accept", "text/html ,\tapplication/json")]);
        assert_eq!(one, two);
        assert_eq!(one, three);
        // Commas inside a quoted string are not list separators.
        assert_ne!(
            key(&["x"], &[("x", "\"a , b\"")]),
            key(&["x"], &[("x", "\"a, b\"")])
        );
        // Order of values matters (it does for Accept-Language q-less lists).
        assert_ne!(
            key(&["accept"], &[("accept", "a, b")]),
            key(&["accept"], &[("accept", "b, a")])
        );
    }

    #[test]
    fn rfc9111_4_1_absent_differs_from_empty() {
        assert_ne!(key(&["x"], &[]), key(&["x"], &[("x", "")]));
    }

    #[test]
    fn variant_keys_are_unambiguous() {
        assert_ne!(
            key(&["a", "b"], &[("a", "x,y"), ("b", "z")]),
            key(&["a", "b"], &[("a", "x"), ("b", "y,z")])
        );
        assert_ne!(
            key(&["a", "b"], &[("a", "x")]),
            key(&["a", "b"], &[("b", "x")])
        );
    }

    #[test]
    fn random_values_keyed_equal_only_when_normalised_values_are_equal() {
        let mut rng = fastrand::Rng::with_seed(0x0a7e_0001);
        let alphabet = b"ab, \t\",\\";
        let mut seen: std::collections::HashMap<Vec<u8>, Vec<Option<String>>> =
            std::collections::HashMap::new();
        let fields = names(&["a", "b", "c"]);
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            for f in &fields {
                for _ in 0..rng.usize(..3) {
                    let v: Vec<u8> = (0..rng.usize(..6))
                        .map(|_| alphabet[rng.usize(..alphabet.len())])
                        .collect();
                    h.append(f.clone(), http::HeaderValue::from_bytes(&v).unwrap());
                }
            }
            let mut out = Vec::new();
            variant_key(&fields, &h, &mut out);
            // What the key stands for, decoded independently.
            let normalised: Vec<Option<String>> = fields
                .iter()
                .map(|f| {
                    let lines: Vec<&[u8]> = h.get_all(f).iter().map(|v| v.as_bytes()).collect();
                    if lines.is_empty() {
                        return None;
                    }
                    let mut parts = Vec::new();
                    for l in lines {
                        if list_items(l).all(|i| i.is_ok()) {
                            parts.extend(list_items(l).flatten().map(|e| e.to_vec()));
                        } else {
                            parts.push(super::super::syntax::trim_ows(l).to_vec());
                        }
                    }
                    Some(String::from_utf8(parts.join(&b", "[..])).unwrap())
                })
                .collect();
            if let Some(previous) = seen.insert(out, normalised.clone()) {
                assert_eq!(previous, normalised);
            }
        }
    }

    #[test]
    fn random_vary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x0a7e_0002);
        for _ in 0..20_000 {
            let v: Vec<u8> = (0..rng.usize(..24)).map(|_| rng.u8(..)).collect();
            if let Ok(v) = http::HeaderValue::from_bytes(&v) {
                let mut h = HeaderMap::new();
                h.insert(VARY, v.clone());
                if let Vary::Fields(names) = parse_vary(&h) {
                    let mut req = HeaderMap::new();
                    for n in &names {
                        req.append(n.clone(), v.clone());
                    }
                    let mut out = Vec::new();
                    variant_key(&names, &req, &mut out);
                }
            }
        }
    }
}
