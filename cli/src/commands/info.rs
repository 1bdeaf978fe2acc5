//! Commands that read manifests and the machine without touching any environment:
//! levels, explain, validate, schema, doctor.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::driver::{Program, tools};
use anyhow::Result;
use scalectl_core::levels::{LEVELS, level};
use scalectl_core::{Diagnostic, Manifest, ResourceKind, Sources, Target};
use serde_json::json;

use super::Ctx;
use crate::load::{Invalid, ManifestArgs, load, load_file};
use crate::output::{Format, json as print_json, print_table};

fn builtin(n: u8) -> Manifest {
    let l = level(n).expect("levels 1-6 exist");
    Sources::new(l.file, l.manifest).load().expect("built-in manifests are valid (a unit test checks)")
}

/// The facts of a level that `levels` and `explain` compare.
fn facts(m: &Manifest) -> Vec<(&'static str, String)> {
    let s = &m.spec;
    let pg = &s.postgres;
    let shop: u32 = s.shop.roles.iter().map(|r| u32::from(r.replicas)).sum();
    vec![
        ("target load", format!("{} RPS", s.target_load.rps)),
        ("regions", s.regions.len().to_string()),
        ("postgres nodes", (1 + pg.replicas.synchronous + pg.replicas.asynchronous).to_string()),
        ("replication", format!("{} sync, {} async", pg.replicas.synchronous, pg.replicas.asynchronous)),
        ("ha", format!("{:?}", pg.ha).to_lowercase()),
        ("pooler", format!("{:?}", pg.pooler.kind).to_lowercase()),
        ("orders partitioning", format!("{:?}", pg.partitioning.orders).to_lowercase()),
        ("citus workers", if pg.citus.enabled { pg.citus.workers.to_string() } else { "-".into() }),
        ("redis", if s.redis.enabled { "yes".into() } else { "no".into() }),
        ("shop topology", format!("{:?}", s.shop.topology).to_lowercase()),
        ("shop processes", shop.to_string()),
        ("outbox workers", s.shop.workers.to_string()),
        ("load balancer", format!("{:?}", s.edge.load_balancer).to_lowercase()),
        ("slo p95", format!("{} ms", s.slos.latency_p95_ms)),
        ("slo error ratio", format!("{}", s.slos.error_ratio)),
    ]
}

