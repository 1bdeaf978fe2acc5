//! `scalectl`: grow an e-commerce backend from one machine to a sharded, multi-region
//! system, and prove it survives faults. This file holds the command line and exit codes;
//! each command lives in `commands/`.

mod apply;
mod commands;
mod driver;
mod home;
mod load;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::load::ManifestArgs;
use crate::output::Format;
use scalectl_core::ops::ExplainOn;

/// Grow an e-commerce backend from a one-machine MVP (level 1, ~10 RPS) to a sharded,
/// multi-region system (level 6, ~1M RPS), and prove it survives faults.
///
/// Exit codes: 0 done, 1 ran and found something (pending changes with
/// `plan --exit-code`, a failed check), 2 error.
#[derive(Debug, Parser)]
#[command(name = "scalectl", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Args)]
struct Global {
    /// Where environments are kept [default: $SCALECTL_HOME, /var/lib/scalectl as root,
    /// else ~/.local/state/scalectl].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Output format: text for people, json for machines.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// No progress lines on stderr.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update an environment and wait until every component is healthy.
    Up(UpArgs),
    /// Stop every process of an environment and delete its data.
    Down(DownArgs),
    /// Show what `up` would change, and why.
    Plan(PlanArgs),
    /// Each component's live health, address, pid and uptime.
    Status(EnvArg),
    /// Questions to the environment's database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Planned switchover of the PostgreSQL leader (level 3 and up); waits until the shop
    /// can write again and reports how long writes paused.
    Switchover(SwitchoverArgs),
    /// The shop's event queue: what is pending, how late deliveries are, and the
    /// dead letters (events that failed every attempt), which can be replayed.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The alerts Alertmanager delivered for an environment (burn-rate, latency, targets
    /// down), each in its latest state, firing ones first; when it resolved.
    Alerts(AlertsArgs),
    /// Traffic at an environment's shop on a fixed schedule (open model), latency from
    /// each request's scheduled start, judged against the level's SLOs; or a flash sale,
    /// checked through the shop and the database. Exit 1 names each missed SLO or check.
    Load(commands::load::LoadArgs),
    /// Faults and experiments: list, validate, inject by hand, heal.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Environments on this machine with level, target, age and TTL.
    List,
    /// Destroy environments whose --ttl has passed.
    Gc(GcArgs),
    /// The last lines of a component's log.
    Logs(LogsArgs),
    /// The six levels side by side.
    Levels,
    /// What a level adds over the one below, and why.
    Explain(ExplainArgs),
    /// Check manifests and report every problem with its location.
    Validate(ValidateArgs),
    /// Print the JSON Schema of manifests, for editors.
    Schema,
    /// Write every generated config file of an environment to a folder.
    Render(RenderArgs),
    /// Which programs each level needs, which are missing, and how to install them.
    Doctor(DoctorArgs),
    /// Internal: a Patroni cluster's leader watch, which `up` starts (local target).
    #[command(name = "__leader-watch", hide = true)]
    LeaderWatch {
        #[arg(long)]
        config: PathBuf,
    },
    /// Internal: the webhook receiver that keeps Alertmanager's deliveries (local target).
    #[command(name = "__alert-receiver", hide = true)]
    AlertReceiver {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        journal: PathBuf,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ChaosCommand {
    /// The shipped experiments, with the levels they apply to and their faults.
    List,
    /// Check experiment files (or shipped names); every problem with file:line:column.
    Validate {
        #[arg(required = true, value_name = "FILE|NAME")]
        files: Vec<String>,
    },
    /// Inject one fault by hand: node-loss, freeze, restart, partition, switchover,
    /// redis-loss, shop-instance-loss. Targets: leader, sync-standby, replica, replicas,
    /// db, redis, shop:any, shops (two, comma-separated, for a partition).
    Inject {
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
        #[arg(long, value_name = "KIND")]
        fault: scalectl_core::fault::FaultKind,
        /// What it hits; `--target leader,replicas` for a partition's two sides.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<scalectl_core::fault::Selector>,
        /// Undo it after this long (freeze, partition); without, it stays until `chaos heal`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        hold: Option<std::time::Duration>,
    },
    /// Run an experiment (a file or a shipped name) on an environment under load, and
    /// check the recorded history against the database: exit 1 when a check fails.
    Run {
        #[arg(value_name = "FILE|NAME", required_unless_present = "random", conflicts_with = "random")]
        experiment: Option<String>,
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
        /// Run it this many times (each with its own report).
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Seed for the buyers and products the workload uses, and with --random for the
        /// schedule [default: 1, or with --random one drawn from the clock and printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Instead of an experiment, a random schedule of --faults faults (level 3 and 4),
        /// some overlapping, drawn from --seed: the same seed gives the same schedule.
        #[arg(long)]
        random: bool,
        /// How many faults a --random schedule has.
        #[arg(long, default_value_t = 10, requires = "random", value_parser = clap::value_parser!(u32).range(1..=200))]
        faults: u32,
        /// Where to write the SVG timeline (the history goes beside it as .jsonl)
        /// [default: in the environment's directory].
        #[arg(long, value_name = "FILE.svg")]
        report: Option<std::path::PathBuf>,
    },
    /// Run the experiments the environment's manifest lists as gates (spec.chaos.gates),
    /// each once, one after another: exit 1 if any fails or cannot run. What a pipeline
    /// calls before promoting a change.
    Gate {
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
        /// Run these (files or shipped names) instead of the manifest's gates.
        #[arg(value_name = "FILE|NAME")]
        experiments: Vec<String>,
        /// Seed for the buyers and products each workload uses.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Undo every lingering fault on an environment: network rules, frozen processes.
    Heal {
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
    },
}

#[derive(Debug, Args)]
struct AlertsArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// Exit 1 when any alert fires.
    #[arg(long)]
    exit_code: bool,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Pending events (due now, waiting to retry), the oldest one's age, deliveries in
    /// the last minute, the lag from an order's transaction to its notification's (p50,
    /// p99, replays left out), and how many events are dead.
    Status(EnvArg),
    /// Dead letters: events that failed every attempt, with the last error.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// The dead letters by event id, with topic, attempts, replays, age and last error
    /// (`-o json` adds the payloads).
    List {
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
        /// How many to show.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
    /// Send dead letters back to the outbox under their event ids, with the payload as
    /// stored in `dead_letters` (correct it there first if the payload was at fault):
    /// workers deliver them at most once. All or nothing: when one named event is not a
    /// dead letter, none is replayed.
    Replay {
        #[arg(long, short = 'e', value_name = "NAME")]
        env: String,
        /// The events to replay, as `dlq list` shows them.
        #[arg(value_name = "EVENT", required_unless_present = "all", conflicts_with = "all")]
        events: Vec<i64>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// The statements that cost the most, by total and by mean time (pg_stat_statements,
    /// level 2 and up), so you can find the query that needs an index.
    SlowQueries(SlowQueriesArgs),
    /// One statement's plan with buffers, run on a replica (the primary with --primary,
    /// or when there is none) as the shop's role in a read-only transaction that is
    /// rolled back, so a statement that writes is refused. For the query slow-queries
    /// ranks first.
    Explain(DbExplainArgs),
}

#[derive(Debug, Args)]
struct DbExplainArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// The statement, as the shop would send it (values in place of $1, $2, …).
    #[arg(value_name = "SQL")]
    sql: String,
    /// Ask the primary rather than a replica.
    #[arg(long)]
    primary: bool,
    /// Only plan the statement, without running it (no times, no buffers).
    #[arg(long)]
    no_analyze: bool,
    /// Cancel the statement after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    timeout: u32,
}

#[derive(Debug, Args)]
struct SlowQueriesArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// How many statements to show in each list.
    #[arg(long, short = 'n', default_value_t = 10)]
    limit: usize,
}

#[derive(Debug, Args)]
struct SwitchoverArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// The node to promote, such as postgres/r1-pg-2 or r1-pg-2 [default: a synchronous standby].
    #[arg(long, value_name = "NODE")]
    to: Option<String>,
}

#[derive(Debug, Args)]
struct EnvArg {
    /// Environment name.
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
}

/// What `up` and `plan` act on: a manifest, an environment and a target.
#[derive(Debug, Args)]
struct Desired {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Environment name [default: level-N].
    #[arg(long, short = 'e', value_name = "NAME")]
    env: Option<String>,
    /// Where to run it: local, kubernetes or aws [default: the environment's, else local].
    #[arg(long, short = 't', value_name = "TARGET", value_parser = parse_target)]
    target: Option<scalectl_core::Target>,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    desired: Desired,
    /// Let `scalectl gc` destroy the environment this long after this `up` (30m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<std::time::Duration>,
    /// kubernetes: take over fields another field manager owns (server-side apply's
    /// force); without it such a conflict stops `up` and names the manager.
    #[arg(long)]
    force_conflicts: bool,
}

#[derive(Debug, Args)]
struct DownArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// Only stop the processes; keep data and state for the next `up`.
    #[arg(long)]
    keep_data: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    desired: Desired,
    /// Exit 1 when there are changes (0 when none), for CI.
    #[arg(long)]
    exit_code: bool,
}

