//! Database plumbing shared by `serve`, `worker`, `migrate` and the tests: the
//! embedded migrations.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The migrations in `app/migrations`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
