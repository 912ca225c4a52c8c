//! A serde deserializer over marked YAML nodes, so that every error (wrong type, unknown field,
//! bad value, unset variable) carries the line and column of the node it is about.
//!
//! The marked-yaml crate's own serde support drops positions for most errors; config errors
//! without a position are useless to an operator, so we drive serde over its node tree ourselves.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::Node;
use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Unexpected, Visitor};

use crate::config::interpolate::{interpolate, Env};

/// A 1-based line and column in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Mark {
    fn of_span(span: &marked_yaml::Span) -> Option<Mark> {
        span.start().map(|m| Mark {
            line: m.line(),
            column: m.column(),
        })
    }

    /// Where a node starts. A block mapping is marked by the parser at the `:` of its first
    /// key, which reads as nonsense in an error, so mappings are placed at their first key.
    pub fn of(node: &Node) -> Option<Mark> {
        let own = Mark::of_span(node.span());
        if let Node::Mapping(map) = node {
            if let Some(first) = map.iter().next().and_then(|(k, _)| Mark::of_span(k.span())) {
                // A flow mapping (`{a: 1}`) starts before its first key: keep its `{`.
                let flow = own.is_some_and(|o| (o.line, o.column) < (first.line, first.column));
                return if flow { own } else { Some(first) };
            }
        }
        own
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value as deserialized.
    pub value: T,
    /// Where it starts in its file.
    pub mark: Mark,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

const SPANNED: &str = "$gatehouse::Spanned";
const AT_KEY: &str = "$gatehouse::AtKey";
const SPANNED_FIELDS: &[&str] = &["$line", "$column", "$value"];

/// Reads a value with a position through the magic struct `name`, which our deserializer
/// answers with `{$line, $column, $value}`.
fn deserialize_marked<'de, T, D>(deserializer: D, name: &'static str) -> Result<(T, Mark), D::Error>
where
    T: de::Deserialize<'de>,
    D: de::Deserializer<'de>,
{
    struct MarkedVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for MarkedVisitor<T> {
        type Value = (T, Mark);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a value with a position")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(T, Mark), A::Error> {
            let mut mark = Mark::default();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "$line" => mark.line = map.next_value()?,
                    "$column" => mark.column = map.next_value()?,
                    _ => return Ok((map.next_value()?, mark)),
                }
            }
            Err(de::Error::custom("a position without a value"))
        }
    }
    deserializer.deserialize_struct(
        name,
        SPANNED_FIELDS,
        MarkedVisitor(std::marker::PhantomData),
    )
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (value, mark) = deserialize_marked(deserializer, SPANNED)?;
        Ok(Spanned { value, mark })
    }
}

/// A mapping value positioned at its key (`tls:`), for errors about the setting as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtKey<T> {
    /// The value as deserialized.
    pub value: T,
    /// Where its key starts.
    pub mark: Mark,
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for AtKey<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (value, mark) = deserialize_marked(deserializer, AT_KEY)?;
        Ok(AtKey { value, mark })
    }
}

/// A deserialization error, with the position of the innermost node it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// What went wrong, in a sentence.
    pub message: String,
    /// Where, when known.
    pub mark: Option<Mark>,
    /// How far recovery has dealt with it; see [`from_node`].
    handled: Handled,
    /// The field a `missing field` error is about, so that a field whose value was already
    /// refused is not reported a second time as missing.
    missing: Option<&'static str>,
}

/// Where an error stands in recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Not yet recorded.
    No,
    /// Nothing new to report (it follows from an error already recorded), but the value it is
    /// in cannot be built.
    Silent,
    /// Recorded, and the node it is in is left out of the next attempt.
    Retry,
}

