//! Golden tests of the objects `expand` renders for each shipped level, as the YAML stream
//! `render --target kubernetes` writes, one file per level under `tests/golden/`. A change
//! shows here as a readable diff; when it is intended, regenerate with
//! `SCALECTL_BLESS=1 cargo test -p scalectl-kube --test render_golden`.

use std::path::PathBuf;

use scalectl_core::levels::level;
use scalectl_core::{Sources, Topology};
use scalectl_kube::{expand, yaml};

fn check(n: u8) {
    let l = level(n).unwrap();
    let manifest = Sources::new(l.file, l.manifest).load().unwrap_or_else(|e| panic!("level {n}: {e:?}"));
    let rendered = expand(&Topology::from_manifest(&manifest), &manifest, &format!("level-{n}")).unwrap();
    let mut got = String::new();
    for note in &rendered.notes {
        got.push_str(&format!("# note: {note}\n"));
    }
    got.push_str(&yaml::to_yaml_stream(rendered.objects.iter().map(|o| &o.value)));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/kube-level-{n}.yaml"));
    if std::env::var_os("SCALECTL_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "level {n}'s Kubernetes objects differ from {} from line {}:\n  got:  {:?}\n  want: {:?}\n\
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