#[derive(Debug, Args)]
struct GcArgs {
    /// Only say what would be destroyed.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    #[arg(long, short = 'e', value_name = "NAME")]
    env: String,
    /// Component id or a unique part of it (`postgres`, `shop/r1-all-1`).
    component: String,
    /// How many lines.
    #[arg(long, short = 'n', default_value_t = 50)]
    lines: usize,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    #[arg(long, short = 'l', value_parser = clap::value_parser!(u8).range(1..=6))]
    level: u8,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Manifest files to check, each on its own.
    files: Vec<PathBuf>,
    /// Check a built-in level (with -f and --set) instead.
    #[command(flatten)]
    manifest: ManifestArgs,
}

#[derive(Debug, Args)]
struct RenderArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// An existing environment (uses its addresses and recorded manifest).
    #[arg(long, short = 'e', value_name = "NAME")]
    env: Option<String>,
    /// What to render for: local (config files) or kubernetes (objects as YAML, one file
    /// per object in apply order) [default: the environment's, else local].
    #[arg(long, short = 't', value_name = "TARGET", value_parser = parse_target)]
    target: Option<scalectl_core::Target>,
    /// Folder to write into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// Only this level [default: all six].
    #[arg(long, short = 'l', value_parser = clap::value_parser!(u8).range(1..=6))]
    level: Option<u8>,
    #[arg(long, short = 't', value_name = "TARGET", value_parser = parse_target, default_value = "local")]
    target: scalectl_core::Target,
}

