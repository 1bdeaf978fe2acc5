//! Database access shared by `serve`, `worker`, `migrate` and the tests: [`Db`], a pool
//! that knows whether a transaction pooler sits in front of PostgreSQL, keeps the
//! connections it just used ready ([`warm`]) and counts the statements it runs; its
//! transactions, [`Tx`]; and the embedded migrations.
//!
//! Behind PgBouncer in transaction mode a client holds a server connection only while a
//! transaction is open. sqlx sends a statement in two round trips (Parse + Describe +
//! Sync, then Bind + Execute + Sync) and names the statements it caches (`sqlx_s_N`, per
//! client connection), so it assumes one server connection per client. With
//! [`Pooler::Transaction`]:
//! - the statement cache is off and every statement is unnamed ("non-persistent"), so
//!   nothing of ours outlives a transaction on a server connection;
//! - every statement runs inside an explicit transaction (the caller's [`Tx`], or one
//!   that `&Db` opens around it), so both round trips reach the same server connection.
//!
//! Call sites do not know the mode: they pass `&Db` or `&mut Tx` as sqlx executors. The
//! default mode ([`Pooler::None`]) keeps sqlx's cached named statements. Types are all
//! built in, so sqlx never runs its own (named) type-lookup queries.

mod warm;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection, Database, Describe, Either, Execute, Executor, PgPool, Postgres, TransactionManager};

use warm::{Conn, PING_IDLE_AFTER, Warm, ended};

/// sqlx's own BEGIN/COMMIT/ROLLBACK bookkeeping, used on connections we hold ourselves.
type Txm = <Postgres as Database>::TransactionManager;

/// The migrations in `app/migrations`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration. Needs a direct connection to PostgreSQL (the
/// migrator holds a session-level advisory lock), never a transaction pooler.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// What sits between the shop and PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooler {
    /// Nothing, or a pooler in session mode: cached named statements.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`).
    Transaction,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown pooler `{0}` (expected transaction or none)")]
pub struct ParsePoolerError(String);

impl FromStr for Pooler {
    type Err = ParsePoolerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "none" | "" => Ok(Pooler::None),
            "transaction" => Ok(Pooler::Transaction),
            other => Err(ParsePoolerError(other.to_owned())),
        }
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooler::None => "none",
            Pooler::Transaction => "transaction",
        })
    }
}

/// How handlers' transactions begin. They are short and find rows by key, so a generic
/// plan is always right for them; but PostgreSQL re-plans, on every call, a cached
/// statement whose parameter is an array (`id = ANY($1)`, `unnest($1)`), because each
/// custom plan knows the array's length and looks cheaper. Measured with
/// pg_stat_statements: three such statements per checkout were planned on every call,
/// about 0.3 ms of the database's CPU per order.
///
/// A generic plan guesses ten elements for an array it cannot see, which on a small
/// table (a young shop's catalog, a cart) is a large share of the rows: it chose
/// sequential and bitmap scans, each starting with a relation-size lookup and, for a
/// bitmap, a bitmap built per call. Turning both off makes every key lookup an index
/// scan; a statement with no usable index still scans (the settings only add cost).
/// Measured in a checkout run: the database's time per order came down to what pgbench
/// spends on the same SQL (bench/shop.sh with BENCH_STATEMENTS=1).
///
/// `SET LOCAL` ends with the transaction, so it is safe through a transaction pooler
/// too, and all of it travels in the one round trip a plain `BEGIN` takes.
const BEGIN_OLTP: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
     SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off";

/// A connection pool used the way [`Pooler`] allows. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    warm: Arc<Warm>,
    pooler: Pooler,
    statements: Arc<AtomicU64>,
}

