//! `scalectl load`: traffic at an environment's shop on a fixed schedule, judged against
//! the level's SLOs, or a flash sale checked through the shop and the database. The
//! generator itself is `scalectl-loadgen`; this file finds the shop, the defaults and the
//! database, and turns the report into output and an exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use scalectl_core::{Graph, Manifest, Target as Where};
use scalectl_loadgen::flash::{self, FlashConfig};
use scalectl_loadgen::report::{self, FlashSummary, Report};
use scalectl_loadgen::scenario::{Mix, Raw, ShopWorkload};
use scalectl_loadgen::shop::{self, SetupConfig};
use scalectl_loadgen::shop_sql::{self, DbView};
use scalectl_loadgen::slo::{self, Slos};
use scalectl_loadgen::{Arrivals, Config, Schedule, Target};

use super::Ctx;
use crate::output::{Format, json as print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Product pages and searches (80/20).
    Browse,
    /// Add to cart, then check out, for every operation.
    Checkout,
    /// The level's mix (`spec.workload.mix`).
    Mixed,
    /// Logins of existing buyers, for every operation: password hashing, the costliest
    /// work the auth pool does (run it beside another scenario as an auth storm).
    Login,
    /// Every buyer tries to buy one of `--units` released at one instant.
    FlashSale,
    /// `GET --path` against `--url`, for measuring the generator itself.
    Raw,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Browse => "browse",
            Scenario::Checkout => "checkout",
            Scenario::Mixed => "mixed",
            Scenario::Login => "login",
            Scenario::FlashSale => "flash-sale",
            Scenario::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrivalsArg {
    Uniform,
    Poisson,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Environment whose shop to load; its manifest gives the defaults and the SLOs.
    #[arg(long, short = 'e', value_name = "NAME", required_unless_present = "url")]
    env: Option<String>,
    /// Any HTTP server instead of an environment (with --scenario raw).
    #[arg(long, value_name = "URL", conflicts_with = "env")]
    url: Option<String>,
    #[arg(long, short = 's', value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Operations per second [default: spec.workload.rate].
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// How long to offer load (30s, 5m) [default: spec.workload.duration].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Buyers to create or reuse [default: spec.workload.users; 10000 for flash-sale].
    #[arg(long, value_name = "N")]
    users: Option<usize>,
    /// Units a flash sale releases.
    #[arg(long, default_value_t = 1000)]
    units: u32,
    /// Names users and picks every operation, product and search word; same seed, same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = ArrivalsArg::Uniform)]
    arrivals: ArrivalsArg,
    /// Connections, the most requests in flight [default: rate/4 within 16..512; flash-sale
    /// min(users, 500)].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// A request starting later than this after its scheduled time counts as late.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    late_after: Duration,
    /// Per request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Path for --scenario raw.
    #[arg(long, default_value = "/")]
    path: String,
    /// Write a self-contained HTML report (latency over time, percentile curves).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
}

/// The shop's URL, the manifest and the environment's directory.
struct Site {
    url: String,
    manifest: Option<Manifest>,
    env: Option<String>,
}

fn site(ctx: &Ctx, args: &LoadArgs) -> Result<Site> {
    let Some(name) = &args.env else {
        let url = args.url.clone().context("--env or --url is required")?;
        return Ok(Site { url, manifest: None, env: None });
    };
    let (state, provider) = super::open(ctx, name)?;
    let url =
        provider.endpoints().remove("shop").with_context(|| format!("environment `{name}` has no shop; `scalectl up --env {name}` creates it"))?;
    Ok(Site { url, manifest: Some(state.manifest), env: Some(name.clone()) })
}

/// The flash sale's view from the database: local environments only.
fn flash_db_view(ctx: &Ctx, env: &str, sale_id: i64) -> Result<DbView> {
    let (state, _) = super::open(ctx, env)?;
    if state.target != Where::Local {
        bail!("database checks run on the local target only");
    }
    let graph = Graph::new(state.resources.values().cloned().collect())?;
    let text = crate::driver::shop_sql(&ctx.home.env_dir(env), env, state.slot, graph, &shop_sql::flash_sale(sale_id))?;
    shop_sql::parse_flash_sale(&text).with_context(|| format!("unexpected answer from the database: {text:?}"))
}

pub fn load(ctx: &Ctx, args: &LoadArgs, quiet: bool) -> Result<ExitCode> {
    if args.scenario == Scenario::Raw && args.env.is_some() {
        bail!("--scenario raw takes --url, not --env");
    }
    if args.url.is_some() && args.scenario != Scenario::Raw {
        bail!("--url runs --scenario raw only; the shop's scenarios need --env (setup and SLOs come from the environment)");
    }
    let site = site(ctx, args)?;
    let workload = site.manifest.as_ref().map(|m| &m.spec.workload);
    let rate = args.rate.or(workload.map(|w| f64::from(w.rate))).context("--rate is required without --env")?;
    if !(rate > 0.0 && rate.is_finite()) {
        bail!("--rate must be a positive number of operations per second");
    }
    let duration = match (args.duration, workload) {
        (Some(d), _) => d,
        (None, Some(w)) => w.duration.as_std(),
        (None, None) => Duration::from_secs(10),
    };
    let users = args.users.unwrap_or(match args.scenario {
        Scenario::FlashSale => 10_000,
        _ => workload.map_or(100, |w| w.users as usize),
    });
    if users == 0 {
        bail!("--users must be at least 1");
    }
    let progress = !quiet && std::io::stderr().is_terminal();
    let say = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    let target = Target::parse(&site.url)?;
    let rt = scalectl_loadgen::runtime()?;
    let arrivals = match args.arrivals {
        ArrivalsArg::Uniform => Arrivals::Uniform,
        ArrivalsArg::Poisson => Arrivals::Poisson,
    };
    let connections = args.connections.unwrap_or(match args.scenario {
        Scenario::FlashSale => users.min(500),
        _ => ((rate / 4.0) as usize).clamp(16, 512),
    });
    if arrivals == Arrivals::Poisson && rate * duration.as_secs_f64() > 10e6 {
        // Poisson due times are drawn up front, 8 bytes each.
        bail!("--arrivals poisson is limited to 10 million requests per run; shorten --duration or use uniform");
    }
    if args.scenario == Scenario::FlashSale && args.units == 0 {
        bail!("--units must be at least 1");
    }
    let mut config = Config::new(Schedule::new(arrivals, rate, duration, args.seed), connections);
    config.late_after = args.late_after;
    config.timeout = args.timeout;
    config.progress = progress;
    config.interruptible = true;

    let setup = match args.scenario {
        Scenario::Raw => None,
        _ => {
            let cache = site.env.as_ref().map(|e| ctx.home.env_dir(e).join("load").join(format!("setup-s{}.json", args.seed)));
            say(&format!("setting up {users} buyers and the catalog (seed {}) at {}…", args.seed, site.url));
            let cfg = SetupConfig { seed: args.seed, buyers: users, products: 20, concurrency: 8, cache, progress };
            let s = rt.block_on(shop::prepare(&target, &site.url, &cfg))?;
            say(&format!(
                "setup done in {:.1} s ({} reused, {} logged in, {} registered)",
                s.stats.seconds, s.stats.reused, s.stats.logged_in, s.stats.registered
            ));
            Some(Arc::new(s))
        }
    };
    let setup_stats = setup.as_ref().map(|s| s.stats.clone());
    let run_id = format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()));
    let mix = |m: &scalectl_core::manifest::Mix| Mix([m.browse, m.search, m.cart, m.checkout, m.login, m.order_history].map(u32::from));
    let (run, flash_summary) = match (args.scenario, setup) {
        (Scenario::Raw, _) => (rt.block_on(scalectl_loadgen::run(&target, &config, Raw::new(&args.path)?, None))?, None),
        (Scenario::FlashSale, Some(setup)) => {
            let cfg = FlashConfig { units: args.units, lead: Duration::from_secs(3), connections, timeout: args.timeout, max_attempts: 10, progress };
            say(&format!("flash sale: {} units for {users} buyers, starting in {} s…", args.units, cfg.lead.as_secs()));
            let (outcome, run) = rt.block_on(flash::run(&target, setup, &cfg))?;
            let db = match &site.env {
                Some(env) => match flash_db_view(ctx, env, outcome.sale_id) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        say(&format!("warning: could not read the sale from the database: {e:#}"));
                        None
                    }
                },
                None => None,
            };
            let checks = flash::checks(&outcome, db.as_ref());
            let summary = FlashSummary { outcome, database_checked: db.is_some(), passed: checks.iter().all(|c| c.met), checks };
            (run, Some(summary))
        }
        (scenario, Some(setup)) => {
            let mix = match scenario {
                Scenario::Browse => Mix::browse(),
                Scenario::Checkout => Mix::checkout(),
                Scenario::Login => Mix::login(),
                _ => site.manifest.as_ref().map_or(Mix::browse(), |m| mix(&m.spec.workload.mix)),
            };
            say(&format!("{}: {} op/s for {} over {connections} connections…", scenario.name(), rate, humantime::format_duration(duration)));
            (rt.block_on(scalectl_loadgen::run(&target, &config, ShopWorkload { setup, mix, run_id }, None))?, None)
        }
        (_, None) => unreachable!("every shop scenario has a setup"),
    };
    let slos = match (&site.manifest, args.scenario) {
        (Some(m), Scenario::Browse | Scenario::Checkout | Scenario::Mixed) => {
            let s = &m.spec.slos;
            let slos = Slos {
                latency_p95_ms: f64::from(s.latency_p95_ms),
                latency_p99_ms: f64::from(s.latency_p99_ms),
                error_ratio: s.error_ratio,
                availability: Some(s.availability),
                min_rate_share: 0.95,
            };
            Some(slo::judge(&run, &slos))
        }
        _ => None,
    };
    let report = Report {
        environment: site.env.clone(),
        url: site.url.clone(),
        scenario: args.scenario.name().to_owned(),
        seed: args.seed,
        setup: setup_stats,
        run,
        slos,
        flash: flash_summary,
    };
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&report)).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("report written to {}", path.display()));
    }
    let mut stdout = std::io::stdout().lock();
    match ctx.format {
        Format::Json => print_json(&report, &mut stdout)?,
        Format::Text => report::text(&report, &mut stdout)?,
    }
    stdout.flush()?;
    let failures = report.failures();
    for f in &failures {
        eprintln!("{f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
