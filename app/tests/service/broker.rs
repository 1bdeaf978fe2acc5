//! Order events through the broker (Redis Streams): relayed once, settled once, retried
//! through the outbox, dead-lettered after the last attempt, and what a killed consumer
//! held is settled when it comes back.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::json;
use shop::broker::{BrokerConfig, Priority, Read, claim_stale, consume_once, ensure_group, redrive_if_lost, relay_once};
use shop::outbox::WorkerConfig;

use crate::support::*;

fn fast() -> WorkerConfig {
    WorkerConfig { base_backoff: Duration::ZERO, max_attempts: 3, batch_size: 10, ..Default::default() }
}

/// A broker configuration on the test Redis with streams of this test's own.
fn broker(app: &TestApp) -> BrokerConfig {
    BrokerConfig { url: redis_url(), prefix: app.redis_prefix.clone(), consumer: "w1".into(), pools: vec![(Priority::Normal, 1)] }
}

/// This test's broker, its normal-priority stream with the workers' group, a connection,
/// and the worker's database.
async fn normal_stream(app: &TestApp) -> (BrokerConfig, String, MultiplexedConnection, shop::db::Db) {
    let config = broker(app);
    let stream = config.stream(Priority::Normal);
    let mut conn = app.redis().await;
    ensure_group(&mut conn, &stream).await.unwrap();
    (config, stream, conn, app.worker_db())
}

/// `consumer` reads every new entry and settles none of them (then dies, say).
async fn hold(conn: &mut MultiplexedConnection, stream: &str, consumer: &str) {
    let _: redis::Value =
        redis::cmd("XREADGROUP").arg("GROUP").arg("workers").arg(consumer).arg("STREAMS").arg(stream).arg(">").query_async(conn).await.unwrap();
}

async fn stream_len(conn: &mut MultiplexedConnection, stream: &str) -> i64 {
    redis::cmd("XLEN").arg(stream).query_async(conn).await.unwrap()
}

