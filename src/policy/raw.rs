//! The first loading stage: TOML text → a tree of values that all remember their byte span.
//!
//! `serde` with `deny_unknown_fields` stops at the first mistake, and a security officer fixing a
//! policy one error per run is a poor experience. So the TOML is read into a generic spanned
//! tree ([`Node`]) — the only way this stage fails is a TOML *syntax* error — and
//! [`TableReader`] then walks it key by key, collecting every problem it meets (wrong type,
//! missing key, unknown key) instead of stopping. `compile.rs` turns the tree into a [`Policy`].
//!
//! Must not: know anything about policy semantics (that is `compile.rs`).
//!
//! [`Policy`]: super::Policy

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::error::{Problem, SourceText};

/// One TOML value with the byte range it occupies in the source text.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub value: Value,
}

/// A TOML value whose children are spanned too.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float,
    Bool(bool),
    /// Offset date-times and friends: never valid in a policy, kept only to name them in errors.
    Datetime,
    Array(Vec<Node>),
    Table(Vec<(Key, Node)>),
}

/// A table key with its span (pointing at the key itself, so "unknown key" errors land on it).
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub span: Range<usize>,
}

impl Value {
    /// The TOML type name, for "found a string, expected a table" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Ask for the spanned form. toml answers with a (start, end, value) map when it knows
        // the span; for tables it created implicitly (`[[forward.signal]]` without
        // `[forward]`) it hands over the table itself, which `NodeVisitor` also accepts.
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_str(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        unspanned(ValueVisitor.visit_string(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        unspanned(ValueVisitor.visit_seq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<KeySeedOut>()? else {
            return Ok(Node {
                span: 0..0,
                value: Value::Table(Vec::new()),
            });
        };
        if matches!(
            first.name.as_str(),
            SPANNED_START | SPANNED_END | SPANNED_VALUE
        ) {
            let (mut start, mut end, mut value) = (None, None, None);
            let mut key = Some(first.name);
            while let Some(k) = key {
                match k.as_str() {
                    SPANNED_START => start = Some(map.next_value::<usize>()?),
                    SPANNED_END => end = Some(map.next_value::<usize>()?),
                    SPANNED_VALUE => value = Some(map.next_value::<Value>()?),
                    _ => return Err(de::Error::custom("unexpected field in a spanned value")),
                }
                key = map.next_key::<String>()?;
            }
            let value = value.ok_or_else(|| de::Error::custom("spanned value without a value"))?;
            let start = start.unwrap_or(0);
            let end = end.unwrap_or(start).max(start);
            return Ok(Node {
                span: start..end,
                value,
            });
        }
        // A table without a span: read it like any table, starting with the key in hand.
        if first.name == TOML_DATETIME_KEY {
            let _: de::IgnoredAny = map.next_value()?;
            return Ok(Node {
                span: 0..0,
                value: Value::Datetime,
            });
        }
        let mut entries = vec![(
            Key {
                name: first.name,
                span: first.span,
            },
            map.next_value::<Node>()?,
        )];
        read_entries(&mut map, &mut entries)?;
        Ok(Node {
            span: 0..0,
            value: Value::Table(entries),
        })
    }
}

fn unspanned<E>(v: Result<Value, E>) -> Result<Node, E> {
    v.map(|value| Node { span: 0..0, value })
}

fn read_entries<'de, A: MapAccess<'de>>(
    map: &mut A,
    entries: &mut Vec<(Key, Node)>,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<KeySeedOut>()? {
        let node = map.next_value::<Node>()?;
        entries.push((
            Key {
                name: key.name,
                span: key.span,
            },
            node,
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

/// The key toml uses to smuggle a date-time through serde as a one-entry map.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Value, E> {
        Ok(Value::Float)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        let Some(first) = map.next_key::<KeySeedOut>()? else {
            return Ok(Value::Table(entries));
        };
        if first.name == TOML_DATETIME_KEY {
            let _: de::IgnoredAny = map.next_value()?;
            return Ok(Value::Datetime);
        }
        let node = map.next_value::<Node>()?;
        entries.push((
            Key {
                name: first.name,
                span: first.span,
            },
            node,
        ));
        read_entries(&mut map, &mut entries)?;
        Ok(Value::Table(entries))
    }
}

/// A key as read from the map: spanned when toml can give a span (ordinary keys), plain for
/// the private date-time key (whose deserializer knows nothing of spans).
struct KeySeedOut {
    name: String,
    span: Range<usize>,
}

impl<'de> Deserialize<'de> for KeySeedOut {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `Spanned` asks for a struct with private field names; toml's key deserializer answers
        // with a map (start, end, value). The date-time field deserializer answers every request
        // with a plain string, which `KeyVisitor::visit_str` accepts without a span.
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeySeedOut;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySeedOut, E> {
        Ok(KeySeedOut {
            name: v.to_owned(),
            span: 0..0,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySeedOut, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut name = None;
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                _ => return Err(de::Error::custom("unexpected field in spanned key")),
            }
        }
        let name = name.ok_or_else(|| de::Error::custom("spanned key without a value"))?;
        let (start, end) = (start.unwrap_or(0), end.unwrap_or(0));
        Ok(KeySeedOut {
            name,
            span: start..end.max(start),
        })
    }
}

/// Parse file `file` of `src` into a spanned tree whose spans are shared offsets (see
/// [`SourceText`]); the only error is a TOML syntax error, reported with its position.
pub(crate) fn parse(src: &SourceText, file: usize) -> Result<Node, Box<Problem>> {
    let base = src.base(file);
    match toml::from_str::<Node>(&src.file(file).text) {
        Ok(mut node) => {
            if base > 0 {
                shift(&mut node, base);
            }
            Ok(node)
        }
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            Err(Box::new(src.problem(
                span.start + base..span.end + base,
                "",
                format!("invalid TOML ({message})"),
                "valid TOML syntax".to_owned(),
            )))
        }
    }
}

/// Move every span of a tree parsed from one file to that file's place in the shared offsets.
fn shift(node: &mut Node, base: usize) {
    node.span = node.span.start + base..node.span.end + base;
    match &mut node.value {
        Value::Array(items) => items.iter_mut().for_each(|n| shift(n, base)),
        Value::Table(entries) => {
            for (key, n) in entries {
                key.span = key.span.start + base..key.span.end + base;
                shift(n, base);
            }
        }
        _ => {}
    }
}

/// Reads one TOML table, remembering which keys were consumed so that whatever is left at the
/// end can be reported as unknown. Every accessor reports its own type errors into `problems`
/// and returns `None`, so the caller simply carries on.
pub(crate) struct TableReader<'a> {
    src: &'a SourceText,
    path: String,
    span: Range<usize>,
    entries: Vec<(&'a Key, &'a Node, bool)>,
}

impl<'a> TableReader<'a> {
    /// Start reading `node` (which must be a table, otherwise a problem is recorded and the
    /// reader is empty). `path` is the dotted key path used in messages (`domains.ceilings`).
    pub fn new(
        src: &'a SourceText,
        node: &'a Node,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let entries = match &node.value {
            Value::Table(entries) => entries.iter().map(|(k, v)| (k, v, false)).collect(),
            other => {
                problems.push(src.problem(
                    node.span.clone(),
                    path,
                    other.type_name().to_owned(),
                    "a table".to_owned(),
                ));
                Vec::new()
            }
        };
        TableReader {
            src,
            path: path.to_owned(),
            span: node.span.clone(),
            entries,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The span of the whole table (for "missing key" errors).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The dotted path of a child key.
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// Is the key present (taken or not)?
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| k.name == key)
    }

    /// Take a key's node, marking it as known.
    pub fn take(&mut self, key: &str) -> Option<&'a Node> {
        let slot = self.entries.iter_mut().find(|(k, _, _)| k.name == key)?;
        slot.2 = true;
        Some(slot.1)
    }

    /// Take every entry not yet taken (used for tables whose keys are data, e.g. ceilings).
    pub fn take_all(&mut self) -> Vec<(&'a Key, &'a Node)> {
        self.entries
            .iter_mut()
            .filter(|(_, _, used)| !*used)
            .map(|slot| {
                slot.2 = true;
                (slot.0, slot.1)
            })
            .collect()
    }

    fn type_problem(&self, key: &str, node: &Node, expected: &str, problems: &mut Vec<Problem>) {
        problems.push(self.src.problem(
            node.span.clone(),
            &self.child_path(key),
            node.value.type_name().to_owned(),
            expected.to_owned(),
        ));
    }

    /// Report a missing required key.
    pub fn missing(&self, key: &str, expected: &str, problems: &mut Vec<Problem>) {
        problems.push(self.src.problem(
            self.span.clone(),
            &self.path,
            format!("no `{key}` key"),
            format!("`{key}` ({expected})"),
        ));
    }

    pub fn string(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Spanned<String>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Str(s) => Some(Spanned::new(node.span.clone(), s.clone())),
            _ => {
                self.type_problem(key, node, "a string", problems);
                None
            }
        }
    }

