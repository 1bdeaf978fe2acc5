//! The local target's typed specs: one serde-tagged variant per kind of resource.
//! `expand` builds them, the components read them (`LocalSpec::of`), and templates get
//! them serialized as `p`.
//!
//! Every value serializes as the text that state formats 1 and 2 recorded for it
//! (`"100"`, `"on"`, `"a,b"`, `"none"`), so an environment brought up by an older
//! scalectl reads back without conversion and plans as a no-op, and the golden files
//! of expansion did not change when the specs became typed.

use std::collections::BTreeMap;

use scalectl_core::manifest::{Balance, PartitionScheme, PoolMode, SynchronousCommit};
use scalectl_core::spec::SpecError;
use scalectl_core::{ByteSize, Duration, Resource, ResourceKind, Spec};
use serde::{Deserialize, Serialize};

/// What the local target runs for one resource; the variant is the resource's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LocalSpec {
    Postgres(PostgresSpec),
    PatroniNode(PatroniNodeSpec),
    Etcd(EtcdSpec),
    Database(DatabaseSpec),
    Migration(MigrationSpec),
    Pgbouncer(PgbouncerSpec),
    Redis(RedisSpec),
    RedisSentinel(SentinelSpec),
    Broker(BrokerSpec),
    Shop(ShopSpec),
    Worker(WorkerSpec),
    Haproxy(HaproxySpec),
    Prometheus(PrometheusSpec),
    Exporter(ExporterSpec),
    CitusWorker(CitusWorkerSpec),
    LeaderWatch(LeaderWatchSpec),
    Alertmanager(AlertmanagerSpec),
    AlertReceiver(AlertReceiverSpec),
}

impl LocalSpec {
    pub fn kind(&self) -> ResourceKind {
        match self {
            LocalSpec::Postgres(_) => ResourceKind::Postgres,
            LocalSpec::PatroniNode(_) => ResourceKind::PatroniNode,
            LocalSpec::Etcd(_) => ResourceKind::Etcd,
            LocalSpec::Database(_) => ResourceKind::Database,
            LocalSpec::Migration(_) => ResourceKind::Migration,
            LocalSpec::Pgbouncer(_) => ResourceKind::Pgbouncer,
            LocalSpec::Redis(_) => ResourceKind::Redis,
            LocalSpec::RedisSentinel(_) => ResourceKind::RedisSentinel,
            LocalSpec::Broker(_) => ResourceKind::Broker,
            LocalSpec::Shop(_) => ResourceKind::Shop,
            LocalSpec::Worker(_) => ResourceKind::Worker,
            LocalSpec::Haproxy(_) => ResourceKind::Haproxy,
            LocalSpec::Prometheus(_) => ResourceKind::Prometheus,
            LocalSpec::Exporter(_) => ResourceKind::Exporter,
            LocalSpec::CitusWorker(_) => ResourceKind::CitusWorker,
            LocalSpec::LeaderWatch(_) => ResourceKind::LeaderWatch,
            LocalSpec::Alertmanager(_) => ResourceKind::Alertmanager,
            LocalSpec::AlertReceiver(_) => ResourceKind::AlertReceiver,
        }
    }

    /// The typed spec of `r`, read from its serialized form (the kind is its tag).
    pub fn of(r: &Resource) -> Result<LocalSpec, SpecError> {
        r.spec.read(&r.id, &[("kind", r.kind.as_str())])
    }

    /// The serialized form a [`Resource`] carries; the tag lives in `Resource::kind`.
    pub fn to_spec(&self) -> Spec {
        Spec::of(self).expect("a local spec is a map of text").without("kind")
    }

    /// The PostgreSQL settings of a database server, of whichever kind.
    pub fn server(&self) -> Option<&PgServerSpec> {
        match self {
            LocalSpec::Postgres(s) => Some(&s.server),
            LocalSpec::PatroniNode(s) => Some(&s.server),
            LocalSpec::CitusWorker(s) => Some(&s.server),
            _ => None,
        }
    }
}

/// Each kind's spec, from a resource whose kind is already known. `Err` names the
/// resource: its definition does not match its kind (a state file edited by hand).
macro_rules! spec_of {
    ($($fn:ident => $variant:ident($ty:ty)),* $(,)?) => {
        $(
            pub fn $fn(r: &Resource) -> Result<$ty, SpecError> {
                match LocalSpec::of(r)? {
                    LocalSpec::$variant(s) => Ok(s),
                    other => Err(SpecError { id: r.id.clone(), problem: format!("is of kind {}, not {}", other.kind(), ResourceKind::$variant) }),
                }
            }
        )*
    };
}

