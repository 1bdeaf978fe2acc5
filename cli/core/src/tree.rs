//! A YAML document as a tree whose every node remembers where it came from (file, line,
//! column), so that validation can point at the exact place of each problem, and so that
//! overlays (`-f`) and `--set` keep their own locations after merging.

use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diagnostic::Diagnostic;

/// Where a value was written: a file (or `--set`) and a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A YAML value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Location,
}

/// A key of a mapping; keys are always strings in manifests.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string. `plain` is true for unquoted scalars, whose text may be re-read as
    /// another type when the schema asks for a string (`version: 15` where a string is due).
    Str {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The name of the value's type as a user reads it in an error message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str { .. } => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// The source text of a scalar, as written.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some("null".into()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str { text, .. } => Some(text.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

impl Node {
    /// Parses one YAML document. `file` names the source in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
        let file: Arc<str> = Arc::from(file);
        let mut builder = Builder { stack: Vec::new(), root: None };
        for item in Parser::new_from_str(text) {
            let (event, span) = item.map_err(|e| {
                let at = Location { file: file.clone(), line: e.marker().line(), col: e.marker().col() + 1 };
                Diagnostic::new(at, "", format!("invalid YAML: {}", e.info()))
            })?;
            let loc = Location { file: file.clone(), line: span.start.line(), col: span.start.col() + 1 };
            match event {
                Event::Scalar(text, style, _, _) => builder.push(Node { value: scalar(&text, style), loc })?,
                Event::SequenceStart(..) => builder.stack.push(Open::Seq(loc, Vec::new())),
                Event::MappingStart(..) => builder.stack.push(Open::Map(loc, Vec::new(), None)),
                Event::SequenceEnd => {
                    if let Some(Open::Seq(loc, items)) = builder.stack.pop() {
                        builder.push(Node { value: Value::Seq(items), loc })?;
                    }
                }
                Event::MappingEnd => {
                    if let Some(Open::Map(loc, entries, _)) = builder.stack.pop() {
                        builder.push(Node { value: Value::Map(entries), loc })?;
                    }
                }
                Event::Alias(_) => {
                    return Err(Diagnostic::new(loc, "", "YAML aliases are not supported in manifests; write the value out"));
                }
                Event::DocumentStart(_) if builder.root.is_some() => {
                    return Err(Diagnostic::new(loc, "", "a manifest file holds one YAML document; found a second `---`"));
                }
                _ => {}
            }
        }
        Ok(builder.root.unwrap_or(Node { value: Value::Null, loc: Location { file, line: 1, col: 1 } }))
    }

    /// The mapping entry `name`, if this is a mapping that has it.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at a dotted path (`spec.shop.roles.0`), if present.
    pub fn at(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            node = match &node.value {
                Value::Map(_) => node.get(seg)?,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The location best describing `path`: the node itself, or its nearest present parent.
    pub fn locate(&self, path: &str) -> Location {
        let mut best = self.loc.clone();
        let mut node = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let next = match &node.value {
                Value::Map(_) => node.get(seg),
                Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => {
                    best = n.loc.clone();
                    node = n;
                }
                None => break,
            }
        }
        best
    }

    /// Merges `overlay` into `self`: mappings merge key by key, anything else is replaced.
    /// Replaced values keep the overlay's location, so errors point into the overlay.
    pub fn merge(&mut self, overlay: Node) {
        match (&mut self.value, overlay.value) {
            (Value::Map(base), Value::Map(over)) => {
                for (key, value) in over {
                    match base.iter_mut().find(|(k, _)| k.name == key.name) {
                        Some((_, existing)) => existing.merge(value),
                        None => base.push((key, value)),
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.loc = overlay.loc;
            }
        }
    }

    /// Sets the value at a dotted path, creating mappings on the way (`--set a.b=1`).
    /// Numeric segments index into existing lists.
    pub fn set(&mut self, path: &str, value: Node) -> Result<(), String> {
        let segs: Vec<&str> = path.split('.').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return Err(format!("`{path}` is not a key path like spec.shop.workers"));
        }
        let mut node = self;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            if matches!(node.value, Value::Null) {
                node.value = Value::Map(Vec::new());
            }
            let loc = value.loc.clone();
            node = match &mut node.value {
                Value::Map(entries) => {
                    let pos = match entries.iter().position(|(k, _)| k.name == *seg) {
                        Some(pos) => pos,
                        None => {
                            let empty = Node { value: Value::Null, loc: loc.clone() };
                            entries.push((Key { name: seg.to_string(), loc }, empty));
                            entries.len() - 1
                        }
                    };
                    &mut entries[pos].1
                }
                Value::Seq(items) => {
                    let len = items.len();
                    let idx = seg
                        .parse::<usize>()
                        .ok()
                        .filter(|i| *i < len)
                        .ok_or_else(|| format!("`{seg}` in `{path}` is not an index of a list of {len} items"))?;
                    &mut items[idx]
                }
                other => {
                    return Err(format!("`{}` in `{path}` is a {}, not a mapping", segs[..i].join("."), other.type_name()));
                }
            };
            if last {
                *node = value;
                return Ok(());
            }
        }
        Ok(())
    }

    /// The tree as JSON, for deserializing into typed structs once it has been validated.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str { text, .. } => J::String(text.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
}

enum Open {
    Seq(Location, Vec<Node>),
    /// A mapping under construction and the key waiting for its value.
    Map(Location, Vec<(Key, Node)>, Option<Key>),
}

struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
}

