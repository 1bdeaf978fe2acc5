//! The environment manifest: typed with serde, described for editors with schemars, and
//! loaded through [`Sources`] so that every problem is reported at once with its location.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::schema_check;
use crate::tree::Node;
use crate::units::{ByteSize, Cpu, Duration};

pub const API_VERSION: &str = "scalectl.dev/v1";

/// A whole environment: what `environments/level-N.yaml` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Always `scalectl.dev/v1`.
    #[schemars(extend("const" = "scalectl.dev/v1"))]
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    Environment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Name of the level's topology (`level-3`); the environment name is chosen by `--env`.
    pub name: String,
    /// The level, 1 (one machine, 10 RPS) to 6 (sharded, multi-region, 1M RPS).
    #[schemars(range(min = 1, max = 6))]
    pub level: u8,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub target_load: TargetLoad,
    pub regions: Vec<Region>,
    #[serde(default)]
    pub network: Network,
    pub postgres: Postgres,
    #[serde(default)]
    pub redis: Redis,
    /// The message broker the outbox relays order events to, consumed by worker pools
    /// by priority (level 5 and up). Absent: the workers drain the outbox directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<Broker>,
    pub shop: Shop,
    #[serde(default)]
    pub edge: Edge,
    #[serde(default)]
    pub observability: Observability,
    pub slos: Slos,
    pub workload: Workload,
    #[serde(default)]
    pub chaos: Chaos,
    #[serde(default)]
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetLoad {
    /// Requests per second the level is built to serve.
    #[schemars(range(min = 1))]
    pub rps: u32,
    /// Daily active users this corresponds to, for explanation only.
    #[serde(default)]
    pub daily_active_users: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Region {
    pub name: String,
    /// The region that holds the writable primary; exactly one region has it.
    #[serde(default)]
    pub primary: bool,
    /// Availability zones used in this region.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 6))]
    pub zones: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Address block of the (cloud) network; on `local` each environment gets a loopback block.
    pub cidr: String,
    /// Databases and caches only reachable from inside the network.
    #[serde(default)]
    pub private_data_tier: bool,
}

impl Default for Network {
    fn default() -> Self {
        Network { cidr: "10.0.0.0/16".into(), private_data_tier: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Postgres {
    /// PostgreSQL major version.
    #[serde(default = "pg_version")]
    pub version: String,
    /// How the primary is kept available: `none` (one node) or `patroni` (HA with etcd).
    #[serde(default)]
    pub ha: HaMode,
    #[serde(default)]
    pub replicas: Replicas,
    #[serde(default)]
    pub pooler: Pooler,
    #[serde(default)]
    pub partitioning: Partitioning,
    #[serde(default)]
    pub wal: Wal,
    #[serde(default)]
    pub settings: PgSettings,
    /// Extensions created in the shop's database.
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub citus: Citus,
    /// Patroni's timing, when `ha: patroni`.
    #[serde(default)]
    pub failover: Failover,
}

/// How fast Patroni replaces a lost leader. The leader lock lives `ttl` seconds; each
/// node's loop runs every `loopWait`; calls to etcd and PostgreSQL are retried for
/// `retryTimeout`. Patroni needs `loopWait + 2 × retryTimeout ≤ ttl`, or a slow loop could
/// outlive the lock. A frozen or cut-off leader is replaced about `ttl` plus a second after
/// it stops answering; a dead one (no process left) sooner, on the local target, whose
/// leader watch releases its lock at once (about 3 s to the next order). Patroni's own defaults
/// are 30/10/10. `retryTimeout` is at least 2: Patroni 3's etcd client gives each call at
/// least a second, and with 1 a standby never wins the leader race (measured: no
/// promotion within 120 s of the leader's loss), so the fastest safe timing is 5/1/2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default = "failover_ttl")]
    #[schemars(range(min = 2, max = 300))]
    pub ttl: u32,
    #[serde(default = "failover_loop_wait")]
    #[schemars(range(min = 1, max = 60))]
    pub loop_wait: u32,
    #[serde(default = "failover_retry_timeout")]
    #[schemars(range(min = 2, max = 120))]
    pub retry_timeout: u32,
}

fn failover_ttl() -> u32 {
    8
}
fn failover_loop_wait() -> u32 {
    1
}
fn failover_retry_timeout() -> u32 {
    3
}

impl Default for Failover {
    fn default() -> Self {
        Failover { ttl: failover_ttl(), loop_wait: failover_loop_wait(), retry_timeout: failover_retry_timeout() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HaMode {
    #[default]
    None,
    Patroni,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replicas {
    /// Standbys that confirm each commit before it is acknowledged (RPO 0). Patroni
    /// promotes only a synchronous standby, so with one, losing it (or the moments after a
    /// switchover) leaves no node that may take over; with two, either may.
    #[serde(default)]
    #[schemars(range(max = 8))]
    pub synchronous: u8,
    /// Standbys that follow asynchronously and serve reads.
    #[serde(default)]
    #[schemars(range(max = 16))]
    pub asynchronous: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pooler {
    #[serde(default)]
    pub kind: PoolerKind,
    #[serde(default)]
    pub mode: PoolMode,
    /// Server connections per database/user pair.
    #[serde(default = "pool_size")]
    #[schemars(range(min = 1))]
    pub default_pool_size: u32,
    #[serde(default = "max_client_conn")]
    #[schemars(range(min = 1))]
    pub max_client_conn: u32,
}

impl Default for Pooler {
    fn default() -> Self {
        Pooler { kind: PoolerKind::None, mode: PoolMode::Transaction, default_pool_size: pool_size(), max_client_conn: max_client_conn() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PoolerKind {
    #[default]
    None,
    Pgbouncer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PoolMode {
    #[default]
    Transaction,
    Session,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Partitioning {
    /// How the orders table is partitioned.
    #[serde(default)]
    pub orders: PartitionScheme,
    /// Future partitions kept ahead of time.
    #[serde(default = "premake")]
    #[schemars(range(max = 24))]
    pub premake: u8,
}

impl Default for Partitioning {
    fn default() -> Self {
        Partitioning { orders: PartitionScheme::None, premake: premake() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PartitionScheme {
    #[default]
    None,
    Monthly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wal {
    #[serde(default)]
    pub wal_compression: bool,
    /// Such as `1GB`.
    #[serde(default = "max_wal_size")]
    pub max_wal_size: ByteSize,
    /// From 30s to 1d, such as `5min`.
    #[serde(default = "checkpoint_timeout")]
    pub checkpoint_timeout: Duration,
    #[serde(default)]
    pub synchronous_commit: SynchronousCommit,
}

impl Default for Wal {
    fn default() -> Self {
        Wal {
            wal_compression: false,
            max_wal_size: max_wal_size(),
            checkpoint_timeout: checkpoint_timeout(),
            synchronous_commit: SynchronousCommit::On,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    #[default]
    On,
    RemoteApply,
    RemoteWrite,
    Local,
    Off,
}

impl SynchronousCommit {
    pub fn as_pg(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteApply => "remote_apply",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::Local => "local",
            SynchronousCommit::Off => "off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgSettings {
    #[serde(default = "max_connections")]
    #[schemars(range(min = 10, max = 10000))]
    pub max_connections: u32,
    #[serde(default = "shared_buffers")]
    pub shared_buffers: ByteSize,
    #[serde(default = "work_mem")]
    pub work_mem: ByteSize,
    #[serde(default = "effective_cache_size")]
    pub effective_cache_size: ByteSize,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: max_connections(),
            shared_buffers: shared_buffers(),
            work_mem: work_mem(),
            effective_cache_size: effective_cache_size(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Citus {
    #[serde(default)]
    pub enabled: bool,
    /// Worker nodes holding shards.
    #[serde(default)]
    #[schemars(range(max = 64))]
    pub workers: u8,
    #[serde(default = "shard_count")]
    #[schemars(range(min = 1))]
    pub shard_count: u32,
    /// Column the sharded tables are distributed by.
    #[serde(default = "distribution_column")]
    pub distribution_column: String,
}

impl Default for Citus {
    fn default() -> Self {
        Citus { enabled: false, workers: 0, shard_count: shard_count(), distribution_column: distribution_column() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redis {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "redis_maxmemory")]
    pub maxmemory: ByteSize,
    /// What the shop uses Redis for.
    #[serde(default)]
    pub uses: Vec<RedisUse>,
    #[serde(default)]
    #[schemars(range(max = 8))]
    pub replicas: u8,
}

impl Default for Redis {
    fn default() -> Self {
        Redis { enabled: false, maxmemory: redis_maxmemory(), uses: Vec::new(), replicas: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Broker {
    #[serde(default)]
    pub kind: BrokerKind,
    /// Deliveries of an event before it moves to the dead-letter queue.
    #[serde(default = "broker_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u8,
    /// Consumers per priority in every worker process.
    #[serde(default)]
    pub concurrency: BrokerConcurrency,
    /// Memory the broker may use; when it is full it refuses new entries (events wait
    /// in the outbox) and never evicts queued ones.
    #[serde(default = "broker_maxmemory")]
    pub maxmemory: ByteSize,
}

fn broker_attempts() -> u8 {
    5
}

fn broker_maxmemory() -> ByteSize {
    "256mb".parse().expect("a valid size")
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BrokerKind {
    /// Redis Streams with consumer groups, on a Redis server of its own whose
    /// append-only file is synced on every write (a cache may evict; a broker must not).
    #[default]
    RedisStreams,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::RedisStreams => "redisStreams",
        }
    }
}

/// How many events of each priority one worker process handles at once; at least one
/// each, since an event whose priority has no consumer would wait for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerConcurrency {
    /// Payment and stock follow-ups.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 64))]
    pub high: u8,
    /// Email, SMS and push notifications.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 64))]
    pub normal: u8,
    /// Reports and bulk exports.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub low: u8,
}

impl Default for BrokerConcurrency {
    fn default() -> Self {
        BrokerConcurrency { high: two(), normal: two(), low: one() }
    }
}

fn two() -> u8 {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisUse {
    Cache,
    RateLimit,
    FlashSaleGate,
    Queue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shop {
    /// `monolith`: every process serves every route; `split`: one process group per role.
    #[serde(default)]
    pub topology: Topology,
    /// Process groups and how many of each; a monolith has one group, `all`.
    pub roles: Vec<ShopRole>,
    /// Outbox workers.
    #[serde(default = "one")]
    #[schemars(range(max = 64))]
    pub workers: u8,
    /// Database connections per shop process.
    #[serde(default = "shop_pool")]
    #[schemars(range(min = 1, max = 1000))]
    pub db_pool_size: u32,
    /// Send catalog and order-history reads to replicas.
    #[serde(default)]
    pub read_from_replicas: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Topology {
    #[default]
    Monolith,
    Split,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShopRole {
    pub name: RoleName,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub replicas: u8,
    /// CPU each process of the role is entitled to when cores are contended (`500m`,
    /// `1.5`), as a Kubernetes CPU request: its cgroup's CPU weight on the local target,
    /// `requests.cpu` on Kubernetes. Unset: no weight of its own locally, 250m on
    /// Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// CPU each process of the role may use at most, even on idle cores (`250m`), as a
    /// Kubernetes CPU limit: its cgroup's CPU quota on the local target, `limits.cpu` on
    /// Kubernetes. What keeps a storm of the role's work from crowding out other roles'
    /// requests (a weight alone shares only contended cores). Unset: no cap. At least
    /// `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Cpu>,
    /// Memory each process of the role may use before the kernel stops it (`512MB`), as
    /// a Kubernetes memory limit: its cgroup's limit on the local target. Unset: no limit
    /// locally, 512Mi on Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RoleName {
    All,
    Auth,
    Catalog,
    Cart,
    Orders,
    Flash,
}

impl RoleName {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::All => "all",
            RoleName::Auth => "auth",
            RoleName::Catalog => "catalog",
            RoleName::Cart => "cart",
            RoleName::Orders => "orders",
            RoleName::Flash => "flash",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Route each client to its nearest region and fail over between regions.
    #[serde(default)]
    pub geo_routing: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    #[default]
    None,
    Haproxy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Balance {
    #[default]
    Leastconn,
    Roundrobin,
}

/// Token buckets per client; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default)]
    pub login: Option<Rate>,
    #[serde(default)]
    pub register: Option<Rate>,
    #[serde(default)]
    pub search: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    #[schemars(range(min = 1))]
    pub per_second: u32,
    #[schemars(range(min = 1))]
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[derive(Default)]
pub struct Observability {
    #[serde(default)]
    pub prometheus: Prometheus,
    #[serde(default)]
    pub exporters: Vec<Exporter>,
    #[serde(default)]
    pub dashboards: bool,
    /// Multi-window burn-rate alerts on the SLOs.
    #[serde(default)]
    pub burn_rate_alerts: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prometheus {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Such as `15s`.
    #[serde(default = "scrape_interval")]
    pub scrape_interval: Duration,
    /// How long samples are kept, such as `1d`.
    #[serde(default = "retention")]
    pub retention: Duration,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus { enabled: true, scrape_interval: scrape_interval(), retention: retention() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Exporter {
    Node,
    Postgres,
    Redis,
    Haproxy,
    Pgbouncer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Slos {
    /// Percent of requests that succeed, such as 99.9.
    #[schemars(range(min = 0, max = 100))]
    pub availability: f64,
    #[schemars(range(min = 1))]
    pub latency_p95_ms: u32,
    #[schemars(range(min = 1))]
    pub latency_p99_ms: u32,
    /// Largest tolerated ratio of failed requests, such as 0.001.
    #[schemars(range(min = 0, max = 1))]
    pub error_ratio: f64,
    /// Recovery time objective after a fault, in seconds.
    #[serde(default)]
    pub rto_seconds: Option<u32>,
    /// Acknowledged writes that may be lost in a failover (0 with synchronous replication).
    #[serde(default)]
    pub rpo_writes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Requests per second `scalectl load` offers by default.
    #[schemars(range(min = 1))]
    pub rate: u32,
    /// Such as `60s` or `5m`.
    pub duration: Duration,
    #[schemars(range(min = 1))]
    pub users: u32,
    /// Share of each operation in `mixed`, in percent; sums to 100.
    pub mix: Mix,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub browse: u8,
    #[serde(default)]
    pub search: u8,
    #[serde(default)]
    pub cart: u8,
    #[serde(default)]
    pub checkout: u8,
    #[serde(default)]
    pub login: u8,
    #[serde(default)]
    pub order_history: u8,
}

impl Mix {
    pub fn total(&self) -> u32 {
        [self.browse, self.search, self.cart, self.checkout, self.login, self.order_history].iter().map(|v| u32::from(*v)).sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chaos {
    /// Experiments (files in `chaos/`) that must pass before this level counts as done.
    #[serde(default)]
    pub gates: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub local: LocalTarget,
    #[serde(default)]
    pub kubernetes: Option<KubernetesTarget>,
    #[serde(default)]
    pub aws: Option<AwsTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTarget {
    /// Seconds `up` waits for every component to become healthy.
    #[serde(default = "health_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub health_timeout_seconds: u32,
}

impl Default for LocalTarget {
    fn default() -> Self {
        LocalTarget { health_timeout_seconds: health_timeout() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesTarget {
    pub namespace: String,
    /// kubeconfig context per region name.
    #[serde(default)]
    pub contexts: BTreeMap<String, String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Each PostgreSQL instance's volume.
    #[serde(default = "pg_storage")]
    pub storage_size: ByteSize,
    /// The shop's container image (`app/Dockerfile` builds it); pin a tag or a digest.
    #[serde(default = "shop_image")]
    pub image: String,
    /// PostgreSQL instances per CloudNativePG cluster (1 primary + replicas).
    #[serde(default = "one")]
    pub postgres_instances: u8,
    #[serde(default)]
    pub ingress_class: Option<String>,
    /// Horizontal pod autoscaling bounds for shop roles.
    #[serde(default)]
    pub autoscaling: Option<Autoscaling>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    pub min_replicas: u16,
    pub max_replicas: u16,
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsTarget {
    /// AWS region per region name.
    pub regions: BTreeMap<String, String>,
    pub db_instance_class: String,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default)]
    pub cache_node_type: Option<String>,
    #[serde(default = "storage")]
    pub allocated_storage_gb: u32,
}

fn pg_storage() -> ByteSize {
    ByteSize::mib(10 * 1024)
}
fn shop_image() -> String {
    format!("ghcr.io/scalectl/shop:{}", env!("CARGO_PKG_VERSION"))
}
fn one() -> u8 {
    1
}
fn yes() -> bool {
    true
}
fn pg_version() -> String {
    "15".into()
}
fn pool_size() -> u32 {
    20
}
fn max_client_conn() -> u32 {
    1000
}
fn premake() -> u8 {
    3
}
fn max_wal_size() -> ByteSize {
    ByteSize::mib(1024)
}
fn checkpoint_timeout() -> Duration {
    Duration::from_secs(300)
}
fn max_connections() -> u32 {
    100
}
fn shared_buffers() -> ByteSize {
    ByteSize::mib(128)
}
fn work_mem() -> ByteSize {
    ByteSize::mib(4)
}
fn effective_cache_size() -> ByteSize {
    ByteSize::mib(1024)
}
fn shard_count() -> u32 {
    32
}
fn distribution_column() -> String {
    "user_id".into()
}
fn redis_maxmemory() -> ByteSize {
    ByteSize::mib(256)
}
fn shop_pool() -> u32 {
    10
}
fn scrape_interval() -> Duration {
    Duration::from_secs(15)
}
fn retention() -> Duration {
    Duration::from_secs(86_400)
}
fn health_timeout() -> u32 {
    60
}
fn storage() -> u32 {
    20
}

/// The JSON Schema of a manifest, for editors and for validation.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Manifest).to_value()
}

/// A manifest assembled from a base file, overlays (`-f`) and `--set` assignments.
pub struct Sources {
    tree: Node,
    problems: Vec<Diagnostic>,
}

impl Sources {
    /// Starts from a base manifest's text; `file` names it in diagnostics.
    pub fn new(file: &str, text: &str) -> Self {
        match Node::parse(file, text) {
            Ok(tree) => Sources { tree, problems: Vec::new() },
            Err(d) => Sources { tree: Node::parse(file, "").expect("empty YAML parses"), problems: vec![d] },
        }
    }

    /// Merges an overlay file over what is there.
    pub fn overlay(&mut self, file: &str, text: &str) -> &mut Self {
        match Node::parse(file, text) {
            Ok(node) if matches!(node.value, crate::tree::Value::Map(_)) => self.tree.merge(node),
            Ok(node) if matches!(node.value, crate::tree::Value::Null) => {}
            Ok(node) => self.problems.push(Diagnostic::new(node.loc, "", "an overlay must be a mapping of keys to override")),
            Err(d) => self.problems.push(d),
        }
        self
    }

    /// Applies `path=value` (`spec.shop.workers=3`); the value is read as YAML.
    pub fn set(&mut self, assignment: &str) -> &mut Self {
        let origin = format!("--set {assignment}");
        let Some((path, value)) = assignment.split_once('=') else {
            let loc = Node::parse(&origin, "").expect("empty YAML parses").loc;
            self.problems.push(Diagnostic::new(loc, "", "expected KEY.PATH=VALUE, such as spec.shop.workers=3"));
            return self;
        };
        match Node::parse(&origin, value) {
            Ok(node) => {
                let loc = node.loc.clone();
                if let Err(e) = self.tree.set(path.trim(), node) {
                    self.problems.push(Diagnostic::new(loc, path.trim(), e));
                }
            }
            Err(d) => self.problems.push(d),
        }
        self
    }

    /// Validates everything and returns the typed manifest, or every problem found.
    pub fn load(self) -> Result<Manifest, Vec<Diagnostic>> {
        let Sources { mut tree, mut problems } = self;
        if !problems.is_empty() {
            return Err(problems);
        }
        problems.extend(schema_check::check(&mut tree, &json_schema()));
        // Rules across fields run whenever the manifest still reads as typed values (a
        // number out of range does; a wrong type or an unknown key does not), so one run
        // reports both kinds of problem. A rule about a field the schema already refused
        // would only repeat it.
        let manifest = match serde_json::from_value::<Manifest>(tree.to_json()) {
            Ok(m) => m,
            Err(_) if !problems.is_empty() => return Err(problems),
            Err(e) => return Err(vec![Diagnostic::new(tree.loc.clone(), "", format!("manifest does not fit its schema: {e}"))]),
        };
        for (path, msg) in crate::rules::check(&manifest) {
            if !problems.iter().any(|p| p.path == path) {
                problems.push(Diagnostic::new(tree.locate(&path), &path, msg));
            }
        }
        if problems.is_empty() { Ok(manifest) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::level;

    fn base() -> Sources {
        let l = level(1).unwrap();
        Sources::new(l.file, l.manifest)
    }

    fn errors(s: Sources) -> Vec<Diagnostic> {
        s.load().expect_err("expected the manifest to be rejected")
    }

    /// Line and column of the first occurrence of `needle` in `text`, 1-based.
    fn pos(text: &str, needle: &str) -> (usize, usize) {
        let at = text.find(needle).expect(needle);
        let line = text[..at].matches('\n').count() + 1;
        let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    #[test]
    fn a_misspelt_key_is_located_and_the_nearest_key_suggested() {
        let text = level(1).unwrap().manifest.replace("    workers: 1\n", "    wokers: 1\n");
        let errs = errors(Sources::new("m.yaml", &text));
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert_eq!((e.loc.line, e.loc.col), pos(&text, "wokers"));
        assert_eq!(e.path, "spec.shop.wokers");
        assert_eq!(e.hint.as_deref(), Some("did you mean `workers`?"));
        assert!(e.to_string().starts_with(&format!("m.yaml:{}:{}: spec.shop.wokers: unknown key `wokers`", e.loc.line, e.loc.col)), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = level(1)
            .unwrap()
            .manifest
            .replace("dbPoolSize: 10", "dbPoolSize: lots")
            .replace("loadBalancer: none", "loadBalancer: haproxi")
            .replace("  level: 1\n", "  level: 9\n")
            .replace("    topology: monolith\n", "");
        let text = text.replace("  workload:\n    rate: 10\n", "  workload:\n");
        let errs = errors(Sources::new("m.yaml", &text));
        let got: Vec<(&str, usize)> = errs.iter().map(|e| (e.path.as_str(), e.loc.line)).collect();
        let line = |needle: &str| pos(&text, needle).0;
        assert!(got.contains(&("spec.shop.dbPoolSize", line("lots"))), "wrong type: {got:?}");
        assert!(got.contains(&("spec.edge.loadBalancer", line("haproxi"))), "bad enum: {got:?}");
        assert!(got.contains(&("metadata.level", line("level: 9"))), "out of range: {got:?}");
        assert!(got.contains(&("spec.workload.rate", line("  workload:"))), "missing key at its mapping: {got:?}");
        let enum_err = errs.iter().find(|e| e.path == "spec.edge.loadBalancer").unwrap();
        assert_eq!(enum_err.hint.as_deref(), Some("did you mean `haproxy`?"));
        assert!(errs.iter().find(|e| e.path == "spec.shop.dbPoolSize").unwrap().message.contains("expected integer, found string `lots`"));
        assert_eq!(errs.len(), 4, "a removed key with a default is not an error: {errs:?}");
    }

    #[test]
    fn rules_across_fields_point_at_the_field() {
        let text = level(1).unwrap().manifest.replace("        replicas: 1\n    workers", "        replicas: 3\n    workers");
        let errs = errors(Sources::new("m.yaml", &text));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.edge.loadBalancer");
        assert!(errs[0].message.contains("3 shop processes need a load balancer"), "{}", errs[0]);
        assert_eq!(errs[0].loc.line, pos(&text, "loadBalancer: none").0);
    }

    #[test]
    fn schema_and_cross_field_problems_are_reported_together() {
        let text = level(1)
            .unwrap()
            .manifest
            .replace("        replicas: 1\n    workers", "        replicas: 3\n    workers")
            .replace("dbPoolSize: 10", "dbPoolSize: 5000");
        let errs = errors(Sources::new("m.yaml", &text));
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.shop.dbPoolSize", "spec.edge.loadBalancer"], "{errs:?}");
        assert!(errs[0].message.contains("must be at most 1000"), "{}", errs[0]);
        assert_eq!(errs[1].loc.line, pos(&text, "loadBalancer: none").0);
    }

    #[test]
    fn a_cpu_limit_below_the_roles_cpu_is_refused_at_its_line_and_numbers_are_cpu_too() {
        let text = level(4).unwrap().manifest.replacen("cpuLimit: 250m", "cpuLimit: 0.1", 1);
        let errs = errors(Sources::new("l4.yaml", &text));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.shop.roles.0.cpuLimit");
        assert_eq!(errs[0].loc.line, pos(&text, "cpuLimit: 0.1").0);
        assert!(errs[0].message.contains("100m is below the role's cpu of 250m"), "{}", errs[0]);
        let text = level(4).unwrap().manifest.replacen("cpu: 250m", "cpu: lots", 1);
        let errs = errors(Sources::new("l4.yaml", &text));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("`lots` is not a CPU amount"), "{}", errs[0]);
        let m = Sources::new("l4.yaml", &level(4).unwrap().manifest.replacen("cpu: 250m", "cpu: 0.2", 1)).load().unwrap();
        assert_eq!(m.spec.shop.roles[0].cpu.map(|c| c.millis()), Some(200), "a YAML number is cores");
    }

    #[test]
    fn a_broker_reads_with_defaults_and_needs_workers_and_consumers() {
        let m = Sources::new("level-5.yaml", level(5).unwrap().manifest).load().unwrap();
        let b = m.spec.broker.as_ref().expect("level 5 has a broker");
        assert_eq!((b.kind, b.max_attempts, b.maxmemory.redis()), (BrokerKind::RedisStreams, 5, "512mb".to_string()));
        assert_eq!((b.concurrency.high, b.concurrency.normal, b.concurrency.low), (4, 8, 1));
        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.overlay("broker.yaml", "spec:\n  broker: {}\n");
        let b = s.load().unwrap().spec.broker.unwrap();
        assert_eq!(
            (b.max_attempts, b.concurrency, b.maxmemory.redis()),
            (5, BrokerConcurrency::default(), "256mb".to_string()),
            "every field has a default"
        );

        let mut s = Sources::new("level-5.yaml", level(5).unwrap().manifest);
        s.set("spec.broker.concurrency.normal=0").set("spec.broker.kind=rabbitmq");
        let errs = errors(s);
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(got, ["spec.broker.kind", "spec.broker.concurrency.normal"], "every priority needs a consumer: {errs:?}");
        let mut s = Sources::new("level-5.yaml", level(5).unwrap().manifest);
        s.set("spec.shop.workers=0");
        let errs = errors(s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.broker");
        assert!(errs[0].message.contains("set spec.shop.workers to at least 1"), "{}", errs[0]);
    }

    #[test]
    fn patroni_timing_that_could_outlive_the_leader_lock_is_refused_at_its_line() {
        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.overlay("fast.yaml", "spec:\n  postgres:\n    failover:\n      ttl: 4\n      retryTimeout: 2\n");
        let errs = errors(s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.postgres.failover.ttl");
        assert_eq!((&*errs[0].loc.file, errs[0].loc.line), ("fast.yaml", 4));
        assert!(errs[0].message.contains("loopWait 1 + 2 × retryTimeout 2 = 5 s"), "{}", errs[0]);

        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.set("spec.postgres.failover.ttl=5").set("spec.postgres.failover.retryTimeout=2");
        assert_eq!(s.load().unwrap().spec.postgres.failover.ttl, 5, "1 + 2 × 2 fits in 5");
    }

    #[test]
    fn a_retry_timeout_under_which_no_standby_could_take_over_is_refused() {
        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.overlay("fast.yaml", "spec:\n  postgres:\n    failover:\n      ttl: 5\n      retryTimeout: 1\n");
        let errs = errors(s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.postgres.failover.retryTimeout");
        assert_eq!((&*errs[0].loc.file, errs[0].loc.line), ("fast.yaml", 5));
    }

    #[test]
    fn overlays_and_set_are_applied_and_located() {
        let mut s = base();
        s.overlay("over.yaml", "spec:\n  shop:\n    workers: 3\n").set("spec.shop.dbPoolSize=42");
        let m = s.load().unwrap();
        assert_eq!((m.spec.shop.workers, m.spec.shop.db_pool_size), (3, 42));

        let mut s = base();
        s.overlay("over.yaml", "spec:\n  shop:\n    workerz: 3\n");
        let errs = errors(s);
        assert_eq!((&*errs[0].loc.file, errs[0].loc.line, errs[0].loc.col), ("over.yaml", 3, 5));

        let mut s = base();
        s.set("spec.shop.workers=many");
        let errs = errors(s);
        assert_eq!(&*errs[0].loc.file, "--set spec.shop.workers=many");
        assert_eq!(errs[0].path, "spec.shop.workers");

        let mut s = base();
        s.set("spec.shop.workers");
        assert!(errors(s)[0].message.contains("KEY.PATH=VALUE"));
    }

    #[test]
    fn a_quoted_or_plain_number_fits_a_string_field() {
        let mut s = base();
        s.set("spec.postgres.version=16");
        assert_eq!(s.load().unwrap().spec.postgres.version, "16");
    }

    #[test]
    fn durations_and_sizes_are_parsed_once_and_a_bad_one_is_located() {
        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.set("spec.postgres.wal.checkpointTimeout=5m").set("spec.observability.prometheus.scrapeInterval=1min");
        let m = s.load().unwrap();
        assert_eq!(m.spec.postgres.wal.checkpoint_timeout, Duration::from_secs(300));
        assert_eq!(m.spec.observability.prometheus.scrape_interval, Duration::from_secs(60));

        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.set("spec.postgres.wal.checkpointTimeout=60");
        s.overlay("sizes.yaml", "spec:\n  redis:\n    maxmemory: 2 GiBs\n  observability:\n    prometheus:\n      retention: 2 weeks\n");
        let errs = errors(s);
        let got: Vec<(&str, &str, usize)> = errs.iter().map(|e| (e.path.as_str(), &*e.loc.file, e.loc.line)).collect();
        assert_eq!(
            got,
            [
                ("spec.postgres.wal.checkpointTimeout", "--set spec.postgres.wal.checkpointTimeout=60", 1),
                ("spec.redis.maxmemory", "sizes.yaml", 3),
                ("spec.observability.prometheus.retention", "sizes.yaml", 6),
            ],
            "every bad value at once, each where it was written: {errs:?}"
        );
        assert!(errs[0].message.contains("`60` has no unit; write it with one, such as 60s"), "{}", errs[0]);
        assert!(errs[1].message.contains("unknown unit `GiBs`"), "{}", errs[1]);
        assert!(errs[2].message.contains("unknown unit `weeks`"), "{}", errs[2]);
    }

    #[test]
    fn a_checkpoint_timeout_postgres_would_refuse_is_refused_here() {
        let mut s = Sources::new("level-3.yaml", level(3).unwrap().manifest);
        s.set("spec.postgres.wal.checkpointTimeout=10s");
        let errs = errors(s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.postgres.wal.checkpointTimeout");
        assert!(errs[0].message.contains("10s is outside PostgreSQL's range for it, 30s to 1d"), "{}", errs[0]);
    }

    #[test]
    fn a_second_region_without_ha_is_refused_rather_than_left_an_empty_primary() {
        let mut s = base();
        s.overlay("regions.yaml", "spec:\n  regions:\n    - name: r1\n      primary: true\n    - name: r2\n");
        let errs = errors(s);
        let ha = errs.iter().find(|e| e.path == "spec.postgres.ha").unwrap_or_else(|| panic!("{errs:?}"));
        assert!(ha.message.contains("2 regions need `ha: patroni`"), "{ha}");
    }

    #[test]
    fn syntax_errors_stop_with_one_located_error() {
        let errs = errors(Sources::new("m.yaml", "apiVersion: x\nspec: [\n"));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn the_schema_describes_the_manifest_for_editors() {
        let schema = json_schema();
        assert_eq!(schema["title"], "Manifest");
        assert_eq!(schema["properties"]["apiVersion"]["const"], API_VERSION);
        assert_eq!(schema["$defs"]["Spec"]["additionalProperties"], false);
    }
}
