//! `${VAR}` and `${VAR:-default}` substitution in config strings.

use std::borrow::Cow;
use std::collections::HashMap;

/// Where variables come from; the process environment in production, a map in tests.
pub trait Env {
    /// The value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
    /// Reads a secret file named by an `X_FILE` variable.
    fn read_file(&self, path: &str) -> std::io::Result<String>;
}

/// The real process environment and filesystem.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        // A non-UTF-8 value cannot appear in a UTF-8 config string anyway.
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A fixed set of variables (tests, `gatehouse check` with overrides).
pub struct MapEnv(pub HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Why a config string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// The variable, its `_FILE` companion and a default are all missing.
    #[error("environment variable {name} is not set (nor {name}_FILE) and has no default")]
    Unset {
        /// The variable as written, without the `_FILE` suffix.
        name: String,
    },
    /// `{name}_FILE` names a file that could not be read.
    #[error("cannot read {name}_FILE={path}: {reason}")]
    SecretFile {
        /// The variable as written, without the `_FILE` suffix.
        name: String,
        /// The path held by `{name}_FILE`.
        path: String,
        /// The I/O error, as text so the error stays `Clone + Eq`.
        reason: String,
    },
    /// A `${` with no closing `}`.
    #[error("unterminated \"${{\": add a closing \"}}\", or write \"$${{\" for a literal \"${{\"")]
    Unterminated,
    /// The text inside `${...}` is not a valid variable name.
    #[error(
        "invalid variable name \"{name}\": use letters, digits and underscores, not starting \
         with a digit; only ${{VAR}} and ${{VAR:-default}} are supported"
    )]
    InvalidName {
        /// The text found where the name should be.
        name: String,
    },
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn resolve(name: &str, default: Option<&str>, env: &dyn Env) -> Result<String, InterpolateError> {
    match env.var(name) {
        Some(value) if !value.is_empty() => return Ok(value),
        // Shell `:-` semantics: an empty value counts as missing for the default,
        // but a deliberately empty variable is not an error.
        Some(_) => return Ok(default.unwrap_or_default().to_string()),
        None => {}
    }
    // An empty `X_FILE` cannot name a file; compose files often produce one
    // with `X_FILE=${X_FILE:-}`, so treat it as unset rather than fail.
    if let Some(path) = env.var(&format!("{name}_FILE")).filter(|p| !p.is_empty()) {
        // No fallback to the default here: the operator pointed at a file, and
        // silently using a default secret would hide a broken mount.
        return match env.read_file(&path) {
            Ok(contents) => Ok(contents.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => Err(InterpolateError::SecretFile {
                name: name.to_string(),
                path,
                reason: e.to_string(),
            }),
        };
    }
    default
        .map(str::to_string)
        .ok_or_else(|| InterpolateError::Unset {
            name: name.to_string(),
        })
}

/// Replaces `${VAR}` / `${VAR:-default}` in one config string; `$$` is a literal `$`.
pub fn interpolate<'a>(s: &'a str, env: &dyn Env) -> Result<Cow<'a, str>, InterpolateError> {
    if !s.contains('$') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or(InterpolateError::Unterminated)?;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_valid_name(name) {
                return Err(InterpolateError::InvalidName {
                    name: name.to_string(),
                });
            }
            // Appended, never re-scanned: a value containing `${Y}` stays literal.
            out.push_str(&resolve(name, default, env)?);
            rest = &body[close + 1..];
        } else {
            // `$5`, `$PATH` and a trailing `$` are common in regexes and
            // passwords, so only `${` and `$$` are special.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn env(vars: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A file under the temp dir that is removed when the test ends, pass or fail.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("gatehouse-interpolate-{}-{n}.secret", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("temp path is UTF-8")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn ok(s: &str, e: &MapEnv) -> String {
        interpolate(s, e).expect(s).into_owned()
    }

    #[test]
    fn substitutes_and_defaults() {
        let e = env(&[
            ("HOST", "db.local"),
            ("PORT", "5432"),
            ("EMPTY", ""),
            ("_x9", "u"),
        ]);
        let cases: &[(&str, &str)] = &[
            ("${HOST}", "db.local"),
            ("${HOST}:${PORT}", "db.local:5432"),
            ("postgres://${HOST}/app", "postgres://db.local/app"),
            ("${HOST:-other}", "db.local"),
            ("${MISSING:-fallback}", "fallback"),
            ("${MISSING:-}", ""),
            ("${MISSING:-a:-b}", "a:-b"),
            ("${MISSING:-a b:c-d {x}", "a b:c-d {x"),
            ("${MISSING:-${HOST}}", "${HOST}"),
            ("${EMPTY}", ""),
            ("[${EMPTY:-dflt}]", "[dflt]"),
            ("${_x9}", "u"),
            ("$$", "$"),
            ("$${HOST}", "${HOST}"),
            ("a$$$${HOST}", "a$${HOST}"),
            ("$$${HOST}", "$db.local"),
            ("$$$${HOST}", "$${HOST}"),
            ("cost: $5", "cost: $5"),
            ("trailing $", "trailing $"),
            ("$HOST", "$HOST"),
            ("^/v1/(.*)$", "^/v1/(.*)$"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input, &e), *want, "input {input:?}");
        }
    }

    #[test]
    fn borrows_when_there_is_nothing_to_do() {
        let e = env(&[]);
        assert!(matches!(
            interpolate("plain text", &e),
            Ok(Cow::Borrowed("plain text"))
        ));
        assert!(matches!(interpolate("", &e), Ok(Cow::Borrowed(""))));
    }

    #[test]
    fn values_are_not_rescanned() {
        let e = env(&[("A", "${B}"), ("B", "nope"), ("D", "$$")]);
        assert_eq!(ok("${A}", &e), "${B}");
        assert_eq!(ok("${D}", &e), "$$");
    }

    #[test]
    fn unset_is_an_error_naming_the_variable() {
        let err = interpolate("x ${API_KEY} y", &env(&[])).unwrap_err();
        assert_eq!(
            err,
            InterpolateError::Unset {
                name: "API_KEY".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "environment variable API_KEY is not set (nor API_KEY_FILE) and has no default"
        );
    }

    #[test]
    fn syntax_errors() {
        let e = env(&[("A", "1")]);
        let invalid = |n: &str| InterpolateError::InvalidName { name: n.into() };
        let cases: &[(&str, InterpolateError)] = &[
            ("${A", InterpolateError::Unterminated),
            ("${", InterpolateError::Unterminated),
            ("${A:-default", InterpolateError::Unterminated),
            ("ok ${A} then ${B", InterpolateError::Unterminated),
            ("${}", invalid("")),
            ("${:-d}", invalid("")),
            ("${1A}", invalid("1A")),
            ("${A-B}", invalid("A-B")),
            ("${A B}", invalid("A B")),
            ("${A:?err}", invalid("A:?err")),
            ("${A:=d}", invalid("A:=d")),
            ("${ A}", invalid(" A")),
            ("${Ä}", invalid("Ä")),
        ];
        for (input, want) in cases {
            assert_eq!(
                interpolate(input, &e).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
        assert_eq!(
            invalid("1A").to_string(),
            "invalid variable name \"1A\": use letters, digits and underscores, not starting \
             with a digit; only ${VAR} and ${VAR:-default} are supported"
        );
        assert!(InterpolateError::Unterminated
            .to_string()
            .contains("\"$${\""));
    }

    #[test]
    fn file_secrets() {
        let plain = TempFile::new("s3cret\n");
        let crlf = TempFile::new("  spaced \t\r\n\r\n");
        let e = env(&[
            ("DB_PASSWORD_FILE", plain.path()),
            ("TOKEN_FILE", crlf.path()),
            ("SET", "direct"),
            ("SET_FILE", plain.path()),
            ("BLANK", ""),
            ("BLANK_FILE", plain.path()),
            ("NOFILE_FILE", ""),
        ]);
        assert_eq!(ok("${DB_PASSWORD}", &e), "s3cret");
        assert_eq!(ok("${DB_PASSWORD:-ignored}", &e), "s3cret");
        assert_eq!(ok("[${TOKEN}]", &e), "[  spaced \t]");
        assert_eq!(ok("${SET}", &e), "direct");
        // Set-but-empty wins over the file: the variable is set.
        assert_eq!(ok("${BLANK}", &e), "");
        assert_eq!(ok("${NOFILE:-d}", &e), "d");
        assert!(matches!(
            interpolate("${NOFILE}", &e),
            Err(InterpolateError::Unset { .. })
        ));
    }

    #[test]
    fn unreadable_secret_file_is_an_error_even_with_a_default() {
        let gone = TempFile::new("");
        let missing = gone.path().to_string();
        drop(gone);
        let e = env(&[("X_FILE", &missing)]);
        for input in ["${X}", "${X:-fallback}"] {
            match interpolate(input, &e) {
                Err(InterpolateError::SecretFile { name, path, reason }) => {
                    assert_eq!(name, "X");
                    assert_eq!(path, missing);
                    assert!(!reason.is_empty());
                }
                other => panic!("{input}: expected SecretFile, got {other:?}"),
            }
        }
        let err = interpolate("${X}", &e).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read X_FILE={missing}: ")),
            "{err}"
        );
    }

    #[test]
    fn empty_secret_file_gives_empty_value() {
        let empty = TempFile::new("\n");
        let e = env(&[("X_FILE", empty.path())]);
        assert_eq!(ok("<${X:-d}>", &e), "<>");
    }

    #[test]
    fn process_env_reads_the_environment() {
        // PATH is set in any environment cargo test runs in; mutating the
        // environment is avoided because tests run on parallel threads.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(interpolate("${PATH}", &ProcessEnv).expect("PATH"), path);
    }
}