spec_of! {
    postgres => Postgres(PostgresSpec),
    patroni_node => PatroniNode(PatroniNodeSpec),
    etcd => Etcd(EtcdSpec),
    database => Database(DatabaseSpec),
    migration => Migration(MigrationSpec),
    pgbouncer => Pgbouncer(PgbouncerSpec),
    redis => Redis(RedisSpec),
    sentinel => RedisSentinel(SentinelSpec),
    broker => Broker(BrokerSpec),
    shop => Shop(ShopSpec),
    worker => Worker(WorkerSpec),
    haproxy => Haproxy(HaproxySpec),
    prometheus => Prometheus(PrometheusSpec),
    exporter => Exporter(ExporterSpec),
    leader_watch => LeaderWatch(LeaderWatchSpec),
    alertmanager => Alertmanager(AlertmanagerSpec),
    alert_receiver => AlertReceiver(AlertReceiverSpec),
}

/// The PostgreSQL settings of `r`, a database server of any kind.
pub fn server(r: &Resource) -> Result<PgServerSpec, SpecError> {
    let spec = LocalSpec::of(r)?;
    spec.server().cloned().ok_or_else(|| SpecError { id: r.id.clone(), problem: format!("is of kind {}, not a database server", r.kind) })
}

/// A member's place in its cluster, as `expand` decided it; roles move with failovers,
/// so this is where a node started, not what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Primary,
    SyncStandby,
    AsyncReplica,
    CitusWorker,
}

/// What every PostgreSQL server of a cluster is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgServerSpec {
    /// The PostgreSQL major version whose programs run the server.
    pub version: String,
    pub role: NodeRole,
    #[serde(with = "text")]
    pub max_connections: u32,
    pub shared_buffers: ByteSize,
    pub work_mem: ByteSize,
    pub effective_cache_size: ByteSize,
    #[serde(with = "on_off")]
    pub wal_compression: bool,
    pub max_wal_size: ByteSize,
    pub checkpoint_timeout: Duration,
    pub synchronous_commit: SynchronousCommit,
    /// In load order.
    #[serde(with = "comma")]
    pub shared_preload_libraries: Vec<String>,
}

/// A standalone server (levels 1 and 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresSpec {
    #[serde(flatten)]
    pub server: PgServerSpec,
    /// The server it replicates from, when it is a replica in another region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

/// A node of a Patroni cluster (level 3 and up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatroniNodeSpec {
    #[serde(flatten)]
    pub server: PgServerSpec,
    #[serde(flatten)]
    pub patroni: PatroniSpec,
    /// The home region's first node, when this one is a replica in another region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

/// Patroni's settings, the same on every member of a cluster except `nosync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatroniSpec {
    /// The cluster's name in its scope (`r1`, `r1-shard-2`); Patroni's scope is
    /// `ENV-<cluster>`.
    pub cluster: String,
    /// The etcd resource holding the cluster's leader lock.
    pub etcd: String,
    #[serde(with = "text")]
    pub synchronous_mode: bool,
    #[serde(with = "text")]
    pub synchronous_node_count: u32,
    /// Never picked as the synchronous standby (asynchronous and remote replicas).
    #[serde(with = "text")]
    pub nosync: bool,
    #[serde(with = "text")]
    pub patroni_port: u16,
    #[serde(with = "text")]
    pub ttl: u32,
    #[serde(with = "text")]
    pub loop_wait: u32,
    #[serde(with = "text")]
    pub retry_timeout: u32,
}

impl PatroniNodeSpec {
    /// Whether Patroni may pick this node as the synchronous standby.
    pub fn may_be_sync(&self) -> bool {
        self.patroni.synchronous_mode && !self.patroni.nosync
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdSpec {
    /// Members of the cluster's etcd: one per region it spans (see `expand`).
    #[serde(with = "text")]
    pub members: u32,
    /// Every member's resource id, this one's included, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "comma")]
    pub peers: Vec<String>,
}

/// The leader watch of one Patroni cluster (`leader_watch.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderWatchSpec {
    /// The cluster's Patroni scope, without the environment's name.
    pub cluster: String,
    /// The cluster's etcd members.
    #[serde(with = "comma")]
    pub etcd: Vec<String>,
    /// The Patroni nodes whose death releases their lock.
    #[serde(with = "comma")]
    pub nodes: Vec<String>,
}

/// The shop's role and database, and their extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    pub name: String,
    pub owner: String,
    #[serde(with = "comma")]
    pub extensions: Vec<String>,
    pub partition_orders: PartitionScheme,
    #[serde(with = "text")]
    pub premake: u8,
}

