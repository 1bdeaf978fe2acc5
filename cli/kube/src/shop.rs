//! The shop on Kubernetes: the migration Job, one Deployment and Service per role pool
//! (with an autoscaler and a disruption budget), and the outbox workers. Every process
//! gets what the local target gives it (database and Redis URLs, pooling mode, pool size,
//! rate limits), with credentials read from Secrets, never written into an object.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector,
    SecurityContext, Service,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use scalectl_core::manifest::KubernetesTarget;
use scalectl_core::topology::{DbCluster, ShopPool, Topology, WorkerPool, rate_text};
use scalectl_core::{ByteSize, Cpu};

use crate::database::{self, Endpoints};
use crate::meta::{self, APP_TIER, NAME_LABEL, ROLE_LABEL, Scope, TIER_LABEL};

/// What every shop process is given: its image, its connections and their credentials.
pub struct Wiring<'a> {
    pub scope: &'a Scope,
    pub image: &'a str,
    pub cluster: &'a DbCluster,
    pub db: Endpoints,
    pub redis: bool,
}

impl<'a> Wiring<'a> {
    pub fn new(scope: &'a Scope, t: &Topology, cluster: &'a DbCluster, k: &'a KubernetesTarget, region: &str) -> Self {
        Wiring { scope, image: &k.image, cluster, db: database::endpoints(t, cluster, k), redis: t.cache_in(region).is_some() }
    }

    fn secret(&self, name: &str, secret: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The database credentials, then `DATABASE_URL` to `host` built from them
    /// (Kubernetes expands `$(VAR)` from variables defined earlier in the list).
    fn database(&self, host: &str) -> Vec<EnvVar> {
        let secret = meta::app_secret(self.cluster);
        vec![self.secret("DB_USER", &secret, "username"), self.secret("DB_PASSWORD", &secret, "password"), value("DATABASE_URL", &url(host, "shop"))]
    }

    /// What `shop serve` and `shop worker` share: writes, pooling mode, Redis, log format.
    fn long_running(&self) -> Vec<EnvVar> {
        let mut env = vec![value("SHOP_LOG_FORMAT", "json"), value("SHOP_REDIS_PREFIX", &format!("{}:", self.scope.env))];
        env.extend(self.database(&self.db.writes));
        if self.db.transaction_pooling {
            env.push(value("SHOP_DB_POOLER", "transaction"));
        }
        if self.redis {
            env.push(self.secret("REDIS_PASSWORD", meta::REDIS_SECRET, "password"));
            env.push(value("REDIS_URL", &format!("redis://:$(REDIS_PASSWORD)@{}:{}/", meta::REDIS, meta::REDIS_PORT)));
        }
        env
    }

    fn container(&self, name: &str, args: &[&str], env: Vec<EnvVar>) -> Container {
        Container {
            name: name.into(),
            image: Some(self.image.into()),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            env: Some(env),
            resources: Some(resources(None, None, None)),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn value(name: &str, v: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(v.into()), ..Default::default() }
}

fn url(host: &str, database: &str) -> String {
    format!("postgres://$(DB_USER):$(DB_PASSWORD)@{host}:{}/{database}", meta::PG_PORT)
}

/// What one shop process asks for: the role's `cpu` as its request and `cpuLimit` as its
/// CPU limit, and its `memory` as
/// both request and limit (the memory it may use is then reserved for it), where the
/// manifest sizes the role; else 250m, 256Mi and a limit of 512Mi, which fit a kind node
/// and leave room to scale out. The Helm chart's `scalectl.resources` writes the same.
fn resources(cpu: Option<Cpu>, cpu_limit: Option<Cpu>, memory: Option<ByteSize>) -> ResourceRequirements {
    // A limit alone is also the request, as Kubernetes itself defaults it.
    let cpu = cpu.or(cpu_limit).unwrap_or(Cpu::from_millis(250));
    let (request, limit) = match memory {
        Some(m) => (m, m),
        None => (ByteSize::mib(256), ByteSize::mib(512)),
    };
    let mut limits = BTreeMap::from([("memory".into(), Quantity(limit.kubernetes()))]);
    if let Some(cap) = cpu_limit {
        limits.insert("cpu".into(), Quantity(cap.kubernetes()));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.kubernetes())), ("memory".into(), Quantity(request.kubernetes()))])),
        limits: Some(limits),
        ..Default::default()
    }
}

