//! One module per group of commands: `env` acts on one environment, `data` asks and
//! operates its database tier, `queue` its event queue, `fleet` acts on all of them,
//! `info` reads manifests and the machine without touching any environment.

pub mod alerts;
pub mod chaos;
pub mod chaos_gate;
pub mod chaos_run;
pub mod data;
pub mod env;
pub mod fleet;
pub mod info;
pub mod load;
pub mod queue;
pub mod write_pause;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use scalectl_core::ops::{ChaosOps, DatabaseOps};
use scalectl_core::plan::Observed;
use scalectl_core::{Graph, Manifest, Provider, ResourceKind, Target};

use crate::home::{Home, State};
use crate::output::{Format, Progress};

/// What every command gets from the global flags.
pub struct Ctx {
    pub home: Home,
    pub format: Format,
    pub progress: Progress,
    /// `up --force-conflicts`: take over fields another manager owns (kubernetes).
    pub force_conflicts: bool,
}

/// The desired graph of `manifest` on `target`, placed in the environment's `slot`.
pub fn desired(manifest: &Manifest, name: &str, target: Target, slot: u8) -> Result<Graph> {
    crate::driver::desired(manifest, name, target, slot)
}

/// The provider for environment `name` on `target`.
pub fn provider(ctx: &Ctx, name: &str, target: Target, slot: u8, graph: Graph) -> Result<Box<dyn Provider>> {
    crate::driver::provider(&ctx.home.env_dir(name), name, target, slot, graph, ctx.force_conflicts)
}

/// An existing environment's state and a provider for what it recorded.
pub fn open(ctx: &Ctx, name: &str) -> Result<(State, Box<dyn Provider>)> {
    crate::home::validate_name(name)?;
    let state = ctx.home.load(name)?.with_context(|| format!("there is no environment `{name}`; `scalectl list` shows the ones there are"))?;
    let graph = Graph::new(state.resources.values().cloned().collect())?;
    let provider = provider(ctx, name, state.target, state.slot, graph)?;
    heal(ctx, name, provider.as_ref())?;
    Ok((state, provider))
}

/// Finishes any rollback a chaos run left pending, and says so. Faults that someone
/// injected on purpose (`chaos inject` without `--for`), or that a live `chaos run`
/// holds, are left alone: only those whose owner is gone are undone.
pub fn heal(ctx: &Ctx, name: &str, provider: &dyn Provider) -> Result<()> {
    if chaos::journal_holds(ctx, name) {
        return Ok(());
    }
    if let Some(note) = heal_faults(provider).map_err(|e| anyhow::anyhow!("undoing chaos faults: {e}"))? {
        ctx.progress.say(&note);
    }
    chaos::journal_clear(ctx, name);
    Ok(())
}

/// The target's database operations, or an error that says the target has none.
pub fn database(provider: &dyn Provider) -> Result<&dyn DatabaseOps> {
    provider.database().with_context(|| format!("database operations are not available on the {} target", provider.target()))
}

/// One SQL statement whose answer is a single JSON value, read as `T`; errors name
/// `what` was read and, when it is not what was expected, the answer itself.
pub fn db_json<T: serde::de::DeserializeOwned>(db: &dyn DatabaseOps, sql: &str, what: &str) -> Result<T> {
    let text = db.query(sql).map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("reading {what}"))?;
    serde_json::from_str(text.trim()).with_context(|| format!("reading {what} from the database's answer `{}`", text.trim()))
}

/// The target's chaos faults, or an error that says the target has none.
pub fn chaos_ops(provider: &dyn Provider) -> Result<&dyn ChaosOps> {
    provider.chaos().with_context(|| format!("chaos faults are not available on the {} target", provider.target()))
}

/// Undoes lingering faults where the target can inject them; nothing to do elsewhere.
pub fn heal_faults(provider: &dyn Provider) -> Result<Option<String>, scalectl_core::ProviderError> {
    provider.chaos().map_or(Ok(None), ChaosOps::heal)
}

/// Adds to each resource a digest of its generated config files, so that a change in a
/// template (a newer scalectl) shows up in the plan like any other change, and of the
/// program it runs when that is ours, so that a rebuilt shop is rolled out.
pub fn with_config_digests(provider: &dyn Provider, mut graph: Graph) -> Result<Graph> {
    use sha2::Digest;
    for r in &mut graph.resources {
        if let Some(d) = provider.program_digest(r) {
            r.digests.insert("program_digest".into(), d);
        }
        let files = provider.config_files(r).map_err(|e| anyhow::anyhow!("{e}"))?;
        if files.is_empty() {
            continue;
        }
        let mut h = sha2::Sha256::new();
        for (name, text) in files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
        }
        r.digests.insert("config_digest".into(), hex::encode(&h.finalize()[..6]));
    }
    Ok(graph)
}

/// What is running now for every resource that is recorded or wanted.
pub fn observe_all(provider: &dyn Provider, graph: &Graph, state: Option<&State>) -> BTreeMap<String, Observed> {
    let mut out = BTreeMap::new();
    let recorded = state.map(|s| s.resources.values().collect::<Vec<_>>()).unwrap_or_default();
    for r in graph.resources.iter().chain(recorded) {
        if !out.contains_key(&r.id) {
            out.insert(r.id.clone(), provider.observe(r));
        }
    }
    out
}

/// Fails early, before anything starts, when the target cannot run part of the graph or
/// a program is missing; the message says what to install.
pub fn check_runnable(provider: &dyn Provider, graph: &Graph, level: u8) -> Result<()> {
    let mut unsupported: Vec<ResourceKind> = graph.resources.iter().map(|r| r.kind).filter(|k| !provider.supports(*k)).collect();
    unsupported.dedup();
    unsupported.sort();
    unsupported.dedup();
    if provider.target() == Target::Local && level > 5 {
        bail!(
            "level {level} does not run on the local target yet: it needs several regions and Citus shards; \
             levels 1 to 5 run locally, and `scalectl plan --level {level}` shows the whole topology"
        );
    }
    if !unsupported.is_empty() {
        let names: Vec<_> = unsupported.iter().map(|k| k.as_str()).collect();
        bail!(
            "level {level} needs {} on the {} target, which scalectl cannot run there; levels 1 to 5 run locally, \
             and `scalectl plan` shows the whole topology",
            names.join(", "),
            provider.target()
        );
    }
    let problems = provider.preflight(graph);
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if provider.target() == Target::Local {
        let missing = info::missing_programs(graph.resources.iter().map(|r| r.kind));
        if !missing.is_empty() {
            let names: Vec<_> = missing.iter().map(|p| p.name).collect();
            bail!("missing programs: {}; {}", names.join(", "), info::install_advice(&missing));
        }
    }
    Ok(())
}
