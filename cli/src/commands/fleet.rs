//! Commands over every environment on this machine: list and gc.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::home::now;
use crate::output::{Format, ago, json as print_json, print_table};

pub fn list(ctx: &Ctx) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for name in ctx.home.list()? {
        let Some(s) = ctx.home.load(&name)? else { continue };
        let ttl = match s.expires_at {
            None => "-".to_string(),
            Some(t) if t <= now() => "expired".to_string(),
            Some(t) => ago(t - now()),
        };
        rows.push(vec![
            name.clone(),
            s.level.to_string(),
            s.target.to_string(),
            ago(now().saturating_sub(s.created_at)),
            ttl,
            s.resources.len().to_string(),
        ]);
        items.push(json!({"name": name, "level": s.level, "target": s.target, "created_at": s.created_at, "updated_at": s.updated_at, "expires_at": s.expires_at, "components": s.resources.len()}));
    }
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({ "environments": items }), &mut out)?,
        Format::Text if rows.is_empty() => writeln!(out, "No environments. Create one with `scalectl up --level 1`.")?,
        Format::Text => print_table(&["NAME", "LEVEL", "TARGET", "AGE", "TTL", "COMPONENTS"], &rows, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(ctx: &Ctx, dry_run: bool) -> Result<ExitCode> {
    let mut destroyed = Vec::new();
    let mut failed = Vec::new();
    for name in ctx.home.list()? {
        let Some(s) = ctx.home.load(&name)? else { continue };
        if s.expires_at.is_none_or(|t| t > now()) {
            continue;
        }
        if dry_run {
            destroyed.push(name);
            continue;
        }
        ctx.progress.say(&format!("Environment `{name}` expired; destroying it."));
        match super::env::destroy(ctx, &name, false) {
            Ok(_) => destroyed.push(name),
            Err(e) => {
                ctx.progress.say(&format!("could not destroy `{name}`: {e:#}"));
                failed.push(name);
            }
        }
    }
    // Environments whose directory was deleted without `down` (under any home) left
    // their processes on a loopback block that no command of theirs can reach.
    let abandoned = crate::driver::abandoned_slots(!dry_run)?;
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"destroyed": destroyed, "failed": failed, "abandoned": abandoned, "dry_run": dry_run}), &mut out)?,
        Format::Text if destroyed.is_empty() && failed.is_empty() && abandoned.is_empty() => writeln!(out, "No expired environments.")?,
        Format::Text => {
            let verb = if dry_run { "would destroy" } else { "destroyed" };
            for n in &destroyed {
                writeln!(out, "{verb} {n}")?;
            }
            for n in &failed {
                writeln!(out, "failed to destroy {n}")?;
            }
            let (stop, free) = if dry_run { ("would stop", "free") } else { ("stopped", "freed") };
            for a in &abandoned {
                writeln!(out, "{stop} {} processes of {} (deleted without `down`) and {free} 127.{}.0.0/16", a.processes.len(), a.owner, a.slot)?;
            }
        }
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
