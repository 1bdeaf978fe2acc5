//! Commands that act on one environment: up, down, plan, status, logs, render.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use scalectl_core::plan::{Observed, plan as make_plan};
use scalectl_core::{Graph, Manifest, Readiness, Resource, Target};
use serde_json::json;

use super::{Ctx, check_runnable, desired, observe_all, provider, with_config_digests};
use crate::apply::block_on;
use crate::home::{State, now};
use crate::load::{ManifestArgs, load};
use crate::output::{Format, ago, json as print_json, print_plan, print_table};

/// The manifest to use: the one asked for, or the one the environment last applied.
fn manifest_for(args: &ManifestArgs, state: Option<&State>) -> Result<Manifest> {
    match state {
        Some(s) if !args.given() => Ok(s.manifest.clone()),
        _ => load(args, state.map(|s| s.level)),
    }
}

/// `--env`, or `level-N` from the level asked for.
fn env_name(env: Option<String>, args: &ManifestArgs) -> Result<String> {
    match (env, args.level) {
        (Some(e), _) => Ok(e),
        (None, Some(n)) => Ok(format!("level-{n}")),
        (None, None) if args.manifest.is_some() => bail!("name the environment with --env NAME"),
        (None, None) => bail!("say which environment with --env NAME, or which level with --level N"),
    }
}