impl DeError {
    /// An error at `mark`.
    pub fn new(message: impl Into<String>, mark: Option<Mark>) -> Self {
        DeError {
            message: message.into(),
            mark,
            handled: Handled::No,
            missing: None,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| !c.starts_with('$'))
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn one_of(expected: &[&str]) -> String {
    expected
        .iter()
        .filter(|e| !e.starts_with('$'))
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string(), None)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let hint = match did_you_mean(field, expected) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => String::new(),
        };
        DeError::custom(format!(
            "unknown field `{field}`{hint} (expected one of {})",
            one_of(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = match did_you_mean(variant, expected) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => String::new(),
        };
        DeError::custom(format!(
            "unknown value `{variant}`{hint} (expected one of {})",
            one_of(expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = DeError::custom(format!("missing field `{field}`"));
        e.missing = Some(field);
        e
    }
}

trait AtMark<T> {
    fn at(self, mark: Option<Mark>) -> Result<T, DeError>;
}

impl<T> AtMark<T> for Result<T, DeError> {
    /// Attaches `mark` unless a deeper node already did.
    fn at(self, mark: Option<Mark>) -> Result<T, DeError> {
        self.map_err(|mut e| {
            if e.mark.is_none() {
                e.mark = mark;
            }
            e
        })
    }
}

/// The magic field a struct declares (`#[serde(rename = "$damaged")]`) to learn which of its
/// fields lost all or part of their value to an error, so later checks do not report the
/// consequence ("no targets") of a mistake already reported ("`targets` has no value").
pub const DAMAGED: &str = "$damaged";

/// Upper bound on attempts for one node; each attempt leaves out one more node, so this is
/// only reached by a file with that many errors in one section.
const MAX_ATTEMPTS: usize = 10_000;

/// What one [`from_node`] call learns across its attempts.
#[derive(Default)]
struct Recovery {
    /// Mapping values and sequence items whose errors are recorded: later attempts leave them
    /// out. Identified by address: the tree does not move while it is read.
    skip: RefCell<HashSet<*const Node>>,
    /// Every error found so far, each once.
    errors: RefCell<Vec<DeError>>,
    /// Counts nodes left out, so an enclosing mapping can tell that a value lost a part.
    dropped: Cell<usize>,
}

impl Recovery {
    fn record(&self, mut e: DeError) {
        e.handled = Handled::No;
        e.missing = None;
        let mut errors = self.errors.borrow_mut();
        if !errors.contains(&e) {
            errors.push(e);
        }
    }

    fn skipped(&self, node: &Node) -> bool {
        self.skip.borrow().contains(&(node as *const Node))
    }

    fn drop_one(&self) {
        self.dropped.set(self.dropped.get() + 1);
    }

    /// The value `node` failed with `e`: records `e` (once) and leaves `node` out next time.
    fn fail(&self, node: &Node, mut e: DeError) -> DeError {
        match e.handled {
            Handled::Retry => return e,
            Handled::No => self.record(e.clone()),
            Handled::Silent => {}
        }
        self.skip.borrow_mut().insert(node as *const Node);
        e.handled = Handled::Retry;
        e
    }
}

/// Deserializes `T` from one node (the value of `key`, when it is one), interpolating `${VAR}`
/// in every scalar it reads, and collects every error rather than stopping at the first.
///
/// serde gives up on a value at its first error, so a failed attempt records the error and
/// leaves out the innermost mapping entry or list item it happened in, and the next attempt
/// reads what is left. Unknown keys are recorded and left out without a new attempt. The value
/// comes back when what is left still makes one (its structs list their `$damaged` fields);
/// the errors come back in either case.
pub fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    key: Option<&MarkedScalarNode>,
    env: &dyn Env,
) -> (Option<T>, Vec<DeError>) {
    let rec = Recovery::default();
    let mut value = None;
    for _ in 0..MAX_ATTEMPTS {
        let attempt = T::deserialize(NodeDe {
            node,
            cx: Cx { env, rec: &rec },
            key,
        })
        .at(Mark::of(node));
        match attempt {
            Ok(v) => {
                value = Some(v);
                break;
            }
            Err(e) if e.handled == Handled::Retry => continue,
            Err(e) => {
                if e.handled == Handled::No {
                    rec.record(e);
                }
                break;
            }
        }
    }
    (value, rec.errors.into_inner())
}

/// Parses YAML text into a node tree; the error carries a position when the parser gave one.
pub fn parse(text: &str) -> Result<Node, DeError> {
    if let Some(mark) = second_document(text) {
        return Err(DeError::new(
            "a second YAML document (`---`) in one file is not supported; \
                      put each document in its own file",
            Some(mark),
        ));
    }
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    // The parser is third-party code fed with operator input on a live reload path: a panic in
    // it must become a config error, not take the gateway down.
    let parsed =
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(0, text, options));
    match parsed {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(e)) => Err(load_error(e, text)),
        Err(_) => Err(DeError::new("the YAML parser failed on this file", None)),
    }
}

fn load_error(e: marked_yaml::LoadError, text: &str) -> DeError {
    use marked_yaml::LoadError as L;
    let (message, marker) = match &e {
        L::UnexpectedAnchor(m) => {
            // The parser reports anchors where the anchored node ends; point at the `&`.
            let mark = find_anchor(text).or(Some(Mark {
                line: m.line(),
                column: m.column(),
            }));
            return DeError::new(
                "YAML anchors and aliases are not supported (`&name`, `*name`)",
                mark,
            );
        }
        L::ScanError(m, scan) if scan.info().contains("unknown anchor") => (
            "invalid YAML: a value starting with `*` is read as an alias; quote it, \
             e.g. host: \"*.example.com\""
                .to_string(),
            *m,
        ),
        L::TopLevelMustBeMapping(m) => ("the file must be a mapping of sections".to_string(), *m),
        L::TopLevelMustBeSequence(m) => ("the file must be a sequence".to_string(), *m),
        L::MappingKeyMustBeScalar(m) => ("mapping keys must be plain strings".to_string(), *m),
        L::UnexpectedTag(m) => ("YAML tags (`!!type`) are not supported".to_string(), *m),
        L::ScanError(m, scan) => (format!("invalid YAML: {}", scan.info()), *m),
        L::DuplicateKey(d) => {
            let first = d.prev_key.span().start().map(|m| m.line()).unwrap_or(0);
            let message = format!(
                "duplicate key `{}` (first defined on line {first})",
                d.key.as_str()
            );
            return DeError::new(message, Mark::of_span(d.key.span()));
        }
    };
    DeError::new(
        message,
        (marker.line() > 0).then(|| Mark {
            line: marker.line(),
            column: marker.column(),
        }),
    )
}

/// The first `&name` anchor in the text, skipping comments and quoted strings.
fn find_anchor(text: &str) -> Option<Mark> {
    for (i, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (col, ch) in line.chars().enumerate() {
            match quote {
                Some(q) if ch == q => quote = None,
                Some(_) => {}
                None if ch == '\'' || ch == '"' => quote = Some(ch),
                None if ch == '#' && prev.is_whitespace() => break,
                None if ch == '&' && (prev.is_whitespace() || "[{,".contains(prev)) => {
                    return Some(Mark {
                        line: i + 1,
                        column: col + 1,
                    });
                }
                None => {}
            }
            prev = ch;
        }
    }
    None
}

/// The position of a `---` that starts a second document, if any.
fn second_document(text: &str) -> Option<Mark> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if seen_content {
                return Some(Mark {
                    line: i + 1,
                    column: 1,
                });
            }
            continue;
        }
        let content = trimmed.trim_start();
        if !content.is_empty() && !content.starts_with('#') && !content.starts_with('%') {
            seen_content = true;
        }
    }
    None
}

