//! The `shop` binary: `serve` (HTTP API), `worker` (outbox drain, order partitions),
//! `migrate`, `partition-orders`, `routes` (which paths each role serves).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shop::config::{RateLimits, RateSpec, Role, Roles, Settings};
use shop::db::{Db, Pooler};
use shop::outbox::WorkerConfig;
use shop::partitions::{self, PartitionConfig};
use shop::request_log::WithRequest;
use sqlx::postgres::PgPoolOptions;

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers
/// on whichever worker thread polls it, and glibc's arenas spent about 8 % of the shop's
/// CPU in a checkout run (`perf`); see BENCHMARKS.md for what the switch bought.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shop", version, about = "The e-commerce service deployed by scalectl")]
struct Cli {
    /// Threads that run requests: 0 for one per core, 1 runs everything on one thread.
    /// scalectl's local target gives the replicas of a pool their part of the machine's
    /// cores, as more threads than cores only add context switches and work stealing
    #[arg(long, env = "SHOP_THREADS", default_value_t = 0, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// PostgreSQL primary
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "SHOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Connections per database pool
    #[arg(long, env = "SHOP_DB_POOL_SIZE", default_value_t = 10)]
    db_pool_size: u32,
}

/// How `serve` and `worker` reach PostgreSQL (`migrate` always goes straight to it).
#[derive(clap::Args)]
struct Pooling {
    /// `transaction` when DATABASE_URL (and READ_DATABASE_URL) lead to a pooler in
    /// transaction mode such as PgBouncer: unnamed statements, each in a transaction
    #[arg(long, env = "SHOP_DB_POOLER", default_value_t = Pooler::None)]
    db_pooler: Pooler,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API
    Serve {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        pooling: Pooling,
        /// Replica for catalog and order-history reads (a user's own recent writes
        /// are still read from the primary)
        #[arg(long, env = "READ_DATABASE_URL", hide_env_values = true)]
        read_database_url: Option<String>,
        /// Redis for caching, rate limits and the flash-sale gate; optional
        #[arg(long, env = "REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        #[arg(long, env = "SHOP_REDIS_PREFIX", default_value = "shop:")]
        redis_prefix: String,
        /// Redis Sentinels (host:port, comma-separated) to ask where the primary is, at
        /// start and after Redis fails; the password is REDIS_URL's
        #[arg(long, env = "SHOP_REDIS_SENTINELS", value_delimiter = ',')]
        redis_sentinels: Vec<String>,
        /// The name the Sentinels know the primary by
        #[arg(long, env = "SHOP_REDIS_SENTINEL_MASTER", default_value = "shop")]
        redis_sentinel_master: String,
        /// Address to listen on; port 0 picks a free port (logged as `listening on`)
        #[arg(long, env = "SHOP_BIND", default_value = "127.0.0.1:8080")]
        bind: String,
        /// Route groups: auth, catalog, cart, orders, flash or all (comma-separated)
        #[arg(long, env = "SHOP_ROLES", default_value = "all")]
        roles: Roles,
        /// Session lifetime in seconds
        #[arg(long, env = "SHOP_TOKEN_TTL", default_value_t = 86_400)]
        token_ttl: u64,
        /// Seconds an instance trusts a session it looked up before asking the database
        /// again (a session deleted there still works this long); 0 asks every time
        #[arg(long, env = "SHOP_SESSION_CACHE_SECS", default_value_t = 10)]
        session_cache_secs: u64,
        /// Seconds Redis keeps a session for every instance (written at login and after
        /// a database lookup, never past the session's expiry); 0 keeps none there, nor
        /// does a session cache of 0
        #[arg(long, env = "SHOP_SESSION_SHARE_SECS", default_value_t = 86_400)]
        session_share_secs: u64,
        /// Login rate per client as `rate:burst` (per second), `0` disables
        #[arg(long, env = "SHOP_RATE_LOGIN", default_value_t = RateSpec::default())]
        rate_login: RateSpec,
        #[arg(long, env = "SHOP_RATE_REGISTER", default_value_t = RateSpec::default())]
        rate_register: RateSpec,
        /// Search (`GET /products?q=`) rate per client
        #[arg(long, env = "SHOP_RATE_SEARCH", default_value_t = RateSpec::default())]
        rate_search: RateSpec,
        /// Seconds a user's reads stay on the primary after they wrote
        #[arg(long, env = "SHOP_READ_YOUR_WRITES_SECS", default_value_t = 5)]
        read_your_writes_secs: u64,
        /// Requests slower than this are logged at info; others at debug (5xx at warn)
        #[arg(long, env = "SHOP_SLOW_REQUEST_MS", default_value_t = 500)]
        slow_request_ms: u64,
        /// Seconds a client may take to send a request's head (or idle between requests) before it is disconnected
        #[arg(long, env = "SHOP_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
        header_read_timeout_secs: u64,
        /// TEST ONLY: checkout ignores Idempotency-Key (duplicates orders on retry)
        #[arg(long, env = "SHOP_UNSAFE_NON_IDEMPOTENT_CHECKOUT", hide = true, default_value_t = false,
              value_parser = clap::builder::BoolishValueParser::new())]
        unsafe_non_idempotent_checkout: bool,
    },
    /// Drain the outbox into notifications (several workers may run)
    Worker {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        pooling: Pooling,
        #[arg(long, env = "SHOP_WORKER_BATCH", default_value_t = 100)]
        batch_size: i64,
        /// Attempts before an event moves to dead_letters
        #[arg(long, env = "SHOP_WORKER_MAX_ATTEMPTS", default_value_t = 5)]
        max_attempts: i32,
        #[arg(long, env = "SHOP_WORKER_POLL_MS", default_value_t = 500)]
        poll_interval_ms: u64,
        /// First retry delay; doubles per attempt up to 5 minutes
        #[arg(long, env = "SHOP_WORKER_BACKOFF_MS", default_value_t = 1000)]
        base_backoff_ms: u64,
        /// Keep monthly order partitions this many months ahead (at start, then
        /// hourly); needs orders converted by `shop partition-orders`
        #[arg(long, env = "SHOP_ORDER_PARTITIONS_PREMAKE")]
        order_partitions_premake: Option<u32>,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Partition orders by month (converting the plain table once) and create the
    /// partitions up to --premake months ahead; idempotent. Connects to PostgreSQL
    /// directly, never through a transaction pooler
    PartitionOrders {
        #[command(flatten)]
        common: Common,
        /// Months after the current one that get a partition now
        #[arg(long, default_value_t = 3)]
        premake: u32,
    },
    /// Apply the embedded migrations and exit
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print the path prefixes each role serves, for the balancer in front (a prefix
    /// covers itself and everything under it); needs no database
    Routes {
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// With a broker the worker relays the outbox to it and consumes its streams by
/// priority; without one it drains the outbox directly.
#[derive(clap::Args)]
struct BrokerArgs {
    /// The broker (Redis Streams), such as redis://:PASSWORD@10.5.1.29:6379/; give it
    /// in the environment, where `ps` does not show the password
    #[arg(long, env = "SHOP_BROKER_URL", hide_env_values = true)]
    broker_url: Option<String>,
    /// Consumers per priority in this process: high (payment and stock follow-ups),
    /// normal (notifications), low (reports and exports)
    #[arg(long, env = "SHOP_BROKER_POOLS", default_value = "high=2,normal=2,low=1")]
    broker_pools: String,
    /// This worker's consumer name, unique among the workers; the same name after a
    /// restart settles at once what the worker held (default: worker-PID, whose held
    /// entries another worker claims after 30 s)
    #[arg(long, env = "SHOP_BROKER_CONSUMER")]
    broker_consumer: Option<String>,
    /// Prepended to the stream names
    #[arg(long, env = "SHOP_BROKER_PREFIX", default_value = "shop:")]
    broker_prefix: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// One thread runs everything on it (no handing tasks between threads); more share
/// the work with stealing. Password hashing goes to the blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime(cli.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shop: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait on stragglers (e.g. pool reconnect attempts) once we decided to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "shop failed");
            eprintln!("shop: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // A closed log pipe must not take the service down: without this, a failed log
    // write is reported with eprintln!, which panics the request's task.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    // Lines logged while a request runs also name the request (shop::request_log).
    match format {
        LogFormat::Json => builder.json().event_format(WithRequest::json()).init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).event_format(WithRequest::text()).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// One connection straight to PostgreSQL, for the one-shot commands.
async fn direct_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(10)).connect(url).await.context("cannot connect to the database")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            common,
            pooling,
            read_database_url,
            redis_url,
            redis_prefix,
            redis_sentinels,
            redis_sentinel_master,
            bind,
            roles,
            token_ttl,
            session_cache_secs,
            session_share_secs,
            rate_login,
            rate_register,
            rate_search,
            read_your_writes_secs,
            slow_request_ms,
            header_read_timeout_secs,
            unsafe_non_idempotent_checkout,
        } => {
            init_logging(common.log_format);
            let settings = Settings {
                database_url: common.database_url,
                read_database_url,
                redis_url,
                redis_prefix,
                redis_sentinels,
                redis_sentinel_master,
                db_pool_size: common.db_pool_size,
                db_pooler: pooling.db_pooler,
                roles,
                token_ttl: Duration::from_secs(token_ttl),
                session_cache: Duration::from_secs(session_cache_secs),
                session_share: Duration::from_secs(session_share_secs),
                rate_limits: RateLimits { login: rate_login, register: rate_register, search: rate_search },
                read_your_writes_window: Duration::from_secs(read_your_writes_secs),
                slow_request: Duration::from_millis(slow_request_ms),
                header_read_timeout: Duration::from_secs(header_read_timeout_secs),
                unsafe_non_idempotent_checkout,
            };
            // Bind before anything slow, then report the real port: scalectl and tests
            // read it from this line.
            let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| format!("cannot bind {bind}"))?;
            let addr = listener.local_addr().context("cannot read the bound address")?;
            let state = shop::AppState::connect(settings).await.context("cannot build the service state")?;
            tracing::info!(%addr, "listening on {addr}");
            shop::serve(listener, state, shutdown_signal()).await.context("server failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { common, pooling, batch_size, max_attempts, poll_interval_ms, base_backoff_ms, order_partitions_premake, broker } => {
            init_logging(common.log_format);
            let pools = match &broker.broker_url {
                Some(_) => shop::broker::parse_pools(&broker.broker_pools).map_err(|e| anyhow::anyhow!("--broker-pools: {e}"))?,
                None => Vec::new(),
            };
            // A connection for each consumer, the relay and the partition keeper.
            let consumers: usize = pools.iter().map(|(_, n)| n).sum();
            let pool_size = common.db_pool_size.max(consumers as u32 + 2);
            let db = Db::connect_lazy(&common.database_url, pool_size, pooling.db_pooler).context("invalid database url")?;
            let config = WorkerConfig {
                batch_size: batch_size.max(1),
                max_attempts: max_attempts.max(1),
                base_backoff: Duration::from_millis(base_backoff_ms),
                max_backoff: Duration::from_secs(300),
                poll_interval: Duration::from_millis(poll_interval_ms),
            };
            let keeper =
                order_partitions_premake.map(|premake| tokio::spawn(partitions::keep_ahead_forever(db.clone(), premake, Duration::from_secs(3600))));
            match broker.broker_url {
                Some(url) => {
                    let consumer = broker.broker_consumer.unwrap_or_else(|| format!("worker-{}", std::process::id()));
                    let to = shop::broker::BrokerConfig { url, prefix: broker.broker_prefix, consumer, pools };
                    tracing::info!(pools = broker.broker_pools, "outbox worker started: relaying to the broker and consuming it");
                    shop::broker::run(db, config, to, shutdown_signal()).await.context("invalid broker url")?;
                }
                None => {
                    tracing::info!("outbox worker started");
                    shop::outbox::run(db, config, shutdown_signal()).await;
                }
            }
            if let Some(keeper) = keeper {
                keeper.abort();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::PartitionOrders { common, premake } => {
            init_logging(common.log_format);
            let db = Db::new(direct_pool(&common.database_url).await?, Pooler::None);
            let config = PartitionConfig { premake, today: None };
            let report = partitions::partition_orders(&db, config).await.context("partitioning orders failed")?;
            tracing::info!(
                converted = report.converted,
                created = ?report.created,
                moved = report.moved,
                "orders partitioned by month"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Routes { output } => {
            let table = Role::ALL.map(|role| (role.as_str(), shop::http::prefixes(role)));
            match output {
                Output::Json => {
                    let roles: serde_json::Map<String, serde_json::Value> = table.into_iter().map(|(role, p)| (role.to_owned(), p.into())).collect();
                    println!("{}", serde_json::json!({ "roles": roles }));
                }
                Output::Text => {
                    for (role, p) in table {
                        println!("{role:<8} {}", p.join(" "));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { common } => {
            init_logging(common.log_format);
            let pool = direct_pool(&common.database_url).await?;
            shop::db::migrate(&pool).await.context("migration failed")?;
            tracing::info!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
    }
}
