//! Whether live objects still say what scalectl applied. The definition is a subset of
//! the live object (the API server and the controllers add defaults and status), so
//! every field scalectl sets must be there with the same value; anything else may be
//! whatever it is.

use scalectl_core::plan::Change;
use serde_json::Value;

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The fields of `want` that `live` does not have as wanted, named `Kind/name.path`.
pub fn changes(label: &str, want: &Value, live: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let Value::Object(top) = want else { return out };
    for (k, v) in top {
        match k.as_str() {
            // Lists leave the type out of their items; the name is how it was found.
            "apiVersion" | "kind" => {}
            "metadata" => {
                for part in ["labels", "annotations"] {
                    if !v[part].is_null() {
                        walk(&format!("{label}.metadata.{part}"), &v[part], &live["metadata"][part], &mut out);
                    }
                }
            }
            _ => walk(&format!("{label}.{k}"), v, &live[k.as_str()], &mut out),
        }
    }
    out
}

fn walk(path: &str, want: &Value, live: &Value, out: &mut Vec<Change>) {
    match (want, live) {
        (Value::Object(w), Value::Object(_)) => {
            for (k, v) in w {
                walk(&format!("{path}.{k}"), v, &live[k.as_str()], out);
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (a, b)) in w.iter().zip(l).enumerate() {
                walk(&format!("{path}.{i}"), a, b, out);
            }
        }
        (Value::Null, _) => {}
        _ if want == live => {}
        _ => out.push(Change { field: path.to_string(), from: (!live.is_null()).then(|| text(live)), to: Some(text(want)) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_status_are_not_drift_but_a_changed_field_is() {
        let want = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "labels": {"a": "b"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "shop", "ports": [{"containerPort": 8080}]}]}}}});
        let mut live = json!({"metadata": {"name": "shop", "uid": "x", "labels": {"a": "b", "extra": "c"}, "managedFields": []},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [{"name": "shop", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}, "status": {"replicas": 2}});
        assert_eq!(changes("Deployment/shop", &want, &live), []);
        live["spec"]["replicas"] = json!(5);
        live["metadata"]["labels"]["a"] = json!("z");
        let c = changes("Deployment/shop", &want, &live);
        let fields: Vec<(&str, Option<&str>, Option<&str>)> = c.iter().map(|c| (c.field.as_str(), c.from.as_deref(), c.to.as_deref())).collect();
        assert_eq!(fields, [("Deployment/shop.metadata.labels.a", Some("z"), Some("b")), ("Deployment/shop.spec.replicas", Some("5"), Some("2"))]);
        live["spec"]["template"]["spec"]["containers"] = json!([]);
        assert!(changes("Deployment/shop", &want, &live).iter().any(|c| c.field == "Deployment/shop.spec.template.spec.containers"));
    }
}