/// `shop migrate` against `database`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// The database resource it shapes.
    pub database: String,
    /// Monthly order partitions created ahead (0 when orders are not partitioned).
    #[serde(with = "text")]
    pub order_partitions_premake: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgbouncerSpec {
    pub pool_mode: PoolMode,
    #[serde(with = "text")]
    pub default_pool_size: u32,
    #[serde(with = "text")]
    pub max_client_conn: u32,
    /// The resource writes go to (a server or the database router).
    pub upstream: String,
    /// The router replica reads go to, served as a second logical database `<db>_ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSpec {
    #[serde(with = "redis_size")]
    pub maxmemory: ByteSize,
    /// Replicas the manifest asks for on a primary, each its own resource
    /// (`redis/<region>-replica-N`); 0 on a replica.
    #[serde(with = "text")]
    pub replicas: u8,
    /// On a replica, the primary it starts following (`replicaof`, with the same
    /// password as `masterauth`). Where Sentinels watch the group, this is only where
    /// it starts: after a failover the Sentinels say which node is the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// The Sentinels watching this node's group, asked at start which node is the
    /// primary now; none recorded (as before they existed) when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "comma")]
    pub sentinels: Vec<String>,
    /// Clients must give the generated password (`requirepass`). Recorded only when on,
    /// as for the shop's processes and the exporter, so that an environment from before
    /// shows the change in `plan` and `up` restarts every client with the password.
    #[serde(default, skip_serializing_if = "is_false", with = "text")]
    pub auth: bool,
}

/// One Redis Sentinel of a group of them watching one Redis primary and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelSpec {
    /// The Redis the group starts with as its primary.
    pub monitors: String,
    /// How many Sentinels must agree that the primary is down before one of them
    /// promotes a replica.
    #[serde(with = "text")]
    pub quorum: u8,
    /// How long the primary must fail to answer before a Sentinel counts it down.
    #[serde(with = "text")]
    pub down_after_ms: u32,
}

