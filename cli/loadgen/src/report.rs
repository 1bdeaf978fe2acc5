//! What `scalectl load` tells people and machines: the report (also its `-o json`), the
//! text summary, and a self-contained HTML page with inline SVG charts (latency over
//! time and the percentile curve of each endpoint).

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::engine::Run;
use crate::flash::{Check, FlashOutcome};
use crate::shop::SetupStats;
use crate::slo::{Verdict, num};
use crate::stats::RowReport;

/// Everything one `scalectl load` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: Option<String>,
    pub url: String,
    pub scenario: String,
    pub seed: u64,
    pub setup: Option<SetupStats>,
    pub run: Run,
    /// The verdict against the level's SLOs (not for a flash sale).
    pub slos: Option<Verdict>,
    pub flash: Option<FlashSummary>,
}

/// A flash sale's outcome and its checks.
#[derive(Debug, Clone, Serialize)]
pub struct FlashSummary {
    #[serde(flatten)]
    pub outcome: FlashOutcome,
    pub database_checked: bool,
    pub checks: Vec<Check>,
    pub passed: bool,
}

impl Report {
    /// Whether every SLO and every check was met.
    pub fn passed(&self) -> bool {
        self.slos.as_ref().is_none_or(|v| v.met) && self.flash.as_ref().is_none_or(|f| f.passed)
    }

    /// One line per missed SLO or failed check, naming it.
    pub fn failures(&self) -> Vec<String> {
        let slos = self.slos.iter().flat_map(|v| v.missed()).map(|c| format!("SLO {} missed: {} (measured {})", c.slo, c.objective, num(c.measured)));
        let checks = self.flash.iter().flat_map(|f| &f.checks).filter(|c| !c.met).map(|c| format!("check failed: {}: {}", c.check, c.detail));
        slos.chain(checks).collect()
    }
}

fn opt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.1}"))
}

/// The summary for people.
pub fn text(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let run = &r.run;
    let env = r.environment.as_deref().map(|e| format!(" on {e}")).unwrap_or_default();
    writeln!(out, "scalectl load: {}{env} ({}), seed {}", r.scenario, r.url, r.seed)?;
    if let Some(s) = &r.setup {
        writeln!(
            out,
            "setup: {:.1} s (not measured): {} buyers reused, {} logged in, {} registered; {} products created",
            s.seconds, s.reused, s.logged_in, s.registered, s.products_created
        )?;
    }
    let target = match run.target_rate {
        Some(t) => format!("offered {:.1} req/s of {} target ({:?})", run.offered_rate, num(t), run.arrivals).to_lowercase(),
        None => format!("{} requests at one instant", run.scheduled),
    };
    writeln!(
        out,
        "{target}; {} scheduled, {} started, {} never started, {} late (> {} ms after their due time; start delay p50 {:.2} / p99 {:.2} / max {:.2} ms); {} retries; {} connections; {:.1} s{}",
        run.scheduled,
        run.started,
        run.not_started,
        run.late,
        num(run.late_after_ms),
        run.start_delay_ms.p50,
        run.start_delay_ms.p99,
        run.start_delay_ms.max,
        run.retries,
        run.connections,
        run.seconds,
        if run.interrupted { " (interrupted)" } else { "" }
    )?;
    writeln!(out, "latency in ms, measured from each request's scheduled start\n")?;
    let w = run.rows.iter().map(|row| row.name.len()).max().unwrap_or(0).max(8);
    write!(out, "{:<w$}", HEADERS[0])?;
    for h in &HEADERS[1..HEADERS.len() - 1] {
        write!(out, " {h:>8}")?;
    }
    writeln!(out)?;
    for row in shown(run) {
        let cells = cells(row);
        write!(out, "{:<w$}", cells[0])?;
        for c in &cells[1..] {
            write!(out, " {c:>8}")?;
        }
        writeln!(out)?;
    }
    let errors: Vec<String> =
        run.rows.iter().filter(|row| !row.error_statuses.is_empty()).map(|row| format!("{}: {}", row.name, errors_by_status(row))).collect();
    if !errors.is_empty() {
        writeln!(out, "\nerrors by status:")?;
        for e in errors {
            writeln!(out, "  {e}")?;
        }
    }
    if !run.retried_statuses.is_empty() {
        writeln!(
            out,
            "\nretried (unknown outcome, sent again with the same key): {}",
            run.retried_statuses.iter().map(|(s, n)| format!("{s} ×{n}")).collect::<Vec<_>>().join(", ")
        )?;
    }
    if let Some(f) = &r.flash {
        let o = &f.outcome;
        writeln!(
            out,
            "\nflash sale {}: {} units, {} buyers: {} won, {} sold out, {} without an answer; {} remaining",
            o.sale_id, o.units, o.buyers, o.won, o.sold_out, o.unknown, o.remaining
        )?;
        if !f.database_checked {
            writeln!(out, "  (the database was not reachable from here; checked through the shop only)")?;
        }
        for c in &f.checks {
            writeln!(out, "  {} {}: {}", if c.met { "ok  " } else { "FAIL" }, c.check, c.detail)?;
        }
    }
    if let Some(v) = &r.slos {
        writeln!(out, "\nSLOs: {}", if v.met { "met" } else { "MISSED" })?;
        for c in &v.checks {
            writeln!(out, "  {} {:<13} {:<28} measured {}", if c.met { "ok  " } else { "MISS" }, c.slo, c.objective, num(c.measured))?;
        }
    }
    Ok(())
}

