//! The CloudNativePG resources scalectl writes, typed with only the fields it sets.
//! Field names and shapes follow the CRDs of CloudNativePG 1.30 (`../shared/k8s/crds/`,
//! which the tests validate every rendered object against).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

pub const API_VERSION: &str = "postgresql.cnpg.io/v1";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: ClusterSpec,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    pub instances: u8,
    pub image_name: String,
    /// Roll replicas first, then switch over to an updated one: no manual step.
    pub primary_update_strategy: &'static str,
    pub postgresql: PostgresConfig,
    pub bootstrap: Bootstrap,
    pub storage: Storage,
}

#[derive(Debug, Clone, Serialize)]
pub struct PostgresConfig {
    /// CloudNativePG takes every value as a string.
    pub parameters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_preload_libraries: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<Synchronous>,
}

/// Quorum commit: `number` of the standbys confirm each commit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Synchronous {
    pub method: &'static str,
    pub number: u8,
    /// `required`: a commit waits rather than being acknowledged with fewer copies.
    pub data_durability: &'static str,
    /// Promote only a standby that a quorum proves has every acknowledged commit.
    pub failover_quorum: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    pub initdb: InitDb,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitDb {
    // The CRD spells it with "SQL" in capitals.
    pub database: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "postInitApplicationSQL")]
    pub post_init_application_sql: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    pub size: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pooler {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: PoolerSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolerSpec {
    pub cluster: LocalRef,
    pub instances: u8,
    /// `rw` (to the primary) or `ro` (to the replicas).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pgbouncer: PgBouncer,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalRef {
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncer {
    pub pool_mode: &'static str,
    pub parameters: BTreeMap<String, String>,
}
