//! The typed experiment file (`chaos/*.yaml`): serde for reading it, schemars for the
//! JSON Schema that validation and editors use. Rules across fields live in `rules.rs`.

pub use scalectl_core::fault::{FaultKind, Selector as Target};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::expect::Expect;
use crate::span::Span;

/// One chaos experiment: what must hold, the load that runs throughout, the faults, how
/// to undo them, and which checks judge the recorded history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Experiment {
    /// Always `scalectl.dev/v1`.
    #[schemars(extend("const" = "scalectl.dev/v1"))]
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    /// The environment levels (1 to 6) this experiment makes sense on.
    pub levels: Vec<u8>,
    pub steady_state: SteadyState,
    pub workload: Workload,
    /// The faults, each with its target and timing (offsets from the workload's start).
    pub method: Vec<Fault>,
    /// What undoes the faults; run always, even after an interrupted run.
    pub rollbacks: Vec<Rollback>,
    pub checks: Checks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    Experiment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The experiment's name, which `scalectl chaos list` shows (the file's stem).
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// The hypothesis: probes that must all pass before the faults, after recovery, and (when
/// `during` is set) continuously while the method runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SteadyState {
    /// Also probe while the faults run (a failing probe then is reported, not fatal).
    #[serde(default)]
    pub during: bool,
    /// How often probes run during the method.
    #[serde(default = "probe_interval")]
    pub interval: Span,
    /// How long after the method ends the probes may take to pass again.
    #[serde(default = "recovery_timeout")]
    pub recovery_timeout: Span,
    pub probes: Vec<Probe>,
}

/// One probe. Exactly one of `http`, `sql`, `prometheus` or `process` is set: a flat
/// struct rather than an enum so that a misspelt probe kind gets a nearest-key hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessProbe>,
}

/// A probe's one check, borrowed from the [`Probe`] that validation proved has exactly one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeCheck<'a> {
    Http(&'a HttpProbe),
    Sql(&'a SqlProbe),
    Prometheus(&'a PrometheusProbe),
    Process(&'a ProcessProbe),
}

impl Probe {
    /// The probe's check; `None` only for a probe that did not pass validation.
    pub fn check(&self) -> Option<ProbeCheck<'_>> {
        let all = [
            self.http.as_ref().map(ProbeCheck::Http),
            self.sql.as_ref().map(ProbeCheck::Sql),
            self.prometheus.as_ref().map(ProbeCheck::Prometheus),
            self.process.as_ref().map(ProbeCheck::Process),
        ];
        let mut set = all.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

/// A shop route through the edge: it must answer `status` within `maxLatency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// A path such as `/products?limit=5` or `/readyz`.
    pub route: String,
    #[serde(default = "ok_status")]
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    pub max_latency: Span,
}

/// A query on the primary whose first column of the first row must meet `expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlProbe {
    pub query: String,
    pub expect: Expect,
}

/// An instant PromQL query whose (single) value must meet `expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusProbe {
    pub query: String,
    pub expect: Expect,
}

/// At least `min` processes of a component are running and answer their health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessProbe {
    pub component: Component,
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Postgres,
    Patroni,
    Etcd,
    Pgbouncer,
    Haproxy,
    Redis,
    Shop,
    Worker,
    Prometheus,
}

/// The `scalectl load` scenario that runs from before the first fault to after the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub scenario: Scenario,
    /// Operations per second offered (open model: not slowed down by a slow system).
    #[schemars(range(min = 1))]
    pub rate: u32,
    pub duration: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Browse,
    Checkout,
    Mixed,
    FlashSale,
}

/// One fault: what happens to which target, when, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// The node the fault hits; every kind but `partition` has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The two sides a `partition` cuts apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<Vec<Target>>,
    /// Offset from the workload's start, or with `after`, from that fault's end.
    pub at: Span,
    /// Starts `at` after the end of an earlier fault of the method (its index from 0):
    /// when the earlier one is over (a switchover has returned, a partition is healed),
    /// whenever that is. Faults without it start at their offset, so they may overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<usize>,
    /// How long the fault lasts before it is undone (none for `restart` and `switchover`,
    /// which are over when they complete; a `node-loss` without one stays down until the
    /// rollbacks run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Span>,
}

/// What undoes faults. Each runs whether or not its fault ran, and is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Rollback {
    /// SIGCONT every process this experiment stopped.
    Resume,
    /// Remove every network rule this experiment added.
    Heal,
    /// Start every process of the environment that is not running.
    Restart,
}

impl Rollback {
    /// The rollback that undoes a fault kind, if it leaves anything to undo.
    pub fn undoing(kind: FaultKind) -> Option<Rollback> {
        match kind {
            FaultKind::Freeze => Some(Rollback::Resume),
            FaultKind::Partition => Some(Rollback::Heal),
            FaultKind::NodeLoss | FaultKind::RedisLoss | FaultKind::ShopInstanceLoss => Some(Rollback::Restart),
            FaultKind::Restart | FaultKind::Switchover => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rollback::Resume => "resume",
            Rollback::Heal => "heal",
            Rollback::Restart => "restart",
        }
    }
}

/// The checks applied to the recorded history and the database afterwards; an absent
/// check is not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<OrdersCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_sale: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<AvailabilityCheck>,
}

/// A check with nothing to configure (`stock: {}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Every acknowledged order exists exactly once with its items and payment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrdersCheck {
    /// Acknowledged orders that may be lost (the RPO the level promises; 0 with
    /// synchronous replication).
    #[serde(default)]
    pub max_lost: u64,
}

/// Every committed order's event is delivered at least once and processed once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboxCheck {
    /// How long the workers get to drain the outbox before the snapshot is taken.
    #[serde(default = "outbox_settle")]
    pub settle: Span,
}

impl Default for OutboxCheck {
    fn default() -> Self {
        OutboxCheck { settle: outbox_settle() }
    }
}

/// Recovery time and the service seen during each fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvailabilityCheck {
    /// Longest allowed time from a fault's injection to the first acknowledged write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rto: Option<Span>,
    /// Longest allowed time from a fault's end (its undo) to the first acknowledged
    /// write: the measure for faults that stop every write while they last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resume: Option<Span>,
    /// Longest allowed pause in acknowledged writes around a fault: from the last write
    /// acknowledged before it stopped them to the first one after. Unlike `maxRto`, it
    /// sees the pause of a switchover, whose old leader keeps acknowledging writes for a
    /// moment after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_write_gap: Option<Span>,
    /// Longest allowed time from a fault's injection to steady state again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery: Option<Span>,
    /// The sliding window over which the error ratio is measured.
    #[serde(default = "window")]
    pub window: Span,
    /// Steady state: the error ratio in every window from then on stays below this.
    #[serde(default = "max_error_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_ratio: f64,
}

impl Default for AvailabilityCheck {
    fn default() -> Self {
        AvailabilityCheck {
            max_rto: None,
            max_resume: None,
            max_write_gap: None,
            max_recovery: None,
            window: window(),
            max_error_ratio: max_error_ratio(),
        }
    }
}

fn probe_interval() -> Span {
    Span::secs(2)
}
fn recovery_timeout() -> Span {
    Span::secs(60)
}
fn outbox_settle() -> Span {
    Span::secs(30)
}
fn window() -> Span {
    Span::secs(5)
}
fn max_error_ratio() -> f64 {
    0.01
}
fn ok_status() -> u16 {
    200
}
fn one() -> u32 {
    1
}

/// The JSON Schema of an experiment file, for editors and for validation.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Experiment).to_value()
}
