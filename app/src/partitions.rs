//! Orders partitioned by month of `created_at` (UTC): `shop partition-orders` converts
//! the plain table once and keeps partitions ahead; the worker can keep them ahead too.
//!
//! The partitioned layout changes two guarantees, on purpose:
//!
//! - **No `UNIQUE (user_id, idempotency_key)` on orders.** A unique constraint on a
//!   partitioned table must include the partition key, and with `created_at` in it the
//!   constraint would no longer stop a duplicate. Exactly-once rests on
//!   `idempotency_keys` (primary key `(user_id, key)`), which every checkout and flash
//!   purchase inserts first in the transaction that writes the order — one claimed key,
//!   one order — and which is not partitioned.
//! - **No foreign keys to `orders(id)`** (from order_items, payments, invoices,
//!   deliveries, refunds, idempotency_keys). A foreign key must reference a unique
//!   constraint, which here would be `(id, created_at)`, a column the referencing tables
//!   do not carry. The references still hold: those rows are written only in the
//!   transaction that inserts the order, with the id that insert returned (or, for
//!   refunds, after reading the order's item in the same transaction), and orders are
//!   never deleted or moved to another id.
//!
//! Ids keep coming from one sequence, so `id` stays unique across partitions (the
//! primary key is `(id, created_at)`), and lookups by id probe each partition's index.
//! A default partition catches rows outside every monthly range, so a lapsed premake
//! degrades to a fuller default partition instead of failed checkouts; the next premake
//! moves such rows into their month.

use std::time::Duration;

use time::{Date, Month, OffsetDateTime};

use crate::db::{Db, Tx};

/// Serializes conversions and premakes across processes (transaction-scoped, so it
/// also works through a transaction pooler).
const LOCK_KEY: i64 = 0x5348_4f50_5041_5254; // "SHOPPART"

#[derive(Clone, Copy, Debug)]
pub struct PartitionConfig {
    /// Months after the current one that must have a partition.
    pub premake: u32,
    /// The day that decides the current month; `None`: the database's today (UTC).
    pub today: Option<Date>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// The plain table was converted in this run.
    pub converted: bool,
    /// Partitions created in this run, oldest first.
    pub created: Vec<String>,
    /// Rows moved from the default partition into their month's partition (the old
    /// table's rows of the current month take that path during the conversion).
    pub moved: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("orders is not partitioned yet; run `shop partition-orders` first")]
    NotPartitioned,
    #[error("partitioning orders failed at `{step}`")]
    Step {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Attaches the step's name to a database error.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, PartitionError>;
}

impl<T> Step<T> for Result<T, sqlx::Error> {
    fn step(self, step: &'static str) -> Result<T, PartitionError> {
        self.map_err(|source| PartitionError::Step { step, source })
    }
}

/// One calendar month in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: i32,
    pub month: Month,
}

impl YearMonth {
    pub fn of(date: Date) -> Self {
        YearMonth { year: date.year(), month: date.month() }
    }
    pub fn next(self) -> Self {
        match self.month {
            Month::December => YearMonth { year: self.year + 1, month: Month::January },
            m => YearMonth { year: self.year, month: m.next() },
        }
    }
    /// `orders_2026_11`
    pub fn table(self) -> String {
        format!("orders_{:04}_{:02}", self.year, self.month as u8)
    }
    /// The first instant of the month as a timestamptz literal (UTC).
    fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year, self.month as u8)
    }
}

/// The current month and `premake` months after it.
pub fn months_ahead(today: Date, premake: u32) -> Vec<YearMonth> {
    std::iter::successors(Some(YearMonth::of(today)), |m| Some(m.next())).take(premake as usize + 1).collect()
}

/// Converts a plain `orders` table into the monthly layout (if it is not already) and
/// creates the missing partitions up to `premake` months ahead, in one transaction.
/// Idempotent: a second run only adds partitions that have come due.
pub async fn partition_orders(db: &Db, config: PartitionConfig) -> Result<PartitionReport, PartitionError> {
    let mut tx = begin_locked(db).await?;
    let today = today(&mut tx, config.today).await?;
    let mut report = PartitionReport::default();
    if !is_partitioned(&mut tx).await? {
        convert(&mut tx, YearMonth::of(today)).await?;
        report.converted = true;
    }
    premake(&mut tx, today, config.premake, &mut report).await?;
    tx.commit().await.step("commit")?;
    Ok(report)
}