/// What every deserializer of one [`from_node`] call shares.
#[derive(Clone, Copy)]
struct Cx<'a> {
    env: &'a dyn Env,
    rec: &'a Recovery,
}

struct NodeDe<'a> {
    node: &'a Node,
    cx: Cx<'a>,
    /// The key this node is the value of, when it is a mapping value.
    key: Option<&'a MarkedScalarNode>,
}

impl<'a> NodeDe<'a> {
    fn mark(&self) -> Option<Mark> {
        Mark::of(self.node)
    }

    fn key_mark(&self) -> Option<Mark> {
        self.key.and_then(|k| Mark::of_span(k.span()))
    }

    fn scalar(&self) -> Option<&'a MarkedScalarNode> {
        self.node.as_scalar()
    }

    /// A plain (unquoted) `~`, `null` or empty scalar.
    fn is_null(&self) -> bool {
        self.scalar().is_some_and(|s| {
            s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
        })
    }

    /// A key written without a value (`issuer:` followed by a comment, or `~`) is refused: it
    /// reads as a setting but would act as no setting at all.
    fn refuse_no_value(&self) -> Result<(), DeError> {
        match self.key {
            Some(key) if self.is_null() => Err(DeError::new(
                format!(
                    "`{0}` has no value; write one, or remove `{0}` to leave it unset",
                    key.as_str()
                ),
                self.key_mark(),
            )),
            _ => Ok(()),
        }
    }

    /// A block of settings written empty (`auth:` with nothing under it, or `auth: {}`) is
    /// refused: leaving it out would mean the default, which is rarely what was meant.
    fn empty_settings(&self, fields: &[&str]) -> DeError {
        let what = match self.key {
            Some(key) => format!(
                "`{0}` is empty; write its settings, or remove `{0}`",
                key.as_str()
            ),
            None => "this item is empty; write its settings".to_string(),
        };
        DeError::new(
            format!("{what} (one or more of {})", one_of(fields)),
            self.key_mark().or(self.mark()),
        )
    }

    /// The scalar's text after `${VAR}` interpolation.
    fn text(&self, expected: &dyn de::Expected) -> Result<std::borrow::Cow<'a, str>, DeError> {
        self.refuse_no_value()?;
        match self.node {
            Node::Scalar(s) => interpolate(s.as_str(), self.cx.env)
                .map_err(DeError::custom)
                .at(self.mark()),
            other => Err(de::Error::invalid_type(unexpected(other), expected)).at(self.mark()),
        }
    }

    fn number<T: std::str::FromStr>(&self, what: &'static str) -> Result<T, DeError> {
        let text = self.text(&what)?;
        text.trim()
            .parse::<T>()
            .map_err(|_| DeError::new(format!("expected {what}, found `{text}`"), self.mark()))
    }

    fn visit_mapping<V: Visitor<'a>>(
        &self,
        map: &'a MarkedMappingNode,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map.iter() {
            if self.cx.rec.skipped(value) {
                self.cx.rec.drop_one();
            } else {
                entries.push((key, value));
            }
        }
        visitor
            .visit_map(MapDe::new(entries, self.cx, None))
            .at(self.mark())
    }

    /// A struct's mapping: unknown keys are recorded and left out here, so one typo does not
    /// hide the rest of the block, and the struct learns which fields were lost (`$damaged`).
    fn visit_struct<V: Visitor<'a>>(
        &self,
        map: &'a MarkedMappingNode,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let rec = self.cx.rec;
        let mut damaged = Vec::new();
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map.iter() {
            let name = key.as_str();
            if rec.skipped(value) {
                rec.drop_one();
                damaged.push(name.to_string());
                continue;
            }
            if name.starts_with('$') || !fields.contains(&name) {
                let e: DeError = de::Error::unknown_field(name, fields);
                rec.record(DeError::new(e.message, Mark::of_span(key.span())));
                rec.drop_one();
                if let Some(meant) = did_you_mean(name, fields) {
                    damaged.push(meant.to_string());
                }
                continue;
            }
            entries.push((key, value));
        }
        let wants = fields.contains(&DAMAGED).then(|| damaged.clone());
        visitor
            .visit_map(MapDe::new(entries, self.cx, wants))
            .at(self.mark())
            .map_err(|mut e| {
                let lost = e.missing.is_some_and(|f| damaged.iter().any(|d| d == f));
                if lost && e.handled == Handled::No {
                    e.handled = Handled::Silent;
                }
                e
            })
    }

    fn visit_sequence<V: Visitor<'a>>(
        &self,
        seq: &'a MarkedSequenceNode,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor
            .visit_seq(SeqDe {
                iter: seq.iter(),
                cx: self.cx,
            })
            .at(self.mark())
    }
}

