use std::time::Duration;

use serde_json::json;
use shop::outbox::{WorkerConfig, drain_once};

use crate::support::*;

fn fast() -> WorkerConfig {
    WorkerConfig { base_backoff: Duration::ZERO, max_attempts: 3, batch_size: 2, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_notified_exactly_once_by_concurrent_workers() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(100, 100).await;
    for _ in 0..5 {
        let (_, buyer) = app.user("buyer").await;
        app.post("/cart/items", Some(&buyer), json!({"product_id": product, "quantity": 1})).await.expect(201);
        app.checkout(&buyer, &key()).await.expect(201);
    }
    assert_eq!(app.count("SELECT count(*) FROM outbox WHERE processed_at IS NULL").await, 5);
    let config = fast();
    let db = app.worker_db();
    // Four workers at once, twice over: SKIP LOCKED splits the rows between them.
    for _ in 0..2 {
        let (a, b, c, d) = tokio::join!(drain_once(&db, &config), drain_once(&db, &config), drain_once(&db, &config), drain_once(&db, &config));
        for r in [a, b, c, d] {
            r.unwrap();
        }
    }
    let again = drain_once(&app.worker_db(), &config).await.unwrap();
    assert_eq!(again.delivered, 0, "nothing is delivered twice");
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 5);
    assert_eq!(
        app.count("SELECT count(DISTINCT o.payload->>'order_id') FROM notifications n JOIN outbox o ON o.id = n.outbox_id").await,
        5,
        "one notification per order"
    );
    assert_eq!(app.count("SELECT count(*) FROM outbox WHERE processed_at IS NULL").await, 0);
    let metrics = app.get("/metrics", None).await.body.as_str().unwrap().to_owned();
    assert!(metrics.contains("shop_outbox_backlog 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_dead_letters() {
    let app = spawn_app().await;
    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"garbage\": true}')").execute(&app.db).await.unwrap();
    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"order_id\": 1, \"email\": \"a@b.c\", \"total_cents\": 5}')")
        .execute(&app.db)
        .await
        .unwrap();
    let config = fast();
    let first = drain_once(&app.worker_db(), &config).await.unwrap();
    assert_eq!((first.delivered, first.retried, first.dead), (1, 1, 0));
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM outbox WHERE payload ? 'garbage'").fetch_one(&app.db).await.unwrap();
    assert_eq!(attempts, 1);
    drain_once(&app.worker_db(), &config).await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    let last = drain_once(&app.worker_db(), &config).await.unwrap();
    assert_eq!(last.dead, 1);
    let (attempts, error): (i32, String) = sqlx::query_as("SELECT attempts, last_error FROM dead_letters").fetch_one(&app.db).await.unwrap();
    assert_eq!(attempts, 3);
    assert!(error.contains("bad payload"), "{error}");
    assert_eq!(app.count("SELECT count(*) FROM outbox WHERE processed_at IS NULL").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 1);
    assert_eq!(drain_once(&app.worker_db(), &config).await.unwrap(), Default::default());
    let metrics = app.get("/metrics", None).await.body.as_str().unwrap().to_owned();
    assert!(metrics.contains("shop_outbox_dead_letters 1\n") && metrics.contains("shop_outbox_oldest_pending_seconds 0\n"), "{metrics}");
    assert!(metrics.contains("shop_outbox_dead_letters_recent 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_their_backoff() {
    let app = spawn_app().await;
    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('nope', '{}')").execute(&app.db).await.unwrap();
    let config = WorkerConfig { base_backoff: Duration::from_secs(60), ..fast() };
    assert_eq!(drain_once(&app.worker_db(), &config).await.unwrap().retried, 1);
    assert_eq!(drain_once(&app.worker_db(), &config).await.unwrap().retried, 0, "not due before its backoff");
}
