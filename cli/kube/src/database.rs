//! PostgreSQL through CloudNativePG: a `Cluster` per database cluster, and a PgBouncer
//! `Pooler` for writes (and one for replica reads when the level reads from replicas).
//!
//! Synchronous replication is quorum-based (`ANY n`) with `dataDurability: required` and
//! `failoverQuorum`, so RPO stays 0 and any standby that holds every acknowledged commit may
//! be promoted: the lesson of the local target's "no failover candidate" window (issue
//! 19). `n` is the level's synchronous count, kept below the standbys so that losing one
//! standby does not stop writes when there are three or more instances.

use std::collections::BTreeMap;

use scalectl_core::manifest::{KubernetesTarget, PoolMode};
use scalectl_core::topology::{DbCluster, DbPooler, Topology};

use crate::cnpg::{self, Bootstrap, ClusterSpec, InitDb, LocalRef, PgBouncer, PoolerSpec, PostgresConfig, Storage, Synchronous};
use crate::meta::{self, Scope};

/// The operand image of a PostgreSQL major version, as CloudNativePG publishes it.
pub fn image(version: &str) -> String {
    format!("ghcr.io/cloudnative-pg/postgresql:{version}")
}

/// Standbys that confirm each commit, of `instances - 1`; `None` without standbys.
pub fn quorum(wanted: u8, instances: u8) -> Option<u8> {
    let standbys = instances.saturating_sub(1);
    if wanted == 0 || standbys == 0 {
        return None;
    }
    // With three or more standbys... or two: keep one spare so a lost standby does not
    // block commits; with one standby there is no spare to keep.
    let most = if standbys >= 2 { standbys - 1 } else { standbys };
    Some(wanted.min(most))
}

pub fn cluster(scope: &Scope, t: &Topology, c: &DbCluster, k: &KubernetesTarget) -> cnpg::Cluster {
    let s = &c.server;
    let instances = k.postgres_instances.max(1);
    let parameters = BTreeMap::from([
        ("max_connections".to_string(), s.max_connections.to_string()),
        ("shared_buffers".to_string(), s.shared_buffers.postgres()),
        ("work_mem".to_string(), s.work_mem.postgres()),
        ("effective_cache_size".to_string(), s.effective_cache_size.postgres()),
        ("wal_compression".to_string(), if s.wal_compression { "on" } else { "off" }.to_string()),
        ("max_wal_size".to_string(), s.max_wal_size.postgres()),
        ("checkpoint_timeout".to_string(), s.checkpoint_timeout.postgres()),
        ("synchronous_commit".to_string(), s.synchronous_commit.as_pg().to_string()),
    ]);
    // Citus is not in CloudNativePG's images; `unused` says so.
    let preload = s.shared_preload_libraries.iter().filter(|l| *l != "citus").cloned().collect();
    let extensions = t.database.extensions.iter().filter(|e| *e != "citus").map(|e| format!("CREATE EXTENSION IF NOT EXISTS {e}")).collect();
    cnpg::Cluster {
        api_version: cnpg::API_VERSION,
        kind: "Cluster",
        metadata: scope.meta(&meta::cluster(c), &[]),
        spec: ClusterSpec {
            instances,
            image_name: image(&s.version),
            primary_update_strategy: "unsupervised",
            postgresql: PostgresConfig {
                parameters,
                shared_preload_libraries: preload,
                synchronous: quorum(c.synchronous, instances).map(|number| Synchronous {
                    method: "any",
                    number,
                    data_durability: "required",
                    failover_quorum: true,
                }),
            },
            bootstrap: Bootstrap {
                initdb: InitDb { database: t.database.name.clone(), owner: t.database.owner.clone(), post_init_application_sql: extensions },
            },
            storage: Storage { size: k.storage_size.kubernetes(), storage_class: k.storage_class.clone() },
        },
    }
}

/// The pooler for `kind` (`rw` or `ro`); two instances when the cluster is highly
/// available, so that losing a pooler pod is not losing the database.
pub fn pooler(scope: &Scope, c: &DbCluster, p: &DbPooler, kind: &'static str) -> cnpg::Pooler {
    let parameters = BTreeMap::from([
        ("default_pool_size".to_string(), p.default_pool_size.to_string()),
        ("max_client_conn".to_string(), p.max_client_conn.to_string()),
    ]);
    cnpg::Pooler {
        api_version: cnpg::API_VERSION,
        kind: "Pooler",
        metadata: scope.meta(&meta::pooler(c, kind), &[]),
        spec: PoolerSpec {
            cluster: LocalRef { name: meta::cluster(c) },
            instances: if c.ha.is_some() { 2 } else { 1 },
            kind,
            pgbouncer: PgBouncer {
                pool_mode: match p.mode {
                    PoolMode::Transaction => "transaction",
                    PoolMode::Session => "session",
                },
                parameters,
            },
        },
    }
}

/// Where the shop connects for writes and for replica reads: the poolers' Services when
/// there are poolers, else the operator's `-rw` / `-ro` Services.
pub struct Endpoints {
    pub writes: String,
    pub reads: Option<String>,
    pub transaction_pooling: bool,
}

pub fn endpoints(t: &Topology, c: &DbCluster, k: &KubernetesTarget) -> Endpoints {
    let replicas = k.postgres_instances > 1 && t.shop.read_from_replicas;
    match t.pooler_of(&c.name) {
        Some(p) => Endpoints {
            writes: meta::pooler(c, "rw"),
            reads: replicas.then(|| meta::pooler(c, "ro")),
            transaction_pooling: p.mode == PoolMode::Transaction,
        },
        None => Endpoints {
            writes: format!("{}-rw", meta::cluster(c)),
            reads: replicas.then(|| format!("{}-ro", meta::cluster(c))),
            transaction_pooling: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_keeps_a_spare_standby_when_there_is_one() {
        assert_eq!(quorum(1, 1), None, "no standby, nothing to wait for");
        assert_eq!(quorum(0, 3), None, "asynchronous by choice");
        assert_eq!(quorum(1, 2), Some(1), "one standby: it must confirm");
        assert_eq!(quorum(2, 3), Some(1), "two standbys: one confirms, the other is spare");
        assert_eq!(quorum(2, 4), Some(2));
        assert_eq!(quorum(1, 4), Some(1));
    }
}
