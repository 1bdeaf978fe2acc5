//! Experiment text to a typed [`Experiment`], or every located problem: the manifest's
//! path through `scalectl_core` (located tree, JSON Schema check, rules), plus located
//! errors for values that only fail when parsed (durations, comparisons).

use scalectl_core::Diagnostic;
use scalectl_core::schema_check;
use scalectl_core::tree::Node;
use serde_json::Value as J;

use crate::experiment::{Experiment, json_schema};

/// Validates an experiment file; `file` names it in diagnostics.
pub fn load(file: &str, text: &str) -> Result<Experiment, Vec<Diagnostic>> {
    let mut tree = Node::parse(file, text).map_err(|d| vec![d])?;
    let mut problems = schema_check::check(&mut tree, &json_schema());
    // Values with their own parser that the schema check does not know (comparisons) are
    // reported with its problems; one the check already refused is not repeated.
    let experiment = match deserialize(&tree) {
        Ok(e) if problems.is_empty() => e,
        Ok(_) => return Err(problems),
        Err(more) => {
            problems.extend(more.into_iter().filter(|d| !problems.iter().any(|p| p.path == d.path)).collect::<Vec<_>>());
            return Err(problems);
        }
    };
    let broken = crate::rules::check(&experiment);
    if broken.is_empty() {
        Ok(experiment)
    } else {
        Err(broken.into_iter().map(|(path, msg)| Diagnostic::new(tree.locate(&path), &path, msg)).collect())
    }
}

