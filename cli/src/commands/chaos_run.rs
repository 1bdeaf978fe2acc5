//! `scalectl chaos run`: an experiment against a live environment. The steady state is
//! probed first; then a workload runs on an open schedule, recording every operation it
//! makes (the history), while the faults are injected at their offsets; the rollbacks
//! always run; the steady state must return; and the history is checked against what
//! the database holds afterwards (`scalectl_chaos::check`).
//!
//! While a run holds faults, the environment's fault journal names this process, so a
//! run that is killed is undone by the next scalectl command on the environment.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use scalectl_chaos::experiment::{Component, Experiment, FaultKind, Probe, Rollback, Scenario};
use scalectl_chaos::{DbSnapshot, FaultWindow, History};
use scalectl_core::plan::{Action, Observed};
use scalectl_core::{Graph, Provider, ResourceKind};
use scalectl_loadgen::http::{Conn, Target};
use scalectl_loadgen::recorded::Workload;
use scalectl_loadgen::shop::{Setup, SetupConfig, prepare};
use serde_json::{Value, json};

use super::Ctx;
use crate::output::{Format, json as print_json};

pub struct RunArgs {
    pub experiment: What,
    pub env: String,
    pub runs: u32,
    /// The workload's seed, and a random schedule's; none: 1, or for a random schedule
    /// one drawn from the clock (and printed, so the run can be repeated).
    pub seed: Option<u64>,
    /// Where to write the SVG timeline (and the history beside it, `.jsonl`).
    pub report: Option<PathBuf>,
}

/// What `chaos run` runs: an experiment (a file or a shipped name), or a random schedule.
pub enum What {
    Experiment(String),
    Random { faults: usize },
}