/// `shop migrate` straight to the primary (migrations hold a session lock, which a
/// transaction pooler cannot keep), then `shop partition-orders` when the level
/// partitions orders: an init container and a container, so no shell is needed.
pub fn migration(w: &Wiring, t: &Topology) -> Job {
    let primary = format!("{}-rw", meta::cluster(w.cluster));
    let env = || {
        let mut env = vec![value("SHOP_LOG_FORMAT", "json")];
        env.extend(w.database(&primary));
        env
    };
    let migrate = w.container("migrate", &["migrate"], env());
    let premake = t.database.partitions_ahead();
    let (init, main) = if premake > 0 {
        let premake = premake.to_string();
        (Some(vec![migrate]), w.container("partition-orders", &["partition-orders", "--premake", &premake], env()))
    } else {
        (None, migrate)
    };
    let labels = [(NAME_LABEL, meta::MIGRATE), (TIER_LABEL, APP_TIER)];
    Job {
        metadata: w.scope.meta(meta::MIGRATE, &labels),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(w.scope.pod_labels(&labels)), ..Default::default() }),
                spec: Some(PodSpec { init_containers: init, containers: vec![main], restart_policy: Some("OnFailure".into()), ..Default::default() }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The objects of one role pool: Deployment, Service, and where the level asks for them
/// an autoscaler (which then owns the replica count) and a disruption budget.
pub fn pool(
    w: &Wiring,
    t: &Topology,
    p: &ShopPool,
    k: &KubernetesTarget,
) -> (Deployment, Service, Option<HorizontalPodAutoscaler>, Option<PodDisruptionBudget>) {
    let name = meta::shop(p.role);
    let labels = [(NAME_LABEL, "shop"), (ROLE_LABEL, p.role.as_str()), (TIER_LABEL, APP_TIER)];
    let select = [(NAME_LABEL, "shop"), (ROLE_LABEL, p.role.as_str())];
    let mut env = vec![value("SHOP_BIND", &format!("0.0.0.0:{}", meta::SHOP_PORT)), value("SHOP_ROLES", p.role.as_str())];
    env.extend(w.long_running());
    if let Some(reads) = &w.db.reads {
        env.push(value("READ_DATABASE_URL", &url(reads, "shop")));
    }
    env.push(value("SHOP_DB_POOL_SIZE", &t.shop.db_pool_size.to_string()));
    let rates = &t.shop.rate_limits;
    for (rate, var) in [(&rates.login, "SHOP_RATE_LOGIN"), (&rates.register, "SHOP_RATE_REGISTER"), (&rates.search, "SHOP_RATE_SEARCH")] {
        let text = rate_text(rate);
        env.push(value(var, if text == "off" { "0" } else { &text }));
    }
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::String("http".into()), ..Default::default() }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let mut container = w.container("shop", &["serve"], env);
    container.resources = Some(resources(p.cpu, p.cpu_limit, p.memory));
    container.ports = Some(vec![ContainerPort { name: Some("http".into()), container_port: meta::SHOP_PORT, ..Default::default() }]);
    container.readiness_probe = Some(probe("/readyz", 5));
    container.liveness_probe = Some(Probe { failure_threshold: Some(6), ..probe("/healthz", 10) });

    let autoscaler = k.autoscaling.as_ref().map(|a| {
        let min = a.min_replicas.max(1);
        HorizontalPodAutoscaler {
            metadata: w.scope.meta(&name, &labels),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference { api_version: Some("apps/v1".into()), kind: "Deployment".into(), name: name.clone() },
                min_replicas: Some(i32::from(min)),
                max_replicas: i32::from(a.max_replicas.max(min)),
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(i32::from(a.target_cpu_percent)),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    });
    let least = autoscaler.as_ref().and_then(|h| h.spec.as_ref()?.min_replicas).unwrap_or(i32::from(p.replicas));
    let deployment = Deployment {
        metadata: w.scope.meta(&name, &labels),
        spec: Some(DeploymentSpec {
            // An autoscaler owns the count; applying one here would fight it on every `up`.
            replicas: autoscaler.is_none().then_some(i32::from(p.replicas)),
            selector: meta::selector(&select),
            template: pod(w, &labels, container, true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = meta::service(w.scope, &name, &labels, &select, "http", meta::SHOP_PORT);
    let budget = (least > 1).then(|| PodDisruptionBudget {
        metadata: w.scope.meta(&name, &labels),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(meta::selector(&select)),
            ..Default::default()
        }),
        ..Default::default()
    });
    (deployment, service, autoscaler, budget)
}

/// The outbox workers, which also keep order partitions made ahead.
pub fn workers(w: &Wiring, t: &Topology, p: &WorkerPool) -> Deployment {
    let labels = [(NAME_LABEL, meta::WORKER), (TIER_LABEL, APP_TIER)];
    let mut env = w.long_running();
    let premake = t.database.partitions_ahead();
    if premake > 0 {
        env.push(value("SHOP_ORDER_PARTITIONS_PREMAKE", &premake.to_string()));
    }
    let container = w.container("worker", &["worker"], env);
    Deployment {
        metadata: w.scope.meta(meta::WORKER, &labels),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::from(p.replicas)),
            selector: meta::selector(&[(NAME_LABEL, meta::WORKER)]),
            template: pod(w, &labels, container, false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod template; `scraped` pods carry the annotations Prometheus' Kubernetes discovery
/// conventionally selects on.
fn pod(w: &Wiring, labels: &[(&str, &str)], container: Container, scraped: bool) -> PodTemplateSpec {
    let annotations = scraped.then(|| {
        BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), meta::SHOP_PORT.to_string()),
            ("prometheus.io/path".to_string(), "/metrics".to_string()),
        ])
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(w.scope.pod_labels(labels)), annotations, ..Default::default() }),
        spec: Some(PodSpec { containers: vec![container], ..Default::default() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantities(r: &ResourceRequirements) -> (String, Option<String>) {
        let cpu = |m: &Option<BTreeMap<String, Quantity>>| m.as_ref().and_then(|m| m.get("cpu")).map(|q| q.0.clone());
        (cpu(&r.requests).unwrap(), cpu(&r.limits))
    }

    #[test]
    fn a_cpu_limit_alone_is_also_the_request_so_the_pod_is_admitted() {
        let cap = Cpu::parse("100m").unwrap();
        assert_eq!(quantities(&resources(None, Some(cap), None)), ("100m".into(), Some("100m".into())));
        assert_eq!(quantities(&resources(None, None, None)), ("250m".into(), None), "defaults: a request, no cap");
        let request = Cpu::parse("50m").unwrap();
        assert_eq!(quantities(&resources(Some(request), Some(cap), None)), ("50m".into(), Some("100m".into())));
    }
}