/// Creates the missing partitions of an already partitioned `orders`; never converts.
pub async fn keep_ahead(db: &Db, config: PartitionConfig) -> Result<PartitionReport, PartitionError> {
    let mut tx = begin_locked(db).await?;
    if !is_partitioned(&mut tx).await? {
        return Err(PartitionError::NotPartitioned);
    }
    let today = today(&mut tx, config.today).await?;
    let mut report = PartitionReport::default();
    premake(&mut tx, today, config.premake, &mut report).await?;
    tx.commit().await.step("commit")?;
    Ok(report)
}

/// Runs [`keep_ahead`] now and then every `every`, logging what it did (for `shop
/// worker`); a failure is retried after a minute.
pub async fn keep_ahead_forever(db: Db, premake: u32, every: Duration) {
    let config = PartitionConfig { premake, today: None };
    loop {
        let wait = match keep_ahead(&db, config).await {
            Ok(report) => {
                if !report.created.is_empty() {
                    tracing::info!(created = ?report.created, moved = report.moved, "order partitions created");
                }
                every
            }
            Err(e @ PartitionError::NotPartitioned) => {
                tracing::warn!("{e}");
                every
            }
            Err(e) => {
                let error = format!("{:#}", anyhow::Error::new(e));
                tracing::error!(error, "keeping order partitions ahead failed");
                every.min(Duration::from_secs(60))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn begin_locked(db: &Db) -> Result<Tx, PartitionError> {
    let mut tx = db.begin().await.step("begin")?;
    // Waiting behind long transactions must not stall checkouts queued behind us.
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut tx).await.step("set lock_timeout")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK_KEY).execute(&mut tx).await.step("advisory lock")?;
    Ok(tx)
}

async fn today(tx: &mut Tx, given: Option<Date>) -> Result<Date, PartitionError> {
    match given {
        Some(d) => Ok(d),
        None => {
            let now: OffsetDateTime = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await.step("read the clock")?;
            Ok(now.to_offset(time::UtcOffset::UTC).date())
        }
    }
}

async fn is_partitioned(tx: &mut Tx) -> Result<bool, PartitionError> {
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = 'orders'::regclass").fetch_one(&mut *tx).await.step("inspect orders")?;
    Ok(kind == "p")
}

async fn exec(tx: &mut Tx, step: &'static str, sql: &str) -> Result<u64, PartitionError> {
    Ok(sqlx::query(sql).execute(&mut *tx).await.step(step)?.rows_affected())
}

/// The conversion: the plain table becomes `orders_legacy`, the partition for
/// everything before `current`; its rows from `current` on move to the default
/// partition, from which [`premake`] moves them into their months.
async fn convert(tx: &mut Tx, current: YearMonth) -> Result<(), PartitionError> {
    exec(tx, "lock orders", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").await?;
    let foreign_keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint
         WHERE confrelid = 'orders'::regclass AND contype = 'f' ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await
    .step("list foreign keys to orders")?;
    for (table, name) in &foreign_keys {
        exec(tx, "drop foreign keys to orders", &format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote(name))).await?;
    }
    // The old table keeps its rows, its indexes (renamed, so the new ones can take
    // the names) and its stricter unique (user_id, idempotency_key); its identity
    // becomes a sequence that the partitioned table continues from.
    let next_id: i64 = sqlx::query_scalar(
        "SELECT greatest(
             (SELECT coalesce(max(id), 0) FROM orders),
             (SELECT coalesce(last_value, 0) FROM pg_sequences
              WHERE schemaname = current_schema() AND sequencename = 'orders_id_seq')) + 1",
    )
    .fetch_one(&mut *tx)
    .await
    .step("read the next order id")?;
    exec(tx, "rename the old table", "ALTER TABLE orders RENAME TO orders_legacy").await?;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'orders_legacy'::regclass ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .step("list the old indexes")?;
    for index in indexes.iter().filter(|i| i.starts_with("orders_")) {
        let renamed = format!("orders_legacy_{}", &index["orders_".len()..]);
        exec(tx, "rename the old indexes", &format!("ALTER INDEX {} RENAME TO {}", quote(index), quote(&renamed))).await?;
    }
    let create = [
        "ALTER TABLE orders_legacy ALTER COLUMN id DROP IDENTITY".to_owned(),
        // Attaching gives it the partitioned primary key (id, created_at) instead.
        "ALTER TABLE orders_legacy DROP CONSTRAINT orders_legacy_pkey".to_owned(),
        format!("CREATE SEQUENCE orders_id_seq AS bigint START WITH {next_id}"),
        "CREATE TABLE orders (
             id              BIGINT NOT NULL DEFAULT nextval('orders_id_seq'),
             user_id         BIGINT NOT NULL REFERENCES users (id),
             kind            TEXT NOT NULL CONSTRAINT orders_kind_check CHECK (kind IN ('cart', 'flash')),
             status          TEXT NOT NULL DEFAULT 'paid',
             total_cents     BIGINT NOT NULL CONSTRAINT orders_total_cents_check CHECK (total_cents >= 0),
             idempotency_key TEXT NOT NULL,
             created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
             CONSTRAINT orders_pkey PRIMARY KEY (id, created_at)
         ) PARTITION BY RANGE (created_at)"
            .to_owned(),
        "ALTER SEQUENCE orders_id_seq OWNED BY orders.id".to_owned(),
        "CREATE INDEX orders_user_id_id_idx ON orders (user_id, id)".to_owned(),
        "CREATE TABLE orders_default PARTITION OF orders DEFAULT".to_owned(),
    ];
    for sql in &create {
        exec(tx, "create the partitioned table", sql).await?;
    }
    // Rows of the current month (or later) move out before the old table becomes the
    // partition "before this month"; they land in the default partition until their
    // month's partition is created, in this same transaction.
    exec(
        tx,
        "move this month's rows",
        &format!(
            "WITH moved AS (DELETE FROM orders_legacy WHERE created_at >= '{start}' RETURNING *)
             INSERT INTO orders (id, user_id, kind, status, total_cents, idempotency_key, created_at)
             SELECT id, user_id, kind, status, total_cents, idempotency_key, created_at FROM moved",
            start = current.start()
        ),
    )
    .await?;
    exec(
        tx,
        "attach the old table",
        &format!("ALTER TABLE orders ATTACH PARTITION orders_legacy FOR VALUES FROM (MINVALUE) TO ('{}')", current.start()),
    )
    .await?;
    Ok(())
}

