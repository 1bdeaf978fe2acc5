//! `up`, `plan` and `down --target kubernetes` against `MockKubeApi` (a mock API server:
//! no real one can run here), asserting the exact requests in the style of kube-rs's own
//! mock tests: server-side apply patches with their content type and field manager, in
//! dependency order; nothing applied again when nothing changed; a conflict with another
//! field manager named, and taken over only with `--force-conflicts`; a rollout that never
//! becomes ready reported with its reason; the generated password sent to the cluster and
//! shown nowhere; `down` deleting everything it made.

mod support;

use std::path::PathBuf;
use std::process::Output;

use serde_json::json;
use support::kube_mock::{MockKubeApi, Seen};
use support::{Home, text};

/// A mock cluster, a private scalectl home, a kubeconfig with one context that points at
/// the mock, and an environment name.
struct Fixture {
    home: Home,
    api: MockKubeApi,
    kubeconfig: PathBuf,
    env: String,
}

impl Fixture {
    fn new(context: &str) -> Fixture {
        let api = MockKubeApi::start();
        let home = Home::new();
        let kubeconfig = api.kubeconfig(home.root.parent().unwrap(), &[context]);
        let env = home.env("kube");
        Fixture { home, api, kubeconfig, env }
    }

    /// Runs scalectl with the mock's kubeconfig.
    fn run(&self, args: &[&str]) -> Output {
        self.home.cmd(args).env("KUBECONFIG", &self.kubeconfig).output().expect("running scalectl")
    }
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
}

fn applies(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.method == "PATCH").collect()
}

/// The object name an apply went to, as `kind/name` from its body.
fn applied(s: &Seen) -> String {
    let b = s.body.as_ref().unwrap();
    format!("{}/{}", b["kind"].as_str().unwrap(), b["metadata"]["name"].as_str().unwrap())
}