async fn insert_event(app: &TestApp, topic: &str, payload: serde_json::Value) {
    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ($1, $2)").bind(topic).bind(payload).execute(&app.db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_relayed_and_notified_exactly_once_even_when_sent_twice() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(100, 100).await;
    for _ in 0..3 {
        let (_, buyer) = app.user("buyer").await;
        app.post("/cart/items", Some(&buyer), json!({"product_id": product, "quantity": 1})).await.expect(201);
        app.checkout(&buyer, &key()).await.expect(201);
    }
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 3);
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 0, "an event is relayed once");
    assert_eq!(stream_len(&mut conn, &stream).await, 3);
    assert_eq!(stream_len(&mut conn, &config.stream(Priority::High)).await, 0, "order notifications are normal priority");
    // A relay that died after its XADD and before its commit sends an event again.
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM outbox").fetch_one(&app.db).await.unwrap();
    let _: String =
        redis::cmd("XADD").arg(&stream).arg("*").arg("id").arg(first).arg("topic").arg("order.placed").query_async(&mut conn).await.unwrap();
    let (read, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &fast()).await.unwrap();
    assert_eq!((read, report.delivered), (4, 3), "four entries, three events");
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM outbox WHERE processed_at IS NULL").await, 0);
    assert_eq!(stream_len(&mut conn, &stream).await, 0, "settled entries are acknowledged and deleted");
    let pending: (i64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(&stream).arg("workers").query_async(&mut conn).await.unwrap();
    assert_eq!(pending.0, 0, "nothing left unacknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_through_the_outbox_then_dead_lettered_and_replays() {
    let app = spawn_app().await;
    insert_event(&app, "order.placed", json!({"garbage": true})).await;
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    let worker = fast();
    for attempt in 1..=3 {
        assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 1, "attempt {attempt} is relayed");
        let (_, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &worker).await.unwrap();
        assert_eq!((report.retried, report.dead), if attempt < 3 { (1, 0) } else { (0, 1) }, "attempt {attempt}");
    }
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 0, "a dead letter is not relayed");
    let (attempts, error): (i32, String) = sqlx::query_as("SELECT attempts, last_error FROM dead_letters").fetch_one(&app.db).await.unwrap();
    assert_eq!(attempts, 3);
    assert!(error.contains("bad payload"), "{error}");
    // `scalectl queue dlq replay` with the payload mended: what it does to the outbox.
    sqlx::query(
        "WITH picked AS (DELETE FROM dead_letters RETURNING outbox_id)
         UPDATE outbox o SET processed_at = NULL, attempts = 0, last_error = NULL, next_attempt_at = now(),
             payload = '{\"order_id\": 7, \"email\": \"a@b.c\", \"total_cents\": 5}', replays = o.replays + 1
         FROM picked p WHERE o.id = p.outbox_id",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 1, "a replayed event is relayed again");
    let (_, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &worker).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_not_handled_before_its_backoff_even_if_its_old_entry_is_read_again() {
    let app = spawn_app().await;
    insert_event(&app, "nope", json!({})).await;
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    let worker = WorkerConfig { base_backoff: Duration::from_secs(60), ..fast() };
    relay_once(&db, &mut conn, &config, 100).await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox").fetch_one(&app.db).await.unwrap();
    let _: String = redis::cmd("XADD").arg(&stream).arg("*").arg("id").arg(id).arg("topic").arg("nope").query_async(&mut conn).await.unwrap();
    let (read, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &worker).await.unwrap();
    assert_eq!((read, report.retried), (2, 1), "the duplicate entry waits with its event");
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 0, "not relayed before its backoff");
    assert_eq!(app.count("SELECT attempts::bigint FROM outbox").await, 1, "handled once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_settles_what_it_held_when_it_restarts() {
    let app = spawn_app().await;
    for n in 0..4 {
        insert_event(&app, "order.placed", json!({"order_id": n, "email": "a@b.c", "total_cents": 5})).await;
    }
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    relay_once(&db, &mut conn, &config, 100).await.unwrap();
    // The consumer read the entries, then died before settling them.
    hold(&mut conn, &stream, "w1-normal-1").await;
    let (read, _) = consume_once(&db, &mut conn, &stream, "w2-normal-1", Read::New, &fast()).await.unwrap();
    assert_eq!(read, 0, "another consumer does not get entries someone holds");
    let (read, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::Held, &fast()).await.unwrap();
    assert_eq!((read, report.delivered), (4, 4));
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 4);
    assert_eq!(stream_len(&mut conn, &stream).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_read_before_the_relay_commits_is_handled_once_it_does() {
    let app = spawn_app().await;
    insert_event(&app, "order.placed", json!({"order_id": 1, "email": "a@b.c", "total_cents": 5})).await;
    let config = broker(&app);
    let stream = config.stream(Priority::Normal);
    let mut conn = app.redis().await;
    ensure_group(&mut conn, &stream).await.unwrap();
    // What the relay does, stopped between its XADD and its commit.
    let mut relay = app.db.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox FOR UPDATE").fetch_one(&mut *relay).await.unwrap();
    let _: String = redis::cmd("XADD").arg(&stream).arg("*").arg("id").arg(id).arg("topic").arg("order.placed").query_async(&mut conn).await.unwrap();
    sqlx::query("UPDATE outbox SET relayed_at = now() WHERE id = $1").bind(id).execute(&mut *relay).await.unwrap();
    let db = app.worker_db();
    let consumer = tokio::spawn(async move {
        let mut conn = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &fast()).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.commit().await.unwrap();
    let (read, report) = consumer.await.unwrap();
    assert_eq!((read, report.delivered), (1, 1), "the consumer waited for the relay's commit");
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_relayed_to_a_broker_that_lost_its_data_are_sent_again() {
    let app = spawn_app().await;
    insert_event(&app, "order.placed", json!({"order_id": 1, "email": "a@b.c", "total_cents": 5})).await;
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    assert_eq!(redrive_if_lost(&db, &mut conn, &config).await.unwrap(), 0, "a new broker: its epoch is set, nothing was sent to it");
    relay_once(&db, &mut conn, &config, 100).await.unwrap();
    assert_eq!(redrive_if_lost(&db, &mut conn, &config).await.unwrap(), 0, "the broker holds what it was sent");
    // The broker loses its data: the stream and the epoch with it.
    let _: () = redis::cmd("DEL").arg(&stream).arg(config.epoch_key()).query_async(&mut conn).await.unwrap();
    assert_eq!(redrive_if_lost(&db, &mut conn, &config).await.unwrap(), 1);
    assert_eq!(redrive_if_lost(&db, &mut conn, &config).await.unwrap(), 0, "only the relay that set the new epoch sends again");
    ensure_group(&mut conn, &stream).await.unwrap();
    assert_eq!(relay_once(&db, &mut conn, &config, 100).await.unwrap(), 1, "sent again");
    let (_, report) = consume_once(&db, &mut conn, &stream, "w1-normal-1", Read::New, &fast()).await.unwrap();
    assert_eq!(report.delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_consumer_that_never_came_back_held_is_claimed_by_another() {
    let app = spawn_app().await;
    for n in 0..3 {
        insert_event(&app, "order.placed", json!({"order_id": n, "email": "a@b.c", "total_cents": 5})).await;
    }
    let (config, stream, mut conn, db) = normal_stream(&app).await;
    relay_once(&db, &mut conn, &config, 100).await.unwrap();
    hold(&mut conn, &stream, "gone-normal-1").await;
    let (n, _, _) = claim_stale(&db, &mut conn, &stream, "w2-normal-1", "0-0", Duration::from_secs(60), &fast()).await.unwrap();
    assert_eq!(n, 0, "entries held for less than the idle time stay with their consumer");
    let (n, report, next) = claim_stale(&db, &mut conn, &stream, "w2-normal-1", "0-0", Duration::ZERO, &fast()).await.unwrap();
    assert_eq!((n, report.delivered, next.as_str()), (3, 3, "0-0"), "claimed, settled, and the whole pending list scanned");
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 3);
    assert_eq!(stream_len(&mut conn, &stream).await, 0);
}
