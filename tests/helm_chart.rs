//! The Helm chart (`helm/scalectl`) and `scalectl render --target kubernetes` must not
//! drift: for every level, the chart with `levels/level-N.yaml` passes `helm lint`, and
//! `helm template` yields the same objects as scalectl, field by field
//! (`tests/support/compare_objects.py` says what may differ: Helm's own labels and
//! annotations, the generated Secret's data), which also pass the schema checks of
//! `tests/kube_render.rs`. helm 3.17 comes from `.ci/setup` (into `.tools/bin`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{Home, text};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `SCALECTL_HELM`, else the one `.ci/setup` installs, else `helm` on the PATH.
fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("SCALECTL_HELM") {
        return p.into();
    }
    let local = repo().join(".tools/bin/helm");
    if local.exists() {
        return local;
    }
    let on_path = Command::new("helm").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(on_path, "no helm: run .ci/setup (it installs helm 3.17 into .tools/bin) or set SCALECTL_HELM");
    "helm".into()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn namespace(level: u8) -> String {
    let manifest = std::fs::read_to_string(repo().join(format!("environments/level-{level}.yaml"))).unwrap();
    manifest.lines().find_map(|l| l.trim().strip_prefix("namespace: ")).expect("the level names a namespace").to_string()
}

#[test]
fn the_chart_renders_what_scalectl_renders_for_every_level() {
    let helm = helm();
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let chart = repo().join("helm/scalectl");
    let mut charted = Vec::new();
    for level in 1..=6u8 {
        let values = chart.join(format!("levels/level-{level}.yaml"));
        let lint = run(Command::new(&helm).arg("lint").arg(&chart).arg("-f").arg(&values).arg("--strict"));
        assert!(text(&lint.stdout).contains("0 chart(s) failed"), "{}", text(&lint.stdout));

        let ours = tmp.path().join(format!("scalectl-{level}"));
        home.expect(0, &["render", "--target", "kubernetes", "--level", &level.to_string(), "--out", ours.to_str().unwrap()]);
        let release = format!("level-{level}");
        let template = run(Command::new(&helm).args(["template", &release]).arg(&chart).args(["-n", &namespace(level), "-f"]).arg(&values));
        let theirs = tmp.path().join(format!("helm-{level}.yaml"));
        std::fs::write(&theirs, &template.stdout).unwrap();

        let compare = Command::new("python3").arg(repo().join("tests/support/compare_objects.py")).arg(&ours).arg(&theirs).output().unwrap();
        let report = text(&compare.stdout);
        assert!(compare.status.success(), "level {level}: the chart and scalectl differ:\n{report}{}", text(&compare.stderr));
        charted.push(theirs);
    }
    let validate = Command::new("python3")
        .arg(repo().join("tests/support/validate_kube.py"))
        .arg(repo().join("../shared/k8s/crds/cloudnative-pg-1.30.0"))
        .arg("1.33.0,1.37.0")
        .args(&charted)
        .output()
        .unwrap();
    assert!(validate.status.success(), "the chart's objects fail validation:\n{}{}", text(&validate.stdout), text(&validate.stderr));
}

#[test]
fn a_fresh_install_generates_a_password_that_appears_only_in_the_secret() {
    // Without a cluster, `lookup` finds nothing, so each render generates a new password,
    // as a first install would (an upgrade reuses the live one, which needs a cluster),
    // 32 characters, base64 in the Secret's data and nowhere else.
    let helm = helm();
    let chart = repo().join("helm/scalectl");
    let values = chart.join("levels/level-3.yaml");
    let render = || text(&run(Command::new(&helm).args(["template", "level-3"]).arg(&chart).arg("-f").arg(&values)).stdout);
    let (a, b) = (render(), render());
    let password = |t: &str| t.lines().find_map(|l| l.trim().strip_prefix("password: ").map(str::to_string)).expect("the Secret has a password");
    assert_ne!(password(&a), password(&b), "a fresh install gets a fresh password");
    assert_eq!(password(&a).len(), 44, "32 random characters, base64-encoded");
    assert_eq!(a.matches(&password(&a)).count(), 1, "the password appears once, in the Secret");
}
