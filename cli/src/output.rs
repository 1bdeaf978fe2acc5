//! How results reach people and machines: plans the way Terraform prints them, tables,
//! JSON for `-o json`, and progress lines on stderr for long work.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use scalectl_core::Target;
use scalectl_core::plan::{Action, Plan};
use scalectl_core::topology::Unused;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Progress of long work, one line per event on stderr (stdout stays for results).
pub struct Progress {
    quiet: bool,
    color: bool,
    started: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet, color: std::io::stderr().is_terminal(), started: Instant::now() }
    }

    pub fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    pub fn start(&self, id: &str, verb: &str) -> Instant {
        if !self.quiet {
            eprintln!("  {} {id} {verb}…", self.paint("…", "2"));
        }
        Instant::now()
    }

    pub fn done(&self, id: &str, verb: &str, since: Instant) {
        if !self.quiet {
            eprintln!("  {} {id} {verb} in {:.1}s", self.paint("✓", "32"), since.elapsed().as_secs_f64());
        }
    }

    pub fn failed(&self, id: &str) {
        if !self.quiet {
            eprintln!("  {} {id} failed", self.paint("✗", "31"));
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn paint(&self, s: &str, code: &str) -> String {
        if self.color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
}

/// The plan as a Terraform user reads it.
pub fn print_plan(plan: &Plan, env: &str, out: &mut impl Write) -> std::io::Result<()> {
    if !plan.has_changes() {
        writeln!(out, "No changes. Environment `{env}` matches its manifest and every component is running.")?;
        return Ok(());
    }
    writeln!(out, "scalectl will perform these actions on environment `{env}`:\n")?;
    for step in plan.steps.iter().filter(|s| s.action != Action::Keep) {
        let what = match step.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Start => "start",
            Action::Rerun => "re-run",
            Action::Destroy => "destroy",
            Action::Keep => "keep",
        };
        writeln!(out, "  {} {:<34} {what}: {}", step.action.sign(), step.id, step.reason)?;
        for c in &step.changes {
            writeln!(out, "      ~ {}: {} → {}", c.field, c.from.as_deref().unwrap_or("(none)"), c.to.as_deref().unwrap_or("(none)"))?;
        }
    }
    let s = plan.summary();
    writeln!(out, "\nPlan: {} to create, {} to change, {} to destroy, {} unchanged.", s.create, s.change, s.destroy, s.unchanged)
}

/// Manifest settings the target does not act on, after the plan, so that none looks
/// effective when it is not.
pub fn print_unused(unused: &[Unused], target: Target, out: &mut impl Write) -> std::io::Result<()> {
    if unused.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nNot used on the {target} target:")?;
    for u in unused {
        writeln!(out, "  {} ({}): {}", u.path, u.value, u.why)?;
    }
    Ok(())
}

/// A table with aligned columns.
pub fn print_table(headers: &[&str], rows: &[Vec<String>], out: &mut impl Write) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `text` cut to at most `width` characters for a table cell, ending in `…` when cut.
pub fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() > width { text.chars().take(width.saturating_sub(1)).chain(['…']).collect() } else { text.to_string() }
}

/// `3m12s`, `2h05m`, `4d03h`: short and readable.
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn json(value: &impl serde::Serialize, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// The results of validating several sources (manifests, experiments): each one's
/// problems with their locations, or `valid`. Returns the exit code: 1 when any has one.
pub fn print_validation(
    results: &[(String, Vec<scalectl_core::Diagnostic>)],
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<std::process::ExitCode> {
    let problems: usize = results.iter().map(|(_, d)| d.len()).sum();
    match format {
        Format::Json => {
            let items: Vec<_> = results
                .iter()
                .map(|(name, d)| serde_json::json!({"source": name, "valid": d.is_empty(), "errors": d.iter().map(scalectl_core::Diagnostic::to_json).collect::<Vec<_>>()}))
                .collect();
            json(&serde_json::json!({"valid": problems == 0, "results": items}), out)?;
        }
        Format::Text => {
            for (name, d) in results {
                if d.is_empty() {
                    writeln!(out, "{name}: valid")?;
                }
                for e in d {
                    writeln!(out, "{e}")?;
                }
            }
            if problems > 0 {
                writeln!(out, "{problems} problem{} found", if problems == 1 { "" } else { "s" })?;
            }
        }
    }
    Ok(if problems == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shorten_counts_characters_not_bytes() {
        assert_eq!(super::shorten("äöü", 3), "äöü");
        assert_eq!(super::shorten("äöüß", 3), "äö…");
    }
}
