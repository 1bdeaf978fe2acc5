//! `expand`: the local target's resources for a [`Topology`]: every node a set of
//! processes with its own loopback address in the environment's block, its own data
//! directory and its own cgroup. Pure: the same topology and placement always give the
//! same graph, in the same order (golden files in `tests/golden/`).

use std::net::Ipv4Addr;

use scalectl_core::graph::{Graph, GraphError, Resource, ResourceKind};
use scalectl_core::manifest::{Exporter, Failover};
use scalectl_core::topology::{BrokerPlan, DbCluster, MAIN_CLUSTER, MemberRole, Site, Topology, rate_text};
use serde::{Deserialize, Serialize};

use crate::spec::*;

/// Where an environment's processes live on the local target: its slot `S` gives it the
/// loopback block 127.S.0.0/16, host `N` of region `R` (1-based) is 127.S.R.N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub slot: u8,
}

impl Placement {
    pub fn address(self, region: usize, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.slot, region as u8 + 1, host)
    }

    /// Host `N` of database cluster `C` (0-based, in the topology's order) in region `R`:
    /// the first cluster shares the region's /24 (127.S.R.N, as before clusters were
    /// named); cluster C has its own, 127.S.(R + 16·C).N, so clusters never collide.
    pub fn cluster_address(self, cluster: usize, region: usize, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.slot, (region + 1 + CLUSTER_STRIDE * cluster) as u8, host)
    }
}

/// Third-octet distance between database clusters' blocks; regions are at most 4.
const CLUSTER_STRIDE: usize = 16;
/// Redis Sentinels per region where Redis has replicas: three, so that one lost
/// Sentinel leaves a majority to agree on a failover.
const SENTINELS: u8 = 3;
/// How long a Redis primary must fail to answer before a Sentinel counts it down: long
/// enough that a busy moment is no failover, short enough for the level's RTO.
const SENTINEL_DOWN_AFTER_MS: u32 = 3000;

/// At most this many database clusters fit the third octet (15 × 16 + 4 < 256).
pub const MAX_CLUSTERS: usize = 15;

/// How a database cluster's parts are named in a region: the main cluster's keep the
/// names they had before clusters were named (`r1` in `postgres/r1-pg-1`, `etcd/r1`,
/// Patroni scope `ENV-r1`); another cluster's carry its name (`r1-shard-2`).
fn scoped(region: &str, cluster: &DbCluster) -> String {
    if cluster.name == MAIN_CLUSTER { region.to_string() } else { format!("{region}-{}", cluster.name) }
}

/// Well-known ports; each host has its own address, so they repeat without colliding.
pub mod ports {
    pub const POSTGRES: u16 = 5432;
    pub const PATRONI: u16 = 8008;
    pub const ETCD_CLIENT: u16 = 2379;
    pub const PGBOUNCER: u16 = 6432;
    pub const REDIS: u16 = 6379;
    pub const REDIS_SENTINEL: u16 = 26379;
    /// The broker is a Redis server on an address of its own.
    pub const BROKER: u16 = 6379;
    pub const SHOP: u16 = 8080;
    pub const HAPROXY: u16 = 8000;
    /// The database router's ports: writes reach the leader, reads the replicas.
    pub const PG_WRITE: u16 = 5000;
    pub const PG_READ: u16 = 5001;
    /// HAProxy's built-in Prometheus exporter.
    pub const HAPROXY_METRICS: u16 = 8405;
    pub const PROMETHEUS: u16 = 9090;
    pub const ALERTMANAGER: u16 = 9093;
    /// Where Alertmanager's webhook delivers (`scalectl __alert-receiver`).
    pub const ALERT_RECEIVER: u16 = 9095;
    pub const NODE_EXPORTER: u16 = 9100;
    pub const POSTGRES_EXPORTER: u16 = 9187;
    pub const REDIS_EXPORTER: u16 = 9121;
    pub const PGBOUNCER_EXPORTER: u16 = 9127;
}

/// Host numbers within a region's /24.
mod hosts {
    use scalectl_core::manifest::RoleName;