const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// A chart with a log-scale y axis in milliseconds; `lines` are (label, points).
fn svg_chart(title: &str, x_label: &str, x_ticks: &[(f64, String)], x_max: f64, lines: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 320.0, 60.0, 180.0, 30.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let ys = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).filter(|y| *y > 0.0);
    let y_max = ys.clone().fold(1.0f64, f64::max);
    let y_min = ys.fold(f64::INFINITY, f64::min).min(y_max);
    let (lo, hi) = (y_min.max(0.01).log10().floor(), y_max.log10().ceil().max(y_min.max(0.01).log10().floor() + 1.0));
    let x = |v: f64| left + pw * (v / x_max.max(1e-9));
    let y = |v: f64| top + ph * (1.0 - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#);
    let _ = write!(s, r#"<text x="{left}" y="18" font-size="13" font-weight="bold">{}</text>"#, esc(title));
    let _ = write!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    for e in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(e);
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 4.0,
            yy + 4.0,
            num(v)
        );
    }
    let _ = write!(s, r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">ms (log)</text>"#, top + ph / 2.0, top + ph / 2.0);
    for (v, label) in x_ticks {
        let xx = x(*v);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 14.0,
            esc(label)
        );
    }
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, h - 6.0, esc(x_label));
    for (k, (label, points)) in lines.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#, path.join(" "));
        let ly = top + 10.0 + 16.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            left + pw + 10.0,
            ly - 4.0,
            left + pw + 26.0,
            ly,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn errors_by_status(row: &RowReport) -> String {
    row.error_statuses.iter().map(|(s, n)| format!("{s} ×{n}")).collect::<Vec<_>>().join(", ")
}

const HEADERS: [&str; 11] = ["endpoint", "count", "errors", "rate/s", "target/s", "p50", "p90", "p99", "p99.9", "max", "errors by status"];

/// A row of the summary table, as text cells in the order of [`HEADERS`] minus the last.
fn cells(row: &RowReport) -> Vec<String> {
    let q = row.latency_ms;
    let mut c = vec![row.name.clone(), row.count.to_string(), row.errors.to_string(), format!("{:.1}", row.rate), opt_rate(row.target_rate)];
    c.extend([q.p50, q.p90, q.p99, q.p999, q.max].map(|v| format!("{v:.2}")));
    c
}