/// After the schema check only values with their own parser can fail here. Each failure
/// is located by its path, then replaced by a value every such parser accepts, so that
/// all of them are reported at once rather than one per run.
fn deserialize(tree: &Node) -> Result<Experiment, Vec<Diagnostic>> {
    const PLACEHOLDER: &str = "0s";
    let mut json = tree.to_json();
    let mut problems: Vec<Diagnostic> = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, Experiment>(&json) {
            Ok(e) if problems.is_empty() => return Ok(e),
            Ok(_) => return Err(problems),
            Err(e) => {
                let path = dotted(e.path());
                let diagnostic = Diagnostic::new(tree.locate(&path), &path, e.inner().to_string());
                let replaced = pointer(&mut json, &path).filter(|v| v.as_str() != Some(PLACEHOLDER));
                problems.push(diagnostic);
                match replaced {
                    Some(v) => *v = J::from(PLACEHOLDER),
                    None => return Err(problems),
                }
            }
        }
    }
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn pointer<'a>(json: &'a mut J, dotted: &str) -> Option<&'a mut J> {
    let escaped: Vec<String> = dotted.split('.').filter(|s| !s.is_empty()).map(|s| s.replace('~', "~0").replace('/', "~1")).collect();
    if escaped.is_empty() {
        return None;
    }
    json.pointer_mut(&format!("/{}", escaped.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{FaultKind, Target};
    use crate::library::{SHIPPED, shipped};

    fn errors(text: &str) -> Vec<Diagnostic> {
        load("x.yaml", text).expect_err("expected the experiment to be rejected")
    }

    /// Line and column of the first occurrence of `needle` in `text`, 1-based.
    fn pos(text: &str, needle: &str) -> (usize, usize) {
        let at = text.find(needle).expect(needle);
        let line = text[..at].matches('\n').count() + 1;
        let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    fn primary_loss() -> &'static str {
        shipped("primary-loss").unwrap().text
    }

    #[test]
    fn every_shipped_experiment_validates_and_is_named_after_its_file() {
        assert_eq!(SHIPPED.len(), 15);
        for s in SHIPPED {
            let e = load(s.file, s.text)
                .unwrap_or_else(|errs| panic!("{}:\n{}", s.file, errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")));
            assert_eq!(e.metadata.name, s.name, "{}", s.file);
            assert!(e.steady_state.probes.iter().all(|p| p.check().is_some()), "{}", s.file);
        }
        let e = load("p.yaml", primary_loss()).unwrap();
        assert_eq!((e.method[0].kind, e.method[0].target), (FaultKind::NodeLoss, Some(Target::Leader)));
        assert_eq!(e.checks.availability.unwrap().max_rto, Some(crate::span::Span::secs(30)));
        let p = load("p.yaml", shipped("partition-primary-from-replicas").unwrap().text).unwrap();
        assert_eq!(p.method[0].between.as_deref(), Some(&[Target::Leader, Target::Replicas][..]));
    }

    #[test]
    fn a_misspelt_key_and_a_bad_enum_are_located_with_hints() {
        let text = primary_loss().replace("    target: leader\n", "    targt: leader\n").replace("scenario: checkout", "scenario: chekout");
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        let key = errs.iter().find(|e| e.path == "method.0.targt").expect("unknown key");
        assert_eq!((key.loc.line, key.loc.col), pos(&text, "targt"));
        assert_eq!(key.hint.as_deref(), Some("did you mean `target`?"));
        assert!(key.to_string().starts_with(&format!("x.yaml:{}:{}: method.0.targt: unknown key `targt`", key.loc.line, key.loc.col)), "{key}");
        let scen = errs.iter().find(|e| e.path == "workload.scenario").expect("bad enum");
        assert_eq!(scen.loc.line, pos(&text, "chekout").0);
        assert_eq!(scen.hint.as_deref(), Some("did you mean `checkout`?"));
    }

    #[test]
    fn a_misspelt_probe_kind_and_target_get_hints() {
        let text = primary_loss().replace("      sql:\n", "      sqll:\n").replace("target: leader", "target: leadr");
        let errs = errors(&text);
        let probe = errs.iter().find(|e| e.path == "steadyState.probes.2.sqll").expect("probe kind");
        assert_eq!(probe.hint.as_deref(), Some("did you mean `sql`?"));
        let target = errs.iter().find(|e| e.path == "method.0.target").expect("target");
        assert_eq!(target.hint.as_deref(), Some("did you mean `leader`?"));
        assert_eq!(target.loc.line, pos(&text, "leadr").0);
    }

    #[test]
    fn bad_durations_and_comparisons_are_all_located() {
        let text =
            primary_loss().replace("at: 20s", "at: soon").replace("expect: \">= 1\"", "expect: \">= one\"").replace("duration: 90s", "duration: 90");
        let errs = errors(&text);
        let got: Vec<(&str, usize)> = errs.iter().map(|e| (e.path.as_str(), e.loc.line)).collect();
        assert_eq!(errs.len(), 3, "{got:?}");
        assert!(got.contains(&("method.0.at", pos(&text, "soon").0)), "{got:?}");
        assert!(got.contains(&("steadyState.probes.2.sql.expect", pos(&text, ">= one").0)), "{got:?}");
        assert!(got.contains(&("workload.duration", pos(&text, "duration: 90\n").0)), "{got:?}");
        assert!(errs.iter().any(|e| e.message.contains("`soon` is not a whole number with a unit, such as 30s")), "{errs:?}");
        assert!(errs.iter().any(|e| e.message.contains("`90` has no unit; write it with one, such as 90s")), "{errs:?}");
    }

    #[test]
    fn a_fault_follows_only_an_earlier_one_and_ends_inside_the_workload() {
        let text = shipped("switchover-then-leader-loss").unwrap().text;
        let errs = errors(&text.replace("after: 0", "after: 1"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "method.1.after");
        assert!(errs[0].message.contains("must name an earlier fault"), "{}", errs[0]);
        // The switchover ends at 20 s at the earliest, so 30 s of loss after it ends at 50 s.
        let errs = errors(&text.replace("duration: 30s", "duration: 80s"));
        assert_eq!(errs[0].path, "method.1.duration");
        assert!(errs[0].message.contains("ends at 1m 40s at the earliest"), "{}", errs[0]);
    }

    #[test]
    fn a_fault_past_the_workload_is_refused_at_its_field() {
        let text = primary_loss().replace("at: 20s", "at: 2m");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "method.0.at");
        assert_eq!(errs[0].loc.line, pos(&text, "at: 2m").0);
        assert!(errs[0].message.contains("starts at 2m, but the workload stops at 1m 30s"), "{}", errs[0]);

        let errs = errors(&primary_loss().replace("duration: 40s", "duration: 80s"));
        assert_eq!(errs[0].path, "method.0.duration");
        assert!(errs[0].message.contains("ends at 1m 40s"), "{}", errs[0]);
    }

    #[test]
    fn a_partition_needs_two_disjoint_sides() {
        let base = shipped("partition-primary-from-replicas").unwrap().text;
        let one = base.replace("between: [leader, replicas]", "between: [leader]");
        assert_eq!(errors(&one)[0].path, "method.0.between");
        assert!(errors(&one)[0].message.contains("exactly two sides, found 1"));

        let overlapping = base.replace("between: [leader, replicas]", "between: [leader, db]");
        assert!(errors(&overlapping)[0].message.contains("share nodes"), "{:?}", errors(&overlapping));

        let none = base.replace("    between: [leader, replicas]\n", "    target: leader\n");
        let errs = errors(&none);
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["method.0.target", "method.0"], "{errs:?}");
        assert_eq!(errs[1].loc.line, pos(&none, "- kind: partition").0);
    }

    #[test]
    fn levels_targets_and_rollbacks_must_fit() {
        let text = primary_loss().replace("levels: [3, 4, 5]", "levels: [2, 7]");
        let errs = errors(&text);
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(got.contains(&"levels.1"), "{got:?}");
        let seven = errs.iter().find(|e| e.path == "levels.1").unwrap();
        assert_eq!((seven.loc.line, seven.loc.col), pos(&text, "7]"));
        assert!(seven.message.contains("level must be 1 to 6, found 7"));

        let text = shipped("replica-loss").unwrap().text.replace("levels: [3, 4, 5]", "levels: [2, 3]");
        let errs = errors(&text);
        assert_eq!(errs[0].path, "method.0.target");
        assert!(errs[0].message.contains("`replica` exists from level 3 on, but `levels` includes 2"), "{}", errs[0]);

        let text = shipped("primary-freeze").unwrap().text.replace("rollbacks: [resume, restart]", "rollbacks: [restart]");
        let errs = errors(&text);
        assert_eq!(errs[0].path, "rollbacks");
        assert!(errs[0].message.contains("`freeze` faults need the `resume` rollback"), "{}", errs[0]);

        let text = shipped("replica-loss")
            .unwrap()
            .text
            .replace("scenario: mixed", "scenario: browse")
            .replace("  orders: {}\n  stock: {}\n  outbox: {}\n", "");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].path.as_str(), errs[0].loc.line), ("checks.availability.maxRto", pos(&text, "maxRto").0));

        let text = primary_loss().replace("kind: node-loss", "kind: redis-loss");
        assert!(errors(&text)[0].message.contains("`redis-loss` cannot target `leader`; use one of: redis"));
    }

    #[test]
    fn a_probe_checks_exactly_one_thing() {
        let text = primary_loss()
            .replace("      sql:\n        query:", "      prometheus:\n        query: up\n        expect: \"1\"\n      sql:\n        query:");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "steadyState.probes.2.prometheus", "located at one of the two");
        assert!(errs[0].message.contains("has both `sql` and `prometheus`"), "{}", errs[0]);
    }
}
