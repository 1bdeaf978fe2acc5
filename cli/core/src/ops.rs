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
    /// Each cache replica's link to its primary, per replica resource id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache_replicas: BTreeMap<String, CacheReplica>,
    /// The CPU weight and memory limit the kernel holds for each process that has them
    /// (the manifest's role `cpu` and `memory`), per resource id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, ProcessLimits>,
}

/// What the kernel enforces for one process: its cgroup's CPU weight (1024 per core it is
/// entitled to), CPU quota and memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// The CPU quota, in millicores of one core: what it may use even on idle cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

/// A cache replica as its primary and itself report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReplica {
    /// Resource id of the primary it copies.
    pub of: String,
    /// Its link is up and no full copy is under way.
    pub in_sync: bool,
    /// What it waits for when not in sync ("link to the primary is down").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Replication stream bytes the primary has sent beyond what it applied; unknown when
    /// either side cannot be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
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

/// Where `db explain` runs a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainOn {
    /// A streaming standby, so the statement takes nothing from the primary; the
    /// primary when the environment has none.
    Replica,
    Primary,
}

/// What to ask for beyond the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainRequest {
    pub on: ExplainOn,
    /// Run the statement (in a read-only transaction, rolled back) for real times and
    /// buffers, rather than only plan it.
    pub analyze: bool,
    /// PostgreSQL's JSON plan rather than its text.
    pub json: bool,
    /// Cancel the statement after this many seconds.
    pub timeout_secs: u32,
}

/// `sql` as one statement, without a trailing `;`, or why not. `db explain` sends the
/// statement to the server as text in a read-only transaction; a second statement
/// (`…; COMMIT; DELETE …`) could end that transaction, so it is refused here. Quotes,
/// quoted identifiers, dollar quotes and comments are skipped, so a `;` inside them is
/// no separator.
pub fn one_statement(sql: &str) -> Result<&str, String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut end = None;
    while i < b.len() {
        let rest = &sql[i..];
        let skip = if rest.starts_with("--") {
            rest.find('\n').map_or(rest.len(), |n| n + 1)
        } else if rest.starts_with("/*") {
            let mut depth = 0usize;
            let mut j = 0;
            loop {
                if j >= rest.len() {
                    return Err("a /* comment is not closed".into());
                }
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if b[i] == b'\'' {
            // E'…' strings escape with a backslash; others only by doubling the quote.
            let escapes = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e');
            let mut j = 1;
            loop {
                match rest.as_bytes().get(j) {
                    None => return Err("a quoted string is not closed".into()),
                    Some(b'\\') if escapes => j += 2,
                    Some(b'\'') if rest.as_bytes().get(j + 1) == Some(&b'\'') => j += 2,
                    Some(b'\'') => break j + 1,
                    Some(_) => j += 1,
                }
            }
        } else if b[i] == b'"' {
            rest[1..].find('"').map(|n| n + 2).ok_or("a quoted identifier is not closed")?
        } else if b[i] == b'$' {
            // $tag$ … $tag$, where the tag is empty or an identifier; `$1` is a parameter.
            let tag_len = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(rest.len(), |n| n + 1);
            if rest[1..].starts_with(|c: char| c.is_ascii_digit()) || rest.as_bytes().get(tag_len) != Some(&b'$') {
                1
            } else {
                let tag = &rest[..=tag_len];
                rest[tag.len()..].find(tag).map(|n| n + 2 * tag.len()).ok_or("a dollar-quoted string is not closed")?
            }
        } else if b[i] == b';' {
            end.get_or_insert(i);
            1
        } else {
            if end.is_some() && !b[i].is_ascii_whitespace() {
                return Err("give one statement: a `;` ends it, and another follows".into());
            }
            1
        };
        if end.is_some() && skip > 1 && !rest.starts_with("--") && !rest.starts_with("/*") {
            return Err("give one statement: a `;` ends it, and another follows".into());
        }
        i += skip;
    }
    let statement = sql[..end.unwrap_or(sql.len())].trim();
    if statement.is_empty() {
        return Err("no statement; give one, such as \"SELECT * FROM orders WHERE user_id = 1\"".into());
    }
    Ok(statement)
}

/// A statement's plan from one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    /// Resource id of the server asked.
    pub server: String,
    /// `primary` or `replica`, what the server was when asked.
    pub role: String,
    /// Why the server is not the one asked for (a replica, when there is none), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub analyzed: bool,
    /// PostgreSQL's plan: its JSON document, or its text lines as one string.
    pub plan: serde_json::Value,
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

    /// The plan of one statement (`EXPLAIN`, with `BUFFERS` when analyzed; see
    /// [`one_statement`]), as the shop's role in a read-only transaction that is rolled
    /// back, so a statement that writes is refused.
    fn explain(&self, sql: &str, request: ExplainRequest) -> Result<Explained, ProviderError>;

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

#[cfg(test)]
mod tests {
    use super::one_statement;

    #[test]
    fn one_statement_is_taken_and_a_second_is_refused() {
        assert_eq!(one_statement(" SELECT 1 ; ").unwrap(), "SELECT 1");
        assert_eq!(one_statement("SELECT ';' AS a, \"x;y\" -- ; not a separator\n FROM t /* ; */").unwrap().lines().count(), 2);
        assert_eq!(one_statement("SELECT $$a;b$$, $q$ ; $q$, $1").unwrap(), "SELECT $$a;b$$, $q$ ; $q$, $1");
        assert_eq!(one_statement("SELECT E'it\\'s;' ; -- done").unwrap(), "SELECT E'it\\'s;'");
        assert_eq!(one_statement("SELECT 'it''s;'").unwrap(), "SELECT 'it''s;'");
        for bad in ["SELECT 1; COMMIT; DELETE FROM orders", "SELECT 1;DELETE FROM t", "SELECT 1; 'x'", "SELECT 1; $$x$$"] {
            assert!(one_statement(bad).unwrap_err().contains("one statement"), "{bad}");
        }
        for unclosed in ["SELECT 'a", "SELECT \"a", "SELECT $$a", "SELECT /* a"] {
            assert!(one_statement(unclosed).unwrap_err().contains("not closed"), "{unclosed}");
        }
        assert!(one_statement("  ; ").unwrap_err().contains("no statement"));
    }
}
