//! Orders partitioned by month: converting a table that already holds orders keeps
//! them (and their idempotent replays, returns and history); reruns only add months
//! that came due; the worker keeps partitions ahead.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use shop::db::{Db, Pooler};
use shop::partitions::{PartitionConfig, PartitionReport, YearMonth, months_ahead, partition_orders};
use time::Date;

use crate::support::*;

async fn db_today(app: &TestApp) -> Date {
    sqlx::query_scalar("SELECT (now() AT TIME ZONE 'UTC')::date").fetch_one(&app.db).await.unwrap()
}

async fn partition_of(app: &TestApp, order_id: i64) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM orders WHERE id = $1").bind(order_id).fetch_one(&app.db).await.unwrap()
}

async fn run(app: &TestApp, premake: u32, today: Option<Date>) -> PartitionReport {
    let db = Db::new(app.db.clone(), Pooler::None);
    partition_orders(&db, PartitionConfig { premake, today }).await.expect("partition orders")
}

async fn buy(app: &TestApp, token: &str, product: i64, key: &str) -> serde_json::Value {
    app.add_to_cart(token, product, 1).await;
    app.checkout(token, key).await.expect(201)
}

fn names(months: &[YearMonth]) -> Vec<String> {
    months.iter().map(|m| m.table()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converting_keeps_orders_replays_returns_and_history() {
    let app = spawn_on(fresh_plain_database().await, Options::default()).await;
    let today = db_today(&app).await;
    let (seller, _, product) = app.seller_product(300, 100).await;
    let (_, buyer) = app.user("buyer").await;
    // One order from three months ago, one from this month.
    let (old_key, this_key) = (key(), key());
    let old = buy(&app, &buyer, product, &old_key).await;
    let old_id = old["id"].as_i64().unwrap();
    sqlx::query("UPDATE orders SET created_at = created_at - interval '3 months' WHERE id = $1").bind(old_id).execute(&app.db).await.unwrap();
    let recent = buy(&app, &buyer, product, &this_key).await;
    let recent_id = recent["id"].as_i64().unwrap();

    let report = run(&app, 2, None).await;
    assert!(report.converted);
    assert_eq!(report.created, names(&months_ahead(today, 2)));
    assert_eq!(report.moved, 1, "this month's order moved into its partition");
    let current = YearMonth::of(today).table();
    assert_eq!(partition_of(&app, old_id).await, "orders_legacy");
    assert_eq!(partition_of(&app, recent_id).await, current);

    // Replays of orders placed before the conversion, and key reuse.
    assert_eq!(app.checkout(&buyer, &this_key).await.expect(200), recent);
    app.add_to_cart(&buyer, product, 2).await;
    assert_eq!(app.checkout(&buyer, &old_key).await.status, 409);
    // New orders continue the ids and land in this month's partition; concurrent
    // requests with one key still make one order.
    let k = key();
    let results = futures::future::join_all((0..6).map(|_| app.checkout(&buyer, &k))).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 1);
    assert!(results.iter().all(|r| r.status == 200 || r.status == 201));
    let new_id = results[0].body["id"].as_i64().unwrap();
    assert!(new_id > recent_id);
    assert_eq!(partition_of(&app, new_id).await, current);
    assert_eq!(app.stock(product).await, 100 - 1 - 1 - 2);

    // History, documents and returns across the old table and the new partitions.
    let list = app.get("/orders", Some(&buyer)).await.expect(200);
    let ids: Vec<i64> = list["items"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [new_id, recent_id, old_id]);
    for id in [old_id, new_id] {
        let order = app.get(&format!("/orders/{id}"), Some(&buyer)).await.expect(200);
        for doc in ["invoice", "delivery"] {
            app.get(&format!("/orders/{id}/{doc}"), Some(&buyer)).await.expect(200);
        }
        let ret = json!({"order_id": id, "order_item_id": order["items"][0]["id"]});
        app.post("/returns", Some(&buyer), ret.clone()).await.expect(201);
        assert_eq!(app.post("/returns", Some(&buyer), ret).await.status, 409);
    }
    let (_, stranger) = app.user("buyer").await;
    assert_eq!(app.get(&format!("/orders/{old_id}"), Some(&stranger)).await.status, 404);
    // Buyers (of an old order too) can review; a flash sale writes its order as well.
    app.post(&format!("/products/{product}/reviews"), Some(&buyer), json!({"rating": 5, "body": "still mine"})).await.expect(201);
    let sale = app
        .post("/flash-sales", Some(&seller), json!({"product_id": product, "units": 1, "starts_at": "2020-01-01T00:00:00Z", "per_buyer_limit": 1}))
        .await
        .expect(201);
    let flash = app
        .send_with(reqwest::Method::POST, &format!("/flash-sales/{}/purchase", sale["id"]), Some(&stranger), None, &[("Idempotency-Key", "flash-1")])
        .await
        .expect(201);
    assert_eq!(partition_of(&app, flash["id"].as_i64().unwrap()).await, current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_only_adds_months_that_came_due() {
    let app = spawn_on(fresh_plain_database().await, Options::default()).await;
    let today = db_today(&app).await;
    let first = run(&app, 2, None).await;
    assert!(first.converted);
    assert_eq!(first.created.len(), 3);
    assert_eq!(run(&app, 2, None).await, PartitionReport::default(), "a no-op");
    let further = run(&app, 4, None).await;
    assert_eq!(further.created, names(&months_ahead(today, 4)[3..]));

    // A row beyond every partition (a lapsed premake) lands in the default partition;
    // when its month comes due, the premake moves it there.
    let (user, _) = app.user("buyer").await;
    let later = today.replace_day(1).unwrap().replace_year(today.year() + 2).unwrap();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO orders (user_id, kind, total_cents, idempotency_key, created_at)
         VALUES ($1, 'cart', 1, 'k', $2::date) RETURNING id",
    )
    .bind(user)
    .bind(later)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(partition_of(&app, id).await, "orders_default");
    let report = run(&app, 0, Some(later)).await;
    assert_eq!(report.created, [YearMonth::of(later).table()]);
    assert_eq!(report.moved, 1);
    assert_eq!(partition_of(&app, id).await, YearMonth::of(later).table());
    assert_eq!(run(&app, 0, Some(later)).await, PartitionReport::default());
}

/// What scalectl does at level 3: `shop partition-orders` once (rerunnable), then
/// workers with `SHOP_ORDER_PARTITIONS_PREMAKE` keep the months coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_partitions_and_the_worker_keeps_partitions_ahead() {
    let url = fresh_plain_database().await;
    let bin = env!("CARGO_BIN_EXE_shop");
    for _ in 0..2 {
        let status = Command::new(bin).args(["partition-orders", "--premake", "1"]).env("DATABASE_URL", &url).stderr(Stdio::null()).status().unwrap();
        assert!(status.success());
    }
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let today: Date = sqlx::query_scalar("SELECT (now() AT TIME ZONE 'UTC')::date").fetch_one(&db).await.unwrap();
    let partitions = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'orders'::regclass ORDER BY 1",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let mut expected = names(&months_ahead(today, 1));
    expected.extend(["orders_default".to_owned(), "orders_legacy".to_owned()]);
    expected.sort();
    assert_eq!(partitions().await, expected);

    let _worker = Reap(
        Command::new(bin).arg("worker").env("DATABASE_URL", &url).env("SHOP_ORDER_PARTITIONS_PREMAKE", "3").stderr(Stdio::null()).spawn().unwrap(),
    );
    let furthest = months_ahead(today, 3).last().unwrap().table();
    let mut found = false;
    for _ in 0..100 {
        if partitions().await.contains(&furthest) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the worker created {furthest}: {:?}", partitions().await);
}
