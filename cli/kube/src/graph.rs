//! The rendered objects as the engine's resources: one resource per [`Component`], whose
//! spec ([`KubeSpec`]) holds its objects by `Kind/name`, so that `plan` names a change as
//! `objects.Deployment/shop.spec.replicas: 2 → 3` and the engine applies, waits for and
//! destroys components in dependency order like any target's resources.

use std::collections::{BTreeMap, BTreeSet};

use scalectl_core::{Graph, Resource, ResourceKind, Spec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Component, Rendered};

/// A component's definition: where it goes and its objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeSpec {
    /// The kubeconfig context; none means the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub namespace: String,
    /// By `Kind/name`; [`KubeSpec::in_order`] gives the order to apply them in.
    pub objects: BTreeMap<String, Value>,
}

/// Within a component: the namespace before what lives in it, a Secret before what
/// reads it, a Deployment before the autoscaler and budget that refer to it.
fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "Secret" => 1,
        "Deployment" | "Cluster" | "Pooler" | "Job" => 2,
        "Service" => 3,
        _ => 4,
    }
}

impl KubeSpec {
    pub fn of(r: &Resource) -> Result<KubeSpec, scalectl_core::spec::SpecError> {
        r.spec.read(&r.id, &[])
    }

    /// The objects in the order to apply them; reversed, the order to delete them.
    pub fn in_order(&self) -> Vec<&Value> {
        let mut v: Vec<&Value> = self.objects.values().collect();
        v.sort_by_key(|o| rank(o["kind"].as_str().unwrap_or_default()));
        v
    }
}

/// What each kind of component waits for before it is applied.
fn needs(kind: ResourceKind) -> &'static [ResourceKind] {
    use ResourceKind::*;
    match kind {
        Namespace => &[],
        Postgres | Redis => &[Namespace],
        Pgbouncer | Migration => &[Postgres],
        Shop | Worker => &[Migration, Pgbouncer, Redis],
        Ingress => &[Shop],
        _ => &[Namespace],
    }
}

/// The engine's graph of `rendered`: its components with their dependencies.
pub fn resources(rendered: &Rendered) -> Result<Graph, scalectl_core::graph::GraphError> {
    let mut by_component: BTreeMap<Component, (String, KubeSpec)> = BTreeMap::new();
    let mut order: Vec<Component> = Vec::new();
    for o in &rendered.objects {
        let namespace = o.value["metadata"]["namespace"].as_str().or(o.value["metadata"]["name"].as_str()).unwrap_or_default().to_string();
        let entry = by_component.entry(o.component.clone()).or_insert_with(|| {
            order.push(o.component.clone());
            (o.region.clone(), KubeSpec { context: o.context.clone(), namespace, objects: BTreeMap::new() })
        });
        entry.1.objects.insert(format!("{}/{}", o.kind(), o.name()), o.value.clone());
    }
    let present: BTreeSet<ResourceKind> = order.iter().map(|c| c.kind).collect();
    let ids_of = |kind: ResourceKind| order.iter().filter(move |c| c.kind == kind).map(Component::id);
    let resources = order
        .iter()
        .map(|c| {
            let (region, spec) = &by_component[c];
            let depends_on = needs(c.kind).iter().filter(|k| present.contains(k)).flat_map(|k| ids_of(*k)).collect();
            Resource {
                id: c.id(),
                kind: c.kind,
                region: region.clone(),
                address: None,
                port: None,
                depends_on,
                spec: Spec::of(spec).expect("a kube spec is a map"),
                digests: BTreeMap::new(),
            }
        })
        .collect();
    Graph::new(resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalectl_core::levels::level;
    use scalectl_core::{Sources, Topology};

    fn graph(n: u8) -> Graph {
        let l = level(n).unwrap();
        let m = Sources::new(l.file, l.manifest).load().unwrap();
        resources(&crate::expand(&Topology::from_manifest(&m), &m, "t").unwrap()).unwrap()
    }

    #[test]
    fn components_wait_for_what_they_use() {
        let g = graph(3);
        let deps = |id: &str| g.get(id).unwrap_or_else(|| panic!("no {id}")).depends_on.clone();
        assert_eq!(deps("namespace/shop-level-3"), Vec::<String>::new());
        assert_eq!(deps("postgres/db-main"), ["namespace/shop-level-3"]);
        assert_eq!(deps("migration/shop-migrate"), ["postgres/db-main"]);
        assert_eq!(deps("shop/shop"), ["migration/shop-migrate", "pgbouncer/db-main-pooler-rw", "pgbouncer/db-main-pooler-ro", "redis/redis"]);
        assert_eq!(deps("ingress/shop"), ["shop/shop"]);
    }

    #[test]
    fn a_component_applies_its_namespace_and_secret_first() {
        let g = graph(3);
        let spec = KubeSpec::of(g.get("namespace/shop-level-3").unwrap()).unwrap();
        let kinds: Vec<&str> = spec.in_order().iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Namespace", "Secret", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy"]);
        let pool = KubeSpec::of(g.get("shop/shop").unwrap()).unwrap();
        assert_eq!(pool.namespace, "shop-level-3");
        assert!(pool.objects.contains_key("Deployment/shop") && pool.objects.contains_key("PodDisruptionBudget/shop"));
    }
}
