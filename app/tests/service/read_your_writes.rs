//! Read-your-writes across shop instances. Every test runs two instances on one primary
//! and one "replica" that is a second database with the schema but none of the data,
//! so a read that went to the replica visibly misses what was written.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::Value;

use crate::support::*;

/// Two shop instances sharing a primary, a replica and (when `redis`) one Redis key
/// prefix, like two `shop serve` processes behind HAProxy.
async fn two_instances(redis: bool, redis_url: Option<String>, window: Duration) -> (TestApp, TestApp) {
    let primary = fresh_database().await;
    let replica = fresh_database().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let opts = || Options {
        redis,
        redis_url: redis_url.clone(),
        redis_prefix: Some(prefix.clone()),
        read_database_url: Some(replica.clone()),
        read_your_writes_window: window,
        ..Default::default()
    };
    let a = spawn_on(primary.clone(), opts()).await;
    let b = spawn_on(primary, opts()).await;
    (a, b)
}

fn items(body: &Value) -> usize {
    body["items"].as_array().expect("a page").len()
}

/// A counter from the instance's /metrics.
fn written_here(app: &TestApp, user: i64) -> bool {
    app.state.recent_writers.lock().unwrap().contains_key(&user)
}

/// An order of `user`'s inserted straight into the primary: no instance saw it written.
async fn order_behind_the_shops_back(app: &TestApp, user: i64) {
    sqlx::query("INSERT INTO orders (user_id, kind, total_cents, idempotency_key) VALUES ($1, 'cart', 100, $2)")
        .bind(user)
        .bind(key())
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_read_through_another() {
    let window = Duration::from_secs(5);
    let (a, b) = two_instances(true, None, window).await;
    let (_, _, product) = a.seller_product(100, 100).await;
    let (buyer_id, buyer) = a.user("buyer").await;
    // The replica really is different: anonymous catalog reads through B miss the product.
    assert_eq!(items(&b.get("/products", None).await.expect(200)), 0);

    let mut orders = Vec::new();
    let mut last_write = Instant::now();
    for _ in 0..3 {
        a.add_to_cart(&buyer, product, 1).await;
        last_write = Instant::now();
        orders.push(a.checkout(&buyer, &key()).await.expect(201)["id"].as_i64().unwrap());
    }

    // Through B, right away: every authenticated read route sees the primary.
    assert_eq!(items(&b.get("/orders", Some(&buyer)).await.expect(200)), 3);
    for id in &orders {
        b.get(&format!("/orders/{id}"), Some(&buyer)).await.expect(200);
        b.get(&format!("/orders/{id}/invoice"), Some(&buyer)).await.expect(200);
        b.get(&format!("/orders/{id}/delivery"), Some(&buyer)).await.expect(200);
    }
    assert_eq!(items(&b.get("/products", Some(&buyer)).await.expect(200)), 1);
    b.get(&format!("/products/{product}/reviews"), Some(&buyer)).await.expect(200);
    assert!(last_write.elapsed() < window, "the machine was too slow to read within the window; the reads above prove nothing");
    // B learnt it from Redis, not from its own memory; and Redis never failed.
    assert!(written_here(&a, buyer_id) && !written_here(&b, buyer_id));
    let ryw_key = format!("{}ryw:{buyer_id}", b.redis_prefix);
    let ttl: i64 = b.redis().await.pttl(&ryw_key).await.unwrap();
    assert!(ttl > 0 && ttl <= window.as_millis() as i64, "pttl {ttl}");
    assert_eq!(metric(&b, "shop_read_your_writes_fallbacks_total").await, 0);
    assert_eq!(metric(&a, "shop_read_your_writes_mark_failures_total").await, 0);

    // Once the window has passed, the buyer's reads go back to the replica.
    let deadline = Instant::now() + window + Duration::from_secs(5);
    while b.redis().await.exists::<_, bool>(&ryw_key).await.unwrap() {
        assert!(Instant::now() < deadline, "the read-your-writes key did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(items(&b.get("/orders", Some(&buyer)).await.expect(200)), 0);
    assert_eq!(b.get(&format!("/orders/{}", orders[0]), Some(&buyer)).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_read_your_writes_is_per_instance() {
    // The documented limitation (one instance, or sticky routing), and proof that the
    // two-instance setup above would catch the bug it fixes.
    let (a, b) = two_instances(false, None, Duration::from_secs(30)).await;
    let (_, _, product) = a.seller_product(100, 100).await;
    let (_, buyer) = a.user("buyer").await;
    a.add_to_cart(&buyer, product, 1).await;
    a.checkout(&buyer, &key()).await.expect(201);
    assert_eq!(items(&a.get("/orders", Some(&buyer)).await.expect(200)), 1);
    assert_eq!(items(&b.get("/orders", Some(&buyer)).await.expect(200)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_primary_when_redis_is_down() {
    let window = Duration::from_secs(2);
    let proxy = RedisProxy::start().await;
    let (a, b) = two_instances(true, Some(proxy.url.clone()), window).await;
    assert!(a.state.redis().is_some() && b.state.redis().is_some());
    let (_, _, product) = a.seller_product(100, 100).await;
    let (buyer_id, buyer) = a.user("buyer").await;
    // A user who never wrote through any instance, with an order on the primary only.
    let (reader_id, reader) = a.user("buyer").await;
    order_behind_the_shops_back(&a, reader_id).await;
    // While Redis answers, that user's reads go to the replica.
    assert_eq!(items(&b.get("/orders", Some(&reader)).await.expect(200)), 0);
    assert_eq!(metric(&b, "shop_read_your_writes_fallbacks_total").await, 0);

    proxy.cut();
    // Writes still work without Redis; their marks are counted as lost.
    a.add_to_cart(&buyer, product, 1).await;
    a.checkout(&buyer, &key()).await.expect(201);
    assert!(metric(&a, "shop_read_your_writes_mark_failures_total").await >= 1);
    // B cannot ask Redis, so users' reads go to the primary: the buyer sees the order
    // whose mark never reached Redis, and so does the user who never wrote.
    assert!(!written_here(&b, buyer_id));
    assert_eq!(items(&b.get("/orders", Some(&buyer)).await.expect(200)), 1);
    assert_eq!(items(&b.get("/orders", Some(&reader)).await.expect(200)), 1);
    assert_eq!(items(&b.get("/products", Some(&reader)).await.expect(200)), 1);
    let fallbacks = metric(&b, "shop_read_your_writes_fallbacks_total").await;
    assert!(fallbacks >= 3, "fallbacks {fallbacks}");
    // Anonymous reads never ask Redis: still the replica, and not counted.
    assert_eq!(items(&b.get("/products", None).await.expect(200)), 0);
    assert_eq!(metric(&b, "shop_read_your_writes_fallbacks_total").await, fallbacks);

    // Still down a window later (Redis is asked again, and fails again): the primary.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    assert_eq!(items(&b.get("/orders", Some(&reader)).await.expect(200)), 1);
    assert!(metric(&b, "shop_read_your_writes_fallbacks_total").await > fallbacks);

    // An instance that never reached its Redis reads users' data from the primary too.
    let c = spawn_on(
        a.state.settings.database_url.clone(),
        Options {
            redis_url: Some(proxy.url.clone()),
            read_database_url: b.state.settings.read_database_url.clone(),
            read_your_writes_window: window,
            ..Default::default()
        },
    )
    .await;
    assert!(c.state.redis().is_none());
    assert_eq!(items(&c.get("/orders", Some(&reader)).await.expect(200)), 1);
    assert_eq!(items(&c.get("/products", None).await.expect(200)), 0);
    assert_eq!(metric(&c, "shop_read_your_writes_fallbacks_total").await, 1);
}
