//! Desired resources and the dependency graph between them: what `expand` produces and
//! what `plan` and `apply` walk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::spec::Spec;

/// What a resource is; each provider knows how to run some of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A PostgreSQL server: a data directory and a postmaster.
    Postgres,
    /// A Patroni-managed PostgreSQL node (level 3 and up).
    PatroniNode,
    /// One member of the etcd cluster Patroni keeps its leader lock in.
    Etcd,
    /// The shop's role and database, and their extensions.
    Database,
    /// `shop migrate`: runs once per change of what it depends on.
    Migration,
    Pgbouncer,
    Redis,
    /// One Redis Sentinel: with its peers it watches a Redis primary and its replicas,
    /// promotes a replica when the primary is lost, and tells clients where the primary
    /// is now (level 4 and up, where the manifest asks for Redis replicas).
    RedisSentinel,
    /// The message broker order events travel through on their way to the workers
    /// (level 5 and up).
    Broker,
    /// One `shop serve` process.
    Shop,
    /// One `shop worker` process draining the outbox.
    Worker,
    Haproxy,
    Prometheus,
    Exporter,
    /// A Citus worker node holding shards (level 6).
    CitusWorker,
    /// Where an environment's objects live on a cluster (a Kubernetes namespace), with
    /// its generated secrets and access rules.
    Namespace,
    /// The HTTP entry in front of the shop pools on a cluster (a Kubernetes Ingress).
    Ingress,
    /// Releases a Patroni cluster's leader lock as soon as the leader's node is dead
    /// (local target), instead of waiting for the lock to expire.
    LeaderWatch,
    /// Routes Prometheus's alerts to receivers, grouped and deduplicated, with their
    /// resolution (the level's burn-rate alerts, level 5 and up).
    Alertmanager,
    /// Where Alertmanager's webhook delivers alerts, kept so `scalectl alerts` can read
    /// back what fired and what resolved (local target).
    AlertReceiver,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Postgres => "postgres",
            ResourceKind::PatroniNode => "patroni-node",
            ResourceKind::Etcd => "etcd",
            ResourceKind::Database => "database",
            ResourceKind::Migration => "migration",
            ResourceKind::Pgbouncer => "pgbouncer",
            ResourceKind::Redis => "redis",
            ResourceKind::RedisSentinel => "redis-sentinel",
            ResourceKind::Broker => "broker",
            ResourceKind::Shop => "shop",
            ResourceKind::Worker => "worker",
            ResourceKind::Haproxy => "haproxy",
            ResourceKind::Prometheus => "prometheus",
            ResourceKind::Exporter => "exporter",
            ResourceKind::CitusWorker => "citus-worker",
            ResourceKind::Namespace => "namespace",
            ResourceKind::Ingress => "ingress",
            ResourceKind::LeaderWatch => "leader-watch",
            ResourceKind::Alertmanager => "alertmanager",
            ResourceKind::AlertReceiver => "alert-receiver",
        }
    }

    /// A one-shot resource is a task, not a process: it re-runs when something it depends
    /// on changes, and there is nothing to observe between runs.
    pub fn one_shot(self) -> bool {
        matches!(self, ResourceKind::Database | ResourceKind::Migration)
    }

    /// Processes that hold no data and serve until what replaces them is ready: when
    /// the manifest drops them (a level's monolith for its role pools, say), `up`
    /// removes them last, after every other step, so that an environment moved in
    /// place keeps answering.
    pub fn removed_last(self) -> bool {
        matches!(self, ResourceKind::Shop | ResourceKind::Worker)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that must exist. Its `spec` is everything that defines it; a change in any
/// field is a change the plan shows and apply carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Unique and stable, such as `postgres/r1-pg-1`.
    pub id: String,
    pub kind: ResourceKind,
    pub region: String,
    /// Loopback address (local target) the resource listens on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The target's typed spec for this kind, serialized (`props` before state format 3).
    #[serde(default)]
    pub spec: Spec,
    /// What the resource runs that its definition does not say: digests of its
    /// generated configuration files (`config_digest`) and, for our own programs, of the
    /// binary (`program_digest`). Kept apart from `spec`, which `expand` alone decides,
    /// and compared by `plan` like them, so a template change or a rebuilt shop is a
    /// planned change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

impl Resource {
    /// `address:port`, when it listens.
    pub fn endpoint(&self) -> Option<String> {
        Some(format!("{}:{}", self.address?, self.port?))
    }
}

/// Resources in dependency order (each after everything it depends on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    pub resources: Vec<Resource>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("resource {0} is defined twice")]
    Duplicate(String),
    #[error("resource {from} depends on {to}, which does not exist")]
    MissingDependency { from: String, to: String },
    #[error("resources depend on each other in a cycle: {0}")]
    Cycle(String),
}

impl Graph {
    /// Orders `resources` so that dependencies come first; ties keep their given order.
    pub fn new(resources: Vec<Resource>) -> Result<Graph, GraphError> {
        let mut ids = BTreeSet::new();
        for r in &resources {
            if !ids.insert(r.id.as_str()) {
                return Err(GraphError::Duplicate(r.id.clone()));
            }
        }
        for r in &resources {
            if let Some(d) = r.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
                return Err(GraphError::MissingDependency { from: r.id.clone(), to: d.clone() });
            }
        }
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(resources.len());
        let mut rest = resources;
        while !rest.is_empty() {
            let before = rest.len();
            let (ready, waiting): (Vec<_>, Vec<_>) = rest.into_iter().partition(|r| r.depends_on.iter().all(|d| placed.contains(d)));
            if ready.is_empty() {
                let names: Vec<_> = waiting.iter().map(|r| r.id.as_str()).collect();
                return Err(GraphError::Cycle(names.join(", ")));
            }
            placed.extend(ready.iter().map(|r| r.id.clone()));
            ordered.extend(ready);
            rest = waiting;
            debug_assert!(rest.len() < before);
        }
        Ok(Graph { resources: ordered })
    }

    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// Every resource that depends on `id`, directly or not.
    pub fn dependents(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut frontier = vec![id.to_string()];
        while let Some(cur) = frontier.pop() {
            for r in &self.resources {
                if r.depends_on.contains(&cur) && out.insert(r.id.clone()) {
                    frontier.push(r.id.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, deps: &[&str]) -> Resource {
        Resource {
            id: id.into(),
            kind: ResourceKind::Shop,
            digests: BTreeMap::new(),
            region: "r1".into(),
            address: None,
            port: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            spec: Spec::default(),
        }
    }

    #[test]
    fn orders_dependencies_first_and_finds_cycles() {
        let g = Graph::new(vec![r("c", &["b"]), r("b", &["a"]), r("a", &[])]).unwrap();
        let ids: Vec<_> = g.resources.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(g.dependents("a").len(), 2);
        assert!(matches!(Graph::new(vec![r("a", &["b"]), r("b", &["a"])]), Err(GraphError::Cycle(_))));
        assert!(matches!(Graph::new(vec![r("a", &["x"])]), Err(GraphError::MissingDependency { .. })));
        assert!(matches!(Graph::new(vec![r("a", &[]), r("a", &[])]), Err(GraphError::Duplicate(_))));
    }
}