impl Db {
    /// A pool of at most `size` connections that connects on first use, so a process
    /// starts (and reports not-ready) while the database is down.
    pub fn connect_lazy(url: &str, size: u32, pooler: Pooler) -> Result<Db, sqlx::Error> {
        let mut options: PgConnectOptions = url.parse()?;
        if pooler == Pooler::Transaction {
            // PgBouncer refuses startup parameters it does not track unless told to
            // ignore them; the shop reads no floats as text, so it need not send this one.
            options = options.statement_cache_capacity(0).extra_float_digits(None);
        }
        let pool = PgPoolOptions::new()
            .max_connections(size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection it takes from the pool: one more round trip
            // per acquire, five per order. A connection that was busy a moment ago is
            // alive; only one that sat idle (through a restart, say) is worth a ping.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Ok(Db::with_warm(pool, pooler, true))
    }

    /// Wraps an existing pool; with [`Pooler::Transaction`] the pool must have been
    /// built with `statement_cache_capacity(0)`. Others may take connections from that
    /// pool directly, so connections are not kept warm here (see [`warm`]).
    pub fn new(pool: PgPool, pooler: Pooler) -> Db {
        Db::with_warm(pool, pooler, false)
    }

    fn with_warm(pool: PgPool, pooler: Pooler, keep: bool) -> Db {
        let size = pool.options().get_max_connections();
        Db { warm: Arc::new(Warm::new(size, keep)), pool, pooler, statements: Arc::default() }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connections open and not in use: sqlx's idle ones and our warm ones.
    pub fn idle(&self) -> usize {
        self.pool.num_idle() + self.warm.len()
    }

    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// Statements run through this pool (and its transactions) since it was built.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Begins a handler's transaction, whose prepared statements use generic plans (see
    /// [`BEGIN_OLTP`]), in the one round trip a plain `BEGIN` takes.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with(BEGIN_OLTP).await
    }

    /// The transaction a single statement gets behind a transaction pooler: a plain
    /// `BEGIN`, so searches with optional filters keep their custom plans.
    async fn begin_plain(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with("BEGIN").await
    }

    async fn begin_with(&self, begin: &'static str) -> Result<Tx, sqlx::Error> {
        let mut conn = self.warm.acquire(&self.pool).await?;
        Txm::begin(&mut conn, Some(Cow::Borrowed(begin))).await?;
        Ok(Tx { conn, open: true, pooler: self.pooler, statements: self.statements.clone() })
    }

    /// Runs one statement outside a transaction on a connection of its own; rows are
    /// collected, which the shop's small result sets afford.
    async fn run_alone<'q, E: 'q + Execute<'q, Postgres>>(&self, query: E) -> Result<Vec<Step>, sqlx::Error> {
        self.count();
        let mut conn = self.warm.acquire(&self.pool).await?;
        let steps = (&mut *conn).fetch_many(query).try_collect().await;
        conn.set_clean(ended(&steps));
        steps
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

/// A transaction on a [`Db`]; use `&mut tx` as the executor. Dropped without
/// [`Tx::commit`], it rolls back (the ROLLBACK is queued, as sqlx's own transactions
/// do, and the connection goes back through sqlx's pool, which sends it).
pub struct Tx {
    conn: Conn,
    open: bool,
    pooler: Pooler,
    statements: Arc<AtomicU64>,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let result = Txm::commit(&mut self.conn).await;
        self.end(&result);
        result
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let result = Txm::rollback(&mut self.conn).await;
        self.end(&result);
        result
    }

    /// After COMMIT or ROLLBACK: a connection whose transaction ended is reused warm.
    /// One that failed stays open for `drop`, which queues a ROLLBACK as sqlx does
    /// (sqlx still counts the transaction as open and would refuse the next BEGIN).
    fn end(&mut self, result: &Result<(), sqlx::Error>) {
        if result.is_ok() {
            self.open = false;
            self.conn.set_clean(true);
        }
    }

    fn statement<'q, E: Execute<'q, Postgres>>(&self, query: E) -> Statement<E> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        Statement { persistent: self.pooler == Pooler::None && query.persistent(), query }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // Queued, not sent: the connection is not clean, so sqlx's pool flushes it
            // with its ping before anyone else may use the connection.
            Txm::start_rollback(&mut self.conn);
        }
    }
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx").field("open", &self.open).field("pooler", &self.pooler).finish()
    }
}

/// A query with its persistence overridden (false: an unnamed statement, not cached).
struct Statement<E> {
    query: E,
    persistent: bool,
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Statement<E> {
    fn sql(&self) -> &'q str {
        self.query.sql()
    }
    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.query.statement()
    }
    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.query.take_arguments()
    }
    fn persistent(&self) -> bool {
        self.persistent
    }
}

/// Explicit prepares create named statements, which a transaction pooler would leak.
fn refuse_named(pooler: Pooler) -> Result<(), sqlx::Error> {
    match pooler {
        Pooler::None => Ok(()),
        Pooler::Transaction => Err(sqlx::Error::Configuration("named prepared statements are not used behind a transaction pooler".into())),
    }
}

type Step = Either<PgQueryResult, PgRow>;

impl<'c> Executor<'c> for &'c mut Tx {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.statement(query);
        (&mut *self.conn).fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.statement(query);
        (&mut *self.conn).fetch_optional(query)
    }

    fn prepare_with<'e, 'q: 'e>(self, sql: &'q str, parameters: &'e [PgTypeInfo]) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            refuse_named(self.pooler)?;
            (&mut *self.conn).prepare_with(sql, parameters).await
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            refuse_named(self.pooler)?;
            (&mut *self.conn).describe(sql).await
        })
    }
}

/// Behind a transaction pooler, each statement gets its own transaction; its rows are
/// collected before the commit, which the shop's small result sets afford.
impl<'c> Executor<'c> for &'c Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let steps = async move {
            if self.pooler == Pooler::None {
                return self.run_alone(query).await;
            }
            let mut tx = self.begin_plain().await?;
            let steps: Vec<Step> = (&mut tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(steps)
        };
        stream::once(steps).map_ok(|steps| stream::iter(steps.into_iter().map(Ok))).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            if self.pooler == Pooler::None {
                let steps = self.run_alone(query).await?;
                return Ok(steps.into_iter().find_map(|step| step.right()));
            }
            let mut tx = self.begin_plain().await?;
            let row = (&mut tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(self, sql: &'q str, parameters: &'e [PgTypeInfo]) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            refuse_named(self.pooler)?;
            self.pool.prepare_with(sql, parameters).await
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            refuse_named(self.pooler)?;
            self.pool.describe(sql).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_poolers() {
        assert_eq!("transaction".parse::<Pooler>().unwrap(), Pooler::Transaction);
        assert_eq!("none".parse::<Pooler>().unwrap(), Pooler::None);
        assert!("session".parse::<Pooler>().is_err());
        assert_eq!(Pooler::Transaction.to_string(), "transaction");
    }
}
