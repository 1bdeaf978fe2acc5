//! Checks a located YAML tree against the JSON Schema that schemars derives from our typed
//! manifest, collecting every problem instead of stopping at the first, as serde would.
//! It understands the subset of JSON Schema that schemars emits for our types.

use serde_json::{Map, Value as J};

use crate::diagnostic::{Diagnostic, nearest};
use crate::tree::{Location, Node, Value};

/// Validates `node` against `schema` (whose `$defs` resolve `$ref`s). Plain scalars where
/// a string is expected become strings in place, so that `version: 15` reads as "15".
pub fn check(node: &mut Node, schema: &J) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let defs = schema.get("$defs").and_then(J::as_object).cloned().unwrap_or_default();
    let at = node.loc.clone();
    Checker { defs: &defs }.check(node, schema, "", &at, &mut out);
    out
}

struct Checker<'a> {
    defs: &'a Map<String, J>,
}

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s J) -> &'s J {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(J::as_str) {
            match r.strip_prefix("#/$defs/").and_then(|name| self.defs.get(name)) {
                Some(target) => s = target,
                None => break,
            }
        }
        s
    }

    /// `owner` is where the node's key is written: missing keys are reported there.
    fn check(&self, node: &mut Node, schema: &J, path: &str, owner: &Location, out: &mut Vec<Diagnostic>) {
        let schema = self.resolve(schema);
        if schema.as_bool() == Some(true) {
            return;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(J::as_array) {
                self.check_branches(node, branches, path, owner, out);
                return;
            }
        }
        if let Some(all) = schema.get("allOf").and_then(J::as_array) {
            for s in all {
                self.check(node, s, path, owner, out);
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                J::String(t) => vec![t.as_str()],
                J::Array(ts) => ts.iter().filter_map(J::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.is_empty() && !self.type_matches(node, &types) {
                let want = types.join(" or ").replace("object", "mapping").replace("array", "list");
                out.push(Diagnostic::new(
                    node.loc.clone(),
                    path,
                    format!("expected {want}, found {} `{}`", node.value.type_name(), short(&node.value)),
                ));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(J::as_array) {
            self.check_enum(node, allowed, path, out);
        }
        if let Some(c) = schema.get("const")
            && node.to_json() != *c
        {
            out.push(Diagnostic::new(node.loc.clone(), path, format!("must be `{}`", plain(c))));
        }
        self.check_bounds(node, schema, path, out);
        // Numbers too: a CPU amount may be written `0.5` (strings-only formats have
        // refused a number above already).
        let scalar = matches!(node.value, Value::Str { .. } | Value::Int(_) | Value::Float(_)).then(|| node.value.scalar_text()).flatten();
        if let (Some(format), Some(text)) = (schema.get("format").and_then(J::as_str), scalar)
            && let Some(Err(e)) = crate::units::check_format(format, &text)
        {
            out.push(Diagnostic::new(node.loc.clone(), path, e.to_string()));
        }
        match &mut node.value {
            Value::Map(_) => self.check_map(node, schema, path, owner, out),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        let at = item.loc.clone();
                        self.check(item, item_schema, &join(path, &i.to_string()), &at, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// For `anyOf`/`oneOf`, reports the errors of the branch that fits best, which for
    /// our types is the one that is not `null` or has the fewest complaints.
    fn check_branches(&self, node: &mut Node, branches: &[J], path: &str, owner: &Location, out: &mut Vec<Diagnostic>) {
        let mut best: Option<(Vec<Diagnostic>, Node)> = None;
        for b in branches {
            let mut candidate = node.clone();
            let mut errs = Vec::new();
            self.check(&mut candidate, b, path, owner, &mut errs);
            if errs.is_empty() {
                *node = candidate;
                return;
            }
            let better = match &best {
                None => true,
                Some((e, _)) => errs.len() < e.len() && !is_null_schema(self.resolve(b)),
            };
            if better {
                best = Some((errs, candidate));
            }
        }
        if let Some((errs, _)) = best {
            out.extend(errs);
        }
    }

    fn type_matches(&self, node: &mut Node, types: &[&str]) -> bool {
        let ok = types.iter().any(|t| {
            matches!(
                (*t, &node.value),
                ("null", Value::Null)
                    | ("boolean", Value::Bool(_))
                    | ("integer", Value::Int(_))
                    | ("number", Value::Int(_) | Value::Float(_))
                    | ("string", Value::Str { .. })
                    | ("array", Value::Seq(_))
                    | ("object", Value::Map(_))
            )
        });
        if ok {
            return true;
        }
        // An unquoted scalar such as `15` or `1.0` where a string is due is that string.
        if types.contains(&"string")
            && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
            && let Some(text) = node.value.scalar_text()
        {
            node.value = Value::Str { text, plain: true };
            return true;
        }
        false
    }

    fn check_enum(&self, node: &Node, allowed: &[J], path: &str, out: &mut Vec<Diagnostic>) {
        let value = node.to_json();
        if allowed.contains(&value) {
            return;
        }
        let names: Vec<String> = allowed.iter().map(plain).collect();
        let hint = node.value.scalar_text().and_then(|t| nearest(&t, names.iter().map(String::as_str))).map(|n| format!("did you mean `{n}`?"));
        out.push(Diagnostic::new(node.loc.clone(), path, format!("`{}` is not one of: {}", short(&node.value), names.join(", "))).with_hint(hint));
    }

    fn check_bounds(&self, node: &Node, schema: &J, path: &str, out: &mut Vec<Diagnostic>) {
        let n = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => return,
        };
        if let Some(min) = schema.get("minimum").and_then(J::as_f64)
            && n < min
        {
            out.push(Diagnostic::new(node.loc.clone(), path, format!("must be at least {min}, found {n}")));
        }
        if let Some(max) = schema.get("maximum").and_then(J::as_f64)
            && n > max
        {
            out.push(Diagnostic::new(node.loc.clone(), path, format!("must be at most {max}, found {n}")));
        }
    }

    fn check_map(&self, node: &mut Node, schema: &J, path: &str, owner: &Location, out: &mut Vec<Diagnostic>) {
        let empty = Map::new();
        let props = schema.get("properties").and_then(J::as_object).unwrap_or(&empty);
        let additional = schema.get("additionalProperties");
        let Value::Map(entries) = &mut node.value else { return };
        for (key, value) in entries.iter_mut() {
            let child = join(path, &key.name);
            match (props.get(&key.name), additional) {
                (Some(s), _) => self.check(value, s, &child, &key.loc, out),
                (None, Some(J::Bool(false))) => {
                    let hint = nearest(&key.name, props.keys().map(String::as_str))
                        .map(|n| format!("did you mean `{n}`?"))
                        .or_else(|| Some(format!("valid keys here: {}", list(props.keys()))));
                    out.push(Diagnostic::new(key.loc.clone(), &child, format!("unknown key `{}`", key.name)).with_hint(hint));
                }
                (None, Some(s)) if s.is_object() => self.check(value, s, &child, &key.loc, out),
                (None, _) => {}
            }
        }
        if let Some(required) = schema.get("required").and_then(J::as_array) {
            for r in required.iter().filter_map(J::as_str) {
                if !entries.iter().any(|(k, _)| k.name == r) {
                    out.push(Diagnostic::new(owner.clone(), &join(path, r), format!("missing required key `{r}`")));
                }
            }
        }
    }
}

fn is_null_schema(s: &J) -> bool {
    s.get("type").and_then(J::as_str) == Some("null")
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() { seg.to_string() } else { format!("{path}.{seg}") }
}

fn plain(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    match v.scalar_text() {
        Some(t) if t.len() > 40 => format!("{}…", &t[..t.char_indices().nth(40).map_or(t.len(), |(i, _)| i)]),
        Some(t) => t,
        None => v.type_name().to_string(),
    }
}

fn list<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(String::as_str).collect::<Vec<_>>().join(", ")
}
