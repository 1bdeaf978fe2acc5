use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::support::*;

fn rfc3339(offset_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs)).format(&time::format_description::well_known::Rfc3339).unwrap()
}

async fn sale(app: &TestApp, units: i32, stock: i32, limit: i32, starts_in: i64) -> (i64, i64) {
    let (seller, _, product) = app.seller_product(500, stock).await;
    let sale = app
        .post(
            "/flash-sales",
            Some(&seller),
            json!({"product_id": product, "units": units, "starts_at": rfc3339(starts_in), "per_buyer_limit": limit}),
        )
        .await
        .expect(201);
    assert_eq!(sale["remaining"], units);
    (sale["id"].as_i64().unwrap(), product)
}

async fn buy(app: &TestApp, sale: i64, token: &str, key: &str, body: Option<serde_json::Value>) -> Resp {
    app.send_with(reqwest::Method::POST, &format!("/flash-sales/{sale}/purchase"), Some(token), body, &[("Idempotency-Key", key)]).await
}

/// Fires one purchase per buyer, all at once, and checks the sale's invariants.
async fn stampede(app: &TestApp, buyers: i64, units: i32, chaos: Option<Arc<AtomicBool>>) {
    let stock = 1_000;
    let (sale_id, product) = sale(app, units, stock, 1, -1).await;
    let tokens = app.bulk_buyers(buyers, &format!("fb{sale_id}")).await;
    let results = futures::future::join_all(tokens.iter().map(|t| async move {
        let r = buy(app, sale_id, t, &key(), None).await;
        (r.status.as_u16(), r.body)
    }))
    .await;
    if let Some(flag) = chaos {
        flag.store(true, Ordering::SeqCst);
    }
    let won = results.iter().filter(|(s, _)| *s == 201).count();
    let lost = results.iter().filter(|(s, b)| *s == 409 && b["error"] == "sold out").count();
    let other: Vec<_> = results.iter().filter(|(s, _)| *s != 201 && *s != 409).take(3).collect();
    assert!(other.is_empty(), "unexpected responses: {other:?}");
    assert_eq!(won, units as usize, "exactly the units are sold");
    assert_eq!(won + lost, buyers as usize, "every buyer got 201 or 409 sold out");
    let (remaining, initial): (i32, i32) =
        sqlx::query_as("SELECT remaining, units FROM flash_sales WHERE id = $1").bind(sale_id).fetch_one(&app.db).await.unwrap();
    assert_eq!(remaining, 0);
    let sold = app.count(&format!("SELECT coalesce(sum(oi.quantity), 0) FROM order_items oi JOIN orders o ON o.id = oi.order_id WHERE o.kind = 'flash' AND oi.product_id = {product}")).await;
    assert_eq!(sold + remaining as i64, initial as i64, "sold + remaining = initial");
    assert_eq!(app.count("SELECT count(*) FROM orders WHERE kind = 'flash'").await, units as i64);
    assert_eq!(app.count("SELECT count(*) FROM payments").await, units as i64);
    assert_eq!(app.count("SELECT coalesce(sum(quantity), 0) FROM flash_purchases").await, units as i64);
    assert_eq!(app.stock(product).await, stock - units, "the sale's units left the ordinary stock");
    // The stampede bought in batches: fewer transactions took the sale's row than
    // there were buyers in them (typically 4 to 30 for 100 buyers here).
    let (batches, batched) = (metric(app, "shop_flash_batches_total").await, metric(app, "shop_flash_batched_purchases_total").await);
    assert!(batched <= units as u64 && batches > 0 && batches < batched, "{batches} batches bought {batched} units");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_2000_buyers_100_units_with_redis() {
    let app = spawn_app_with(Options { pool_size: 20, ..Default::default() }).await;
    stampede(&app, 2_000, 100, None).await;
    assert_eq!(metric(&app, "shop_sold_out_rejections_total").await, 1_900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_survives_the_redis_counter_vanishing() {
    let app = spawn_app_with(Options { pool_size: 20, ..Default::default() }).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut redis = app.redis().await;
    let prefix = app.redis_prefix.clone();
    let flag = stop.clone();
    // Delete every flash counter over and over while the sale runs.
    let chaos = tokio::spawn(async move {
        let mut deletes = 0u32;
        while !flag.load(Ordering::SeqCst) {
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}flash:*")).query_async(&mut redis).await.unwrap();
            for k in keys {
                let _: () = redis::cmd("DEL").arg(k).query_async(&mut redis).await.unwrap();
                deletes += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        deletes
    });
    stampede(&app, 2_000, 100, Some(stop)).await;
    assert!(chaos.await.unwrap() > 0, "the counter was deleted mid-sale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_without_redis() {
    let app = spawn_app_with(Options { redis: false, pool_size: 20, ..Default::default() }).await;
    stampede(&app, 2_000, 100, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_counter_cannot_oversell() {
    let app = spawn_app().await;
    let (sale_id, _) = sale(&app, 5, 10, 1, -1).await;
    let mut redis = app.redis().await;
    let _: () = redis::cmd("SET").arg(format!("{}flash:{sale_id}:remaining", app.redis_prefix)).arg(1_000).query_async(&mut redis).await.unwrap();
    let tokens = app.bulk_buyers(20, "wrong").await;
    let results = futures::future::join_all(tokens.iter().map(|t| async { buy(&app, sale_id, t, &key(), None).await })).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 5);
    assert!(results.iter().all(|r| r.status == 201 || r.status == 409));
    let remaining: i32 = sqlx::query_scalar("SELECT remaining FROM flash_sales").fetch_one(&app.db).await.unwrap();
    assert_eq!(remaining, 0);
    // PostgreSQL's "no" corrected the counter.
    let counter: i64 = redis::cmd("GET").arg(format!("{}flash:{sale_id}:remaining", app.redis_prefix)).query_async(&mut redis).await.unwrap();
    assert!(counter <= 0, "counter corrected, got {counter}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_rules() {
    let app = spawn_app().await;
    let (seller, _, product) = app.seller_product(500, 10).await;
    let (_, other_seller) = app.user("seller").await;
    let body = json!({"product_id": product, "units": 4, "starts_at": rfc3339(-1), "per_buyer_limit": 2});
    assert_eq!(app.post("/flash-sales", Some(&other_seller), body.clone()).await.status, 403);
    let too_many =
        app.post("/flash-sales", Some(&seller), json!({"product_id": product, "units": 11, "starts_at": rfc3339(-1), "per_buyer_limit": 1})).await;
    assert_eq!(too_many.status, 409);
    let bad_time =
        app.post("/flash-sales", Some(&seller), json!({"product_id": product, "units": 1, "starts_at": "tomorrow", "per_buyer_limit": 1})).await;
    assert_eq!((bad_time.status.as_u16(), bad_time.field()), (422, "starts_at"));
    let sale = app.post("/flash-sales", Some(&seller), body).await.expect(201);
    let sale_id = sale["id"].as_i64().unwrap();
    assert_eq!(app.stock(product).await, 6, "units are reserved out of stock");

    let (_, buyer) = app.user("buyer").await;
    let missing_key = app.send(reqwest::Method::POST, &format!("/flash-sales/{sale_id}/purchase"), Some(&buyer), None).await;
    assert_eq!((missing_key.status.as_u16(), missing_key.field()), (400, "Idempotency-Key"));
    let k = key();
    let order = buy(&app, sale_id, &buyer, &k, Some(json!({"quantity": 2}))).await.expect(201);
    assert_eq!(order["kind"], "flash");
    assert_eq!(order["total_cents"], 1_000);
    let replay = buy(&app, sale_id, &buyer, &k, Some(json!({"quantity": 2}))).await.expect(200);
    assert_eq!(replay["id"], order["id"]);
    let limit = buy(&app, sale_id, &buyer, &key(), None).await;
    assert_eq!(limit.status, 409, "per-buyer limit");
    assert_eq!(limit.field(), "quantity");

    let (_, b2) = app.user("buyer").await;
    let (_, b3) = app.user("buyer").await;
    buy(&app, sale_id, &b2, &key(), Some(json!({"quantity": 2}))).await.expect(201);
    let sold_out = buy(&app, sale_id, &b3, &key(), None).await;
    assert_eq!((sold_out.status.as_u16(), sold_out.error()), (409, "sold out"));
    // A retry of an acknowledged purchase still returns the order after sell-out.
    assert_eq!(buy(&app, sale_id, &buyer, &k, Some(json!({"quantity": 2}))).await.expect(200)["id"], order["id"]);
    let (_, b4) = app.user("buyer").await;
    let neg = buy(&app, sale_id, &b4, &key(), Some(json!({"quantity": -1}))).await;
    assert_eq!((neg.status.as_u16(), neg.field()), (422, "quantity"));
    let (_, seller_only) = app.user("seller").await;
    assert_eq!(buy(&app, sale_id, &seller_only, &key(), None).await.status, 403);
    assert_eq!(buy(&app, 99_999, &b4, &key(), None).await.status, 404);

    let later = app
        .post("/flash-sales", Some(&seller), json!({"product_id": product, "units": 1, "starts_at": rfc3339(3600), "per_buyer_limit": 1}))
        .await
        .expect(201);
    let early = buy(&app, later["id"].as_i64().unwrap(), &b4, &key(), None).await;
    assert_eq!((early.status.as_u16(), early.error()), (409, "not started"));
    let info = app.get(&format!("/flash-sales/{sale_id}"), None).await.expect(200);
    assert_eq!(info["remaining"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_stuck_low_does_not_strand_units() {
    let app = spawn_app().await;
    let (sale_id, _) = sale(&app, 3, 10, 1, -1).await;
    let counter = format!("{}flash:{sale_id}:remaining", app.redis_prefix);
    let mut redis = app.redis().await;
    let _: () = redis::cmd("SET").arg(&counter).arg(0).query_async(&mut redis).await.unwrap();
    let (_, buyer) = app.user("buyer").await;
    // The gate says no, but PostgreSQL still has units: the check lets this buyer
    // through and copies PostgreSQL's remaining into the counter.
    buy(&app, sale_id, &buyer, &key(), None).await.expect(201);
    let healed: i64 = redis::cmd("GET").arg(&counter).query_async(&mut redis).await.unwrap();
    assert_eq!(healed, 2);
}

/// Two instances of one shop: one database, one Redis key prefix.
async fn two_shops() -> (TestApp, TestApp) {
    let db = fresh_database().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let opts = || Options { redis_prefix: Some(prefix.clone()), ..Default::default() };
    (spawn_on(db.clone(), opts()).await, spawn_on(db, opts()).await)
}

async fn until_sealed(app: &TestApp, sale_id: i64) -> usize {
    for _ in 0..200 {
        if let Some(n) = app.state.flash.sealed_buyers(sale_id) {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("sale {sale_id} was never sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_sealed_a_sold_out_answer_asks_no_database() {
    let (a, b) = two_shops().await;
    let (sale_id, _) = sale(&a, 1, 10, 1, -1).await;
    let tokens = a.bulk_buyers(5, &format!("s{sale_id}")).await;
    // Each session is looked up once, by A: Redis has it, B has never seen it.
    for t in &tokens {
        a.get("/me", Some(t)).await.expect(200);
    }
    let won = key();
    let order = buy(&a, sale_id, &tokens[0], &won, None).await.expect(201);
    assert_eq!(until_sealed(&a, sale_id).await, 1);
    // B's first loser learns the sale and checks PostgreSQL; B then reads the buyers.
    let first = buy(&b, sale_id, &tokens[1], &key(), None).await;
    assert_eq!((first.status.as_u16(), first.error()), (409, "sold out"));
    assert_eq!(until_sealed(&b, sale_id).await, 1);
    for (app, token) in [(&b, &tokens[2]), (&b, &tokens[3]), (&a, &tokens[4])] {
        let before = app.state.primary.statements();
        let lost = buy(app, sale_id, token, &key(), None).await;
        assert_eq!((lost.status.as_u16(), lost.error()), (409, "sold out"));
        assert_eq!(app.state.primary.statements(), before, "a sold-out answer (uncached session included) made a database statement");
    }
    // The winner's retry still finds their order, on either instance.
    for app in [&a, &b] {
        let replay = buy(app, sale_id, &tokens[0], &won, None).await.expect(200);
        assert_eq!(replay["id"], order["id"]);
    }
    let again = buy(&b, sale_id, &tokens[0], &key(), None).await;
    assert_eq!((again.status.as_u16(), again.error()), (409, "sold out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_sealed_sale_answers_losers_from_memory() {
    let app = spawn_app_with(Options { redis: false, ..Default::default() }).await;
    let (sale_id, _) = sale(&app, 2, 10, 1, -1).await;
    let tokens = app.bulk_buyers(4, &format!("m{sale_id}")).await;
    for t in &tokens {
        app.get("/me", Some(t)).await.expect(200);
    }
    let won = key();
    let order = buy(&app, sale_id, &tokens[0], &won, None).await.expect(201);
    buy(&app, sale_id, &tokens[1], &key(), None).await.expect(201);
    assert_eq!(until_sealed(&app, sale_id).await, 2);
    let before = app.state.primary.statements();
    let lost = buy(&app, sale_id, &tokens[2], &key(), None).await;
    assert_eq!((lost.status.as_u16(), lost.error()), (409, "sold out"));
    assert_eq!(app.state.primary.statements(), before);
    let replay = buy(&app, sale_id, &tokens[0], &won, None).await.expect(200);
    assert_eq!(replay["id"], order["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_without_the_database_only_buyers_it_never_let_through() {
    let (a, b) = two_shops().await;
    let (sale_id, _) = sale(&a, 3, 10, 1, -1).await;
    let counter = format!("{}flash:{sale_id}:remaining", a.redis_prefix);
    let ledger = format!("{}flash:{sale_id}:ledger", a.redis_prefix);
    let mut redis = a.redis().await;
    let tokens = a.bulk_buyers(5, &format!("g{sale_id}")).await;
    for t in &tokens {
        a.get("/me", Some(t)).await.expect(200);
    }
    let won = key();
    let order = buy(&a, sale_id, &tokens[0], &won, None).await.expect(201);
    let zero = |redis: &mut redis::aio::MultiplexedConnection| {
        let counter = counter.clone();
        let mut redis = redis.clone();
        async move {
            let _: () = redis::cmd("SET").arg(&counter).arg(0).query_async(&mut redis).await.unwrap();
        }
    };
    // Two units still in PostgreSQL, none in the counter (as if two buyers were in
    // flight). B's first refusal is the one per second that checks PostgreSQL: it buys.
    zero(&mut redis).await;
    let over = buy(&b, sale_id, &tokens[1], &key(), Some(json!({"quantity": 2}))).await;
    assert_eq!(over.status, 409, "B learns the sale without the gate");
    buy(&b, sale_id, &tokens[1], &key(), None).await.expect(201);
    let verified = std::time::Instant::now();
    zero(&mut redis).await;
    // The winner is in the ledger: their retry is checked in PostgreSQL and replayed.
    let replay = buy(&b, sale_id, &tokens[0], &won, None).await.expect(200);
    assert_eq!(replay["id"], order["id"]);
    // A buyer the gate never let through is refused from Redis alone.
    let before = b.state.primary.statements();
    let lost = buy(&b, sale_id, &tokens[2], &key(), None).await;
    if verified.elapsed() < std::time::Duration::from_millis(900) {
        assert_eq!((lost.status.as_u16(), lost.error()), (409, "sold out"));
        assert_eq!(b.state.primary.statements(), before, "refused from Redis alone");
    }
    // A lost ledger is never trusted: the winner's retry still reaches their order.
    let _: () = redis::cmd("DEL").arg(&ledger).query_async(&mut redis).await.unwrap();
    let replay = buy(&b, sale_id, &tokens[0], &won, None).await.expect(200);
    assert_eq!(replay["id"], order["id"]);
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(&ledger).query_async(&mut redis).await.unwrap();
    assert!(!members.contains(&"open".to_owned()), "a rebuilt ledger stays closed");
}

/// Buyers who arrive together buy together, and each is answered as if alone: a replay
/// gets its order, a buyer over the per-buyer limit is refused, everyone else buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_in_one_batch_are_answered_one_by_one() {
    let app = spawn_app_with(Options { redis: false, ..Default::default() }).await;
    let (sale_id, _) = sale(&app, 6, 10, 2, -1).await;
    let (_, first) = app.user("buyer").await;
    let k = key();
    let order = buy(&app, sale_id, &first, &k, Some(json!({"quantity": 2}))).await.expect(201);
    let others = app.bulk_buyers(4, &format!("batch{sale_id}")).await;
    let other_key = key();
    let (replay, over, bought) = tokio::join!(
        buy(&app, sale_id, &first, &k, Some(json!({"quantity": 2}))),
        buy(&app, sale_id, &first, &other_key, None),
        futures::future::join_all(others.iter().map(|t| async { buy(&app, sale_id, t, &key(), None).await })),
    );
    assert_eq!(replay.expect(200)["id"], order["id"], "a replay in a batch returns the first order");
    assert_eq!((over.status.as_u16(), over.field()), (409, "quantity"), "the per-buyer limit holds in a batch: {:?}", over.body);
    assert!(bought.iter().all(|r| r.status == 201), "{:?}", bought.iter().map(|r| &r.body).collect::<Vec<_>>());
    let remaining: i32 = sqlx::query_scalar("SELECT remaining FROM flash_sales WHERE id = $1").bind(sale_id).fetch_one(&app.db).await.unwrap();
    assert_eq!(remaining, 0);
    assert_eq!(app.count("SELECT count(*) FROM orders WHERE kind = 'flash'").await, 5);
    assert_eq!(app.count("SELECT count(*) FROM outbox WHERE topic = 'order.placed'").await, 5);
    // The refused key was not kept: the buyer may use it again later.
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys WHERE order_id IS NULL").await, 0);
}

/// Batches are cut to the units left: buyers of two units each, five units on sale,
/// all at once. Two buy; the rest learn that one unit is left, and it stays unsold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_cut_to_the_units_left() {
    let app = spawn_app_with(Options { redis: false, ..Default::default() }).await;
    let (sale_id, _) = sale(&app, 5, 10, 2, -1).await;
    let tokens = app.bulk_buyers(12, &format!("cut{sale_id}")).await;
    let results = futures::future::join_all(tokens.iter().map(|t| async { buy(&app, sale_id, t, &key(), Some(json!({"quantity": 2}))).await })).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 2);
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status.as_u16(), r.error(), r.field()), (409, "only 1 units left", "quantity"), "{:?}", r.body);
    }
    let remaining: i32 = sqlx::query_scalar("SELECT remaining FROM flash_sales WHERE id = $1").bind(sale_id).fetch_one(&app.db).await.unwrap();
    assert_eq!(remaining, 1);
}

/// A buyer let through to check PostgreSQL while admitted buyers still hold units must
/// not raise the gate's counter to PostgreSQL's remaining: those units would be sold
/// twice over at the gate, and twice as many buyers sent to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_is_not_raised_while_admitted_buyers_hold_units() {
    let app = spawn_app().await;
    let (sale_id, _) = sale(&app, 3, 10, 1, -1).await;
    let counter = format!("{}flash:{sale_id}:remaining", app.redis_prefix);
    let mut redis = app.redis().await;
    let (_, first) = app.user("buyer").await;
    buy(&app, sale_id, &first, &key(), None).await.expect(201);
    // As if two admitted buyers were still on their way to PostgreSQL.
    let _: () = redis::cmd("SET").arg(&counter).arg(0).query_async(&mut redis).await.unwrap();
    let (_, checker) = app.user("buyer").await;
    buy(&app, sale_id, &checker, &key(), None).await.expect(201);
    let after: i64 = redis::cmd("GET").arg(&counter).query_async(&mut redis).await.unwrap();
    assert_eq!(after, 0, "PostgreSQL's remaining (1) counts units admitted buyers hold");
}

/// Everyone arrives at a sale's start at once: an instance that has not seen the sale
/// yet reads it once for all of them, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_reads_the_sale_once() {
    let (a, b) = two_shops().await;
    let (sale_id, _) = sale(&a, 3, 10, 1, 3600).await;
    let tokens = a.bulk_buyers(40, &format!("once{sale_id}")).await;
    for t in &tokens {
        b.get("/me", Some(t)).await.expect(200);
    }
    let before = b.state.primary.statements();
    let early = futures::future::join_all(tokens.iter().map(|t| async { buy(&b, sale_id, t, &key(), None).await })).await;
    assert!(early.iter().all(|r| r.status == 409 && r.error() == "not started"), "{:?}", early.iter().map(|r| &r.body).collect::<Vec<_>>());
    assert_eq!(b.state.primary.statements() - before, 1, "the sale was read once");
    assert_eq!(buy(&b, 99_999, &tokens[0], &key(), None).await.status, 404);
}