    pub fn required_string(
        &mut self,
        key: &str,
        expected: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Spanned<String>> {
        if self.entries.iter().any(|(k, _, _)| k.name == key) {
            self.string(key, problems)
        } else {
            self.missing(key, expected, problems);
            None
        }
    }

    pub fn bool(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Spanned<bool>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Bool(b) => Some(Spanned::new(node.span.clone(), *b)),
            _ => {
                self.type_problem(key, node, "true or false", problems);
                None
            }
        }
    }

    pub fn int(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Spanned<i64>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Int(i) => Some(Spanned::new(node.span.clone(), *i)),
            _ => {
                self.type_problem(key, node, "an integer", problems);
                None
            }
        }
    }

    /// An array of strings; non-string items are reported and skipped.
    pub fn strings(
        &mut self,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Vec<Spanned<String>>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match &item.value {
                        Value::Str(s) => out.push(Spanned::new(item.span.clone(), s.clone())),
                        other => problems.push(self.src.problem(
                            item.span.clone(),
                            &self.child_path(key),
                            other.type_name().to_owned(),
                            "a string".to_owned(),
                        )),
                    }
                }
                Some(out)
            }
            _ => {
                self.type_problem(key, node, "an array of strings", problems);
                None
            }
        }
    }

    /// A sub-table.
    pub fn table(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<TableReader<'a>> {
        let node = self.take(key)?;
        let path = self.child_path(key);
        Some(TableReader::new(self.src, node, &path, problems))
    }

    /// An array of tables (`[[rule]]`).
    pub fn tables(&mut self, key: &str, problems: &mut Vec<Problem>) -> Vec<TableReader<'a>> {
        let Some(node) = self.take(key) else {
            return Vec::new();
        };
        let path = self.child_path(key);
        match &node.value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    TableReader::new(self.src, item, &format!("{path}[{}]", i + 1), problems)
                })
                .collect(),
            _ => {
                self.type_problem(key, node, "an array of tables", problems);
                Vec::new()
            }
        }
    }

    /// Report every key that no accessor asked for. `known` lists the keys this table accepts,
    /// for the "expected one of" part of the message.
    pub fn finish(self, known: &[&str], problems: &mut Vec<Problem>) {
        for (key, _, used) in &self.entries {
            if !used {
                let span = if key.span.is_empty() {
                    self.span.clone()
                } else {
                    key.span.clone()
                };
                problems.push(self.src.problem(
                    span,
                    &self.path,
                    format!("unknown key `{}`", key.name),
                    if known.is_empty() {
                        "no keys here".to_owned()
                    } else {
                        format!("one of {}", quote_list(known))
                    },
                ));
            }
        }
    }
}

/// `a`, `b` or `c` — for "expected one of" messages.
pub(crate) fn quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}