/// The message broker: Redis Streams on a Redis server of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSpec {
    /// What carries the events (`redisStreams`), as the manifest names it (`kind`
    /// there; the name is the resource's kind here).
    pub engine: String,
    /// When its append-only file is synced (`always`: before every reply, so an
    /// acknowledged event survives a crash of the broker or the machine).
    pub appendfsync: String,
    /// Memory it may use before it refuses new entries (it never evicts).
    #[serde(with = "redis_size")]
    pub maxmemory: ByteSize,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One `shop serve` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopSpec {
    /// The roles it serves (`all`, `api`, `checkout`, ...).
    pub roles: String,
    #[serde(with = "text")]
    pub db_pool_size: u32,
    /// The resources writes and reads go through, and the database name for reads.
    pub writes_via: String,
    pub reads_via: String,
    pub read_database: String,
    #[serde(with = "or_none")]
    pub redis: Option<String>,
    /// Redis wants the generated password (see `RedisSpec::auth`).
    #[serde(default, skip_serializing_if = "is_false", with = "text")]
    pub redis_auth: bool,
    /// The Sentinels that say where the Redis primary is after a failover; none
    /// recorded when there are none, as before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "comma")]
    pub redis_sentinels: Vec<String>,
    /// Token buckets as `per_second:burst`, or `off`.
    pub rate_login: String,
    pub rate_register: String,
    pub rate_search: String,
    /// How many replicas its pool runs on this machine, this one included: they share
    /// its cores (see `shop::threads`). 1 is not recorded, as before it existed.
    #[serde(default = "one", skip_serializing_if = "is_one", with = "text")]
    pub pool_replicas: u32,
    /// Its role's CPU weight and memory limit (`limits.rs`); not recorded when unset, as
    /// before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<scalectl_core::Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<scalectl_core::Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

/// One `shop worker` process draining the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub writes_via: String,
    #[serde(with = "or_none")]
    pub redis: Option<String>,
    #[serde(default, skip_serializing_if = "is_false", with = "text")]
    pub redis_auth: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "comma")]
    pub redis_sentinels: Vec<String>,
    #[serde(with = "text")]
    pub order_partitions_premake: u8,
    /// The broker the worker relays the outbox to and consumes; none (not recorded):
    /// it drains the outbox directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Consumers per priority in this process, `high=4,normal=8,low=1`, with a broker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub broker_pools: String,
    /// Deliveries of an event before it is dead-lettered; 0 (not recorded): the
    /// worker's default.
    #[serde(default, skip_serializing_if = "is_zero", with = "text")]
    pub max_attempts: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaproxyRole {
    /// Balances the shop's instances.
    Edge,
    /// Routes database connections to the leader (writes) and replicas (reads).
    Db,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaproxySpec {
    pub role: HaproxyRole,
    /// The resources traffic goes to.
    #[serde(with = "comma")]
    pub backends: Vec<String>,
    /// What decides a backend is up: an HTTP path on the shop, or `patroni` (its REST
    /// API's role checks).
    pub health_check: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// The router's port for reads.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "text_opt")]
    pub read_port: Option<u16>,
    /// The edge's rate limits by route group (`login`, `register`, `search`), as the
    /// shop's own are written (`20:40`: per second, burst).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusSpec {
    #[serde(with = "prometheus_duration")]
    pub scrape_interval: Duration,
    #[serde(with = "prometheus_duration")]
    pub retention: Duration,
    /// Scrape targets as `job=address:port`.
    #[serde(with = "comma")]
    pub targets: Vec<String>,
    #[serde(with = "text")]
    pub burn_rate_alerts: bool,
    #[serde(with = "text")]
    pub slo_availability: f64,
    #[serde(with = "text")]
    pub slo_error_ratio: f64,
    #[serde(with = "text")]
    pub slo_latency_p95_ms: u32,
    #[serde(with = "text")]
    pub slo_latency_p99_ms: u32,
    /// The Alertmanager Prometheus sends its alerts to (`address:port`), when the
    /// manifest asks for burn-rate alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
}

/// Alertmanager, delivering every alert to the environment's receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertmanagerSpec {
    /// The receiver's resource.
    pub receiver: String,
}

/// Keeps what Alertmanager's webhook delivers (`scalectl __alert-receiver`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AlertReceiverSpec {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exports {
    Node,
    Postgres,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExporterSpec {
    pub exports: Exports,
    /// The resource it reads metrics from (none for the node exporter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// What it reads wants the generated password (a Redis, see `RedisSpec::auth`).
    #[serde(default, skip_serializing_if = "is_false", with = "text")]
    pub auth: bool,
}

/// A Citus worker node (level 6); the local target cannot run these yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitusWorkerSpec {
    #[serde(flatten)]
    pub server: PgServerSpec,
    #[serde(with = "text")]
    pub shard_count: u32,
    pub distribution_column: String,
}

/// A value as its `Display` text, read back with `FromStr`.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>
    where
        T::Err: Display,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
    }
}

/// An optional value as its text; absent when `None`.
mod text_opt {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error>
    where
        T::Err: Display,
    {
        super::text::deserialize(d).map(Some)
    }
}

/// A list as one comma-separated text (`""` is the empty list).
mod comma {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(String::deserialize(d)?.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
    }
}

/// A switch as PostgreSQL writes it.
mod on_off {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "on" } else { "off" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match String::deserialize(d)?.as_str() {
            "on" => Ok(true),
            "off" => Ok(false),
            other => Err(D::Error::custom(format!("`{other}` is neither on nor off"))),
        }
    }
}

/// An optional resource id, written `none` when absent.
mod or_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or("none"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((text != "none").then_some(text))
    }
}

/// A size as redis.conf reads it (`256mb`).
mod redis_size {
    use scalectl_core::ByteSize;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.redis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        super::text::deserialize(d)
    }
}

