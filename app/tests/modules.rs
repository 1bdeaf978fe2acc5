//! The shop's modules depend on each other without cycles: `state` holds only leaves
//! (`identity`, `flash_memory`, `buckets`, …), and the route modules use `state`. A
//! cycle makes every module in it compile, read and change as one; this keeps it so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::name` references of every module in `src/`, by module name.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == "rs")) else { continue };
        if matches!(name, "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let uses: BTreeSet<String> = text
            .match_indices("crate::")
            .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>())
            .filter(|m| !m.is_empty() && m != name)
            .collect();
        graph.insert(name.to_string(), uses);
    }
    graph
}

/// A cycle through `from`, if there is one, as the modules on it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == from) {
        return Some(path[at..].iter().cloned().chain([from.to_string()]).collect());
    }
    if !done.insert(from.to_string()) {
        return None;
    }
    path.push(from.to_string());
    for next in graph.get(from).into_iter().flatten() {
        if let Some(c) = cycle(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn the_shop_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("state") && graph.contains_key("flash"), "read the modules: {graph:?}");
    for m in graph.keys() {
        // `done` per start, so that a cycle reached from any module is reported whole.
        if let Some(c) = cycle(&graph, m, &mut Vec::new(), &mut BTreeSet::new()) {
            panic!("the shop's modules depend on each other in a cycle: {}", c.join(" → "));
        }
    }
    let leaves = ["identity", "flash_memory", "buckets", "cache", "db", "redis_link"];
    for leaf in leaves {
        assert!(!graph[leaf].contains("state"), "{leaf} is a leaf that `state` holds; it must not use `state`");
    }
}
