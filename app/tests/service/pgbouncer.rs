//! The shop behind PgBouncer 1.18 in transaction mode (`PGBOUNCER_POOL_SIZE` server
//! connections per database, so many client connections share each): with
//! `db_pooler = transaction` everything works under concurrency; without it, sqlx's
//! named statements collide on a shared server connection.

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::json;
use shop::db::{Db, Pooler};
use shop::outbox::{WorkerConfig, drain_once};
use sqlx::postgres::PgPoolOptions;

use crate::support::*;

/// Every response of a burst was one of `allowed`; returns how many had each status.
#[track_caller]
fn tally(results: &[Resp], allowed: &[u16]) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for r in results {
        assert!(allowed.contains(&r.status.as_u16()), "unexpected {} through pgbouncer: {}", r.status, r.body);
        *counts.entry(r.status.as_u16()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_works_through_pgbouncer_in_transaction_mode() {
    let db_url = fresh_database().await;
    let db = db_name(&db_url).to_owned();
    // Primary and replica both through PgBouncer: 2 x 10 client connections, 2 servers.
    let app = &spawn_on(
        db_url.clone(),
        Options {
            redis: false, // every product read and flash purchase reaches PostgreSQL
            through_pgbouncer: true,
            read_database_url: Some(pgbouncer_url(&db)),
            ..Default::default()
        },
    )
    .await;

    // Register and log in through the API, concurrently.
    let emails: Vec<String> = (0..3).map(|i| format!("pb{i}@example.test")).collect();
    let registered = join_all(emails.iter().enumerate().map(|(i, email)| {
        let roles = if i == 0 { "seller" } else { "buyer" };
        app.post("/register", None, json!({"email": email, "password": "password1", "roles": roles}))
    }))
    .await;
    tally(&registered, &[201]);
    let logins = join_all(emails.iter().map(|email| app.post("/login", None, json!({"email": email, "password": "password1"})))).await;
    tally(&logins, &[200]);
    let token = |i: usize| logins[i].body["token"].as_str().unwrap().to_owned();
    let seller = token(0);
    app.get("/me", Some(&token(1))).await.expect(200);

    // A catalog: one roomy product, one scarce one.
    let shop = app.post("/shops", Some(&seller), json!({"name": "Bounced"})).await.expect(201);
    let product = |name: &str, stock: i32| {
        app.post("/products", Some(&seller), json!({"shop_id": shop["id"], "name": name, "price_cents": 100, "stock": stock}))
    };
    let roomy = product("Roomy", 10_000).await.expect(201)["id"].as_i64().unwrap();
    let scarce = product("Scarce", 5).await.expect(201)["id"].as_i64().unwrap();

    // Reads, anonymous (replica pool) and as a buyer, all at once.
    let reads = join_all((0..120).map(|i| {
        let path = match i % 4 {
            0 => format!("/products?shop_id={}", shop["id"]),
            1 => format!("/products/{}", if i % 8 == 1 { roomy } else { scarce }),
            2 => format!("/products/{roomy}/reviews"),
            _ => "/shops".to_owned(),
        };
        let token = (i % 3 == 0).then(|| token(1 + i % 2));
        async move { app.get(&path, token.as_deref()).await }
    }))
    .await;
    tally(&reads, &[200]);

    // 40 buyers check out at once, each sending the same request twice with one key.
    let buyers = app.bulk_buyers(40, &format!("pbb{roomy}")).await;
    for t in &buyers {
        app.add_to_cart(t, roomy, 2).await;
    }
    let keys: Vec<String> = buyers.iter().map(|_| key()).collect();
    let checkouts = join_all(buyers.iter().zip(&keys).flat_map(|(t, k)| [app.checkout(t, k), app.checkout(t, k)])).await;
    let counts = tally(&checkouts, &[200, 201]);
    assert_eq!(counts[&201], 40, "one order per buyer");
    for pair in checkouts.chunks(2) {
        assert_eq!(pair[0].body["id"], pair[1].body["id"], "a retry replays");
    }
    assert_eq!(app.stock(roomy).await, 10_000 - 80);

    // 20 buyers race for 5 units: the row locks wait on shared server connections.
    let racers = app.bulk_buyers(20, &format!("pbr{scarce}")).await;
    for t in &racers {
        app.add_to_cart(t, scarce, 1).await;
    }
    let race = join_all(racers.iter().map(|t| async move { app.checkout(t, &key()).await })).await;
    let counts = tally(&race, &[201, 409]);
    assert_eq!((counts[&201], counts[&409]), (5, 15));
    assert_eq!(app.stock(scarce).await, 0);

    // A flash sale of 10 units among 60 buyers.
    let sale = app
        .post("/flash-sales", Some(&seller), json!({"product_id": roomy, "units": 10, "starts_at": "2020-01-01T00:00:00Z", "per_buyer_limit": 1}))
        .await
        .expect(201);
    let path = format!("/flash-sales/{}/purchase", sale["id"]);
    let fans = app.bulk_buyers(60, &format!("pbf{roomy}")).await;
    let purchases = join_all(fans.iter().map(|t| {
        let k = key();
        let path = &path;
        async move { app.send_with(reqwest::Method::POST, path, Some(t), None, &[("Idempotency-Key", &k)]).await }
    }))
    .await;
    let counts = tally(&purchases, &[201, 409]);
    assert_eq!((counts[&201], counts[&409]), (10, 50));
    let sold = app.get(&format!("/flash-sales/{}", sale["id"]), None).await.expect(200);
    assert_eq!(sold["remaining"], 0);

    // Order history, invoices and a return, per buyer.
    let histories = join_all(buyers.iter().map(|t| async move {
        let list = app.get("/orders", Some(t)).await.expect(200);
        let id = list["items"][0]["id"].as_i64().unwrap();
        app.get(&format!("/orders/{id}/invoice"), Some(t)).await.expect(200);
        let order = app.get(&format!("/orders/{id}"), Some(t)).await.expect(200);
        let item = order["items"][0]["id"].clone();
        app.post("/returns", Some(t), json!({"order_id": id, "order_item_id": item, "quantity": 1})).await
    }))
    .await;
    tally(&histories, &[201]);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 40 + 5 + 10);
    assert_eq!(app.count("SELECT count(*) FROM refunds").await, 40);

    // The outbox worker through PgBouncer too, four at once.
    let worker = Db::connect_lazy(&pgbouncer_url(&db), 4, Pooler::Transaction).unwrap();
    let config = WorkerConfig::default();
    while app.count("SELECT count(*) FROM outbox WHERE processed_at IS NULL").await > 0 {
        for r in join_all((0..4).map(|_| drain_once(&worker, &config))).await {
            r.expect("drain through pgbouncer");
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 55 + 40);

    let servers = pgbouncer_server_connections(&db).await;
    assert!((1..=PGBOUNCER_POOL_SIZE).contains(&servers), "the work went through PgBouncer's {PGBOUNCER_POOL_SIZE} server connections: {servers}");
    let metrics = app.get("/metrics", None).await.expect(200);
    let metrics = metrics.as_str().unwrap();
    for pool in ["primary", "replica"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("shop_db_queries_total{{pool=\"{pool}\"}}")))
            .unwrap_or_else(|| panic!("no query counter for {pool}: {metrics}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0, "{line}");
    }
}

/// Why the mode exists: two clients in sqlx's default mode take turns on PgBouncer's
/// one server connection, and the second one's first named statement (`sqlx_s_1`)
/// collides with the first one's. The same clients in transaction-pooler mode are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_statements_collide_behind_pgbouncer() {
    let db_url = fresh_database().await;
    let url = pgbouncer_url(db_name(&db_url));
    let client = |pooler: Pooler| match pooler {
        // What `Db::connect_lazy` builds, minus the one startup parameter PgBouncer
        // would refuse.
        Pooler::None => {
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options.extra_float_digits(None));
            Db::new(pool, pooler)
        }
        Pooler::Transaction => Db::connect_lazy(&url, 1, pooler).unwrap(),
    };
    let query = |sql: &'static str, db: Db| async move { sqlx::query_scalar::<_, i64>(sql).bind(1i64).fetch_one(&db).await };

    let (a, b) = (client(Pooler::None), client(Pooler::None));
    query("SELECT $1::int8", a.clone()).await.expect("first client");
    let err = query("SELECT $1::int8 + 1", b.clone()).await.expect_err("the second client's sqlx_s_1 meets the first one's");
    let code = err.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("42P05"), "duplicate_prepared_statement: {err}");

    let (a, b) = (client(Pooler::Transaction), client(Pooler::Transaction));
    for _ in 0..3 {
        assert_eq!(query("SELECT $1::int8", a.clone()).await.unwrap(), 1);
        assert_eq!(query("SELECT $1::int8 + 1", b.clone()).await.unwrap(), 2);
    }
}