fn unexpected(node: &Node) -> Unexpected<'_> {
    match node {
        Node::Scalar(s) => Unexpected::Str(s.as_str()),
        Node::Mapping(_) => Unexpected::Map,
        Node::Sequence(_) => Unexpected::Seq,
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident, $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            let n: $ty = self.number($what)?;
            visitor.$visit(n).at(self.mark())
        }
    )*};
}

impl<'a> de::Deserializer<'a> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            Node::Scalar(_) => {
                let text = self.text(&visitor)?;
                visitor.visit_str(&text).at(self.mark())
            }
            Node::Mapping(map) => self.visit_mapping(map, visitor),
            Node::Sequence(seq) => self.visit_sequence(seq, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text(&visitor)?;
        let value = match text.trim() {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            other => {
                return Err(DeError::new(
                    format!("expected true or false, found `{other}`"),
                    self.mark(),
                ))
            }
        };
        visitor.visit_bool(value).at(self.mark())
    }

    numbers! {
        deserialize_i8 => visit_i8, i8, "an integer";
        deserialize_i16 => visit_i16, i16, "an integer";
        deserialize_i32 => visit_i32, i32, "an integer";
        deserialize_i64 => visit_i64, i64, "an integer";
        deserialize_u8 => visit_u8, u8, "a non-negative integer";
        deserialize_u16 => visit_u16, u16, "a non-negative integer";
        deserialize_u32 => visit_u32, u32, "a non-negative integer";
        deserialize_u64 => visit_u64, u64, "a non-negative integer";
        deserialize_f32 => visit_f32, f32, "a number";
        deserialize_f64 => visit_f64, f64, "a number";
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text(&visitor)?;
        visitor.visit_str(&text).at(self.mark())
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A mapping value that is null still goes to the value's type, which refuses it with
        // what to write; only a null list item or root is `None`.
        if self.is_null() && self.key.is_none() {
            visitor.visit_none().at(self.mark())
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_unit().at(self.mark())
        } else {
            Err(de::Error::invalid_type(unexpected(self.node), &visitor)).at(self.mark())
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.refuse_no_value()?;
        match self.node {
            Node::Sequence(seq) => self.visit_sequence(seq, visitor),
            _ if self.is_null() => visitor.visit_seq(EmptyDe).at(self.mark()),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)).at(self.mark()),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.refuse_no_value()?;
        match self.node {
            Node::Mapping(map) => self.visit_mapping(map, visitor),
            _ if self.is_null() => visitor.visit_map(EmptyDe).at(self.mark()),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)).at(self.mark()),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED || name == AT_KEY {
            let own = self.mark();
            let mark = if name == AT_KEY {
                self.key_mark().or(own)
            } else {
                own
            };
            let mark = mark.unwrap_or_default();
            return visitor.visit_map(SpannedDe {
                state: 0,
                mark,
                de: Some(self),
            });
        }
        match self.node {
            Node::Mapping(map) if map.is_empty() => Err(self.empty_settings(fields)),
            Node::Mapping(map) => self.visit_struct(map, fields, visitor),
            _ if self.is_null() => Err(self.empty_settings(fields)),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)).at(self.mark()),
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.node {
            Node::Scalar(_) => {
                let text = self.text(&visitor)?.into_owned();
                visitor.visit_enum(text.into_deserializer()).at(self.mark())
            }
            Node::Mapping(map) if map.len() == 1 => {
                let (key, value) = map.iter().next().expect("one entry");
                visitor
                    .visit_enum(EnumDe {
                        key,
                        value,
                        cx: self.cx,
                    })
                    .at(self.mark())
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)).at(self.mark()),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// Presents a node as `{$line, $column, $value}` to `Spanned`'s visitor.
struct SpannedDe<D> {
    state: u8,
    mark: Mark,
    de: Option<D>,
}

