//! The `local` target: every node is a set of ordinary processes on its own loopback
//! address, with its data under the environment's directory.
//!
//! - [`expand`]: the topology as local resources (addresses from the environment's slot).
//! - [`LocalProvider`] implements `scalectl_core::Provider` by dispatching on the kind.
//! - One module per kind of component: [`postgres`] (standalone), [`patroni`] and
//!   [`etcd`] (HA), [`pgbouncer`], [`haproxy`] (edge balancer and database router),
//!   [`redis`] (and its [`sentinel`]s), [`shop`], [`prometheus`], [`exporter`], [`alerting`] (Alertmanager and
//!   the receiver that keeps its deliveries for `scalectl alerts`).
//! - [`ops`]: status insights, slow queries, switchover.
//! - [`daemon`]: what every server process shares (directory, config files, pid, probe).
//! - [`process`]: detached processes, pid files, signals. [`health`]: TCP/HTTP probes.
//! - [`slots`]: the machine-wide claim of a loopback block per environment.
//! - [`user`]: running servers unprivileged when we are root. [`tools`]: finding programs.
//! - [`secrets`]: generated passwords in 0600 files. [`templates`]: config files.

pub mod alerting;
pub mod broker;
pub mod cgroup;
pub mod daemon;
pub mod etcd;
pub mod expand;
pub mod exporter;
pub mod faults;
pub mod fsutil;
pub mod haproxy;
pub mod health;
pub mod leader_watch;
pub mod limits;
pub mod ops;
pub mod patroni;
pub mod pgbouncer;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod secrets;
pub mod sentinel;
pub mod shop;
pub mod slots;
pub mod spec;
pub mod templates;
pub mod tools;
pub mod user;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scalectl_core::alerts::AlertOps;
use scalectl_core::fault::{FaultKind, Selector};
use scalectl_core::ops::{ChaosOps, DatabaseOps, ExplainRequest, Explained, Insights, SlowQueries, SwitchoverReport};
use scalectl_core::plan::{Action, Observed};
use scalectl_core::{Applied, Call, Check, ErrorKind, Graph, Provider, ProviderError, Readiness, Resource, ResourceKind, Target};

pub use crate::expand::{Placement, expand};

use crate::user::RunAs;

/// Everything a component needs to know about its environment.
pub struct Env {
    pub name: String,
    /// The environment's state directory; components live in `nodes/` under it.
    pub dir: PathBuf,
    pub placement: Placement,
    /// Who servers run as when we are root.
    pub run_as: Option<RunAs>,
    /// The desired resources, so a component can find what it connects to.
    pub graph: Graph,
}

impl Env {
    /// The directory of one component, such as `nodes/postgres-r1-pg-1`.
    pub fn node_dir(&self, r: &Resource) -> PathBuf {
        self.dir.join("nodes").join(r.id.replace('/', "-"))
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.join("secrets")
    }

    pub fn resource(&self, id: &str) -> anyhow::Result<&Resource> {
        self.graph.get(id).ok_or_else(|| anyhow::anyhow!("resource {id} is not part of this environment"))
    }

    /// Where resource `id` takes connections: its port, or a database router's read
    /// port when `read`.
    pub fn connect_to(&self, id: &str, read: bool) -> anyhow::Result<std::net::SocketAddr> {
        use anyhow::Context;
        let r = self.resource(id)?;
        let address = r.address.with_context(|| format!("{id} has no address"))?;
        let port = match (r.kind, read) {
            (ResourceKind::Haproxy, true) => spec::haproxy(r)?.read_port.with_context(|| format!("{id} has no read port"))?,
            _ => r.port.with_context(|| format!("{id} has no port"))?,
        };
        Ok(std::net::SocketAddr::from((address, port)))
    }

    /// The environment's loopback block in CIDR form.
    pub fn block(&self) -> String {
        format!("127.{}.0.0/16", self.placement.slot)
    }
}

/// The local target's provider. Components are plain blocking code (processes, files,
/// probes that sleep); the async calls run them on tokio's blocking pool, which is why
/// the environment is shared behind an `Arc`.
pub struct LocalProvider {
    env: Arc<Env>,
}

impl LocalProvider {
    pub fn new(name: &str, dir: &Path, placement: Placement, graph: Graph) -> anyhow::Result<Self> {
        let run_as = user::server_user()?;
        Ok(LocalProvider { env: Arc::new(Env { name: name.to_string(), dir: dir.to_path_buf(), placement, run_as, graph }) })
    }

    pub fn env(&self) -> &Env {
        &self.env
    }
}

/// An address another program holds: a conflict that no retry mends.
#[derive(Debug, thiserror::Error)]
#[error("{0} is already in use by another program; stop it or run `scalectl down` on the environment that holds it")]
pub struct PortTaken(pub std::net::SocketAddr);

