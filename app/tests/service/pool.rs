//! `shop::db::Db` keeps connections it used cleanly for the next statement (skipping
//! sqlx's ping on release). These tests use a pool of one connection, so whatever one
//! statement leaves on it, the next one meets.

use std::time::Duration;

use shop::db::{Db, Pooler};

use crate::support::*;

async fn one_connection() -> (Db, sqlx::PgPool) {
    let url = fresh_database().await;
    let db = Db::connect_lazy(&url, 1, Pooler::None).unwrap();
    let check = sqlx::PgPool::connect(&url).await.unwrap();
    (db, check)
}

async fn backend_pid(db: &Db) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(db).await.unwrap()
}

/// A transaction that has inserted a user, not yet committed.
async fn begin_with_user(db: &Db, email: &str) -> shop::db::Tx {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO users (email, password_hash, roles) VALUES ($1, 'x', 'buyer')").bind(email).execute(&mut tx).await.unwrap();
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_unfinished_is_rolled_back_before_the_connection_is_reused() {
    let (db, check) = one_connection().await;
    let pid = backend_pid(&db).await;
    let tx = begin_with_user(&db, "dropped@x.test").await;
    drop(tx); // an early return from a handler

    // Same connection, outside any transaction: the insert is gone everywhere.
    assert_eq!(backend_pid(&db).await, pid);
    let in_tx: bool = sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned() IS NOT NULL").fetch_one(&db).await.unwrap();
    assert!(!in_tx, "the next statement ran inside the dropped transaction");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'dropped@x.test'").fetch_one(&check).await.unwrap();
    assert_eq!(seen, 0);

    // And a new transaction can begin and commit on it.
    let tx = begin_with_user(&db, "kept@x.test").await;
    tx.commit().await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'kept@x.test'").fetch_one(&check).await.unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cancelled_midway_does_not_poison_the_next_one() {
    let (db, _check) = one_connection().await;
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(&db);
    assert!(tokio::time::timeout(Duration::from_millis(200), slow).await.is_err());
    let mut tx = db.begin().await.unwrap();
    let cancelled = sqlx::query("SELECT pg_sleep(2)").execute(&mut tx);
    assert!(tokio::time::timeout(Duration::from_millis(200), cancelled).await.is_err());
    drop(tx);

    // The next statements get their own answers, not the sleeps' leftovers.
    for n in 1..=3i32 {
        let got: i32 = sqlx::query_scalar("SELECT $1").bind(n).fetch_one(&db).await.unwrap();
        assert_eq!(got, n);
    }
    let mut tx = db.begin().await.unwrap();
    let got: i32 = sqlx::query_scalar("SELECT 7").fetch_one(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(got, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_server_leaves_the_connection_usable() {
    let (db, _check) = one_connection().await;
    let pid = backend_pid(&db).await;
    let err = sqlx::query("SELECT 1/0").execute(&db).await.unwrap_err();
    assert!(matches!(err, sqlx::Error::Database(_)), "{err}");
    let mut tx = db.begin().await.unwrap();
    assert!(sqlx::query("SELECT 1/0").execute(&mut tx).await.is_err());
    // COMMIT of a failed transaction rolls it back; the connection goes on.
    tx.commit().await.unwrap();
    let got: i32 = sqlx::query_scalar("SELECT 5").fetch_one(&db).await.unwrap();
    assert_eq!(got, 5);
    assert_eq!(backend_pid(&db).await, pid, "a server error must not cost the connection");
}

/// The first line of the plan PostgreSQL picks for a lookup of two users by id.
async fn plan_of_key_lookup<'c, E: sqlx::Executor<'c, Database = sqlx::Postgres>>(on: E) -> String {
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT id FROM users WHERE id = ANY('{1,2}'::bigint[])").fetch_all(on).await.unwrap();
    plan[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_transaction_finds_rows_by_index_and_its_planner_settings_end_with_it() {
    let (db, _check) = one_connection().await;
    // On an empty table the planner would rather scan it (sequentially, or through a
    // bitmap); a handler's transaction looks keys up by index however small the table is.
    let mut tx = db.begin().await.unwrap();
    let inside = plan_of_key_lookup(&mut tx).await;
    tx.commit().await.unwrap();
    assert!(inside.starts_with("Index"), "inside a handler transaction: {inside}");

    // The same connection afterwards (the pool has one): searches plan as usual.
    let after = plan_of_key_lookup(&db).await;
    assert!(!after.starts_with("Index"), "after the transaction: {after}");
    let generic: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&db).await.unwrap();
    assert_eq!(generic, "auto");
}