/// The rows worth a line: those that saw requests or were meant to, then the total.
fn shown(run: &Run) -> impl Iterator<Item = &RowReport> {
    run.rows.iter().filter(|row| row.count > 0 || row.target_rate.is_some_and(|t| t > 0.0)).chain([&run.total])
}

fn table_row(row: &RowReport) -> String {
    let mut cells = cells(row);
    cells.push(errors_by_status(row));
    format!("<tr>{}</tr>", cells.iter().map(|c| format!("<td>{}</td>", esc(c))).collect::<String>())
}

/// A self-contained HTML page (no scripts, no external files).
pub fn html(r: &Report) -> String {
    let run = &r.run;
    let mut summary = Vec::new();
    let _ = text(r, &mut summary);
    let t_max = run.timeline.iter().map(|t| f64::from(t.t)).fold(1.0, f64::max);
    let series = |f: fn(&crate::stats::Tick) -> f64| run.timeline.iter().filter(|t| t.count > 0).map(|t| (f64::from(t.t), f(t))).collect::<Vec<_>>();
    let over_time = svg_chart(
        "Latency over time (per second, by completion)",
        "seconds since start",
        &(0..=5).map(|k| (t_max * f64::from(k) / 5.0, format!("{:.0}", t_max * f64::from(k) / 5.0))).collect::<Vec<_>>(),
        t_max,
        &[("p50".into(), series(|t| t.p50_ms)), ("p99".into(), series(|t| t.p99_ms)), ("max".into(), series(|t| t.max_ms))],
    );
    let nines = |p: f64| (1.0 / (1.0 - p / 100.0).max(1e-5)).log10();
    let curves: Vec<(String, Vec<(f64, f64)>)> = run
        .rows
        .iter()
        .chain([&run.total])
        .filter(|row| row.count > 0)
        .map(|row| (row.name.clone(), row.curve.iter().map(|(p, ms)| (nines(*p), *ms)).collect()))
        .collect();
    let ticks: Vec<(f64, String)> =
        ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate().map(|(k, l)| (k as f64, (*l).to_owned())).collect();
    let percentiles = svg_chart("Latency by percentile", "percentile", &ticks, 5.0, &curves);
    let throughput: String = {
        let max = run.timeline.iter().map(|t| t.count).max().unwrap_or(1).max(1) as f64;
        let bar_w = 580.0 / run.timeline.len().max(1) as f64;
        let bars: String = run
            .timeline
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let h = 100.0 * t.count as f64 / max;
                let eh = 100.0 * t.errors as f64 / max;
                format!(
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#1f77b4"/><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{eh:.1}" fill="#d62728"/>"##,
                    60.0 + bar_w * k as f64,
                    130.0 - h,
                    (bar_w - 1.0).max(0.5),
                    60.0 + bar_w * k as f64,
                    130.0 - eh,
                    (bar_w - 1.0).max(0.5)
                )
            })
            .collect();
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="150" font-family="sans-serif" font-size="11"><text x="60" y="18" font-size="13" font-weight="bold">Completed requests per second (red: errors), peak {max}</text>{bars}</svg>"#
        )
    };
    let rows: String = shown(run).map(table_row).collect();
    let headers: String = HEADERS.iter().map(|h| format!("<th>{h}</th>")).collect();
    let verdict = if r.passed() {
        "<p class=ok>Every SLO and check met.</p>".to_owned()
    } else {
        format!("<p class=bad>{}</p>", r.failures().iter().map(|f| esc(f)).collect::<Vec<_>>().join("<br>"))
    };
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>scalectl load: {scenario}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}.ok{{color:#2ca02c}}.bad{{color:#d62728}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body>
<h1>scalectl load: {scenario}</h1>
{verdict}
<table><tr>{headers}</tr>{rows}</table>
<p>Latency is measured from each request's scheduled start (open model, no coordinated omission).</p>
{over_time}
{throughput}
{percentiles}
<h2>Summary</h2><pre>{summary}</pre>
</body></html>
"#,
        scenario = esc(&r.scenario),
        summary = esc(&String::from_utf8_lossy(&summary)),
    )
}
