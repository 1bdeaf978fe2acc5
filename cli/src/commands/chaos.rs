//! `scalectl chaos`: the shipped experiments (`list`), checking experiment files
//! (`validate`), and faults by hand (`inject`, `heal`). Faults that outlive the command
//! are recorded in the environment's fault journal (`chaos-faults.json`): a fault whose
//! owner is gone (an interrupted run) is undone by the next command on the environment,
//! one injected on purpose stays until `chaos heal`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use scalectl_chaos::SHIPPED;
use scalectl_core::fault::{FaultKind, Selector};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Ctx;
use crate::output::{Format, json as print_json, print_table};

/// Who holds the faults recorded for an environment.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// The process that will undo them (a running `chaos inject --for` or `chaos run`);
    /// None when they were injected to stay until `chaos heal`.
    owner_pid: Option<u32>,
    faults: Vec<String>,
}

fn journal_path(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.home.env_dir(name).join("chaos-faults.json")
}

/// Whether recorded faults must be left alone: injected on purpose, or held by a live
/// process.
pub fn journal_holds(ctx: &Ctx, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(journal_path(ctx, name)) else { return false };
    let Ok(j) = serde_json::from_str::<Journal>(&text) else { return false };
    match j.owner_pid {
        None => true,
        Some(pid) => pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists(),
    }
}

pub fn journal_clear(ctx: &Ctx, name: &str) {
    let _ = std::fs::remove_file(journal_path(ctx, name));
}

pub fn journal_add(ctx: &Ctx, name: &str, owner_pid: Option<u32>, fault: String) -> Result<()> {
    let path = journal_path(ctx, name);
    let mut j =
        std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<Journal>(&t).ok()).unwrap_or(Journal { owner_pid, faults: vec![] });
    j.owner_pid = owner_pid;
    j.faults.push(fault);
    std::fs::write(&path, serde_json::to_vec_pretty(&j)?).with_context(|| format!("writing {}", path.display()))
}

pub fn list(ctx: &Ctx) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for s in SHIPPED {
        let e = scalectl_chaos::load(s.file, s.text).map_err(|d| anyhow!("shipped experiment {} is invalid: {}", s.name, d[0]))?;
        let faults: Vec<&str> = e.method.iter().map(|f| f.kind.as_str()).collect();
        let levels: Vec<String> = e.levels.iter().map(u8::to_string).collect();
        rows.push(vec![s.name.to_string(), levels.join(","), faults.join(", "), e.metadata.description.clone()]);
        items.push(json!({"name": s.name, "file": s.file, "levels": e.levels, "faults": faults, "description": e.metadata.description}));
    }
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"experiments": items}), &mut out)?,
        Format::Text => print_table(&["EXPERIMENT", "LEVELS", "FAULTS", "DESCRIPTION"], &rows, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// An experiment by file path, or by the name of a shipped one.
pub fn read(arg: &str) -> Result<(String, String)> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok((arg.to_string(), std::fs::read_to_string(path).with_context(|| format!("reading {arg}"))?));
    }
    let s = SHIPPED.iter().find(|s| s.name == arg).with_context(|| {
        let names: Vec<&str> = SHIPPED.iter().map(|s| s.name).collect();
        format!("`{arg}` is neither a file nor a shipped experiment ({})", names.join(", "))
    })?;
    Ok((s.file.to_string(), s.text.to_string()))
}

pub fn validate(ctx: &Ctx, files: &[String]) -> Result<ExitCode> {
    let mut results = Vec::new();
    for f in files {
        let (label, text) = read(f)?;
        results.push((label.clone(), scalectl_chaos::load(&label, &text).err().unwrap_or_default()));
    }
    Ok(crate::output::print_validation(&results, ctx.format, &mut std::io::stdout().lock())?)
}

/// One fault by hand. With `hold`, it is undone after that long (and by the next
/// command if this one is killed); without, it stays until `chaos heal`.
pub fn inject(ctx: &Ctx, name: &str, kind: FaultKind, targets: &[Selector], hold: Option<Duration>) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let lingers = matches!(kind, FaultKind::Freeze | FaultKind::Partition);
    if lingers {
        // Recorded before it happens, so a kill right after leaves a trace to undo.
        let sides: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
        journal_add(ctx, name, hold.map(|_| std::process::id()), format!("{kind} {}", sides.join(" | ")))?;
    }
    let what = super::chaos_ops(provider.as_ref())?.inject(kind, targets).map_err(|e| anyhow!("{e}"))?;
    ctx.progress.say(&format!("chaos: {what}"));
    let mut healed = None;
    if let Some(d) = hold {
        std::thread::sleep(d);
        healed = super::heal_faults(provider.as_ref()).map_err(|e| anyhow!("{e}"))?;
        journal_clear(ctx, name);
        if let Some(n) = &healed {
            ctx.progress.say(&format!("chaos: {n}"));
        }
    } else if lingers {
        ctx.progress.say(&format!("chaos: the fault stays until `scalectl chaos heal --env {name}`"));
    }
    if ctx.format == Format::Json {
        print_json(
            &json!({"environment": name, "fault": kind, "targets": targets, "did": what, "held_seconds": hold.map(|d| d.as_secs_f64()), "undone": healed}),
            &mut std::io::stdout(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn heal(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let note = super::heal_faults(provider.as_ref()).map_err(|e| anyhow!("{e}"))?;
    journal_clear(ctx, name);
    match ctx.format {
        Format::Json => print_json(&json!({"environment": name, "undone": note}), &mut std::io::stdout())?,
        Format::Text => println!("{}", note.unwrap_or_else(|| format!("Nothing to undo on `{name}`."))),
    }
    Ok(ExitCode::SUCCESS)
}