    pub const PG_FIRST: u8 = 1; // 1..=19: PostgreSQL nodes
    pub const ETCD: u8 = 20;
    pub const PGBOUNCER: u8 = 21;
    pub const REDIS: u8 = 22;
    pub const HAPROXY: u8 = 23;
    pub const PROMETHEUS: u8 = 24;
    pub const DB_ROUTER: u8 = 25;
    pub const REDIS_SENTINEL_FIRST: u8 = 26; // 26..=28: Redis Sentinels
    pub const BROKER: u8 = 29;
    pub const REDIS_REPLICA_FIRST: u8 = 30; // 30..=39: Redis replicas
    pub const REDIS_REPLICA_LAST: u8 = 39;
    pub const CITUS_FIRST: u8 = 40; // 40..=99: Citus workers
    /// Shop processes: 100..=249, a block of [`SHOP_BLOCK`] hosts per role (the
    /// monolith's `all` first, so levels 1 to 3 keep the addresses they always had).
    /// Adding a replica to one pool, or moving from one level's pools to another's,
    /// never hands a running process's address to another one, so the old process can
    /// serve until what replaces it is ready.
    pub const SHOP_FIRST: u8 = 100;
    pub const SHOP_BLOCK: u8 = 25;

    /// Host of the `n`th (1-based) process of `role`'s pool.
    pub fn shop(role: RoleName, n: u8) -> Option<u8> {
        let block = match role {
            RoleName::All => 0,
            RoleName::Auth => 1,
            RoleName::Catalog => 2,
            RoleName::Cart => 3,
            RoleName::Orders => 4,
            RoleName::Flash => 5,
        };
        (1..=SHOP_BLOCK).contains(&n).then(|| SHOP_FIRST + block * SHOP_BLOCK + n - 1)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpandError {
    #[error("too many {what} for the local target's address plan ({count}, at most {max})")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The local target's resources for `t`: every node a set of processes on its own
/// loopback address in the environment's block.
pub fn expand(t: &Topology, placement: Placement) -> Result<Graph, ExpandError> {
    let mut out = Vec::new();
    let primary = t.primary_region();
    if t.clusters.len() > MAX_CLUSTERS {
        return Err(ExpandError::TooMany { what: "database clusters", count: t.clusters.len(), max: MAX_CLUSTERS });
    }
    let partition_premake = t.database.partitions_ahead();
    // Each cluster's data tier lives in its home region; other regions get a replica to
    // read from. Every cluster holds the shop's database, created and migrated there.
    let mut tiers = Vec::new();
    for (ci, cluster) in t.clusters.iter().enumerate() {
        let db = data_tier(t, ci, cluster, placement, &mut out)?;
        let migration = database_and_migration(t, cluster, &db, partition_premake, &mut out);
        tiers.push((db, migration));
    }
    // Shops reach the first cluster; routing them by shard key to the others comes with
    // the sharded level.
    let (db, migration) = &tiers[0];
    let migration = migration.clone();

    // One broker, in the home region, for the workers of every region.
    let broker = t.broker.as_ref().map(|b| {
        let site = t.regions.iter().find(|r| r.name == b.region).map_or(0, |r| r.index);
        let id = format!("broker/{}", b.region);
        let spec = LocalSpec::Broker(BrokerSpec { engine: b.kind.as_str().into(), appendfsync: "always".into(), maxmemory: b.maxmemory });
        out.push(resource(&id, &b.region, Some((placement.address(site, hosts::BROKER), ports::BROKER)), vec![], spec));
        (id, b)
    });

    let mut scrape: Vec<(String, String)> = Vec::new();
    for region in &t.regions {
        let ri = region.index;
        let redis = t.cache_in(&region.name).map(|cache| {
            let id = format!("redis/{}", region.name);
            (id, cache)
        });
        let mut sentinels = Vec::new();
        if let Some((primary, cache)) = &redis {
            let max = usize::from(hosts::REDIS_REPLICA_LAST - hosts::REDIS_REPLICA_FIRST + 1);
            if usize::from(cache.replicas) > max {
                return Err(ExpandError::TooMany { what: "Redis replicas", count: cache.replicas.into(), max });
            }
            // With replicas, three Sentinels (two must agree) promote one when the
            // primary is lost and tell the shop where the primary is now.
            if cache.replicas > 0 {
                sentinels = (1..=SENTINELS).map(|n| format!("redis-sentinel/{}-{n}", region.name)).collect();
            }
            let redis_spec = |replicas: u8, replica_of: Option<String>| {
                LocalSpec::Redis(RedisSpec { maxmemory: cache.maxmemory, replicas, auth: true, replica_of, sentinels: sentinels.clone() })
            };
            let address = placement.address(ri, hosts::REDIS);
            out.push(resource(primary, &region.name, Some((address, ports::REDIS)), vec![], redis_spec(cache.replicas, None)));
            let mut group = vec![primary.clone()];
            for n in 1..=cache.replicas {
                let address = placement.address(ri, hosts::REDIS_REPLICA_FIRST + n - 1);
                let id = format!("{primary}-replica-{n}");
                out.push(resource(&id, &region.name, Some((address, ports::REDIS)), vec![primary.clone()], redis_spec(0, Some(primary.clone()))));
                group.push(id);
            }
            for (n, id) in sentinels.iter().enumerate() {
                let spec = LocalSpec::RedisSentinel(SentinelSpec {
                    monitors: primary.clone(),
                    quorum: SENTINELS / 2 + 1,
                    down_after_ms: SENTINEL_DOWN_AFTER_MS,
                });
                let address = placement.address(ri, hosts::REDIS_SENTINEL_FIRST + n as u8);
                // Started together: each is ready only once a majority of them runs. One
                // restarted while its peers are down too finds the primary by asking the
                // nodes (`sentinel::current_primary`).
                out.push(resource(id, &region.name, Some((address, ports::REDIS_SENTINEL)), group.clone(), spec));
            }
        }
        let redis = redis.map(|(id, _)| id);
        // What the shop's processes wait for before they start: Redis and its Sentinels.
        let redis_deps: Vec<String> = redis.iter().chain(&sentinels).cloned().collect();
        let limits = &t.shop.rate_limits;
        let mut shops = Vec::new();
        for pool in t.shop.pools.iter().filter(|p| p.region == region.name) {
            let role = pool.role.as_str();
            for i in 1..=pool.replicas {
                let id = format!("shop/{}-{role}-{i}", region.name);
                let mut deps = vec![migration.clone()];
                deps.extend(db.pooler.clone());
                deps.extend(redis_deps.iter().cloned());
                // Instances of a role start one after another, so an update restarts them
                // one at a time and the balancer always has one to send requests to.
                if i > 1 {
                    deps.push(format!("shop/{}-{role}-{}", region.name, i - 1));
                }
                let host = hosts::shop(pool.role, i).ok_or(ExpandError::TooMany {
                    what: "shop processes of one role in a region",
                    count: pool.replicas.into(),
                    max: hosts::SHOP_BLOCK.into(),
                })?;
                let address = placement.address(ri, host);
                scrape.push(("shop".into(), format!("{address}:{}", ports::SHOP)));
                let replicas = t.shop.read_from_replicas;
                let spec = LocalSpec::Shop(ShopSpec {
                    roles: role.to_string(),
                    db_pool_size: t.shop.db_pool_size,
                    writes_via: db.write_endpoint.clone(),
                    reads_via: if replicas { db.read_endpoint.clone() } else { db.write_endpoint.clone() },
                    read_database: if replicas { db.read_database.clone() } else { t.database.name.clone() },
                    redis: redis.clone(),
                    redis_auth: redis.is_some(),
                    redis_sentinels: sentinels.clone(),
                    rate_login: rate_text(&limits.login),
                    rate_register: rate_text(&limits.register),
                    rate_search: rate_text(&limits.search),
                    // A pool's replicas (all on this one machine) share its cores.
                    pool_replicas: u32::from(pool.replicas),
                    cpu: pool.cpu,
                    cpu_limit: pool.cpu_limit,
                    memory: pool.memory,
                });
                out.push(resource(&id, &region.name, Some((address, ports::SHOP)), deps, spec));
                shops.push(id);
            }
        }
        for pool in t.shop.workers.iter().filter(|w| w.region == region.name) {
            for i in 1..=pool.replicas {
                let mut deps = vec![migration.clone()];
                deps.extend(db.pooler.clone());
                deps.extend(redis_deps.iter().cloned());
                deps.extend(broker.iter().map(|(id, _)| id.clone()));
                let spec = LocalSpec::Worker(WorkerSpec {
                    writes_via: db.write_endpoint.clone(),
                    redis: redis.clone(),
                    redis_auth: redis.is_some(),
                    redis_sentinels: sentinels.clone(),
                    order_partitions_premake: partition_premake,
                    broker: broker.as_ref().map(|(id, _)| id.clone()),
                    broker_pools: broker.as_ref().map(|(_, b)| pools_text(b)).unwrap_or_default(),
                    max_attempts: broker.as_ref().map_or(0, |(_, b)| b.max_attempts),
                });
                out.push(resource(&format!("worker/{}-{i}", region.name), &region.name, None, deps, spec));
            }
        }
        if let Some(edge) = t.edges.iter().find(|e| e.region == region.name) {
            let address = placement.address(ri, hosts::HAPROXY);
            scrape.push(("haproxy".into(), format!("{address}:{}", ports::HAPROXY_METRICS)));
            let spec = LocalSpec::Haproxy(HaproxySpec {
                role: HaproxyRole::Edge,
                backends: shops.clone(),
                health_check: "/readyz".into(),
                balance: Some(edge.balance),
                read_port: None,
                rate_limits: [("login", &limits.login), ("register", &limits.register), ("search", &limits.search)]
                    .into_iter()
                    .filter(|(_, rate)| rate.is_some())
                    .map(|(group, rate)| (group.to_string(), rate_text(rate)))
                    .collect(),
            });
            out.push(resource(&format!("haproxy/{}", region.name), &region.name, Some((address, ports::HAPROXY)), shops.clone(), spec));
        }
        if let Some(r) = &redis
            && t.observability.exporters.contains(&Exporter::Redis)
        {
            let address = placement.address(ri, hosts::REDIS);
            scrape.push(("redis".into(), format!("{address}:{}", ports::REDIS_EXPORTER)));
            out.push(exporter(&region.name, address, ports::REDIS_EXPORTER, Exports::Redis, r));
        }
    }
    for (db, _) in &tiers {
        scrape.extend(db.scrape.iter().cloned());
    }
    if t.observability.exporters.contains(&Exporter::Postgres) {
        for (db, _) in &tiers {
            for (node, address) in &db.nodes {
                scrape.push(("postgres".into(), format!("{address}:{}", ports::POSTGRES_EXPORTER)));
                out.push(exporter(&db.home, *address, ports::POSTGRES_EXPORTER, Exports::Postgres, node));
            }
        }
    }
    if t.observability.exporters.contains(&Exporter::Node) {
        // One per environment: every process here shares one machine.
        let address = placement.address(primary.index, hosts::PROMETHEUS);
        scrape.push(("node".into(), format!("{address}:{}", ports::NODE_EXPORTER)));
        let spec = LocalSpec::Exporter(ExporterSpec { exports: Exports::Node, of: None, auth: false });
        out.push(resource("exporter/node", &primary.name, Some((address, ports::NODE_EXPORTER)), vec![], spec));
    }
    if let Some(prom) = &t.observability.prometheus {
        let site = t.site(&prom.region).unwrap_or(primary);
        let address = placement.address(site.index, hosts::PROMETHEUS);
        let depends_on: Vec<String> =
            out.iter().filter(|r| matches!(r.kind, ResourceKind::Shop | ResourceKind::Exporter)).map(|r| r.id.clone()).collect();
        // Burn-rate alerts go to Alertmanager, which delivers them to a receiver that
        // keeps them for `scalectl alerts`; both beside Prometheus.
        let alertmanager = prom.burn_rate_alerts.then(|| {
            let receiver = resource(
                "alert-receiver/main",
                &site.name,
                Some((address, ports::ALERT_RECEIVER)),
                vec![],
                LocalSpec::AlertReceiver(AlertReceiverSpec::default()),
            );
            let spec = LocalSpec::Alertmanager(AlertmanagerSpec { receiver: receiver.id.clone() });
            let manager = resource("alertmanager/main", &site.name, Some((address, ports::ALERTMANAGER)), vec![receiver.id.clone()], spec);
            scrape.push(("alertmanager".into(), format!("{address}:{}", ports::ALERTMANAGER)));
            let endpoint = format!("{address}:{}", ports::ALERTMANAGER);
            out.push(receiver);
            out.push(manager);
            endpoint
        });
        let depends_on: Vec<String> = depends_on.into_iter().chain(alertmanager.is_some().then(|| "alertmanager/main".to_string())).collect();
        scrape.sort();
        let slos = &t.observability.slos;
        let spec = LocalSpec::Prometheus(PrometheusSpec {
            scrape_interval: prom.scrape_interval,
            retention: prom.retention,
            targets: scrape.iter().map(|(j, e)| format!("{j}={e}")).collect(),
            burn_rate_alerts: prom.burn_rate_alerts,
            slo_availability: slos.availability,
            slo_error_ratio: slos.error_ratio,
            slo_latency_p95_ms: slos.latency_p95_ms,
            slo_latency_p99_ms: slos.latency_p99_ms,
            alertmanager,
        });
        out.push(resource("prometheus/main", &site.name, Some((address, ports::PROMETHEUS)), depends_on, spec));
    }
    Ok(Graph::new(out)?)
}

/// The shop's database on `cluster` and the migration that shapes it; returns the
/// migration's id. The main cluster's keep their ids (`database/shop`, `migration/shop`).
fn database_and_migration(t: &Topology, cluster: &DbCluster, db: &DataTier, premake: u8, out: &mut Vec<Resource>) -> String {
    let suffix = if cluster.name == MAIN_CLUSTER { String::new() } else { format!("@{}", cluster.name) };
    let database = format!("database/{}{suffix}", t.database.name);
    let spec = LocalSpec::Database(DatabaseSpec {
        name: t.database.name.clone(),
        owner: t.database.owner.clone(),
        extensions: t.database.extensions.clone(),
        partition_orders: t.database.partition_orders,
        premake: t.database.premake,
    });
    out.push(resource(&database, &cluster.home_region, None, db.writers.clone(), spec));
    let migration = format!("migration/{}{suffix}", t.database.name);
    let spec = LocalSpec::Migration(MigrationSpec { database: database.clone(), order_partitions_premake: premake });
    out.push(resource(&migration, &cluster.home_region, None, vec![database], spec));
    migration
}

/// What the rest of the topology needs to know about the database tier.
struct DataTier {
    /// Resources that must be up before the database can be created.
    writers: Vec<String>,
    /// Resource id of what writes go through (a server or a pooler).
    write_endpoint: String,
    /// Resource id of what replica reads go through, and the database name there.
    read_endpoint: String,
    read_database: String,
    /// The pooler, which the shop's processes depend on.
    pooler: Option<String>,
    /// The cluster's home region.
    home: String,
    /// The home region's PostgreSQL nodes and their addresses, primary first.
    nodes: Vec<(String, Ipv4Addr)>,
    scrape: Vec<(String, String)>,
}

/// The regions that hold a member of `cluster`'s consensus store: each region the
/// cluster has a member in, home first, so that losing any one region (the home region
/// too) leaves a majority when there are three. With exactly two, a third region of
/// the environment holds a witness when there is one; otherwise two members would be
/// no better than one (losing either loses the majority), so the home region keeps a
/// single member.
fn etcd_regions<'a>(t: &'a Topology, cluster: &'a DbCluster) -> Vec<&'a str> {
    let mut regions = vec![cluster.home_region.as_str()];
    for m in cluster.remote_members() {
        if !regions.contains(&m.region.as_str()) {
            regions.push(&m.region);
        }
    }
    if regions.len() == 2 {
        match t.regions.iter().find(|r| !regions.contains(&r.name.as_str())) {
            Some(witness) => regions.push(&witness.name),
            None => regions.truncate(1),
        }
    }
    regions
}

fn data_tier(t: &Topology, ci: usize, cluster: &DbCluster, placement: Placement, out: &mut Vec<Resource>) -> Result<DataTier, ExpandError> {
    let home = t.site(&cluster.home_region).unwrap_or(t.primary_region());
    let ri = home.index;
    let scope = scoped(&home.name, cluster);
    let at = |region: usize, host: u8| placement.cluster_address(ci, region, host);
    let standbys = cluster.local_standbys();
    let count = 1 + standbys;
    let remote_replicas = cluster.remote_members().count();
    if count + remote_replicas > 19 {
        return Err(ExpandError::TooMany { what: "PostgreSQL nodes", count, max: 19 });
    }
    let pg = &cluster.server;
    let server = |role: NodeRole| PgServerSpec {
        version: pg.version.clone(),
        role,
        max_connections: pg.max_connections,
        shared_buffers: pg.shared_buffers,
        work_mem: pg.work_mem,
        effective_cache_size: pg.effective_cache_size,
        wal_compression: pg.wal_compression,
        max_wal_size: pg.max_wal_size,
        checkpoint_timeout: pg.checkpoint_timeout,
        synchronous_commit: pg.synchronous_commit,
        shared_preload_libraries: pg.shared_preload_libraries.clone(),
    };
    let mut nodes: Vec<String> = Vec::new();
    let mut addresses = Vec::new();
    let mut scrape = Vec::new();
    // Each cluster has its own consensus store and Patroni scope, with a member in each
    // region the cluster has members in, the home region's first (see `etcd_regions`).
    let etcd_sites: Vec<&Site> = etcd_regions(t, cluster).into_iter().filter_map(|name| t.site(name)).collect();
    let etcd_ids: Vec<String> = etcd_sites.iter().map(|site| format!("etcd/{}", scoped(&site.name, cluster))).collect();
    let etcd_id = etcd_ids[0].clone();
    // Patroni's settings, the same on every member; `nosync` keeps a member from ever
    // being picked as the synchronous standby.
    let patroni = |f: &Failover, nosync: bool| PatroniSpec {
        cluster: scope.clone(),
        etcd: etcd_id.clone(),
        synchronous_mode: cluster.synchronous > 0,
        synchronous_node_count: u32::from(cluster.synchronous.max(1)),
        nosync,
        patroni_port: ports::PATRONI,
        ttl: f.ttl,
        loop_wait: f.loop_wait,
        retry_timeout: f.retry_timeout,
    };
    if cluster.ha.is_some() {
        // A lone member lists no peers, so a single-region cluster's spec is as it was.
        let peers = if etcd_ids.len() > 1 { etcd_ids.clone() } else { Vec::new() };
        for (site, id) in etcd_sites.iter().zip(&etcd_ids) {
            let spec = LocalSpec::Etcd(EtcdSpec { members: etcd_ids.len() as u32, peers: peers.clone() });
            out.push(resource(id, &site.name, Some((at(site.index, hosts::ETCD), ports::ETCD_CLIENT)), vec![], spec));
        }
    }
    for member in cluster.home_members() {
        let id = format!("postgres/{scope}-pg-{}", member.ordinal);
        let address = at(ri, hosts::PG_FIRST + member.ordinal - 1);
        let server = server(node_role(member.role));
        let (spec, deps) = match &cluster.ha {
            Some(f) => {
                let patroni = patroni(f, member.role == MemberRole::AsyncReplica);
                scrape.push(("patroni".into(), format!("{address}:{}", ports::PATRONI)));
                // The first node bootstraps the cluster (or adopts a standalone server's
                // data); the others clone from it, so they start after it.
                let mut deps = etcd_ids.clone();
                deps.extend(nodes.first().cloned());
                (LocalSpec::PatroniNode(PatroniNodeSpec { server, patroni, follows: None }), deps)
            }
            None => (LocalSpec::Postgres(PostgresSpec { server, follows: None }), vec![]),
        };
        out.push(resource(&id, &home.name, Some((address, ports::POSTGRES)), deps, spec));
        nodes.push(id);
        addresses.push(address);
    }
    for member in cluster.remote_members() {
        let site = t.site(&member.region).unwrap_or(home);
        let server = server(node_role(member.role));
        let follows = Some(nodes[0].clone());
        let spec = match &cluster.ha {
            // A member of the home region's cluster that never leads or confirms commits.
            Some(f) => LocalSpec::PatroniNode(PatroniNodeSpec { server, patroni: patroni(f, true), follows }),
            None => LocalSpec::Postgres(PostgresSpec { server, follows }),
        };
        let id = format!("postgres/{}-pg-{}", scoped(&site.name, cluster), member.ordinal);
        let address = at(site.index, hosts::PG_FIRST + member.ordinal - 1);
        out.push(resource(&id, &site.name, Some((address, ports::POSTGRES)), vec![nodes[0].clone()], spec));
    }
    if cluster.ha.is_some() {
        // Releases the leader's lock as soon as its node is dead (leader_watch.rs).
        let mut deps = etcd_ids.clone();
        deps.extend(nodes.iter().cloned());
        let spec = LocalSpec::LeaderWatch(LeaderWatchSpec { cluster: scope.clone(), etcd: etcd_ids.clone(), nodes: nodes.clone() });
        out.push(resource(&format!("leader-watch/{scope}"), &home.name, None, deps, spec));
    }
    let mut writers = nodes.clone();
    if let Some(sharding) = &cluster.sharding {
        for w in 0..sharding.workers.min(60) {
            let id = format!("citus-worker/{scope}-{}", w + 1);
            let spec = LocalSpec::CitusWorker(CitusWorkerSpec {
                server: server(NodeRole::CitusWorker),
                shard_count: sharding.shard_count,
                distribution_column: sharding.distribution_column.clone(),
            });
            out.push(resource(&id, &home.name, Some((at(ri, hosts::CITUS_FIRST + w), ports::POSTGRES)), vec![], spec));
            writers.push(id);
        }
    }

    // With Patroni the leader moves, so a router sends writes to whichever node Patroni's
    // REST API calls the primary and reads to the replicas; everything else connects to
    // the router and follows a failover without being reconfigured.
    let router = if cluster.ha.is_some() {
        let id = format!("haproxy/{scope}-db");
        let address = at(ri, hosts::DB_ROUTER);
        scrape.push(("haproxy".into(), format!("{address}:{}", ports::HAPROXY_METRICS)));
        let spec = LocalSpec::Haproxy(HaproxySpec {
            role: HaproxyRole::Db,
            backends: nodes.clone(),
            health_check: "patroni".into(),
            balance: None,
            read_port: Some(ports::PG_READ),
            rate_limits: Default::default(),
        });
        out.push(resource(&id, &home.name, Some((address, ports::PG_WRITE)), nodes.clone(), spec));
        Some(id)
    } else {
        None
    };

    let server = router.clone().unwrap_or_else(|| nodes[0].clone());
    let (mut write_endpoint, mut read_endpoint) = (server.clone(), server);
    let mut read_database = t.database.name.clone();
    let mut pooler = None;
    if let Some(pool) = t.pooler_of(&cluster.name) {
        let id = format!("pgbouncer/{scope}");
        let address = at(ri, hosts::PGBOUNCER);
        let mut spec = PgbouncerSpec {
            pool_mode: pool.mode,
            default_pool_size: pool.default_pool_size,
            max_client_conn: pool.max_client_conn,
            upstream: write_endpoint.clone(),
            read_upstream: None,
        };
        if standbys > 0 && router.is_some() {
            // A second logical database on the same pooler reaches the replicas.
            spec.read_upstream = Some(read_endpoint.clone());
            read_database = format!("{}_ro", t.database.name);
        }
        let deps = router.clone().map_or_else(|| nodes.clone(), |r| vec![r]);
        out.push(resource(&id, &home.name, Some((address, ports::PGBOUNCER)), deps, LocalSpec::Pgbouncer(spec)));
        // `exporters: [pgbouncer]` is not run on local: the only packaged exporter
        // (Debian's prometheus-pgbouncer-exporter 1.7) cannot read PgBouncer 1.18's SHOW
        // STATS. Pool use shows in the shop's shop_db_pool_connections and in `status`.
        write_endpoint = id.clone();
        read_endpoint = id.clone();
        pooler = Some(id);
    }
    if standbys == 0 {
        read_database = t.database.name.clone();
    }
    let nodes = nodes.into_iter().zip(addresses).collect();
    Ok(DataTier { writers, write_endpoint, read_endpoint, read_database, pooler, home: home.name.clone(), nodes, scrape })
}

fn exporter(region: &str, address: Ipv4Addr, port: u16, exports: Exports, of: &str) -> Resource {
    let spec = LocalSpec::Exporter(ExporterSpec { exports, of: Some(of.to_string()), auth: exports == Exports::Redis });
    resource(&format!("exporter/{}", of.replace('/', "-")), region, Some((address, port)), vec![of.to_string()], spec)
}

/// Consumers per priority as the shop's worker reads them: `high=4,normal=8,low=1`.
fn pools_text(b: &BrokerPlan) -> String {
    let c = b.concurrency;
    format!("high={},normal={},low={}", c.high, c.normal, c.low)
}

/// A resource of the kind `spec` is, listening on `at` when it listens.
fn resource(id: &str, region: &str, at: Option<(Ipv4Addr, u16)>, depends_on: Vec<String>, spec: LocalSpec) -> Resource {
    Resource {
        id: id.to_string(),
        kind: spec.kind(),
        region: region.to_string(),
        address: at.map(|(a, _)| a),
        port: at.map(|(_, p)| p),
        depends_on,
        spec: spec.to_spec(),
        digests: Default::default(),
    }
}

fn node_role(role: MemberRole) -> NodeRole {
    match role {
        MemberRole::Primary => NodeRole::Primary,
        MemberRole::SyncStandby => NodeRole::SyncStandby,
        MemberRole::AsyncReplica | MemberRole::RemoteReplica => NodeRole::AsyncReplica,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use scalectl_core::Sources;
    use scalectl_core::levels::level;
    use scalectl_core::manifest::RoleName;

    use super::*;

    fn level_3() -> Topology {
        let l = level(3).unwrap();
        Topology::from_manifest(&Sources::new(l.file, l.manifest).load().unwrap())
    }

    #[test]
    fn consensus_has_a_member_in_each_region_and_a_witness_when_there_are_two() {
        let l = level(6).unwrap();
        let mut t = Topology::from_manifest(&Sources::new(l.file, l.manifest).load().unwrap());
        let regions = |t: &Topology| etcd_regions(t, &t.clusters[0]).into_iter().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(regions(&t), ["r1", "r2", "r3"]);
        let g = expand(&t, Placement { slot: 9 }).unwrap();
        let remote = g.get("postgres/r3-pg-1").unwrap();
        assert_eq!(patroni_node(remote).unwrap().patroni.etcd, "etcd/r1", "the cluster's store, named by its home member");
        assert_eq!(g.get("etcd/r3").unwrap().address, Some(Ipv4Addr::new(127, 9, 3, 20)), "in its own region's block");

        t.clusters[0].members.retain(|m| m.region != "r3");
        assert_eq!(regions(&t), ["r1", "r2", "r3"], "two regions of members, and a witness in the third");
        t.regions.retain(|r| r.name != "r3");
        assert_eq!(regions(&t), ["r1"], "with no third region, two members would be no better than one");
        t.clusters[0].members.retain(|m| m.region == "r1");
        assert_eq!(regions(&t), ["r1"]);
    }

    #[test]
    fn a_second_cluster_in_a_region_gets_its_own_names_scope_consensus_and_addresses() {
        let mut t = level_3();
        let mut shard = t.clusters[0].clone();
        shard.name = "shard-2".into();
        t.clusters.push(shard);
        let mut pooler = t.poolers[0].clone();
        pooler.cluster = "shard-2".into();
        t.poolers.push(pooler);
        let g = expand(&t, Placement { slot: 9 }).unwrap();

        let ids: BTreeSet<&str> = g.resources.iter().map(|r| r.id.as_str()).collect();
        for id in ["etcd/r1", "postgres/r1-pg-1", "haproxy/r1-db", "pgbouncer/r1", "database/shop", "migration/shop"] {
            assert!(ids.contains(id), "the first cluster keeps {id}");
        }
        for id in [
            "etcd/r1-shard-2",
            "postgres/r1-shard-2-pg-3",
            "haproxy/r1-shard-2-db",
            "pgbouncer/r1-shard-2",
            "database/shop@shard-2",
            "migration/shop@shard-2",
        ] {
            assert!(ids.contains(id), "the second cluster has {id}: {ids:?}");
        }
        let second = g.get("postgres/r1-shard-2-pg-1").unwrap();
        let patroni = patroni_node(second).unwrap().patroni;
        assert_eq!(patroni.cluster, "r1-shard-2", "its own Patroni scope");
        assert_eq!(patroni.etcd, "etcd/r1-shard-2", "its own consensus store");
        assert_eq!(second.address, Some(Ipv4Addr::new(127, 9, 17, 1)));
        let router = g.get("haproxy/r1-shard-2-db").unwrap();
        assert_eq!(haproxy(router).unwrap().backends, ["postgres/r1-shard-2-pg-1", "postgres/r1-shard-2-pg-2", "postgres/r1-shard-2-pg-3"]);

        let mut endpoints = BTreeSet::new();
        for r in &g.resources {
            if let (Some(e), false) = (r.endpoint(), r.kind == ResourceKind::Exporter) {
                assert!(endpoints.insert(e.clone()), "{} listens on {e}, which another resource has", r.id);
            }
        }
    }

    fn shop_addresses(t: &Topology) -> BTreeMap<String, Ipv4Addr> {
        let g = expand(t, Placement { slot: 9 }).unwrap();
        g.resources.iter().filter(|r| r.kind == ResourceKind::Shop).map(|r| (r.id.clone(), r.address.unwrap())).collect()
    }

    #[test]
    fn a_shop_keeps_its_address_when_other_pools_change() {
        let l4 = |growth: u8| {
            let l = level(4).unwrap();
            let mut t = Topology::from_manifest(&Sources::new(l.file, l.manifest).load().unwrap());
            t.shop.pools.iter_mut().find(|p| p.role == RoleName::Catalog).unwrap().replicas += growth;
            t
        };
        let (before, after) = (shop_addresses(&l4(0)), shop_addresses(&l4(2)));
        assert_eq!(after.len(), before.len() + 2);
        for (id, address) in &before {
            assert_eq!(after[id], *address, "{id} keeps its address when the catalog pool grows");
        }
        let level3 = shop_addresses(&level_3());
        assert_eq!(level3["shop/r1-all-1"], Ipv4Addr::new(127, 9, 1, 100), "the monolith keeps the address it always had");
        let taken: BTreeSet<_> = level3.values().collect();
        assert!(before.values().all(|a| !taken.contains(a)), "level 4's pools start beside level 3's shops: {before:?}");

        let mut t = l4(0);
        t.shop.pools.iter_mut().find(|p| p.role == RoleName::Flash).unwrap().replicas = hosts::SHOP_BLOCK + 1;
        let e = expand(&t, Placement { slot: 9 }).unwrap_err();
        assert_eq!(e, ExpandError::TooMany { what: "shop processes of one role in a region", count: 26, max: 25 });
    }

    #[test]
    fn clusters_beyond_the_address_plan_are_refused() {
        let mut t = level_3();
        for i in 0..MAX_CLUSTERS {
            let mut c = t.clusters[0].clone();
            c.name = format!("s{i}");
            t.clusters.push(c);
        }
        let e = expand(&t, Placement { slot: 9 }).unwrap_err();
        assert_eq!(e, ExpandError::TooMany { what: "database clusters", count: MAX_CLUSTERS + 1, max: MAX_CLUSTERS });
    }
}
