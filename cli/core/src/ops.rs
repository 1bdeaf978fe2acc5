//! Operations beyond up and down, as capabilities a provider may have: `DatabaseOps`
//! (SQL, insights, slow queries, switchover) and `ChaosOps` (faults and their undoing),
//! each answering with types rather than JSON read back by key. A command asks the
//! provider for the capability (`Provider::database`, `Provider::chaos`) and says
//! plainly when the target has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fault::{FaultKind, Selector};
use crate::provider::ProviderError;

/// What `status` shows beyond up or down. Best effort: what cannot be read is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Insights {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseInsight>,
    /// Pool use per pooler resource id, one row per logical database.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, Vec<PoolUse>>,
    /// Cache hits per cache resource id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caches: BTreeMap<String, CacheUse>,
}

/// The leader (none while a failover runs) and every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInsight {
    pub leader: Option<String>,
    pub members: Vec<MemberInsight>,
    /// The members the HA manager would promote if the leader were lost now (resource ids).
    #[serde(default)]
    pub failover_candidates: Vec<String>,
    /// Why an HA cluster has no failover candidate, and what to do; none when it has one
    /// or is a single server (which has nothing to fail over to by design).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_failover_candidate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInsight {
    /// Resource id.
    pub id: String,
    /// As the HA manager says it: `leader`, `sync_standby`, `replica`, or `primary` for a
    /// single server.
    pub role: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    #[serde(default)]
    pub lag_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUse {
    pub database: String,
    pub clients_active: u64,
    pub clients_waiting: u64,
    pub servers_active: u64,
    pub servers_idle: u64,
    pub pool_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheUse {
    pub hits: u64,
    pub misses: u64,
    /// None before the first read.
    pub hit_ratio: Option<f64>,
}

/// The statements that cost the most, from pg_stat_statements on the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowQueries {
    /// Resource id of the server asked.
    pub server: String,
    pub by_total: Vec<Statement>,
    pub by_mean: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub calls: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub rows: u64,
    /// Share of all the shop's statement time, in percent.
    pub percent: Option<f64>,
    pub query: String,
}

/// A planned switchover, timed from the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverReport {
    pub from: String,
    pub to: String,
    pub promoted_after_seconds: f64,
    pub writes_resumed_after_seconds: f64,
    /// The longest time a client writing all along saw no write go through.
    pub writes_paused_seconds: f64,
    /// When a synchronous standby was listed again (the cluster could fail over once more).
    #[serde(default)]
    pub synchronous_standby_after_seconds: f64,
    /// The synchronous standby then listed.
    #[serde(default)]
    pub synchronous_standby: String,
}

/// What a target can do with an environment's database tier.
pub trait DatabaseOps {
    /// Runs SQL on the primary's shop database as the superuser; psql's unaligned output.
    fn query(&self, sql: &str) -> Result<String, ProviderError>;

    fn insights(&self) -> Insights;

    /// At most `limit` statements each by total and by mean time.
    fn slow_queries(&self, limit: usize) -> Result<SlowQueries, ProviderError>;

    /// A planned switchover of the leader (to `to`, or to the synchronous standby),
    /// waiting until writes through the shop's path succeed again.
    fn switchover(&self, to: Option<&str>) -> Result<SwitchoverReport, ProviderError>;
}

/// What a target can break on purpose, and undo.
pub trait ChaosOps {
    /// Injects one fault of `kind` on `targets` (one selector, or two sides for a
    /// partition), resolved now (the leader is whoever leads); returns what it did.
    fn inject(&self, kind: FaultKind, targets: &[Selector]) -> Result<String, ProviderError>;

    /// Undoes what a fault may have left behind (network rules, stopped processes);
    /// returns a note when it undid something.
    fn heal(&self) -> Result<Option<String>, ProviderError>;
}