#[test]
fn up_applies_every_object_server_side_in_order_and_down_deletes_them() {
    let f = Fixture::new("kind-scalectl");
    let (api, home, env) = (&f.api, &f.home, f.env.as_str());

    let out = f.run(&["up", "--level", "3", "--target", "kubernetes", "--env", env]);
    ok(&out);
    let seen = api.seen();
    let patches = applies(&seen);
    for p in &patches {
        assert_eq!(p.content_type, "application/apply-patch+yaml", "{}", p.path);
        assert_eq!(p.query.get("fieldManager").map(String::as_str), Some("scalectl"), "{}", p.path);
        assert_ne!(p.query.get("force").map(String::as_str), Some("true"), "no takeover unless asked: {}", p.path);
    }
    let order: Vec<String> = patches.iter().map(|p| applied(p)).collect();
    let at = |o: &str| order.iter().position(|x| x == o).unwrap_or_else(|| panic!("{o} was never applied: {order:?}"));
    assert_eq!(at("Namespace/shop-level-3"), 0);
    assert!(at("Secret/redis-auth") < at("Deployment/redis"), "{order:?}");
    assert!(at("Cluster/db-main") < at("Pooler/db-main-pooler-rw"), "{order:?}");
    assert!(at("Cluster/db-main") < at("Job/shop-migrate"), "{order:?}");
    assert!(at("Job/shop-migrate") < at("Deployment/shop"), "the migration runs before the shops: {order:?}");
    assert!(at("Deployment/shop") < at("Ingress/shop"), "{order:?}");
    assert_eq!(order.len(), 16, "every rendered object, once: {order:?}");
    assert!(
        seen.iter().any(|s| s.method == "GET" && s.path == "/apis/batch/v1/namespaces/shop-level-3/jobs/shop-migrate"),
        "up waited for the migration to complete"
    );
    assert_eq!(api.object("/apis/apps/v1/namespaces/shop-level-3/deployments/shop").unwrap()["metadata"]["labels"]["scalectl.dev/environment"], env);

    // The password went to the cluster, and nowhere a user or log would see it.
    let secret = patches.iter().find(|p| applied(p) == "Secret/redis-auth").unwrap();
    let password = secret.body.as_ref().unwrap()["stringData"]["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 32);
    let state = std::fs::read_to_string(home.env_dir(env).join("state.json")).unwrap();
    for (what, t) in [("stdout", text(&out.stdout)), ("stderr", text(&out.stderr)), ("state", state)] {
        assert!(!t.contains(&password), "the password is in {what}");
    }

    // The shop's log, from its newest pod.
    let logs = f.run(&["logs", "--env", env, "shop/shop", "-n", "20"]);
    ok(&logs);
    assert!(text(&logs.stdout).contains("log of shop-g1"), "{}", text(&logs.stdout));
    let tail = api.seen().into_iter().find(|s| s.path.ends_with("/pods/shop-g1/log")).expect("the pod's log was read");
    assert_eq!(tail.query.get("tailLines").map(String::as_str), Some("20"));

    // Nothing changed: nothing is applied again.
    api.forget_requests();
    let again = f.run(&["up", "--env", env]);
    ok(&again);
    assert!(text(&again.stderr).contains("0 to create, 0 to change"), "{}", text(&again.stderr));
    assert_eq!(applies(&api.seen()).len(), 0, "a second up applied again: {:?}", api.seen().iter().map(|s| &s.path).collect::<Vec<_>>());

    api.forget_requests();
    ok(&f.run(&["down", "--env", env]));
    let deletes: Vec<String> = api.seen().iter().filter(|s| s.method == "DELETE").map(|s| s.path.clone()).collect();
    assert!(deletes.iter().any(|p| p == "/api/v1/namespaces/shop-level-3"), "{deletes:?}");
    assert_eq!(deletes.last().map(String::as_str), Some("/api/v1/namespaces/shop-level-3"), "the namespace goes last: {deletes:?}");
    assert!(api.paths().is_empty(), "left on the cluster: {:?}", api.paths());
    assert!(!home.env_dir(env).join("state.json").exists(), "down forgets the environment");
}

#[test]
fn a_field_another_manager_owns_stops_up_until_forced() {
    let f = Fixture::new("kind-scalectl");
    let (api, env) = (&f.api, f.env.as_str());
    let path = "/apis/apps/v1/namespaces/shop-level-1/deployments/shop";
    api.owned_by(
        path,
        "kubectl-edit",
        ".spec.replicas",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "namespace": "shop-level-1"}, "spec": {"replicas": 5}}),
    );

    let out = f.run(&["up", "--level", "1", "--target", "kubernetes", "--env", env]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("kubectl-edit") && err.contains(".spec.replicas") && err.contains("--force-conflicts"), "{err}");
    assert_eq!(api.object(path).unwrap()["spec"]["replicas"], 5, "a conflict changes nothing");

    api.forget_requests();
    ok(&f.run(&["up", "--env", env, "--force-conflicts"]));
    let forced = api.seen().into_iter().find(|s| s.method == "PATCH" && s.path == path).expect("the Deployment was applied again");
    assert_eq!(forced.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(api.object(path).unwrap()["spec"]["replicas"], 1, "scalectl's value now");
    ok(&f.run(&["down", "--env", env]));
}