impl<'a, D: de::Deserializer<'a, Error = DeError>> de::MapAccess<'a> for SpannedDe<D> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(key) = SPANNED_FIELDS.get(self.state as usize) else {
            return Ok(None);
        };
        seed.deserialize((*key).into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.state += 1;
        match self.state {
            1 => seed.deserialize((self.mark.line as u64).into_deserializer()),
            2 => seed.deserialize((self.mark.column as u64).into_deserializer()),
            _ => match self.de.take() {
                Some(de) => seed.deserialize(de),
                None => Err(DeError::custom("value read twice")),
            },
        }
    }
}

/// A mapping key: a plain name, never interpolated (`${X}` as a key is almost surely a
/// mistake), which may be read as `Spanned<String>` to report errors about it.
struct KeyDe<'a> {
    key: &'a MarkedScalarNode,
}

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.key.as_str())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED || name == AT_KEY {
            let mark = Mark::of_span(self.key.span()).unwrap_or_default();
            return visitor.visit_map(SpannedDe {
                state: 0,
                mark,
                de: Some(self),
            });
        }
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// What a [`MapDe`] hands out next as a value.
enum Pending<'a> {
    None,
    Entry(&'a MarkedScalarNode, &'a Node),
    Damaged,
}

struct MapDe<'a> {
    iter: std::vec::IntoIter<(&'a MarkedScalarNode, &'a Node)>,
    value: Pending<'a>,
    cx: Cx<'a>,
    /// Fields that lost their value; `Some` when the struct asked for them (`$damaged`),
    /// which are then handed out as the last entry.
    damaged: Option<Vec<String>>,
}

