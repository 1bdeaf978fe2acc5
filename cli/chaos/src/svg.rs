//! The run as one self-contained SVG: each operation a dot at the time it was due and
//! its latency, errors in red, fault windows shaded, so a reader sees the outage's shape
//! and length at a glance. Pure string building; the caller writes the file.

use std::fmt::Write;
use std::time::Duration;

use crate::check::Report;
use crate::history::{History, Outcome};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 40.0;

/// The timeline of `history` with `report`'s fault windows and verdict.
pub fn timeline(report: &Report, history: &History) -> String {
    let span = history.ops.iter().map(|o| o.ended).chain(report.faults.iter().map(|f| f.fault.end)).max().unwrap_or_default();
    let t_max = span.as_secs_f64().max(1.0);
    let l_max = history.ops.iter().map(|o| o.latency()).max().unwrap_or_default().max(Duration::from_millis(1)).as_secs_f64();
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: Duration| LEFT + t.as_secs_f64() / t_max * plot_w;
    let y = |l: Duration| TOP + plot_h - l.as_secs_f64() / l_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="14">{verdict} · RPO {} writes · {} operations</text>"#, report.rpo, history.ops.len());
    let _ = writeln!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#999"/>"##);
    for f in &report.faults {
        let (x0, x1) = (x(f.fault.start), x(f.fault.end));
        let _ = writeln!(
            s,
            r##"<rect class="fault" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h:.1}" fill="#f59e0b" fill-opacity="0.2"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            escape(&format!("{} on {}", f.fault.kind, f.fault.target)),
        );
        let _ = writeln!(s, r#"<text x="{x0:.1}" y="{:.1}">{}</text>"#, TOP - 4.0, escape(f.fault.kind.as_str()));
    }
    for o in &history.ops {
        let colour = match o.outcome {
            _ if o.is_error() => "#dc2626",
            Outcome::Failed { .. } => "#9ca3af",
            _ => "#2563eb",
        };
        let class = if o.is_error() { "error" } else { "op" };
        let _ = writeln!(s, r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="1.5" fill="{colour}"/>"#, x(o.scheduled), y(o.latency()));
    }
    for i in 0..=4 {
        let frac = f64::from(i) / 4.0;
        let (tx, ly) = (LEFT + frac * plot_w, TOP + plot_h - frac * plot_h);
        let _ = writeln!(s, r#"<text x="{tx:.1}" y="{:.1}" text-anchor="middle">{:.0}s</text>"#, HEIGHT - BOTTOM + 16.0, frac * t_max);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{ly:.1}" text-anchor="end">{:.0}ms</text>"#, LEFT - 6.0, frac * l_max * 1e3);
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (due) · latency from due time</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::*;
    use crate::check::{FaultWindow, check};
    use crate::experiment::{Checks, FaultKind, OrdersCheck};

    /// Checks that tags nest and close, attributes are quoted, and text has no raw `<` or
    /// stray `&`: enough of XML to know a browser will render it.
    fn well_formed(xml: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").replace("&quot;", "").contains('&') {
                return Err(format!("raw & in {text:?}"));
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
            } else {
                let name = tag.split_whitespace().next().ok_or("empty tag")?.trim_end_matches('/');
                if !tag.matches('"').count().is_multiple_of(2) {
                    return Err(format!("unbalanced quotes in {tag:?}"));
                }
                if !tag.ends_with('/') {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        if stack.is_empty() { Ok(()) } else { Err(format!("unclosed: {stack:?}")) }
    }

    #[test]
    fn the_timeline_is_well_formed_and_marks_errors_and_faults() {
        let h = history(vec![checkout(1, "a", 1_000, ok(11)), checkout(2, "b", 2_000, unknown()), read(3_000)]);
        let fault = FaultWindow {
            kind: FaultKind::Partition,
            target: "leader <-> replicas & \"all\"".into(),
            start: Duration::from_millis(1_500),
            end: Duration::from_millis(2_500),
        };
        let report = check(&h, &orders(&[(11, 1, "a")]), &[fault], &Checks { orders: Some(OrdersCheck::default()), ..Checks::default() });
        let svg = timeline(&report, &h);
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches(r#"class="error""#).count(), 1);
        assert_eq!(svg.matches(r#"class="fault""#).count(), 1);
        assert!(svg.contains("partition on leader &lt;-&gt; replicas &amp; &quot;all&quot;"), "{svg}");
        assert!(well_formed("<svg><g></svg>").is_err() && well_formed("<a>&</a>").is_err(), "the checker itself rejects bad XML");
        assert!(well_formed(&timeline(&report, &History::default())).is_ok(), "an empty history still draws");
    }
}
