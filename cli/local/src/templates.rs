//! Config files rendered from the tera templates in the repository's `templates/`,
//! compiled into the binary so that scalectl runs from anywhere.

use anyhow::{Context, Result};
use tera::Tera;

pub const POSTGRESQL_CONF: &str = include_str!("../../../templates/postgresql.conf.tera");
pub const PG_HBA_CONF: &str = include_str!("../../../templates/pg_hba.conf.tera");
pub const PROMETHEUS_YML: &str = include_str!("../../../templates/prometheus.yml.tera");
pub const PROMETHEUS_RULES: &str = include_str!("../../../templates/prometheus-rules.yml.tera");
pub const PGBOUNCER_INI: &str = include_str!("../../../templates/pgbouncer.ini.tera");
pub const HAPROXY_CFG: &str = include_str!("../../../templates/haproxy.cfg.tera");
pub const PATRONI_YML: &str = include_str!("../../../templates/patroni.yml.tera");
pub const ALERTMANAGER_YML: &str = include_str!("../../../templates/alertmanager.yml.tera");
pub const REDIS_CONF: &str = include_str!("../../../templates/redis.conf.tera");
pub const BROKER_CONF: &str = include_str!("../../../templates/broker.conf.tera");
pub const SENTINEL_CONF: &str = include_str!("../../../templates/redis-sentinel.conf.tera");

/// Renders config file `name` of resource `r` from `template`: the context has the
/// environment (`env`), the resource's `id`, `address`, `port`, directory (`dir`), the
/// environment's loopback `block` and its typed spec serialized (`p`), plus `extra`.
pub fn render_for(env: &crate::Env, r: &scalectl_core::Resource, name: &str, template: &str, extra: serde_json::Value) -> Result<(String, String)> {
    let mut ctx = serde_json::json!({
        "env": env.name,
        "id": r.id,
        "address": r.address.map(|a| a.to_string()).unwrap_or_default(),
        "port": r.port,
        "dir": env.node_dir(r),
        "block": env.block(),
        "p": r.spec,
    });
    if let (Some(base), serde_json::Value::Object(more)) = (ctx.as_object_mut(), extra) {
        base.extend(more);
    }
    Ok((name.to_string(), render(name, template, &ctx)?))
}

/// Renders `template` (named `name` in errors) with `context`.
pub fn render(name: &str, template: &str, context: &serde_json::Value) -> Result<String> {
    let ctx = tera::Context::from_value(context.clone()).context("template context")?;
    Tera::one_off(template, &ctx, false).with_context(|| format!("rendering {name}"))
}