impl<'a> MapDe<'a> {
    fn new(
        entries: Vec<(&'a MarkedScalarNode, &'a Node)>,
        cx: Cx<'a>,
        damaged: Option<Vec<String>>,
    ) -> Self {
        MapDe {
            iter: entries.into_iter(),
            value: Pending::None,
            cx,
            damaged,
        }
    }
}

impl<'a> de::MapAccess<'a> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.iter.next() else {
            if self.damaged.is_some() && !matches!(self.value, Pending::Damaged) {
                self.value = Pending::Damaged;
                return seed.deserialize(DAMAGED.into_deserializer()).map(Some);
            }
            return Ok(None);
        };
        self.value = Pending::Entry(key, value);
        let mark = Mark::of_span(key.span());
        seed.deserialize(KeyDe { key })
            .map(Some)
            .at(mark)
            .map_err(|e| self.cx.rec.fail(value, e))
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match std::mem::replace(&mut self.value, Pending::None) {
            Pending::Entry(key, node) => {
                let rec = self.cx.rec;
                let before = rec.dropped.get();
                let value = seed
                    .deserialize(NodeDe {
                        node,
                        cx: self.cx,
                        key: Some(key),
                    })
                    .at(Mark::of(node))
                    .map_err(|e| rec.fail(node, e))?;
                if rec.dropped.get() != before {
                    if let Some(damaged) = &mut self.damaged {
                        damaged.push(key.as_str().to_string());
                    }
                }
                Ok(value)
            }
            Pending::Damaged => {
                self.value = Pending::Damaged;
                let names = self.damaged.take().unwrap_or_default();
                seed.deserialize(de::value::SeqDeserializer::<_, DeError>::new(
                    names.into_iter(),
                ))
            }
            Pending::None => Err(DeError::custom("value without key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct SeqDe<'a> {
    iter: std::slice::Iter<'a, Node>,
    cx: Cx<'a>,
}

impl<'a> de::SeqAccess<'a> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let node = loop {
            let Some(node) = self.iter.next() else {
                return Ok(None);
            };
            if !self.cx.rec.skipped(node) {
                break node;
            }
            self.cx.rec.drop_one();
        };
        seed.deserialize(NodeDe {
            node,
            cx: self.cx,
            key: None,
        })
        .map(Some)
        .at(Mark::of(node))
        .map_err(|e| self.cx.rec.fail(node, e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An empty map or sequence, for a list item written with no value.
struct EmptyDe;

impl<'a> de::MapAccess<'a> for EmptyDe {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        _seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, _seed: V) -> Result<V::Value, DeError> {
        Err(DeError::custom("empty mapping has no values"))
    }
}

impl<'a> de::SeqAccess<'a> for EmptyDe {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        _seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        Ok(None)
    }
}

/// An externally tagged enum written as a one-key mapping: `{variant: value}`.
struct EnumDe<'a> {
    key: &'a MarkedScalarNode,
    value: &'a Node,
    cx: Cx<'a>,
}

impl<'a> de::EnumAccess<'a> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'a>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let variant = seed
            .deserialize(self.key.as_str().into_deserializer())
            .at(Mark::of_span(self.key.span()))?;
        Ok((
            variant,
            NodeDe {
                node: self.value,
                cx: self.cx,
                key: Some(self.key),
            },
        ))
    }
}