fn parse_target(s: &str) -> Result<scalectl_core::Target, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let mut err = std::io::stderr().lock();
            match e.downcast_ref::<load::Invalid>() {
                Some(invalid) => {
                    let _ = writeln!(err, "error: {invalid}");
                }
                None => {
                    let _ = writeln!(err, "error: {e:#}");
                }
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = commands::Ctx {
        home: home::Home::new(cli.global.home.clone().unwrap_or_else(home::default_home)),
        format: cli.global.output,
        progress: output::Progress::new(cli.global.quiet),
        force_conflicts: matches!(&cli.command, Command::Up(a) if a.force_conflicts),
    };
    match cli.command {
        Command::Up(a) => commands::env::up(&g, &a.desired.manifest, a.desired.env, a.desired.target, a.ttl),
        Command::Down(a) => commands::env::down(&g, &a.env, a.keep_data),
        Command::Plan(a) => commands::env::plan(&g, &a.desired.manifest, a.desired.env, a.desired.target, a.exit_code),
        Command::Status(a) => commands::env::status(&g, &a.env),
        Command::Db(DbCommand::SlowQueries(a)) => commands::data::slow_queries(&g, &a.env, a.limit),
        Command::Db(DbCommand::Explain(a)) => {
            let on = if a.primary { ExplainOn::Primary } else { ExplainOn::Replica };
            commands::data::explain(&g, &a.env, &a.sql, on, !a.no_analyze, a.timeout)
        }
        Command::Switchover(a) => commands::data::switchover(&g, &a.env, a.to.as_deref()),
        Command::Queue(QueueCommand::Status(a)) => commands::queue::status(&g, &a.env),
        Command::Queue(QueueCommand::Dlq(DlqCommand::List { env, limit })) => commands::queue::dlq_list(&g, &env, limit),
        Command::Queue(QueueCommand::Dlq(DlqCommand::Replay { env, events, all })) => {
            let which = if all { commands::queue::Which::All } else { commands::queue::Which::Events(&events) };
            commands::queue::dlq_replay(&g, &env, which)
        }
        Command::Load(a) => commands::load::load(&g, &a, cli.global.quiet),
        Command::Chaos(ChaosCommand::List) => commands::chaos::list(&g),
        Command::Chaos(ChaosCommand::Validate { files }) => commands::chaos::validate(&g, &files),
        Command::Chaos(ChaosCommand::Inject { env, fault, target, hold }) => commands::chaos::inject(&g, &env, fault, &target, hold),
        Command::Chaos(ChaosCommand::Heal { env }) => commands::chaos::heal(&g, &env),
        Command::Chaos(ChaosCommand::Run { experiment, env, runs, seed, faults, report, .. }) => {
            let experiment = match experiment {
                Some(e) => commands::chaos_run::What::Experiment(e),
                None => commands::chaos_run::What::Random { faults: faults as usize },
            };
            commands::chaos_run::run(&g, &commands::chaos_run::RunArgs { experiment, env, runs, seed, report })
        }
        Command::Chaos(ChaosCommand::Gate { env, experiments, seed }) => commands::chaos_gate::gate(&g, &env, &experiments, seed),
        Command::List => commands::fleet::list(&g),
        Command::Gc(a) => commands::fleet::gc(&g, a.dry_run),
        Command::Logs(a) => commands::env::logs(&g, &a.env, &a.component, a.lines),
        Command::Levels => commands::info::levels(&g),
        Command::Explain(a) => commands::info::explain(&g, a.level),
        Command::Validate(a) => commands::info::validate(&g, &a.files, &a.manifest),
        Command::Schema => commands::info::schema(),
        Command::Render(a) => commands::env::render(&g, &a.manifest, a.env, a.target, &a.out),
        Command::Doctor(a) => commands::info::doctor(&g, a.level, a.target),
        Command::Alerts(a) => commands::alerts::alerts(&g, &a.env, a.exit_code),
        Command::AlertReceiver { listen, journal } => crate::driver::alert_receiver(listen, &journal).map(|()| ExitCode::SUCCESS),
        Command::LeaderWatch { config } => crate::driver::leader_watch(&config).map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "scalectl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
