//! `scalectl alerts`: what Alertmanager delivered for an environment, each alert in its
//! latest state (firing first), read back from the target's receiver and folded by
//! `scalectl_core::alerts::fold` against the alerts Alertmanager still holds.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use scalectl_core::alerts::{self, Alert};
use serde::Serialize;

use super::Ctx;
use crate::output::{Format, json as print_json, print_table};

#[derive(Serialize)]
struct Report {
    firing: usize,
    alerts: Vec<Alert>,
}

/// `2026-12-07T10:00:00.123456789Z` as `2026-12-07 10:00:00Z`.
fn short(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    match t.split_once('.') {
        Some((whole, rest)) if rest.ends_with('Z') => format!("{whole}Z"),
        _ => t,
    }
}

pub fn alerts(ctx: &Ctx, name: &str, exit_code: bool) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let ops = provider.alerts().with_context(|| format!("the {} target keeps no alerts", provider.target()))?;
    let journal = ops.notifications().map_err(|e| anyhow!("{e}"))?;
    let list = alerts::fold(&journal, ops.active().as_deref());
    let report = Report { firing: list.iter().filter(|a| a.state == "firing").count(), alerts: list };
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&report, &mut out)?;
    } else if report.alerts.is_empty() {
        writeln!(out, "No alert has been delivered for {name}.")?;
    } else {
        let rows: Vec<Vec<String>> = report
            .alerts
            .iter()
            .map(|a| {
                vec![
                    a.state.clone(),
                    a.name.clone(),
                    a.severity.clone().unwrap_or_else(|| "-".into()),
                    short(&a.starts_at),
                    a.ends_at.as_deref().map_or("-".into(), short),
                    a.summary.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["STATE", "ALERT", "SEVERITY", "SINCE", "RESOLVED", "SUMMARY"], &rows, &mut out)?;
        if report.alerts.iter().any(|a| a.state == "ended") {
            writeln!(
                out,
                "\nended: Alertmanager no longer holds the alert, but no resolution was delivered (Prometheus or \
                 Alertmanager restarted while it fired)."
            )?;
        }
    }
    Ok(if exit_code && report.firing > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shortened_to_the_second() {
        assert_eq!(super::short("2026-12-07T10:00:00.123456789Z"), "2026-12-07 10:00:00Z");
        assert_eq!(super::short("2026-12-07T10:00:00Z"), "2026-12-07 10:00:00Z");
    }
}
