//! Redis on Kubernetes: one server per region with a password from a Secret that `up`
//! generates (the rendered Secret has no data: `render` never prints a secret), its
//! memory bounded as the manifest says, evicting least-recently-used keys like the local
//! target's.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use scalectl_core::topology::Cache;

use crate::meta::{self, NAME_LABEL, Scope};

/// Redis 7.0, as on the local target (Debian bookworm's).
pub const IMAGE: &str = "docker.io/library/redis:7.0.15";

/// The password's Secret, as `render` shows it: named, typed, annotated, empty.
pub fn secret(scope: &Scope) -> Secret {
    let mut metadata = scope.meta(meta::REDIS_SECRET, &[(NAME_LABEL, meta::REDIS)]);
    metadata.annotations =
        Some(BTreeMap::from([("scalectl.dev/generated".to_string(), "key `password`, 32 random characters, written by `scalectl up`".to_string())]));
    Secret { metadata, type_: Some("Opaque".into()), ..Default::default() }
}

pub fn server(scope: &Scope, c: &Cache) -> (Deployment, Service) {
    let labels = [(NAME_LABEL, meta::REDIS)];
    // The limit leaves room above maxmemory for Redis' own buffers and fragmentation.
    let limit = c.maxmemory.bytes() + c.maxmemory.bytes() / 4 + (64 << 20);
    let container = Container {
        name: "redis".into(),
        image: Some(IMAGE.into()),
        args: Some(
            ["--requirepass", "$(REDIS_PASSWORD)", "--maxmemory", &c.maxmemory.redis(), "--maxmemory-policy", "allkeys-lru", "--save", ""]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        env: Some(vec![EnvVar {
            name: "REDIS_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: meta::REDIS_SECRET.into(), key: "password".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort { name: Some("redis".into()), container_port: meta::REDIS_PORT, ..Default::default() }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::String("redis".into()), ..Default::default() }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("100m".into())), ("memory".into(), Quantity(c.maxmemory.kubernetes()))])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity(scalectl_core::ByteSize::from_bytes(limit).kubernetes()))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: scope.meta(meta::REDIS, &labels),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One server: never two at once holding different gates.
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            selector: meta::selector(&labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(scope.pod_labels(&labels)), ..Default::default() }),
                spec: Some(PodSpec { containers: vec![container], ..Default::default() }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    (deployment, meta::service(scope, meta::REDIS, &labels, &labels, "redis", meta::REDIS_PORT))
}