pub fn up(ctx: &Ctx, args: &ManifestArgs, env: Option<String>, target: Option<Target>, ttl: Option<Duration>) -> Result<ExitCode> {
    let name = env_name(env, args)?;
    let _lock = ctx.home.lock(&name)?;
    let existing = ctx.home.load(&name)?;
    let manifest = manifest_for(args, existing.as_ref())?;
    let target = target.or(existing.as_ref().map(|s| s.target)).unwrap_or(Target::Local);
    if let Some(s) = &existing
        && s.target != target
    {
        bail!("environment `{name}` runs on {}, not {target}; `scalectl down --env {name}` first, or choose another --env", s.target);
    }
    // Expand once with a placeholder placement to find problems before claiming anything.
    let probe = desired(&manifest, &name, target, 0)?;
    let check = provider(ctx, &name, target, 0, probe.clone())?;
    check_runnable(check.as_ref(), &probe, manifest.metadata.level)?;

    let env_dir = ctx.home.env_dir(&name);
    std::fs::create_dir_all(&env_dir)?;
    let _ = std::fs::set_permissions(&env_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let slot = match &existing {
        Some(s) => s.slot,
        // Only local environments take loopback addresses.
        None if target == Target::Local => crate::driver::claim_slot(&env_dir)?,
        None => 0,
    };
    let graph = desired(&manifest, &name, target, slot)?;
    let mut state = existing.clone().unwrap_or_else(|| State::new(&name, target, slot, manifest.clone()));
    state.level = manifest.metadata.level;
    state.manifest = manifest.clone();
    state.updated_at = now();
    if let Some(ttl) = ttl {
        state.expires_at = Some(now() + ttl.as_secs());
    }
    // Record the environment before starting anything, so that `down` finds whatever a
    // killed `up` leaves behind.
    ctx.home.save(&state)?;

    let provider = provider(ctx, &name, target, slot, graph.clone())?;
    super::heal(ctx, &name, provider.as_ref())?;
    let graph = with_config_digests(provider.as_ref(), graph)?;
    let observed = observe_all(provider.as_ref(), &graph, Some(&state));
    let plan = make_plan(&graph, &state.resources, &observed);
    let summary = plan.summary();
    ctx.progress.say(&format!(
        "Environment `{name}` (level {}, {target}): {} to create, {} to change, {} to destroy, {} unchanged",
        manifest.metadata.level, summary.create, summary.change, summary.destroy, summary.unchanged
    ));
    for u in scalectl_core::topology::unused(&manifest, target).into_iter().chain(provider.unused_here(&graph)) {
        ctx.progress.say(&format!("note: {} ({}) is not used on {target}: {}", u.path, u.value, u.why));
    }
    let timeout = Duration::from_secs(u64::from(manifest.spec.targets.local.health_timeout_seconds));
    let provider = provider.as_ref();
    // A change to an environment that serves is measured by the pause it caused.
    let moving = existing.as_ref().is_some_and(|s| !s.resources.is_empty()) && plan.has_changes();
    let began = super::write_pause::epoch_now();
    let outcome = block_on(async {
        let outcome = crate::apply::execute(provider, &ctx.home, &mut state, &graph, &plan, timeout, &ctx.progress)
            .await
            .with_context(|| format!("`up` stopped; fix the cause and run `scalectl up --env {name}` again to resume"))?;
        // Everything, changed or not, must answer its health check before `up` is done.
        for r in &graph.resources {
            crate::apply::wait_ready(provider, r, timeout, &ctx.progress).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(outcome)
    })??;
    let failover = wait_for_failover_candidate(ctx, provider, timeout)?;
    let mut notes = outcome.notes;
    let pause = match provider.database().filter(|_| moving).map(|db| super::write_pause::measure(db, began, super::write_pause::epoch_now())) {
        Some(Ok(pause)) => pause,
        Some(Err(e)) => {
            notes.push(format!("the pause in orders while it changed could not be measured: {e:#}"));
            None
        }
        None => None,
    };
    state.updated_at = now();
    ctx.home.save(&state)?;
    for note in &notes {
        ctx.progress.say(&format!("note: {note}"));
    }
    let endpoints = provider.endpoints();
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(
            &json!({
                "environment": name,
                "level": state.level,
                "target": target,
                "changed": plan.has_changes(),
                "summary": summary,
                "seconds": ctx.progress.elapsed(),
                "expires_at": state.expires_at,
                "endpoints": endpoints,
                "notes": notes,
                "failover_candidates": failover.as_ref().map(|(c, _)| c),
                "failover_candidate_after_seconds": failover.as_ref().map(|(_, s)| s),
                "write_pause": pause,
            }),
            &mut out,
        )?,
        Format::Text => {
            writeln!(out, "Environment `{name}` is up (level {}, {target}) in {:.1}s.", state.level, ctx.progress.elapsed())?;
            if let Some((candidates, after)) = &failover {
                writeln!(out, "  failover candidates (synchronous standbys): {}, since {after:.1} s into `up`", candidates.join(", "))?;
            }
            if let Some(p) = &pause {
                writeln!(
                    out,
                    "  longest pause in acknowledged orders while it changed: {:.2} s ({} orders taken meanwhile)",
                    p.longest_seconds, p.orders
                )?;
            }
            for (k, v) in &endpoints {
                writeln!(out, "  {k:<12} {v}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An HA cluster is up only once another node could replace its leader (after a
/// promotion or a standby's return, Patroni lists no synchronous standby until one has
/// caught up); returns the candidates and when they were seen, in seconds into `up`.
fn wait_for_failover_candidate(ctx: &Ctx, provider: &dyn scalectl_core::Provider, timeout: Duration) -> Result<Option<(Vec<String>, f64)>> {
    let Some(db) = provider.database() else { return Ok(None) };
    let deadline = std::time::Instant::now() + timeout;
    let mut told = false;
    loop {
        let Some(insight) = db.insights().database else { return Ok(None) };
        match insight.no_failover_candidate {
            None if insight.failover_candidates.is_empty() => return Ok(None),
            None => return Ok(Some((insight.failover_candidates, ctx.progress.elapsed()))),
            Some(why) if std::time::Instant::now() >= deadline => {
                bail!("the database has no failover candidate after {} s: {why}", timeout.as_secs())
            }
            Some(why) if !told => {
                ctx.progress.say(&format!("waiting for a failover candidate: {why}"));
                told = true;
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn down(ctx: &Ctx, name: &str, keep_data: bool) -> Result<ExitCode> {
    let existed = destroy(ctx, name, keep_data)?;
    match ctx.format {
        Format::Json => print_json(&json!({"environment": name, "existed": existed, "kept_data": keep_data}), &mut std::io::stdout())?,
        Format::Text if !existed => println!("Environment `{name}` does not exist; nothing to do."),
        Format::Text => {
            let what = if keep_data { "stopped; data kept for the next `up`" } else { "destroyed" };
            println!("Environment `{name}` {what}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops every process of environment `name` and, unless `keep_data`, deletes it.
/// Returns whether there was such an environment.
pub fn destroy(ctx: &Ctx, name: &str, keep_data: bool) -> Result<bool> {
    let _lock = ctx.home.lock(name)?;
    let Some(mut state) = ctx.home.load(name)? else { return Ok(false) };
    let graph = desired(&state.manifest, name, state.target, state.slot).unwrap_or_default();
    // Destroy what is recorded and what was wanted: a killed `up` may have started a
    // process before recording it.
    let mut all: Vec<Resource> = graph.resources.clone();
    for r in state.resources.values() {
        if graph.get(&r.id).is_none() {
            all.insert(0, r.clone());
        }
    }
    let ordered = Graph::new(all.clone()).map(|g| g.resources).unwrap_or(all);
    let provider = provider(ctx, name, state.target, state.slot, Graph { resources: ordered.clone() })?;
    // Frozen processes would not stop, and rules would outlive the environment.
    if super::heal_faults(provider.as_ref()).is_ok() {
        super::chaos::journal_clear(ctx, name);
    }
    block_on(async {
        for r in ordered.iter().rev() {
            let t = ctx.progress.start(&r.id, if keep_data { "stopping" } else { "destroying" });
            provider.destroy(r, keep_data).await.map_err(|e| anyhow::anyhow!("destroying {}: {e}", r.id))?;
            ctx.progress.done(&r.id, if keep_data { "stopped" } else { "destroyed" }, t);
        }
        anyhow::Ok(())
    })??;
    if keep_data {
        state.updated_at = now();
        ctx.home.save(&state)?;
    } else {
        crate::driver::release_slot(state.slot, &ctx.home.env_dir(name));
        ctx.home.remove(name)?;
    }
    Ok(true)
}

pub fn plan(ctx: &Ctx, args: &ManifestArgs, env: Option<String>, target: Option<Target>, exit_code: bool) -> Result<ExitCode> {
    let name = env_name(env, args)?;
    crate::home::validate_name(&name)?;
    let state = ctx.home.load(&name)?;
    let manifest = manifest_for(args, state.as_ref())?;
    let target = target.or(state.as_ref().map(|s| s.target)).unwrap_or(Target::Local);
    let slot = state.as_ref().map_or(0, |s| s.slot);
    let graph = desired(&manifest, &name, target, slot)?;
    let recorded = state.as_ref().map(|s| s.resources.clone()).unwrap_or_default();
    let provider = provider(ctx, &name, target, slot, graph.clone())?;
    let graph = with_config_digests(provider.as_ref(), graph)?;
    let observed = if recorded.is_empty() {
        // Nothing recorded: nothing of ours can be running, so there is nothing to ask.
        BTreeMap::new()
    } else {
        observe_all(provider.as_ref(), &graph, state.as_ref())
    };
    let plan = make_plan(&graph, &recorded, &observed);
    let mut unused = scalectl_core::topology::unused(&manifest, target);
    unused.extend(provider.unused_here(&graph));
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(
            &json!({"environment": name, "level": manifest.metadata.level, "target": target, "changed": plan.has_changes(), "summary": plan.summary(), "steps": plan.steps, "unused": unused}),
            &mut out,
        )?,
        Format::Text => {
            print_plan(&plan, &name, &mut out)?;
            crate::output::print_unused(&unused, target, &mut out)?;
        }
    }
    Ok(if exit_code && plan.has_changes() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn existing(ctx: &Ctx, name: &str) -> Result<State> {
    crate::home::validate_name(name)?;
    ctx.home.load(name)?.with_context(|| format!("there is no environment `{name}`; `scalectl list` shows the ones there are"))
}

pub fn status(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let (state, provider) = super::open(ctx, name)?;
    let provider = provider.as_ref();
    let graph = Graph::new(state.resources.values().cloned().collect())?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut healthy_all = true;
    let seen: Vec<Observed> = graph.resources.iter().map(|r| provider.observe(r)).collect();
    // Every running resource's health check at once: one slow answer does not hold up
    // the rest.
    let checks = graph.resources.iter().zip(&seen).map(|(r, seen)| async move {
        match seen {
            Observed::Running { .. } | Observed::Drifted { .. } => provider.readiness(r).await == Readiness::Ready,
            _ => false,
        }
    });
    let ready = block_on(futures::future::join_all(checks))?;
    for ((r, seen), ok) in graph.resources.iter().zip(seen).zip(ready) {
        let (state_text, healthy, pid) = match &seen {
            Observed::Running { pid } => (if ok { "healthy" } else { "unhealthy" }.to_string(), ok, *pid),
            Observed::Down { reason } => (format!("down: {reason}"), false, None),
            Observed::Drifted { changes } => {
                let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
                (format!("{}, changed outside scalectl: {}", if ok { "healthy" } else { "unhealthy" }, fields.join(", ")), ok, None)
            }
            Observed::Unknown if r.kind.one_shot() => ("done".into(), true, None),
            Observed::Unknown => ("not running (optional)".into(), true, None),
        };
        healthy_all &= healthy;
        let uptime = pid.and_then(process_uptime);
        rows.push(vec![
            r.id.clone(),
            r.endpoint().unwrap_or_else(|| "-".into()),
            state_text.clone(),
            pid.map_or("-".into(), |p| p.to_string()),
            uptime.map_or("-".into(), ago),
        ]);
        items.push(
            json!({"id": r.id, "kind": r.kind, "address": r.endpoint(), "state": seen, "healthy": healthy, "pid": pid, "uptime_seconds": uptime}),
        );
    }
    let insights = provider.database().map(|d| d.insights()).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(
            &json!({"environment": name, "level": state.level, "target": state.target, "healthy": healthy_all, "components": items, "insights": insights}),
            &mut out,
        )?,
        Format::Text => {
            writeln!(
                out,
                "Environment `{name}`: level {}, {}, {}\n",
                state.level,
                state.target,
                if healthy_all { "healthy" } else { "NOT healthy" }
            )?;
            print_table(&["COMPONENT", "ADDRESS", "STATE", "PID", "UPTIME"], &rows, &mut out)?;
            super::data::print_insights(&insights, &mut out)?;
        }
    }
    Ok(if healthy_all { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Seconds since `pid` started, from /proc.
fn process_uptime(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    // Field 22 (starttime) is the 20th after the command name.
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    Some((uptime - start_ticks as f64 / 100.0).max(0.0) as u64)
}

pub fn logs(ctx: &Ctx, name: &str, component: &str, lines: usize) -> Result<ExitCode> {
    let state = existing(ctx, name)?;
    let matches: Vec<&Resource> = match state.resources.get(component) {
        Some(r) => vec![r],
        None => {
            let by_kind: Vec<&Resource> = state.resources.values().filter(|r| r.kind.as_str() == component).collect();
            if by_kind.len() == 1 { by_kind } else { state.resources.values().filter(|r| r.id.contains(component)).collect() }
        }
    };
    let r = match matches.as_slice() {
        [one] => *one,
        [] => bail!("no component matches `{component}`; components: {}", state.resources.keys().cloned().collect::<Vec<_>>().join(", ")),
        many => bail!("`{component}` matches several components: {}; name one", many.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")),
    };
    let graph = Graph::new(state.resources.values().cloned().collect())?;
    let provider = provider(ctx, name, state.target, state.slot, graph)?;
    let text = provider.logs(r, lines).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"component": r.id, "lines": text.lines().collect::<Vec<_>>()}), &mut out)?,
        Format::Text => writeln!(out, "{text}")?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn render(ctx: &Ctx, args: &ManifestArgs, env: Option<String>, target: Option<Target>, out_dir: &Path) -> Result<ExitCode> {
    let state = match &env {
        Some(n) => Some(existing(ctx, n)?),
        None => None,
    };
    let name = env.clone().unwrap_or_else(|| format!("level-{}", args.level.unwrap_or(0)));
    let manifest = manifest_for(args, state.as_ref())?;
    let target = target.or(state.as_ref().map(|s| s.target)).unwrap_or(Target::Local);
    if target == Target::Kubernetes {
        return render_objects(ctx, &manifest, &name, out_dir);
    }
    let slot = state.as_ref().map_or(0, |s| s.slot);
    let graph = desired(&manifest, &name, target, slot)?;
    let provider = provider(ctx, &name, target, slot, graph.clone())?;
    let mut written = Vec::new();
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let manifest_path = out_dir.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)?)?;
    written.push(manifest_path);
    for r in &graph.resources {
        let files = provider.config_files(r).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (file, text) in files {
            let dir = out_dir.join(r.id.replace('/', "-"));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    print_written(ctx, &written, &[])
}

/// `render --target kubernetes`: every object as YAML, one file per object named so that
/// `kubectl apply -f DIR` (which goes in file-name order) applies them in dependency order.
fn render_objects(ctx: &Ctx, manifest: &Manifest, name: &str, out_dir: &Path) -> Result<ExitCode> {
    let rendered = crate::driver::kubernetes_objects(manifest, name)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for (i, object) in rendered.objects.iter().enumerate() {
        let path = out_dir.join(object.file_name(i + 1));
        crate::driver::write_atomic(&path, crate::driver::yaml(&object.value).as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    print_written(ctx, &written, &rendered.notes)
}

fn print_written(ctx: &Ctx, written: &[PathBuf], notes: &[String]) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"files": written, "notes": notes}), &mut out)?,
        Format::Text => {
            for p in written {
                writeln!(out, "{}", p.display())?;
            }
            for n in notes {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
