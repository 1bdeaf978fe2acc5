//! The private data tier as NetworkPolicies (the Kubernetes counterpart of the local
//! target's pg_hba rules and the cloud's security groups): PostgreSQL admits its own
//! instances, the poolers, the migration Job and the CloudNativePG operator; the poolers
//! and Redis admit only the shop's own pods.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use scalectl_core::topology::DbCluster;

use crate::meta::{self, APP_TIER, NAME_LABEL, Scope, TIER_LABEL};

/// The label CloudNativePG puts on a cluster's instance pods, and on a pooler's pods.
const CNPG_CLUSTER: &str = "cnpg.io/cluster";
const CNPG_POOLER: &str = "cnpg.io/poolerName";
/// Where CloudNativePG's operator runs when installed from its release manifest.
pub const OPERATOR_NAMESPACE: &str = "cnpg-system";
/// The instance manager's status port, which the operator polls.
const STATUS_PORT: i32 = 8000;

fn pods(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(selector), ..Default::default() }
}

fn app_pods() -> NetworkPolicyPeer {
    pods(meta::selector(&[(TIER_LABEL, APP_TIER)]))
}

fn ports(numbers: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(numbers.iter().map(|&p| NetworkPolicyPort { port: Some(IntOrString::Int(p)), protocol: Some("TCP".into()), ..Default::default() }).collect())
}

fn policy(scope: &Scope, name: &str, target: LabelSelector, rules: Vec<NetworkPolicyIngressRule>) -> NetworkPolicy {
    NetworkPolicy {
        metadata: scope.meta(name, &[]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(target),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..Default::default()
        }),
    }
}

/// Who may reach a cluster's instances; `pooled` says whether the shop goes through a
/// pooler (else its pods connect directly).
pub fn database(scope: &Scope, c: &DbCluster, pooled: bool) -> NetworkPolicy {
    let name = meta::cluster(c);
    let mut clients = vec![pods(meta::selector(&[(NAME_LABEL, meta::MIGRATE)]))];
    if pooled {
        clients.push(pods(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement { key: CNPG_POOLER.into(), operator: "Exists".into(), values: None }]),
            ..Default::default()
        }));
    } else {
        clients.push(app_pods());
    }
    let operator =
        NetworkPolicyPeer { namespace_selector: Some(meta::selector(&[("kubernetes.io/metadata.name", OPERATOR_NAMESPACE)])), ..Default::default() };
    policy(
        scope,
        &format!("{name}-private"),
        meta::selector(&[(CNPG_CLUSTER, &name)]),
        vec![
            // Replication and the instance managers talking among themselves.
            NetworkPolicyIngressRule { from: Some(vec![pods(meta::selector(&[(CNPG_CLUSTER, &name)]))]), ..Default::default() },
            NetworkPolicyIngressRule { from: Some(clients), ports: ports(&[meta::PG_PORT]) },
            NetworkPolicyIngressRule { from: Some(vec![operator]), ports: ports(&[STATUS_PORT, meta::PG_PORT]) },
        ],
    )
}

pub fn poolers(scope: &Scope, c: &DbCluster) -> NetworkPolicy {
    let target = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: CNPG_POOLER.into(),
            operator: "In".into(),
            values: Some(vec![meta::pooler(c, "rw"), meta::pooler(c, "ro")]),
        }]),
        ..Default::default()
    };
    policy(
        scope,
        &format!("{}-poolers-private", meta::cluster(c)),
        target,
        vec![NetworkPolicyIngressRule { from: Some(vec![app_pods()]), ports: ports(&[meta::PG_PORT]) }],
    )
}

pub fn redis(scope: &Scope) -> NetworkPolicy {
    policy(
        scope,
        "redis-private",
        meta::selector(&[(NAME_LABEL, meta::REDIS)]),
        vec![NetworkPolicyIngressRule { from: Some(vec![app_pods()]), ports: ports(&[meta::REDIS_PORT]) }],
    )
}
