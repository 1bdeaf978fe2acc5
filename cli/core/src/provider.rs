//! The one trait every target implements. The core only declares it; the providers
//! (`cli/local`, later `cli/kube` and `cli/aws`) do the I/O.

use std::time::Instant;

use crate::graph::{Graph, Resource, ResourceKind};
use crate::plan::{Action, Observed};
use crate::target::Target;

pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// Runs resources on one target. Every method is idempotent: calling `apply` on a
/// resource that is already as desired changes nothing, and a call interrupted at any
/// point is finished by the next one.
pub trait Provider: Sync {
    fn target(&self) -> Target;

    /// Whether this provider can run resources of `kind` yet.
    fn supports(&self, kind: ResourceKind) -> bool;

    /// Problems that would stop `up` part-way, found before anything starts (a
    /// PostgreSQL version this machine lacks, say); each says what to do.
    fn preflight(&self, _graph: &Graph) -> Vec<String> {
        Vec::new()
    }

    /// What is running for `resource` right now. Cheap: `plan` calls it for every resource.
    fn observe(&self, resource: &Resource) -> Observed;

    /// Brings `resource` to its desired definition (`action` says why it is called).
    /// The returned note, if any, is something the user should read (a skipped optional
    /// part, say).
    fn apply(&self, resource: &Resource, action: &Action) -> Result<Option<String>, ProviderError>;

    /// Waits until `resource` answers its health check, or fails at `deadline`.
    fn wait_healthy(&self, resource: &Resource, deadline: Instant) -> Result<(), ProviderError>;

    /// Stops `resource` and, unless `keep_data`, deletes its data.
    fn destroy(&self, resource: &Resource, keep_data: bool) -> Result<(), ProviderError>;

    /// The last `lines` lines of the resource's log.
    fn logs(&self, resource: &Resource, lines: usize) -> Result<String, ProviderError>;

    /// Every configuration file generated for `resource`, as (file name, contents).
    fn config_files(&self, resource: &Resource) -> Result<Vec<(String, String)>, ProviderError>;

    /// An identity of the program `resource` runs when scalectl deploys it from a local
    /// build (the shop), so that a rebuilt shop shows in the plan and is rolled out.
    fn program_digest(&self, _resource: &Resource) -> Option<String> {
        None
    }

    /// Undoes what a chaos fault may have left behind (network rules, stopped
    /// processes), for instance after an interrupted `chaos run`. Every command on an
    /// environment calls it first; returns a note when it undid something.
    fn heal(&self) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    /// Runs SQL on the primary's shop database as the superuser; psql's unaligned output.
    fn query(&self, _sql: &str) -> Result<String, ProviderError> {
        Err(format!("SQL is not available on the {} target", self.target()).into())
    }

    /// Injects one chaos fault (`kind` as in experiment files: node-loss, freeze,
    /// restart, partition, switchover, redis-loss, shop-instance-loss) on `targets`
    /// (one selector, or two sides for a partition); returns what it did.
    fn inject(&self, _kind: &str, _targets: &[&str]) -> Result<String, ProviderError> {
        Err(format!("chaos faults are not available on the {} target", self.target()).into())
    }

    /// What an operator asks beyond up or down: the database leader and each replica's
    /// lag, pool use, cache hit ratio. Best effort: what cannot be read is left out.
    fn insights(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The statements that cost the most, from pg_stat_statements on the primary:
    /// `{"by_total": [...], "by_mean": [...]}`, at most `limit` each.
    fn slow_queries(&self, _limit: usize) -> Result<serde_json::Value, ProviderError> {
        Err(format!("slow-query analysis is not available on the {} target", self.target()).into())
    }

    /// A planned switchover of the database leader (to `to`, or to the synchronous
    /// standby), waiting until writes through the shop's path succeed again.
    fn switchover(&self, _to: Option<&str>) -> Result<serde_json::Value, ProviderError> {
        Err(format!("switchover is not available on the {} target", self.target()).into())
    }
}
