//! Objects as YAML, the way `kubectl get -o yaml` writes them: block maps and lists, keys in
//! alphabetical order (as JSON values keep them), strings quoted only when a plain scalar would read as
//! something else, multi-line text as a literal block.
//!
//! Written here rather than taken from a YAML crate because the value is already JSON
//! (what the typed objects serialize to) and the output must be byte-stable across
//! releases: `render` output is diffed and golden-tested.

use serde_json::Value;

/// `value` as one YAML document (no `---`), ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_list(&mut out, a, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// Several objects as one multi-document stream, each introduced by `---`.
pub fn to_yaml_stream<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(v));
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a list sits on the list's dash line.
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&scalar_text(k));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

fn write_list(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        pad(out, indent);
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => write_map(out, m, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            Value::String(s) if s.contains('\n') => write_block(out, s, indent + 2),
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        // A list under a key is not indented further, as kubectl writes it.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_list(out, a, indent);
        }
        Value::String(s) if s.contains('\n') => {
            out.push(' ');
            write_block(out, s, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// Multi-line text as a literal block (`|` keeps one final newline, `|-` none); text a
/// block cannot carry exactly (leading spaces, trailing blank lines, tabs) is quoted.
fn write_block(out: &mut String, s: &str, indent: usize) {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let exact = !body.starts_with(' ') && !body.ends_with('\n') && !s.contains('\t') && !s.contains('\r') && body.lines().all(|l| l == l.trim_end());
    if !exact {
        out.push_str(&quoted(s));
        out.push('\n');
        return;
    }
    out.push_str(if s.ends_with('\n') { "|\n" } else { "|-\n" });
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a plain scalar when YAML reads that back as the same string, else quoted.
fn scalar_text(s: &str) -> String {
    if plain_is_safe(s) { s.to_string() } else { quoted(s) }
}

/// JSON's quoting is YAML's double-quoted style.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if !(first.is_ascii_alphanumeric() || first == '/' || first == '_' || first == '.') {
        return false;
    }
    if s.ends_with(' ') || s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || " -_./:=@$(){}+,".contains(c)) {
        return false;
    }
    // YAML 1.1 and 1.2 readers take these as booleans, nulls or numbers.
    let lower = s.to_ascii_lowercase();
    let keyword = matches!(lower.as_str(), "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~" | ".inf" | ".nan");
    !keyword && !looks_numeric(s)
}

fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    t.parse::<f64>().is_ok()
        || t.starts_with("0x")
        || t.starts_with("0o")
        || (t.chars().all(|c| c.is_ascii_digit() || c == '_' || c == ':') && t.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_kubectl_writes_for_a_small_object() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "labels": {"app.kubernetes.io/name": "shop"}},
            "spec": {"ports": [{"name": "http", "port": 8080}], "selector": {"app": "shop"}}
        });
        assert_eq!(
            to_yaml(&v),
            "apiVersion: v1\nkind: Service\nmetadata:\n  labels:\n    app.kubernetes.io/name: shop\n  name: shop\nspec:\n  ports:\n  - name: http\n    port: 8080\n  selector:\n    app: shop\n"
        );
    }

    #[test]
    fn quotes_strings_that_would_read_as_something_else() {
        for s in ["true", "on", "No", "8080", "1.5", "0x1f", "", " lead", "a: b", "#x", "*x", "-1", "10:30", "trail "] {
            assert_ne!(scalar_text(s), s, "{s:?} must be quoted");
        }
        for s in ["shop", "100Mi", "db-main-rw", "postgres://$(DB_USER)@db:5432/shop", "/readyz", "v1.33"] {
            assert_eq!(scalar_text(s), s);
        }
    }

    #[test]
    fn every_document_reads_back_as_the_same_value() {
        let v = json!({
            "a": ["x", {"b": 1, "c": [true, null, "yes"]}, [1, 2]],
            "text": "line one\n  indented\n\nlast\n",
            "nofinal": "one\ntwo",
            "tabbed": "a\tb\nc",
            "empty": {}, "none": [], "q": "it's \"quoted\"", "unicode": "é"
        });
        let text = to_yaml(&v);
        assert_eq!(read_back(&text), v, "{text}");
    }

    /// A minimal reader over saphyr's events, for the round trip above.
    fn read_back(text: &str) -> Value {
        use saphyr_parser::{Event, Parser, ScalarStyle};
        let mut stack: Vec<(Value, Option<String>)> = Vec::new();
        let mut done = None;
        let push = |stack: &mut Vec<(Value, Option<String>)>, v: Value, done: &mut Option<Value>| match stack.last_mut() {
            None => *done = Some(v),
            Some((Value::Array(a), _)) => a.push(v),
            Some((Value::Object(m), key)) => match key.take() {
                None => *key = Some(v.as_str().expect("string keys").to_string()),
                Some(k) => {
                    m.insert(k, v);
                }
            },
            _ => unreachable!(),
        };
        for item in Parser::new_from_str(text) {
            let (ev, _) = item.expect("valid YAML");
            match ev {
                Event::MappingStart(..) => stack.push((Value::Object(Default::default()), None)),
                Event::SequenceStart(..) => stack.push((Value::Array(Vec::new()), None)),
                Event::MappingEnd | Event::SequenceEnd => {
                    let (v, _) = stack.pop().unwrap();
                    push(&mut stack, v, &mut done);
                }
                Event::Scalar(s, style, ..) => {
                    let v = if style != ScalarStyle::Plain {
                        Value::String(s.to_string())
                    } else if let Ok(n) = s.parse::<i64>() {
                        json!(n)
                    } else {
                        match s.as_ref() {
                            "true" => json!(true),
                            "false" => json!(false),
                            "null" => Value::Null,
                            "[]" => json!([]),
                            "{}" => json!({}),
                            _ => Value::String(s.to_string()),
                        }
                    };
                    push(&mut stack, v, &mut done);
                }
                _ => {}
            }
        }
        done.expect("one document")
    }
}
