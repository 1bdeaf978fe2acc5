//! A resource's definition as the core holds it: the target's typed spec, serialized.
//!
//! Each target owns the types of its specs (`cli/local/src/spec.rs` has one serde-tagged
//! variant per kind) and builds them in its `expand`; the core never reads a field. It
//! records the serialized object in state and `plan` diffs it as dotted paths, so a new
//! target brings new spec types without a change here.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A typed spec serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Spec(Map<String, Value>);

/// A spec that could not be written or read back; names the resource.
#[derive(Debug, thiserror::Error)]
#[error("the definition of {id} {problem}")]
pub struct SpecError {
    pub id: String,
    pub problem: String,
}

impl Spec {
    /// `typed` serialized; it must serialize as a map (a struct or a tagged enum).
    pub fn of<S: Serialize>(typed: &S) -> Result<Spec, serde_json::Error> {
        match serde_json::to_value(typed)? {
            Value::Object(m) => Ok(Spec(m)),
            other => Err(serde::ser::Error::custom(format!("is not a map but {other}"))),
        }
    }

    /// Reads the spec back as `S`, with `extra` entries added first (a tag the resource
    /// keeps beside its spec, such as its kind).
    pub fn read<S: DeserializeOwned>(&self, id: &str, extra: &[(&str, &str)]) -> Result<S, SpecError> {
        let mut m = self.0.clone();
        for (k, v) in extra {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
        serde_json::from_value(Value::Object(m)).map_err(|e| SpecError { id: id.to_string(), problem: format!("cannot be read: {e}") })
    }

    /// Removes a top-level entry (the tag of a tagged enum, kept beside the spec).
    pub fn without(mut self, key: &str) -> Spec {
        self.0.remove(key);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value as text under its dotted path (`server.max_connections`), the way
    /// `plan` shows a change: strings as they are, lists of scalars joined with commas,
    /// other values as JSON; nulls are left out, as an absent field is.
    pub fn leaves(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.0 {
            leaf(k, v, &mut out);
        }
        out
    }
}

fn leaf(path: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Null => {}
        Value::String(s) => {
            out.insert(path.to_string(), s.clone());
        }
        Value::Object(m) => {
            for (k, v) in m {
                leaf(&format!("{path}.{k}"), v, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let text: Vec<String> = items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)).collect();
            out.insert(path.to_string(), text.join(","));
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaf(&format!("{path}.{i}"), v, out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Spec {
    /// A spec of text values, as tests and state from before typed specs write them.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Spec(pairs.into_iter().map(|(k, v)| (k.into(), Value::String(v.into()))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Server {
        max_connections: u32,
        libraries: Vec<String>,
        tuning: Tuning,
        replica_of: Option<String>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Tuning {
        work_mem: String,
    }

    #[test]
    fn a_typed_spec_diffs_as_dotted_paths_and_reads_back() {
        let s = Server { max_connections: 100, libraries: vec!["a".into(), "b".into()], tuning: Tuning { work_mem: "4MB".into() }, replica_of: None };
        let spec = Spec::of(&s).unwrap();
        let leaves = spec.leaves();
        assert_eq!(leaves.get("max_connections").map(String::as_str), Some("100"));
        assert_eq!(leaves.get("libraries").map(String::as_str), Some("a,b"));
        assert_eq!(leaves.get("tuning.work_mem").map(String::as_str), Some("4MB"));
        assert!(!leaves.contains_key("replica_of"), "an absent value is not a leaf");
        assert_eq!(spec.read::<Server>("postgres/x", &[]).unwrap(), s);
        let e = Spec::from_iter([("max_connections", "many")]).read::<Server>("postgres/x", &[]).unwrap_err();
        assert!(e.to_string().starts_with("the definition of postgres/x cannot be read"), "{e}");
    }
}
