//! The `kubernetes` target: an environment's topology as typed Kubernetes objects
//! (k8s-openapi) and CloudNativePG resources ([`cnpg`]), in the order they are applied.
//!
//! - [`expand`]: the pure step, topology → objects, with notes on what is not rendered.
//! - One module per part: [`database`] (CloudNativePG `Cluster` and `Pooler`s), [`cache`]
//!   (Redis), [`shop`] (migration Job, role pools, workers), [`edge`] (Ingress),
//!   [`policy`] (the private data tier as NetworkPolicies); [`meta`] owns names and
//!   labels, [`yaml`] writes objects the way kubectl shows them.
//! - [`graph`]: the objects grouped into the engine's resources, one per component.
//! - [`provider`]: [`KubeProvider`], which applies them with server-side apply through
//!   kube-rs, waits for them (`ready`), finds drift (`drift`) and prunes; [`doctor`]
//!   checks a cluster for what the levels need.

pub mod cache;
pub mod cnpg;
pub mod database;
pub mod doctor;
mod drift;
pub mod edge;
pub mod graph;
pub mod meta;
pub mod policy;
pub mod provider;
mod ready;
pub mod shop;
pub mod yaml;

pub use provider::{KubeProvider, Options};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use scalectl_core::manifest::{KubernetesTarget, Manifest};
use scalectl_core::{ResourceKind, Topology, topology};
use serde::Serialize;
use serde_json::Value;

use crate::meta::Scope;

/// One object to apply in one region's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The component it belongs to: the resource the engine applies it as (`graph`).
    pub component: Component,
    pub region: String,
    /// The kubeconfig context the region names (`targets.kubernetes.contexts`).
    pub context: Option<String>,
    /// The object as the API server takes it: `apiVersion`, `kind`, `metadata`, ….
    pub value: Value,
}

impl Object {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// A file name that sorts in apply order: `07-deployment-shop.yaml`.
    pub fn file_name(&self, index: usize) -> String {
        format!("{index:02}-{}-{}.yaml", self.kind().to_ascii_lowercase(), self.name())
    }
}

/// What [`expand`] returns: the objects in apply order, and what it did not render.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub objects: Vec<Object>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExpandError {
    #[error("the manifest has no `spec.targets.kubernetes`; add one with at least `namespace:` (environments/level-1.yaml shows one)")]
    NoSettings,
    #[error("`spec.targets.kubernetes.contexts` names no context for region `{0}`; with several regions every region needs one")]
    NoContext(String),
}

/// The settings of the kubernetes target, or why there are none.
pub fn settings(m: &Manifest) -> Result<&KubernetesTarget, ExpandError> {
    m.spec.targets.kubernetes.as_ref().ok_or(ExpandError::NoSettings)
}

/// The objects of environment `env` with topology `t`, in apply order: namespace,
/// secrets, the database and its poolers, Redis, the migration, the shop pools and
/// workers, the Ingress, then the network policies.
pub fn expand(t: &Topology, m: &Manifest, env: &str) -> Result<Rendered, ExpandError> {
    let k = settings(m)?;
    let home = t.primary_region().name.clone();
    let several = t.regions.len() > 1;
    let context = match k.contexts.get(&home) {
        Some(c) => Some(c.clone()),
        None if several => return Err(ExpandError::NoContext(home)),
        None => None,
    };
    let mut out = Rendered::default();
    for u in topology::unused(m, scalectl_core::Target::Kubernetes) {
        out.notes.push(format!("{} = {}: {}", u.path, u.value, u.why));
    }
    let scope = Scope { env: env.to_string(), namespace: k.namespace.clone() };
    let mut push = |component: &Component, v: Value| {
        out.objects.push(Object { component: component.clone(), region: home.clone(), context: context.clone(), value: v })
    };

    let ns = Component::new(ResourceKind::Namespace, &k.namespace);
    push(
        &ns,
        json(&Namespace {
            metadata: ObjectMeta { name: Some(k.namespace.clone()), labels: Some(scope.labels(&[])), ..Default::default() },
            ..Default::default()
        }),
    );
    let cache = t.cache_in(&home);
    if cache.is_some() {
        push(&ns, json(&cache::secret(&scope)));
    }
    let cluster = t.clusters.iter().find(|c| c.home_region == home).unwrap_or(&t.clusters[0]);
    let db = Component::new(ResourceKind::Postgres, &meta::cluster(cluster));
    push(&db, json(&database::cluster(&scope, t, cluster, k)));
    let wiring = shop::Wiring::new(&scope, t, cluster, k, &home);
    if let Some(p) = t.pooler_of(&cluster.name) {
        let kinds: &[&'static str] = if wiring.db.reads.is_some() { &["rw", "ro"] } else { &["rw"] };
        for kind in kinds {
            push(&Component::new(ResourceKind::Pgbouncer, &meta::pooler(cluster, kind)), json(&database::pooler(&scope, cluster, p, kind)));
        }
    }
    if let Some(c) = cache {
        let redis = Component::new(ResourceKind::Redis, meta::REDIS);
        let (deployment, service) = cache::server(&scope, c);
        push(&redis, json(&deployment));
        push(&redis, json(&service));
    }
    push(&Component::new(ResourceKind::Migration, meta::MIGRATE), json(&shop::migration(&wiring, t)));
    let pools: Vec<_> = t.shop.pools.iter().filter(|p| p.region == home).collect();
    for p in &pools {
        let pool = Component::new(ResourceKind::Shop, &meta::shop(p.role));
        let (deployment, service, autoscaler, budget) = shop::pool(&wiring, t, p, k);
        push(&pool, json(&deployment));
        push(&pool, json(&service));
        if let Some(a) = autoscaler {
            push(&pool, json(&a));
        }
        if let Some(b) = budget {
            push(&pool, json(&b));
        }
    }
    for w in t.shop.workers.iter().filter(|w| w.region == home && w.replicas > 0) {
        push(&Component::new(ResourceKind::Worker, meta::WORKER), json(&shop::workers(&wiring, t, w)));
    }
    if t.edges.iter().any(|e| e.region == home) {
        let roles: Vec<_> = pools.iter().map(|p| p.role).collect();
        push(&Component::new(ResourceKind::Ingress, "shop"), json(&edge::ingress(&scope, &roles, k.ingress_class.as_deref())));
    }
    if m.spec.network.private_data_tier {
        // Rules are selectors: they can exist before the pods they admit, and go with
        // the namespace.
        let pooled = t.pooler_of(&cluster.name).is_some();
        push(&ns, json(&policy::database(&scope, cluster, pooled)));
        if pooled {
            push(&ns, json(&policy::poolers(&scope, cluster)));
        }
        if cache.is_some() {
            push(&ns, json(&policy::redis(&scope)));
        }
    }
    Ok(out)
}

/// A part of the environment that is applied, waited for and destroyed as one: the
/// namespace with its secrets and rules, the database cluster, a pooler, Redis, the
/// migration, a shop pool (Deployment, Service, autoscaler, budget), the workers, the
/// Ingress. Its id is the engine's resource id (`shop/shop-auth`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Component {
    pub kind: ResourceKind,
    pub name: String,
}

impl Component {
    pub fn new(kind: ResourceKind, name: &str) -> Self {
        Component { kind, name: name.to_string() }
    }

    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

fn json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("typed objects serialize")
}