pub fn levels(ctx: &Ctx) -> Result<ExitCode> {
    let all: Vec<Manifest> = (1..=6).map(builtin).collect();
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        let items: Vec<_> = LEVELS
            .iter()
            .zip(&all)
            .map(|(l, m)| {
                let f: serde_json::Map<String, serde_json::Value> = facts(m).into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                json!({"level": l.number, "title": l.title, "stage": l.stage, "facts": f})
            })
            .collect();
        print_json(&json!({"levels": items}), &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<&str> = facts(&all[0]).iter().map(|(k, _)| *k).collect();
    let mut headers = vec![""];
    let titles: Vec<String> = (1..=6).map(|n| format!("LEVEL {n}")).collect();
    headers.extend(titles.iter().map(String::as_str));
    let per_level: Vec<Vec<(&str, String)>> = all.iter().map(facts).collect();
    let rows: Vec<Vec<String>> =
        names.iter().enumerate().map(|(i, k)| std::iter::once(k.to_string()).chain(per_level.iter().map(|f| f[i].1.clone())).collect()).collect();
    print_table(&headers, &rows, &mut out)?;
    writeln!(out, "\n`scalectl explain --level N` says what a level adds and why.")?;
    Ok(ExitCode::SUCCESS)
}

pub fn explain(ctx: &Ctx, n: u8) -> Result<ExitCode> {
    let l = level(n).expect("clap limits the range");
    let m = builtin(n);
    let below = (n > 1).then(|| builtin(n - 1));
    let changed: Vec<(&str, Option<String>, String)> = facts(&m)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (k, v))| {
            let before = below.as_ref().map(|b| facts(b)[i].1.clone());
            (before.as_ref() != Some(&v)).then_some((k, before, v))
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        let adds: Vec<_> = l.adds.iter().map(|(what, why)| json!({"what": what, "why": why})).collect();
        let ch: Vec<_> = changed.iter().map(|(k, b, v)| json!({"fact": k, "before": b, "now": v})).collect();
        print_json(&json!({"level": n, "title": l.title, "stage": l.stage, "adds": adds, "changes": ch}), &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "Level {n}: {} ({}, {} RPS)\n", l.title, l.stage, m.spec.target_load.rps)?;
    let over = if n == 1 { "What it has".to_string() } else { format!("What it adds over level {}", n - 1) };
    writeln!(out, "{over}, and why:")?;
    for (what, why) in l.adds {
        writeln!(out, "  • {what}\n      {why}")?;
    }
    writeln!(out, "\nIn numbers:")?;
    for (k, before, now) in &changed {
        match before {
            Some(b) => writeln!(out, "  {k:<20} {b} → {now}")?,
            None => writeln!(out, "  {k:<20} {now}")?,
        }
    }
    writeln!(out, "\nTry it: scalectl up --level {n}    The manifest: {}", l.file)?;
    Ok(ExitCode::SUCCESS)
}

pub fn validate(ctx: &Ctx, files: &[PathBuf], args: &ManifestArgs) -> Result<ExitCode> {
    let mut results: Vec<(String, Vec<Diagnostic>)> = Vec::new();
    if files.is_empty() || args.given() {
        let label = args.manifest.as_ref().map_or_else(|| format!("level {}", args.level.unwrap_or(0)), |p| p.display().to_string());
        match load(args, None) {
            Ok(_) => results.push((label, Vec::new())),
            Err(e) => match e.downcast::<Invalid>() {
                Ok(Invalid(d)) => results.push((label, d)),
                Err(e) => return Err(e),
            },
        }
    }
    for f in files {
        let d = load_file(f)?.err().unwrap_or_default();
        results.push((f.display().to_string(), d));
    }
    Ok(crate::output::print_validation(&results, ctx.format, &mut std::io::stdout().lock())?)
}

pub fn schema() -> Result<ExitCode> {
    print_json(&scalectl_core::manifest::json_schema(), &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// Programs the given kinds need that this machine lacks (optional ones excluded).
pub fn missing_programs(kinds: impl Iterator<Item = ResourceKind>) -> Vec<Program> {
    let kinds: BTreeSet<ResourceKind> = kinds.collect();
    let mut seen = BTreeSet::new();
    kinds.into_iter().flat_map(tools::requirements).filter(|p| !p.optional && seen.insert(p.name) && tools::find(p.name).is_none()).collect()
}

/// The command that installs `missing`.
pub fn install_advice(missing: &[Program]) -> String {
    let packages: BTreeSet<&str> = missing.iter().filter(|p| !p.install.contains(' ')).map(|p| p.install).collect();
    let mut advice = Vec::new();
    if !packages.is_empty() {
        advice.push(format!("install with `apt-get install -y {}`", packages.into_iter().collect::<Vec<_>>().join(" ")));
    }
    for p in missing.iter().filter(|p| p.install.contains(' ')) {
        advice.push(format!("for {}: {}", p.name, p.install));
    }
    advice.join("; ")
}

/// `doctor --target kubernetes`: each context the levels name, its API server, the
/// CloudNativePG CRDs and the ingress class; exit 1 when something is missing.
fn doctor_kubernetes(ctx: &Ctx, levels: &[u8]) -> Result<ExitCode> {
    let manifests: Vec<(u8, Manifest)> = levels.iter().map(|n| (*n, builtin(*n))).collect();
    let refs: Vec<(u8, &Manifest)> = manifests.iter().map(|(n, m)| (*n, m)).collect();
    let findings = crate::driver::kubernetes_doctor(&refs);
    let ok = findings.iter().all(|f| f.ok);
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"ok": ok, "checks": findings}), &mut out)?,
        Format::Text => {
            let rows: Vec<Vec<String>> = findings
                .iter()
                .map(|f| vec![f.context.clone(), f.check.clone(), if f.ok { "ok".into() } else { "MISSING".into() }, f.detail.clone()])
                .collect();
            print_table(&["CONTEXT", "CHECK", "STATE", "FOUND OR HOW TO FIX"], &rows, &mut out)?;
            writeln!(
                out,
                "{}",
                if ok {
                    "\nThe clusters have what the levels need."
                } else {
                    "\nFix what is MISSING, then run `scalectl doctor --target kubernetes` again."
                }
            )?;
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn doctor(ctx: &Ctx, only: Option<u8>, target: Target) -> Result<ExitCode> {
    let levels: Vec<u8> = only.map_or_else(|| (1..=6).collect(), |n| vec![n]);
    match target {
        Target::Local => {}
        Target::Kubernetes => return doctor_kubernetes(ctx, &levels),
        Target::Aws => anyhow::bail!("doctor knows the local and kubernetes targets so far; aws is not implemented yet"),
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut missing_any = false;
    for n in &levels {
        let graph = crate::driver::desired(&builtin(*n), &format!("level-{n}"), target, 0)?;
        let kinds: BTreeSet<ResourceKind> = graph.resources.iter().map(|r| r.kind).collect();
        let mut seen = BTreeSet::new();
        for p in kinds.iter().flat_map(|k| tools::requirements(*k)) {
            if !seen.insert(p.name) {
                continue;
            }
            let found = tools::find(p.name);
            missing_any |= found.is_none() && !p.optional;
            let state = match (&found, p.optional) {
                (Some(_), _) => "ok",
                (None, true) => "missing (optional)",
                (None, false) => "MISSING",
            };
            rows.push(vec![
                n.to_string(),
                p.name.to_string(),
                state.to_string(),
                found.as_ref().map_or_else(|| p.install.to_string(), |f| f.display().to_string()),
            ]);
            items.push(json!({"level": n, "program": p.name, "found": found, "optional": p.optional, "install": p.install}));
        }
    }
    let missing: Vec<Program> = {
        let mut kinds = BTreeSet::new();
        for n in &levels {
            kinds.extend(crate::driver::desired(&builtin(*n), &format!("level-{n}"), target, 0)?.resources.iter().map(|r| r.kind));
        }
        missing_programs(kinds.into_iter())
    };
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"ok": !missing_any, "programs": items, "advice": install_advice(&missing)}), &mut out)?,
        Format::Text => {
            print_table(&["LEVEL", "PROGRAM", "STATE", "PATH OR HOW TO INSTALL"], &rows, &mut out)?;
            if missing_any {
                writeln!(out, "\nTo fix: {}", install_advice(&missing))?;
            } else {
                writeln!(out, "\nEverything needed is installed.")?;
            }
        }
    }
    Ok(if missing_any { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