impl Builder {
    fn push(&mut self, node: Node) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, pending)) => match pending.take() {
                Some(key) => {
                    if entries.iter().any(|(k, _)| k.name == key.name) {
                        return Err(Diagnostic::new(key.loc, &key.name, format!("duplicate key `{}`", key.name)));
                    }
                    entries.push((key, node));
                }
                None => {
                    let name = match node.value {
                        Value::Str { text, .. } => text,
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null => node.value.scalar_text().unwrap_or_default(),
                        _ => {
                            return Err(Diagnostic::new(node.loc, "", "mapping keys must be plain strings"));
                        }
                    };
                    *pending = Some(Key { name, loc: node.loc });
                }
            },
        }
        Ok(())
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: quoted scalars are strings; plain ones
/// may be null, booleans, integers or floats.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str { text: text.to_string(), plain: false };
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Int(i);
    }
    let looks_numeric = text.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return Value::Float(f);
    }
    Value::Str { text: text.to_string(), plain: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based() {
        let n = Node::parse("m.yaml", "a:\n  b: 1\n  c: [x, 'y']\n").unwrap();
        let b = n.at("a.b").unwrap();
        assert_eq!((b.loc.line, b.loc.col), (2, 6));
        assert_eq!(b.value, Value::Int(1));
        let y = n.at("a.c.1").unwrap();
        assert_eq!(y.value, Value::Str { text: "y".into(), plain: false });
        assert_eq!(n.locate("a.c.9").line, 3);
    }

    #[test]
    fn duplicate_keys_are_reported_where_they_repeat() {
        let e = Node::parse("m.yaml", "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.loc.line, 3);
        assert!(e.message.contains("duplicate key `a`"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let e = Node::parse("m.yaml", "a:\n  - b\n c: [\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e}");
        assert!(e.loc.line >= 2, "{e}");
    }

    #[test]
    fn merge_and_set_keep_the_overlay_location() {
        let mut base = Node::parse("base.yaml", "spec:\n  shop:\n    workers: 1\n    roles: [a]\n").unwrap();
        base.merge(Node::parse("over.yaml", "spec:\n  shop:\n    workers: 2\n").unwrap());
        let w = base.at("spec.shop.workers").unwrap();
        assert_eq!((w.value.clone(), &*w.loc.file), (Value::Int(2), "over.yaml"));
        assert!(base.at("spec.shop.roles.0").is_some(), "untouched keys survive a merge");

        let v = Node::parse("--set", "3").unwrap();
        base.set("spec.shop.roles.0", v.clone()).unwrap();
        assert_eq!(base.at("spec.shop.roles.0").unwrap().value, Value::Int(3));
        base.set("spec.new.key", v.clone()).unwrap();
        assert_eq!(base.at("spec.new.key").unwrap().value, Value::Int(3));
        assert!(base.set("spec.shop.workers.x", v.clone()).unwrap_err().contains("not a mapping"));
        assert!(base.set("spec.shop.roles.5", v).unwrap_err().contains("not an index"));
    }
}