impl<'a> de::VariantAccess<'a> for NodeDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::interpolate::MapEnv;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Route {
        name: String,
        #[serde(default)]
        methods: Vec<String>,
        upstream: Option<Spanned<String>>,
        weight: Option<u32>,
        enabled: Option<bool>,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        RoundRobin,
        Random,
    }

    fn env() -> MapEnv {
        MapEnv(
            [("NAME".to_string(), "from-env".to_string())]
                .into_iter()
                .collect(),
        )
    }

    fn load(text: &str) -> Result<Route, DeError> {
        let node = parse(text)?;
        let (value, mut errors) = from_node::<Route>(&node, None, &env());
        match value {
            Some(route) if errors.is_empty() => Ok(route),
            _ => Err(errors.remove(0)),
        }
    }

    /// Every error, with what could still be read.
    fn load_all(text: &str) -> (Option<Route>, Vec<(String, usize, usize)>) {
        let node = parse(text).expect("valid YAML");
        let (value, errors) = from_node::<Route>(&node, None, &env());
        let errors = errors
            .into_iter()
            .map(|e| {
                let m = e.mark.expect("error has a position");
                (e.message, m.line, m.column)
            })
            .collect();
        (value, errors)
    }

    fn err_at(text: &str) -> (String, usize, usize) {
        let e = load(text).expect_err("should fail");
        let m = e.mark.expect("error has a position");
        (e.message, m.line, m.column)
    }

    #[test]
    fn values_and_spans() {
        let r =
            load("name: a\nupstream: orders\nweight: 3\nenabled: true\nkind: random\n").unwrap();
        assert_eq!(r.name, "a");
        assert_eq!(r.weight, Some(3));
        assert_eq!(r.enabled, Some(true));
        assert_eq!(r.kind, Some(Kind::Random));
        let up = r.upstream.unwrap();
        assert_eq!(up.value, "orders");
        assert_eq!(
            up.mark,
            Mark {
                line: 2,
                column: 11
            }
        );
    }

    #[test]
    fn interpolates_scalars_not_keys() {
        let r = load("name: ${NAME}\n").unwrap();
        assert_eq!(r.name, "from-env");
        let (msg, line, col) = err_at("name: a\nupstream: ${MISSING}\n");
        assert!(msg.contains("MISSING"), "{msg}");
        assert_eq!((line, col), (2, 11));
    }

    #[test]
    fn errors_carry_positions() {
        let (msg, line, col) = err_at("name: a\nupstrem: x\n");
        assert!(msg.contains("did you mean `upstream`"), "{msg}");
        assert_eq!((line, col), (2, 1));

        let (msg, line, col) = err_at("name: a\nmethods: GET\n");
        assert!(msg.contains("expected a sequence"), "{msg}");
        assert_eq!((line, col), (2, 10));

        let (msg, line, _) = err_at("name: a\nweight: heavy\n");
        assert!(msg.contains("non-negative integer"), "{msg}");
        assert_eq!(line, 2);

        let (msg, line, _) = err_at("name: a\nenabled: yes\n");
        assert!(msg.contains("true or false"), "{msg}");
        assert_eq!(line, 2);

        let (msg, line, col) = err_at("name: a\nkind: round_robbin\n");
        assert!(msg.contains("did you mean `round_robin`"), "{msg}");
        assert_eq!((line, col), (2, 7));

        let (msg, line, _) = err_at("upstream: x\n");
        assert!(msg.contains("missing field `name`"), "{msg}");
        assert_eq!(line, 1);

        let (msg, line, _) = err_at("name: a\nmethods:\n  - [GET]\n");
        assert!(msg.contains("expected a string"), "{msg}");
        assert_eq!(line, 3);
    }

    #[test]
    fn a_key_without_a_value_is_refused_a_quoted_one_is_a_string() {
        for text in ["name: a\nupstream: ~\n", "name: a\nupstream:\n  # later\n"] {
            let (msg, line, col) = err_at(text);
            assert!(msg.contains("`upstream` has no value"), "{msg}");
            assert_eq!((line, col), (2, 1));
        }
        let r = load("name: a\nupstream: \"~\"\n").unwrap();
        assert_eq!(r.upstream.unwrap().value, "~");
    }

    #[test]
    fn every_error_is_collected_and_the_rest_is_still_read() {
        let (route, errors) =
            load_all("name: a\nweight: heavy\ncolour: red\nenabled: yes\nkind: random\n");
        let places: Vec<(usize, usize)> = errors.iter().map(|e| (e.1, e.2)).collect();
        assert_eq!(places, vec![(3, 1), (2, 9), (4, 10)], "{errors:?}");
        let route = route.expect("the valid fields still make a route");
        assert_eq!((route.weight, route.kind), (None, Some(Kind::Random)));

        // A required field whose value was refused is not reported again as missing.
        let (route, errors) = load_all("name: [a]\nweight: heavy\n");
        assert!(route.is_none());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| !e.0.contains("missing")),
            "{errors:?}"
        );
        // Nor is one whose key was misspelled.
        let (_, errors) = load_all("nme: a\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.contains("did you mean `name`"), "{errors:?}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Upstream {
        targets: Option<Vec<u32>>,
        timeout: Option<u32>,
        #[serde(default, rename = "$damaged")]
        damaged: Vec<String>,
    }

    #[test]
    fn a_struct_learns_which_fields_lost_their_value() {
        let node = parse("targets: [1, x, 3]\ntimout: 5\n").unwrap();
        let (value, errors) = from_node::<Upstream>(&node, None, &env());
        let value = value.expect("still an upstream");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(value.targets, Some(vec![1, 3]));
        assert_eq!(value.timeout, None);
        assert_eq!(value.damaged, vec!["timeout", "targets"]);

        let node = parse("targets: [1]\ntimeout: 5\n").unwrap();
        let (value, errors) = from_node::<Upstream>(&node, None, &env());
        assert!(errors.is_empty(), "{errors:?}");
        assert!(value.unwrap().damaged.is_empty());

        let (_, errors) = from_node::<Upstream>(&parse("$damaged: [x]\n").unwrap(), None, &env());
        assert!(
            errors[0].message.contains("unknown field `$damaged`"),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_settings_say_what_to_write() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            auth: Option<Upstream>,
        }
        for text in ["auth:\n  # soon\n", "auth: {}\n", "auth: ~\n"] {
            let (value, errors) = from_node::<Outer>(&parse(text).unwrap(), None, &env());
            assert!(value.is_some_and(|o| o.auth.is_none()));
            assert_eq!(errors.len(), 1, "{text}: {errors:?}");
            let e = &errors[0];
            assert!(e.message.contains("`auth` is empty"), "{e:?}");
            assert!(e.message.contains("`targets`, `timeout`"), "{e:?}");
            assert!(!e.message.contains("$damaged"), "{e:?}");
            assert_eq!(e.mark, Some(Mark { line: 1, column: 1 }), "{text}");
        }
    }

    #[test]
    fn syntax_errors_duplicates_and_documents() {
        let e = parse("name: a\nname: b\n").unwrap_err();
        assert!(e.message.contains("duplicate key `name`"), "{}", e.message);
        assert_eq!(e.mark.unwrap().line, 2);

        let e = parse("name: a\n  b: c\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
        assert_eq!(e.mark.unwrap().line, 2);

        let e = parse("name: a\n---\nname: b\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{}", e.message);
        assert_eq!(e.mark.unwrap().line, 2);

        assert!(parse("---\nname: a\n").is_ok());
        let e = parse("- a\n").unwrap_err();
        assert!(e.message.contains("mapping"), "{}", e.message);
    }
}