/// Creates each missing month from the current one to `premake` ahead, moving any rows
/// the default partition holds for it.
async fn premake(tx: &mut Tx, today: Date, premake: u32, report: &mut PartitionReport) -> Result<(), PartitionError> {
    exec(tx, "create the default partition", "CREATE TABLE IF NOT EXISTS orders_default PARTITION OF orders DEFAULT").await?;
    for month in months_ahead(today, premake) {
        let table = month.table();
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&table).fetch_one(&mut *tx).await.step("look for a partition")?;
        if exists {
            continue;
        }
        let (from, to) = (month.start(), month.next().start());
        exec(tx, "create a partition", &format!("CREATE TABLE {table} (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")).await?;
        report.moved += exec(
            tx,
            "move rows out of the default partition",
            &format!(
                "WITH moved AS (DELETE FROM orders_default
                                WHERE created_at >= '{from}' AND created_at < '{to}' RETURNING *)
                 INSERT INTO {table} (id, user_id, kind, status, total_cents, idempotency_key, created_at)
                 SELECT id, user_id, kind, status, total_cents, idempotency_key, created_at FROM moved"
            ),
        )
        .await?;
        exec(tx, "attach a partition", &format!("ALTER TABLE orders ATTACH PARTITION {table} FOR VALUES FROM ('{from}') TO ('{to}')")).await?;
        report.created.push(table);
    }
    Ok(())
}

/// A double-quoted identifier.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn months_roll_over_the_year() {
        let names: Vec<String> = months_ahead(date!(2026 - 11 - 30), 3).into_iter().map(YearMonth::table).collect();
        assert_eq!(names, ["orders_2026_11", "orders_2026_12", "orders_2027_01", "orders_2027_02"]);
        assert_eq!(months_ahead(date!(2026 - 01 - 01), 0).len(), 1);
        assert_eq!(YearMonth::of(date!(2026 - 12 - 05)).next().start(), "2027-01-01 00:00:00+00");
    }
}