#[test]
fn a_rollout_that_never_becomes_ready_fails_up_with_its_reason() {
    let f = Fixture::new("kind-scalectl");
    let (api, env) = (&f.api, f.env.as_str());
    api.never_available("shop");
    let out = f.run(&["up", "--level", "1", "--target", "kubernetes", "--env", env, "--set", "spec.targets.local.healthTimeoutSeconds=3"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("shop/shop") && err.contains("0 of 1 pods available") && err.contains("MinimumReplicasUnavailable"), "{err}");
    ok(&f.run(&["down", "--env", env]));
}

#[test]
fn a_missing_context_says_how_to_make_one() {
    let f = Fixture::new("some-other-cluster");
    let (api, home, env) = (&f.api, &f.home, f.env.as_str());
    let out = f.run(&["up", "--level", "1", "--target", "kubernetes", "--env", env]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("kind-scalectl") && err.contains("kind create cluster --name scalectl") && err.contains("some-other-cluster"), "{err}");
    assert!(api.seen().iter().all(|s| s.method != "PATCH"), "nothing applied without the right cluster");
    // `down` cannot look either, and says so rather than forget what it cannot see ...
    let down = f.run(&["down", "--env", env]);
    assert!(!down.status.success() && text(&down.stderr).contains("kind-scalectl"), "{}", text(&down.stderr));
    // ... until the context is there.
    api.kubeconfig(home.root.parent().unwrap(), &["kind-scalectl"]);
    ok(&f.run(&["down", "--env", env]));
}

/// Levels 1 and 3 on a real cluster: `SCALECTL_TEST_KUBECONTEXT` names the kubeconfig
/// context (README, "Kubernetes": kind, CloudNativePG, the shop's image loaded).
#[test]
#[ignore = "needs a Kubernetes cluster"]
fn levels_1_and_3_come_up_and_go_away_on_a_real_cluster() {
    let context = std::env::var("SCALECTL_TEST_KUBECONTEXT").expect("set SCALECTL_TEST_KUBECONTEXT to a kubeconfig context");
    let home = Home::new();
    for level in ["1", "3"] {
        let env = home.env("kube-e2e");
        let set = format!("spec.targets.kubernetes.contexts.r1={context}");
        let up = home.cmd(&["up", "--level", level, "--target", "kubernetes", "--env", &env, "--set", &set]).output().unwrap();
        ok(&up);
        let status = home.cmd(&["status", "--env", &env, "-o", "json"]).output().unwrap();
        ok(&status);
        let again = home.cmd(&["up", "--env", &env]).output().unwrap();
        ok(&again);
        assert!(text(&again.stderr).contains("0 to create, 0 to change"), "{}", text(&again.stderr));
        ok(&home.cmd(&["down", "--env", &env]).output().unwrap());
    }
}

#[test]
fn doctor_checks_the_cluster_each_level_names_and_says_what_to_install() {
    let f = Fixture::new("kind-scalectl");
    let api = &f.api;
    let doctor = |level: &str| f.run(&["doctor", "--target", "kubernetes", "--level", level, "-o", "json"]);

    let out = doctor("4");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<String> =
        report["checks"].as_array().unwrap().iter().filter(|c| c["ok"] == false).map(|c| c["detail"].as_str().unwrap().to_string()).collect();
    assert!(missing.iter().any(|m| m.contains("CloudNativePG Cluster") && m.contains("kubectl apply --server-side -f")), "{missing:?}");
    assert!(missing.iter().any(|m| m.contains("no IngressClass `nginx`")), "{missing:?}");

    for crd in ["clusters.postgresql.cnpg.io", "poolers.postgresql.cnpg.io"] {
        api.put(
            &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": crd}}),
        );
    }
    api.put(
        "/apis/networking.k8s.io/v1/ingressclasses/nginx",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    );
    let out = doctor("4");
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let server = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == "server").unwrap();
    assert!(server["detail"].as_str().unwrap().contains("1.33"), "{server}");
}

#[test]
fn objects_no_longer_wanted_are_pruned_and_only_those() {
    let f = Fixture::new("kind-scalectl");
    let (api, env) = (&f.api, f.env.as_str());
    ok(&f.run(&["up", "--level", "3", "--target", "kubernetes", "--env", env]));
    let policies = "/apis/networking.k8s.io/v1/namespaces/shop-level-3/networkpolicies";
    assert!(api.object(&format!("{policies}/redis-private")).is_some());
    // Someone else's rule in the same namespace, and an operator's Secret that copied
    // scalectl's labels from the Cluster: neither was applied by scalectl.
    let theirs = format!("{policies}/allow-monitoring");
    api.put(&theirs, json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-monitoring", "namespace": "shop-level-3", "labels": {"team": "sre"}}}));
    let copied = "/api/v1/namespaces/shop-level-3/secrets/db-main-app";
    let labels = api.object(&format!("{policies}/redis-private")).unwrap()["metadata"]["labels"].clone();
    api.put(
        copied,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-main-app", "namespace": "shop-level-3", "labels": labels,
        "managedFields": [{"manager": "cloudnative-pg", "operation": "Update"}]}}),
    );

    api.forget_requests();
    let out = f.run(&["up", "--env", env, "--set", "spec.network.privateDataTier=false"]);
    ok(&out);
    let deleted: Vec<String> = api.seen().iter().filter(|s| s.method == "DELETE").map(|s| s.path.clone()).collect();
    for name in ["db-main-private", "db-main-poolers-private", "redis-private"] {
        assert!(deleted.contains(&format!("{policies}/{name}")), "{name} was not pruned: {deleted:?}");
        assert!(api.object(&format!("{policies}/{name}")).is_none());
    }
    assert!(api.object(&theirs).is_some(), "a rule scalectl did not make was deleted");
    assert!(api.object(copied).is_some(), "the operator's Secret was pruned for carrying copied labels");
    assert_eq!(deleted.len(), 3, "nothing else goes: {deleted:?}");
    let err = text(&out.stderr);
    assert!(err.contains("namespace/shop-level-3: pruned ") && err.contains("NetworkPolicy/db-main-private"), "{err}");
    ok(&f.run(&["down", "--env", env]));
}

