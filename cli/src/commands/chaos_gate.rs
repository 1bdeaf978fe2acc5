//! `chaos gate`: the experiments an environment's manifest lists as gates
//! (`spec.chaos.gates`), each run once in turn, and one verdict over them: what a pipeline
//! runs before it promotes a change. A gate that cannot run (an unknown name, a level it
//! does not apply to, a system that never became steady) fails like one whose checks
//! failed: a gate never passes by not running.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::Ctx;
use crate::output::{Format, json as print_json};

/// Runs the gates of `env` (or `only`, when given) with the workload's `seed`.
pub fn gate(ctx: &Ctx, env: &str, only: &[String], seed: u64) -> Result<ExitCode> {
    let state = ctx.home.load(env)?.with_context(|| format!("there is no environment `{env}`; see `scalectl list`"))?;
    let gates = if only.is_empty() { state.manifest.spec.chaos.gates.clone() } else { only.to_vec() };
    if gates.is_empty() {
        bail!(
            "`{env}`'s manifest lists no chaos gates (spec.chaos.gates); name the experiments instead: `scalectl chaos gate --env {env} primary-loss`"
        );
    }
    let mut results = Vec::new();
    for (i, name) in gates.iter().enumerate() {
        ctx.progress.say(&format!("gate {} of {}: {name}", i + 1, gates.len()));
        let (verdict, why, report) = match super::chaos_run::run_once(ctx, env, name, seed) {
            Ok(report) if report["passed"] == true => ("passed", String::new(), report),
            Ok(report) => ("failed", failures(&report), report),
            Err(e) => ("failed", format!("did not run: {e:#}"), Value::Null),
        };
        ctx.progress.say(&format!("gate {name}: {verdict}{}", if why.is_empty() { String::new() } else { format!(" ({why})") }));
        results.push(json!({"gate": name, "result": verdict, "why": why, "report": report}));
    }
    let passed = results.iter().all(|r| r["result"] == "passed");
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&json!({"environment": env, "seed": seed, "passed": passed, "gates": results}), &mut out)?,
        Format::Text => {
            for r in &results {
                let result = r["result"].as_str().unwrap_or("").to_uppercase();
                writeln!(out, "{result:<7} {:<34} {}", r["gate"].as_str().unwrap_or(""), r["why"].as_str().unwrap_or(""))?;
            }
            let failed = results.iter().filter(|r| r["result"] != "passed").count();
            match failed {
                0 => writeln!(out, "All {} gates passed on `{env}`.", results.len())?,
                n => writeln!(out, "{n} of {} gates failed on `{env}`; `scalectl chaos run NAME --env {env}` shows one in full.", results.len())?,
            }
        }
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The failed checks of a run's report, one line: `orders: 2 acknowledged orders lost; …`.
fn failures(report: &Value) -> String {
    let mut out: Vec<String> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["verdict"] != "pass")
        .map(|c| format!("{}: {}", c["check"].as_str().unwrap_or("?"), c["summary"].as_str().unwrap_or("")))
        .collect();
    if report["steady_state_after"] == false {
        out.push("the steady state did not return".into());
    }
    if out.is_empty() { "failed".into() } else { out.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_names_its_failed_checks_and_a_lost_steady_state() {
        let report = json!({
            "passed": false,
            "steady_state_after": false,
            "checks": [
                {"check": "orders", "verdict": "fail", "summary": "2 acknowledged orders lost"},
                {"check": "stock", "verdict": "pass", "summary": "no oversell"},
            ],
        });
        assert_eq!(failures(&report), "orders: 2 acknowledged orders lost; the steady state did not return");
    }
}