/// A component's error as the engine sees it: a taken address is a conflict, the rest
/// fails the step (the local target retries inside its own waits where that helps).
fn boxed(e: anyhow::Error) -> ProviderError {
    let kind = if e.chain().any(|c| c.is::<PortTaken>()) { ErrorKind::Conflict } else { ErrorKind::Failed };
    // `{:#}` keeps the whole cause chain in one message.
    ProviderError::new(kind, format!("{e:#}"))
}

impl Provider for LocalProvider {
    fn target(&self) -> Target {
        Target::Local
    }

    fn supports(&self, kind: ResourceKind) -> bool {
        !matches!(kind, ResourceKind::CitusWorker | ResourceKind::Namespace | ResourceKind::Ingress)
    }

    fn preflight(&self, graph: &Graph) -> Vec<String> {
        let mut problems: Vec<String> = graph
            .resources
            .iter()
            .filter(|r| matches!(r.kind, ResourceKind::Postgres | ResourceKind::PatroniNode))
            .filter_map(|r| match spec::server(r) {
                Ok(s) => tools::server_bindir(&s.version).err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            })
            .collect();
        problems.dedup();
        problems
    }

    fn unused_here(&self, graph: &Graph) -> Vec<scalectl_core::topology::Unused> {
        let asked = graph.resources.iter().filter_map(|r| spec::shop(r).ok()).any(|s| s.cpu.is_some() || s.memory.is_some());
        if !asked || limits::available() {
            return Vec::new();
        }
        let why = "CPU weights and memory limits need root and the cgroup v1 cpu and memory controllers mounted writable, \
                   which this machine or user lacks; the shop's processes run without them";
        ["cpu", "memory"]
            .into_iter()
            .map(|field| scalectl_core::topology::Unused { path: format!("spec.shop.roles.*.{field}"), value: "set".into(), why: why.into() })
            .collect()
    }

    fn observe(&self, r: &Resource) -> Observed {
        let env = &self.env;
        match r.kind {
            ResourceKind::Postgres => postgres::observe(env, r),
            ResourceKind::PatroniNode => patroni::observe(env, r),
            ResourceKind::Etcd => etcd::observe(env, r),
            ResourceKind::Pgbouncer => pgbouncer::observe(env, r),
            ResourceKind::Haproxy => haproxy::observe(env, r),
            ResourceKind::Redis => redis::observe(env, r),
            ResourceKind::RedisSentinel => sentinel::observe(env, r),
            ResourceKind::Broker => broker::observe(env, r),
            ResourceKind::Shop | ResourceKind::Worker => shop::observe(env, r),
            ResourceKind::Prometheus => prometheus::observe(env, r),
            ResourceKind::Exporter => exporter::observe(env, r),
            ResourceKind::LeaderWatch => leader_watch::observe(env, r),
            ResourceKind::Alertmanager | ResourceKind::AlertReceiver => alerting::observe(env, r),
            ResourceKind::Database | ResourceKind::Migration | ResourceKind::CitusWorker | ResourceKind::Namespace | ResourceKind::Ingress => {
                Observed::Unknown
            }
        }
    }