#[test]
fn plan_lists_each_kind_once_and_shows_what_was_changed_on_the_cluster() {
    let f = Fixture::new("kind-scalectl-r1");
    let (api, env) = (&f.api, f.env.as_str());
    ok(&f.run(&["up", "--level", "6", "--target", "kubernetes", "--env", env]));
    let objects = api.paths().len();

    // A plan with nothing to do reads each kind once, whatever the number of objects.
    api.forget_requests();
    let plan = f.run(&["plan", "--env", env, "--exit-code"]);
    ok(&plan);
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.method == "GET" && s.query.contains_key("labelSelector")), "only lists: {seen:?}");
    let kinds = 11;
    assert_eq!(seen.len(), kinds, "one list per kind for {objects} objects: {:?}", seen.iter().map(|s| &s.path).collect::<Vec<_>>());

    // Someone sets an image by hand (`kubectl set image`, which makes it theirs): plan
    // names the field; up says whose it is now; --force-conflicts takes it back.
    let path = "/apis/apps/v1/namespaces/shop-level-6/deployments/shop-catalog";
    let mut live = api.object(path).unwrap();
    let image = live["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example.com/hotfix:1");
    api.owned_by(path, "kubectl-set", ".spec.template.spec.containers[name=\"shop\"].image", live);
    let plan = f.run(&["plan", "--env", env, "--exit-code"]);
    assert_eq!(plan.status.code(), Some(1), "a drifted environment has changes to make");
    let shown = text(&plan.stdout);
    assert!(shown.contains("shop/shop-catalog") && shown.contains("changed outside scalectl"), "{shown}");
    assert!(shown.contains("Deployment/shop-catalog.spec.template.spec.containers.0.image"), "{shown}");
    let up = f.run(&["up", "--env", env]);
    assert!(!up.status.success() && text(&up.stderr).contains("kubectl-set"), "{}", text(&up.stderr));
    ok(&f.run(&["up", "--env", env, "--force-conflicts"]));
    assert_eq!(api.object(path).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"], image);
    ok(&f.run(&["down", "--env", env]));
}

#[test]
fn a_namespace_and_a_password_already_on_the_cluster_are_used_and_kept() {
    let f = Fixture::new("kind-scalectl");
    let (api, env) = (&f.api, f.env.as_str());
    let ns = "/api/v1/namespaces/shop-level-3";
    api.put(ns, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-level-3", "labels": {"team": "shop"}}, "status": {"phase": "Active"}}));
    // "from-the-cluster", base64: another machine's `up` made it.
    api.put(
        "/api/v1/namespaces/shop-level-3/secrets/redis-auth",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-auth", "namespace": "shop-level-3"}, "data": {"password": "ZnJvbS10aGUtY2x1c3Rlcg=="}}),
    );

    let out = f.run(&["up", "--level", "3", "--target", "kubernetes", "--env", env]);
    ok(&out);
    assert!(text(&out.stderr).contains("was not made by scalectl"), "{}", text(&out.stderr));
    let seen = api.seen();
    assert!(!seen.iter().any(|s| s.method == "PATCH" && s.path == ns), "someone else's namespace was labelled as ours");
    let secret = seen.iter().find(|s| s.method == "PATCH" && s.path.ends_with("/secrets/redis-auth")).unwrap();
    assert_eq!(secret.body.as_ref().unwrap()["stringData"]["password"], "from-the-cluster", "the running Redis keeps its password");

    // The migration's Job, removed by someone (or a TTL): the next up runs it again.
    let job = "/apis/batch/v1/namespaces/shop-level-3/jobs/shop-migrate";
    api.remove(job);
    api.forget_requests();
    ok(&f.run(&["up", "--env", env]));
    assert!(api.seen().iter().any(|s| s.method == "PATCH" && s.path == job), "the missing Job was not made again");

    ok(&f.run(&["down", "--env", env]));
    assert!(api.object(ns).is_some(), "down deleted a namespace scalectl did not make");
    assert!(api.object("/apis/postgresql.cnpg.io/v1/namespaces/shop-level-3/clusters/db-main").is_none(), "down left its own objects");
}
