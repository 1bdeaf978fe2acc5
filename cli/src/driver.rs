//! The drivers: the one module of `cli/src` that names a provider crate (a rule in
//! ARCHITECTURE.md). A command asks here for a target's resources and provider, and for
//! the few machine services the local crate owns (slots, atomic files, program lookup),
//! so that adding a target means adding a match arm here, not touching every command.

use std::path::Path;

use anyhow::{Result, bail};
use scalectl_core::{Graph, Manifest, Provider, Target, Topology};
use scalectl_local::{LocalProvider, Placement};

pub use scalectl_local::fsutil::{remove_dir, write_atomic};
pub use scalectl_local::health::http as http_probe;
pub use scalectl_local::tools::{self, Program};

/// The desired resources of environment `name` from `manifest` on `target`; `slot` places
/// a local environment (0 when none is claimed yet: a plan of an environment that does
/// not exist).
pub fn desired(manifest: &Manifest, name: &str, target: Target, slot: u8) -> Result<Graph> {
    let topology = Topology::from_manifest(manifest);
    match target {
        Target::Local => Ok(scalectl_local::expand(&topology, Placement { slot })?),
        Target::Kubernetes => Ok(scalectl_kube::graph::resources(&scalectl_kube::expand(&topology, manifest, name)?)?),
        other => bail!("target {other} is not implemented yet; use --target local"),
    }
}

/// The objects of environment `name` on Kubernetes, in apply order, with notes on what
/// is not rendered yet.
pub fn kubernetes_objects(manifest: &Manifest, name: &str) -> Result<scalectl_kube::Rendered> {
    Ok(scalectl_kube::expand(&Topology::from_manifest(manifest), manifest, name)?)
}

/// What the Kubernetes clusters the `levels` name offer, and what they lack.
pub fn kubernetes_doctor(levels: &[(u8, &Manifest)]) -> Vec<scalectl_kube::doctor::Finding> {
    scalectl_kube::doctor::run(&scalectl_kube::doctor::wanted(levels))
}

/// An object as YAML, as `kubectl get -o yaml` would show it.
pub fn yaml(value: &serde_json::Value) -> String {
    scalectl_kube::yaml::to_yaml(value)
}

/// The provider for an environment on `target`, over the resources in `graph`.
pub fn provider(env_dir: &Path, name: &str, target: Target, slot: u8, graph: Graph, force_conflicts: bool) -> Result<Box<dyn Provider>> {
    match target {
        Target::Local => Ok(Box::new(LocalProvider::new(name, env_dir, Placement { slot }, graph)?)),
        Target::Kubernetes => Ok(Box::new(scalectl_kube::KubeProvider::new(env_dir, graph, scalectl_kube::Options { force_conflicts })?)),
        other => bail!("target {other} is not implemented yet; use --target local"),
    }
}

/// Runs a local Patroni cluster's leader watch until it is stopped (`__leader-watch`).
pub fn leader_watch(config: &Path) -> Result<()> {
    scalectl_local::leader_watch::run(config)
}

/// Keeps Alertmanager's webhook deliveries until stopped (`__alert-receiver`).
pub fn alert_receiver(listen: std::net::SocketAddr, journal: &Path) -> Result<()> {
    scalectl_local::alerting::run_receiver(listen, journal)
}

/// Claims a machine-wide loopback block for a new local environment.
pub fn claim_slot(env_dir: &Path) -> Result<u8> {
    scalectl_local::slots::claim(env_dir)
}

pub fn release_slot(slot: u8, env_dir: &Path) {
    scalectl_local::slots::release(slot, env_dir)
}

/// Loopback blocks of local environments deleted without `down`, under any home, with
/// the processes they left; `stop` stops those and frees the blocks.
pub fn abandoned_slots(stop: bool) -> Result<Vec<scalectl_local::slots::Abandoned>> {
    scalectl_local::slots::abandoned(stop)
}

/// Runs `sql` on the primary's shop database of a local environment.
pub fn shop_sql(env_dir: &Path, name: &str, slot: u8, graph: Graph, sql: &str) -> Result<String> {
    let provider = LocalProvider::new(name, env_dir, Placement { slot }, graph)?;
    scalectl_local::ops::shop_sql(provider.env(), sql)
}