    fn apply<'a>(&'a self, r: &'a Resource, action: &'a Action) -> Call<'a, Applied> {
        let (env, r, action) = (self.env.clone(), r.clone(), action.clone());
        Box::pin(blocking(move || apply(&env, &r, &action)))
    }

    fn readiness<'a>(&'a self, r: &'a Resource) -> Check<'a> {
        let (env, r) = (self.env.clone(), r.clone());
        Box::pin(async move { blocking(move || Ok(readiness(&env, &r))).await.unwrap_or_else(|e| Readiness::Failed(e.message)) })
    }

    fn destroy<'a>(&'a self, r: &'a Resource, keep_data: bool) -> Call<'a, ()> {
        let (env, r) = (self.env.clone(), r.clone());
        Box::pin(blocking(move || destroy(&env, &r, keep_data)))
    }

    fn logs(&self, r: &Resource, lines: usize) -> Result<String, ProviderError> {
        let dir = self.env.node_dir(r);
        let path = if r.kind.one_shot() { dir.with_extension("log") } else { dir.join("log") };
        process::tail(&path, lines).map_err(boxed)
    }

    fn config_files(&self, r: &Resource) -> Result<Vec<(String, String)>, ProviderError> {
        let env = &self.env;
        match r.kind {
            ResourceKind::Postgres => postgres::config_files(env, r),
            ResourceKind::PatroniNode => patroni::config_files(env, r),
            ResourceKind::Pgbouncer => pgbouncer::config_files(env, r),
            ResourceKind::Haproxy => haproxy::config_files(env, r),
            ResourceKind::Redis => redis::config_files(env, r),
            ResourceKind::RedisSentinel => sentinel::config_files(env, r),
            ResourceKind::Broker => broker::config_files(env, r),
            ResourceKind::Prometheus => prometheus::config_files(env, r),
            ResourceKind::LeaderWatch => leader_watch::config_files(env, r),
            ResourceKind::Alertmanager => alerting::config_files(env, r),
            _ => Ok(Vec::new()),
        }
        .map_err(boxed)
    }

    fn program_digest(&self, r: &Resource) -> Option<String> {
        matches!(r.kind, ResourceKind::Shop | ResourceKind::Worker | ResourceKind::Migration).then(shop::program_digest).flatten()
    }

    fn endpoints(&self) -> BTreeMap<&'static str, String> {
        let graph = &self.env.graph;
        let mut out = BTreeMap::new();
        let first = |kind: ResourceKind| graph.resources.iter().find(|r| r.kind == kind);
        let edge = graph.resources.iter().find(|r| r.kind == ResourceKind::Haproxy && !haproxy::is_router(r));
        if let Some(e) = edge.or_else(|| first(ResourceKind::Shop)).and_then(Resource::endpoint) {
            out.insert("shop", format!("http://{e}"));
        }
        let db = first(ResourceKind::Pgbouncer).or_else(|| first(ResourceKind::Postgres)).or_else(|| first(ResourceKind::PatroniNode));
        if let Some(e) = db.and_then(Resource::endpoint) {
            out.insert("database", format!("postgres://shop@{e}/shop"));
        }
        if let Some(p) = first(ResourceKind::Prometheus)
            && !matches!(self.observe(p), Observed::Unknown)
            && let Some(e) = p.endpoint()
        {
            out.insert("prometheus", format!("http://{e}"));
        }
        if let Some(e) = first(ResourceKind::Alertmanager).and_then(Resource::endpoint) {
            out.insert("alertmanager", format!("http://{e}"));
        }
        out
    }

    fn database(&self) -> Option<&dyn DatabaseOps> {
        Some(self)
    }

    fn chaos(&self) -> Option<&dyn ChaosOps> {
        Some(self)
    }

    fn alerts(&self) -> Option<&dyn AlertOps> {
        Some(self)
    }
}

impl AlertOps for LocalProvider {
    fn notifications(&self) -> Result<Vec<scalectl_core::alerts::Received>, ProviderError> {
        alerting::journal(&self.env).map_err(boxed)
    }

    fn active(&self) -> Option<Vec<String>> {
        alerting::active(&self.env)
    }
}

/// Runs a component's blocking work on tokio's blocking pool, so that the engine's
/// other steps go on meanwhile. A panic in the work is a panic here too.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static) -> Result<T, ProviderError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ProviderError::new(ErrorKind::Failed, format!("the local provider's work was cancelled: {e}"))),
    }
}

/// Brings `r` to its desired definition; see `Provider::apply`.
fn apply(env: &Env, r: &Resource, action: &Action) -> Result<Applied, ProviderError> {
    let done = |res: anyhow::Result<()>| res.map(|()| None);
    match r.kind {
        ResourceKind::Postgres => done(postgres::apply(env, r, action)),
        ResourceKind::PatroniNode => patroni::apply(env, r, action),
        ResourceKind::Etcd => done(etcd::apply(env, r)),
        ResourceKind::Database => done(postgres::apply_database(env, r)),
        ResourceKind::Migration => done(shop::migrate(env, r)),
        ResourceKind::Pgbouncer => done(pgbouncer::apply(env, r, action)),
        ResourceKind::Haproxy => done(haproxy::apply(env, r, action)),
        ResourceKind::Redis => done(redis::apply(env, r)),
        ResourceKind::RedisSentinel => done(sentinel::apply(env, r)),
        ResourceKind::Broker => done(broker::apply(env, r)),
        ResourceKind::Shop | ResourceKind::Worker => done(shop::apply(env, r)),
        ResourceKind::Prometheus => prometheus::apply(env, r),
        ResourceKind::Exporter => exporter::apply(env, r),
        ResourceKind::LeaderWatch => done(leader_watch::apply(env, r)),
        ResourceKind::Alertmanager | ResourceKind::AlertReceiver => done(alerting::apply(env, r)),
        ResourceKind::CitusWorker => Err(anyhow::anyhow!("the local target cannot run Citus workers")),
        ResourceKind::Namespace | ResourceKind::Ingress => Err(anyhow::anyhow!("{} is a Kubernetes object; the local target has none", r.id)),
    }
    .map(|note| Applied { note, outputs: r.endpoint().map(|e| [("endpoint".to_string(), e)].into()).unwrap_or_default() })
    .map_err(boxed)
}

