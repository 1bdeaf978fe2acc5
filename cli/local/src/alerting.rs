//! Alerting on the local target, when the manifest asks for burn-rate alerts:
//! Alertmanager (Debian's `prometheus-alertmanager`) takes every alert Prometheus raises
//! and delivers it, and its resolution, to one webhook: the environment's receiver,
//! `scalectl __alert-receiver`, which appends each delivery to a journal in its directory.
//! `scalectl alerts` reads that journal back ([`journal`]); the receiver is scalectl's
//! own so that nothing but this machine's packages and scalectl is needed.
//!
//! Alertmanager runs without its cluster listener (`--cluster.listen-address=`): one
//! instance per environment, and its default port would collide between environments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use scalectl_core::alerts::{Notification, Received};
use scalectl_core::plan::Observed;
use scalectl_core::{Readiness, Resource, ResourceKind};
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, spec, templates, tools};

const ALERTMANAGER: &str = "prometheus-alertmanager";
/// The receiver's word on its command line (`scalectl __alert-receiver`).
pub const RECEIVER: &str = "__alert-receiver";
/// The receiver's journal, one delivery per line, in its directory.
const JOURNAL: &str = "alerts.jsonl";
/// The largest webhook body the receiver takes (Alertmanager sends every alert of a
/// group in one body; thousands fit in this).
const MAX_BODY: usize = 8 * 1024 * 1024;

fn alertmanager<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, ALERTMANAGER)
}

fn receiver<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, RECEIVER)
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::alertmanager(r)?;
    let to = env.resource(&spec.receiver)?.endpoint().with_context(|| format!("{} has no address", spec.receiver))?;
    Ok(vec![templates::render_for(
        env,
        r,
        "alertmanager.yml",
        templates::ALERTMANAGER_YML,
        json!({"receiver": to, "group_wait": "10s", "group_interval": "30s"}),
    )?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    match r.kind {
        ResourceKind::Alertmanager => alertmanager(env, r).observe(),
        _ => receiver(env, r).observe(),
    }
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    if r.kind == ResourceKind::AlertReceiver {
        let d = receiver(env, r);
        let me = std::env::current_exe().context("finding the scalectl program to run the alert receiver")?;
        let mut cmd = Command::new(me);
        cmd.arg(RECEIVER).arg("--listen").arg(d.endpoint()?.to_string()).arg("--journal").arg(d.paths().dir.join(JOURNAL));
        d.start(cmd, &[], &[d.endpoint()?], false)?;
        return Ok(());
    }
    let d = alertmanager(env, r);
    let bin = tools::find(ALERTMANAGER).with_context(|| format!("{ALERTMANAGER} is not installed; `apt-get install prometheus-alertmanager`"))?;
    let dir = d.paths().dir;
    let addr = d.endpoint()?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=");
    d.start(cmd, &config_files(env, r)?, &[addr], true)?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(match r.kind {
        ResourceKind::Alertmanager => {
            let d = alertmanager(env, r);
            d.check_http(d.endpoint()?, "/-/ready")
        }
        _ => {
            let d = receiver(env, r);
            d.check_http(d.endpoint()?, "/healthz")
        }
    })
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    match r.kind {
        ResourceKind::Alertmanager => alertmanager(env, r).destroy(keep_data),
        _ => receiver(env, r).destroy(keep_data),
    }
}

/// Every delivery the environment's receiver kept, oldest first. A line that does not
/// read (the receiver was killed mid-write) is skipped.
pub fn journal(env: &Env) -> Result<Vec<Received>> {
    let Some(r) = env.graph.resources.iter().find(|r| r.kind == ResourceKind::AlertReceiver) else {
        bail!(
            "this environment routes no alerts to Alertmanager: `scalectl up --env {} --set spec.observability.burnRateAlerts=true` \
             adds it (levels 5 and 6 ask for it); Prometheus's own rules and alerts are at its /alerts page meanwhile",
            env.name
        );
    };
    let path = env.node_dir(r).join(JOURNAL);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The fingerprints of the alerts the environment's Alertmanager holds now (its API v2),
/// or none when there is none or it does not answer.
pub fn active(env: &Env) -> Option<Vec<String>> {
    let r = env.graph.resources.iter().find(|r| r.kind == ResourceKind::Alertmanager)?;
    let addr = SocketAddr::from((r.address?, r.port?));
    let body = crate::health::http_get(addr, "/api/v2/alerts", Duration::from_secs(2)).ok()?;
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
    Some(alerts.iter().filter_map(|a| Some(a["fingerprint"].as_str()?.to_string())).collect())
}

/// `scalectl __alert-receiver`: takes Alertmanager's webhook deliveries on `listen`
/// (`POST /alerts`) and appends each, with the time it arrived, to `journal`; answers
/// `GET /healthz`. Stops when the journal's directory is gone (its environment was
/// deleted without `down`).
pub fn run_receiver(listen: SocketAddr, journal: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    println!("receiving alerts at http://{listen}/alerts into {}", journal.display());
    let dir = journal.parent().context("the journal has no directory")?.to_path_buf();
    std::thread::spawn(move || {
        while dir.exists() {
            std::thread::sleep(Duration::from_secs(1));
        }
        println!("{} is gone with its environment; stopping", dir.display());
        std::process::exit(0);
    });
    let writer = Arc::new(Mutex::new(()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (journal, writer) = (journal.to_path_buf(), writer.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &journal, &writer) {
                println!("a request failed: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(stream: TcpStream, journal: &Path, writer: &Mutex<()>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default().to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("a Content-Length that is not a number")?;
        }
    }
    let (code, text) = match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => (200, "ok".to_string()),
        ("POST", "/alerts") if length > MAX_BODY => (413, format!("a body of {length} bytes is more than {MAX_BODY}")),
        ("POST", "/alerts") => {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            match serde_json::from_slice::<Notification>(&body) {
                Ok(notification) => {
                    let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                    let mut entry = serde_json::to_string(&Received { received_at, notification })?;
                    entry.push('\n');
                    let _one_writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                    append(journal, entry.as_bytes())?;
                    (200, "kept".to_string())
                }
                Err(e) => (400, format!("not an Alertmanager webhook notification: {e}")),
            }
        }
        _ => (404, "POST /alerts or GET /healthz".to_string()),
    };
    let mut out = stream;
    write!(out, "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", reason(code), text.len())?;
    Ok(())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        413 => "Payload Too Large",
        _ => "Not Found",
    }
}

/// One `write` of a whole line, so a reader never sees half of one unless the process
/// died in it.
fn append(journal: &Path, line: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(journal).with_context(|| format!("opening {}", journal.display()))?;
    f.write_all(line).with_context(|| format!("writing {}", journal.display()))
}