pub fn run(ctx: &Ctx, a: &RunArgs) -> Result<ExitCode> {
    let (label, text, seed) = match &a.experiment {
        What::Experiment(name) => {
            let (label, text) = super::chaos::read(name)?;
            (label, text, a.seed.unwrap_or(1))
        }
        What::Random { faults } => {
            if !ctx.home.env_dir(&a.env).exists() {
                bail!("there is no environment `{}`; start one with `scalectl up --level 3 --env {}`", a.env, a.env);
            }
            let seed =
                a.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs() % 1_000_000));
            let text = scalectl_chaos::random::schedule(seed, *faults);
            let file = ctx.home.env_dir(&a.env).join(format!("chaos-random-{seed}-{faults}.yaml"));
            std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
            ctx.progress.say(&format!(
                "chaos: random schedule of {faults} faults from seed {seed} (the experiment is {}; repeat it with `scalectl chaos run --random --seed {seed} --faults {faults} --env {}`)",
                file.display(),
                a.env
            ));
            (file.display().to_string(), text, seed)
        }
    };
    let e = load_experiment(&label, &text)?;
    let mut reports = Vec::new();
    let mut passed = true;
    for n in 1..=a.runs.max(1) {
        ctx.progress.say(&format!("chaos: {} on `{}`, run {n} of {}", e.metadata.name, a.env, a.runs.max(1)));
        let report = one_run(ctx, a, &e, n, seed)?;
        passed &= report["passed"].as_bool().unwrap_or(false);
        reports.push(report);
    }
    let mut out = std::io::stdout().lock();
    match ctx.format {
        Format::Json => {
            print_json(&json!({"experiment": e.metadata.name, "environment": a.env, "seed": seed, "passed": passed, "runs": reports}), &mut out)?
        }
        Format::Text => {
            for (i, r) in reports.iter().enumerate() {
                writeln!(out, "Run {} of {}:\n{}", i + 1, reports.len(), r["text"].as_str().unwrap_or(""))?;
            }
            writeln!(out, "{}: {} (seed {seed})", e.metadata.name, if passed { "PASSED" } else { "FAILED" })?;
        }
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn load_experiment(label: &str, text: &str) -> Result<Experiment> {
    scalectl_chaos::load(label, text)
        .map_err(|d| anyhow!("{label} is not a valid experiment:\n{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// One run of experiment `name` (a file or a shipped name) on `env`, with the
/// workload's `seed`: its report, as `chaos run -o json` gives each run.
pub fn run_once(ctx: &Ctx, env: &str, name: &str, seed: u64) -> Result<Value> {
    let (label, text) = super::chaos::read(name)?;
    let e = load_experiment(&label, &text)?;
    let args = RunArgs { experiment: What::Experiment(name.to_string()), env: env.to_string(), runs: 1, seed: Some(seed), report: None };
    one_run(ctx, &args, &e, 1, seed)
}

fn one_run(ctx: &Ctx, a: &RunArgs, e: &Experiment, n: u32, seed: u64) -> Result<Value> {
    let (state, provider) = super::open(ctx, &a.env)?;
    if !e.levels.contains(&state.level) {
        bail!("{} applies to levels {:?}; `{}` is level {}", e.metadata.name, e.levels, a.env, state.level);
    }
    let graph = Graph::new(state.resources.values().cloned().collect())?;
    let endpoints = provider.endpoints();
    let shop = endpoints.get("shop").cloned().context("the environment has no shop endpoint")?;
    let prometheus = endpoints.get("prometheus").cloned();
    let provider: &dyn Provider = provider.as_ref();

    let probes = |when: &str| -> Result<()> {
        let failed = probe_all(provider, &graph, &shop, prometheus.as_deref(), &e.steady_state.probes);
        if failed.is_empty() { Ok(()) } else { bail!("steady state not met {when}: {}", failed.join("; ")) }
    };
    // A system still settling from something earlier (a previous experiment's errors in
    // a Prometheus window, say) gets up to `recoveryTimeout` to become steady.
    let settle = Instant::now() + e.steady_state.recovery_timeout.0;
    loop {
        match probes("before the faults") {
            Ok(()) => break,
            Err(err) if Instant::now() >= settle => return Err(err.context("nothing was injected")),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }

    let rt = scalectl_loadgen::runtime()?;
    let target = Target::parse(&shop)?;
    let run_id = format!("{}-{n}-{}", std::process::id(), crate::home::now());
    let rate = f64::from(e.workload.rate);
    let buyers = (e.workload.rate as usize * 2).clamp(10, 200);
    let cache = ctx.home.env_dir(&a.env).join("chaos-setup.json");
    let t = ctx.progress.start("setup", "creating buyers and products");
    let setup =
        rt.block_on(prepare(&target, &shop, &SetupConfig { seed, buyers, products: 3, concurrency: 4, cache: Some(cache), progress: false }))?;
    ctx.progress.done("setup", "ready", t);
    let user_ids = user_ids(provider, &setup)?;
    let initial = stocks(provider, &setup.products)?;
    // A flash sale of a third of the purchases the schedule makes, so it sells out
    // around the middle of the run, through whatever the faults do.
    let sale = match e.workload.scenario {
        Scenario::FlashSale => {
            let units = ((rate * e.workload.duration.0.as_secs_f64()) / 3.0).max(1.0) as u32;
            Some(rt.block_on(create_sale(&target, &setup, units))?)
        }
        _ => None,
    };

    // Faults that linger are recorded before the first one, under this process.
    super::chaos::journal_add(ctx, &a.env, Some(std::process::id()), format!("chaos run {}", e.metadata.name))?;
    let history = Arc::new(Mutex::new(History::default()));
    let windows = Arc::new(Mutex::new(Vec::<FaultWindow>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let duration = e.workload.duration.0;
    let t0 = Instant::now() + Duration::from_millis(200);
    let during = Mutex::new(ProbesDuring::default());
    let outcome = std::thread::scope(|scope| -> Result<()> {
        let faults = scope.spawn(|| inject_faults(ctx, provider, &graph, e, t0, &windows, &stop));
        if e.steady_state.during {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let next = Instant::now() + e.steady_state.interval.0;
                    let at = t0.elapsed();
                    let failed = probe_all(provider, &graph, &shop, prometheus.as_deref(), &e.steady_state.probes);
                    during.lock().unwrap().record(at, failed);
                    while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
        let workload = Workload { scenario: e.workload.scenario, setup: &setup, user_ids: &user_ids, run_id: &run_id, sale };
        rt.block_on(workload.run(&target, rate, duration, t0, &history, &stop));
        stop.store(true, Ordering::Relaxed);
        faults.join().map_err(|_| anyhow!("the fault thread panicked"))?
    });
    // Rollbacks always run, whatever happened above.
    let rolled = rollbacks(ctx, provider, &graph, &e.rollbacks);
    super::chaos::journal_clear(ctx, &a.env);
    outcome?;
    rolled?;
    let recovery = Instant::now() + e.steady_state.recovery_timeout.0;
    let steady_again = loop {
        match probes("after recovery") {
            Ok(()) => break None,
            Err(err) if Instant::now() >= recovery => break Some(format!("{err:#}")),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    if let Some(settle) = e.checks.outbox.as_ref().map(|o| o.settle.0) {
        std::thread::sleep(settle);
    }

    let snapshot = snapshot(provider, &run_id, &setup.products, &initial, sale)?;
    let history = std::mem::take(&mut *history.lock().unwrap());
    let windows = std::mem::take(&mut *windows.lock().unwrap());
    let report = scalectl_chaos::check(&history, &snapshot, &windows, &e.checks);
    let mut text = scalectl_chaos::render::text(&report);
    let during = during.into_inner().unwrap();
    if e.steady_state.during {
        text.push_str(&during.summary());
    }
    if let Some(err) = &steady_again {
        text.push_str(&format!("\nsteady state: FAILED, {err}\n"));
    }
    let svg = a.report.clone().unwrap_or_else(|| ctx.home.env_dir(&a.env).join(format!("chaos-{}-{run_id}.svg", e.metadata.name)));
    let svg =
        if a.runs > 1 { svg.with_file_name(format!("{}-run{n}.svg", svg.file_stem().and_then(|s| s.to_str()).unwrap_or("chaos"))) } else { svg };
    std::fs::write(&svg, scalectl_chaos::svg::timeline(&report, &history)).with_context(|| format!("writing {}", svg.display()))?;
    std::fs::write(svg.with_extension("jsonl"), history.to_json_lines())?;
    text.push_str(&format!("timeline: {}\nhistory: {}\n", svg.display(), svg.with_extension("jsonl").display()));
    let mut value = serde_json::to_value(&report)?;
    value["passed"] = json!(report.passed && steady_again.is_none());
    value["steady_state_after"] = json!(steady_again.is_none());
    if e.steady_state.during {
        value["steady_state_during"] = serde_json::to_value(&during)?;
    }
    value["operations"] = json!(history.ops.len());
    value["timeline"] = json!(svg);
    value["text"] = json!(text);
    Ok(value)
}

/// The steady-state probes run while the method ran (`steadyState.during`): reported,
/// not judged, since most faults are expected to break some probe for a while.
#[derive(Default, serde::Serialize)]
struct ProbesDuring {
    rounds: usize,
    failed_rounds: usize,
    /// Each failure: offset from the workload's start (seconds) and "probe: why".
    failures: Vec<(f64, String)>,
}

impl ProbesDuring {
    fn record(&mut self, at: Duration, failed: Vec<String>) {
        self.rounds += 1;
        self.failed_rounds += usize::from(!failed.is_empty());
        self.failures.extend(failed.into_iter().map(|f| (at.as_secs_f64(), f)));
    }

    fn summary(&self) -> String {
        let mut out = format!("steady state during the method: {} of {} probe rounds failed\n", self.failed_rounds, self.rounds);
        let mut by_probe: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
        for (at, f) in &self.failures {
            let name = f.split_once(':').map_or(f.as_str(), |(n, _)| n);
            let e = by_probe.entry(name).or_insert((*at, *at, 0));
            e.1 = *at;
            e.2 += 1;
        }
        for (name, (first, last, n)) in by_probe {
            let why = self
                .failures
                .iter()
                .find(|(_, f)| f.split_once(':').is_some_and(|(p, _)| p == name))
                .map_or("", |(_, f)| f.split_once(": ").map_or("", |(_, w)| w));
            out.push_str(&format!("  {name}: failed {n}× from {first:.1}s to {last:.1}s (first: {why})\n"));
        }
        out
    }
}

/// Every probe that fails now, with why.
fn probe_all(provider: &dyn Provider, graph: &Graph, shop: &str, prometheus: Option<&str>, probes: &[Probe]) -> Vec<String> {
    let mut failed = Vec::new();
    for p in probes {
        let result: Result<(), String> = if let Some(h) = &p.http {
            let started = Instant::now();
            match http_get(&format!("{shop}{}", h.route)) {
                Ok((status, _)) if status != h.status => Err(format!("answered {status}, expected {}", h.status)),
                Ok(_) if started.elapsed() > h.max_latency.0 => Err(format!("took {:?}", started.elapsed())),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        } else if let Some(q) = &p.sql {
            match super::database(provider).map_err(|e| format!("{e:#}")).and_then(|db| db.query(&q.query).map_err(|e| e.to_string())) {
                Ok(v) if q.expect.holds(v.lines().next().unwrap_or("")) => Ok(()),
                Ok(v) => Err(format!("returned {}", v.trim())),
                Err(e) => Err(e),
            }
        } else if let Some(q) = &p.prometheus {
            match prometheus.map(|base| http_get(&format!("{base}/api/v1/query?query={}", urlencode(&q.query)))) {
                Some(Ok((200, body))) => {
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    let value = v["data"]["result"][0]["value"][1].as_str().unwrap_or("").to_string();
                    // No series, or 0/0, means no traffic to judge yet: nothing is wrong.
                    if value.is_empty() || value == "NaN" || q.expect.holds(&value) { Ok(()) } else { Err(format!("returned `{value}`")) }
                }
                Some(Ok((status, _))) => Err(format!("Prometheus answered {status}")),
                Some(Err(e)) => Err(e),
                None => Err("the environment has no Prometheus".into()),
            }
        } else if let Some(pr) = &p.process {
            let kinds = component_kinds(pr.component);
            let up = graph.resources.iter().filter(|r| kinds.contains(&r.kind) && matches!(provider.observe(r), Observed::Running { .. })).count();
            if up as u32 >= pr.min { Ok(()) } else { Err(format!("{up} of {} running", pr.min)) }
        } else {
            Ok(())
        };
        if let Err(why) = result {
            failed.push(format!("{}: {why}", p.name));
        }
    }
    failed
}

fn component_kinds(c: Component) -> Vec<ResourceKind> {
    match c {
        Component::Postgres => vec![ResourceKind::Postgres, ResourceKind::PatroniNode],
        Component::Patroni => vec![ResourceKind::PatroniNode],
        Component::Etcd => vec![ResourceKind::Etcd],
        Component::Pgbouncer => vec![ResourceKind::Pgbouncer],
        Component::Haproxy => vec![ResourceKind::Haproxy],
        Component::Redis => vec![ResourceKind::Redis],
        Component::Shop => vec![ResourceKind::Shop],
        Component::Worker => vec![ResourceKind::Worker],
        Component::Prometheus => vec![ResourceKind::Prometheus],
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A blocking GET for probes: status and body.
fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: std::net::SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
    crate::driver::http_probe(addr, "GET", &path, None, Duration::from_secs(5))
}

/// The database ids of the buyers setup made, by email.
fn user_ids(provider: &dyn Provider, setup: &Setup) -> Result<Vec<i64>> {
    let emails: Vec<String> = setup.buyers.iter().map(|b| format!("'{}'", b.email.replace('\'', "''"))).collect();
    let text = super::database(provider)?
        .query(&format!("SELECT coalesce(json_object_agg(email, id), '{{}}') FROM users WHERE email IN ({})", emails.join(",")))
        .map_err(|e| anyhow!("{e}"))?;
    let map: BTreeMap<String, i64> = serde_json::from_str(text.trim()).context("reading user ids")?;
    setup.buyers.iter().map(|b| map.get(&b.email).copied().with_context(|| format!("buyer {} has no user row", b.email))).collect()
}

fn stocks(provider: &dyn Provider, products: &[i64]) -> Result<BTreeMap<i64, i64>> {
    let ids: Vec<String> = products.iter().map(i64::to_string).collect();
    let text = super::database(provider)?
        .query(&format!("SELECT coalesce(json_object_agg(id, stock), '{{}}') FROM products WHERE id IN ({})", ids.join(",")))
        .map_err(|e| anyhow!("{e}"))?;
    let map: BTreeMap<String, i64> = serde_json::from_str(text.trim()).context("reading stock")?;
    Ok(map.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect())
}

/// What the checker compares the history with: this run's orders (by their keys), the
/// products' stock, and the outbox events of those orders.
fn snapshot(provider: &dyn Provider, run_id: &str, products: &[i64], initial: &BTreeMap<i64, i64>, sale: Option<i64>) -> Result<DbSnapshot> {
    let sql = scalectl_loadgen::shop_sql::chaos_snapshot(run_id, products);
    let db = super::database(provider)?;
    let text = db.query(&sql).map_err(|e| anyhow!("{e}"))?;
    let mut v: Value = serde_json::from_str(text.trim()).context("reading the snapshot")?;
    for p in v["products"].as_array_mut().into_iter().flatten() {
        let id = p["id"].as_i64().unwrap_or(0);
        p["initial_stock"] = json!(initial.get(&id).copied().unwrap_or(0));
    }
    v["flash_sales"] = match sale {
        Some(id) => {
            let text = db.query(&scalectl_loadgen::shop_sql::flash_sale(id)).map_err(|e| anyhow!("{e}"))?;
            let view = scalectl_loadgen::shop_sql::parse_flash_sale(&text).with_context(|| format!("reading flash sale {id}: {text:?}"))?;
            json!([{"id": id, "units": view.units, "remaining": view.remaining, "sold": view.purchased_units, "ordered": view.ordered_units}])
        }
        None => json!([]),
    };
    serde_json::from_value(v).context("reading the snapshot")
}

/// Injects each fault of the method on its own thread, at its offset or `at` after the
/// end of the fault it follows (`after`), so faults may run in sequence or overlap; a
/// fault with a duration is undone when it is over. Undoing is shared by all faults
/// (heal every network rule and frozen process, start every lost process), so lingering
/// faults (freeze, partition) are healed when the last of them that overlap ends, and
/// one undo runs at a time.
fn inject_faults(
    ctx: &Ctx,
    provider: &dyn Provider,
    graph: &Graph,
    e: &Experiment,
    t0: Instant,
    windows: &Mutex<Vec<FaultWindow>>,
    stop: &AtomicBool,
) -> Result<()> {
    let timeline =
        Timeline { ends: Mutex::new(vec![None; e.method.len()]), lingering: Mutex::new(0), undo: Mutex::new(()), failed: AtomicBool::new(false) };
    let outcome = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..e.method.len())
            .map(|i| {
                let timeline = &timeline;
                scope.spawn(move || {
                    let done = one_fault(ctx, provider, graph, e, i, t0, timeline, windows, stop);
                    if done.is_err() {
                        timeline.failed.store(true, Ordering::Relaxed);
                    }
                    done
                })
            })
            .collect();
        let mut first: Option<anyhow::Error> = None;
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    first.get_or_insert(err);
                }
                Err(_) => {
                    first.get_or_insert(anyhow!("a fault thread panicked"));
                }
            }
        }
        first.map_or(Ok(()), Err)
    });
    windows.lock().unwrap().sort_by_key(|w| w.start);
    outcome
}

/// What the faults of one run share: when each ended, how many lingering ones hold now,
/// the undo lock, and whether one failed (faults that follow it are then skipped).
struct Timeline {
    ends: Mutex<Vec<Option<Instant>>>,
    lingering: Mutex<usize>,
    undo: Mutex<()>,
    failed: AtomicBool,
}

#[allow(clippy::too_many_arguments)]
fn one_fault(
    ctx: &Ctx,
    provider: &dyn Provider,
    graph: &Graph,
    e: &Experiment,
    i: usize,
    t0: Instant,
    timeline: &Timeline,
    windows: &Mutex<Vec<FaultWindow>>,
    stop: &AtomicBool,
) -> Result<()> {
    let f = &e.method[i];
    let give_up = || stop.load(Ordering::Relaxed) || timeline.failed.load(Ordering::Relaxed);
    // The start: an offset from the workload's start, or from the end of an earlier fault.
    let at = loop {
        match f.after {
            None => break t0 + f.at.0,
            Some(j) => {
                if let Some(end) = timeline.ends.lock().unwrap().get(j).copied().flatten() {
                    break end + f.at.0;
                }
            }
        }
        if give_up() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while Instant::now() < at {
        if give_up() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20).min(at.saturating_duration_since(Instant::now())));
    }
    let targets: Vec<_> = match (&f.target, &f.between) {
        (Some(t), _) => vec![*t],
        (None, Some(sides)) => sides.clone(),
        _ => bail!("a {} fault without a target", f.kind.as_str()),
    };
    let lingers = matches!(f.kind, FaultKind::Freeze | FaultKind::Partition);
    if lingers {
        *timeline.lingering.lock().unwrap() += 1;
    }
    let start = t0.elapsed();
    let did = super::chaos_ops(provider)?.inject(f.kind, &targets).map_err(|err| anyhow!("injecting {}: {err}", f.kind.as_str()))?;
    ctx.progress.say(&format!("chaos: {:.1} s: {did}", start.as_secs_f64()));
    let end = match f.duration {
        Some(d) => {
            std::thread::sleep(d.0);
            let _one_at_a_time = timeline.undo.lock().unwrap();
            let still_held = {
                let mut n = timeline.lingering.lock().unwrap();
                *n -= usize::from(lingers);
                *n
            };
            // Lingering faults are undone once none still holds; lost processes are
            // started again.
            if still_held == 0
                && let Some(note) = super::heal_faults(provider).map_err(|err| anyhow!("{err}"))?
            {
                ctx.progress.say(&format!("chaos: {:.1} s: {note}", t0.elapsed().as_secs_f64()));
            }
            restart_down(ctx, provider, graph)?;
            t0.elapsed()
        }
        // A fault without a duration (a switchover) is over when its injection
        // returns: RTO, resume and the write gap are measured against that.
        None => t0.elapsed().max(start),
    };
    timeline.ends.lock().unwrap()[i] = Some(t0 + end);
    windows.lock().unwrap().push(FaultWindow { kind: f.kind, target: did, start, end });
    Ok(())
}

/// The experiment's rollbacks: heal and resume (both undo lingering faults), and
/// restart every recorded process that is not running.
fn rollbacks(ctx: &Ctx, provider: &dyn Provider, graph: &Graph, rollbacks: &[Rollback]) -> Result<()> {
    if let Some(note) = super::heal_faults(provider).map_err(|e| anyhow!("{e}"))? {
        ctx.progress.say(&format!("chaos: rollback: {note}"));
    }
    if rollbacks.contains(&Rollback::Restart) {
        restart_down(ctx, provider, graph)?;
    }
    Ok(())
}

/// Starts every recorded process that is not running, in dependency order.
fn restart_down(ctx: &Ctx, provider: &dyn Provider, graph: &Graph) -> Result<()> {
    for r in &graph.resources {
        if matches!(provider.observe(r), Observed::Down { .. }) {
            let t = ctx.progress.start(&r.id, "restarting");
            crate::apply::block_on(async {
                provider.apply(r, &Action::Start).await.map_err(|e| anyhow!("restarting {}: {e}", r.id))?;
                crate::apply::wait_ready(provider, r, Duration::from_secs(90), &ctx.progress).await.map_err(|e| anyhow!("{e}"))
            })??;
            ctx.progress.done(&r.id, "restarted", t);
        }
    }
    Ok(())
}

/// A flash sale of `units` of a new product, open from a second after now, with no
/// per-buyer limit that the run could reach.
async fn create_sale(target: &Target, setup: &Setup, units: u32) -> Result<i64> {
    let mut conn = Conn::new(target.clone());
    let product = scalectl_loadgen::shop::create_product(&mut conn, &setup.seller, setup.shop_id, &format!("chaos flash {units}"), units).await?;
    let (sale, _) = scalectl_loadgen::shop::create_flash_sale(&mut conn, setup, product, units, units, Duration::from_secs(1)).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(sale)
}