/// One readiness check of `r`; see `Provider::readiness`.
fn readiness(env: &Env, r: &Resource) -> Readiness {
    match r.kind {
        ResourceKind::Postgres => postgres::readiness(env, r),
        ResourceKind::PatroniNode => patroni::readiness(env, r),
        ResourceKind::Etcd => etcd::readiness(env, r),
        ResourceKind::Pgbouncer => pgbouncer::readiness(env, r),
        ResourceKind::Haproxy => haproxy::readiness(env, r),
        ResourceKind::Redis => redis::readiness(env, r),
        ResourceKind::RedisSentinel => sentinel::readiness(env, r),
        ResourceKind::Broker => broker::readiness(env, r),
        ResourceKind::Shop | ResourceKind::Worker => shop::readiness(env, r),
        ResourceKind::Prometheus => prometheus::readiness(env, r),
        ResourceKind::Exporter => exporter::readiness(env, r),
        ResourceKind::LeaderWatch => leader_watch::readiness(env, r),
        ResourceKind::Alertmanager | ResourceKind::AlertReceiver => alerting::readiness(env, r),
        ResourceKind::Database | ResourceKind::Migration | ResourceKind::CitusWorker | ResourceKind::Namespace | ResourceKind::Ingress => {
            Ok(Readiness::Ready)
        }
    }
    // What keeps the check from being made at all (no address, no program) will not
    // mend by waiting.
    .unwrap_or_else(|e| Readiness::Failed(format!("{e:#}")))
}

/// Stops `r` and, unless `keep_data`, deletes its data.
fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<(), ProviderError> {
    match r.kind {
        ResourceKind::Postgres => postgres::destroy(env, r, keep_data),
        ResourceKind::PatroniNode => patroni::destroy(env, r, keep_data),
        ResourceKind::Etcd => etcd::destroy(env, r, keep_data),
        ResourceKind::Pgbouncer => pgbouncer::destroy(env, r, keep_data),
        ResourceKind::Haproxy => haproxy::destroy(env, r, keep_data),
        ResourceKind::Redis => redis::destroy(env, r, keep_data),
        ResourceKind::RedisSentinel => sentinel::destroy(env, r, keep_data),
        ResourceKind::Broker => broker::destroy(env, r, keep_data),
        ResourceKind::Shop | ResourceKind::Worker => shop::destroy(env, r, keep_data),
        ResourceKind::Prometheus => prometheus::destroy(env, r, keep_data),
        ResourceKind::Exporter => exporter::destroy(env, r, keep_data),
        ResourceKind::LeaderWatch => leader_watch::destroy(env, r, keep_data),
        ResourceKind::Alertmanager | ResourceKind::AlertReceiver => alerting::destroy(env, r, keep_data),
        // Tasks leave nothing running; their effects live in the database's data.
        ResourceKind::Database | ResourceKind::Migration | ResourceKind::CitusWorker | ResourceKind::Namespace | ResourceKind::Ingress => Ok(()),
    }
    .map_err(boxed)
}

impl DatabaseOps for LocalProvider {
    fn query(&self, sql: &str) -> Result<String, ProviderError> {
        ops::query(&self.env, sql).map_err(boxed)
    }

    fn insights(&self) -> Insights {
        ops::insights(&self.env)
    }

    fn slow_queries(&self, limit: usize) -> Result<SlowQueries, ProviderError> {
        ops::slow_queries(&self.env, limit).map_err(boxed)
    }

    fn explain(&self, sql: &str, request: ExplainRequest) -> Result<Explained, ProviderError> {
        ops::explain(&self.env, sql, request).map_err(boxed)
    }

    fn switchover(&self, to: Option<&str>) -> Result<SwitchoverReport, ProviderError> {
        ops::switchover(&self.env, to).map_err(boxed)
    }
}

impl ChaosOps for LocalProvider {
    fn inject(&self, kind: FaultKind, targets: &[Selector]) -> Result<String, ProviderError> {
        faults::inject(&self.env, kind, targets).map_err(boxed)
    }

    fn heal(&self) -> Result<Option<String>, ProviderError> {
        let h = faults::heal(&self.env).map_err(boxed)?;
        Ok((h.rules_removed + h.processes_resumed + h.poolers_resumed > 0).then(|| {
            format!(
                "undid lingering faults: {} network rule(s) removed, {} stopped process(es) resumed, {} paused pooler(s) resumed",
                h.rules_removed, h.processes_resumed, h.poolers_resumed
            )
        }))
    }
}
