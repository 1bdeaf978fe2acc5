//! `scalectl render --target kubernetes`: for every level, the objects a user would
//! `kubectl apply -f`, checked the way an API server checks them (offline): core objects
//! against the upstream OpenAPI schemas of the oldest and newest Kubernetes we support,
//! CloudNativePG objects against the CRDs in `../shared/k8s/crds/`, unknown fields being
//! errors in both (`tests/support/validate_kube.py`; `kubernetes-validate` is installed
//! by `.ci/setup`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Home, text};

/// The oldest Kubernetes the objects are typed for (k8s-openapi's `earliest`), and the
/// newest whose schemas `kubernetes-validate` carries.
const VERSIONS: &str = "1.33.0,1.37.0";

fn crds() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/k8s/crds/cloudnative-pg-1.30.0");
    assert!(dir.is_dir(), "{} is missing: the CloudNativePG CRDs come with ../shared", dir.display());
    dir
}

/// Renders `level` into a fresh folder and returns the files, in the order written.
fn render(home: &Home, level: u8, out: &Path) -> Vec<PathBuf> {
    let report = home.json(&["render", "--target", "kubernetes", "--level", &level.to_string(), "--out", out.to_str().unwrap()]);
    report["files"].as_array().unwrap().iter().map(|f| PathBuf::from(f.as_str().unwrap())).collect()
}

/// Each file's kind, name and text.
fn documents(files: &[PathBuf]) -> Vec<(String, String, String)> {
    files
        .iter()
        .map(|f| {
            let t = std::fs::read_to_string(f).unwrap();
            let field = |key: &str| t.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().trim().to_string();
            (field("kind: "), field("  name: "), t)
        })
        .collect()
}

#[test]
fn every_level_renders_objects_an_api_server_would_accept() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for level in 1..=6 {
        let files = render(&home, level, &tmp.path().join(format!("level-{level}")));
        assert!(files.len() >= 5, "level {level} rendered only {files:?}");
        all.extend(files);
    }
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate_kube.py"))
        .arg(crds())
        .arg(VERSIONS)
        .args(&all)
        .output()
        .expect("running python3");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!report.contains("No module named"), "kubernetes-validate is missing; run .ci/setup:\n{report}");
    assert!(out.status.success(), "rendered objects fail validation:\n{report}");
    assert!(report.contains(&format!("checked {} objects, 0 problems", all.len())), "{report}");
}

#[test]
fn files_sort_in_apply_order_and_carry_no_secret() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let files = render(&home, 4, tmp.path());
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted, "kubectl apply -f DIR goes in file-name order");
    let docs = documents(&files);
    let kinds: Vec<&str> = docs.iter().map(|(k, _, _)| k.as_str()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("no {kind} in {kinds:?}"));
    assert_eq!(at("Namespace"), 0);
    assert!(at("Cluster") < at("Pooler") && at("Pooler") < at("Job"), "{kinds:?}");
    let first_shop = docs.iter().position(|(k, n, _)| k == "Deployment" && n.starts_with("shop")).unwrap();
    assert!(at("Job") < first_shop, "the migration runs before any shop starts: {kinds:?}");
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy"] {
        at(kind);
    }
    for (kind, _, body) in docs {
        if kind == "Secret" {
            assert!(!body.contains("\ndata:") && !body.contains("stringData"), "render printed a secret:\n{body}");
        }
        assert!(!body.to_lowercase().contains("password:"), "a password in {kind}:\n{body}");
    }
    // Level 4 routes each role's paths to its own pool.
    let ingress = documents(&files).into_iter().find(|(k, _, _)| k == "Ingress").unwrap().2;
    for pool in ["shop-auth", "shop-catalog", "shop-cart", "shop-orders", "shop-flash"] {
        assert!(ingress.contains(&format!("name: {pool}\n")), "the Ingress does not route to {pool}:\n{ingress}");
    }
}

#[test]
fn rendering_says_what_it_leaves_out() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let report: Value = home.json(&["render", "--target", "kubernetes", "--level", "6", "--out", tmp.path().to_str().unwrap()]);
    let notes: Vec<&str> = report["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.iter().any(|n| n.starts_with("spec.regions.1 = r2: only the home region")), "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("spec.postgres.citus")), "{notes:?}");
}
