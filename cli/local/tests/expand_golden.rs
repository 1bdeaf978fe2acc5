//! Golden tests of the local graph that `expand` derives from each shipped level's topology: every
//! resource with its address, dependencies and typed spec (as dotted paths), one file per level under
//! `tests/golden/`. A change to expansion shows here as a readable diff; when it is
//! intended, regenerate with `SCALECTL_BLESS=1 cargo test -p scalectl-local --test expand_golden`.

use std::fmt::Write as _;
use std::path::PathBuf;

use scalectl_core::levels::level;
use scalectl_core::{Graph, Sources, Topology};
use scalectl_local::{Placement, expand};

/// A fixed slot, so addresses are stable: 127.9.R.N.
const PLACEMENT: Placement = Placement { slot: 9 };

fn describe(graph: &Graph) -> String {
    let mut out = String::new();
    for r in &graph.resources {
        let at = match (r.address, r.port) {
            (Some(a), Some(p)) => format!(" {a}:{p}"),
            (Some(a), None) => format!(" {a}"),
            _ => String::new(),
        };
        writeln!(out, "{} ({}, {}){at}", r.id, r.kind, r.region).unwrap();
        if !r.depends_on.is_empty() {
            writeln!(out, "  after: {}", r.depends_on.join(", ")).unwrap();
        }
        for (k, v) in &r.spec.leaves() {
            writeln!(out, "  {k} = {v}").unwrap();
        }
    }
    out
}

fn check(n: u8) {
    let l = level(n).unwrap();
    let manifest = Sources::new(l.file, l.manifest).load().unwrap_or_else(|e| panic!("level {n}: {e:?}"));
    let graph = expand(&Topology::from_manifest(&manifest), PLACEMENT).unwrap();
    let got = describe(&graph);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/local-level-{n}.txt"));
    if std::env::var_os("SCALECTL_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "level {n}'s local graph differs from {} from line {}:\n  got:  {:?}\n  want: {:?}\n\
             if the change is intended, run with SCALECTL_BLESS=1 and review the diff",
            path.display(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn level_1() {
    check(1);
}

#[test]
fn level_2() {
    check(2);
}

#[test]
fn level_3() {
    check(3);
}

#[test]
fn level_4() {
    check(4);
}

#[test]
fn level_5() {
    check(5);
}

#[test]
fn level_6() {
    check(6);
}