/// A duration as Prometheus reads it (`1m`, not `1min`).
mod prometheus_duration {
    use scalectl_core::Duration;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.prometheus())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::text::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> PgServerSpec {
        PgServerSpec {
            version: "15".into(),
            role: NodeRole::SyncStandby,
            max_connections: 200,
            shared_buffers: ByteSize::mib(512),
            work_mem: ByteSize::mib(8),
            effective_cache_size: ByteSize::mib(2048),
            wal_compression: true,
            max_wal_size: ByteSize::mib(4096),
            checkpoint_timeout: Duration::parse("15min").unwrap(),
            synchronous_commit: SynchronousCommit::RemoteApply,
            shared_preload_libraries: vec!["pg_stat_statements".into()],
        }
    }

    fn resource(spec: &LocalSpec) -> Resource {
        Resource {
            id: "postgres/r1-pg-2".into(),
            kind: spec.kind(),
            region: "r1".into(),
            address: None,
            port: None,
            depends_on: vec![],
            spec: spec.to_spec(),
            digests: Default::default(),
        }
    }

    #[test]
    fn a_spec_is_the_text_older_state_recorded_and_reads_back_typed() {
        let spec = LocalSpec::Postgres(PostgresSpec { server: server(), follows: None });
        let r = resource(&spec);
        let leaves = r.spec.leaves();
        for (k, v) in [
            ("max_connections", "200"),
            ("shared_buffers", "512MB"),
            ("effective_cache_size", "2GB"),
            ("checkpoint_timeout", "15min"),
            ("wal_compression", "on"),
            ("synchronous_commit", "remote_apply"),
            ("role", "sync-standby"),
            ("shared_preload_libraries", "pg_stat_statements"),
        ] {
            assert_eq!(leaves.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!leaves.contains_key("kind") && !leaves.contains_key("follows"), "{leaves:?}");
        assert_eq!(LocalSpec::of(&r).unwrap(), spec);
    }

    #[test]
    fn text_sentinels_read_back_as_absent_values() {
        let shop = LocalSpec::Shop(ShopSpec {
            roles: "all".into(),
            db_pool_size: 10,
            writes_via: "pgbouncer/r1".into(),
            reads_via: "pgbouncer/r1".into(),
            read_database: "shop".into(),
            redis: None,
            redis_auth: false,
            redis_sentinels: Vec::new(),
            rate_login: "off".into(),
            rate_register: "off".into(),
            rate_search: "off".into(),
            pool_replicas: 1,
            cpu: None,
            cpu_limit: None,
            memory: None,
        });
        let r = resource(&shop);
        assert_eq!(r.spec.leaves().get("redis").map(String::as_str), Some("none"));
        assert!(!r.spec.leaves().contains_key("redis_auth"), "a switch that is off is not recorded, as before it existed");
        assert!(!r.spec.leaves().contains_key("pool_replicas"), "a pool of one is not recorded, as before it existed");
        assert!(!r.spec.leaves().contains_key("cpu") && !r.spec.leaves().contains_key("memory"), "no limits, nothing recorded");
        assert_eq!(LocalSpec::of(&r).unwrap(), shop);
        let prom = PrometheusSpec {
            scrape_interval: Duration::parse("1min").unwrap(),
            retention: Duration::parse("36h").unwrap(),
            targets: vec![],
            burn_rate_alerts: false,
            slo_availability: 99.9,
            slo_error_ratio: 0.001,
            slo_latency_p95_ms: 300,
            slo_latency_p99_ms: 800,
            alertmanager: None,
        };
        let r = resource(&LocalSpec::Prometheus(prom.clone()));
        assert_eq!(r.spec.leaves().get("scrape_interval").map(String::as_str), Some("1m"), "Prometheus' spelling");
        assert!(!r.spec.leaves().contains_key("alertmanager"), "no Alertmanager, nothing recorded, as before it existed");
        assert_eq!(prometheus(&r).unwrap(), prom);
        let receiver = resource(&LocalSpec::AlertReceiver(AlertReceiverSpec::default()));
        assert_eq!(alert_receiver(&receiver).unwrap(), AlertReceiverSpec::default(), "a spec without fields reads back");
    }

    #[test]
    fn a_definition_that_does_not_fit_its_kind_names_the_resource_and_field() {
        let mut r = resource(&LocalSpec::Postgres(PostgresSpec { server: server(), follows: None }));
        r.spec = r.spec.leaves().into_iter().map(|(k, v)| if k == "max_connections" { (k, "many".to_string()) } else { (k, v) }).collect();
        let e = LocalSpec::of(&r).unwrap_err().to_string();
        assert!(e.contains("postgres/r1-pg-2") && e.contains("many"), "{e}");
        r.kind = ResourceKind::Redis;
        assert!(LocalSpec::of(&r).is_err());
        let e = shop(&resource(&LocalSpec::Etcd(EtcdSpec { members: 1, peers: Vec::new() }))).unwrap_err().to_string();
        assert!(e.contains("is of kind etcd, not shop"), "{e}");
    }
}
