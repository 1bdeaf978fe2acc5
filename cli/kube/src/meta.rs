//! Names and labels: every object's name derives from the topology here, and every object
//! carries the labels that say which environment owns it and that scalectl manages it
//! (what a later prune selects on, so it never touches an object it did not make).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use scalectl_core::manifest::RoleName;
use scalectl_core::topology::DbCluster;

/// The field manager and `managed-by` value of everything scalectl applies.
pub const MANAGER: &str = "scalectl";
/// The label naming the environment that owns an object.
pub const ENV_LABEL: &str = "scalectl.dev/environment";
/// Pods of the shop's own programs (serve, worker, migrate): the only clients the
/// private data tier admits.
pub const TIER_LABEL: &str = "scalectl.dev/tier";
pub const APP_TIER: &str = "app";
pub const ROLE_LABEL: &str = "scalectl.dev/role";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The port every shop process serves HTTP (and `/metrics`) on.
pub const SHOP_PORT: i32 = 8080;
pub const PG_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;

/// Where the objects of one environment go.
#[derive(Debug, Clone)]
pub struct Scope {
    pub env: String,
    pub namespace: String,
}

impl Scope {
    /// Metadata with `name`, the namespace and the ownership labels, plus `labels`.
    pub fn meta(&self, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: Some(self.namespace.clone()), labels: Some(self.labels(labels)), ..Default::default() }
    }

    /// A pod template's labels: what identifies the pods, and nothing that changes with
    /// the tool or its version (a changed template label restarts every pod).
    pub fn pod_labels(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "shop".to_string()), (ENV_LABEL.to_string(), self.env.clone())]);
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }

    pub fn labels(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string()),
            ("app.kubernetes.io/part-of".to_string(), "shop".to_string()),
            (ENV_LABEL.to_string(), self.env.clone()),
        ]);
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }
}

/// A ClusterIP Service `name` over the pods `select` picks, with one named port that
/// goes to the containers' port of the same name.
pub fn service(scope: &Scope, name: &str, labels: &[(&str, &str)], select: &[(&str, &str)], port_name: &str, port: i32) -> Service {
    Service {
        metadata: scope.meta(name, labels),
        spec: Some(ServiceSpec {
            selector: Some(select.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A selector on exactly these labels.
pub fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()), ..Default::default() }
}

/// The CloudNativePG `Cluster` of a database cluster; its operator derives the Services
/// `<name>-rw`, `-ro`, `-r` and the Secret `<name>-app` from it.
pub fn cluster(c: &DbCluster) -> String {
    format!("db-{}", c.name)
}

/// The PgBouncer `Pooler` in front of a cluster, for writes (`rw`) or replica reads (`ro`).
/// Not `<cluster>-rw`: that name is the operator's own Service.
pub fn pooler(c: &DbCluster, kind: &str) -> String {
    format!("{}-pooler-{kind}", cluster(c))
}

/// The Secret the operator writes the shop's database credentials into.
pub fn app_secret(c: &DbCluster) -> String {
    format!("{}-app", cluster(c))
}

pub const REDIS: &str = "redis";
/// The Secret holding Redis's password; `up` generates it, `render` never prints it.
pub const REDIS_SECRET: &str = "redis-auth";
pub const WORKER: &str = "shop-worker";
pub const MIGRATE: &str = "shop-migrate";

/// A shop pool's Deployment and Service: `shop` for the monolith, `shop-<role>` per role.
pub fn shop(role: RoleName) -> String {
    match role {
        RoleName::All => "shop".into(),
        r => format!("shop-{}", r.as_str()),
    }
}
