//! `scalectl doctor --target kubernetes`: what the levels need from a cluster, checked
//! on each context they name: the context itself, the API server and its version, the
//! CloudNativePG CRDs, and the ingress class the level routes through; each missing part
//! with how to install it.

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;

use crate::provider::connect;

/// Where CloudNativePG's release manifest is, for the install advice.
pub const CNPG_MANIFEST: &str = "https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml";

/// The oldest and newest Kubernetes whose schemas the rendered objects are checked
/// against (`tests/kube_render.rs`).
pub const TESTED: (u32, u32) = (33, 37);

/// What one context must offer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    /// `None`: the current context.
    pub context: Option<String>,
    /// The levels that use it, for the report.
    pub levels: Vec<u8>,
    /// The IngressClass the levels route through, when they have an Ingress: `Some(None)`
    /// for the cluster's default class.
    pub ingress_class: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub context: String,
    pub check: String,
    pub ok: bool,
    /// What was found, or how to fix it.
    pub detail: String,
}

/// Runs every check; blocking (it brings its own runtime, like the provider).
pub fn run(wanted: &[Wanted]) -> Vec<Finding> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
    rt.block_on(async {
        let mut out = Vec::new();
        for w in wanted {
            out.extend(context(w).await);
        }
        out
    })
}

async fn context(w: &Wanted) -> Vec<Finding> {
    let name = w.context.clone().unwrap_or_else(|| "(current)".into());
    let levels = w.levels.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
    let finding = |check: &str, ok: bool, detail: String| Finding { context: name.clone(), check: check.into(), ok, detail };
    let client = match connect(w.context.as_deref()).await {
        Ok(c) => c,
        Err(e) => return vec![finding("context", false, format!("levels {levels}: {}", e.message))],
    };
    let mut out = vec![finding("context", true, format!("used by levels {levels}"))];
    match client.apiserver_version().await {
        Ok(v) => {
            let minor: u32 = v.minor.trim_end_matches('+').parse().unwrap_or(0);
            let ok = minor >= TESTED.0;
            let detail = if ok {
                format!("Kubernetes {}.{} ({})", v.major, v.minor, v.git_version)
            } else {
                format!(
                    "Kubernetes {}.{}: the objects are typed for 1.{} to 1.{}; upgrade the cluster (kind: a newer node image)",
                    v.major, v.minor, TESTED.0, TESTED.1
                )
            };
            out.push(finding("server", ok, detail));
        }
        Err(e) => {
            out.push(finding("server", false, format!("the API server does not answer ({e}); is the cluster running? (`kubectl cluster-info`)")));
            return out;
        }
    }
    for (crd, what) in [("clusters.postgresql.cnpg.io", "CloudNativePG Cluster"), ("poolers.postgresql.cnpg.io", "CloudNativePG Pooler")] {
        let found = crds(&client).get_opt(crd).await;
        out.push(match found {
            Ok(Some(_)) => finding("crd", true, format!("{what} ({crd})")),
            Ok(None) => finding("crd", false, format!("{what} is not installed: `kubectl apply --server-side -f {CNPG_MANIFEST}`")),
            Err(e) => finding("crd", false, format!("cannot read {crd}: {e}")),
        });
    }
    if let Some(class) = &w.ingress_class {
        out.push(ingress(&client, class.as_deref(), &finding).await);
    }
    out
}

fn crds(client: &Client) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"));
    Api::all_with(client.clone(), &ar)
}

async fn ingress(client: &Client, wanted: Option<&str>, finding: &impl Fn(&str, bool, String) -> Finding) -> Finding {
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("networking.k8s.io", "v1", "IngressClass"));
    let classes = match Api::<DynamicObject>::all_with(client.clone(), &ar).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return finding("ingress", false, format!("cannot list IngressClasses: {e}")),
    };
    let is_default = |c: &DynamicObject| {
        c.metadata.annotations.as_ref().and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class")).is_some_and(|v| v == "true")
    };
    let names: Vec<String> = classes.iter().filter_map(|c| c.metadata.name.clone()).collect();
    let advice = "install an ingress controller (for kind: ingress-nginx's `deploy/static/provider/kind/deploy.yaml`)";
    match wanted {
        Some(class) if names.iter().any(|n| n == class) => finding("ingress", true, format!("IngressClass {class}")),
        Some(class) => finding("ingress", false, format!("no IngressClass `{class}` (there are: {}); {advice}", list(&names))),
        None => match classes.iter().find(|c| is_default(c)) {
            Some(c) => finding("ingress", true, format!("default IngressClass {}", c.metadata.name.clone().unwrap_or_default())),
            None => finding(
                "ingress",
                false,
                format!("no default IngressClass (there are: {}); {advice}, or set targets.kubernetes.ingressClass", list(&names)),
            ),
        },
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// What `levels` need, one entry per context.
pub fn wanted(levels: &[(u8, &scalectl_core::Manifest)]) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    for (n, m) in levels {
        let Some(k) = &m.spec.targets.kubernetes else { continue };
        let t = scalectl_core::Topology::from_manifest(m);
        let home = t.primary_region().name.clone();
        let context = k.contexts.get(&home).cloned();
        let ingress = t.edges.iter().any(|e| e.region == home).then(|| k.ingress_class.clone());
        match out.iter_mut().find(|w| w.context == context) {
            Some(w) => {
                w.levels.push(*n);
                // A named class is a stricter need than the default one.
                if w.ingress_class.as_ref().is_none_or(|c| c.is_none()) && ingress.is_some() {
                    w.ingress_class = ingress;
                }
            }
            None => out.push(Wanted { context, levels: vec![*n], ingress_class: ingress }),
        }
    }
    out
}
